"""analysis.py with stand-in generators whose every image is known: the training GIF in epoch
order, a conditional generator's latent figures drawn over its classes, and --invert's search
kept where N(0, I) puts z."""

import csv
import types

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageSequence

import analysis

# ---------------------------------------------------------------- training_progress.gif

EPOCH_COLOURS = {
    1: (200, 0, 0),
    500: (0, 200, 0),
    999: (0, 0, 200),
    1000: (200, 200, 0),
    1200: (0, 200, 200),
}


def test_the_progress_gif_follows_the_epoch_number_past_999(tmp_path, monkeypatch):
    for epoch, colour in EPOCH_COLOURS.items():
        Image.new("RGB", (20, 20), colour).save(tmp_path / f"samples_epoch_{epoch:03d}.png")
    captions, real_text = [], ImageDraw.ImageDraw.text
    monkeypatch.setattr(
        ImageDraw.ImageDraw,
        "text",
        lambda self, xy, text, *args, **kwargs: (
            captions.append(text) or real_text(self, xy, text, *args, **kwargs)
        ),
    )
    analysis.save_progress_gif(tmp_path)
    assert captions == [f"epoch {epoch}" for epoch in sorted(EPOCH_COLOURS)]
    with Image.open(tmp_path / "training_progress.gif") as gif:
        shown = [frame.convert("RGB").getpixel((10, 10)) for frame in ImageSequence.Iterator(gif)]
    expected = [EPOCH_COLOURS[epoch] for epoch in sorted(EPOCH_COLOURS)]
    assert len(shown) == len(expected)
    for colour, wanted in zip(shown, expected):
        assert max(abs(a - b) for a, b in zip(colour, wanted)) <= 8, (shown, expected)
    assert shown[-1] == pytest.approx(EPOCH_COLOURS[1200], abs=8), "the last frame: epoch 1200"


# ---------------------------------------------------------------- latent figures of a class


class ClassColourDraw:
    """draw(z, labels): one colour per class, shaded by z along the image (labels None: a grey,
    as an unconditional generator has no class). Records every call, so a test sees which z's
    were drawn in which class."""

    def __init__(self, num_classes=5, size=16, channels=3):
        hues = torch.linspace(0, 1, num_classes + 1)[:num_classes]
        self.colours = torch.stack([torch.cos(2 * torch.pi * (hues - k / 3)) for k in range(3)], 1)
        self.colours = 0.8 * self.colours[:, :channels]
        self.size, self.channels, self.calls = size, channels, []

    def __call__(self, z, labels):
        self.calls.append((z.clone(), None if labels is None else labels.clone()))
        ramp = torch.linspace(-1, 1, self.size)
        shading = 0.15 * torch.tanh(z[:, :2] @ torch.tensor([1.0, -0.5]))[:, None] * ramp
        colour = torch.zeros(len(z), self.channels) if labels is None else self.colours[labels]
        image = colour[:, :, None, None] + shading[:, None, None, :]
        return image.expand(-1, -1, self.size, -1).clamp(-1, 1)


NAMES = ["001", "017", "045", "077", "102"]


def latent_config(**fields):
    settings = dict(img_size=16, z_dim=8, latent_pool=40, seed=42)
    return types.SimpleNamespace(**{**settings, **fields})


def read_pairs(out_dir):
    with open(out_dir / "latent_pairs.csv") as file:
        return list(csv.DictReader(file))


def test_a_conditional_pool_is_drawn_over_the_classes_and_names_them(tmp_path):
    draw, config = ClassColourDraw(), latent_config()
    analysis.latent_space_analysis(draw, config, tmp_path, "test", class_names=NAMES)
    for name in ("latent_space_analysis.png", "interpolation.png", "latent_l2_norms.txt"):
        assert (tmp_path / name).stat().st_size > 0
    pool_z, pool_labels = draw.calls[0]
    random = torch.Generator().manual_seed(config.seed + 1)
    assert torch.equal(pool_z, torch.randn(config.latent_pool, config.z_dim, generator=random))
    assert len(set(pool_labels.tolist())) >= 4, "the pool spans the classes, not class 001 alone"

    rows = read_pairs(tmp_path)
    assert len(rows) == 12
    for row in rows:
        drawn_in = NAMES[pool_labels[int(row["z_index"])]]
        assert row["class"] == analysis.class_label(drawn_in)
    report = (tmp_path / "latent_l2_norms.txt").read_text()
    assert "drawn uniformly over the 5 classes" in report
    for a, b in zip(rows[0::2], rows[1::2]):
        (line,) = [line for line in report.split("\n") if f"z#{a['z_index']:<4s} z#" in line]
        assert line.endswith(f"{a['class']}, {b['class']}"), line

    # interpolation.png: each pair's slerp, the first half in a's class, the second in b's
    path_z, path_labels = draw.calls[-1]
    steps = analysis.INTERPOLATION_STEPS
    half = steps // 2
    assert path_labels.shape == (6 * steps,)
    switched = 0
    for n, (a, b) in enumerate(zip(rows[0::2], rows[1::2])):
        first, second = pool_labels[int(a["z_index"])], pool_labels[int(b["z_index"])]
        row = path_labels[steps * n : steps * (n + 1)].tolist()
        assert row == [first] * half + [second] * (steps - half), (row, first, second)
        assert torch.allclose(path_z[steps * n], pool_z[int(a["z_index"])], atol=1e-5)
        switched += int(first != second)
    assert switched >= 2, "the dissimilar pairs are of different classes here"


