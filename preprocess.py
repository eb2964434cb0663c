"""Preprocess Oxford 102 Flowers (or MNIST, Fashion-MNIST, CIFAR-10) into the cache the GAN scripts
train on.

    python preprocess.py                                  # ./jpg + labels, else download Flowers102
    python preprocess.py --data-dir data/flowers102 --size 128
    python preprocess.py --source synthetic               # offline demo: drawn flowers, no files
    python preprocess.py --source folder --data-dir my_photos
    python preprocess.py --source mnist --data-dir data --size 32   # downloads if missing

Run it once, or let a training script call `prepare_data()`, which builds the cache only if it is
missing. A second run with the same settings does no image work.

Sources (`--source auto` tries 1-3 in order)
  1. coursework   DATA_DIR/jpg/image_XXXXX.jpg + DATA_DIR/category_to_images.json
                  ({"<1..102>": [names]})
  2. official     DATA_DIR/jpg/ + DATA_DIR/imagelabels.mat (label i is image_{i:05d}.jpg's; scipy)
     torchvision  DATA_DIR/flowers-102/jpg/ + DATA_DIR/flowers-102/imagelabels.mat
  3. nothing found: download with torchvision.datasets.Flowers102 (all three splits, 8,189 images)
  folder          any image folder: class subfolders become labels, a flat folder is one class
  synthetic       procedurally drawn flowers, deterministic for --seed
  mnist           torchvision.datasets.MNIST in DATA_DIR/MNIST/raw/ (train + test, 70,000 digits,
                  1 channel)
  fashion-mnist   torchvision.datasets.FashionMNIST in DATA_DIR/FashionMNIST/raw/ (70,000,
                  1 channel)
  cifar10         torchvision.datasets.CIFAR10 in DATA_DIR/cifar-10-batches-py/ (60,000, 3 channels)
  The last three are downloaded by torchvision when missing. They are only resized (bicubic; 28 px
  digits are upscaled to --size 32): no white-margin trimming, no rotated copies (--rotations is
  ignored and the manifest says so), no too-small rule. Class folders: torchvision's class names.

What happens to each photo, and why
  1. Decode any mode to RGB: palette, grayscale, CMYK, RGBA composited on white, EXIF orientation;
     16- and 32-bit greyscale scaled to 8 bits (PIL alone would clip it to a white page).
     A JPEG decodes at 1/2, 1/4 or 1/8 scale where that still leaves 1.25x the working side (below)
     on the shorter side (PIL's draft mode: the inverse DCT at low resolution, several times cheaper
     than a full decode). Where trimming then leaves less than the working side, the file is decoded
     again at full size, so the too-small rule below always judges the original pixels.
  2. Trim near-white margins (rows/columns that are >= 99% near-white), so that white bars around a
     photo do not become part of what the generator learns to paint.
  3. Centre square crop (no aspect distortion), then LANCZOS resize to --size.
  4. --rotations extra copies, each rotated by a random angle in +-max_angle and cropped to the
     largest axis-aligned square inside the rotated square (side s / (|cos a| + |sin a|)), minus a
     1 px safety margin. A plain rotation leaves white or black wedges in the corners, and a GAN
     trained on those learns to paint wedges; the inscribed crop holds only picture. The rotation
     runs on the square first LANCZOS-reduced to the working side, 1.75 x --size x
     (|cos| + |sin|) of --max-angle (140 px for --size 64), so the crop is reduced 1.75x more to
     --size: as sharp as rotating the full-size square (docs/data_stage/README.md), at a tenth of
     the cost.
     Angles come from an RNG seeded by (--seed, file name), never by processing order, so any
     number of workers writes byte-identical files.
  Images whose shorter side is below --size after trimming are skipped, not upscaled: an upscaled
  image is blurry, and a generator learns the blur (on the 128 px coursework copy, --size 128 skips
  5 of 8,189 images whose white margins were trimmed). Rotated copies of a just-large-enough image
  are upscaled by at most |cos a| + |sin a| (1.22x at 15 degrees), which we accept.
  Zero-byte, truncated, non-image, missing and too-small files are skipped and listed in
  manifest.json with the reason; the run goes on. An empty result is an error.

Default --rotations 2 (x3 data): the GAN scripts train on 8,189 flowers, few enough that the
discriminator overfits; rotated, slightly zoomed copies (up to 1.22x at 15 degrees) are the
augmentation that does not change what a flower looks like. More copies are increasingly
correlated with the ones we have, and cost memory linearly (24,567 images at 64 px = 302 MB).
Default --max-angle 15: flowers photographed from the side look wrong tilted much further, and at
15 degrees the inscribed crop still keeps 67% of the square's area.

Cache layout: CACHE_DIR/<kind>-<hash>_s64_r2_a15_seed0/, the hash covering the resolved source
folder, its files' names, labels and sizes (a data set's pixels; the synthetic parameters) and
PIPELINE_VERSION, so two settings never mix and photos added to a folder make a new cache.
  <class>/image_00001.png, image_00001_r1.png, ...  what a person looks at; an ImageFolder
  manifest.json                                     source, parameters, counts, skipped files
  labels.npy   int64 [N]                            index into manifest["classes"]
  images.npy   uint8 [N, C, size, size]             written last; when whole, the cache is complete
                                                    (C = 1 for mnist and fashion-mnist, else 3)
Packed order: class by class, files by name, each image followed by its rotated copies. Every file
is written to a temporary name and renamed, so Ctrl-C never leaves half a file (a worker killed
mid-write leaves only a hidden .tmp, deleted by the next run once its writer is gone), and a rerun
redoes only images whose PNGs are missing.

Measured on a 2-core CPU (benchmarks/bench_preprocess.py; the 1,020 full-size originals in
../shared/data/flowers102-fullres-sample, --size 64 --rotations 2): first run 11-15 s of CPU, 17-22
s wall while other jobs kept the load at 2-5 (version 1, decoding and rotating at full size, in the
same hour: 71-76 s of CPU, 107-112 s wall); second run 0.4 s. load_cache takes 0.04-0.5 s for 24,567
images, where reading their PNGs instead takes 4.4 s, hence the packed .npy file (302 MB at 64 px).
"""

