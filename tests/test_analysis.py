"""analysis.py with stand-in generators whose every image is known: the training GIF in epoch
order, and --invert's search kept where N(0, I) puts z."""

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
        lambda self, xy, text, *args, **kwargs: captions.append(text)
        or real_text(self, xy, text, *args, **kwargs),
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
