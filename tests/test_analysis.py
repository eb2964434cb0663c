"""analysis.py's figures: the training GIF in epoch order."""

import pytest
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