import argparse
import colorsys
import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import multiprocessing
import os
import random
import re
import signal
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageOps, UnidentifiedImageError
from tqdm import tqdm

DEFAULT_ROTATIONS = 2  # extra rotated copies per image (see the module docstring for why 2)
DEFAULT_MAX_ANGLE = 15.0  # degrees; rotation angles are uniform in +-this
PIPELINE_VERSION = 3  # bump when a code change alters the output, so old caches are not reused
WHITE_LEVEL = 240  # a pixel whose every channel is >= this counts as near-white
# a row/column with at most 1% non-white pixels is margin (JPEG specks)
MARGIN_CONTENT_FRACTION = 0.01
# spare pixel per side against the crop offset's rounding (0 already leaked no
ROTATION_SAFETY_PX = 1
# fill in 3,000 random sides/angles: PIL clamps bicubic's neighbours at the edge) fixed, so the same
# image gives the same bytes. Huffman coding only: a 64 px photo has few repeats for LZ77 to find,
# and it came out 4% smaller and 20% faster than zlib level 1 (level 6: 1.5x the time, 4% smaller)
PNG_OPTIONS = dict(format="PNG", compress_level=1, compress_type=zlib.Z_HUFFMAN_ONLY)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
SYNTHETIC_SUPERSAMPLE = 4  # synthetic flowers are drawn at 4x --size; the final resize antialiases
# rotations run at 1.75x --size: as sharp as at full size (docs/data_stage/), ~10x cheaper
WORKING_SCALE = 1.75
# JPEGs decode at a scale leaving 25% above the working size, room for trimmed margins
DRAFT_HEADROOM = 1.25
LAYOUTS = {  # kind: (image folder, label file), relative to --data-dir
    "coursework": ("jpg", "category_to_images.json"),
    "official": ("jpg", "imagelabels.mat"),
    "torchvision": ("flowers-102/jpg", "flowers-102/imagelabels.mat"),
}
DATASETS = {  # --source: (torchvision.datasets class, its folder in --data-dir, image channels)
    "mnist": ("MNIST", "MNIST/raw", 1),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw", 1),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", 3),
}
# 28 -> 32 px is an upscale: bicubic keeps strokes crisper than bilinear and rings less than
# LANCZOS, whose halos around strokes on MNIST's black background a GAN would learn to paint
DATASET_RESAMPLE = Image.Resampling.BICUBIC
DATASET_STEPS = (
    "no white-margin trimming and no rotated copies: these images are small and centred, with no "
    "white bars to trim, and a rotation's inscribed crop would cut the rim of a 28-32 px image"
)
SOURCES = ("auto", *LAYOUTS, "folder", "synthetic", *DATASETS)
# what PIL raises for files that are not (whole) images; anything else is a bug and should surface
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


# The official names of the Oxford 102 flower classes, label 1 to 102 (the data set's page). The
# layouts number the classes (001 to 102); --classes and the figures also take these names.
FLOWER_NAMES = (
    "pink primrose",
    "hard-leaved pocket orchid",
    "canterbury bells",
    "sweet pea",
    "english marigold",
    "tiger lily",
    "moon orchid",
    "bird of paradise",
    "monkshood",
    "globe thistle",
    "snapdragon",
    "colt's foot",
    "king protea",
    "spear thistle",
    "yellow iris",
    "globe-flower",
    "purple coneflower",
    "peruvian lily",
    "balloon flower",
    "giant white arum lily",
    "fire lily",
    "pincushion flower",
    "fritillary",
    "red ginger",
    "grape hyacinth",
    "corn poppy",
    "prince of wales feathers",
    "stemless gentian",
    "artichoke",
    "sweet william",
    "carnation",
    "garden phlox",
    "love in the mist",
    "mexican aster",
    "alpine sea holly",
    "ruby-lipped cattleya",
    "cape flower",
    "great masterwort",
    "siam tulip",
    "lenten rose",
    "barbeton daisy",
    "daffodil",
    "sword lily",
    "poinsettia",
    "bolero deep blue",
    "wallflower",
    "marigold",
    "buttercup",
    "oxeye daisy",
    "common dandelion",
    "petunia",
    "wild pansy",
    "primula",
    "sunflower",
    "pelargonium",
    "bishop of llandaff",
    "gaura",
    "geranium",
    "orange dahlia",
    "pink-yellow dahlia",
    "cautleya spicata",
    "japanese anemone",
    "black-eyed susan",
    "silverbush",
    "californian poppy",
    "osteospermum",
    "spring crocus",
    "bearded iris",
    "windflower",
    "tree poppy",
    "gazania",
    "azalea",
    "water lily",
    "rose",
    "thorn apple",
    "morning glory",
    "passion flower",
    "lotus",
    "toad lily",
    "anthurium",
    "frangipani",
    "clematis",
    "hibiscus",
    "columbine",
    "desert-rose",
    "tree mallow",
    "magnolia",
    "cyclamen",
    "watercress",
    "canna lily",
    "hippeastrum",
    "bee balm",
    "ball moss",
    "foxglove",
    "bougainvillea",
    "camellia",
    "mallow",
    "mexican petunia",
    "bromelia",
    "blanket flower",
    "trumpet creeper",
    "blackberry lily",
)


class PreprocessError(Exception):
    """A user mistake or unusable data. str(error) is one line that says what to do."""


def option(default, help, **argparse_kwargs):
    return field(default=default, metadata={"help": help, **argparse_kwargs})


@dataclass
class Config:
    data_dir: str = option(
        ".", "folder holding jpg/ and a label file (the images themselves for --source folder)"
    )
    source: str = option(
        "auto",
        "where the images come from; auto tries coursework, official, torchvision, "
        "then downloads; mnist, fashion-mnist, cifar10 read (or download) torchvision's files "
        "in --data-dir",
        choices=SOURCES,
    )
    cache_dir: str = option("cache", "the cache subfolder for these settings is made in here")
    size: int = option(64, "output side in pixels, a power of two >= 16")
    rotations: int = option(
        DEFAULT_ROTATIONS,
        "extra randomly rotated copies per image; 2 triples the "
        "8,189 flowers, enough to slow discriminator overfitting without much memory",
    )
    max_angle: float = option(
        DEFAULT_MAX_ANGLE, "rotation angles are uniform in +-this many degrees"
    )
    seed: int = option(0, "seeds the rotation angles (per file name) and the synthetic flowers")
    workers: int | None = option(
        None, "processes; default all usable cores; 1 runs in-process", type=int
    )
    synthetic_images: int = option(2000, "number of images for --source synthetic")
    synthetic_classes: int = option(10, "number of flower classes for --source synthetic")
    progress: bool = option(True, "show a progress bar (in a terminal)")


