"""--amp fp16: fp16 autocast with a GradScaler, the gradient penalty included (on the CPU)."""

import importlib
import math

import pytest
import torch

from conftest import SCRIPTS, tiny_args

MODULES = {name: importlib.import_module(name) for name in SCRIPTS}
gan_complete = MODULES["gan_complete"]
CPU = torch.device("cpu")


def small_critic():
    config = gan_complete.Config(img_size=32, d_channels=32, g_channels=32)
    torch.manual_seed(0)
    return gan_complete.Discriminator(config).apply(gan_complete.weights_init), config


def penalty(critic, real, fake, dtype=None, scaler=None):
    torch.manual_seed(1)  # the same interpolation weights every time
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        return gan_complete.compute_gradient_penalty(critic, real, fake, scaler=scaler)


def test_the_fp16_penalty_under_a_scaler_matches_fp32():
    critic, _ = small_critic()
    with torch.no_grad():
        # gradient norms near 10: (||g|| - 1)^2 no longer magnifies rounding
        critic.score.weight.mul_(20)
    real, fake = torch.rand(2, 16, 3, 32, 32) * 2 - 1
    exact = penalty(critic, real, fake)
    half = penalty(
        critic, real, fake, torch.float16, torch.amp.GradScaler("cpu", init_scale=2.0**6)
    )
    assert exact.item() > 10 and half.dtype == torch.float32
    # unscaled: (64 ||g|| - 1)^2 would be far off
    assert half.item() == pytest.approx(exact.item(), rel=0.01)


def test_an_overflow_is_skipped_and_lowers_the_scale_and_training_goes_on():
    critic, config = small_critic()
    generator = gan_complete.Generator(config).apply(gan_complete.weights_init)
    _, opt_d = gan_complete.make_optimizers(generator, critic, config, CPU)
    # far past fp16's range: must overflow
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    autocast = lambda: torch.autocast("cpu", dtype=torch.float16)
    real, labels = torch.rand(8, 3, 32, 32) * 2 - 1, torch.zeros(8, dtype=torch.long)
    before = [p.detach().clone() for p in critic.parameters()]
    _, _, _, skipped = gan_complete.critic_step(
        generator, critic, real, labels, opt_d, scaler, config, autocast
    )
    assert skipped.item() == 1 and scaler.get_scale() < 2.0**40
    # the step was not taken
    assert all(torch.equal(a, b) for a, b in zip(before, critic.parameters()))
    for _ in range(40):  # the scale comes down until steps go through
        d_loss, _, gp, skipped = gan_complete.critic_step(
            generator, critic, real, labels, opt_d, scaler, config, autocast
        )
    assert skipped.item() == 0 and torch.isfinite(d_loss) and torch.isfinite(gp)
    assert not all(torch.equal(a, b) for a, b in zip(before, critic.parameters()))


def test_auto_chooses_fp16_only_on_gpus_with_fp16_tensor_cores_and_no_fast_bf16(monkeypatch):
    config = gan_complete.Config(amp="auto")
    for capability, expected in (
        ((6, 1), None),
        ((7, 0), torch.float16),
        ((7, 5), torch.float16),
        ((8, 0), torch.bfloat16),
    ):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device, c=capability: c)
        assert gan_complete.amp_dtype(config, torch.device("cuda")) is expected
    assert gan_complete.amp_dtype(gan_complete.Config(amp="fp16"), CPU) is torch.float16
    monkeypatch.setattr(gan_complete, "cpu_has_native_bf16", lambda: False)
    # the CPU is unchanged: fp32 or bf16, never fp16
    assert gan_complete.amp_dtype(config, CPU) is None


@pytest.mark.parametrize("name", SCRIPTS)
def test_fp16_trains_every_script_and_shows_skipped_steps_in_metrics(
    name, cache_dir, tmp_path, monkeypatch
):
    module = MODULES[name]
    real_scaler = torch.amp.GradScaler
    # a start far above fp16's range, so that the first steps overflow and are skipped, as on a GPU
    monkeypatch.setattr(
        torch.amp, "GradScaler", lambda *a, **k: real_scaler(*a, **{**k, "init_scale": 2.0**20})
    )
    assert module.main(tiny_args(cache_dir, tmp_path, "--amp", "fp16", "--epochs", "4")) == 0
    metrics = module.read_metrics(tmp_path)
    skipped = metrics[:, module.METRIC_COLUMNS.index("d_skipped")]
    assert skipped[0] == 1 and skipped[-1] == 0  # skipped at the start, then trained
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert 0 < checkpoint["scaler_d"]["scale"] < 2.0**20  # lowered, and kept for a resume


