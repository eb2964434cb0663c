"""Workflows users come from: MNIST-style data, TensorBoard, latent traversal, feature matching."""

import importlib
import sys
import types

import numpy as np
import pytest
import torch

import machinery
from PIL import Image

import analysis
from conftest import SCRIPTS, tiny_args
from test_preprocess import make_digits, no_download  # noqa: F401 (a fixture)

MODULES = {name: importlib.import_module(name) for name in SCRIPTS}
gan_complete, dcgan = MODULES["gan_complete"], MODULES["dcgan"]


def test_mnist_trains_grayscale_end_to_end(tmp_path, no_download):  # noqa: F811
    make_digits(tmp_path / "data", "MNIST")
    out = tmp_path / "out"
    args = [
        "--source",
        "mnist",
        "--data-dir",
        str(tmp_path / "data"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out-dir",
        str(out),
        "--img-size",
        "32",
        "--g-channels",
        "16",
        "--d-channels",
        "16",
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--latent-pool",
        "8",
        "--num-samples",
        "4",
        "--no-progress",
        "--conditional",
    ]
    assert gan_complete.main(args) == 0
    config = machinery.read_config(gan_complete, out / "config.json")
    data = __import__("json").loads((out / "config.json").read_text())["data"]
    assert data["channels"] == 1
    generator = machinery.load_generator(gan_complete, out / "generator.pkl", config, data=data)
    assert generator(torch.randn(2, config.z_dim), torch.tensor([0, 1])).shape == (2, 1, 32, 32)
    digits = gan_complete.generate_per_class(out / "generator.pkl", per_class=3)
    # grayscale, as PIL takes it
    assert all(batch.shape == (3, 32, 32) for batch in digits.values())
    for name in ("samples_epoch_001.png", "generated_samples.png", "latent_traversal.png"):
        with Image.open(out / name) as image:
            rgb = np.asarray(image.convert("RGB")).astype(int)
        # a figure's text is black on white
        grid = rgb[:, -40:] if name == "latent_traversal.png" else rgb
        assert (grid[..., 0] == grid[..., 1]).all() and (grid[..., 1] == grid[..., 2]).all(), name


class FakeSummaryWriter:
    """Records what a run hands TensorBoard's SummaryWriter."""

    made = []

    def __init__(self, log_dir, purge_step=None):
        self.log_dir, self.purge_step = log_dir, purge_step
        self.scalars, self.images, self.closed = [], [], False
        FakeSummaryWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, step, value))

    def add_image(self, tag, image, step):
        self.images.append((tag, step, tuple(image.shape)))

    def close(self):
        self.closed = True


def test_tensorboard_gets_the_scalars_every_log_every_steps_and_a_grid_every_epoch(
    cache_dir, tmp_path, monkeypatch
):
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeSummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name == "tensorboard" else None
    )
    FakeSummaryWriter.made.clear()
    assert (
        gan_complete.main(tiny_args(cache_dir, tmp_path, "--tensorboard", "--log-every", "4")) == 0
    )
    (writer,) = FakeSummaryWriter.made
    assert (
        writer.log_dir == tmp_path / "tensorboard" and writer.closed and writer.purge_step is None
    )
    metrics = machinery.read_metrics(tmp_path)
    d_loss = {step: value for tag, step, value in writer.scalars if tag == "d_loss"}
    # every 4 steps and at each epoch's end (9 steps an epoch)
    assert {4, 8, 9, 12, 16, 18} == set(d_loss)
    assert d_loss[8] == pytest.approx(metrics[7, 2])
    assert {tag for tag, _, _ in writer.scalars} == {"d_loss", "g_loss", "w_dist", "gp", "lr"}
    assert [(tag, step) for tag, step, _ in writer.images] == [
        ("fixed_noise_samples", 1),
        ("fixed_noise_samples", 2),
    ]
    assert gan_complete.main(["--out-dir", str(tmp_path), "--resume", "--epochs", "3"]) == 0
    # steps a stopped run logged past its checkpoint go
    assert FakeSummaryWriter.made[-1].purge_step == 18


