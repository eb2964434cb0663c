"""--diffaugment: DiffAugment (Zhao et al. 2020) of every critic input, real and generated alike."""

import importlib

import pytest
import torch

import machinery

from conftest import SCRIPTS, tiny_args

MODULES = {name: importlib.import_module(name) for name in SCRIPTS}
gan_complete = MODULES["gan_complete"]


def images(n=6, size=32):
    torch.manual_seed(0)
    return torch.rand(n, 3, size, size) * 1.6 - 0.8


def test_no_policy_is_no_change_and_each_op_differs_per_image():
    x = images()
    assert torch.equal(machinery.diff_augment(x, ""), x)
    torch.manual_seed(1)
    coloured = machinery.diff_augment(x, "color")
    shifts = (coloured - x).mean((1, 2, 3))
    assert shifts.std() > 0.05  # a brightness of its own per image
    cut = machinery.diff_augment(x, "cutout")
    # pixels blanked per image: a square of half the side, clipped at edges
    zeros = (cut == 0).all(1).sum((1, 2))
    assert (zeros > 0).all() and (zeros <= 16 * 16).all() and (zeros == 16 * 16).any()


def test_translation_moves_whole_pixels_and_shifts_in_zeros():
    x = images(n=16)
    torch.manual_seed(2)
    moved = machinery.diff_augment(x, "translation")
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
        moved = machinery.translate(x, size // 8, size // 8)
    assert moved.dtype == dtype
    for original, shifted in zip(x, moved):
        assert shift_of(original, shifted, size // 8) is not None


def test_augmentations_are_differentiable():
    x = images().requires_grad_(True)
    machinery.diff_augment(x, "color,translation,cutout").sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def record_augmentations(monkeypatch):
    """[(the input, what the critic was given)] of every machinery.diff_augment call."""
    calls, augment = [], machinery.diff_augment
    monkeypatch.setattr(
        machinery,
        "diff_augment",
        lambda x, policy: calls.append((x.detach(), augment(x, policy))) or calls[-1][1],
    )
    return calls


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_augments_the_generated_batch_in_fp32_like_the_real_one(
    name, cache_dir, tmp_path, monkeypatch
):
    calls = record_augmentations(monkeypatch)
    arguments = ["--diffaugment", "translation", "--amp", "bf16", "--epochs", "1"]
    assert MODULES[name].main(tiny_args(cache_dir, tmp_path, *arguments)) == 0
    # under bf16 autocast the generator hands over bf16 images; the critic sees them in fp32
    assert any(given.dtype == torch.bfloat16 for given, _ in calls)
    assert all(augmented.dtype == torch.float32 for _, augmented in calls)


def test_the_critic_sees_augmented_reals_and_fakes_and_is_penalised_between_them(
    cache_dir, tmp_path, monkeypatch
):
    calls = record_augmentations(monkeypatch)
    penalised, penalty = [], gan_complete.gradient_penalty
    monkeypatch.setattr(
        gan_complete,
        "gradient_penalty",
        lambda critic, real, fake, *rest: (
            penalised.append((real, fake)) or penalty(critic, real, fake, *rest)
        ),
    )
    arguments = ["--diffaugment", "cutout", "--epochs", "1", "--n-critic", "10"]
    assert gan_complete.main(tiny_args(cache_dir, tmp_path, *arguments)) == 0
    # a critic step augments the real batch, then the generated one, and penalises between them
    real, fake = penalised[0]
    assert real is calls[0][1] and fake is calls[1][1]
    for augmented in (real, fake):  # a square of each image cut out: zeros in every channel
        assert ((augmented == 0).all(1).sum((1, 2)) > 0).all()


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
    assert (
        machinery.read_config(module, tmp_path / "config.json").diffaugment
        == "color,translation,cutout"
    )
