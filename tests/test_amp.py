"""--amp fp16: fp16 autocast with a GradScaler, the gradient penalty included (on the CPU)."""

import importlib
import math

import pytest
import torch

import analysis
import machinery
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
        return gan_complete.gradient_penalty(critic, real, fake, scaler=scaler)


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


def critic_update(critic, real, fake, opt_d, scaler):
    """The WGAN-GP critic's update as gan_complete.train writes it, under fp16 autocast."""
    with torch.autocast("cpu", dtype=torch.float16):
        penalty = gan_complete.gradient_penalty(critic, real, fake, scaler=scaler)
        d_loss = critic(fake).float().mean() - critic(real).float().mean() + 10 * penalty
    opt_d.zero_grad(set_to_none=True)
    scaler.scale(d_loss).backward()
    return d_loss, penalty, machinery.optimizer_step(opt_d, scaler)


def test_an_overflow_is_skipped_and_lowers_the_scale_and_training_goes_on():
    critic, config = small_critic()
    generator = gan_complete.Generator(config).apply(gan_complete.weights_init)
    _, opt_d = gan_complete.make_optimizers(generator, critic, config)
    # far past fp16's range: must overflow
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    real, fake = torch.rand(2, 8, 3, 32, 32) * 2 - 1
    before = [p.detach().clone() for p in critic.parameters()]
    _, _, skipped = critic_update(critic, real, fake, opt_d, scaler)
    assert skipped.item() == 1 and scaler.get_scale() < 2.0**40
    # the step was not taken
    assert all(torch.equal(a, b) for a, b in zip(before, critic.parameters()))
    for _ in range(40):  # the scale comes down until steps go through
        d_loss, gp, skipped = critic_update(critic, real, fake, opt_d, scaler)
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
        assert machinery.amp_dtype(config, torch.device("cuda")) is expected
    assert machinery.amp_dtype(gan_complete.Config(amp="fp16"), CPU) is torch.float16
    monkeypatch.setattr(machinery, "cpu_has_native_bf16", lambda: False)
    # the CPU is unchanged: fp32 or bf16, never fp16
    assert machinery.amp_dtype(config, CPU) is None


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
    metrics = machinery.read_metrics(tmp_path)
    skipped = metrics[:, metric_columns(module).index("d_skipped")]
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
    metrics = machinery.read_metrics(tmp_path)
    columns = metric_columns(gan_complete)
    skipped = metrics[:, columns.index("d_skipped")]
    assert len(skipped) > 30 and skipped.sum() <= 2
    text = (tmp_path / "metrics.csv").read_text()
    # a skipped update's undefined loss is a blank cell
    assert "nan" not in text and "inf" not in text
    for row in metrics[skipped == 1]:
        assert row[columns.index("step")] > 0


def metric_columns(script):
    return ["step", "epoch", *script.METRICS, "lr", "time", "d_skipped", "g_skipped"]


def test_a_skipped_update_is_a_blank_in_metrics_csv_and_left_out_of_the_plot(tmp_path):
    columns = metric_columns(gan_complete)
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
    text = machinery.csv_text([[r[c] for c in columns] for r in (row, diverged)], columns).decode()
    assert text.splitlines() == [
        "1,1,,0.5,,,0.0001,0.1,1.0,0.0",
        "2,1,nan,0.5,inf,nan,0.0001,0.1,0.0,0.0",
    ]
    (tmp_path / "metrics.csv").write_text(",".join(columns) + "\n" + text)
    read = machinery.read_metrics(tmp_path)
    assert math.isnan(read[0, columns.index("d_loss")]) and read[0, columns.index("g_loss")] == 0.5
    figure = tmp_path / "training_losses.png"
    analysis.plot_losses(dict(zip(columns, read.T)), figure, "WGAN-GP", "view", ["w_dist", "gp"])
    assert figure.stat().st_size > 0


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