class Source(NamedTuple):
    # coursework | official | torchvision | folder | synthetic | mnist | fashion-mnist | cifar10
    kind: str
    root: Path | None  # resolved folder holding the data (jpg/ + label file, or the image folder)


class Record(NamedTuple):
    key: str  # stable name: seeds the image's RNG and is what the manifest reports
    class_index: int
    stem: str  # output file stem inside the class folder
    path: str | None  # source file; None for a synthetic flower or a dataset image
    synthetic_index: int = -1
    # a dataset image (mnist, fashion-mnist, cifar10): HxW or HxWx3 uint8
    pixels: np.ndarray | None = None


class SkipImage(Exception):
    """Raised inside the per-image pipeline for a usable file that yields no usable picture."""


def one_line(text):
    """A message (or an error's) on one line; an error without a message by its type's name."""
    return " ".join(str(text).split()) or (
        type(text).__name__ if isinstance(text, Exception) else ""
    )


def stable_seed(*parts):
    """A seed that is the same in every process and run (hash() is salted per process)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


# ---------------------------------------------------------------- the per-image pipeline


def load_rgb(path, draft_side=None):
    """(RGB image, reduced). With draft_side, a JPEG decodes at 1/2, 1/4 or 1/8 scale where that
    keeps both sides >= draft_side (PIL's draft mode: the inverse DCT at low resolution, far cheaper
    than a full decode)."""
    with Image.open(path) as image:
        full_size = image.size
        if draft_side:
            image.draft("RGB", (draft_side, draft_side))  # a no-op for other formats
        reduced = image.size != full_size
        image.load()  # decode now, so a truncated file fails here rather than later
        image = ImageOps.exif_transpose(image)  # phones store "rotate me" in EXIF instead of pixels
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = greyscale_to_8_bit(image)
    if image.mode in ("RGBA", "LA", "PA", "P") or "transparency" in image.info:
        # transparent areas become white, which the margin trim then removes
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB"), reduced
    return image.convert("RGB"), reduced


def greyscale_to_8_bit(image):
    """A 16- or 32-bit greyscale image ("I;16", "I;16B", "I", "F") as an 8-bit one ("L"), each
    value scaled from the mode's full range: PIL's own conversion clips every value above 255, so
    a 16-bit scan would come out white, a blank page.

    The "I;16" modes hold 0..65535. "I" (a 16-bit PNG in older Pillows, a 32-bit TIFF) and "F" (a
    float TIFF) do not say their range, so it is the smallest usual one that holds the brightest
    value: 0..1 (floats), 0..255 (read as PIL always read it), 0..65535, else 0..that value."""
    pixels = np.nan_to_num(np.asarray(image, dtype=np.float64))
    brightest = pixels.max()
    if image.mode.startswith("I;16"):
        full_scale = 65535
    elif image.mode == "F" and brightest <= 1:
        full_scale = 1
    elif brightest <= 255:
        return image.convert("L")  # 8-bit values: the bytes a cache holds already stay the same
    else:
        full_scale = max(65535, brightest)
    levels = np.clip(pixels * (255 / full_scale), 0, 255).round().astype(np.uint8)
    return Image.fromarray(levels)


def trim_white_margins(image):
    # both thresholds are per pixel and per fraction of a row, so they mean the same at a reduced
    # scale min over channels
    content = np.asarray(functools.reduce(ImageChops.darker, image.split())) < WHITE_LEVEL
    rows = np.flatnonzero(content.mean(axis=1) > MARGIN_CONTENT_FRACTION)
    cols = np.flatnonzero(content.mean(axis=0) > MARGIN_CONTENT_FRACTION)
    if rows.size == 0 or cols.size == 0:
        raise SkipImage("blank: nothing but near-white pixels")
    return image.crop((cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))


def centre_square(image):
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def inscribed_ratio(angle):
    """A square's side over the side of the largest axis-aligned square inside it rotated."""
    radians = math.radians(angle)
    return abs(math.cos(radians)) + abs(math.sin(radians))


def working_side(size, max_angle):
    """The side rotations run at: the inscribed crop is still WORKING_SCALE x size at max_angle."""
    return math.ceil(WORKING_SCALE * size * inscribed_ratio(max_angle)) + 2 * ROTATION_SAFETY_PX


def rotated_square(square, angle):
    """Rotate, then keep the largest axis-aligned square inside the rotated square: no fill at all.

    One affine transform computes just that square: rotate() then crop() to within 1 grey level,
    with up to a third fewer pixels to interpolate."""
    side = square.width
    inner = math.floor(side / inscribed_ratio(angle)) - 2 * ROTATION_SAFETY_PX
    start, centre = (side - inner) // 2 - side / 2, side / 2  # the crop's corner, from the centre
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # output (x, y) samples the input at (x + corner) rotated about the centre, as rotate(angle)
    # maps it
    matrix = (cos, -sin, (cos - sin) * start + centre, sin, cos, (sin + cos) * start + centre)
    # magenta fill would be obvious in a grid if the crop ever let some through
    return square.transform(
        (inner, inner),
        Image.Transform.AFFINE,
        matrix,
        Image.Resampling.BICUBIC,
        fillcolor=(255, 0, 255),
    )


def resize(image, size):
    # reducing_gap first box-reduces big images by an integer factor: same look, much faster
    return image.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)


def rotation_angles(seed, key, rotations, max_angle):
    rng = random.Random(stable_seed("rotation", seed, key))
    return [rng.uniform(-max_angle, max_angle) for _ in range(rotations)]


