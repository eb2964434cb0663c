"""--invert: a photo's place in z. The search finds an image the generator can draw, picks the class
whose images come closest, and the command writes the photo beside it (and the way between two)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import analysis
import gan_complete
from conftest import tiny_args


class LinearDraw:
    """draw(z, labels) = a fixed linear map of z plus a colour per class: every image it can draw
    is known, and so is the class of a photo made by it."""

    def __init__(self, z_dim=6, size=8, classes=3):
        random = torch.Generator().manual_seed(0)
        self.weights = torch.randn(3 * size * size, z_dim, generator=random) * 0.1
        self.colours = torch.tensor([[0.8, -0.8, -0.8], [-0.8, 0.8, -0.8], [-0.8, -0.8, 0.8]])
        self.colours = self.colours[:classes]
        self.size = size

    def __call__(self, z, labels):
        images = (z @ self.weights.T).view(-1, 3, self.size, self.size)
        return images + self.colours[labels][:, :, None, None]


def test_the_search_finds_an_image_the_generator_draws_and_its_class():
    # photos the generator draws from z's where N(0, I) puts them: on the sphere |z| = sqrt(6)
    z_true = analysis.onto_sphere(torch.randn(2, 6, generator=torch.Generator().manual_seed(1)))
    draw = LinearDraw()
    photos = draw(z_true, torch.tensor([2, 0]))
    candidates = analysis.closest_classes(draw, photos, num_classes=3, z_dim=6, seed=0, count=2)
    assert candidates[:, 0].tolist() == [2, 0], "the class whose colour the photo has comes first"
    found = analysis.invert(draw, photos, candidates, z_dim=6, seed=0)
    assert found.classes.tolist() == [2, 0]
    assert found.rms.max() < 3, "within 3 of 255 levels: the photo is in the generator's range"
    start = analysis.invert(draw, photos, candidates, z_dim=6, seed=0, steps=0)
    assert (start.rms > 5 * found.rms).all(), "the search moved z, not the luck of a start"
    assert torch.allclose(found.images, draw(found.z, found.classes), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cache_dir):
    out_dir = tmp_path_factory.mktemp("run")
    assert gan_complete.main(tiny_args(cache_dir, out_dir, "--conditional")) == 0
    return out_dir


def photo(path, seed):
    """A 48 px photo with a margin of white, as a camera would not take it but a scan might."""
    random = np.random.default_rng(seed)
    pixels = np.full((56, 48, 3), 255, dtype=np.uint8)
    pixels[4:52] = random.integers(0, 200, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_invert_writes_each_photo_beside_its_image_and_the_way_between_two(tiny_run, capsys):
    photos = [photo(tiny_run / "a.png", 0), photo(tiny_run / "b.png", 1)]
    weights = tiny_run / "generator.pkl"
    args = ["--sample", str(weights), "--invert", *map(str, photos), "--classes", "2"]
    assert gan_complete.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("found in z as ") == 2
    samples = tiny_run / "samples"
    with Image.open(samples / "inversion.png") as figure:
        assert figure.height >= 2 * (32 + 2), "two rows of a photo and its image"
    assert (samples / "inversion_interpolation.png").stat().st_size > 0
    assert not list(samples.glob("sample_*.png")), "--invert writes the inversion, not samples"
    classes = json.loads((tiny_run / "config.json").read_text())["data"]["class_names"]
    assert out.count(f"as {classes[2]} at an RMS error") == 2, "--classes 2: the third class"


def test_invert_keeps_earlier_samples_and_leaves_no_stale_path(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    sample = lambda *args: gan_complete.main(
        ["--sample", str(tiny_run / "generator.pkl"), "--out-dir", str(out), *args]
    )
    assert sample("--num-samples", "4") == 0
    photos = [str(photo(tmp_path / "a.png", 0)), str(photo(tmp_path / "b.png", 1))]
    assert sample("--invert", *photos) == 0
    assert (out / "inversion_interpolation.png").exists()
    assert sample("--invert", photos[0]) == 0
    assert (out / "inversion.png").exists() and not (out / "inversion_interpolation.png").exists()
    assert len(list(out.glob("sample_*.png"))) == 4, "the samples of the earlier --sample stay"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--invert", "a.png"], "pass --sample WEIGHTS too"),
        (["--invert", "missing.png"], "cannot read missing.png as an image"),
        (["--invert", "notes.txt"], "cannot read notes.txt as an image"),
        (["--invert", "tiny.png"], "too small"),
    ],
    ids=["no --sample", "no file", "not an image", "too small"],
)
def test_a_bad_photo_stops_with_one_line(tiny_run, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tiny_run)
    (tiny_run / "notes.txt").write_text("not a photo")
    Image.new("RGB", (8, 8), "red").save(tiny_run / "tiny.png")
    sample = [] if words.startswith("pass") else ["--sample", "generator.pkl"]
    assert gan_complete.main([*sample, *args]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1, err


def test_a_photo_too_large_to_decode_safely_stops_with_one_line(tiny_run, monkeypatch, capsys):
    # PIL refuses a decompression bomb (a 14000 x 13000 PNG in the wild; here a limit lowered to
    # a quarter of this photo's pixels) with its own error, not an OSError
    photo(tiny_run / "large.png", seed=3)
    with Image.open(tiny_run / "large.png") as image:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", image.width * image.height // 4)
    monkeypatch.chdir(tiny_run)
    assert gan_complete.main(["--sample", "generator.pkl", "--invert", "large.png"]) == 2
    err = capsys.readouterr().err
    assert "cannot read large.png as an image" in err and "decompression bomb" in err.lower()
    assert err.count("\n") == 1, err
