"""The three training scripts: models, losses, command line, and what a run writes."""

import csv
import importlib
import json
import math
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import machinery
from PIL import Image

import analysis
from conftest import ROOT, SCRIPTS, run_cli, subprocess_env, tiny_args

MODULES = {name: importlib.import_module(name) for name in SCRIPTS}
OUTPUTS = [
    "config.json",
    "metrics.csv",
    "run_info.json",
    "checkpoint.pt",
    "generator.pkl",
    "discriminator.pkl",
    "samples_epoch_001.png",
    "samples_epoch_002.png",
    "training_losses.png",
    "generated_samples.png",
    "latent_space_analysis.png",
    "latent_l2_norms.txt",
    "latent_pairs.csv",
    "interpolation.png",
    "latent_traversal.png",
    "training_progress.gif",
    "snapshots/generator_epoch_001.pkl",
    "snapshots/generator_epoch_002.pkl",
]


@pytest.fixture(params=SCRIPTS)
def script(request):
    return MODULES[request.param]


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory, cache_dir):
    """One tiny finished run of each script, shared by the tests that only read its outputs."""
    runs = {}
    for name, module in MODULES.items():
        out_dir = tmp_path_factory.mktemp(name)
        assert module.main(tiny_args(cache_dir, out_dir, "--snapshot-every", "1")) == 0
        runs[name] = out_dir
    return runs


@pytest.mark.parametrize(
    "img_size, g_channels, upsample",
    [(64, 32, "transpose"), (128, 32, "transpose"), (64, 32, "nearest")],
)
def test_models_make_and_score_images_of_the_configured_size(
    script, img_size, g_channels, upsample
):
    config = script.Config(
        img_size=img_size, g_channels=g_channels, d_channels=32, z_dim=8, upsample=upsample
    )
    generator, discriminator = script.Generator(config), script.Discriminator(config)
    transposed = [m for m in generator.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(transposed) == (int(math.log2(img_size)) - 2 if upsample == "transpose" else 0)
    images = generator(torch.randn(3, 8))
    assert images.shape == (3, 3, img_size, img_size)
    assert images.min() >= -1 and images.max() <= 1  # tanh output, same range as the data
    assert discriminator(images).shape == (3,)


class LinearCritic(torch.nn.Module):
    """D(x) = <w, x> + b: its gradient is w everywhere, so the penalty is (||w|| - 1)^2 exactly."""

    def __init__(self, shape):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(shape, dtype=torch.float64))

    def forward(self, x, labels=None):
        return (x * self.weight).flatten(1).sum(1) + 0.5


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_gradient_penalty_is_exact_for_a_linear_critic(memory_format):
    critic = LinearCritic((3, 8, 8))
    real = torch.randn(4, 3, 8, 8, dtype=torch.float64).contiguous(memory_format=memory_format)
    fake = torch.randn(4, 3, 8, 8, dtype=torch.float64).contiguous(memory_format=memory_format)
    penalty = MODULES["gan_complete"].gradient_penalty(critic, real, fake)
    expected = (critic.weight.detach().norm() - 1) ** 2
    assert torch.allclose(penalty.double(), expected, rtol=1e-6)


