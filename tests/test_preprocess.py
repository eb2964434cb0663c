"""Tests for preprocess.py, the shared data stage: CPU only, no network, tiny data in tmp_path."""

import json
import os
import pickle
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image, ImageDraw, JpegImagePlugin
from scipy import ndimage

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the scripts live at the repository root, not in a package

import preprocess  # noqa: E402

# one solid colour per class
COLOURS = {"1": (220, 40, 40), "2": (40, 170, 60), "10": (50, 60, 210)}
SMALL = dict(size=16, workers=1, progress=False)  # fast settings for tests that only check labels


def solid(path, colour, size=(120, 96), format=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=format, quality=95)


def make_coursework(root, per_class=2):
    """jpg/ + category_to_images.json with solid-colour JPEGs, so the colour tells the class."""
    mapping, number = {}, 1
    for category, colour in COLOURS.items():
        mapping[category] = []
        for _ in range(per_class):
            name = f"image_{number:05d}.jpg"
            solid(root / "jpg" / name, colour)
            mapping[category].append(name)
            number += 1
    (root / "category_to_images.json").write_text(json.dumps(mapping))
    return mapping


def make_official(root, labels):
    for i, label in enumerate(labels, 1):
        solid(root / "jpg" / f"image_{i:05d}.jpg", COLOURS[str(label)])
    scipy.io.savemat(root / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})


def tree_bytes(root):
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


def assert_colours_match_labels(images, labels, classes):
    """Every cached image has its class's colour (within JPEG error): labels go with the right
    pixels."""
    means = images.float().mean(dim=(2, 3))
    for mean, label in zip(means, labels):
        expected = torch.tensor(COLOURS[classes[label].lstrip("0")], dtype=torch.float32)
        assert (mean - expected).abs().max() < 6


# ---------------------------------------------------------------- layouts and labels


def test_coursework_layout_labels_follow_the_json(tmp_path):
    make_coursework(tmp_path / "data")
    images, labels, cache_path = preprocess.prepare_data(
        tmp_path / "data", cache_dir=tmp_path / "cache", **SMALL
    )
    _, _, classes = preprocess.load_cache(cache_path)
    # zero-padded so alphabetical (ImageFolder) order equals numeric order: 1 < 2 < 10
    assert classes == ["001", "002", "010"]
    assert cache_path.name.startswith("coursework-")
    assert (
        images.shape == (6 * 3, 3, 16, 16)
        and images.dtype == torch.uint8
        and images.is_contiguous()
    )
    assert labels.dtype == torch.int64 and labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert_colours_match_labels(images, labels, classes)
    assert (cache_path / "010" / "image_00005.png").is_file()
    assert (cache_path / "010" / "image_00005_r2.png").is_file()


def test_the_images_folder_itself_is_named_and_nothing_is_downloaded(tmp_path, monkeypatch):
    make_coursework(tmp_path / "data")
    monkeypatch.setattr(preprocess, "download_flowers102", lambda folder: pytest.fail("downloaded"))
    with pytest.raises(preprocess.PreprocessError) as error:
        preprocess.prepare_data(tmp_path / "data" / "jpg", cache_dir=tmp_path / "cache", **SMALL)
    assert str(error.value) == (
        f"--data-dir {tmp_path / 'data' / 'jpg'} is inside the data set, not the data set: "
        f"did you mean --data-dir {tmp_path / 'data'}?"
    )


def test_official_imagelabels_mat(tmp_path):
    make_official(tmp_path, [2, 1, 10, 2])  # 1-based labels; label i belongs to image_{i:05d}.jpg
    cache_path = preprocess.build_cache(
        tmp_path, source="auto", cache_dir=tmp_path / "cache", rotations=0, **SMALL
    )
    images, labels, classes = preprocess.load_cache(cache_path)
    assert cache_path.name.startswith("official-")
    assert classes == ["001", "002", "010"]
    assert sorted(p.name for p in (cache_path / "002").iterdir()) == [
        "image_00001.png",
        "image_00004.png",
    ]
    assert labels.tolist() == [0, 1, 1, 2]
    assert_colours_match_labels(images, labels, classes)


def test_torchvision_flowers102_folder_is_found(tmp_path):
    make_official(tmp_path / "flowers-102", [1, 10, 10])
    cache_path = preprocess.build_cache(
        tmp_path, cache_dir=tmp_path / "cache", rotations=0, **SMALL
    )
    images, labels, classes = preprocess.load_cache(cache_path)
    assert cache_path.name.startswith("torchvision-")
    assert classes == ["001", "010"] and labels.tolist() == [0, 1, 1]
    assert_colours_match_labels(images, labels, classes)