def test_tensorboard_without_the_package_is_one_line_with_the_install_command(
    cache_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert gan_complete.main(tiny_args(cache_dir, tmp_path, "--tensorboard")) == 2
    err = capsys.readouterr().err
    assert "pip install tensorboard" in err and err.count("\n") == 1
    assert not (tmp_path / "checkpoint.pt").exists()


class TwoDimensionGenerator(torch.nn.Module):
    """Images that depend on z[3] (strongly) and z[7] (weakly) only."""

    num_classes = 0

    def forward(self, z, labels=None):
        pattern = torch.linspace(-1, 1, 16)
        image = torch.tanh(
            0.3 * z[:, 3, None, None] * pattern[None, :, None] + 0.1 * z[:, 7, None, None]
        )
        return image.expand(-1, 16, 16)[:, None].expand(-1, 3, -1, -1)


def test_latent_traversal_finds_the_dimensions_that_change_the_image(tmp_path):
    config = gan_complete.Config(img_size=16, z_dim=10)
    seen, generator = [], TwoDimensionGenerator()
    analysis.latent_traversal(
        lambda z, labels: seen.append(z) or generator(z), config, tmp_path, "test", count=1
    )
    assert (tmp_path / "latent_traversal.png").stat().st_size > 0
    rows, plane = seen[-2], seen[-1]
    moved = (
        (rows.view(analysis.TRAVERSAL_DIMS, analysis.TRAVERSAL_STEPS, 10).std(1) > 0)
        .float()
        .argmax(1)
    )
    # the strongest dimension first, then the other one that matters
    assert moved[:2].tolist() == [3, 7]
    assert torch.allclose(rows[:7, 3], torch.linspace(-3, 3, 7))
    spread = plane.std(0)
    assert (
        set(spread.topk(2).indices.tolist()) == {3, 7}
        and spread[[0, 1, 2, 4, 5, 6, 8, 9]].max() < 1e-3
    )


def test_feature_matching_is_the_distance_of_the_mean_features():
    config = dcgan.Config(img_size=32, g_channels=16, d_channels=16)
    torch.manual_seed(0)
    discriminator = dcgan.Discriminator(config).eval()  # eval: fixed BN
    real, labels = torch.rand(8, 3, 32, 32) * 2 - 1, torch.zeros(8, dtype=torch.long)
    fake = (torch.rand(8, 3, 32, 32) * 2 - 1).requires_grad_(True)
    _, fake_features = discriminator(fake, labels, with_features=True)
    with torch.no_grad():
        _, real_features = discriminator(real, labels, with_features=True)
    expected = (real_features.mean(0) - fake_features.mean(0)).square().sum()
    distance = dcgan.feature_distance(discriminator, real, labels, fake_features)
    assert distance > 0 and distance.item() == pytest.approx(expected.item(), rel=1e-5)
    distance.backward()  # the generator learns through the generated images' features
    assert fake.grad.abs().sum() > 0


def test_the_generator_loss_adds_feature_matching_at_its_weight(cache_dir, tmp_path, monkeypatch):
    losses, distances = [], []
    generator_loss, feature_distance = dcgan.generator_loss, dcgan.feature_distance
    monkeypatch.setattr(
        dcgan, "generator_loss", lambda *a: losses.append(generator_loss(*a)) or losses[-1]
    )
    monkeypatch.setattr(
        dcgan,
        "feature_distance",
        lambda *a: distances.append(feature_distance(*a)) or distances[-1],
    )
    arguments = ["--feature-matching", "2.0", "--epochs", "1", "--log-every", "1", "--amp", "off"]
    assert dcgan.main(tiny_args(cache_dir, tmp_path, *arguments)) == 0
    logged = machinery.read_metrics(tmp_path)[:, 3]  # g_loss of each step
    # L_G = BCE(D(G(z)), 1) + W * ||E f(x) - E f(G(z))||^2, W = 2
    expected = [loss.item() + 2.0 * distance.item() for loss, distance in zip(losses, distances)]
    assert len(expected) == len(logged) and distances[0] > 0
    assert logged == pytest.approx(expected, rel=1e-5)


def test_feature_matching_trains_a_dcgan_run(cache_dir, tmp_path):
    assert dcgan.main(tiny_args(cache_dir, tmp_path, "--feature-matching", "1.0")) == 0
    assert np.isfinite(machinery.read_metrics(tmp_path)[:, 3]).all()
