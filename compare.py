"""Put finished GAN runs side by side: which variant is better, and why.

    python compare.py GAN_output WGAN_clip_output DCGAN_output --out-dir comparison

Nothing is retrained. Each run folder is what `gan_complete.py`, `wgan_clip.py`, `dcgan.py` or
`sngan.py` left behind (config.json, metrics.csv, run_info.json, generator.pkl, and snapshots/
when kept); the generator is loaded through the restricted loader of the script of its method
(config.json "variant", so a renamed copy of a script is read too), and every run draws its
samples from the same fixed noise (same seed), so the sample grids differ only by the model.
A folder of config.json and generator.pkl alone (pretrained/) is scored as well, without losses,
speed or budgets; where no run names its real images' cache (run_info.json's cache_path) and no
--cache is given, the cache of config.json's data settings is found or built from the photos
(--data-dir where they are now), never downloaded.

Outputs in --out-dir:
- comparison.png: one row per run: final samples, losses against step (raw, faint, and
  smoothed), and SWD and FD against epoch when the run kept generator snapshots (snapshot_every).
- comparison.md (also printed): a table of sizes, budgets and final quality, the per-level
  sliced Wasserstein distances, warnings, and a few sentences on which run is best and how far
  to trust that.
Both are written whole or not at all (a temporary file, then a rename).

Quality needs no download. Texture: the sliced Wasserstein distance (SWD) of Karras et al. 2018
("Progressive Growing of GANs", Appendix D) between generated images and the real images of
the preprocess cache the run trained on; it compares 7x7 patches. Global structure: the Frechet
distance (FD) and KID between generated and held-out real images in the features of a small CNN
trained to tell the cache's own classes apart, trained once per cache and kept beside it
(<cache>/classifier.pt). Not FID: another network, so not comparable with published FIDs. For
class-conditional runs the same CNN gives the class match (how often an image generated for class
c is recognised as c), a CNN trained on grey images the colour-blind class match (mostly shape
and shading: beside its ceiling, what grey-level histograms alone tell), and the images of each
class give per-class KID, within-class diversity and the most-confused classes. FID and
KID (Inception) are added when torchmetrics and its weights are installed; otherwise the table says
why they were skipped.

Bad input (a folder that is not a run, a missing cache, weights the loader refuses) stops the
whole comparison with a one-line `error: ...` and exit status 2 before anything is written:
a table that silently leaves a run out would answer a different question than the one asked.
"""

import argparse
import contextlib
import csv
import hashlib
import importlib
import io
import json
import math
import os
import pickle
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure  # the OO API: files only, no display, no global backend change
from matplotlib.ticker import MaxNLocator
from torchvision.transforms.functional import rgb_to_grayscale
from torchvision.utils import make_grid
from tqdm import tqdm

import machinery
import preprocess

# The method a run was trained with (config.json "variant") -> the training script whose
# Generator loads it: machinery.METHOD_SCRIPTS. Only these are imported: the name comes from a
# file, and importing whatever it says would run any module. By method, not by the script's file
# name: a renamed copy of sngan.py (a student's hw4_code.py) writes its own name as "script".
SCRIPT_OF_VARIANT = machinery.METHOD_SCRIPTS
# Enough to score a generator's samples (SWD, FD, class match): pretrained/ holds no more.
GENERATOR_FILES = ("config.json", "generator.pkl")
# What a training run writes beside them: its losses, speed, steps and budgets.
TRAINING_FILES = ("run_info.json", "metrics.csv")
# metrics.csv's columns of every method; each adds its own (its script's METRICS)
METRICS_COLUMNS = ("step", "epoch", "d_loss", "g_loss", "lr", "time")
SNAPSHOT_NAME = re.compile(r"generator_epoch_(\d+)\.pkl")  # snapshots/ of a run, see snapshot_every
RUN_INFO_KEYS = (
    "generator_params",
    "critic_params",
    "epochs_done",
    "epochs",
    "generator_steps",
    "wall_time_s",
    "images_per_s",
    "device",
)  # what the table shows

# Sliced Wasserstein distance, Karras et al. 2018, Appendix D and their reference code
# (progressive_growing_of_gans/metrics/sliced_wasserstein.py).
SWD_MIN_RESOLUTION = 16  # the pyramid stops at 16x16, as in the paper
SWD_PATCH = 7  # 7x7 neighbourhoods, 3 channels -> 147-dim descriptors
SWD_PATCHES_PER_IMAGE = 64  # descriptors drawn from each image at each level (paper: 128)
SWD_DIRECTIONS = 512  # random projection directions (the paper's 4 repeats x 128)
SWD_DIRECTIONS_PER_CHUNK = 128  # projected and sorted together, to bound memory
SWD_SCALE = 1e3  # the paper reports SWD x 10^3; so do we
GAUSSIAN_5TAP = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16  # Burt & Adelson pyramid kernel

# Diversity: mean pairwise L2 distance between generated images, relative to the same for
# real images, both downsampled so that the distance measures layout and colour rather than
# pixel noise. A healthy generator spreads about as widely as the data (ratio near 1); a
# collapsed one draws near-copies (ratio near 0). Below this ratio we flag mode collapse.
DIVERSITY_SIZE = 16  # px, the side the images are reduced to before measuring distances
DIVERSITY_MAX_IMAGES = 500  # pairwise distances grow quadratically; 500 gives 125k pairs
COLLAPSE_RATIO = 0.5
# A run with fewer generator steps has hardly started (3-4 epochs of the CPU preset): it is flagged
# as barely trained, and its low diversity is not called collapse.
TRAINED_STEPS = 500

# Noise. A lead smaller than NOISE_SIGMAS standard deviations of the difference between two
# scores is a tie. SWD's standard deviation at this sample size is estimated from real images
# (NOISE_SPLITS random half-splits of the two real samples: two equally good "runs"), FD's by
# resampling the generated images' features (FD_BOOTSTRAP times).
NOISE_SIGMAS = 2
NOISE_SPLITS = 8  # differences whose root mean square is the estimate: +-25% from 8 (1 / sqrt(16))
FD_BOOTSTRAP = 10

# Budgets (images seen, wall time, ...) that differ by more than this fraction of the
# largest make the comparison unfair: a run given twice the images is expected to look better.
BUDGET_TOLERANCE = 0.10
BUDGET_KEYS = {  # run_info key -> how the caveat names it
    "images_seen": "images seen",
    "wall_time_s": "wall time (s)",
    "epochs_done": "epochs",
    "img_size": "image size (px)",
}
SMOOTHING_POINTS = 50  # the smoothed loss curve averages over ~1/50 of the run
BATCH = 250  # images per generator, classifier or resize call: bounds memory at 1,000+ images

# Global structure (issue 16). SWD compares 7x7 patches: a run can grow petals and centres while
# its 64 px texture gets worse, at the same average SWD. The cache's own classifier compares whole
# images instead: FD and KID between the penultimate features (global average pooling of its last
# block) of generated and held-out real images. Trained on the cache itself: nothing to download.
CLASSIFIER_FILES = {
    False: "classifier.pt",
    True: "classifier_grey.pt",
}  # by grey: kept in the cache
CLASSIFIER_VERSION = 2  # bump when the network, its input, its split or its training changes
# px: the cache's own size up to this. At 32 px a flower class is mostly its colour; at 64 px the
# classifier sees the shape of the petals too.
CLASSIFIER_MAX_SIZE = 64
CLASSIFIER_WIDTHS = (16, 32, 64, 128, 256)  # channels of the conv blocks; the last: feature size
CLASSIFIER_STEPS = 900
CLASSIFIER_BATCH = 128
CLASSIFIER_LR = 2e-3  # peak of the one-cycle schedule
CLASSIFIER_SHIFT = 2  # px of random shift (with random horizontal flips) while training
CLASSIFIER_SMOOTHING = 0.1  # label smoothing: 102 classes of a few dozen images each overfit fast
CLASSIFIER_SEED = 0  # fixed, not --seed: one classifier per cache, whatever the comparison
HELD_OUT = 0.25  # of the source images (all their rotated copies) never trained on
KID_SUBSETS = 50  # random subsets of up to KID_SUBSET images each; KID is their mean
TOP_K = 5  # the class match also reports top-5 (102 classes: top-1 alone is harsh)
CONFUSED_PAIRS = 5  # the most frequent (asked, seen) class mistakes named per conditional run
# The colour-blind match is not blind to hue: a hue shows through as a brightness. Its baseline:
# nearest-centroid classes of grey-level histograms, which hold brightness and no shape at all.
BRIGHTNESS_BINS = 32  # grey levels per histogram (8 of the 256 in a bin)


class RunError(Exception):
    """Bad input (not a run, missing cache, refused weights): one line for the user."""


# ----------------------------------------------------------------------------- reading runs
@dataclass
class Run:
    folder: Path
    variant: str  # the method's name, e.g. "WGAN-GP"
    config: object  # the Config dataclass of its method's script
    trained: bool  # a training run; False: config.json and generator.pkl alone (pretrained/)
    info: dict  # run_info.json ({} when not trained)
    metrics: dict  # metrics.csv column -> np.ndarray (empty when not trained)
    generator: torch.nn.Module
    snapshots: list  # [(epoch, path)] of snapshots/generator_epoch_NNN.pkl, by epoch
    load: object  # path -> generator, through its method's script (raises RunError)
    conditional: bool  # the generator takes (z, labels): config "conditional"
    class_names: list  # config.json "data": the classes its labels index (None if not written)
    torn_row: bool  # metrics.csv ended in a partial row (a run still writing), left out


def read_csv_columns(path, columns):
    """A CSV of numbers as ({column: float array}, whether a torn last row was left out).

    "nan" and "inf" parse as themselves. A run appends whole lines, so a last row without its
    line end was caught mid-write and is left out; a bad row anywhere else is damage and refused.
    """
    with open(path, newline="") as handle:
        text = handle.read()
    reader = csv.DictReader(io.StringIO(text))
    missing = [name for name in columns if name not in (reader.fieldnames or ())]
    if missing:
        raise RunError(f"{path} lacks the column(s) {', '.join(missing)}")
    rows = list(reader)
    torn = bool(rows) and not text.endswith("\n")
    try:
        # a blank cell is a value the fp16 loss scaler's skipped update left undefined
        rows = [
            [float(row[name]) if row[name] != "" else math.nan for name in columns]
            for row in (rows[:-1] if torn else rows)
        ]
    except (TypeError, ValueError) as error:  # a short row gives None, a word gives ValueError
        raise RunError(f"{path} holds something that is not a number ({error})") from None
    return dict(zip(columns, np.array(rows, dtype=float).reshape(-1, len(columns)).T)), torn


