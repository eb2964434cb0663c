"""Nothing a user does or suffers costs them their run: resume, signals, NaN guard, safe loading."""

import json
import signal
import subprocess
import sys

import pytest
from PIL import Image
import torch

import machinery

import gan_complete
import dcgan
import preprocess
from conftest import ROOT, SCRIPTS, run_cli, subprocess_env, tiny_args


def weights(path):
    return machinery.load_state_dict_safely(path)


def assert_same_weights(first, second):
    a, b = weights(first), weights(second)
    assert a.keys() == b.keys()
    differing = {
        key: (a[key] - b[key]).abs().max().item() for key in a if not torch.equal(a[key], b[key])
    }
    assert not differing, (
        f"{second} differs from {first} in {len(differing)} tensors, at most by "
        f"{max(differing.values()):.3g} (in {max(differing, key=differing.get)})"
    )


def assert_same_metrics(first, second):
    """Every metric of every step equal; else the first step that differs and by how much."""
    a, b = metric_values(first), metric_values(second)
    assert a.shape == b.shape, f"{a.shape[0]} steps in {first}, {b.shape[0]} in {second}"
    rows = (a != b).any(axis=1).nonzero()[0]
    assert not len(rows), (
        f"metrics differ from step {int(a[rows[0], 0])} on (of {len(a)}), at most by "
        f"{abs(a - b).max():.3g}"
    )


def metric_values(out_dir):
    """metrics.csv's values, every column but the wall time."""
    header = (out_dir / "metrics.csv").read_text().split("\n", 1)[0].split(",")
    return machinery.read_metrics(out_dir)[
        :, [n for n, name in enumerate(header) if name != "time"]
    ]