def test_folder_source_with_class_subfolders_reads_back_with_imagefolder(tmp_path):
    import torchvision

    solid(tmp_path / "photos" / "roses" / "a.jpg", COLOURS["1"])
    solid(tmp_path / "photos" / "roses" / "b.png", COLOURS["1"])
    solid(tmp_path / "photos" / "tulips" / "nested" / "c.jpg", COLOURS["2"])
    (tmp_path / "photos" / "notes.txt").write_text("not an image, ignored")
    cache_path = preprocess.build_cache(
        tmp_path / "photos", source="folder", cache_dir=tmp_path / "cache", rotations=1, **SMALL
    )
    images, labels, classes = preprocess.load_cache(cache_path)
    assert classes == ["roses", "tulips"]
    assert labels.tolist() == [0, 0, 0, 0, 1, 1]
    assert (cache_path / "tulips" / "nested__c_r1.png").is_file()
    dataset = torchvision.datasets.ImageFolder(cache_path)
    assert dataset.classes == classes and sorted(dataset.targets) == labels.tolist()


def test_flat_folder_is_one_class(tmp_path):
    for name in ("x.jpg", "y.jpg", "z.png"):
        solid(tmp_path / "selfies" / name, (90, 90, 90))
    images, labels, cache_path = preprocess.prepare_data(
        tmp_path / "selfies", source="folder", cache_dir=tmp_path / "cache", rotations=0, **SMALL
    )
    assert preprocess.load_cache(cache_path)[2] == ["selfies"]
    assert labels.tolist() == [0, 0, 0]


def test_folder_source_does_not_read_its_own_cache(tmp_path):
    solid(tmp_path / "a.jpg", (90, 90, 90))
    preprocess.build_cache(
        tmp_path, source="folder", cache_dir=tmp_path / "cache", rotations=0, **SMALL
    )
    # a second setting writes into the same folder tree; the first cache's PNGs must not become
    # inputs
    cache_path = preprocess.build_cache(
        tmp_path, source="folder", cache_dir=tmp_path / "cache", rotations=1, **SMALL
    )
    assert preprocess.load_cache(cache_path)[0].shape[0] == 2


# ---------------------------------------------------------------- torchvision's small data sets

# MNIST's two splits, as its file names call them
DIGIT_LABELS = {"train": [3, 1, 3, 0], "t10k": [1, 9]}


@pytest.fixture
def no_download(monkeypatch):
    import torchvision.datasets.cifar
    import torchvision.datasets.mnist

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("tests never download")

    for module in (torchvision.datasets.mnist, torchvision.datasets.cifar):
        monkeypatch.setattr(module, "download_and_extract_archive", refuse)