def read_json(path):
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise RunError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} holds no JSON object")
    return data


def config_and_loader(folder, saved_config, device="cpu"):
    """(config, load) of a run: its Config from config.json, and load(path), the generator of a
    weights file (generator.pkl, a snapshot), raising RunError.

    The one place that decides which module reads a run: the training script of its method
    (SCRIPT_OF_VARIANT), whose Config and Generator machinery.read_config and load_generator
    use.
    """
    variant = saved_config.get("variant")
    if variant not in SCRIPT_OF_VARIANT:
        *others, last = SCRIPT_OF_VARIANT
        named = f"the method {variant!r}" if variant else 'no method ("variant")'
        raise RunError(
            f"{folder}/config.json names {named}; compare.py reads runs of {', '.join(others)} "
            f"and {last}"
        )
    script = SCRIPT_OF_VARIANT[variant]
    try:
        module = importlib.import_module(script)
    except ImportError as error:
        raise RunError(f"{folder} needs {script}.py, which cannot be imported ({error})") from None
    try:
        config = machinery.read_config(module, folder / "config.json")
    except machinery.ConfigError as error:  # the scripts' one-line refusal
        raise RunError(f"{folder}: {error}") from None

    def load(path):
        try:
            return machinery.load_generator(module, path, config, device, saved_config.get("data"))
        except (machinery.ConfigError, machinery.WeightsError) as error:
            raise RunError(f"{folder}: {error}") from None

    return config, load, module.METRICS


def load_run(folder, device="cpu"):
    """Read one run folder and load its generator through its method's script.

    config.json and generator.pkl are enough to score the generator's samples; a training run's
    run_info.json and metrics.csv add its losses, speed and budgets.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"{folder} is not a folder")
    missing = [name for name in GENERATOR_FILES if not (folder / name).is_file()]
    if missing:
        raise RunError(f"{folder} is not a run folder (no {', '.join(missing)})")
    present = [name for name in TRAINING_FILES if (folder / name).is_file()]
    # a training run writes metrics.csv as it starts, run_info.json just after its first weights
    if len(present) == 1:
        missing = [name for name in TRAINING_FILES if name not in present]
        raise RunError(f"{folder} has {present[0]} but no {missing[0]}: a damaged training run?")
    saved_config = read_json(folder / "config.json")
    config, load, method_metrics = config_and_loader(folder, saved_config, device)
    columns = [*METRICS_COLUMNS, *method_metrics[2:]]
    generator = load(folder / "generator.pkl")
    info = {}
    metrics = {name: np.zeros(0) for name in columns}  # no losses to plot
    torn_row = False
    if present:
        info = read_json(folder / "run_info.json")
        missing = [key for key in RUN_INFO_KEYS if key not in info]
        if missing:
            raise RunError(f"{folder}/run_info.json lacks {', '.join(missing)}")
        metrics, torn_row = read_csv_columns(folder / "metrics.csv", columns)
    snapshots = sorted(
        (int(match.group(1)), path)
        for path in (folder / "snapshots").glob("*.pkl")
        if (match := SNAPSHOT_NAME.fullmatch(path.name))
    )
    return Run(
        folder=folder,
        variant=saved_config["variant"],
        config=config,
        trained=bool(present),
        info=info,
        metrics=metrics,
        generator=generator,
        snapshots=snapshots,
        load=load,
        conditional=bool(getattr(config, "conditional", False)),
        class_names=saved_config.get("data", {}).get("class_names"),
        torn_row=torn_row,
    )


@dataclass
class Cache:
    path: Path
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N], indices into classes
    classes: list
    copies: int  # 1 + rotations: the packed order is each source image, then its rotated copies


def load_real_cache(cache_path):
    """The real images, labels and classes of a preprocess cache folder."""
    cache_path = Path(cache_path)
    if not cache_path.exists():
        raise RunError(
            f"real-image cache {cache_path} not found; pass --cache with the preprocess cache "
            "folder the runs trained on"
        )
    try:
        images, labels, classes = preprocess.load_cache(cache_path)
    except preprocess.PreprocessError as error:
        raise RunError(one_line(error)) from None
    copies = 1 + read_json(cache_path / "manifest.json").get("params", {}).get("rotations", 0)
    if len(images) % copies:
        raise RunError(
            f"{cache_path}: {len(images)} images are not whole groups of {copies} copies "
            "(manifest.json params.rotations)"
        )
    return Cache(cache_path, images, labels, list(classes), copies)


def cache_from_config(run, data_dir=None):
    """The preprocess cache that the run's config.json data settings make, built now if missing
    as its training script would, from the photos in data_dir (default: config.json's data_dir).

    Never downloads: a comparison needs no network, and a wrong folder should say so rather than
    fetch 330 MB of flowers into it.
    """
    config = run.config
    given = data_dir is not None
    data_dir = Path(data_dir or config.data_dir)
    missing = None
    if config.source != "synthetic" and not data_dir.is_dir():
        missing = f"{data_dir} does not exist"
    elif config.source == "auto" and not preprocess.layouts_in(data_dir):
        missing = f"{data_dir} holds no Oxford 102 Flowers (jpg/ and a label file)"
    elif config.source in preprocess.DATASETS:
        folder = data_dir / preprocess.DATASETS[config.source][1]
        if not folder.is_dir():
            missing = f"{folder} does not exist"
    if missing and given:
        raise RunError(
            f"--data-dir: {missing}; pass the folder of the photos {run.folder} trained on, or "
            "--cache with a preprocess cache folder"
        )
    if missing:
        why = "" if run.trained else f" ({run.folder} is not a training run)"
        raise RunError(
            f"no run names its real images' cache{why} and {missing}; pass --data-dir with the "
            "photos it trained on, or --cache with a preprocess cache folder"
        )
    try:
        # preprocess's lines go to stderr: stdout is the report
        with contextlib.redirect_stdout(sys.stderr):
            return preprocess.build_cache(
                data_dir,
                config.source,
                config.cache_dir,
                config.img_size,
                config.rotations,
                config.max_angle,
                config.data_seed,
                config.preprocess_workers or None,
                config.synthetic_images,
                config.synthetic_classes,
                progress=sys.stderr.isatty(),
            )
    except preprocess.PreprocessError as error:
        raise RunError(one_line(error)) from None


def real_cache_path(runs, cache=None, data_dir=None):
    """Where the real images are: --cache; else the cache the first run's config.json settings
    make from --data-dir's photos; else the cache a training run names (run_info.json); else the
    cache config.json's settings make as written (a folder without run_info.json names none)."""
    if cache:
        return Path(cache)
    named = [run.info["cache_path"] for run in runs if run.info.get("cache_path")]
    if named and not data_dir:
        return Path(named[0])
    return cache_from_config(runs[0], data_dir)


def resize_uint8(images, size):
    """Images at another resolution (the generator's, the classifier's), antialiased, in chunks."""
    if images.shape[-1] == size:
        return images
    return torch.cat(
        [
            F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True)
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
            for chunk in images.split(BATCH)
        ]
    )