def interrupt_after_first_epoch(script, args, signum):
    """Start a run, send signum once epoch 1 is done (so the stop lands inside epoch 2)."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / f"{script}.py"), *args],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
    )
    for line in process.stdout:
        if line.startswith("epoch 1/"):
            process.send_signal(signum)
            break
    out, err = process.communicate(timeout=300)
    return process.returncode, err


@pytest.mark.parametrize(
    "script, signum, extra",
    [
        (
            "gan_complete",
            signal.SIGINT,
            [],
        ),  # the default: cosine, bf16 autocast where the CPU has it
        (
            "dcgan",
            signal.SIGTERM,
            ["--amp", "off", "--lr-schedule", "linear", "--warmup-steps", "40"],
        ),
        ("wgan_clip", signal.SIGINT, ["--lr-schedule", "cosine", "--warmup-steps", "7"]),
        ("sngan", signal.SIGTERM, []),  # the spectral norm's u and v come back from the checkpoint
    ],
)
def test_a_stopped_and_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one(
    script, signum, extra, cache_dir, tmp_path
):
    args = lambda out: tiny_args(
        cache_dir, out, "--synthetic-images", "160", "--epochs", "3", *extra
    )
    assert run_cli(script, *args(tmp_path / "whole")).returncode == 0

    returncode, err = interrupt_after_first_epoch(script, args(tmp_path / "stopped"), signum)
    assert returncode == 128 + signum
    assert f"python {script}.py --out-dir {tmp_path / 'stopped'} --resume" in err
    checkpoint = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)
    assert checkpoint["counters"]["epoch"] < 3  # it really stopped early
    assert (tmp_path / "stopped" / "training_losses.png").exists()

    resumed = run_cli(script, "--out-dir", tmp_path / "stopped", "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    for name in ("generator.pkl", "discriminator.pkl"):
        assert_same_weights(tmp_path / "whole" / name, tmp_path / "stopped" / name)
    assert_same_metrics(tmp_path / "whole", tmp_path / "stopped")
    with open(tmp_path / "stopped" / "metrics.csv") as f:
        # integers, before and after the stop
        steps = [int(row.split(",")[0]) for row in list(f)[1:]]
    assert steps == list(range(1, len(steps) + 1))


def test_the_same_seed_gives_identical_weights(cache_dir, tmp_path):
    for run in ("first", "second"):
        assert gan_complete.main(tiny_args(cache_dir, tmp_path / run)) == 0
    assert_same_weights(tmp_path / "first" / "generator.pkl", tmp_path / "second" / "generator.pkl")
    assert gan_complete.main(tiny_args(cache_dir, tmp_path / "other", "--seed", "7")) == 0
    assert not torch.equal(
        weights(tmp_path / "first" / "generator.pkl")["project.weight"],
        weights(tmp_path / "other" / "generator.pkl")["project.weight"],
    )


def test_resuming_a_finished_run_with_more_epochs_continues_it(cache_dir, tmp_path, capsys):
    assert dcgan.main(tiny_args(cache_dir, tmp_path, "--epochs", "1")) == 0
    assert (
        dcgan.main(["--out-dir", str(tmp_path), "--resume", "--epochs", "2", "--no-progress"]) == 0
    )
    rows = machinery.read_metrics(tmp_path)
    assert set(rows[:, 1]) == {1.0, 2.0} and (rows[:, 0] == range(1, len(rows) + 1)).all()
    assert "epoch 2/2" in capsys.readouterr().out


def test_an_absurd_learning_rate_stops_cleanly_and_keeps_the_last_good_files(
    cache_dir, tmp_path, capsys
):
    assert gan_complete.main(tiny_args(cache_dir, tmp_path, "--epochs", "1")) == 0
    good = {
        name: (tmp_path / name).read_bytes()
        for name in ("generator.pkl", "discriminator.pkl", "checkpoint.pt")
    }
    capsys.readouterr()
    code = gan_complete.main(
        [
            "--out-dir",
            str(tmp_path),
            "--resume",
            "--epochs",
            "3",
            "--lr-generator",
            "1e30",
            "--lr-discriminator",
            "1e30",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "non-finite" in err or "inf/nan" in err
    assert "step" in err and str(tmp_path / "checkpoint.pt") in err and "--resume" in err
    for name, data in good.items():
        assert (tmp_path / name).read_bytes() == data, name
    assert not (tmp_path / "samples_epoch_002.png").exists()


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # runs open(marker, "w") when unpickled


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_malicious_pickle_is_refused_and_its_code_never_runs(script, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "generator.pkl"
    evil.write_bytes(__import__("pickle").dumps({"project.weight": _Exploit(marker)}))
    result = run_cli(script, "--sample", evil, "--out-dir", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.startswith("error: refusing") and "io.open" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert not marker.exists()


def test_truncated_files_give_a_clear_error(cache_dir, tmp_path, capsys):
    assert gan_complete.main(tiny_args(cache_dir, tmp_path, "--epochs", "1")) == 0
    for name in ("checkpoint.pt", "generator.pkl"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert gan_complete.main(["--out-dir", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: checkpoint {tmp_path / 'checkpoint.pt'} is damaged")
        and err.count("\n") == 1
    )
    assert "--overwrite" in err  # the file is truly damaged: starting again is the honest advice
    assert (
        gan_complete.main(
            ["--sample", str(tmp_path / "generator.pkl"), "--out-dir", str(tmp_path / "s")]
        )
        == 2
    )
    assert capsys.readouterr().err.startswith("error: refusing")
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert gan_complete.main(["--out-dir", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "is damaged" in err and "weights_only" not in err and err.count("\n") == 1
    (tmp_path / "config.json").write_text('{"variant":')
    assert gan_complete.main(["--out-dir", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read the run's config") and err.count("\n") == 1


def test_a_checkpoint_passed_to_sample_is_named(cache_dir, tmp_path, capsys):
    assert gan_complete.main(tiny_args(cache_dir, tmp_path, "--epochs", "1")) == 0
    capsys.readouterr()
    assert gan_complete.main(["--sample", str(tmp_path / "checkpoint.pt")]) == 2
    err = capsys.readouterr().err
    assert "is a checkpoint (torch.save), not a generator.pkl" in err and err.count("\n") == 1


def test_sample_writes_into_samples_beside_the_weights_and_leaves_no_stale_images(
    cache_dir, tmp_path, capsys
):
    run = tmp_path / "run"
    assert gan_complete.main(tiny_args(cache_dir, run, "--epochs", "1")) == 0
    copy = tmp_path / "friends run"
    __import__("shutil").copytree(run, copy)
    traversal = (copy / "latent_traversal.png").read_bytes()
    for count in ("6", "2"):
        assert (
            gan_complete.main(["--sample", str(copy / "generator.pkl"), "--num-samples", count])
            == 0
        )
    assert sorted(p.name for p in (copy / "samples").iterdir()) == [
        "latent_traversal.png",
        "sample_0001.png",
        "sample_0002.png",
        "samples_grid.png",
    ]
    assert (copy / "latent_traversal.png").read_bytes() == traversal  # the run's own, untouched
    assert not (run / "samples").exists()


def test_sample_names_a_discriminator_and_a_foreign_generator(cache_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert gan_complete.main(tiny_args(cache_dir, run, "--epochs", "1")) == 0
    capsys.readouterr()
    assert gan_complete.main(["--sample", str(run / "discriminator.pkl")]) == 2
    assert capsys.readouterr().err == (
        f"error: {run / 'discriminator.pkl'} holds a discriminator's weights; pass the "
        "generator.pkl beside it\n"
    )
    # a state_dict of another project's generator (the coursework's own script, say)
    foreign = {"main.0.weight": torch.zeros(100, 512, 4, 4), "main.1.weight": torch.ones(512)}
    (tmp_path / "theirs.pkl").write_bytes(__import__("pickle").dumps(foreign))
    assert gan_complete.main(["--sample", str(tmp_path / "theirs.pkl")]) == 2
    err = capsys.readouterr().err
    assert "was not written by this collection's generator" in err and err.count("\n") == 1


def test_a_foreign_file_is_not_taken_for_weights(tmp_path, capsys):
    (tmp_path / "notes.pkl").write_text("my coursework notes")
    assert (
        gan_complete.main(["--sample", str(tmp_path / "notes.pkl"), "--out-dir", str(tmp_path)])
        == 2
    )
    assert "refusing" in capsys.readouterr().err
    (tmp_path / "list.pkl").write_bytes(__import__("pickle").dumps([1, 2, 3]))
    assert (
        gan_complete.main(["--sample", str(tmp_path / "list.pkl"), "--out-dir", str(tmp_path)]) == 2
    )
    assert "no state_dict" in capsys.readouterr().err


def test_an_unwritable_out_dir_is_rejected_before_any_work(cache_dir, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert gan_complete.main(tiny_args(cache_dir, blocker / "run")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write to {blocker / 'run'}") and err.count("\n") == 1


def test_a_missing_data_folder_is_reported_before_training(tmp_path, capsys):
    code = gan_complete.main(
        [
            "--source",
            "coursework",
            "--data-dir",
            str(tmp_path / "nowhere"),
            "--out-dir",
            str(tmp_path / "run"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "run").exists()  # checked, then removed again: no empty folder left


def test_an_existing_run_is_not_overwritten_by_accident(cache_dir, tmp_path, capsys):
    assert dcgan.main(tiny_args(cache_dir, tmp_path, "--epochs", "1")) == 0
    before = (tmp_path / "generator.pkl").read_bytes()
    assert dcgan.main(tiny_args(cache_dir, tmp_path, "--epochs", "1")) == 2
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "generator.pkl").read_bytes() == before
    assert dcgan.main(tiny_args(cache_dir, tmp_path, "--epochs", "1", "--overwrite")) == 0


def test_resume_without_a_checkpoint_says_so(tmp_path, capsys):
    assert gan_complete.main(["--out-dir", str(tmp_path), "--resume"]) == 2
    assert (
        capsys.readouterr().err
        == f"error: --resume: no checkpoint in {tmp_path}; start without --resume\n"
    )


def test_a_write_that_fails_midway_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / "generator.pkl"
    target.write_bytes(b"old, good weights")

    def crash(f):
        f.write(b"half of the new")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        preprocess.write_atomically(target, crash)
    assert target.read_bytes() == b"old, good weights"
    # no temporary file left behind
    assert [p.name for p in tmp_path.iterdir()] == ["generator.pkl"]


def test_a_run_that_diverges_at_once_says_no_checkpoint_exists(cache_dir, tmp_path, capsys):
    code = dcgan.main(
        tiny_args(
            cache_dir,
            tmp_path,
            "--lr-generator",
            "1e30",
            "--lr-discriminator",
            "1e30",
            "--log-every",
            "1",
        )
    )
    err = capsys.readouterr().err
    assert code == 1 and "no checkpoint was written yet" in err and err.count("\n") == 1
    assert not (tmp_path / "generator.pkl").exists() and not (tmp_path / "checkpoint.pt").exists()


def test_resume_refuses_changes_that_would_make_another_run(cache_dir, tmp_path, capsys):
    assert gan_complete.main(tiny_args(cache_dir, tmp_path, "--epochs", "1")) == 0
    capsys.readouterr()
    assert gan_complete.main(["--out-dir", str(tmp_path), "--resume", "--overwrite"]) == 2
    assert "pass one of them" in capsys.readouterr().err
    assert gan_complete.main(["--out-dir", str(tmp_path), "--resume", "--batch-size", "48"]) == 2
    assert capsys.readouterr().err == (
        f"error: --resume cannot change --batch-size (was 16): start a new run "
        "with another --out-dir\n"
    )
    assert dcgan.main(["--out-dir", str(tmp_path), "--resume"]) == 2
    assert "holds a WGAN-GP run (of gan_complete.py), not a DCGAN run" in capsys.readouterr().err


def test_a_run_started_with_overwrite_resumes_with_resume_alone(cache_dir, tmp_path):
    # --resume and --overwrite are what one command does, not settings the run keeps
    assert dcgan.main(tiny_args(cache_dir, tmp_path, "--epochs", "1")) == 0
    assert dcgan.main(tiny_args(cache_dir, tmp_path, "--epochs", "1", "--overwrite")) == 0
    saved = json.loads((tmp_path / "config.json").read_text())["config"]
    assert "overwrite" not in saved and "resume" not in saved
    assert dcgan.main(["--out-dir", str(tmp_path), "--resume", "--epochs", "2"]) == 0
    assert json.loads((tmp_path / "run_info.json").read_text())["epochs_done"] == 2


def test_overwrite_leaves_nothing_of_the_old_run(cache_dir, tmp_path):
    assert dcgan.main(tiny_args(cache_dir, tmp_path, "--epochs", "2", "--snapshot-every", "1")) == 0
    assert (tmp_path / "snapshots" / "generator_epoch_002.pkl").exists()
    code = dcgan.main(
        tiny_args(
            cache_dir,
            tmp_path,
            "--epochs",
            "1",
            "--overwrite",
            "--img-size",
            "64",
            "--g-channels",
            "16",
            "--d-channels",
            "16",
        )
    )
    assert code == 0
    assert not (tmp_path / "samples_epoch_002.png").exists()
    assert not list((tmp_path / "snapshots").iterdir()), (
        "a 32 px snapshot would break compare's SWD curve"
    )
    assert machinery.read_config(dcgan, tmp_path / "config.json").img_size == 64
    assert json.loads((tmp_path / "run_info.json").read_text())["img_size"] == 64


def test_resume_refuses_other_data_and_fewer_epochs_and_keeps_the_config(
    cache_dir, tmp_path, capsys
):
    folders = []
    # 6 images each
    for name, colour in (("photos", (200, 40, 40)), ("other_photos", (40, 40, 200))):
        folder = tmp_path / name
        folder.mkdir()
        for index in range(6):
            Image.new("RGB", (40, 40), (colour[0], colour[1] + 20 * index, colour[2])).save(
                folder / f"{index}.png"
            )
        folders.append(folder)
    run = tmp_path / "run"
    assert (
        gan_complete.main(
            tiny_args(cache_dir, run, "--source", "folder", "--data-dir", str(folders[0]))
        )
        == 0
    )
    config = (run / "config.json").read_text()
    capsys.readouterr()

    assert (
        gan_complete.main(
            ["--out-dir", str(run), "--resume", "--epochs", "3", "--data-dir", str(folders[1])]
        )
        == 2
    )
    assert (
        "the data changed since the checkpoint (as many images, other pixels)"
        in capsys.readouterr().err
    )
    assert gan_complete.main(["--out-dir", str(run), "--resume", "--epochs", "1"]) == 2
    assert capsys.readouterr().err == (
        "error: --epochs 1: the run is at epoch 2 already; pass at least --epochs 2 to go on\n"
    )
    assert (run / "config.json").read_text() == config, "a refused resume changes nothing"


def test_a_new_run_never_inherits_an_old_runs_files(cache_dir, tmp_path, capsys):
    assert gan_complete.main(tiny_args(cache_dir, tmp_path, "--snapshot-every", "1")) == 0
    (tmp_path / "checkpoint.pt").unlink()  # as after "checkpoint ... is unreadable"
    capsys.readouterr()
    assert gan_complete.main(tiny_args(cache_dir, tmp_path, "--epochs", "1", "--seed", "7")) == 2
    assert "already holds a run (generator.pkl, run_info.json)" in capsys.readouterr().err
    assert (
        gan_complete.main(
            tiny_args(cache_dir, tmp_path, "--epochs", "1", "--seed", "7", "--overwrite")
        )
        == 0
    )
    # snapshot_every 10: none of the old
    assert [p.name for p in (tmp_path / "snapshots").iterdir()] == []


def test_sample_finds_the_run_config_from_a_snapshot_by_a_relative_path(
    cache_dir, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    assert (
        gan_complete.main(tiny_args(cache_dir, run, "--epochs", "1", "--snapshot-every", "1")) == 0
    )
    monkeypatch.chdir(run / "snapshots")
    assert gan_complete.main(["--sample", "generator_epoch_001.pkl", "--num-samples", "2"]) == 0
    assert (run / "snapshots" / "samples" / "sample_0002.png").exists()
    export = run / "export"  # any other folder: its parent's config.json is not this file's
    export.mkdir()
    (export / "generator.pkl").write_bytes((run / "generator.pkl").read_bytes())
    monkeypatch.chdir(export)
    assert gan_complete.main(["--sample", "generator.pkl"]) == 2  # the default Config does not fit


def test_a_run_stopped_before_its_epoch_checkpoint_redoes_the_epoch_and_all_its_files(
    cache_dir, tmp_path, monkeypatch, capsys
):
    # A full disk (or a kill) while the epoch's files are written: the checkpoint must not already
    # say "epoch done", or the resumed run never writes the epoch's samples and snapshot.
    args = lambda out: tiny_args(cache_dir, out, "--snapshot-every", "1")
    assert gan_complete.main(args(tmp_path / "whole")) == 0
    real_save_samples = machinery.save_samples

    def disk_full_at_epoch_2(generator, noise, labels, path, class_names):
        if path.name == "samples_epoch_002.png":
            raise OSError(28, "No space left on device")
        return real_save_samples(generator, noise, labels, path, class_names)

    monkeypatch.setattr(machinery, "save_samples", disk_full_at_epoch_2)
    stopped = tmp_path / "stopped"
    assert gan_complete.main(args(stopped)) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert torch.load(stopped / "checkpoint.pt", weights_only=True)["counters"]["epoch"] == 1
    monkeypatch.setattr(machinery, "save_samples", real_save_samples)
    assert gan_complete.main(["--out-dir", str(stopped), "--resume"]) == 0
    for name in ("generator.pkl", "discriminator.pkl", "snapshots/generator_epoch_002.pkl"):
        assert_same_weights(tmp_path / "whole" / name, stopped / name)
    for name in ("samples_epoch_002.png", "generated_samples.png"):
        assert (stopped / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_a_checkpoint_that_cannot_be_read_now_is_not_called_damaged(
    cache_dir, tmp_path, monkeypatch, capsys
):
    # --overwrite deletes the run: advise it only for a file that is really damaged.
    assert gan_complete.main(tiny_args(cache_dir, tmp_path, "--epochs", "1")) == 0
    capsys.readouterr()

    def io_error(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(torch, "load", io_error)
    assert gan_complete.main(["--out-dir", str(tmp_path), "--resume", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "Input/output error" in err and "--overwrite" not in err and err.count("\n") == 1
    monkeypatch.undo()
    (tmp_path / "checkpoint.pt").rename(tmp_path / "saved.pt")
    (tmp_path / "checkpoint.pt").mkdir()
    assert gan_complete.main(["--out-dir", str(tmp_path), "--resume", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "Is a directory" in err and "--overwrite" not in err and err.count("\n") == 1
    (tmp_path / "checkpoint.pt").rmdir()
    (tmp_path / "saved.pt").rename(tmp_path / "checkpoint.pt")
    # nothing was lost
    assert gan_complete.main(["--out-dir", str(tmp_path), "--resume", "--epochs", "2"]) == 0


def test_outputs_are_written_whole_or_not_at_all(cache_dir, tmp_path):
    assert gan_complete.main(tiny_args(cache_dir, tmp_path, "--epochs", "1")) == 0
    report = (tmp_path / "latent_l2_norms.txt").read_bytes()
    (tmp_path / "latent_l2_norms.txt").write_bytes(b"an older report\n" + report)
    # Writes past half the report fail with EFBIG, as on a full disk. In a child process: the limit
    # would also cut pytest's own output when it goes to a file.
    code = f"""if True:
        import resource, signal
        from pathlib import Path
        import matplotlib.figure, analysis, gan_complete, machinery
        out = Path({str(tmp_path)!r})
        config = machinery.read_config(gan_complete, out / "config.json")
        generator = machinery.load_generator(gan_complete, out / "generator.pkl", config)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        hard_limit = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, ({len(report) // 2}, hard_limit))
        analysis.latent_space_analysis(generator, config, out, "WGAN-GP")
    """
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0 and "File too large" in result.stderr, result.stderr[-500:]
    assert (tmp_path / "latent_l2_norms.txt").read_bytes() == b"an older report\n" + report


def test_a_torn_last_metrics_row_is_dropped_when_read(cache_dir, tmp_path):
    assert gan_complete.main(tiny_args(cache_dir, tmp_path, "--epochs", "1")) == 0
    whole = machinery.read_metrics(tmp_path)
    with open(tmp_path / "metrics.csv", "a") as f:
        f.write("10,2,0.5,0.2")  # a write cut short: no newline yet
    assert (machinery.read_metrics(tmp_path) == whole).all()
    machinery.save_loss_plot(gan_complete, tmp_path)  # the loss plot of a crashed run still draws