def write_idx(path, array):
    """An idx file as MNIST's unpack to: 0, 0, type 8 (uint8), number of dimensions, big-endian
    sizes, bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_digits(root, folder):
    """torchvision's MNIST / FashionMNIST layout. Image k: black, with a centred 8x8 square of grey
    20 + 30k."""
    values = {}
    for split, labels in DIGIT_LABELS.items():
        images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
        for k in range(len(labels)):
            key = f"{'test' if split == 't10k' else split}_{k:05d}"  # the cache's file stem
            values[key] = images[k, 10:18, 10:18] = 20 + 30 * len(values)
        write_idx(root / folder / "raw" / f"{split}-images-idx3-ubyte", images)
        write_idx(root / folder / "raw" / f"{split}-labels-idx1-ubyte", np.array(labels))
    return values


def test_mnist_is_grayscale_not_trimmed_nor_rotated_and_keeps_its_labels(
    tmp_path, capsys, no_download
):
    values = make_digits(tmp_path, "MNIST")
    images, labels, cache_path = preprocess.prepare_data(
        tmp_path,
        source="mnist",
        cache_dir=tmp_path / "cache",
        size=32,
        rotations=2,
        workers=1,
        progress=False,
    )
    assert "no white-margin trimming and no rotated copies" in capsys.readouterr().out
    # 28 px upscaled, never skipped
    assert images.shape == (6, 1, 32, 32) and images.dtype == torch.uint8
    _, _, classes = preprocess.load_cache(cache_path)
    # torchvision's names, as folder names
    assert classes == ["0_zero", "1_one", "3_three", "9_nine"]
    assert [classes[label] for label in labels] == [
        "0_zero",
        "1_one",
        "1_one",
        "3_three",
        "3_three",
        "9_nine",
    ]
    manifest = json.loads((cache_path / "manifest.json").read_text())
    assert (
        manifest["channels"] == 1
        and manifest["params"]["rotations"] == 0
        and "_r0_" in cache_path.name
    )
    assert (
        "no rotated copies" in manifest["skipped_steps"]
        and "--rotations 2" in manifest["skipped_steps"]
    )
    assert manifest["skipped"] == []
    # each image is the whole 28 px field resized (not cropped or padded): its square is still
    # centred
    packed_keys = [
        "train_00003",
        "test_00000",
        "train_00001",
        "train_00000",
        "train_00002",
        "test_00001",
    ]
    assert images[:, 0, 16, 16].tolist() == [values[key] for key in packed_keys]
    assert images[:, 0, :4, :4].max() == 0
    with Image.open(cache_path / "3_three" / "train_00002.png") as png:
        assert png.mode == "L" and png.size == (32, 32)


def test_fashion_mnist_class_folders_read_back_with_imagefolder(tmp_path, no_download):
    import torchvision

    make_digits(tmp_path, "FashionMNIST")
    cache_path = preprocess.build_cache(
        tmp_path,
        source="fashion-mnist",
        cache_dir=tmp_path / "cache",
        size=16,
        workers=1,
        progress=False,
    )
    images, labels, classes = preprocess.load_cache(cache_path)
    # index-prefixed: "T-shirt/top" ... "Ankle boot" alphabetically would not be the label order
    assert classes == ["0_T_shirt_top", "1_Trouser", "3_Dress", "9_Ankle_boot"]
    dataset = torchvision.datasets.ImageFolder(cache_path)
    assert dataset.classes == classes and sorted(dataset.targets) == labels.tolist()


def test_cifar10_batches_are_read_in_colour(tmp_path, monkeypatch, no_download):
    import torchvision.datasets

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    colour = {label: (25 * label, 250 - 25 * label, 90) for label in range(10)}
    # one image a batch, rows of 1,024 R then G then B values
    for label, name in enumerate(batches):
        planes = np.repeat(np.array(colour[label], dtype=np.uint8), 32 * 32)
        (folder / name).write_bytes(pickle.dumps({"data": planes[None], "labels": [label]}))
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    # torchvision checks the real files' MD5 sums; ours are tiny stand-ins
    cifar = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cifar, "train_list", [[name, None] for name in batches[:5]])
    monkeypatch.setattr(cifar, "test_list", [[batches[5], None]])
    monkeypatch.setattr(cifar, "meta", {**cifar.meta, "md5": None})

    images, labels, cache_path = preprocess.prepare_data(
        tmp_path, source="cifar10", cache_dir=tmp_path / "cache", size=32, workers=1, progress=False
    )
    assert preprocess.load_cache(cache_path)[2] == names[:6] and labels.tolist() == list(range(6))
    assert images.shape == (6, 3, 32, 32)
    assert images.float().mean(dim=(2, 3)).tolist() == [list(colour[label]) for label in range(6)]


def test_missing_digits_that_cannot_download_are_one_clear_line_and_no_litter(
    tmp_path, no_download
):
    with pytest.raises(preprocess.PreprocessError) as error:
        preprocess.build_cache(tmp_path, source="mnist", cache_dir=tmp_path / "cache", **SMALL)
    message = str(error.value)
    assert (
        "\n" not in message
        and str(tmp_path / "MNIST" / "raw") in message
        and "tests never download" in message
    )
    assert not (tmp_path / "MNIST").exists()


# ---------------------------------------------------------------- bad input


def test_bad_files_are_skipped_and_reported_and_the_run_goes_on(tmp_path):
    mapping = make_coursework(tmp_path, per_class=1)
    jpg = tmp_path / "jpg"
    (jpg / "image_00010.jpg").write_bytes(b"")
    whole = (jpg / "image_00001.jpg").read_bytes()
    (jpg / "image_00011.jpg").write_bytes(whole[: len(whole) // 2])
    (jpg / "image_00012.jpg").write_text("this is a text file, not a JPEG")
    solid(jpg / "image_00014.jpg", (200, 100, 0), size=(20, 30))
    mapping["1"] += [
        "image_00010.jpg",
        "image_00011.jpg",
        "image_00012.jpg",
        "image_00013.jpg",
        "image_00014.jpg",
    ]
    (tmp_path / "category_to_images.json").write_text(json.dumps(mapping))

    cache_path = preprocess.build_cache(
        tmp_path, cache_dir=tmp_path / "cache", rotations=1, size=32, workers=1, progress=False
    )
    manifest = json.loads((cache_path / "manifest.json").read_text())
    reasons = {entry["file"]: entry["reason"] for entry in manifest["skipped"]}
    assert "empty" in reasons["jpg/image_00010.jpg"]
    assert "truncated" in reasons["jpg/image_00011.jpg"]
    assert "not an image" in reasons["jpg/image_00012.jpg"]
    assert "missing" in reasons["jpg/image_00013.jpg"]
    assert (
        "too small" in reasons["jpg/image_00014.jpg"] and "20x30" in reasons["jpg/image_00014.jpg"]
    )
    assert len(reasons) == 5
    assert manifest["num_source_images"] == 3 and manifest["num_images"] == 6
    assert preprocess.load_cache(cache_path)[0].shape[0] == 6


def test_nothing_usable_is_an_error_not_an_empty_cache(tmp_path):
    (tmp_path / "jpg").mkdir()
    (tmp_path / "jpg" / "image_00001.jpg").write_bytes(b"")
    (tmp_path / "category_to_images.json").write_text(
        json.dumps({"1": ["image_00001.jpg", "image_00002.jpg"]})
    )
    with pytest.raises(preprocess.PreprocessError, match="no usable images") as error:
        preprocess.build_cache(tmp_path, cache_dir=tmp_path / "cache", **SMALL)
    assert "\n" not in str(error.value)
    assert not list((tmp_path / "cache").rglob("images.npy"))


def test_forced_source_with_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(preprocess.PreprocessError, match="does not exist"):
        preprocess.build_cache(
            tmp_path / "nowhere", source="coursework", cache_dir=tmp_path / "cache", **SMALL
        )
    (tmp_path / "jpg").mkdir()
    with pytest.raises(preprocess.PreprocessError, match="category_to_images.json is missing"):
        preprocess.build_cache(tmp_path, source="coursework", cache_dir=tmp_path / "cache", **SMALL)


def test_failed_download_gives_one_line_that_names_the_layouts(tmp_path, monkeypatch):
    import torchvision.datasets

    def no_network(root, **kwargs):
        (Path(root) / "flowers-102").mkdir(exist_ok=True)  # as torchvision does before downloading
        raise OSError("<urlopen error [Errno -3] Temporary failure\nin name resolution>")

    monkeypatch.setattr(torchvision.datasets, "Flowers102", no_network)
    with pytest.raises(preprocess.PreprocessError) as error:
        preprocess.build_cache(tmp_path, cache_dir=tmp_path / "cache", **SMALL)
    message = str(error.value)
    assert "\n" not in message and str(tmp_path) in message
    for hint in (
        "category_to_images.json",
        "imagelabels.mat",
        "flowers-102/",
        "--source synthetic",
    ):
        assert hint in message
    assert not (tmp_path / "flowers-102").exists(), "no empty folder left in the user's data folder"


def test_bad_settings_are_clear_errors(tmp_path):
    for settings in (dict(size=48), dict(rotations=-1), dict(max_angle=60), dict(source="flickr")):
        with pytest.raises(preprocess.PreprocessError):
            preprocess.build_cache(tmp_path, cache_dir=tmp_path / "cache", **{**SMALL, **settings})


# ---------------------------------------------------------------- what each image looks like


def test_rotated_copies_hold_no_fill_from_the_rotation(tmp_path):
    # PNG, so no JPEG artefacts: any pixel off this colour can only be rotation fill
    colour = (200, 30, 60)
    solid(tmp_path / "photos" / "a.png", colour, size=(150, 110))
    # just big enough: smallest inscribed square
    solid(tmp_path / "photos" / "b.png", colour, size=(64, 64))
    cache_path = preprocess.build_cache(
        tmp_path / "photos",
        source="folder",
        cache_dir=tmp_path / "cache",
        size=32,
        rotations=6,
        max_angle=45,
        workers=1,
        progress=False,
    )
    images = preprocess.load_cache(cache_path)[0]
    assert images.shape[0] == 14
    difference = (images.int() - torch.tensor(colour).view(1, 3, 1, 1)).abs()
    assert difference.max() <= 1


def test_white_margins_are_trimmed(tmp_path):
    picture = Image.new("RGB", (150, 130), (255, 255, 255))
    # 100x70 photo on a white page
    ImageDraw.Draw(picture).rectangle((40, 20, 139, 89), fill=(30, 120, 40))
    (tmp_path / "scans").mkdir()
    picture.save(tmp_path / "scans" / "page.png")
    images = preprocess.prepare_data(
        tmp_path / "scans",
        source="folder",
        cache_dir=tmp_path / "cache",
        size=32,
        rotations=2,
        workers=1,
        progress=False,
    )[0]
    assert images.shape[0] == 3
    # no white left
    assert (images.int() - torch.tensor([30, 120, 40]).view(1, 3, 1, 1)).abs().max() <= 1


def test_any_image_mode_is_decoded_to_rgb(tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    Image.new("L", (100, 90), 128).save(folder / "gray.png")
    Image.new("RGB", (100, 90), (20, 20, 200)).quantize(8).save(folder / "palette.gif")
    Image.new("CMYK", (100, 90), (0, 200, 200, 0)).save(folder / "cmyk.jpg")
    # transparent border: becomes white, then trimmed
    rgba = Image.new("RGBA", (140, 120), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).rectangle((20, 20, 119, 99), fill=(200, 30, 60, 255))
    rgba.save(folder / "rgba.png")
    upright = Image.new("RGB", (120, 80), (255, 0, 0))
    ImageDraw.Draw(upright).rectangle((60, 0, 119, 79), fill=(0, 0, 255))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phones write it
    upright.save(folder / "phone.jpg", exif=exif, quality=95)

    shown = preprocess.load_rgb(folder / "phone.jpg")[0]
    assert (
        shown.size == (80, 120)
        and shown.getpixel((40, 10))[0] > 200
        and shown.getpixel((40, 110))[2] > 200
    )
    cache_path = preprocess.build_cache(
        folder,
        source="folder",
        cache_dir=tmp_path / "cache",
        size=32,
        rotations=0,
        workers=1,
        progress=False,
    )
    manifest = json.loads((cache_path / "manifest.json").read_text())
    assert manifest["skipped"] == [] and manifest["num_images"] == 5
    rgba_out = np.asarray(Image.open(cache_path / "modes" / "rgba.png"))
    assert rgba_out.shape == (32, 32, 3) and np.abs(rgba_out.astype(int) - (200, 30, 60)).max() <= 1


def grey_quadrants(levels, dtype):
    """A 64 px greyscale image of four flat quadrants, at the given levels (a 2x2 array)."""
    return np.kron(np.asarray(levels, dtype=np.float64), np.ones((32, 32))).astype(dtype)


def test_16_and_32_bit_greyscale_keep_their_grey_levels(tmp_path):
    """PIL's convert("RGB") clips every value above 255 to white: a 16-bit scan would be a blank
    page. Each file here has quadrants at 10%, 25%, 50% and 75% of its mode's full scale."""
    fractions = np.array([[0.1, 0.25], [0.5, 0.75]])
    folder = tmp_path / "scans"
    folder.mkdir()
    png_16_bit = grey_quadrants(fractions * 65535, np.uint16)
    Image.fromarray(png_16_bit).save(folder / "png_16_bit.png")  # read back as mode "I;16"
    big_endian = grey_quadrants(fractions * 65535, ">u2").tobytes()
    Image.frombytes("I;16B", (64, 64), big_endian).save(folder / "tiff_16_bit_big_endian.tif")
    Image.fromarray(grey_quadrants(fractions * 65535, np.int32)).save(folder / "tiff_int32.tif")
    Image.fromarray(grey_quadrants(fractions * 65535, np.float32)).save(folder / "tiff_float.tif")
    Image.fromarray(grey_quadrants(fractions, np.float32)).save(folder / "tiff_float_unit.tif")
    # 8-bit values in a 32-bit mode read as they always did (no cache of such a file changes)
    Image.fromarray(grey_quadrants(fractions * 255, np.int32)).save(folder / "tiff_int32_8bit.tif")
    modes = {}
    for path in sorted(folder.iterdir()):
        with Image.open(path) as image:
            modes[path.stem] = image.mode
    assert modes == {
        "png_16_bit": "I;16",
        "tiff_16_bit_big_endian": "I;16B",
        "tiff_int32": "I",
        "tiff_float": "F",
        "tiff_float_unit": "F",
        "tiff_int32_8bit": "I",
    }

    cache_path = preprocess.build_cache(
        folder,
        source="folder",
        cache_dir=tmp_path / "cache",
        size=32,
        rotations=0,
        workers=1,
        progress=False,
    )
    manifest = json.loads((cache_path / "manifest.json").read_text())
    assert manifest["skipped"] == [] and manifest["num_images"] == 6
    expected = np.round(fractions * 255)  # 65535 * 0.5 -> 127.5 -> 128
    for stem in modes:
        pixels = np.asarray(Image.open(cache_path / "scans" / f"{stem}.png")).astype(int)
        # the quadrants' centres, away from the resize's ringing at the edges between them
        centres = pixels[[8, 8, 24, 24], [8, 24, 8, 24]]
        assert (centres == centres[:, :1]).all(), f"{stem}: grey, R = G = B"
        assert np.abs(centres[:, 0] - expected.flatten()).max() <= 1, (stem, centres[:, 0])