def to_uint8(images):
    """Generator output in [-1, 1] -> uint8 in [0, 255], exactly as a saved PNG would hold it."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@torch.inference_mode()
def generate(generator, z, labels=None):
    """uint8 images from noise z; a conditional generator also gets the classes (long [N])."""
    device = next(generator.parameters()).device
    batches = zip(*(inputs.split(BATCH) for inputs in ((z,) if labels is None else (z, labels))))
    return torch.cat(
        [
            to_uint8(generator(*(inputs.to(device) for inputs in batch)).float().cpu())
            for batch in batches
        ]
    )


# -------------------------------------------------------------- sliced Wasserstein distance
def laplacian_pyramid(images, min_resolution=SWD_MIN_RESOLUTION):
    """Levels from full resolution down to min_resolution (float [N, 3, h, w] each).

    Each level but the last holds the detail lost by halving the resolution (image minus its
    blurred, downsampled and re-upsampled self); the last is the small blurred image itself.
    """
    kernel = torch.outer(GAUSSIAN_5TAP, GAUSSIAN_5TAP).to(images)
    kernel = kernel.expand(images.shape[1], 1, 5, 5)  # one filter per channel (depthwise)
    levels = []
    current = images
    while current.shape[-1] > min_resolution and current.shape[-1] % 2 == 0:
        blurred = F.conv2d(
            F.pad(current, (2, 2, 2, 2), mode="reflect"), kernel, groups=images.shape[1]
        )
        smaller = blurred[..., ::2, ::2]
        levels.append(current - F.interpolate(smaller, scale_factor=2, mode="bilinear"))
        current = smaller
    levels.append(current)
    return levels


def patch_descriptors(level, corners, patch=SWD_PATCH):
    """The patch x patch neighbourhoods whose top-left corners are given, normalised.

    corners: long [N, k], flat indices y * w + x into each image. Gathering the pixels
    directly is F.unfold restricted to the sampled patches: unfold would first build all
    ~3,400 patches of every 64 px image to keep 128 of them.
    """
    n, channels, _, width = level.shape
    offsets = (torch.arange(patch)[:, None] * width + torch.arange(patch)).flatten()
    index = (corners[..., None] + offsets).flatten(1).to(level.device)  # [N, k * patch^2]
    pixels = level.flatten(2).gather(2, index[:, None, :].expand(-1, channels, -1))
    # -> one descriptor per (image, patch): [N * k, channels, patch^2]
    descriptors = pixels.view(n, channels, -1, patch * patch).transpose(1, 2).flatten(0, 1)
    # Per-channel normalisation over the whole descriptor set, as in the paper's code: the
    # distance then compares the shapes of the patch distributions, not their overall scale.
    mean = descriptors.mean(dim=(0, 2), keepdim=True)
    std = descriptors.std(dim=(0, 2), keepdim=True).clamp_min(1e-8)
    return ((descriptors - mean) / std).flatten(1)


def sliced_distance(a, b, directions, random):
    """Mean over random unit directions of the 1-D Wasserstein-1 distance between projections.

    In 1-D the optimal transport pairs the i-th smallest of one set with the i-th smallest of
    the other, so W1 is the mean |sorted(a) - sorted(b)|.
    """
    distances = []
    for count in [SWD_DIRECTIONS_PER_CHUNK] * (directions // SWD_DIRECTIONS_PER_CHUNK):
        direction = torch.randn(a.shape[1], count, generator=random).to(a)
        direction /= direction.norm(dim=0, keepdim=True)
        # Sorting along the last dimension of a contiguous [count, M] tensor is the fast way.
        projected_a = (a @ direction).T.contiguous().sort(dim=1).values
        projected_b = (b @ direction).T.contiguous().sort(dim=1).values
        distances.append((projected_a - projected_b).abs().mean())
    return torch.stack(distances).mean().item()


def sliced_wasserstein(
    real_uint8,
    fake_uint8,
    seed=0,
    patches_per_image=SWD_PATCHES_PER_IMAGE,
    directions=SWD_DIRECTIONS,
    min_resolution=SWD_MIN_RESOLUTION,
):
    """Sliced Wasserstein distance of Karras et al. 2018 between two image sets, x 10^3.

    real_uint8, fake_uint8: uint8 [N, 3, H, W] with the same N, H and W (1-D optimal transport
    by sorting pairs equally many samples). Float tensors are taken to be in [-1, 1], the range
    of a generator's output; pass `to_uint8(images)` for exactly what a saved PNG holds.

    Per level of a Laplacian pyramid (H, H/2, ... down to min_resolution px), draw
    patches_per_image random 7x7 neighbourhoods from every image (the same positions in both
    sets: positions do not depend on the images, and shared positions lower the variance and
    make identical sets score exactly 0), normalise each set's descriptors per channel,
    project on `directions` random unit vectors and average the 1-D Wasserstein distances.

    Returns {"<res>px": distance for each level, ..., "avg": mean over levels}, all x 10^3
    (the paper's unit). Deterministic for a given seed.
    """
    if real_uint8.shape != fake_uint8.shape:
        raise ValueError(
            f"image sets differ in shape: {tuple(real_uint8.shape)} vs {tuple(fake_uint8.shape)}"
        )
    if directions % SWD_DIRECTIONS_PER_CHUNK:
        raise ValueError(f"directions must be a multiple of {SWD_DIRECTIONS_PER_CHUNK}")
    random = torch.Generator().manual_seed(seed)
    pyramids = [
        laplacian_pyramid(
            images.float() if images.dtype == torch.uint8 else (images.float() + 1) * 127.5,
            min_resolution,
        )
        for images in (real_uint8, fake_uint8)
    ]
    result = {}
    for real_level, fake_level in zip(*pyramids):
        n, _, height, width = real_level.shape
        ys = torch.randint(0, height - SWD_PATCH + 1, (n, patches_per_image), generator=random)
        xs = torch.randint(0, width - SWD_PATCH + 1, (n, patches_per_image), generator=random)
        corners = ys * width + xs
        distance = sliced_distance(
            patch_descriptors(real_level, corners),
            patch_descriptors(fake_level, corners),
            directions,
            random,
        )
        result[f"{height}px"] = distance * SWD_SCALE
    result["avg"] = sum(result.values()) / len(result)
    return result


# ------------------------------------------------------------------ FID / KID (optional)
KID_SUBSET = 1000  # torchmetrics' default subset size, capped by the number of images
INCEPTION_BATCH = 100  # images per Inception forward pass


class InceptionMetrics:
    """FID and KID from torchmetrics against one fixed real set, when it and its weights exist.

    An optional extra: without torchmetrics (or torch-fidelity, or the Inception weights, which
    it would have to download) `skipped` holds the reason and the table prints it.
    """

    def __init__(self, real_uint8, device="cpu", enabled=True):
        self.skipped = None if enabled else "skipped: --no-fid given"
        if not enabled:
            return
        try:
            from torchmetrics.image.fid import FrechetInceptionDistance
            from torchmetrics.image.kid import KernelInceptionDistance

            # reset_real_features=False: the real statistics are computed once for all runs.
            self.fid = FrechetInceptionDistance(feature=2048, reset_real_features=False).to(device)
            subset = min(KID_SUBSET, len(real_uint8))
            self.kid = KernelInceptionDistance(subset_size=subset, reset_real_features=False).to(
                device
            )
        except (ImportError, OSError, RuntimeError) as error:
            self.skipped = f"skipped: {type(error).__name__}: {one_line(error)}"
            return
        self.update(real_uint8, real=True)

    def update(self, images, real):
        for chunk in images.split(INCEPTION_BATCH):
            chunk = chunk.to(self.fid.device)
            self.fid.update(chunk, real=real)
            self.kid.update(chunk, real=real)

    def __call__(self, fake_uint8):
        """ "FID / KID mean" of the fake images, or the reason they were skipped."""
        if self.skipped:
            return self.skipped
        self.update(fake_uint8, real=False)
        fid, (kid, _kid_std) = self.fid.compute().item(), self.kid.compute()
        self.fid.reset()  # forgets the fake features only
        self.kid.reset()
        return f"{fid:.2f} / {kid.item():.4f}"


# ------------------------------------------------------- global structure: the cache's own CNN
def structure_network(channels, num_classes):
    """network[0]: conv-BN-ReLU-maxpool blocks and global average pooling (the features);
    network[1]: a linear layer from the features to the classes."""
    layers, width_in = [], channels
    for width in CLASSIFIER_WIDTHS:
        layers += [
            torch.nn.Conv2d(width_in, width, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(width),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2, ceil_mode=True),  # a 1 px map stays 1 px: small images pass
        ]
        width_in = width
    features = torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    return torch.nn.Sequential(features, torch.nn.Linear(width_in, num_classes))


def classifier_view(images_uint8, size, grey):
    """What a classifier sees: the images at its size, and in grey (luma) for a grey one."""
    images = resize_uint8(images_uint8, size)
    return rgb_to_grayscale(images) if grey and images.shape[1] == 3 else images


def held_out_split(cache):
    """(training, held-out, half A, half B) image indices, split by source image.

    All copies of a source image fall on one side: a rotated copy of a training image among the
    held-out ones would inflate the accuracy. A and B split the held-out source images in two and
    take one random copy of each: disjoint real samples for the reference and the floor.
    """
    random = torch.Generator().manual_seed(CLASSIFIER_SEED)
    sources = torch.randperm(len(cache.images) // cache.copies, generator=random)
    count = round(HELD_OUT * len(sources))
    held, trained = sources[:count], sources[count:]
    every_copy = torch.arange(cache.copies)
    one_copy = held * cache.copies + torch.randint(cache.copies, (count,), generator=random)
    return (
        (trained[:, None] * cache.copies + every_copy).flatten(),
        (held[:, None] * cache.copies + every_copy).flatten(),
        one_copy[: count // 2],
        one_copy[count // 2 :],
    )


def shift_and_flip(images, random):
    """Per image: a random horizontal flip and a random shift of up to CLASSIFIER_SHIFT whole
    pixels."""
    n, size = len(images), images.shape[-1]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.where(torch.rand(n, generator=random) < 0.5, -1.0, 1.0)
    theta[:, 1, 1] = 1
    theta[:, :, 2] = (
        torch.randint(-CLASSIFIER_SHIFT, CLASSIFIER_SHIFT + 1, (n, 2), generator=random) * 2 / size
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(
        images, grid, mode="nearest", padding_mode="reflection", align_corners=False
    )


def as_input(images_uint8):
    return images_uint8.float() / 127.5 - 1


def train_classifier(images, labels, num_classes, device):
    """A structure_network fitted to images (uint8, as the classifier sees them): Adam, one-cycle
    LR."""
    # a fixed initialisation that leaves the global RNG alone
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(CLASSIFIER_SEED)
        network = structure_network(images.shape[1], num_classes).to(device)
    random = torch.Generator().manual_seed(CLASSIFIER_SEED)
    optimiser = torch.optim.Adam(network.parameters(), lr=CLASSIFIER_LR)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, CLASSIFIER_LR, total_steps=CLASSIFIER_STEPS
    )
    for _ in tqdm(range(CLASSIFIER_STEPS), desc="cache classifier", disable=None):
        batch = torch.randint(len(images), (CLASSIFIER_BATCH,), generator=random)
        logits = network(shift_and_flip(as_input(images[batch]), random).to(device))
        loss = F.cross_entropy(
            logits, labels[batch].to(device), label_smoothing=CLASSIFIER_SMOOTHING
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
    return network.eval()


@dataclass
class Classifier:
    """A structure_network, what it sees and how well it knows held-out real images."""

    network: torch.nn.Sequential
    size: int  # px: every image is resized to this first
    grey: bool  # sees luma only: colour cannot tell it the class
    info: dict  # CLASSIFIER_INFO: accuracy on held-out real images, training time and images
    path: Path  # where it is kept

    @torch.inference_mode()
    def __call__(self, images_uint8):
        """(penultimate features as float64, logits) of uint8 images of any size."""
        device = next(self.network.parameters()).device
        features, logits = [], []
        for chunk in images_uint8.split(BATCH):
            seen = as_input(classifier_view(chunk, self.size, self.grey)).to(device)
            feature = self.network[0](seen)
            features.append(feature.double().cpu())
            logits.append(self.network[1](feature).float().cpu())
        return torch.cat(features), torch.cat(logits)


def top_k_accuracy(logits, labels, k):
    return (
        (logits.topk(min(k, logits.shape[1])).indices == labels[:, None])
        .any(dim=1)
        .float()
        .mean()
        .item()
    )


def frechet_distance(a, b):
    """|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between two feature sets, in float64.

    Tr (S_a S_b)^1/2 = Tr (S_a^1/2 S_b S_a^1/2)^1/2, and the latter matrix is symmetric: two
    symmetric eigen-decompositions instead of a general matrix square root.
    """
    a, b = a.double(), b.double()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors * values.clamp_min(0).sqrt() @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return (
        (a.mean(0) - b.mean(0)).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    ).item()


def kernel_distance(a, b, seed, subsets=KID_SUBSETS):
    """KID (Binkowski et al. 2018): the unbiased MMD^2 with the kernel (x.y / d + 1)^3,
    averaged over random subsets of up to KID_SUBSET images of each set."""
    a, b = a.double(), b.double()
    size = min(KID_SUBSET, len(a), len(b))
    random = torch.Generator().manual_seed(seed)
    estimates = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=random)[:size]]
        y = b[torch.randperm(len(b), generator=random)[:size]]
        k_xx, k_yy, k_xy = ((p @ q.T / a.shape[1] + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        within = (k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace()) / (size * (size - 1))
        estimates.append(within - 2 * k_xy.mean())
    return torch.stack(estimates).mean().item()


def cache_fingerprint(cache, grey):
    """What a classifier was trained on: the images, labels and copy grouping, hashed, and how it
    sees them."""
    digest = hashlib.sha256(cache.images.contiguous().numpy())
    digest.update(cache.labels.contiguous().numpy())
    digest.update(f"{cache.copies} {CLASSIFIER_VERSION} grey={grey}".encode())
    return digest.hexdigest()


CLASSIFIER_INFO = ("top1", "top5", "train_seconds", "train_images", "held_out_images")


def read_classifier(path, fingerprint):
    """(network, info) from a classifier file made for this cache, else (None, why not)."""
    if not path.is_file():
        return None, f"none kept in {path}"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint:
            return None, f"{path} was made for other images or another version"
        network = structure_network(saved["channels"], saved["num_classes"])
        network.load_state_dict(saved["state_dict"])
        return network.eval(), {key: saved[key] for key in CLASSIFIER_INFO}
    except (
        OSError,
        EOFError,
        RuntimeError,
        ValueError,
        KeyError,
        TypeError,
        pickle.UnpicklingError,
    ) as error:
        return None, f"{path} is unreadable ({type(error).__name__})"


def cache_classifier(cache, device, grey=False):
    """The cache's Classifier (a grey one: colour-blind): from its file in the cache folder, or
    trained now and kept there."""
    path = cache.path / CLASSIFIER_FILES[grey]
    size = min(cache.images.shape[-1], CLASSIFIER_MAX_SIZE)
    fingerprint = cache_fingerprint(cache, grey)
    network, info = read_classifier(path, fingerprint)
    if network is not None:
        return Classifier(network.to(device), size, grey, info, path)
    print(
        f"training the cache's {'grey ' if grey else ''}classifier ({info}): {CLASSIFIER_STEPS} "
        f"steps, about 3 minutes on a 2-core CPU, once: it is kept in {path} for later "
        "comparisons",
        file=sys.stderr,
    )
    start = time.time()
    trained, held_out, _, _ = held_out_split(cache)
    seen = classifier_view(cache.images[trained], size, grey)
    network = train_classifier(seen, cache.labels[trained], len(cache.classes), device)
    classifier = Classifier(network, size, grey, {}, path)
    _, logits = classifier(cache.images[held_out])
    labels = cache.labels[held_out]
    classifier.info = {
        "top1": top_k_accuracy(logits, labels, 1),
        "top5": top_k_accuracy(logits, labels, TOP_K),
        "train_seconds": time.time() - start,
        "train_images": len(trained),
        "held_out_images": len(held_out),
    }
    saved = {
        "fingerprint": fingerprint,
        "channels": seen.shape[1],
        "num_classes": len(cache.classes),
        "state_dict": {key: value.cpu() for key, value in network.state_dict().items()},
        **classifier.info,
    }
    try:
        preprocess.write_atomically(path, lambda file: torch.save(saved, file))
    # a read-only cache: the numbers stand, the next comparison trains again
    except OSError as error:
        print(f"note: cannot keep the classifier in {path} ({one_line(error)})", file=sys.stderr)
    return classifier


def grey_histograms(images_uint8, size):
    """float [N, BRIGHTNESS_BINS]: each image's share of pixels at each grey level, as the grey
    classifier sees it (its size, luma)."""
    histograms = []
    for chunk in images_uint8.split(BATCH):
        bins = classifier_view(chunk, size, grey=True).flatten(1).long() * BRIGHTNESS_BINS // 256
        counts = torch.zeros(len(chunk), BRIGHTNESS_BINS).scatter_add_(
            1, bins, torch.ones(bins.shape)
        )
        histograms.append(counts / bins.shape[1])
    return torch.cat(histograms)


def brightness_accuracy(cache, size):
    """Top-1 accuracy on the held-out real images of a nearest-centroid classifier of grey-level
    histograms fitted to the training split (held_out_split): what brightness alone, with no shape,
    tells of the class. Beside the grey CNN's accuracy it says how much of that is shape."""
    trained, held_out, _, _ = held_out_split(cache)
    features = grey_histograms(cache.images[trained], size)
    labels = cache.labels[trained].long()
    num_classes = len(cache.classes)
    sums = torch.zeros(num_classes, BRIGHTNESS_BINS).index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes)
    centroids = sums / counts.clamp_min(1)[:, None]
    distances = torch.cdist(grey_histograms(cache.images[held_out], size), centroids)
    distances[:, counts == 0] = math.inf  # a class with no training image is never the nearest
    return top_k_accuracy(-distances, cache.labels[held_out].long(), 1)