def test_an_unconditional_pool_draws_without_labels(tmp_path):
    draw, config = ClassColourDraw(), latent_config()
    analysis.latent_space_analysis(draw, config, tmp_path, "test")
    assert all(labels is None for _, labels in draw.calls)
    assert all(row["class"] == "" for row in read_pairs(tmp_path))
    assert "classes" not in (tmp_path / "latent_l2_norms.txt").read_text().split("\n")[0]


def test_the_interpolation_title_fits_in_its_figure(tmp_path):
    config = latent_config(img_size=64, z_dim=100, latent_pool=32)
    draw = ClassColourDraw(size=64)
    analysis.latent_space_analysis(draw, config, tmp_path, "test", class_names=NAMES)
    with Image.open(tmp_path / "interpolation.png") as figure:
        dark = np.asarray(figure.convert("L")) < 128
    # the grid starts at its top border: a dark line across the right half of the figure
    grid_top = np.flatnonzero(dark[:, dark.shape[1] // 2 :].mean(1) > 0.9)[0]
    title = dark[:grid_top]
    assert title.any(), "a title above the grid"
    assert not title[:, :4].any() and not title[:, -4:].any(), "no letter cut at either edge"


def test_traversal_of_a_conditional_generator_gives_each_z_one_seeded_class(tmp_path):
    draw, config = ClassColourDraw(), latent_config()
    analysis.latent_traversal(draw, config, tmp_path, "test", class_names=NAMES, count=2)
    assert (tmp_path / "latent_traversal.png").stat().st_size > 0
    random = torch.Generator().manual_seed(config.seed + 4)
    torch.randn(2, config.z_dim, generator=random)  # the z's come first, then their classes
    classes = torch.randint(len(NAMES), (2,), generator=random)
    rows_labels = draw.calls[-2][1]
    per_z = analysis.TRAVERSAL_DIMS * analysis.TRAVERSAL_STEPS
    assert rows_labels.tolist() == classes.repeat_interleave(per_z).tolist()
    plane_labels = draw.calls[-1][1]
    assert plane_labels.tolist() == [classes[0].item()] * analysis.TRAVERSAL_STEPS**2
    # the finite differences compare images of one class, so the class's colour cancels
    for _, labels in draw.calls[:-2]:
        assert len(set(labels.tolist())) == 1


def test_traversal_of_an_unconditional_generator_draws_without_labels(tmp_path):
    draw = ClassColourDraw()
    analysis.latent_traversal(draw, latent_config(), tmp_path, "test", count=1)
    assert all(labels is None for _, labels in draw.calls)
    assert (tmp_path / "latent_traversal.png").stat().st_size > 0


# ---------------------------------------------------------------- --invert's search


class LinearGenerator(torch.nn.Module):
    """draw(z, labels) = a linear map of z plus a colour per class, with weights that ask for
    gradients as a generator's do: every image it can draw is known."""

    def __init__(self, z_dim=6, size=8):
        super().__init__()
        random = torch.Generator().manual_seed(0)
        self.weights = torch.nn.Parameter(torch.randn(3 * size * size, z_dim, generator=random))
        self.colours = torch.tensor([[0.8, -0.8, -0.8], [-0.8, 0.8, -0.8], [-0.8, -0.8, 0.8]])
        self.size = size

    def forward(self, z, labels):
        images = (0.1 * z @ self.weights.T).view(-1, 3, self.size, self.size)
        return images + self.colours[labels][:, :, None, None]


def test_the_search_keeps_z_where_the_prior_puts_it():
    z_dim, draw = 6, LinearGenerator()
    # photos best matched by z's three times as long as N(0, I) makes them
    random = torch.Generator().manual_seed(1)
    far = 3 * analysis.onto_sphere(torch.randn(2, z_dim, generator=random))
    photos = draw(far, torch.tensor([1, 2])).detach()
    candidates = torch.tensor([[1], [2]])
    inversion = analysis.invert(draw, photos, candidates, z_dim=z_dim, seed=0)
    radius = inversion.z.norm(dim=1)
    assert torch.allclose(radius, torch.full((2,), z_dim**0.5), rtol=1e-5), radius
    assert torch.allclose(inversion.z_norm, torch.ones(2), rtol=1e-5)
    assert inversion.classes.tolist() == [1, 2]
    # on the sphere, at least as close as the photo's own z scaled back onto it
    with torch.no_grad():
        scaled_back = draw(analysis.onto_sphere(far), inversion.classes)
    closest = analysis.image_distance(inversion.images, photos)
    assert (closest <= analysis.image_distance(scaled_back, photos)).all()
    start = analysis.invert(draw, photos, candidates, z_dim=z_dim, seed=0, steps=0)
    assert torch.allclose(start.z.norm(dim=1), radius, rtol=1e-5), "the starts are on it too"
    assert draw.weights.grad is None, "only z's gradient: the generator's weights have none"