def test_fp16_starts_at_a_scale_that_fits_the_penalty_and_logs_skipped_steps_as_blanks(
    cache_dir, tmp_path
):
    # torch's default first scale (65,536) skipped the first ~13 critic steps of this run
    args = tiny_args(
        cache_dir, tmp_path, "--amp", "fp16", "--log-every", "1", "--synthetic-images", "96"
    )
    assert gan_complete.main(args) == 0
    metrics = gan_complete.read_metrics(tmp_path)
    columns = gan_complete.METRIC_COLUMNS
    skipped = metrics[:, columns.index("d_skipped")]
    assert len(skipped) > 30 and skipped.sum() <= 2
    text = (tmp_path / "metrics.csv").read_text()
    # a skipped update's undefined loss is a blank cell
    assert "nan" not in text and "inf" not in text
    for row in metrics[skipped == 1]:
        assert row[columns.index("step")] > 0


def test_a_skipped_update_is_a_blank_in_metrics_csv_and_left_out_of_the_plot(tmp_path):
    columns = gan_complete.METRIC_COLUMNS
    row = dict(
        step=1,
        epoch=1,
        d_loss=math.nan,
        g_loss=0.5,
        w_dist=math.inf,
        gp=math.nan,
        lr=1e-4,
        time=0.1,
        d_skipped=1.0,
        g_skipped=0.0,
    )
    diverged = {**row, "step": 2, "d_skipped": 0.0}  # not skipped: a NaN there is a NaN
    text = gan_complete.csv_text([[r[c] for c in columns] for r in (row, diverged)]).decode()
    assert text.splitlines() == [
        "1,1,,0.5,,,0.0001,0.1,1.0,0.0",
        "2,1,nan,0.5,inf,nan,0.0001,0.1,0.0,0.0",
    ]
    (tmp_path / "metrics.csv").write_text(",".join(columns) + "\n" + text)
    read = gan_complete.read_metrics(tmp_path)
    assert math.isnan(read[0, columns.index("d_loss")]) and read[0, columns.index("g_loss")] == 0.5
    gan_complete.plot_losses(tmp_path)
    assert (tmp_path / "training_losses.png").stat().st_size > 0


def test_a_resumed_fp16_run_continues_its_scale_and_ends_equal(cache_dir, tmp_path):
    args = lambda out, epochs: tiny_args(
        cache_dir, out, "--amp", "fp16", "--epochs", str(epochs), "--lr-schedule", "constant"
    )  # the same rate whatever --epochs says
    assert gan_complete.main(args(tmp_path / "whole", 3)) == 0
    assert gan_complete.main(args(tmp_path / "resumed", 2)) == 0
    assert (
        gan_complete.main(["--out-dir", str(tmp_path / "resumed"), "--resume", "--epochs", "3"])
        == 0
    )
    whole, resumed = (
        torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)
        for run in ("whole", "resumed")
    )
    assert whole["scaler_d"] == resumed["scaler_d"] and whole["scaler_g"] == resumed["scaler_g"]
    for key, value in whole["generator"].items():
        assert torch.equal(value, resumed["generator"][key]), key


def test_a_real_divergence_under_fp16_is_still_caught(cache_dir, tmp_path, capsys):
    # a rate that makes the weights huge: every later step overflows and is skipped, for ever
    args = tiny_args(
        cache_dir,
        tmp_path,
        "--amp",
        "fp16",
        "--lr-discriminator",
        "1e30",
        "--lr-generator",
        "1e30",
        "--synthetic-images",
        "160",
        "--epochs",
        "5",
    )
    assert gan_complete.main(args) == 1
    err = capsys.readouterr().err
    assert "error: the fp16 loss scaler skipped an update in each of the 100 steps" in err
