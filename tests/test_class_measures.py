"""compare.py's class measures of conditional runs: the grey classifier tells classes by shape
where colour cannot help, brightness alone tells classes by brightness and not by shape, and the
per-class figures catch a wrong class, and one image per class.

The classes here differ by the shape of a central figure (disc, square, ring, cross) drawn in a
random colour per image, so that only shape tells them apart.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compare  # noqa: E402
from test_compare import CLASSES, StandInGenerator, flower_like, quick_classifiers  # noqa: E402


def shaped_like(n, size=32, seed=0):
    """(uint8 [n, 3, size, size], labels [n]): flower_like images with a central figure whose
    shape is the class and whose colour is random; image i is of class i % 4."""
    random = torch.Generator().manual_seed(seed + 100)
    coords = (torch.arange(size) + 0.5) / size - 0.5
    y, x = coords[:, None], coords[None, :]
    radius = (x**2 + y**2).sqrt()
    bar = (x.abs() < 0.09) & (y.abs() < 0.38)
    shapes = torch.stack(
        [
            radius < 0.3,  # disc
            (x.abs() < 0.26) & (y.abs() < 0.26),  # square
            (radius < 0.38) & (radius > 0.24),  # ring
            bar | bar.T,  # cross
        ]
    ).float()
    labels = torch.arange(n) % len(CLASSES)
    inside = shapes[labels][:, None]
    colours = torch.rand(n, 3, 1, 1, generator=random)
    images = flower_like(n, size, seed).float() / 255 * (1 - inside) + colours * inside
    return (images * 255).round().to(torch.uint8), labels


@pytest.fixture(scope="module")
def classes(tmp_path_factory):
    """A ClassMeasure of a cache of shape classes (its two classifiers trained once)."""
    images, labels = shaped_like(400, seed=6)
    cache = compare.Cache(tmp_path_factory.mktemp("cache"), images, labels, CLASSES, copies=1)
    with quick_classifiers(steps=150):  # shapes take longer to learn than colours
        structure = compare.StructureMeasure(cache, num_images=64, seed=0)
        return compare.ClassMeasure(cache, structure, num_images=64, seed=0)


BANK = shaped_like(64, seed=5)[0].float() / 127.5 - 1  # what the stand-ins draw


def test_the_grey_classifier_is_kept_beside_the_colour_one_and_tells_shapes(classes):
    assert classes.grey.grey and classes.grey.network[0][0].in_channels == 1
    assert classes.grey.path.name == "classifier_grey.pt" and classes.grey.path.is_file()
    assert classes.grey.info["top1"] > 0.8, "shape alone tells these classes"
    # colour cannot move it: the same images with their colour channels swapped
    images, labels = shaped_like(64, seed=7)
    logits = [classes.grey(view)[1] for view in (images, images[:, [2, 0, 1]])]
    assert (logits[0].argmax(1) == logits[1].argmax(1)).float().mean() > 0.9


def test_the_real_halves_are_the_floor_the_right_classes_score_near_it(classes):
    assert classes.floor["within_diversity"] == pytest.approx(1, abs=0.2)
    right = classes(StandInGenerator(kind=b"conditional", bank=BANK), z_dim=8)
    assert right["top1"] > 0.8 and right["grey_top1"] > 0.8
    assert right["within_diversity"] == pytest.approx(1, abs=0.3)
    assert len(right["confused"]) < 10


def test_a_wrong_class_is_seen_as_the_one_drawn_and_named_among_the_confused(classes):
    right = classes(StandInGenerator(kind=b"conditional", bank=BANK), z_dim=8)
    wrong = classes(StandInGenerator(kind=b"mislabelled", bank=BANK), z_dim=8)
    assert wrong["top1"] < 0.2 and wrong["grey_top1"] < 0.2
    assert wrong["class_kid"] > right["class_kid"]
    assert ("a", "b", 16, 16) in wrong["confused"], "class a asked for, class b drawn: all 16"


def test_one_image_per_class_is_caught_by_the_within_class_diversity(classes):
    one = classes(StandInGenerator(kind=b"one per class", bank=BANK), z_dim=8)
    right = classes(StandInGenerator(kind=b"conditional", bank=BANK), z_dim=8)
    assert one["top1"] > 0.8, "each image is of its class: the class match alone misses it"
    assert one["within_diversity"] < 0.05 < 0.7 < right["within_diversity"]
    assert one["class_kid"] > right["class_kid"]


def bright_like(n, size=32, seed=0):
    """(uint8 [n, 3, size, size], labels [n]): flower_like images with a central grey disc whose
    brightness is the class (no shape, no hue tells them apart); image i is of class i % 4."""
    coords = (torch.arange(size) + 0.5) / size - 0.5
    inside = ((coords[:, None] ** 2 + coords[None, :] ** 2).sqrt() < 0.35).float()
    labels = torch.arange(n) % len(CLASSES)
    grey = (0.1 + 0.25 * labels.float())[:, None, None, None]
    images = flower_like(n, size, seed).float() / 255 * (1 - inside) + grey * inside
    return (images * 255).round().to(torch.uint8), labels


def test_brightness_alone_tells_brightness_classes_and_not_shapes(tmp_path):
    """The baseline beside the colour-blind ceiling: how much brightness alone gives away."""
    bright = compare.Cache(tmp_path, *bright_like(400, seed=6), CLASSES, copies=1)
    shaped = compare.Cache(tmp_path, *shaped_like(400, seed=6), CLASSES, copies=1)
    assert compare.brightness_accuracy(bright, size=32) > 0.9
    assert compare.brightness_accuracy(shaped, size=32) < 0.4, "chance is 25%"


def test_the_class_measure_shows_brightness_alone_beside_the_grey_ceiling(classes):
    assert 0 < classes.brightness < 0.4