class HalfSquaredNorm(torch.nn.Module):
    """D(x) = ||x||^2 / 2 per sample: its gradient is x itself, of another norm for each sample."""

    def forward(self, x, labels=None):
        return (x**2).flatten(1).sum(1) / 2


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_gradient_penalty_takes_each_samples_own_gradient_norm(memory_format):
    # A wrong flattening of NHWC gradients (view instead of reshape, or flattening the batch
    # away) mixes the samples' gradients; here each sample's gradient norm is known.
    real = torch.randn(3, 3, 4, 4, dtype=torch.float64) * torch.tensor([0.2, 1.0, 3.0]).view(
        3, 1, 1, 1
    )
    fake = torch.randn(3, 3, 4, 4, dtype=torch.float64)
    torch.manual_seed(0)
    penalty = MODULES["gan_complete"].gradient_penalty(
        HalfSquaredNorm(),
        real.contiguous(memory_format=memory_format),
        fake.contiguous(memory_format=memory_format),
    )
    torch.manual_seed(0)  # the same interpolation weights
    alpha = torch.rand(3, 1, 1, 1)
    interpolates = alpha * real + (1 - alpha) * fake
    expected = ((interpolates.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert torch.allclose(penalty.double(), expected, rtol=1e-5)


def test_wgan_clip_keeps_every_critic_parameter_within_the_clip_value(cache_dir, tmp_path):
    module = MODULES["wgan_clip"]
    config = module.Config(img_size=32, d_channels=16, clip_value=0.01, conditional=True)
    critic = module.Discriminator(config, 4)
    with torch.no_grad():
        for parameter in critic.parameters():
            parameter.normal_(0, 1)  # far outside the clip range
    module.clip_weights(critic, config.clip_value)
    # the class embedding is a critic weight too
    for name, parameter in critic.named_parameters():
        assert parameter.abs().max() <= 0.01, name
    assert any((parameter.abs() == 0.01).any() for parameter in critic.parameters())
    # and a run's critic stays within it after every step (RMSprop would take it out)
    arguments = ["--conditional", "--lr-discriminator", "0.1", "--epochs", "1"]
    assert module.main(tiny_args(cache_dir, tmp_path, *arguments)) == 0
    trained = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["discriminator"]
    parameters = {name for name, _ in module.Discriminator(config, 4).named_parameters()}
    assert parameters and all(trained[name].abs().max() <= 0.01 for name in parameters)


def test_dcgan_label_smoothing_changes_the_real_target_only():
    module = MODULES["dcgan"]
    real_logits, fake_logits = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-3.0, 0.2, 1.0])
    for smoothing in (0.9, 1.0):
        config = module.Config(real_label_smoothing=smoothing)
        expected = (
            -(
                smoothing * torch.nn.functional.logsigmoid(real_logits)
                + (1 - smoothing) * torch.nn.functional.logsigmoid(-real_logits)
            ).mean()
            - torch.nn.functional.logsigmoid(-fake_logits).mean()
        )
        assert torch.allclose(module.discriminator_loss(real_logits, fake_logits, config), expected)
    smoothed = module.discriminator_loss(
        real_logits, fake_logits, module.Config(real_label_smoothing=0.9)
    )
    plain = module.discriminator_loss(
        real_logits, fake_logits, module.Config(real_label_smoothing=1.0)
    )
    assert smoothed != plain
    # the generator's target stays 1: smoothing is one-sided
    assert torch.allclose(
        module.generator_loss(fake_logits, module.Config(real_label_smoothing=0.9)),
        -torch.nn.functional.logsigmoid(fake_logits).mean(),
    )


def test_dcgan_hinge_loss_matches_its_formula():
    module = MODULES["dcgan"]
    config = module.Config(loss="hinge")
    real_logits, fake_logits = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, -0.5, 1.5])
    # mean(max(0, 1 - real)) = (0 + 0.5 + 2) / 3 ; mean(max(0, 1 + fake)) = (0 + 0.5 + 2.5) / 3
    assert torch.isclose(
        module.discriminator_loss(real_logits, fake_logits, config), torch.tensor(2.5 / 3 + 3 / 3)
    )
    assert torch.isclose(
        module.generator_loss(fake_logits, config), torch.tensor(-(-3.0 - 0.5 + 1.5) / 3)
    )


def test_command_line_overrides_reach_the_config(script):
    config, given = machinery.parse_config(
        script,
        [
            "--batch-size",
            "64",
            "--n-critic",
            "3",
            "--g-channels",
            "128",
            "--no-channels-last",
            "--device",
            "cpu",
            "--epochs",
            "7",
        ],
    )
    assert (config.batch_size, config.n_critic, config.g_channels, config.channels_last) == (
        64,
        3,
        128,
        False,
    )
    assert given == {
        "batch_size": 64,
        "n_critic": 3,
        "g_channels": 128,
        "channels_last": False,
        "device": "cpu",
        "epochs": 7,
    }
    assert config.z_dim == script.Config().z_dim  # untouched fields keep their defaults


