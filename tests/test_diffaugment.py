"""--diffaugment: DiffAugment (Zhao et al. 2020) of every critic input, real and generated alike."""

import importlib

import pytest
import torch

from conftest import SCRIPTS, tiny_args

MODULES = {name: importlib.import_module(name) for name in SCRIPTS}
gan_complete = MODULES["gan_complete"]


def images(n=6, size=32):
    torch.manual_seed(0)
    return torch.rand(n, 3, size, size) * 1.6 - 0.8


def test_no_policy_is_no_change_and_each_op_differs_per_image():
    x = images()
    assert torch.equal(gan_complete.diff_augment(x, ""), x)
    torch.manual_seed(1)
    coloured = gan_complete.diff_augment(x, "color")
    shifts = (coloured - x).mean((1, 2, 3))
    assert shifts.std() > 0.05  # a brightness of its own per image
    cut = gan_complete.diff_augment(x, "cutout")
    # pixels blanked per image: a square of half the side, clipped at edges
    zeros = (cut == 0).all(1).sum((1, 2))
    assert (zeros > 0).all() and (zeros <= 16 * 16).all() and (zeros == 16 * 16).any()


def test_translation_moves_whole_pixels_and_shifts_in_zeros():
    x = images(n=16)
    torch.manual_seed(2)
    moved = gan_complete.diff_augment(x, "translation")
    for original, shifted in zip(x, moved):
        found = [
            (dy, dx)
            for dy in range(-4, 5)
            for dx in range(-4, 5)
            if torch.equal(
                shifted[:, max(dy, 0) : 32 + min(dy, 0), max(dx, 0) : 32 + min(dx, 0)],
                original[:, max(-dy, 0) : 32 + min(-dy, 0), max(-dx, 0) : 32 + min(-dx, 0)],
            )
        ]
        # a shift of at most 32/8 = 4 pixels, the rest of the image unchanged
        assert len(found) == 1
        dy, dx = found[0]
        if dy > 0:
            assert (shifted[:, :dy] == 0).all()


def shift_of(original, shifted, most):
    """The (dy, dx) whole-pixel shift, zeros shifted in, that turns original into shifted; None if
    none."""
    size = original.shape[-1]
    for dy in range(-most, most + 1):
        for dx in range(-most, most + 1):
            expected = torch.zeros_like(original)
            expected[:, max(dy, 0) : size + min(dy, 0), max(dx, 0) : size + min(dx, 0)] = original[
                :, max(-dy, 0) : size + min(-dy, 0), max(-dx, 0) : size + min(-dx, 0)
            ]
            if torch.equal(expected, shifted):
                return dy, dx
    return None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("size", [128, 256])
def test_translation_is_exact_in_half_precision_and_under_autocast(dtype, size):
    # A bf16 sampling grid cannot address every pixel of a 128 or 256 px image: a grid_sample
    # translation moved pixels to their neighbours (or read out of bounds) there.
    x = images(n=4, size=size).to(dtype)
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        moved = gan_complete.diff_augment(x, "translation")
    assert moved.dtype == dtype
    for original, shifted in zip(x, moved):
        assert shift_of(original, shifted, size // 8) is not None


def test_augmentations_are_differentiable():
    x = images().requires_grad_(True)
    gan_complete.diff_augment(x, "color,translation,cutout").sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


class RecordingCritic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.seen = []

    def forward(self, x, labels=None):
        self.seen.append(x.detach().clone())
        return x.flatten(1).mean(1) * self.weight


class ConstantGenerator(torch.nn.Module):
    num_classes = 0

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, z, labels=None):
        return torch.full((len(z), 3, 32, 32), 0.5) + self.weight


class HalfPrecisionGenerator(ConstantGenerator):
    def forward(self, z, labels=None):  # what a generator's last layer gives under bf16 autocast
        return super().forward(z, labels).to(torch.bfloat16)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_augments_the_generated_batch_in_fp32_like_the_real_one(name):
    module = MODULES[name]
    config = module.Config(img_size=32, z_dim=4, diffaugment="translation")
    critic, generator = RecordingCritic(), HalfPrecisionGenerator()
    opt_d = torch.optim.SGD(critic.parameters(), lr=0.0)
    module.critic_step(
        generator,
        critic,
        images(),
        torch.zeros(6, dtype=torch.long),
        opt_d,
        torch.amp.GradScaler("cpu", enabled=False),
        config,
        lambda: torch.autocast("cpu", dtype=torch.bfloat16),
    )
    seen_real, seen_fake = critic.seen[:2]
    assert seen_real.dtype == seen_fake.dtype == torch.float32


def test_the_critic_sees_augmented_reals_and_fakes_and_is_penalised_between_them():
    config = gan_complete.Config(img_size=32, z_dim=4, diffaugment="cutout")
    critic, generator = RecordingCritic(), ConstantGenerator()
    real = images()
    opt_d = torch.optim.SGD(critic.parameters(), lr=0.0)
    gan_complete.critic_step(
        generator,
        critic,
        real,
        torch.zeros(6, dtype=torch.long),
        opt_d,
        torch.amp.GradScaler("cpu", enabled=False),
        config,
        lambda: torch.autocast("cpu", enabled=False),
    )
    seen_real, seen_fake, interpolates = critic.seen[:3]
    assert ((seen_real == 0).all(1).sum((1, 2)) > 0).all() and (
        (seen_fake == 0).all(1).sum((1, 2)) > 0
    ).all()
    # each interpolate lies on the segment between its augmented real and augmented fake
    alpha = ((interpolates - seen_fake) * (seen_real - seen_fake)).flatten(1).sum(1) / (
        (seen_real - seen_fake).square().flatten(1).sum(1)
    )
    rebuilt = alpha[:, None, None, None] * seen_real + (1 - alpha[:, None, None, None]) * seen_fake
    assert torch.allclose(rebuilt, interpolates, atol=1e-5) and ((alpha >= 0) & (alpha <= 1)).all()


def test_a_bad_policy_is_one_line(capsys):
    assert gan_complete.main(["--diffaugment", "color,flip"]) == 2
    err = capsys.readouterr().err
    assert "--diffaugment takes color, translation and cutout" in err and err.count("\n") == 1


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_trains_with_diffaugment(name, cache_dir, tmp_path):
    module = MODULES[name]
    assert (
        module.main(tiny_args(cache_dir, tmp_path, "--diffaugment", "color,translation,cutout"))
        == 0
    )
    assert module.read_config(tmp_path / "config.json").diffaugment == "color,translation,cutout"