# ---------------------------------------------------------------- full-size JPEGs: draft-mode
# decoding


def textured_page(path, content_side, page=(640, 600), block=32):
    """A full-size JPEG: random colour blocks with sharp edges, content_side px square, on a white
    page. 32 px blocks are 3.4 px at --size 64: edges the output can show, not detail it must alias.
    """
    rng = np.random.default_rng(0)
    pixels = np.full((page[1], page[0], 3), 255, dtype=np.uint8)
    blocks = rng.integers(
        0, 200, (content_side // block + 1, content_side // block + 1, 3), dtype=np.uint8
    )
    top, left = (page[1] - content_side) // 3, (page[0] - content_side) // 2
    content = blocks.repeat(block, axis=0).repeat(block, axis=1)[:content_side, :content_side]
    pixels[top : top + content_side, left : left + content_side] = content
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)


def laplacian_variance(image):
    return ndimage.laplace(np.asarray(image.convert("L"), dtype=np.float64)).var()


@pytest.fixture
def decodes(monkeypatch):
    """Whether each load_rgb call came back reduced (decoded at 1/2, 1/4 or 1/8 scale)."""
    reduced, real_load = [], preprocess.load_rgb

    def spy(*args, **kwargs):
        image, was_reduced = real_load(*args, **kwargs)
        reduced.append(was_reduced)
        return image, was_reduced

    monkeypatch.setattr(preprocess, "load_rgb", spy)
    return reduced