class StructureMeasure:
    """FD and KID between generated and held-out real images in the cache classifier's features.
    `skipped` holds the reason when there is none."""

    def __init__(self, cache, num_images, seed, device="cpu", enabled=True):
        self.seed, self.num_classes = seed, len(cache.classes)
        self.skipped = None if enabled else "skipped: --no-structure given"
        if enabled and self.num_classes < 2:
            self.skipped = (
                "skipped: the cache has one class (a flat folder?), so there are no classes for "
                "a classifier to learn and no features to compare"
            )
        elif enabled and len(cache.images) // cache.copies < 8:
            self.skipped = "skipped: fewer than 8 source images in the cache"
        if self.skipped:
            return
        self.classifier = cache_classifier(cache, device)
        _, _, half_a, half_b = held_out_split(cache)
        count = min(num_images, len(half_a), len(half_b))
        self.reference = self.classifier(cache.images[half_a[:count]])[0]
        self.floor = self(cache.images[half_b[:count]])

    def __call__(self, images_uint8, kid=True):
        """{"fd", and "fd_std", "kid" unless kid=False}, or None if skipped.

        FD and KID use as many images as the reference has, so that they sit on the floor's footing.
        """
        if self.skipped:
            return None
        features = self.classifier(images_uint8)[0][: len(self.reference)]
        result = {"fd": frechet_distance(self.reference, features)}
        if kid:  # the final generator's: how far FD moves with another sample of its images
            resample = torch.Generator().manual_seed(self.seed)
            picks = [
                torch.randint(len(features), (len(features),), generator=resample)
                for _ in range(FD_BOOTSTRAP)
            ]
            spread = [frechet_distance(self.reference, features[pick]) for pick in picks]
            result["fd_std"] = float(np.std(spread))
            result["kid"] = kernel_distance(self.reference, features, self.seed)
        return result