def load_trimmed(path, working):
    """The file decoded (at a reduced JPEG scale where that leaves >= working px) and trimmed."""
    picture, reduced = load_rgb(path, draft_side=math.ceil(working * DRAFT_HEADROOM))
    if reduced:
        with contextlib.suppress(SkipImage):
            trimmed = trim_white_margins(picture)
            if min(trimmed.size) >= working:
                return trimmed
        # wide margins or a blank page: judged at full size, so the skip rules see the original
        # pixels
        picture = load_rgb(path)[0]
    return trim_white_margins(picture)


def clean_and_rotate(picture, size, angles, working):
    """A trimmed picture's centre square plus one rotated copy per angle, each size x size RGB.

    With angles, all copies come from the square LANCZOS-reduced to `working` px: measured no
    blurrier than rotating the full-size square (docs/data_stage/README.md), which took 2/3 of the
    time on 500 px photos. Without, the one copy is reduced from the square in one step (two steps
    would only add blur)."""
    if min(picture.size) < size:
        width, height = picture.size
        raise SkipImage(
            f"too small: {width}x{height} px after trimming white margins, "
            f"need at least {size} px on the shorter side"
        )
    square = centre_square(picture)
    if angles and square.width > working:
        square = resize(square, working)
    return [resize(square, size)] + [
        resize(rotated_square(square, angle), size) for angle in angles
    ]


def output_names(stem, rotations):
    return [f"{stem}.png"] + [f"{stem}_r{k}.png" for k in range(1, rotations + 1)]


def usable_cores():
    """The cores this process may run on (a container or taskset may allow fewer than the machine
    has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def write_atomically(path, write, sync=True):
    """write(file) into a temporary name in the same folder, flushed to disk (unless not sync), then
    renamed: a crash or a full disk never leaves half a file (the training scripts write all their
    files this way)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
            # not for each cached PNG: images.npy, synced and written last, marks the cache whole
            if sync:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def writer_is_gone(temporary):
    """Whether the process named in a temporary file's name (.NAME.PID.tmp) no longer runs."""
    try:
        os.kill(int(temporary.name.rsplit(".", 2)[-2]), 0)
    except (ValueError, ProcessLookupError):
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def channels_first(array):
    return np.atleast_3d(array).transpose(2, 0, 1)  # HxW (grayscale) or HxWxC -> CxHxW


def read_cached(paths, packed, first):
    """Copy an earlier run's PNGs of a source image into packed[first:]; False if one is damaged."""
    try:
        for k, path in enumerate(paths):
            with Image.open(path) as image:
                packed[first + k] = channels_first(
                    image.convert("L" if packed.shape[1] == 1 else "RGB")
                )
    except (OSError, ValueError, SyntaxError):  # truncated, zero bytes, another size: made again
        return False
    return True


def process_task(task):
    """Worker: one source image -> its PNGs on disk. Returns (index, [HxW(x3) arrays] or None,
    reason)."""
    index, record, class_name, cache_path, size, rotations, max_angle, seed, synthetic_classes = (
        task
    )
    angles = rotation_angles(seed, record.key, rotations, max_angle)
    # from max_angle, not the angles: the unrotated copy must not depend on the seed
    working = working_side(size, max_angle if rotations else 0)
    try:
        # small, centred, no margins: resize only (upscaling is unavoidable)
        if record.pixels is not None:
            pictures = [Image.fromarray(record.pixels).resize((size, size), DATASET_RESAMPLE)]
        elif record.path is None:
            canvas = size * SYNTHETIC_SUPERSAMPLE
            picture = draw_synthetic_flower(record.synthetic_index, synthetic_classes, seed, canvas)
            pictures = clean_and_rotate(trim_white_margins(picture), size, angles, working)
        elif os.path.getsize(record.path) == 0:
            return index, None, "empty file (0 bytes)"
        else:
            pictures = clean_and_rotate(load_trimmed(record.path, working), size, angles, working)
    except SkipImage as reason:
        return index, None, str(reason)
    except UnidentifiedImageError:
        return index, None, "not an image (no image format recognised)"
    except DECODE_ERRORS as error:
        return (
            index,
            None,
            f"unreadable or truncated image ({type(error).__name__}: {one_line(error)})",
        )
    folder = Path(cache_path) / class_name
    folder.mkdir(exist_ok=True)
    for name, picture in zip(output_names(record.stem, rotations), pictures):
        write_atomically(folder / name, lambda file: picture.save(file, **PNG_OPTIONS), sync=False)
    return index, [np.asarray(picture) for picture in pictures], None


def ignore_sigint():
    # Ctrl-C reaches every process in the group; only the parent should react (and stop the pool)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def task_mapper(workers):
    """A map over tasks: in-process for workers == 1 (easy to debug), else a process pool."""
    if workers == 1:
        yield map
        return
    with multiprocessing.Pool(workers, initializer=ignore_sigint) as pool:
        yield lambda function, tasks: pool.imap_unordered(function, tasks, chunksize=8)


# ---------------------------------------------------------------- synthetic flowers

PETAL_PROFILES = {  # half-width along the petal, t = 0 at the centre and 1 at the tip
    "oval": lambda t: math.sin(math.pi * t),
    "pointed": lambda t: 1.6 * math.sin(math.pi * t) * (1 - t) ** 0.5,
    "spoon": lambda t: math.sin(math.pi * t**2) ** 0.5,
}
BACKGROUNDS = [  # (top colour, bottom colour) of a vertical gradient; none near-white
    ((34, 70, 30), (70, 120, 50)),  # foliage
    ((12, 20, 14), (40, 60, 35)),  # shade
    ((90, 140, 200), (150, 185, 215)),  # sky
    ((70, 50, 35), (120, 95, 65)),  # soil
]


def petal_outline(cx, cy, angle, length, width, profile, steps=16):
    side = [(length * i / steps, width / 2 * profile(i / steps)) for i in range(steps + 1)]
    local = side + [(x, -y) for x, y in reversed(side)]
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in local]


def hsv(hue, saturation, value):
    return tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue % 1.0, saturation, value))


def shade(colour, factor):
    return tuple(min(255, round(c * factor)) for c in colour)