def test_draft_decoding_keeps_the_full_size_skip_decisions_and_sizes(
    tmp_path, monkeypatch, decodes
):
    # 60..63 px of content straddle --size 64 (JPEG ringing around it adds a pixel or two)
    for side in (60, 61, 62, 63, 150, 500):
        textured_page(tmp_path / "pages" / f"content_{side:03d}.jpg", side)
    faint = np.full((600, 640, 3), 255, dtype=np.uint8)
    faint[:, 300] = faint[200] = 225  # 1 px lines: too small at full size, blank at half size
    Image.fromarray(faint).save(tmp_path / "pages" / "faint_lines.jpg", quality=95)
    whole = (tmp_path / "pages" / "content_500.jpg").read_bytes()
    (tmp_path / "pages" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])

    def build(cache):
        path = preprocess.build_cache(
            tmp_path / "pages",
            source="folder",
            cache_dir=tmp_path / cache,
            size=64,
            rotations=1,
            workers=1,
            progress=False,
        )
        return json.loads((path / "manifest.json").read_text()), preprocess.load_cache(path)[0]

    manifest, images = build("draft")
    assert True in decodes, "draft mode never kicked in: the test would prove nothing"
    with monkeypatch.context() as full_size:
        full_size.setattr(JpegImagePlugin.JpegImageFile, "draft", lambda self, mode, size: None)
        reference, reference_images = build("full")
    reasons = {entry["file"]: entry["reason"] for entry in reference["skipped"]}
    too_small = [
        name
        for name, reason in reasons.items()
        if name.startswith("content") and "too small" in reason
    ]
    # the boundary is exercised: some of the 60..63 px pages are kept, some not
    assert 0 < len(too_small) < 4
    assert "1x1" in reasons["faint_lines.jpg"] and "truncated" in reasons["truncated.jpg"]
    # same files, same reasons, sizes in original pixels
    assert manifest["skipped"] == reference["skipped"]
    assert images.shape == reference_images.shape == (2 * (8 - len(reasons)), 3, 64, 64)