class ClassMeasure:
    """How well a conditional generator draws the class it is asked for, each figure beside what
    held-out real images score:

    - class match: how often the classifier recognises an image drawn for class c as c, over
      images spread evenly over the classes; and the grey classifier's (colour-blind: mostly
      shape and shading, as a hue still shows through as a brightness). Their ceilings: their
      accuracy on held-out real images; beside the grey one, what brightness alone tells of them
      (brightness_accuracy).
    - per-class KID: KID between the images drawn for a class and held-out real images of that
      class, in the classifier's features, averaged over the classes; the floor is two disjoint
      halves of the held-out real images.
    - within-class diversity: mean pairwise distance (as diversity()) among a class's images,
      generated over real, summed over the classes: 0 for one image per class, 1 for as varied as
      the real classes.
    - the most-confused pairs: the class asked for and the class seen instead, most often.
    """

    def __init__(self, cache, structure, num_images, seed, device="cpu"):
        self.colour, self.seed, self.classes = structure.classifier, seed, cache.classes
        grey_already = cache.images.shape[1] == 1
        self.grey = self.colour if grey_already else cache_classifier(cache, device, grey=True)
        self.brightness = brightness_accuracy(cache, self.grey.size)  # top-1 on held-out images
        self.uniform = torch.arange(num_images) % len(cache.classes)
        _, _, half_a, half_b = held_out_split(cache)
        self.real = self.by_class(cache.images[half_a], cache.labels[half_a].long())
        # drawn for the classes of the other half, each as often: the floor's footing
        self.asked = cache.labels[half_b].long()
        self.floor = self.per_class(cache.images[half_b])

    def by_class(self, images, labels):
        """{class: (features, mean pairwise distance)} of the classes with 2 or more images."""
        features = self.colour(images)[0]
        return {
            int(c): (features[labels == c], mean_pairwise_distance(images[labels == c]))
            for c in labels.unique()
            if (labels == c).sum() >= 2
        }

    def per_class(self, images):
        """{"class_kid", "within_diversity"} of images of the classes self.asked."""
        drawn = self.by_class(images, self.asked)
        shared = sorted(drawn.keys() & self.real.keys())
        kid = [kernel_distance(self.real[c][0], drawn[c][0], self.seed, subsets=1) for c in shared]
        spread = sum(drawn[c][1] for c in shared) / max(sum(self.real[c][1] for c in shared), 1e-12)
        return {"class_kid": float(np.mean(kid)), "within_diversity": spread}

    def confused(self, seen):
        """[(asked, seen, count, of)]: the CONFUSED_PAIRS most frequent mistakes on the uniform
        set, by class name."""
        n = len(self.classes)
        counts = torch.bincount(self.uniform * n + seen, minlength=n * n).view(n, n)
        counts.fill_diagonal_(0)
        totals = torch.bincount(self.uniform, minlength=n).tolist()
        # the most frequent first; among equals, in class order
        mistakes = sorted((-count, i) for i, count in enumerate(counts.flatten().tolist()) if count)
        return [
            (self.classes[i // n], self.classes[i % n], -count, totals[i // n])
            for count, i in mistakes[:CONFUSED_PAIRS]
        ]

    def __call__(self, generator, z_dim):
        """The measures of one generator: {"top1", "top5", "grey_top1", "grey_top5",
        "class_kid", "within_diversity", "confused"}."""
        z = torch.randn(
            len(self.uniform), z_dim, generator=torch.Generator().manual_seed(self.seed)
        )
        drawn = generate(generator, z, self.uniform)
        logits, grey_logits = self.colour(drawn)[1], self.grey(drawn)[1]
        z = torch.randn(len(self.asked), z_dim, generator=torch.Generator().manual_seed(~self.seed))
        return {
            "top1": top_k_accuracy(logits, self.uniform, 1),
            "top5": top_k_accuracy(logits, self.uniform, TOP_K),
            "grey_top1": top_k_accuracy(grey_logits, self.uniform, 1),
            "grey_top5": top_k_accuracy(grey_logits, self.uniform, TOP_K),
            **self.per_class(generate(generator, z, self.asked)),
            "confused": self.confused(logits.argmax(1)),
        }


def check_device(name):
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RunError(f"unknown --device {name!r}; use cpu, cuda or cuda:N, mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"--device {name}: CUDA is not available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise RunError(
            f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 to "
            f"cuda:{torch.cuda.device_count() - 1}"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RunError(f"--device {name}: MPS is not available here; use --device cpu")


def check_writable(folder):
    """An unwritable --out-dir is reported before minutes of scoring, not after; nothing is made
    yet."""
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(
            f"cannot write to --out-dir {folder} ({existing} is not a writable folder); "
            "pass another folder"
        )


def one_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


# ------------------------------------------------------------------------------- diversity
def mean_pairwise_distance(images_uint8):
    small = F.interpolate(
        images_uint8[:DIVERSITY_MAX_IMAGES].float() / 255,
        size=DIVERSITY_SIZE,
        mode="bilinear",
        antialias=True,
    )
    return torch.pdist(small.flatten(1)).mean().item()


def diversity(fake_uint8, real_uint8):
    """Spread of the generated images relative to the real ones (1 = as varied as the data).

    Mean pairwise L2 distance between images downsampled to DIVERSITY_SIZE px, generated over
    real. Below COLLAPSE_RATIO the generator is flagged as mode-collapsed.
    """
    return mean_pairwise_distance(fake_uint8) / max(mean_pairwise_distance(real_uint8), 1e-12)


# ------------------------------------------------------------------------------- scoring
@dataclass
class Score:
    samples: torch.Tensor  # uint8 [n, C, s, s], all from the shared fixed noise (and labels)
    swd: dict  # sliced_wasserstein() of the samples against the real images, x 10^3
    structure: dict  # StructureMeasure(): "fd", "fd_std", "kid"; None if skipped
    classes: dict  # ClassMeasure() of a conditional run; None if unconditional or skipped
    inception: str  # "FID / KID" as numbers, or "skipped: <reason>"
    diversity: float
    curve: list  # [(epoch, average SWD, FD or None)]: the snapshots, then the final generator
    unreadable: list  # snapshot files the loader refused, left out of the curve


def quality_curve(run, final, measure, enabled):
    """SWD and FD of every snapshot the run kept, then of its final generator: quality against
    epoch.

    A snapshot the loader refuses (truncated, tampered with) is left out and named, not fatal:
    the final generator, which the comparison is about, has been loaded already. A generator
    that is not a training run has no epochs: its one point is at epoch None.
    """
    if not run.trained:
        return [(None, final[0]["avg"], final[1] and final[1]["fd"])], []
    points, unreadable = [], []
    for epoch, path in run.snapshots if enabled else []:
        if epoch >= run.info["epochs_done"]:  # the same weights as generator.pkl (or a stray file)
            continue
        try:
            generator = run.load(path)
        except RunError:
            unreadable.append(path.name)
            continue
        points.append((epoch, *measure(generator, final=False)[1:]))
    points.append((run.info["epochs_done"], *final))
    return [
        (epoch, swd["avg"], quality and quality["fd"]) for epoch, swd, quality in points
    ], unreadable


def real_samples(cache, num_images, seed):
    """(real, reference, the classes of real): two disjoint random samples of the cache's images."""
    order = torch.randperm(len(cache.images), generator=torch.Generator().manual_seed(seed))
    chosen, other = order[:num_images], order[num_images : 2 * num_images]
    return cache.images[chosen], cache.images[other], cache.labels[chosen].long()


def swd_noise(real, reference, seed):
    """The standard deviation of one average SWD at this sample size, estimated from two equally
    good image sets.

    Each random half-split of real and reference gives two SWDs of disjoint halves, whose
    difference d is noise alone, with mean 0: the root mean square of d over NOISE_SPLITS splits
    estimates its standard deviation (the mean |d| would be sqrt(2 / pi) = 0.80 of it for normal
    noise). A difference of two independent half-size scores has sqrt(2) times the standard
    deviation of one, and halving the images multiplies that by about sqrt(2) again (the SWD of
    two samples, its mean and its spread, falls as 1 / sqrt(images), as a 1-D Wasserstein distance
    between two empirical distributions does): the estimate is rms(d) / 2.
    """
    half = len(real) // 2
    differences = []
    for split in range(NOISE_SPLITS):
        order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed + split))
        first, second = order[:half], order[half : 2 * half]
        scores = [
            sliced_wasserstein(real[part], reference[other], seed)["avg"]
            for part, other in ((first, second), (second, first))
        ]
        differences.append(scores[0] - scores[1])
    return float(np.sqrt(np.mean(np.square(differences)))) / 2


def score_runs(
    runs,
    real,
    reference,
    real_labels,
    num_images,
    seed,
    inception,
    structure,
    *,
    classes=None,
    snapshots=True,
):
    """Score every run on the same real images; also the real-vs-real SWD floor per size.

    With snapshots, each run's snapshots are scored too, on the same noise and real images.
    A conditional run draws the classes of the real images it is compared with (real_labels), so
    that SWD, FD and KID compare like with like (Flowers has 40 to 258 images per class); classes
    (a ClassMeasure, None when skipped) measures how well it draws each class.

    real and reference are disjoint real samples of num_images each: SWD between them is what a
    perfect generator would score at this sample size.
    """
    scores, floors = [], {}
    for run in tqdm(runs, desc="scoring", disable=None):
        size = run.config.img_size
        real_at_size = resize_uint8(real, size)
        if size not in floors:
            reference_at_size = resize_uint8(reference, size)
            floors[size] = sliced_wasserstein(real_at_size, reference_at_size, seed)
            floors[size]["noise"] = swd_noise(real_at_size, reference_at_size, seed)
        z = torch.randn(num_images, run.config.z_dim, generator=torch.Generator().manual_seed(seed))
        labels = real_labels if run.conditional else None

        def measure(generator, final=True):
            samples = generate(generator, z, labels)
            quality = structure(samples, kid=final)
            return samples, sliced_wasserstein(real_at_size, samples, seed), quality

        samples, swd, quality = measure(run.generator)
        curve, unreadable = quality_curve(run, (swd, quality), measure, snapshots)
        scores.append(
            Score(
                samples=samples,
                swd=swd,
                structure=quality,
                classes=classes(run.generator, run.config.z_dim)
                if classes and run.conditional
                else None,
                inception=inception(samples),
                diversity=diversity(samples, real_at_size),
                curve=curve,
                unreadable=unreadable,
            )
        )
    return scores, floors


# ------------------------------------------------------------------------------- warnings
def run_warnings(run, score):
    """What makes one run's numbers suspect, in words."""
    if not run.trained:  # no losses, steps or epochs to judge: its samples alone
        return (
            [f"mode collapse: diversity {score.diversity:.2f} < {COLLAPSE_RATIO}"]
            if score.diversity < COLLAPSE_RATIO
            else []
        )
    warnings = []
    method = [name for name in run.metrics if name not in ("step", "epoch", "lr", "time")]
    losses = np.stack([run.metrics[name] for name in method])
    if losses.size == 0:
        warnings.append("metrics.csv has no rows")
    else:
        bad_rows = ~np.isfinite(losses).all(axis=0)
        if bad_rows.any():
            first = int(run.metrics["step"][bad_rows.argmax()])
            warnings.append(
                f"non-finite losses in {bad_rows.sum()} of {bad_rows.size} steps (first at step "
                f"{first})"
            )
    steps = run.info.get("generator_steps", 0)
    if score.diversity < COLLAPSE_RATIO and steps < TRAINED_STEPS:
        warnings.append(
            f"barely trained ({steps} generator steps): its low diversity ({score.diversity:.2f}) "
            "says it has not learned yet, not that it collapsed"
        )
    elif steps < TRAINED_STEPS:  # varied samples of a generator that has hardly started
        warnings.append(
            f"barely trained ({steps} generator steps, under {TRAINED_STEPS}): its scores say "
            "little yet"
        )
    elif score.diversity < COLLAPSE_RATIO:
        warnings.append(f"mode collapse: diversity {score.diversity:.2f} < {COLLAPSE_RATIO}")
    if not run.info.get("finished", False):
        warnings.append(f"unfinished: {run.info['epochs_done']} of {run.info['epochs']} epochs")
    if score.unreadable:
        warnings.append(
            f"unreadable snapshot(s) left out of the SWD curve: {', '.join(score.unreadable)}"
        )
    if run.torn_row:
        warnings.append("metrics.csv ends in a partial row (a run still writing?), left out")
    return warnings


def budget_caveats(runs):
    """Budgets that differ by more than BUDGET_TOLERANCE between runs: an unfair comparison."""
    caveats = []
    for key, label in BUDGET_KEYS.items():
        values = [run.info.get(key) for run in runs]
        if not values or not all(isinstance(value, (int, float)) for value in values):
            continue
        largest = max(values)
        if largest > 0 and (largest - min(values)) / largest > BUDGET_TOLERANCE:
            listed = ", ".join(f"{run.folder.name} {value:,}" for run, value in zip(runs, values))
            caveats.append(f"{label} differ by more than {BUDGET_TOLERANCE:.0%}: {listed}")
    return caveats


# ------------------------------------------------------------------------------- the report
LEVEL_MEANING = {
    "finest": "fine detail and texture",
    "middle": "mid-scale shapes",
    "coarsest": "layout and colour",
}
FD_NAME = "FD (cache CNN)"  # never "FID": another network, another scale


def level_cell(swd, level):
    return f"{swd[level]:.2f}" if level in swd else "-"


def best_in_bold(values):
    """Two-decimal cells of one column, the lowest in bold when there are runs to compare."""
    present = [value for value in values if value is not None]
    best = min(present) if len(present) > 1 else None
    return [
        "-" if value is None else f"**{value:.2f}**" if value == best else f"{value:.2f}"
        for value in values
    ]


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def level_meaning(levels, level):
    if level == levels[0]:
        return LEVEL_MEANING["finest"]
    return LEVEL_MEANING["coarsest"] if level == levels[-1] else LEVEL_MEANING["middle"]


def fd_of(score):
    return score.structure["fd"] if score.structure else None


def ties(runs, scores, by_swd, by_fd, noise):
    """The verdict's first sentence when the two leading runs are within the measures' noise on
    SWD (and on FD where there is one), else None. noise: one SWD's standard deviation."""
    if len(runs) < 2:
        return None
    first, second = by_swd[:2]
    swd_gap = scores[second].swd["avg"] - scores[first].swd["avg"]
    swd_margin = NOISE_SIGMAS * math.sqrt(2) * noise
    if swd_gap >= swd_margin:
        return None
    text = (
        f"No run leads beyond the measures' noise: on SWD {runs[first].variant} "
        f"(`{runs[first].folder.name}`) scores {scores[first].swd['avg']:.2f} and "
        f"{runs[second].variant} (`{runs[second].folder.name}`) {scores[second].swd['avg']:.2f} "
        f"x10^3, {swd_gap:.2f} apart where noise alone reaches {swd_margin:.2f}"
    )
    if by_fd:
        fd_first, fd_second = (scores[index].structure for index in by_fd[:2])
        fd_gap = fd_second["fd"] - fd_first["fd"]
        fd_margin = NOISE_SIGMAS * math.hypot(fd_first.get("fd_std", 0), fd_second.get("fd_std", 0))
        if fd_gap >= fd_margin:
            leader = runs[by_fd[0]]
            return (
                f"On SWD the two leading runs are within noise ({scores[first].swd['avg']:.2f} and "
                f"{scores[second].swd['avg']:.2f} x10^3, noise alone reaches {swd_margin:.2f}); "
                f"on {FD_NAME} {leader.variant} (`{leader.folder.name}`) leads, "
                f"{fd_first['fd']:.2f} against {fd_second['fd']:.2f}, beyond its noise "
                f"({fd_margin:.2f})."
            )
        text += f"; on {FD_NAME} they are {fd_gap:.2f} apart (noise: {fd_margin:.2f})"
    return text + ". Call it a tie, or score more images (--num-images)."


def verdict(runs, scores, floors, warnings, fd_floor=None):
    """A few sentences: which run is best on SWD and on FD, by how much, where, how far to trust it.

    When the two disagree no run is called best: the sentences say which levels of SWD each run
    leads, so that a reader can tell texture from shape.
    """

    def name(index):
        return f"{runs[index].variant} (`{runs[index].folder.name}`)"

    def ranked(value):
        return sorted(range(len(runs)), key=lambda index: value(scores[index]))

    def swd(index):
        return scores[index].swd["avg"]

    by_swd = ranked(lambda score: score.swd["avg"])
    by_fd = ranked(fd_of) if all(score.structure for score in scores) else None
    best = by_swd[0]
    noise = floors[runs[best].config.img_size].get("noise", 0.0)
    tie = ties(runs, scores, by_swd, by_fd, noise)
    if tie:
        sentences = [tie]
    elif by_fd and by_fd[0] != best:
        best, other = by_fd[0], by_swd[0]
        levels = [key for key in scores[best].swd if key in scores[other].swd and key != "avg"]
        gaps = {level: scores[other].swd[level] - scores[best].swd[level] for level in levels}

        def where(ahead):
            return (
                ", ".join(
                    f"{level} ({level_meaning(levels, level)}, {abs(gaps[level]):.2f})"
                    for level in levels
                    if ahead(gaps[level])
                )
                or "no level"
            )

        sentences = [
            f"SWD and {FD_NAME} disagree, so no run is called best: on SWD {name(other)} leads "
            f"({swd(other):.2f} against {swd(best):.2f} x10^3 for {name(best)}), on {FD_NAME} "
            f"{name(best)} leads ({fd_of(scores[best]):.2f} against {fd_of(scores[other]):.2f}).",
            f"By SWD level, {runs[best].variant} is ahead at {where(lambda gap: gap > 0)} and "
            f"{runs[other].variant} at {where(lambda gap: gap <= 0)}: the FD sees whole images "
            "(layout, shapes), SWD's patches see texture; the samples say which matters here.",
        ]
    else:
        sentences = [f"Best on SWD: {name(best)}, average SWD {swd(best):.2f} x10^3"]
        if len(runs) > 1:
            sentences[0] += (
                " against "
                f"{', '.join(f'{swd(index):.2f} for {name(index)}' for index in by_swd[1:])}."
            )
            runner_up = by_swd[1]
            levels = [
                key for key in scores[best].swd if key in scores[runner_up].swd and key != "avg"
            ]
            gaps = {
                level: scores[runner_up].swd[level] - scores[best].swd[level] for level in levels
            }
            widest = max(gaps, key=gaps.get)
            sentences.append(
                f"Its lead over {runs[runner_up].variant} is widest at the {widest} level "
                f"({level_meaning(levels, widest)}): {gaps[widest]:+.2f} x10^3."
            )
        else:
            sentences[0] += "."
        if by_fd:
            others = "".join(
                f", against {fd_of(scores[index]):.2f} for {name(index)}" for index in by_fd[1:]
            )
            sentences.append(
                f"{FD_NAME}{' agrees' if len(runs) > 1 else ''}: {fd_of(scores[best]):.2f}{others}."
            )
    floor = floors[runs[best].config.img_size]["avg"]
    if noise:
        sentences.append(
            f"Noise: at this sample size one SWD varies by about {noise:.2f} x10^3 (one standard "
            f"deviation) and FD as the table's ± says; leads within {NOISE_SIGMAS} standard "
            "deviations of the difference are ties."
        )
    sentences.append(
        f"For scale, two disjoint samples of real images score {floor:.2f} x10^3 on "
        f"SWD{f' and {fd_floor:.2f} on {FD_NAME}' if fd_floor is not None else ''} at this sample "
        "size: no generator can be expected to score much below that."
    )
    sizes = sorted({run.config.img_size for run in runs})
    if len(sizes) > 1:
        sentences.append(
            "Caution: the runs differ in image size "
            f"({', '.join(f'{size} px' for size in sizes)}): their SWDs average different pyramid "
            "levels, so compare runs of one size only."
        )
    if warnings[best]:
        called_best = not tie and (not by_fd or by_fd[0] == by_swd[0])
        sentences.append(
            f"Caution: the {'best ' if called_best else ''}run "
            f"{runs[best].variant} has warnings ({'; '.join(warnings[best])})."
        )
    return sentences


def trend(curve, column, measure):
    """Where a run's curve of one measure ends: still falling, or past its best."""
    best_epoch, best = min(
        ((point[0], point[column]) for point in curve), key=lambda point: point[1]
    )
    if best_epoch == curve[-1][0]:
        return f"{measure} best at the end: more epochs may help"
    return (
        f"{measure} best at epoch {best_epoch} ({best:.2f}), {curve[-1][column] - best:+.2f} since"
    )


def curve_lines(runs, scores):
    """The quality-by-epoch section, for the runs that kept snapshots."""
    rows = []
    for run, score in zip(runs, scores):
        if len(score.curve) < 2:
            continue
        with_fd = score.curve[0][2] is not None
        points = ", ".join(
            f"{epoch}: {swd:.2f}" + (f" / {fd:.2f}" if with_fd else "")
            for epoch, swd, fd in score.curve
        )
        trends = [trend(score.curve, 1, "SWD")] + ([trend(score.curve, 2, "FD")] if with_fd else [])
        rows.append([run.variant, f"`{run.folder}`", points, "; ".join(trends)])
    if not rows:
        return []
    return [
        f"## SWD x10^3 / {FD_NAME} during training (from the snapshots)",
        "",
        *markdown_table(["variant", "run", "epoch: SWD / FD", "trend"], rows),
        "",
    ]


def accuracy(scores, num_classes):
    """ "top-1 / top-5" as percentages; top-1 alone where top-5 of a few classes says nothing."""
    return f"{scores['top1']:.1%}" + (f" / {scores['top5']:.1%}" if num_classes > TOP_K else "")


def structure_note(structure):
    """What the FD / KID columns measure, or why they were skipped."""
    if structure.skipped:
        return f" {FD_NAME} and KID {structure.skipped}."
    classifier, count = structure.classifier, len(structure.reference)
    info, chance = classifier.info, 1 / structure.num_classes
    return (
        f" {FD_NAME} and KID (cache CNN): Frechet distance and KID between {count} generated and "
        f"{count} held-out real images in the {structure.reference.shape[1]}-dim penultimate "
        f"features of a small CNN trained on this cache's own {structure.num_classes} classes at "
        f"{classifier.size} px (`{classifier.path}`, {info['train_images']:,} images, "
        f"{info['train_seconds']:.0f} s to train; on {info['held_out_images']:,} held-out images "
        f"its top-1 / top-{TOP_K} accuracy is {accuracy(info, structure.num_classes)}, chance "
        f"{chance:.1%}). They compare whole images (layout, shapes) where SWD compares 7x7 patches "
        "(texture); lower is better, and two disjoint held-out real samples score "
        f"{structure.floor['fd']:.2f} / {structure.floor['kid']:.3f}. Not FID: another network and "
        "feature space, so these numbers do not compare with published FIDs, nor across caches."
    )


def class_lines(runs, scores, classes, structure):
    """The "Classes" section of conditional runs: class match in colour and in grey, per-class
    KID, within-class diversity, each beside held-out real images; the most-confused pairs."""
    if not any(run.conditional for run in runs):
        return []
    lines = ["## Classes (conditional runs)", ""]
    if classes is None:
        return lines + [f"Class measures {structure.skipped}.", ""]
    n = structure.num_classes
    top = f"top-1{f' / top-{TOP_K}' if n > TOP_K else ''}"
    header = [
        "variant",
        "run",
        f"class match {top}",
        f"colour-blind {top}",
        "per-class KID",
        "within-class diversity",
    ]
    rows = [
        [
            run.variant,
            f"`{run.folder}`",
            accuracy(score.classes, n),
            accuracy({"top1": score.classes["grey_top1"], "top5": score.classes["grey_top5"]}, n),
            f"{score.classes['class_kid']:.3f}",
            f"{score.classes['within_diversity']:.2f}",
        ]
        for run, score in zip(runs, scores)
        if score.classes
    ]
    rows.append(
        [
            "real photos",
            "held out",
            accuracy(classes.colour.info, n),
            f"{accuracy(classes.grey.info, n)} (brightness alone: {classes.brightness:.1%})",
            f"{classes.floor['class_kid']:.3f}",
            f"{classes.floor['within_diversity']:.2f}",
        ]
    )
    grey = classes.grey.info
    lines += [
        *markdown_table(header, rows),
        "",
        f"Class match: how often the cache CNN ({classes.colour.size} px) recognises an image "
        f"drawn for class c as c, over {len(classes.uniform)} images spread evenly over the "
        f"{n} classes (chance {1 / n:.1%}). Colour-blind: the same kind of CNN trained on grey "
        f"images (`{classes.grey.path}`, {grey['train_seconds']:.0f} s to train), shown the images "
        "in grey: it tells the class by shape and shading mostly, but not by them alone, as a hue "
        "shows through as a brightness: brightness alone (a nearest-centroid classifier on "
        f"grey-level histograms of the training images, no shape at all) recognises "
        f"{classes.brightness:.1%} of the held-out real images. "
        "Per-class KID: KID between the images drawn for a class and the held-out real images "
        "of that class in the cache CNN's features, averaged over the classes (lower is better). "
        "Within-class diversity: the spread of a class's images, generated over real (1 = as "
        "varied as the real classes; a generator that draws one image per class scores 0). The "
        "real row is the ceiling (accuracy on held-out real images) or the floor (two disjoint "
        "halves of them).",
        "",
        "Most confused (class asked for -> class seen, of the images asked for it):",
        "",
    ]
    for run, score in zip(runs, scores):
        if score.classes:
            pairs = ", ".join(
                f"{asked} -> {seen} ({count} of {of})"
                for asked, seen, count, of in score.classes["confused"]
            )
            lines.append(f"- `{run.folder}`: {pairs or 'none'}")
    return lines + [""]


def report(runs, scores, floors, caveats, num_images, real_cache, structure, classes=None):
    """comparison.md: the table, SWD per level, caveats and the verdict."""
    warnings = [run_warnings(run, score) for run, score in zip(runs, scores)]
    # One reason for every run (no torchmetrics, say) is said once, under the table.
    skipped = {score.inception for score in scores}
    skipped = (
        skipped.pop() if len(skipped) == 1 and next(iter(skipped)).startswith("skipped: ") else None
    )
    fid_note = f" FID / KID {skipped}." if skipped else ""
    if skipped and "torchmetrics" in skipped:
        fid_note += " `pip install torchmetrics[image]` adds them."
    conditional = any(run.conditional for run in runs)
    match_header = f"class match top-1{f' / top-{TOP_K}' if structure.num_classes > TOP_K else ''}"
    header = [
        "variant",
        "run",
        "epochs",
        "G steps",
        "wall time (s)",
        "SWD x10^3",
        FD_NAME,
        *([match_header] if conditional else []),
        "diversity",
        "warnings",
    ]
    sizes_header = [
        "variant",
        "run",
        "G params",
        "critic params",
        "images/s",
        "device",
        "KID (cache CNN)",
        "FID / KID",
    ]
    rows, sizes_rows = [], []
    for run, score, warning in zip(runs, scores, warnings):
        quality = score.structure
        if score.classes:
            match = accuracy(score.classes, structure.num_classes)
        else:
            match = "skipped" if run.conditional else "- (unconditional)"
        fd = "skipped"
        if quality:
            spread = f" ± {quality['fd_std']:.2f}" if "fd_std" in quality else ""
            fd = f"{quality['fd']:.2f}{spread}"
        if run.trained:
            budget = [
                f"{run.info['epochs_done']}/{run.info['epochs']}",
                f"{run.info['generator_steps']:,}",
                f"{run.info['wall_time_s']:,.1f}",
            ]
            speed = [
                f"{run.info['generator_params']:,}",
                f"{run.info['critic_params']:,}",
                f"{run.info['images_per_s']:,.1f}",
                run.info["device"],
            ]
        else:  # the generator is there to count; the rest only a training run records
            budget = ["not a training run", "-", "-"]
            generator_params = sum(p.numel() for p in run.generator.parameters())
            speed = [f"{generator_params:,}", "-", "-", "-"]
        rows.append(
            [
                run.variant,
                f"`{run.folder}`",
                *budget,
                f"{score.swd['avg']:.2f}",
                fd,
                *([match] if conditional else []),
                f"{score.diversity:.2f}",
                "; ".join(warning) or "none",
            ]
        )
        sizes_rows.append(
            [
                run.variant,
                f"`{run.folder}`",
                *speed,
                f"{quality['kid']:.3f}" if quality else "skipped",
                "skipped" if skipped else score.inception,
            ]
        )
    untrained = ", ".join(f"`{run.folder}`" for run in runs if not run.trained)
    untrained_note = (
        f"Not a training run (config.json and generator.pkl only): {untrained}: no losses or "
        "speed, no steps, images seen, quality by epoch or budget to compare; the samples are "
        "scored as any run's."
        if untrained
        else ""
    )
    # Runs at different image sizes have different pyramids: one column per level found anywhere.
    levels = sorted(
        {key for score in scores for key in score.swd} - {"avg"}, key=lambda key: -int(key[:-2])
    )
    levels.append("avg")
    columns = [[score.swd.get(level) for score in scores] for level in levels]
    floor_fd = [] if structure.skipped else [f"{structure.floor['fd']:.2f}"]
    if not structure.skipped:
        columns.append([fd_of(score) for score in scores])
    level_rows = [
        [run.variant, f"`{run.folder}`", *cells]
        for run, cells in zip(runs, zip(*map(best_in_bold, columns)))
    ]
    level_rows += [
        ["real vs real", f"{size} px", *(level_cell(floor, level) for level in levels), *floor_fd]
        for size, floor in floors.items()
    ]
    lines = [
        "# GAN runs compared",
        "",
        *markdown_table(header, rows),
        "",
        f"Quality on {num_images} generated images (fixed noise, the same seed for every run) "
        f"against {num_images} real images from {real_cache.path} ({len(real_cache.images)} in "
        "all). SWD: sliced Wasserstein distance of Karras et al. 2018 (Appendix D), x10^3, lower "
        "is better; diversity: mean pairwise distance of generated over real images at "
        f"{DIVERSITY_SIZE} px, mode collapse flagged below "
        f"{COLLAPSE_RATIO}.{structure_note(structure)}{fid_note}",
        "",
        *([untrained_note, ""] if untrained_note else []),
        "## Sizes, speed and more measures",
        "",
        *markdown_table(sizes_header, sizes_rows),
        "",
        "## SWD per Laplacian-pyramid level (x10^3)"
        + ("" if structure.skipped else f" and {FD_NAME}"),
        "",
        *markdown_table(["variant", "run", *levels, *([FD_NAME] if floor_fd else [])], level_rows),
        "",
        *(
            [
                "The lowest of each column is in bold: the level where a run leads is the scale "
                "it does better at (the finest level is texture and checkerboard, the coarsest "
                "layout and colour).",
                "",
            ]
            if len(runs) > 1
            else []
        ),
        *class_lines(runs, scores, classes, structure),
        *curve_lines(runs, scores),
        "## Verdict",
        "",
        *verdict(
            runs, scores, floors, warnings, None if structure.skipped else structure.floor["fd"]
        ),
        "",
    ]
    if caveats:
        lines += ["## Caveats", "", *(f"- {caveat}" for caveat in caveats), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- the figure
ROW_HEIGHT, DPI = 4.4, 100  # inches per run, pixels per inch
PANEL_WIDTHS = {"samples": 4.4, "losses": 6.0, "gap": 6.0, "quality": 4.8}  # inches
# The critic's view gets its own panel: for WGAN-GP the critic loss is dominated by the penalty
# term and would flatten the curve that actually tracks progress (the Wasserstein estimate).
LOSS_PANEL = (
    "losses (faint: raw, solid: smoothed)",
    {"d_loss": "critic / D loss", "g_loss": "G loss"},
)


def critic_panel(metrics):
    """(title, {column: label}) of what the run's critic logs beside its loss: the gap of mean
    scores (the Wasserstein estimate of the WGANs), or the mean D(real) and D(fake) (DCGAN's
    probabilities, SNGAN's hinge scores)."""
    if "w_dist" in metrics:
        return "mean D(real) - mean D(fake)", {"w_dist": "critic gap"}
    return "mean D(real) and mean D(fake)", {"d_real": "D(real)", "d_fake": "D(fake)"}


COLOURS = ("tab:blue", "tab:orange")
CURVE_PERCENTILE = 1  # the y-axis shows the 1st to 99th percentile of the raw values


def smoothed(steps, values):
    """Moving average over ~1/SMOOTHING_POINTS of the run; non-finite values leave gaps."""
    window = max(1, len(values) // SMOOTHING_POINTS)
    return steps[window - 1 :], np.convolve(values, np.ones(window) / window, mode="valid")


def plot_curves(axis, metrics, title, columns):
    shown = []
    for (column, label), colour in zip(columns.items(), COLOURS):
        # inf would wreck the axis
        values = np.where(np.isfinite(metrics[column]), metrics[column], np.nan)
        axis.plot(metrics["step"], values, color=colour, alpha=0.25, linewidth=0.8)
        axis.plot(*smoothed(metrics["step"], values), color=colour, linewidth=1.6, label=label)
        shown.append(values)
    # The first few steps (an untrained critic, a penalty of 50) would squash the rest of the run.
    finite = np.concatenate(shown)
    finite = finite[np.isfinite(finite)]
    low, high = (
        np.percentile(finite, [CURVE_PERCENTILE, 100 - CURVE_PERCENTILE]) if finite.size else (0, 0)
    )
    if high > low:
        margin = 0.1 * (high - low)
        # keep 0 in view: the sign matters
        axis.set_ylim(min(low - margin, 0), max(high + margin, 0))
    axis.axhline(0, color="grey", linewidth=0.5)
    axis.set(xlabel="critic / D step", title=title)
    axis.legend(fontsize="small")


def plot_quality(axis, curve, floors, tops):
    """SWD (left axis) and FD (right axis) against epoch, each on one y-scale (0 to its top) for
    every run, with their real-vs-real floors (floors, tops: (SWD, FD); FD None when skipped)."""
    if len(curve) < 2:
        axis.text(
            0.5,
            0.5,
            "no snapshots scored:\nnone kept (snapshot_every),\nor unreadable (see the table)",
            ha="center",
            va="center",
        )
        axis.set_axis_off()
        return
    epochs, *values = zip(*curve)
    measures = [("SWD x10^3", "tab:purple", axis)]
    if floors[1] is not None:
        measures.append((FD_NAME, "tab:green", axis.twinx()))
    for (label, colour, y_axis), series, floor, top in zip(measures, values, floors, tops):
        y_axis.plot(epochs, series, marker="o", color=colour, label=label)
        y_axis.axhline(
            floor,
            color=colour,
            linestyle="--",
            linewidth=1,
            alpha=0.6,
            label=f"real vs real ({label})",
        )
        y_axis.set_ylim(0, top)
        y_axis.set_ylabel(label, color=colour)
    axis.set(
        xlabel="epoch",
        title=f"{' and '.join(label.split()[0] for label, _, _ in measures)} during training "
        "(lower is better)",
    )
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    figure_lines = [line for _, _, y_axis in measures for line in y_axis.get_lines()]
    axis.legend(figure_lines, [line.get_label() for line in figure_lines], fontsize="small")


def sample_title(run, score):
    title = f"{run.variant}: {run.folder.name}\nSWD {score.swd['avg']:.2f} x10^3"
    if score.structure:
        title += f", FD {score.structure['fd']:.2f}"
    title += f"\ndiversity {score.diversity:.2f}"
    if score.classes:
        title += f", class match {score.classes['top1']:.0%}"
    return title


def make_figure(runs, scores, floors, fd_floor, samples_shown, seed):
    """comparison.png: per run, samples from the shared noise, losses, critic gap, SWD and FD by
    epoch.

    The quality column is left out when no run kept snapshots.
    """
    panels = [
        name
        for name in PANEL_WIDTHS
        if name != "quality" or any(len(score.curve) > 1 for score in scores)
    ]
    tops = [
        1.1 * max(point[column] or 0 for score in scores for point in score.curve)
        for column in (1, 2)
    ]
    widths = [PANEL_WIDTHS[name] for name in panels]
    figure = Figure(figsize=(sum(widths), ROW_HEIGHT * len(runs)), layout="constrained")
    axes = figure.subplots(
        len(runs), len(panels), squeeze=False, gridspec_kw={"width_ratios": widths}
    )
    for row, (run, score) in zip(axes, zip(runs, scores)):
        grid = make_grid(
            score.samples[:samples_shown], nrow=math.ceil(math.sqrt(samples_shown)), padding=1
        )
        row[0].imshow(grid.permute(1, 2, 0).numpy())
        row[0].set_axis_off()
        row[0].set_title(sample_title(run, score), fontweight="bold")
        for axis, (title, columns) in zip(row[1:3], (LOSS_PANEL, critic_panel(run.metrics))):
            if not run.trained:
                axis.text(0.5, 0.5, "no losses: not a training run", ha="center", va="center")
                axis.set_axis_off()
            elif len(run.metrics["step"]):
                plot_curves(axis, run.metrics, title, columns)
        if "quality" in panels:
            plot_quality(row[3], score.curve, (floors[run.config.img_size]["avg"], fd_floor), tops)
    figure.suptitle(
        f"{len(runs)} run{'s' if len(runs) > 1 else ''}; samples from the same noise (seed {seed}) "
        "for every run",
        fontsize="x-large",
    )
    return figure


# ------------------------------------------------------------------------------- main
def build_parser():
    parser = argparse.ArgumentParser(
        description=(
            "Compare finished GAN runs (output folders of gan_complete.py and its siblings)\n"
            "without retraining: a figure of samples, losses and SWD / FD by epoch per run, and a\n"
            "Markdown table of sizes, budgets, SWD, FD / KID of the cache's own CNN (and\n"
            "Inception FID/KID when torchmetrics is installed), diversity, the class match of\n"
            "conditional runs and warnings. Any bad run folder stops the comparison (exit 2)\n"
            "before anything is written."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"""outputs in --out-dir:
  comparison.png  one row per run: samples from the shared noise, losses and the critic gap
                  against step (faint: raw, solid: smoothed), SWD and FD against epoch from
                  the run's snapshots/ (kept every snapshot_every epochs)
  comparison.md   the table (also printed), SWD per pyramid level, a verdict, caveats

quality:
  SWD        sliced Wasserstein distance (Karras et al. 2018, App. D) x10^3, lower is better:
             Laplacian pyramid down to {SWD_MIN_RESOLUTION} px; per level,
             {SWD_PATCHES_PER_IMAGE} random {SWD_PATCH}x{SWD_PATCH} patches per image and
             {SWD_DIRECTIONS} random projections; "real vs real" is the floor at this sample size
  FD / KID   (cache CNN) Frechet distance and KID in the {CLASSIFIER_WIDTHS[-1]}-dim features of a
             small CNN trained on the cache's own classes at up to {CLASSIFIER_MAX_SIZE} px
             ({CLASSIFIER_STEPS} steps, minutes on a CPU, once per cache: kept as
             <cache>/{CLASSIFIER_FILES[False]}); whole-image structure where SWD sees texture.
             Not FID: does not compare with published FIDs
  classes    conditional runs: the class match (how often that CNN recognises an image drawn
             for class c as c), the same in grey (a CNN trained on grey images, kept as
             <cache>/{CLASSIFIER_FILES[True]}: mostly shape and shading), per-class KID,
             within-class diversity, and the most-confused classes, each beside real photos
  FID / KID  torchmetrics, only when it and its Inception weights are installed
  diversity  mean pairwise distance of generated over real images at {DIVERSITY_SIZE} px;
             below {COLLAPSE_RATIO} the run is flagged as mode-collapsed
  caveats    budgets (images seen, wall time, epochs, image size) differing by more than
             {BUDGET_TOLERANCE:.0%}""",
    )
    parser.add_argument(
        "runs",
        nargs="+",
        type=Path,
        help="run folders (each with config.json and generator.pkl; a training run's "
        "run_info.json and metrics.csv add losses, speed and budgets; snapshots/ is optional)",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path("comparison"),
        help="where comparison.png and comparison.md go (default: comparison)",
    )
    parser.add_argument(
        "--num-images",
        type=int,
        default=1000,
        help="generated and real images per quality measurement; capped at half the real set, "
        "so that a disjoint real sample gives the real-vs-real floor (default: 1000)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="preprocess cache folder of the real images (default: the first training run's "
        "cache_path from run_info.json)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the photos the runs trained on, for folders that name no cache (generator.pkl and "
        "config.json alone, as in pretrained/): the cache of the first run's config.json data "
        "settings is found or built from them (default: config.json's data_dir; never "
        "downloads)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the shared noise, the real sample and the SWD projections (default: 0)",
    )
    parser.add_argument(
        "--samples", type=int, default=16, help="samples shown per run in the figure (default: 16)"
    )
    parser.add_argument(
        "--device", default="cpu", help="device for the generators and FID/KID (default: cpu)"
    )
    parser.add_argument(
        "--no-snapshots",
        action="store_true",
        help="score only the final generators, not the snapshots (one SWD each)",
    )
    parser.add_argument(
        "--no-fid",
        action="store_true",
        help="skip FID/KID even when torchmetrics is installed (Inception is slow on a CPU)",
    )
    parser.add_argument(
        "--no-structure",
        action="store_true",
        help="skip FD / KID of the cache's CNN and the class match (no classifier is trained)",
    )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.num_images < 2 or args.samples < 1:
            raise RunError("--num-images must be at least 2 and --samples at least 1")
        check_device(args.device)
        check_writable(args.out_dir)
        if args.cache and args.data_dir:
            raise RunError("pass --cache or --data-dir, not both")
        runs = [load_run(folder, args.device) for folder in args.runs]
        cache = real_cache_path(runs, args.cache, args.data_dir)
        real_cache = load_real_cache(cache)
        all_real = real_cache.images
        num_images = min(args.num_images, len(all_real) // 2)
        if num_images < 2:
            raise RunError(f"the cache {cache} holds {len(all_real)} images; SWD needs at least 4")
        for run in runs:
            if run.conditional and run.class_names != real_cache.classes:
                raise RunError(
                    f"{run.folder} is conditional on classes {run.class_names!r:.60} that are not "
                    f"the cache's ({len(real_cache.classes)} classes in {cache})"
                )
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    real, reference, real_labels = real_samples(real_cache, num_images, args.seed)

    trained = [run for run in runs if run.trained]
    caveats = budget_caveats(trained)
    caches = {str(run.info.get("cache_path")) for run in trained}
    if len(caches) > 1:
        caveats.append(
            f"the runs trained on different caches ({', '.join(sorted(caches))}); "
            f"all are scored against {cache}"
        )
    kinds = {run.conditional for run in runs}
    if len(kinds) > 1:
        caveats.append(
            "conditional and unconditional runs side by side: a conditional run is told which "
            "class to draw and is scored on the data's class mix, so its lead may be the labels' "
            "help rather than its method's"
        )
    if num_images < args.num_images:
        caveats.append(
            f"only {num_images} images per side (half of the {len(all_real)} real images): "
            "SWD is noisier and higher with fewer images"
        )
    inception = InceptionMetrics(real, args.device, enabled=not args.no_fid)
    structure = StructureMeasure(
        real_cache, num_images, args.seed, args.device, enabled=not args.no_structure
    )
    classes = None
    if any(run.conditional for run in runs) and not structure.skipped:
        classes = ClassMeasure(real_cache, structure, num_images, args.seed, args.device)
    scores, floors = score_runs(
        runs,
        real,
        reference,
        real_labels,
        num_images,
        args.seed,
        inception,
        structure,
        classes=classes,
        snapshots=not args.no_snapshots,
    )

    markdown = report(runs, scores, floors, caveats, num_images, real_cache, structure, classes)
    figure = make_figure(
        runs,
        scores,
        floors,
        None if structure.skipped else structure.floor["fd"],
        min(args.samples, num_images),
        args.seed,
    )
    # Whole or not at all: a comparison interrupted mid-write keeps the previous files as they were.
    args.out_dir.mkdir(parents=True, exist_ok=True)
    preprocess.write_atomically(
        args.out_dir / "comparison.png", lambda file: figure.savefig(file, format="png", dpi=DPI)
    )
    preprocess.write_atomically(
        args.out_dir / "comparison.md", lambda file: file.write(markdown.encode())
    )
    print(markdown)
    print(f"wrote {args.out_dir / 'comparison.md'} and {args.out_dir / 'comparison.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
