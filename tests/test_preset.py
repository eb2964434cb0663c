"""--minutes (a wall-clock budget) and --preset (a named recipe under the typed flags)."""

import dataclasses
import importlib
import json
import types

import pytest
import torch

import machinery

from conftest import SCRIPTS, tiny_args

MODULES = {name: importlib.import_module(name) for name in SCRIPTS}
gan_complete = MODULES["gan_complete"]


def weights(path):
    return machinery.load_state_dict_safely(path)


@pytest.mark.parametrize("script", ["gan_complete", "dcgan", "sngan"])
def test_a_spent_budget_ends_the_run_mid_epoch_and_a_resume_finishes_it_as_if_never_stopped(
    script, cache_dir, tmp_path, capsys
):
    module = MODULES[script]
    args = lambda out, *extra: tiny_args(cache_dir, out, "--synthetic-images", "160", *extra)
    assert module.main(args(tmp_path / "whole")) == 0

    out = tmp_path / "budget"
    assert module.main(args(out, "--minutes", "1e-9")) == 0  # spent after the first step
    assert "--minutes 1e-09 spent at step 1, in epoch 1" in capsys.readouterr().out
    info = json.loads((out / "run_info.json").read_text())
    assert (info["critic_steps"], info["epochs_done"], info["finished"]) == (1, 0, True)
    for name in (
        "generator.pkl",
        "samples_epoch_001.png",
        "generated_samples.png",
        "training_losses.png",
    ):
        assert (out / name).stat().st_size > 0, name
    state = torch.load(out / "checkpoint.pt", weights_only=True)["counters"]
    # the epoch is not counted as done
    assert (state["epoch"], state["batch"], state["step"]) == (0, 1, 1)

    assert module.main(["--out-dir", str(out), "--resume", "--minutes", "0", "--no-progress"]) == 0
    info, whole = (
        json.loads((folder / "run_info.json").read_text()) for folder in (out, tmp_path / "whole")
    )
    assert (info["critic_steps"], info["epochs_done"], info["finished"]) == (
        whole["critic_steps"],
        2,
        True,
    )
    for name in ("generator.pkl", "discriminator.pkl"):
        whole, resumed = weights(tmp_path / "whole" / name), weights(out / name)
        assert all(torch.equal(whole[key], resumed[key]) for key in whole), name