def test_rotated_copies_are_as_sharp_as_rotating_at_full_size(tmp_path, decodes):
    textured_page(tmp_path / "photos" / "sharp.jpg", 600, page=(600, 600))
    cache_path = preprocess.build_cache(
        tmp_path / "photos",
        source="folder",
        cache_dir=tmp_path / "cache",
        size=64,
        rotations=2,
        workers=1,
        progress=False,
    )
    assert decodes == [True]  # decoded at half size, never at full size
    # the old pipeline: decode, rotate and crop at full size, then one LANCZOS reduction
    full_size = preprocess.load_rgb(tmp_path / "photos" / "sharp.jpg")[0]
    square = preprocess.centre_square(preprocess.trim_white_margins(full_size))
    angles = preprocess.rotation_angles(0, "sharp.jpg", 2, preprocess.DEFAULT_MAX_ANGLE)
    references = [preprocess.resize(square, 64)] + [
        preprocess.resize(preprocess.rotated_square(square, a), 64) for a in angles
    ]
    for name, reference in zip(preprocess.output_names("sharp", 2), references):
        with Image.open(cache_path / "photos" / name) as made:
            assert laplacian_variance(made) >= 0.95 * laplacian_variance(reference), name
            # the same picture (the crop differs by under a pixel: its safety margin is 1 px at
            # either scale)
            assert (
                np.corrcoef(np.asarray(made).ravel(), np.asarray(reference).ravel())[0, 1] > 0.9
            ), name


# ---------------------------------------------------------------- determinism and the cache


def synthetic(cache_dir, **settings):
    settings = {
        "size": 16,
        "workers": 1,
        "synthetic_images": 12,
        "synthetic_classes": 3,
        **settings,
    }
    return preprocess.build_cache(
        cache_dir=cache_dir, source="synthetic", progress=False, **settings
    )


def test_same_settings_give_a_byte_identical_cache_with_any_worker_count(tmp_path):
    one = synthetic(tmp_path / "one", workers=1)
    two = synthetic(tmp_path / "two", workers=2)
    assert one.name == two.name
    assert tree_bytes(one) == tree_bytes(two)
    assert len(tree_bytes(one)) == 12 * 3 + 3  # PNGs + manifest, labels, images


