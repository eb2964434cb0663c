"""compare.py's cache classifier: split by source image, trained once per cache and kept beside it,
retrained (not a traceback) when its file is damaged or made for other images, any channel count."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compare  # noqa: E402

# noqa: E402, F401  (the fixture applies here too)
from test_compare import CLASSES, classed_like, quick_classifier


def make_cache(folder, images=None, labels=None, copies=1):
    if images is None:
        images, labels = classed_like(120, seed=3)
    folder.mkdir(exist_ok=True)
    return compare.Cache(folder, images, labels, CLASSES, copies)


def test_the_split_keeps_every_copy_of_a_source_image_on_one_side(tmp_path):
    # read as 30 source images, each followed by 2 rotated copies
    images, labels = classed_like(90, seed=3)
    trained, held_out, half_a, half_b = compare.held_out_split(
        make_cache(tmp_path, images, labels, copies=3)
    )
    source = {
        name: set((indices // 3).tolist())
        for name, indices in {
            "trained": trained,
            "held_out": held_out,
            "a": half_a,
            "b": half_b,
        }.items()
    }
    assert not source["trained"] & source["held_out"], (
        "a copy of a training image among the held-out ones"
    )
    assert len(trained) + len(held_out) == 90 and len(held_out) == 3 * round(compare.HELD_OUT * 30)
    assert source["a"] | source["b"] == source["held_out"] and not source["a"] & source["b"]
    assert len(half_a) == len(source["a"]), "one copy per source image in each half"


def test_the_classifier_is_trained_once_kept_beside_the_cache_and_reused(
    tmp_path, monkeypatch, capsys
):
    cache = make_cache(tmp_path / "cache")
    first = compare.StructureMeasure(cache, num_images=32, seed=0)
    assert "training the cache's classifier (none kept in" in capsys.readouterr().err
    saved = torch.load(tmp_path / "cache" / compare.CLASSIFIER_FILES[False], weights_only=True)
    assert (
        saved["num_classes"] == 4
        and saved["channels"] == 3
        and saved["top1"] == first.classifier.info["top1"]
    )
    assert saved["train_seconds"] > 0

    monkeypatch.setattr(
        compare, "train_classifier", lambda *args: pytest.fail("retrained a kept classifier")
    )
    again = compare.StructureMeasure(cache, num_images=32, seed=0)
    assert again.classifier.info == first.classifier.info and again.floor == first.floor
    assert capsys.readouterr().err == ""


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch.load on the garbage file
@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda path: path.write_bytes(path.read_bytes()[:1000]), "is unreadable"),  # truncated
        (lambda path: path.write_bytes(b"\x80\x04 not a checkpoint"), "is unreadable"),
        (lambda path: path.write_bytes(b""), "is unreadable"),
        (
            lambda path: torch.save({"fingerprint": "another cache"}, path),
            "was made for other images",
        ),
        (lambda path: torch.save([1, 2, 3], path), "was made for other images"),
    ],
    ids=["truncated", "not a checkpoint", "empty", "stale", "not a dict"],
)
def test_a_damaged_or_stale_classifier_file_is_retrained(tmp_path, capsys, damage, reason):
    cache = make_cache(tmp_path / "cache")
    first = compare.StructureMeasure(cache, num_images=32, seed=0)
    damage(tmp_path / "cache" / compare.CLASSIFIER_FILES[False])
    capsys.readouterr()
    again = compare.StructureMeasure(cache, num_images=32, seed=0)
    assert reason in capsys.readouterr().err
    assert again.floor["fd"] == pytest.approx(first.floor["fd"]), (
        "the same seed trains the same network"
    )
    torch.load(
        tmp_path / "cache" / compare.CLASSIFIER_FILES[False], weights_only=True
    )  # whole again


def test_a_classifier_for_other_images_is_not_used(tmp_path, capsys):
    images, labels = classed_like(120, seed=3)
    compare.StructureMeasure(make_cache(tmp_path / "cache", images, labels), num_images=32, seed=0)
    capsys.readouterr()
    compare.StructureMeasure(
        make_cache(tmp_path / "cache", images.flip(-1), labels), num_images=32, seed=0
    )
    assert "was made for other images" in capsys.readouterr().err


def test_one_channel_images_get_a_one_channel_classifier(tmp_path):
    images, labels = classed_like(120, seed=3)
    # the classes differ in brightness too
    grey = images.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
    structure = compare.StructureMeasure(
        make_cache(tmp_path / "cache", grey, labels), num_images=32, seed=0
    )
    assert structure.classifier.network[0][0].in_channels == 1
    new = classed_like(32, seed=4)[0].float().mean(dim=1, keepdim=True).round().to(torch.uint8)
    assert 0 < structure(new)["fd"] < structure(new[:1].expand(32, -1, -1, -1))["fd"]