def test_the_budget_counts_the_training_time_of_every_session(cache_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert gan_complete.main(tiny_args(cache_dir, out, "--epochs", "1")) == 0
    elapsed = json.loads((out / "run_info.json").read_text())["wall_time_s"]
    budget = f"{elapsed / 60 * 0.5:.9f}"  # half of what the run has trained already
    before = (out / "generator.pkl").read_bytes()
    capsys.readouterr()
    assert (
        gan_complete.main(
            [
                "--out-dir",
                str(out),
                "--resume",
                "--epochs",
                "3",
                "--minutes",
                budget,
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "the run has trained" in err and "pass a larger --minutes, or --minutes 0" in err
    assert err.count("\n") == 1 and (out / "generator.pkl").read_bytes() == before


def test_a_budget_spent_on_an_epochs_last_step_starts_no_other_step(cache_dir, tmp_path, capsys):
    # 16 images, batch 16: every step is an epoch's last
    args = tiny_args(
        cache_dir,
        tmp_path,
        "--synthetic-images",
        "16",
        "--rotations",
        "0",
        "--epochs",
        "3",
        "--minutes",
        "1e-9",
    )
    assert gan_complete.main(args) == 0
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert (info["critic_steps"], info["epochs_done"], info["finished"]) == (1, 1, True)
    out = capsys.readouterr().out
    assert (
        "--minutes 1e-09 spent at step 1, in epoch 2. To train on: python gan_complete.py "
        f"--out-dir {tmp_path} --resume --minutes M"
    ) in out
    assert "or --minutes 0 to train to the end of its --epochs (3)" in out
    assert not (tmp_path / "samples_epoch_002.png").exists()


def test_a_budget_that_stops_a_decaying_schedule_says_so_once_the_pace_is_known(
    cache_dir, tmp_path, capsys
):
    args = tiny_args(
        cache_dir, tmp_path, "--log-every", "2", "--minutes", "10", "--lr-schedule", "cosine"
    )
    assert gan_complete.main(args) == 0
    out = capsys.readouterr().out
    assert (
        out.count("pace: ") == 1
        and "s a step here (timed over 8 steps), so the 2 epochs (" in out  # epoch 1 ends
    )
    assert "--minutes 10 stops it near step" in out
    assert "cosine learning-rate decay" not in out  # 10 minutes reach the end of this tiny run


def test_the_pace_names_the_decay_that_a_budget_cuts_short(monkeypatch):
    config = gan_complete.Config(epochs=60, minutes=10, lr_schedule="cosine")
    messages = []
    monkeypatch.setattr(machinery.tqdm, "write", messages.append)
    # steps 3 to 12 in 2 s: 0.2 s a step, so 10 minutes reach about step 3,000 of 46,020
    run = types.SimpleNamespace(
        config=config,
        script=gan_complete,
        step=12,
        pace_from=(2, 0.0),
        total_steps=46020,
        device=torch.device("cpu"),
        started=machinery.time.perf_counter() - 2,
    )
    machinery.report_pace(run)
    assert messages[0].startswith(
        "pace: about 0.20 s a step here (timed over 10 steps), so the 60 epochs (46,020 steps) "
        "need roughly 2.6 h"
    )
    assert "stops it near step 3,00" in messages[0]
    assert (
        "7% of the way through its cosine learning-rate decay (--lr-schedule constant"
        in messages[0]
    )


def test_the_pace_waits_for_ten_seconds_of_steps_or_the_end_of_an_epoch():
    # the first steps run slower: a fast run's pace from three of them was half again too slow
    now = machinery.time.perf_counter()
    run = types.SimpleNamespace(
        pace_from=(1, 0.0), data=types.SimpleNamespace(steps_per_epoch=255), step=3, started=now
    )
    assert not machinery.pace_known(run)  # 3 steps in no time, in the middle of an epoch
    run.started = now - machinery.PACE_SECONDS
    assert machinery.pace_known(run)  # 10 s of steps
    run.step, run.started = 2, now - 60
    assert not machinery.pace_known(run)  # 60 s but one step timed: a step of a wide model
    run.step, run.started, run.data.steps_per_epoch = 3, now, 3
    assert machinery.pace_known(run)  # a short epoch ended


def test_a_gpu_sized_model_on_a_cpu_is_named_at_once_and_the_pace_after_three_steps(
    cache_dir, tmp_path, capsys
):
    # the defaults' width 1024 on a CPU: said before the first step, with the preset for a CPU
    arguments = tiny_args(cache_dir, tmp_path, "--g-channels", "512", "--epochs", "1")
    assert gan_complete.main([*arguments, "--log-every", "50"]) == 0
    out = capsys.readouterr().out
    before_training = out.split("pace: ")[0]
    assert "width 512 is sized for a GPU" in before_training and "--preset cpu" in before_training
    # the pace comes at the end of the first epoch (3 steps), not after log_every (50) steps
    assert out.count("pace: about ") == 1 and out.index("pace: ") < out.index("epoch 1/1")


def test_a_preset_says_which_values_of_the_config_it_replaces(monkeypatch, capsys, tmp_path):
    # a student set n_critic = 1 in the file: --preset cpu's n_critic 2 wins, and says so
    @dataclasses.dataclass
    class Edited(gan_complete.Config):
        n_critic: int = 1

    monkeypatch.setattr(gan_complete, "Config", Edited)
    config, given = machinery.parse_config(gan_complete, ["--preset", "cpu"])
    line = machinery.preset_overrides(gan_complete, config, given)
    assert "--preset cpu sets" in line and "n_critic=2 (Config: 1)" in line
    assert "g_channels=128 (Config: 1024)" in line
    # a flag typed beside the preset is not the preset's
    config, given = machinery.parse_config(gan_complete, ["--preset", "cpu", "--n-critic", "1"])
    assert "n_critic" not in machinery.preset_overrides(gan_complete, config, given)
    # and --help lists each preset's values
    help_text = machinery.build_parser(gan_complete).format_help()
    assert "--preset cpu: --g-channels 128 --d-channels 128" in help_text
    assert "(default: 1; --preset cpu: 2)" in " ".join(help_text.split())


def test_a_preset_sets_its_fields_and_the_typed_flags_win():
    preset = gan_complete.PRESETS["cpu"]
    config, given = machinery.parse_config(gan_complete, ["--preset", "cpu"])
    assert all(getattr(config, name) == value for name, value in preset.items())
    machinery.validate_config(gan_complete, config)
    # not the defaults
    assert any(getattr(gan_complete.Config(), name) != value for name, value in preset.items())
    assert gan_complete.Config().g_channels == 1024  # the seed's setup stays the default
    config, given = machinery.parse_config(
        gan_complete, ["--preset", "cpu", "--n-critic", "7", "--minutes", "0"]
    )
    assert (config.n_critic, config.minutes, config.g_channels) == (7, 0, preset["g_channels"])
    # what a resume or --sample takes over
    assert given == {"preset": "cpu", "n_critic": 7, "minutes": 0}


def test_the_run_records_the_resolved_values_of_its_preset(cache_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(
        gan_complete.PRESETS, "tiny", {"n_critic": 3, "ema_decay": 0.9, "g_channels": 64}
    )
    assert (
        gan_complete.main(tiny_args(cache_dir, tmp_path, "--preset", "tiny", "--epochs", "1")) == 0
    )
    saved = json.loads((tmp_path / "config.json").read_text())["config"]
    # tiny_args types --g-channels 16: the typed flag wins over the preset's 64
    assert (saved["preset"], saved["n_critic"], saved["ema_decay"], saved["g_channels"]) == (
        "tiny",
        3,
        0.9,
        16,
    )
    assert (
        gan_complete.main(
            ["--out-dir", str(tmp_path), "--resume", "--epochs", "2", "--no-progress"]
        )
        == 0
    )
    assert json.loads((tmp_path / "config.json").read_text())["config"]["n_critic"] == 3


@pytest.mark.parametrize(
    "script, preset, words",
    [
        ("gan_complete", "laptop", "--preset must be cpu, got 'laptop'"),
        ("dcgan", "cpu", "--preset must be empty (this script has none), got 'cpu'"),
    ],
)
def test_an_unknown_preset_stops_with_one_line(script, preset, words, tmp_path, capsys):
    assert MODULES[script].main(["--preset", preset, "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("minutes", ["-1", "nan"])
def test_a_negative_or_nan_budget_is_refused(minutes, capsys):
    assert gan_complete.main(["--minutes", minutes]) == 2
    assert "--minutes must be" in capsys.readouterr().err


def test_a_resumed_preset_run_says_where_it_resumes_not_what_the_preset_would_set(
    cache_dir, tmp_path, capsys
):
    # typed at the start: --n-critic 1 beside --preset cpu (which sets 2)
    arguments = tiny_args(cache_dir, tmp_path, "--preset", "cpu", "--n-critic", "1")
    assert gan_complete.main([*arguments, "--epochs", "1"]) == 0
    capsys.readouterr()
    assert gan_complete.main(["--out-dir", str(tmp_path), "--resume", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "n_critic=1 " in out and "--preset cpu sets" not in out
    assert f"resumed from {tmp_path / 'checkpoint.pt'} at step 3 (" in out  # 48 images, batch 16
    assert "epoch 2, " in out