def patterned(path, size=(120, 100)):
    """A picture whose rotation shows in the pixels (a solid colour rotates to itself)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.new("RGB", size, (30, 90, 40))
    draw = ImageDraw.Draw(picture)
    for x in range(0, size[0], 12):
        draw.rectangle((x, 0, x + 5, size[1]), fill=(220, 200, 40))
    draw.ellipse((30, 20, 90, 80), fill=(200, 40, 120))
    picture.save(path)


def test_a_different_seed_rotates_differently(tmp_path):
    patterned(tmp_path / "photos" / "a.png")
    seed0, seed1 = (
        preprocess.build_cache(
            tmp_path / "photos",
            source="folder",
            cache_dir=tmp_path / "cache",
            seed=seed,
            size=32,
            workers=1,
            progress=False,
        )
        for seed in (0, 1)
    )
    assert seed0 != seed1
    # the unrotated image does not depend on the seed; the rotated copies do
    assert (seed0 / "photos" / "a.png").read_bytes() == (seed1 / "photos" / "a.png").read_bytes()
    for copy in ("a_r1.png", "a_r2.png"):
        assert (seed0 / "photos" / copy).read_bytes() != (seed1 / "photos" / copy).read_bytes()


def test_angles_follow_the_file_name_not_the_processing_order(tmp_path):
    patterned(tmp_path / "photos" / "b.png")
    patterned(tmp_path / "photos" / "c.png")  # the same picture under another name
    before = preprocess.build_cache(
        tmp_path / "photos",
        source="folder",
        cache_dir=tmp_path / "before",
        size=32,
        workers=1,
        progress=False,
    )
    assert (before / "photos" / "b_r1.png").read_bytes() != (
        before / "photos" / "c_r1.png"
    ).read_bytes()
    # sorts first: every index shifts by one
    patterned(tmp_path / "photos" / "a.png", size=(100, 130))
    after = preprocess.build_cache(
        tmp_path / "photos",
        source="folder",
        cache_dir=tmp_path / "after",
        size=32,
        workers=1,
        progress=False,
    )
    for name in ("b.png", "b_r1.png", "b_r2.png", "c_r2.png"):
        assert (before / "photos" / name).read_bytes() == (after / "photos" / name).read_bytes()


def test_second_run_does_no_image_work(tmp_path, capsys):
    cache_path = synthetic(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in cache_path.rglob("*")}
    capsys.readouterr()
    assert synthetic(tmp_path) == cache_path
    assert "no image work" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in cache_path.rglob("*")} == before


def test_settings_never_share_a_cache_folder(tmp_path):
    names = {
        synthetic(tmp_path, **settings).name
        for settings in (dict(), dict(size=32), dict(rotations=1), dict(max_angle=10), dict(seed=3))
    }
    assert len(names) == 5


def test_interrupted_run_resumes_to_the_same_bytes(tmp_path, monkeypatch, capsys):
    clean = synthetic(tmp_path / "clean")
    calls = []
    real_task = preprocess.process_task

    def interrupted_after_five(task):
        calls.append(task)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real_task(task)

    monkeypatch.setattr(preprocess, "process_task", interrupted_after_five)
    with pytest.raises(KeyboardInterrupt):
        synthetic(tmp_path / "resumed")
    monkeypatch.undo()
    partial = tmp_path / "resumed" / clean.name
    assert not preprocess.is_complete(partial) and not list(partial.rglob("*.tmp"))
    (partial / "class_0" / ".image_00004.png.99999999.tmp").write_bytes(
        b"half a PNG from a killed worker"
    )

    capsys.readouterr()
    resumed = synthetic(tmp_path / "resumed")
    assert "resuming: 5 of 12" in capsys.readouterr().out
    assert tree_bytes(resumed) == tree_bytes(clean)


def test_a_build_leaves_the_temporary_files_of_a_running_writer_alone(tmp_path):
    # Two training scripts started at once may build the same cache side by side.
    cache_path = synthetic(tmp_path)
    (cache_path / "images.npy").unlink()
    in_flight = cache_path / "class_0" / f".image_00004.png.{os.getpid()}.tmp"
    in_flight.write_bytes(b"being written by a process that is still running")
    synthetic(tmp_path)
    assert in_flight.exists() and preprocess.is_complete(cache_path)


def test_photos_added_to_a_folder_make_a_new_cache(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(3):
        Image.new("RGB", (40, 40), (50 * index, 90, 160)).save(photos / f"{index}.png")
    first = preprocess.build_cache(
        photos, "folder", tmp_path / "cache", size=16, rotations=0, workers=1
    )
    assert (
        preprocess.build_cache(
            photos, "folder", tmp_path / "cache", size=16, rotations=0, workers=1
        )
        == first
    )
    Image.new("RGB", (40, 40), (250, 250, 0)).save(photos / "3.png")
    second = preprocess.build_cache(
        photos, "folder", tmp_path / "cache", size=16, rotations=0, workers=1
    )
    assert second != first and len(preprocess.load_cache(second)[0]) == 4


def test_damaged_files_of_a_cache_are_remade_and_nothing_else(tmp_path, capsys):
    # A power cut or a full disk can leave a truncated packed array or a zero-byte PNG.
    clean = synthetic(tmp_path / "clean")
    damaged = synthetic(tmp_path / "damaged")
    images = (damaged / "images.npy").read_bytes()
    (damaged / "images.npy").write_bytes(images[: len(images) // 2])
    (damaged / "class_0" / "image_00004_r1.png").write_bytes(b"")
    assert not preprocess.is_complete(damaged)

    capsys.readouterr()
    assert synthetic(tmp_path / "damaged") == damaged
    # only the damaged image is processed again
    assert "resuming: 11 of 12" in capsys.readouterr().out
    assert tree_bytes(damaged) == tree_bytes(clean)


def test_load_cache_refuses_an_incomplete_cache(tmp_path):
    cache_path = synthetic(tmp_path)
    (cache_path / "images.npy").unlink()
    with pytest.raises(preprocess.PreprocessError, match="not a complete cache"):
        preprocess.load_cache(cache_path)


def test_synthetic_flowers_are_deterministic_and_classes_differ(tmp_path):
    first = preprocess.draw_synthetic_flower(7, 5, seed=0, canvas=64)
    assert first.tobytes() == preprocess.draw_synthetic_flower(7, 5, seed=0, canvas=64).tobytes()
    assert first.tobytes() != preprocess.draw_synthetic_flower(7, 5, seed=1, canvas=64).tobytes()
    images, labels, _ = preprocess.prepare_data(
        cache_dir=tmp_path,
        source="synthetic",
        size=16,
        rotations=0,
        synthetic_images=40,
        synthetic_classes=4,
        workers=1,
        progress=False,
    )
    assert labels.bincount().tolist() == [10, 10, 10, 10]
    class_means = torch.stack([images[labels == c].float().mean(dim=0) for c in range(4)])
    # within a class images vary (background, pose), but the class average differs between classes
    distances = torch.cdist(class_means.flatten(1), class_means.flatten(1)) / (16 * 16 * 3) ** 0.5
    assert distances[~torch.eye(4, dtype=torch.bool)].min() > 5
    assert images.float().std(dim=0).mean() > 10  # not one image repeated


# ---------------------------------------------------------------- command line


def run_cli(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "preprocess.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_help_mentions_every_option():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in (
        "--data-dir",
        "--source",
        "--cache-dir",
        "--size",
        "--rotations",
        "--max-angle",
        "--seed",
        "--workers",
        "--synthetic-images",
        "--synthetic-classes",
        "--progress",
    ):
        assert flag in result.stdout
    assert f"(default: {preprocess.DEFAULT_ROTATIONS})" in result.stdout
    for source in ("mnist", "fashion-mnist", "cifar10"):
        assert source in result.stdout and source in preprocess.__doc__


def test_cli_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path):
    result = run_cli(
        "--source",
        "coursework",
        "--data-dir",
        str(tmp_path / "missing"),
        "--cache-dir",
        str(tmp_path),
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_cli_builds_a_synthetic_cache(tmp_path):
    result = run_cli(
        "--source",
        "synthetic",
        "--synthetic-images",
        "6",
        "--synthetic-classes",
        "2",
        "--size",
        "16",
        "--cache-dir",
        str(tmp_path),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    assert len(preprocess.load_cache(next(tmp_path.iterdir()))[1]) == 6 * (
        1 + preprocess.DEFAULT_ROTATIONS
    )


def test_cli_ctrl_c_says_how_to_resume(monkeypatch, capsys):
    def interrupted(**settings):
        raise KeyboardInterrupt

    monkeypatch.setattr(preprocess, "build_cache", interrupted)
    assert preprocess.main(["--source", "synthetic"]) == 130
    assert capsys.readouterr().err == "interrupted; run the same command again to resume\n"


def test_cli_defaults_are_the_python_defaults():
    import inspect

    cli = vars(preprocess.build_parser().parse_args([]))
    python = {
        name: p.default for name, p in inspect.signature(preprocess.build_cache).parameters.items()
    }
    assert cli == python
    assert (
        python["rotations"] == preprocess.DEFAULT_ROTATIONS
        and python["max_angle"] == preprocess.DEFAULT_MAX_ANGLE
    )