def draw_synthetic_flower(index, num_classes, seed, canvas):
    """Flower `index` (class index % num_classes) on a canvas x canvas RGB image.

    A class fixes the petal hue, count, shape and layers and the centre; an image varies the
    background, leaves, position, size, turn and a little colour. Class looks do not depend on
    the seed, so class 3 looks alike in every synthetic cache.
    """
    class_index = index % num_classes
    style = random.Random(stable_seed("synthetic-class", class_index))
    rng = random.Random(stable_seed("synthetic-image", seed, index))
    hue = class_index * 0.618034  # golden-ratio steps spread the class hues around the circle
    saturation, value = style.uniform(0.55, 0.95), style.uniform(0.8, 1.0)
    petals, profile = style.randint(5, 12), PETAL_PROFILES[style.choice(sorted(PETAL_PROFILES))]
    petal_length, petal_width = style.uniform(0.75, 1.0), style.uniform(0.25, 0.55)
    layers = style.choice([1, 2])
    centre_colour = hsv(style.uniform(0.05, 0.16), 0.85, style.uniform(0.3, 0.95))
    centre_size = style.uniform(0.15, 0.3)

    top, bottom = (np.array(colour, dtype=np.float64) for colour in rng.choice(BACKGROUNDS))
    jitter = np.array([rng.uniform(-15, 15) for _ in range(3)])
    t = np.linspace(0, 1, canvas)[:, None, None]
    gradient = np.clip(top + (bottom - top) * t + jitter, 0, 255)
    image = Image.fromarray(np.broadcast_to(gradient, (canvas, canvas, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    outline_width = max(1, canvas // 100)

    for _ in range(rng.randint(0, 4)):
        leaf = hsv(rng.uniform(0.22, 0.36), rng.uniform(0.5, 0.8), rng.uniform(0.3, 0.6))
        x, y = rng.uniform(0, canvas), rng.uniform(0, canvas)
        draw.polygon(
            petal_outline(
                x,
                y,
                rng.uniform(0, 2 * math.pi),
                canvas * rng.uniform(0.25, 0.5),
                canvas * rng.uniform(0.08, 0.15),
                PETAL_PROFILES["pointed"],
            ),
            fill=leaf,
            outline=shade(leaf, 0.7),
            width=outline_width,
        )

    cx, cy = (canvas * (0.5 + rng.uniform(-0.08, 0.08)) for _ in range(2))
    radius = canvas * rng.uniform(0.28, 0.4)
    turn = rng.uniform(0, 2 * math.pi)
    petal_colour = hsv(
        hue + rng.uniform(-0.02, 0.02),
        saturation * rng.uniform(0.9, 1.0),
        value * rng.uniform(0.85, 1.0),
    )
    for layer in range(layers):  # the back layer first, a shorter, lighter one on top of it
        colour = shade(petal_colour, 1.0 + 0.15 * layer)
        length = radius * petal_length * (1 - 0.3 * layer)
        for k in range(petals):
            angle = turn + 2 * math.pi * (k + 0.5 * layer) / petals
            draw.polygon(
                petal_outline(cx, cy, angle, length, length * petal_width, profile),
                fill=colour,
                outline=shade(colour, 0.65),
                width=outline_width,
            )
    r = radius * centre_size
    draw.ellipse(
        (cx - r, cy - r, cx + r, cy + r),
        fill=centre_colour,
        outline=shade(centre_colour, 0.6),
        width=outline_width,
    )
    for k in range(8):  # seeds around the centre give it texture
        x, y = (
            cx + 0.55 * r * math.cos(turn + k * math.pi / 4),
            cy + 0.55 * r * math.sin(turn + k * math.pi / 4),
        )
        dot = 0.12 * r
        draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=shade(centre_colour, 0.5))
    return image


# ---------------------------------------------------------------- finding and listing the source


def remove_if_empty(folder):
    """Remove a folder tree that holds no file (what a failed download leaves): no litter in the
    data folder."""
    for path in sorted(folder.rglob("*"), reverse=True) + [folder]:  # children before their parents
        with contextlib.suppress(OSError):  # a file, or a folder that still holds one
            path.rmdir()


def download_flowers102(data_dir):
    import torchvision.datasets  # imported here: slow, and only needed for this one step

    print(
        f"no flowers found in {data_dir}; downloading Oxford 102 Flowers (~330 MB) with torchvision"
    )
    target = Path(data_dir) / "flowers-102"
    existed = target.exists()
    try:
        for split in ("train", "val", "test"):  # the three splits together are all 8,189 images
            torchvision.datasets.Flowers102(root=data_dir, split=split, download=True)
    except ImportError as error:  # torchvision reads the labels with scipy
        raise PreprocessError(
            f"downloading Flowers102 needs {error.name or 'scipy'}: pip install -r requirements.txt"
        ) from None
    except Exception as error:  # URLError, checksum RuntimeError, tar errors...: all mean "no data"
        if not existed:
            remove_if_empty(target)  # torchvision made it before the download failed
        raise PreprocessError(
            f"no flowers found in {data_dir} and the download failed ({type(error).__name__}: "
            f"{one_line(error)}); put Oxford 102 Flowers in {data_dir} in one of these layouts: "
            "jpg/ + category_to_images.json (coursework), jpg/ + imagelabels.mat (official), "
            "flowers-102/jpg/ + flowers-102/imagelabels.mat (torchvision); "
            "or run with --source synthetic for an offline demo"
        ) from None


def find_source(data_dir, source):
    if source == "synthetic":
        return Source("synthetic", None)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        what = "is a file, not a folder" if data_dir.exists() else "does not exist"
        raise PreprocessError(
            f"data dir {data_dir} {what}; point --data-dir at the folder that "
            "holds jpg/ (or create it for the download), or use --source synthetic"
        )
    if source in ("folder", *DATASETS):
        return Source(source, data_dir.resolve())
    if source != "auto":
        missing = [name for name in LAYOUTS[source] if not (data_dir / name).exists()]
        if missing:
            raise PreprocessError(
                f"--source {source} needs {' and '.join(LAYOUTS[source])} in {data_dir}, "
                f"but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
            )
        return Source(source, (data_dir / LAYOUTS[source][1]).parent.resolve())
    found = layouts_in(data_dir)
    if found:
        return Source(found[0], (data_dir / LAYOUTS[found[0]][1]).parent.resolve())
    for above in list(data_dir.resolve().parents)[:2]:  # --data-dir data/flowers102/jpg, say
        if layouts_in(above):
            raise PreprocessError(
                f"--data-dir {data_dir} is inside the data set, not the data set: did you mean "
                f"--data-dir {above}?"
            )
    download_flowers102(data_dir)
    return Source("torchvision", (data_dir / "flowers-102").resolve())


def layouts_in(folder):
    """The layouts (coursework, official, torchvision) whose files are in folder."""
    return [
        kind
        for kind, (images, labels) in LAYOUTS.items()
        if (folder / images).is_dir() and (folder / labels).is_file()
    ]


def flower_name(class_name):
    """The official name of a Flowers class by its folder's number ('054': 'sunflower'), or None
    for a name that is not one of the 102."""
    if class_name.isdigit() and len(class_name) == 3 and 1 <= int(class_name) <= len(FLOWER_NAMES):
        return FLOWER_NAMES[int(class_name) - 1]
    return None


def category_folder(category):
    # zero-padded so that ImageFolder's alphabetical class order is our numeric label order
    return f"{int(category):03d}" if str(category).isdigit() else str(category)


def list_flowers(source, label_file):
    """Records for the coursework/official/torchvision layouts, and the files skipped on the way."""
    jpg = source.root / "jpg"
    if label_file.suffix == ".json":
        try:
            mapping = json.loads(label_file.read_text())
        except (OSError, ValueError) as error:
            raise PreprocessError(f"cannot read {label_file}: {one_line(error)}") from None
        if not isinstance(mapping, dict):
            raise PreprocessError(
                f'{label_file} should map categories to file names: {{"1": ["image_00001.jpg"]}}'
            )
        labelled = [(category_folder(k), name) for k, names in mapping.items() for name in names]
    else:
        try:
            import scipy.io
        except ImportError:
            raise PreprocessError(f"reading {label_file} needs scipy: pip install scipy") from None
        try:
            labels = scipy.io.loadmat(label_file)["labels"].ravel()
        except (OSError, ValueError, KeyError) as error:
            raise PreprocessError(
                f"cannot read labels from {label_file}: {one_line(error)}"
            ) from None
        labelled = [
            (category_folder(label), f"image_{i:05d}.jpg") for i, label in enumerate(labels, 1)
        ]

    class_names = sorted({folder for folder, _ in labelled})
    records, skipped, seen = [], [], set()
    for folder, name in labelled:
        if name in seen:
            skipped.append(
                {
                    "file": f"jpg/{name}",
                    "reason": f"listed twice in {label_file.name}; kept the first",
                }
            )
        elif not (jpg / name).is_file():
            skipped.append(
                {"file": f"jpg/{name}", "reason": f"missing from disk (named in {label_file.name})"}
            )
        else:
            records.append(
                Record(name, class_names.index(folder), Path(name).stem, str(jpg / name))
            )
        seen.add(name)
    for path in sorted(jpg.iterdir()):
        if path.name not in seen and not path.name.startswith("."):
            skipped.append(
                {"file": f"jpg/{path.name}", "reason": f"not in {label_file.name}, so no label"}
            )
    return records, class_names, skipped


def folder_names(names):
    """A dataset's class names made safe as folder names ('T-shirt/top' -> 'T_shirt_top'),
    index-prefixed where their alphabetical order (ImageFolder's) would not be the label order
    (Fashion-MNIST's)."""
    safe = [re.sub(r"[^A-Za-z0-9]+", "_", str(name)).strip("_") for name in names]
    if sorted(set(safe)) != safe:
        width = len(str(len(safe) - 1))
        safe = [f"{index:0{width}d}_{name}" for index, name in enumerate(safe)]
    return safe


def list_dataset(source):
    """Records for mnist, fashion-mnist, cifar10: torchvision.datasets reads both splits from its
    own layout in --data-dir, downloading what is missing, as for Flowers102."""
    import torchvision.datasets

    name, folder, _ = DATASETS[source.kind]
    target = source.root / folder.split("/")[0]
    existed = target.exists()
    try:
        splits = [
            (
                split,
                getattr(torchvision.datasets, name)(
                    source.root, train=split == "train", download=True
                ),
            )
            for split in ("train", "test")
        ]
    # URLError, checksum RuntimeError, a malformed file: all mean "no data"
    except Exception as error:
        if not existed:
            remove_if_empty(target)
        raise PreprocessError(
            f"torchvision could neither read nor download {name} in {source.root} "
            f"({type(error).__name__}: {one_line(error)}); put its files in "
            f"{source.root / folder} as torchvision.datasets.{name} expects"
        ) from None
    records = []
    for split, dataset in splits:
        # N x 28 x 28 (MNIST), N x 32 x 32 x 3 (CIFAR-10)
        pixels = np.ascontiguousarray(dataset.data)
        for index, label in enumerate(np.asarray(dataset.targets).tolist()):
            key = f"{split}_{index:05d}"
            records.append(Record(key, label, key, None, pixels=pixels[index]))
    return records, folder_names(splits[0][1].classes), []


def list_folder(root, cache_dir):
    """Class subfolders become labels; a flat folder is one class. The cache itself is left out."""
    cache_dir = Path(cache_dir).resolve()

    def images_in(folder, recursive):
        paths = folder.rglob("*") if recursive else folder.iterdir()
        return sorted(
            p
            for p in paths
            if p.suffix.lower() in IMAGE_SUFFIXES
            and p.is_file()
            and cache_dir not in p.parents
            and not p.name.startswith(".")
        )

    subfolders = [
        d
        for d in sorted(root.iterdir())
        if d.is_dir()
        and not d.name.startswith(".")
        and d.resolve() != cache_dir
        and images_in(d, recursive=True)
    ]
    loose = images_in(root, recursive=False)
    groups = [(d.name, images_in(d, recursive=True)) for d in subfolders] or [
        (root.name or "images", loose)
    ]
    skipped = (
        [{"file": p.name, "reason": "not in a class subfolder"} for p in loose]
        if subfolders
        else []
    )

    records = []
    for class_index, (class_folder, paths) in enumerate(groups):
        base = root / class_folder if subfolders else root
        stems = [p.relative_to(base).with_suffix("").as_posix().replace("/", "__") for p in paths]
        for path, stem in zip(paths, stems):
            if stems.count(stem) > 1:  # photo.jpg next to photo.png
                stem += "_" + path.suffix.lstrip(".").lower()
            records.append(Record(path.relative_to(root).as_posix(), class_index, stem, str(path)))
    return records, [name for name, _ in groups], skipped


def list_records(source, cache_dir, synthetic_images, synthetic_classes):
    if source.kind == "synthetic":
        width = len(str(synthetic_classes - 1))
        class_names = [f"class_{c:0{width}d}" for c in range(synthetic_classes)]
        records = [
            Record(f"synthetic_{i:05d}", i % synthetic_classes, f"image_{i + 1:05d}", None, i)
            for i in range(synthetic_images)
        ]
        return records, class_names, []
    if source.kind == "folder":
        return list_folder(source.root, cache_dir)
    if source.kind in DATASETS:
        return list_dataset(source)
    return list_flowers(source, source.root / Path(LAYOUTS[source.kind][1]).name)


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:  # gone since the listing: processing it will skip it with the reason
        return -1


def cache_folder_name(
    source, size, rotations, max_angle, seed, synthetic_images, synthetic_classes, records
):
    if source.kind == "synthetic":
        identity = {"images": synthetic_images, "classes": synthetic_classes}
    # the files and their sizes too: photos added to or removed from a folder make a new cache
    else:
        files = hashlib.sha256()
        for record in sorted(records):
            content = (
                file_size(record.path)
                if record.pixels is None
                else hashlib.sha1(record.pixels).hexdigest()
            )
            files.update(f"{record.key}\0{record.class_index}\0{content}\n".encode())
        identity = {"root": str(source.root), "files": files.hexdigest()}
    identity.update(kind=source.kind, pipeline_version=PIPELINE_VERSION)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return f"{source.kind}-{digest}_s{size}_r{rotations}_a{max_angle:g}_seed{seed}"


def is_complete(cache_path):
    """The packed arrays are there, whole, and agree with the manifest. A power cut or a full disk
    can leave a short file behind a rename; such a cache is re-packed from its PNGs."""
    cache_path = Path(cache_path)
    try:
        manifest = json.loads((cache_path / "manifest.json").read_text())
        images = np.load(cache_path / "images.npy", mmap_mode="r")  # reads the header only
        labels = np.load(cache_path / "labels.npy", mmap_mode="r")
    except (OSError, ValueError, EOFError):  # missing, truncated, not an array, not JSON
        return False
    return isinstance(manifest, dict) and len(images) == len(labels) == manifest.get("num_images")


def check_settings(
    source, size, rotations, max_angle, workers, synthetic_images, synthetic_classes
):
    if source not in SOURCES:
        raise PreprocessError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if size < 16 or size & (size - 1):
        raise PreprocessError(
            f"--size {size} is not a power of two >= 16 (the GAN scripts halve it repeatedly)"
        )
    if rotations < 0:
        raise PreprocessError(f"--rotations {rotations} must be 0 or more")
    if not 0 <= max_angle <= 45:
        raise PreprocessError(f"--max-angle {max_angle:g} must be between 0 and 45 degrees")
    if workers is not None and workers < 1:
        raise PreprocessError(f"--workers {workers} must be 1 or more")
    if source == "synthetic" and not 1 <= synthetic_classes <= synthetic_images:
        raise PreprocessError("--synthetic-classes must be between 1 and --synthetic-images")


# ---------------------------------------------------------------- the cache


def build_cache(
    data_dir=".",
    source="auto",
    cache_dir="cache",
    size=64,
    rotations=DEFAULT_ROTATIONS,
    max_angle=DEFAULT_MAX_ANGLE,
    seed=0,
    workers=None,
    synthetic_images=2000,
    synthetic_classes=10,
    progress=True,
):
    """Build (or resume) the cache for these settings and return its folder; reuse a whole one."""
    check_settings(source, size, rotations, max_angle, workers, synthetic_images, synthetic_classes)
    found = find_source(data_dir, source)
    records, class_names, skipped = list_records(
        found, cache_dir, synthetic_images, synthetic_classes
    )
    requested_rotations, channels = rotations, 3
    if found.kind in DATASETS:
        rotations, channels = 0, DATASETS[found.kind][2]  # no rotations: see DATASET_STEPS
    cache_path = Path(cache_dir) / cache_folder_name(
        found, size, rotations, max_angle, seed, synthetic_images, synthetic_classes, records
    )
    if is_complete(cache_path):
        print(f"reusing the complete cache {cache_path}: no image work to do")
        return cache_path

    start = time.time()
    # the packed order, whatever the source
    records.sort(key=lambda record: (record.class_index, record.key))
    try:
        cache_path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PreprocessError(
            f"cannot create the cache folder {cache_path}: {one_line(error)}"
        ) from None
    for leftover in cache_path.rglob(".*.tmp"):
        if writer_is_gone(leftover):  # a run killed mid-write; not one building beside us now
            leftover.unlink(missing_ok=True)

    where = (
        "synthetic flowers" if found.root is None else f"the {found.kind} layout in {found.root}"
    )
    print(f"building {cache_path} from {where}")
    if found.kind in DATASETS:
        print(f"{found.kind}: {DATASET_STEPS} (--rotations {requested_rotations} asked for)")
    copies = 1 + rotations
    # compacted at the end
    packed = np.zeros((len(records) * copies, channels, size, size), dtype=np.uint8)
    kept = [False] * len(records)
    todo = []
    for index, record in enumerate(records):
        folder = cache_path / class_names[record.class_index]
        paths = [folder / name for name in output_names(record.stem, rotations)]
        if all(path.is_file() for path in paths) and read_cached(paths, packed, index * copies):
            kept[index] = True  # done by an earlier, interrupted run
        else:
            todo.append(
                (
                    index,
                    record,
                    class_names[record.class_index],
                    str(cache_path),
                    size,
                    rotations,
                    max_angle,
                    seed,
                    synthetic_classes,
                )
            )
    if len(todo) < len(records):
        print(f"resuming: {len(records) - len(todo)} of {len(records)} images already done")

    workers = min(workers or usable_cores(), max(1, len(todo)))
    with task_mapper(workers) as mapper:
        results = mapper(process_task, todo)
        for index, arrays, reason in tqdm(
            results,
            total=len(todo),
            desc="preprocess",
            unit="img",
            disable=None if progress else True,
        ):
            if reason is not None:
                record = records[index]
                skipped.append(
                    {
                        "file": record.key
                        if found.kind == "folder" or record.path is None
                        else f"jpg/{record.key}",
                        "reason": reason,
                    }
                )
                continue
            for k, array in enumerate(arrays):
                packed[index * copies + k] = channels_first(array)
            kept[index] = True

    kept_records = [(index, record) for index, record in enumerate(records) if kept[index]]
    if not kept_records:
        with contextlib.suppress(OSError):
            cache_path.rmdir()  # leave no empty cache behind
        reasons = sorted({entry["reason"] for entry in skipped})[:3]
        raise PreprocessError(
            f"no usable images in {where}: {len(skipped)} files skipped "
            f"({'; '.join(reasons) or 'no image files found'})"
        )

    # Records are in class order, so moving kept ones down keeps the order and needs no second
    # array. empty classes drop out
    used_classes = sorted({record.class_index for _, record in kept_records})
    labels = []
    for position, (index, record) in enumerate(kept_records):
        packed[position * copies : (position + 1) * copies] = packed[
            index * copies : (index + 1) * copies
        ]
        labels += [used_classes.index(record.class_index)] * copies
    packed = packed[: len(kept_records) * copies]
    classes = [class_names[c] for c in used_classes]
    per_class = [
        sum(1 for _, record in kept_records if record.class_index == c) for c in used_classes
    ]

    manifest = {
        "source": {"kind": found.kind, "path": None if found.root is None else str(found.root)},
        "params": {
            "size": size,
            "rotations": rotations,
            "max_angle": max_angle,
            "seed": seed,
            "pipeline_version": PIPELINE_VERSION,
        },
        "classes": classes,
        "num_source_images": len(kept_records),
        "num_images": len(labels),
        "source_images_per_class": dict(zip(classes, per_class)),
        "images_per_class": {name: n * copies for name, n in zip(classes, per_class)},
        "empty_classes": [name for name in class_names if name not in classes],
        "skipped": sorted(skipped, key=lambda entry: entry["file"]),
        "channels": channels,
        "skipped_steps": f"{DATASET_STEPS} (--rotations {requested_rotations} asked for)"
        if found.kind in DATASETS
        else None,
        "packed": {
            "images.npy": f"uint8 [N, {channels}, size, size]",
            "labels.npy": "int64 [N], index into classes",
            "order": "class by class, files by name, each image followed by its rotated copies",
        },
    }
    if found.kind == "synthetic":
        manifest["source"].update(images=synthetic_images, classes=synthetic_classes)
    write_atomically(
        cache_path / "manifest.json",
        lambda file: file.write((json.dumps(manifest, indent=2) + "\n").encode()),
    )
    write_atomically(
        cache_path / "labels.npy", lambda file: np.save(file, np.array(labels, dtype=np.int64))
    )
    # last: marks complete
    write_atomically(cache_path / "images.npy", lambda file: np.save(file, packed))
    print(
        f"cached {len(labels)} images ({len(kept_records)} source images x {copies}) of "
        f"{len(classes)} classes in {time.time() - start:.1f} s; skipped {len(skipped)} files (see "
        "manifest.json)"
    )
    return cache_path


def load_cache(cache_path):
    """(images uint8 [N, C, size, size], labels int64 [N], class names) from a complete cache; C = 1
    for mnist and fashion-mnist, else 3."""
    cache_path = Path(cache_path)
    if not is_complete(cache_path):
        raise PreprocessError(
            f"{cache_path} is not a complete cache (needs manifest.json, labels.npy and "
            "images.npy); run python preprocess.py to build it"
        )
    # here: importing it is 2 s of CPU that building the cache (the command line) never needs
    import torch

    manifest = json.loads((cache_path / "manifest.json").read_text())
    images = torch.from_numpy(np.load(cache_path / "images.npy"))
    labels = torch.from_numpy(np.load(cache_path / "labels.npy"))
    return images, labels, manifest["classes"]


def prepare_data(
    data_dir=".",
    source="auto",
    cache_dir="cache",
    size=64,
    rotations=DEFAULT_ROTATIONS,
    max_angle=DEFAULT_MAX_ANGLE,
    seed=0,
    workers=None,
    synthetic_images=2000,
    synthetic_classes=10,
    progress=True,
):
    """Build the cache if needed, then load it: (images, labels, cache_path)."""
    cache_path = build_cache(
        data_dir,
        source,
        cache_dir,
        size,
        rotations,
        max_angle,
        seed,
        workers,
        synthetic_images,
        synthetic_classes,
        progress,
    )
    images, labels, _ = load_cache(cache_path)
    return images, labels, cache_path


# ---------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, as the training scripts do, not the usage block
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser():
    parser = _Parser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring for the pipeline and the cache layout.",
    )
    for spec in dataclasses.fields(Config):
        flag = "--" + spec.name.replace("_", "-")
        extra = {key: value for key, value in spec.metadata.items() if key != "help"}
        if isinstance(spec.default, bool):
            parser.add_argument(
                flag,
                default=spec.default,
                action=argparse.BooleanOptionalAction,
                help=spec.metadata["help"],
            )
        else:
            extra.setdefault("type", type(spec.default))
            parser.add_argument(
                flag,
                default=spec.default,
                help=spec.metadata["help"] + " (default: %(default)s)",
                **extra,
            )
    return parser


def main(argv=None):
    config = Config(**vars(build_parser().parse_args(argv)))
    try:
        build_cache(**dataclasses.asdict(config))
    except PreprocessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