def test_tuple_fields_parse_as_tuples():
    config, _ = machinery.parse_config(MODULES["gan_complete"], ["--betas", "0.5", "0.99"])
    assert config.betas == (0.5, 0.99)


def test_help_lists_every_field_with_its_default(script):
    text = machinery.build_parser(script).format_help()
    for field in script.Config.__dataclass_fields__.values():
        flag = "--" + field.name.replace("_", "-")
        assert flag in text, flag
    assert "(default: 0.0002)" in text or "(default: 5e-05)" in text
    assert "images per" in text  # the field comments are the help text


@pytest.mark.parametrize(
    "args, words",
    [
        (["--batch-size", "0"], "--batch-size must be > 0"),
        (["--lr-generator", "-1"], "--lr-generator must be > 0"),
        (["--lr-discriminator", "nan"], "--lr-discriminator must be > 0"),
        (["--img-size", "48"], "--img-size must be 32, 64, 128 or 256"),
        (["--device", "tpu"], "--device must be"),
        (["--epochs", "three"], "invalid int value"),
        (["--g-channels", "12", "--img-size", "64"], "multiple of 8"),
        (["--ema-decay", "1.5"], "--ema-decay"),
        (["--no-such-flag"], "unrecognized arguments"),
        (["--seed", "-1"], "--seed must be in [0, 2**32)"),
        (["--lr-generator", "inf"], "--lr-generator must be a finite number"),
        (["--z-dim", "1"], "--z-dim must be at least 2"),
        (["--upsample", "bilinear"], "--upsample must be transpose or nearest"),
    ],
)
def test_invalid_values_stop_with_one_line(script, args, words, capsys, tmp_path):
    assert script.main(args + ["--out-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert words in err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert not (tmp_path / "run").exists()  # stopped before any work


def test_invalid_value_from_a_shell_has_no_traceback():
    result = run_cli("dcgan", "--batch-size", "-4")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --batch-size must be > 0, got -4"
    assert "Traceback" not in result.stdout + result.stderr


def test_method_specific_values_are_checked():
    assert MODULES["wgan_clip"].main(["--clip-value", "0"]) == 2
    assert MODULES["dcgan"].main(["--loss", "wasserstein"]) == 2
    assert MODULES["dcgan"].main(["--real-label-smoothing", "1.2"]) == 2
    assert MODULES["gan_complete"].main(["--lambda-gp", "-1"]) == 2


def test_a_run_writes_every_output(script, finished_runs):
    out_dir = finished_runs[script.__name__]
    for name in OUTPUTS:
        assert (out_dir / name).stat().st_size > 0, name
    config = json.loads((out_dir / "config.json").read_text())
    assert config["variant"] == script.VARIANT and config["config"]["img_size"] == 32
    assert config["torch"] == torch.__version__ and config["device"] == "cpu"
    with Image.open(out_dir / "training_progress.gif") as gif:  # epochs 1 and 2, the last held
        assert gif.n_frames == 2 and gif.size[0] <= analysis.GIF_WIDTH
        gif.seek(1)
        assert gif.info["duration"] == analysis.GIF_LAST_MS

    with open(out_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    info = json.loads((out_dir / "run_info.json").read_text())
    steps_per_epoch = 48 * 3 // 16  # 48 synthetic images and 2 rotated copies each, batch 16
    assert len(rows) == info["critic_steps"] == 2 * steps_per_epoch
    # the method's own metrics between the bookkeeping: SNGAN's hinge logs no W distance or penalty
    method = {"WGAN-GP": ["w_dist", "gp"], "WGAN-clip": ["w_dist"]}.get(
        script.VARIANT, ["d_real", "d_fake"]
    )
    assert list(rows[0]) == [
        "step",
        "epoch",
        "d_loss",
        "g_loss",
        *method,
        "lr",
        "time",
        "d_skipped",
        "g_skipped",
    ]
    # no fp16, no skips
    assert {r["d_skipped"] for r in rows} == {r["g_skipped"] for r in rows} == {"0.0"}
    assert [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    assert {int(r["epoch"]) for r in rows} == {1, 2}
    assert float(rows[0]["lr"]) == pytest.approx(script.Config().lr_generator)
    if script.Config().lr_schedule in ("cosine", "linear"):  # WGAN-GP's, SNGAN's: decaying
        assert float(rows[-1]["lr"]) < float(rows[0]["lr"])
    else:  # the WGAN and DCGAN papers' constant rate
        assert {float(r["lr"]) for r in rows} == {script.Config().lr_generator}
    times = [float(r["time"]) for r in rows]
    assert times == sorted(times) and times[0] > 0
    n_critic = script.Config().n_critic
    assert info["generator_steps"] == -(-len(rows) // n_critic)
    assert info["finished"] and info["epochs_done"] == 2 and info["images_seen"] == len(rows) * 16
    generator = script.Generator(machinery.read_config(script, out_dir / "config.json"))
    assert info["generator_params"] == sum(p.numel() for p in generator.parameters())

    with Image.open(out_dir / "samples_epoch_002.png") as grid:
        assert grid.size == (8 * 32 + 9 * 2, 8 * 32 + 9 * 2)  # 64 fixed-noise samples, 8 x 8
    with Image.open(out_dir / "generated_samples.png") as grid:
        assert grid.size == (8 * 32 + 9 * 2, 2 * 32 + 3 * 2)  # --num-samples 12: 8 + 4 in two rows
    # 6 pairs x 10 slerp steps, labelled rows
    with Image.open(out_dir / "interpolation.png") as figure:
        # the grid pixel for pixel, with the pairs' names at the left and a title above
        width, height = figure.size
        assert 10 * 32 + 11 * 2 + 100 < width < 10 * 32 + 11 * 2 + 400
        assert 6 * 32 + 7 * 2 + 20 < height < 6 * 32 + 7 * 2 + 150

    report = (out_dir / "latent_l2_norms.txt").read_text()
    assert len(re.findall(r"^  z#\d+ +z#\d+ +image distance", report, flags=re.M)) == 6
    assert report.count("  mean z L2 distance: ") == 2
    # 16 images: 16 * 15 / 2 pairs
    assert "baseline: mean z L2 distance over all 120 pairs" in report


def test_saved_weights_are_cpu_state_dicts_that_load_safely(script, finished_runs):
    out_dir = finished_runs[script.__name__]
    state = machinery.load_state_dict_safely(out_dir / "generator.pkl")
    assert all(v.device.type == "cpu" for v in state.values())
    with open(out_dir / "generator.pkl", "rb") as f:
        # a plain pickle of a state_dict, as documented
        assert pickle.load(f).keys() == state.keys()
    checkpoint = torch.load(out_dir / "checkpoint.pt", weights_only=True)
    assert {
        "generator",
        "discriminator",
        "ema",
        "opt_g",
        "opt_d",
        "sched_g",
        "sched_d",
        "rng",
        "metrics",
        "counters",
    } <= checkpoint.keys()
    # the saved generator is the EMA copy: different from the raw generator in the checkpoint
    assert any(
        not torch.equal(state[k], checkpoint["generator"][k]) for k in state if k.endswith("weight")
    )


def test_snapshots_are_the_saved_generator_of_their_epoch(script, finished_runs, tmp_path):
    out_dir = finished_runs[script.__name__]
    final = machinery.load_state_dict_safely(out_dir / "generator.pkl")
    last, first = (
        machinery.load_state_dict_safely(out_dir / "snapshots" / f"generator_epoch_00{epoch}.pkl")
        for epoch in (2, 1)
    )
    assert all(torch.equal(final[k], last[k]) for k in final)
    assert any(not torch.equal(final[k], first[k]) for k in final if k.endswith("weight"))
    assert (
        script.main(
            [
                "--sample",
                str(out_dir / "snapshots" / "generator_epoch_001.pkl"),
                "--num-samples",
                "2",
                "--out-dir",
                str(tmp_path),
            ]
        )
        == 0
    )


def test_sample_round_trips_through_generator_pkl(script, finished_runs, tmp_path):
    out_dir = finished_runs[script.__name__]
    assert (
        script.main(
            [
                "--sample",
                str(out_dir / "generator.pkl"),
                "--num-samples",
                "5",
                "--out-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    singles = sorted(tmp_path.glob("sample_*.png"))
    assert [p.name for p in singles] == [f"sample_{i:04d}.png" for i in range(1, 6)]
    assert (tmp_path / "samples_grid.png").exists()
    config = machinery.read_config(script, out_dir / "config.json")
    generator = machinery.load_generator(script, out_dir / "generator.pkl", config)
    z = torch.randn(5, config.z_dim, generator=torch.Generator().manual_seed(config.seed))
    expected = (
        ((generator(z)[2] + 1) / 2).clamp(0, 1).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
    )
    with Image.open(singles[2]) as image:
        saved = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    assert (saved.int() - expected.int()).abs().max() <= 1


def test_sample_with_a_mismatched_config_names_the_mismatch(
    script, finished_runs, tmp_path, capsys
):
    out_dir = finished_runs[script.__name__]
    assert (
        script.main(
            [
                "--sample",
                str(out_dir / "generator.pkl"),
                "--g-channels",
                "32",
                "--out-dir",
                str(tmp_path),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "does not fit the Config" in err and "'project.weight' has shape [256, 100]" in err
    assert "--g-channels" in err and err.count("\n") == 1


def test_a_nearest_upsampling_run_samples_from_its_config_and_a_mismatch_names_the_flag(
    cache_dir, tmp_path, capsys
):
    module = MODULES["gan_complete"]
    out_dir = tmp_path / "nearest"
    assert module.main(tiny_args(cache_dir, out_dir, "--upsample", "nearest", "--epochs", "1")) == 0
    state = machinery.load_state_dict_safely(out_dir / "generator.pkl")
    # three Conv2d k3
    assert [tuple(v.shape[2:]) for k, v in state.items() if v.dim() == 4] == [(3, 3)] * 3
    assert (
        module.main(
            [
                "--sample",
                str(out_dir / "generator.pkl"),
                "--num-samples",
                "3",
                "--out-dir",
                str(tmp_path / "samples"),
            ]
        )
        == 0
    )  # config.json says nearest
    assert len(list((tmp_path / "samples").glob("sample_*.png"))) == 3
    capsys.readouterr()
    assert (
        module.main(
            [
                "--sample",
                str(out_dir / "generator.pkl"),
                "--upsample",
                "transpose",
                "--out-dir",
                str(tmp_path / "wrong"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "does not fit the Config" in err and "--upsample" in err and err.count("\n") == 1


def test_ema_follows_the_generator_early_and_averages_later():
    module = MODULES["gan_complete"]
    generator = module.Generator(module.Config(img_size=32, g_channels=16, d_channels=16))
    ema = module.Generator(module.Config(img_size=32, g_channels=16, d_channels=16))
    start = generator.project.weight.detach().clone()
    machinery.update_ema(ema, generator, 0.999, updates=0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(ema.state_dict().values(), generator.state_dict().values())
    )
    for updates in range(1, 21):
        with torch.no_grad():
            generator.project.weight.add_(1.0)
        machinery.update_ema(ema, generator, 0.999, updates)
    shift = (ema.project.weight - start).mean().item()
    # a plain 0.999 EMA would have moved ~0.2 of the way; the warm-up keeps it near the last weights
    assert 15 < shift < 20
    before = ema.project.weight.detach().clone()
    with torch.no_grad():
        generator.project.weight.add_(1000.0)
        generator.net[0].num_batches_tracked.fill_(7)  # a count: copied, not averaged
    # much later: the decay has reached its cap
    machinery.update_ema(ema, generator, 0.999, updates=20000)
    moved = (ema.project.weight - before).mean().item()
    assert moved == pytest.approx(
        0.001 * (generator.project.weight - before).mean().item(), rel=1e-3
    )
    assert ema.net[0].num_batches_tracked.item() == 7


def test_mixed_precision_choice(monkeypatch):
    module = MODULES["gan_complete"]
    cpu = torch.device("cpu")
    assert machinery.amp_dtype(module.Config(amp="off"), cpu) is None
    assert machinery.amp_dtype(module.Config(amp="bf16"), cpu) is torch.bfloat16
    # emulated bf16 is slower: fp32
    monkeypatch.setattr(machinery, "cpu_has_native_bf16", lambda: False)
    assert machinery.amp_dtype(module.Config(amp="auto"), cpu) is None
    monkeypatch.setattr(machinery, "cpu_has_native_bf16", lambda: True)
    assert machinery.amp_dtype(module.Config(amp="auto"), cpu) is torch.bfloat16
    gpu = torch.device("cuda:1")
    for capability, expected in (
        ((7, 5), torch.float16),
        ((8, 0), torch.bfloat16),
        ((9, 0), torch.bfloat16),
    ):
        # a T4 (7.5) only emulates bf16 (torch.cuda.is_bf16_supported() still says True): fp16 + a
        # scaler there
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device, c=capability: c)
        assert machinery.amp_dtype(module.Config(amp="auto"), gpu) is expected


@pytest.mark.skipif(sys.platform != "linux", reason="a setting of glibc's allocator")
def test_freed_cpu_memory_is_kept_so_steps_stop_page_faulting():
    # 16 MB of 1 MB tensors made and freed, as a step's activations are. From glibc's fixed defaults
    # (its dynamic thresholds vary run to run), the memory goes back to the OS and each round
    # page-faults it in again; after the setting it is reused.
    code = """if True:
        import ctypes, resource, sys, torch, machinery
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 << 10)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 << 10)  # M_TRIM_THRESHOLD
        machinery.keep_freed_cpu_memory(torch.device(sys.argv[1]))
        def faults():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(20):
                activations = [torch.ones(1 << 18) for _ in range(16)]
                del activations
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        faults()
        print(faults())
    """
    faults = {
        device: int(
            subprocess.run(
                [sys.executable, "-c", code, device],
                cwd=ROOT,
                env=subprocess_env(),
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            ).stdout
        )
        for device in ("cuda", "cpu")
    }  # on a GPU run the host allocator is left alone
    assert faults["cuda"] > 20 * 16 * 2**20 // 4096 // 2  # about every page, each round
    assert faults["cpu"] < faults["cuda"] / 20


def test_a_128_pixel_run_writes_128_pixel_images(cache_dir, tmp_path):
    module = MODULES["dcgan"]
    args = tiny_args(
        cache_dir,
        tmp_path,
        "--img-size",
        "128",
        "--synthetic-images",
        "12",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--num-samples",
        "4",
        "--latent-pool",
        "8",
    )
    assert module.main(args) == 0
    with Image.open(tmp_path / "generated_samples.png") as grid:
        assert grid.size == (4 * 128 + 5 * 2, 128 + 2 * 2)
    assert machinery.read_config(module, tmp_path / "config.json").img_size == 128


def test_without_ema_the_saved_generator_is_the_trained_one(cache_dir, tmp_path):
    module = MODULES["wgan_clip"]
    assert module.main(tiny_args(cache_dir, tmp_path, "--ema-decay", "0", "--epochs", "1")) == 0
    saved = machinery.load_state_dict_safely(tmp_path / "generator.pkl")
    trained = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["generator"]
    assert all(torch.equal(saved[k], trained[k]) for k in saved)


def test_checkpoint_every_saves_inside_an_epoch(cache_dir, tmp_path, monkeypatch):
    module = MODULES["gan_complete"]
    # 9 steps per epoch; with a checkpoint every 4 steps, a crash loses at most 3 steps
    saved_states = []
    real_save = torch.save

    def spy(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "counters" in obj:
            saved_states.append(dict(obj["counters"]))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", spy)
    assert module.main(tiny_args(cache_dir, tmp_path, "--checkpoint-every", "4")) == 0
    assert [(s["step"], s["epoch"], s["batch"]) for s in saved_states] == [
        (4, 0, 4),
        (8, 0, 8),
        (9, 1, 0),
        (12, 1, 3),
        (16, 1, 7),
        (18, 2, 0),
    ]


@pytest.mark.parametrize(
    "schedule, expected",
    [
        (
            "cosine",
            [1 / 3, 2 / 3, 1.0, 0.5 * (1 + np.cos(np.pi / 8)), 0.5 * (1 + np.cos(np.pi * 7 / 8))],
        ),
        ("linear", [1 / 3, 2 / 3, 1.0, 7 / 8, 1 / 8]),
        ("constant", [1 / 3, 2 / 3, 1.0, 1.0, 1.0]),
    ],
)
def test_learning_rate_schedules_warm_up_then_follow_their_shape(schedule, expected):
    module = MODULES["gan_complete"]
    config = module.Config(lr_schedule=schedule, warmup_steps=2)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = machinery.lr_schedule(optimizer, config, total_steps=10)  # 2 warm-up steps, then 8
    factors = [scheduler.lr_lambdas[0](step) for step in (0, 1, 2, 3, 9)]
    assert factors == pytest.approx(expected)


def test_the_lr_column_shows_the_chosen_schedule(cache_dir, tmp_path):
    module = MODULES["dcgan"]
    assert (
        module.main(
            tiny_args(cache_dir, tmp_path, "--lr-schedule", "linear", "--warmup-steps", "4")
        )
        == 0
    )
    lr = machinery.read_metrics(tmp_path)[:, 6]
    peak = module.Config().lr_generator
    assert lr[:4] == pytest.approx(peak * np.arange(1, 5) / 5)  # warm-up from 0
    assert lr[4] == pytest.approx(peak) and (np.diff(lr[4:]) < 0).all()  # then straight down
    assert lr[-1] == pytest.approx(peak / (len(lr) - 4))


def test_the_wgan_clip_default_is_the_papers_constant_rmsprop_rate():
    config = MODULES["wgan_clip"].Config()
    assert (config.lr_schedule, config.lr_generator, config.lr_discriminator) == (
        "constant",
        5e-5,
        5e-5,
    )


class TableGenerator(torch.nn.Module):
    """Flat grey images whose levels come from a table, one per z in order: the most similar pair
    (-1, -0.99) and the most dissimilar pair (-1, 1) share an image."""

    def __init__(self):
        super().__init__()
        self.levels = torch.tensor(
            [
                -1.0,
                -0.99,
                1.0,
                0.98,
                0.9,
                0.3,
                0.31,
                -0.3,
                0.0,
                0.5,
                -0.6,
                0.7,
                0.1,
                -0.8,
                0.6,
                -0.2,
            ]
        )

    def forward(self, z, labels=None):
        return (
            self.levels[torch.arange(len(z)) % len(self.levels)]
            .view(-1, 1, 1, 1)
            .expand(-1, 3, 32, 32)
        )


def test_latent_analysis_never_shows_one_image_as_both_similar_and_dissimilar(tmp_path):
    module = MODULES["gan_complete"]
    config = module.Config(img_size=32, z_dim=8, latent_pool=16)
    analysis.latent_space_analysis(TableGenerator(), config, tmp_path, "WGAN-GP")
    report = (tmp_path / "latent_l2_norms.txt").read_text()
    similar, dissimilar = report.split("answer:")[0].split("most dissimilar pairs")
    similar = set(re.findall(r"z#(\d+)", similar))
    dissimilar = set(re.findall(r"z#(\d+)", dissimilar))
    assert len(similar) == len(dissimilar) == 6 and not similar & dissimilar
    assert {"0", "1"} <= similar  # the closest pair is still shown as similar
    with Image.open(tmp_path / "latent_space_analysis.png") as plot:
        assert plot.size[0] > 1000
    # the chosen z's themselves, two rows a pair, with the report's distances
    with open(tmp_path / "latent_pairs.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["pair"] for row in rows[:2]] == ["similar 1", "similar 1"] and len(rows) == 12
    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(config.seed + 1))
    for row in rows:
        saved = torch.tensor([float(row[f"z_{d}"]) for d in range(8)])
        assert torch.allclose(saved, z[int(row["z_index"])])
    first, second = rows[0], rows[1]
    distance = (z[int(first["z_index"])] - z[int(second["z_index"])]).norm().item()
    assert float(first["z_distance"]) == pytest.approx(distance, abs=1e-3)
    assert f"z L2 distance {distance:8.3f}" in report


def batchnorm_inputs(generator, z):
    """{BatchNorm2d: (per-channel mean, biased var)} of what each BatchNorm sees in train mode."""
    seen, hooks = {}, []
    for norm in generator.modules():
        if isinstance(norm, torch.nn.BatchNorm2d):
            hooks.append(
                norm.register_forward_hook(
                    lambda m, inputs, out: seen.update({m: inputs[0].transpose(0, 1).flatten(1)})
                )
            )
    with torch.no_grad():
        generator.train()(z)
    for hook in hooks:
        hook.remove()
    return {m: (x.mean(1), x.var(1)) for m, x in seen.items()}


def test_the_ema_generator_gets_batchnorm_statistics_of_its_own_weights():
    module = MODULES["gan_complete"]
    config = module.Config(img_size=32, g_channels=32, z_dim=8, batch_size=64)
    ema = module.Generator(config).apply(module.weights_init)
    with torch.no_grad():
        ema.project.weight.mul_(4)  # averaged weights that the averaged statistics do not describe
    calibrated = machinery.recalibrated_batchnorm(ema, config, seed=3)
    # the EMA itself is left alone
    assert not calibrated.training and ema.net[0].running_var.eq(1).all()
    measured = batchnorm_inputs(calibrated, torch.randn(4096, 8))
    for norm, (mean, var) in measured.items():
        assert torch.allclose(norm.running_mean, mean, atol=0.05 * var.sqrt().max().item())
        assert torch.allclose(norm.running_var, var, rtol=0.15)


def test_a_saved_ema_generator_describes_its_own_batchnorm_statistics(script, finished_runs):
    config = machinery.read_config(script, finished_runs[script.__name__] / "config.json")
    generator = machinery.load_generator(
        script, finished_runs[script.__name__] / "generator.pkl", config
    )
    first = generator.net[0]
    mean, var = batchnorm_inputs(generator, torch.randn(2048, config.z_dim))[first]
    assert torch.allclose(first.running_var, var, rtol=0.2)


def test_a_redirected_log_gets_no_progress_bars(tmp_path):
    # tqdm's bars are for a terminal: in a log file each redraw is another line of \r's
    arguments = [
        arg for arg in tiny_args(tmp_path / "cache", tmp_path / "out") if arg != "--no-progress"
    ]
    result = subprocess.run(
        [sys.executable, "dcgan.py", *arguments, "--epochs", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "\r" not in result.stdout + result.stderr and "it/s" not in result.stderr
    assert "epoch 1/1" in result.stdout
