"""Put finished GAN runs side by side: which variant is better, and why.

    python compare.py GAN_output WGAN_clip_output DCGAN_output --out-dir comparison

Nothing is retrained. Each run folder is what `gan_complete.py`, `wgan_clip.py` or `dcgan.py`
left behind (config.json, metrics.csv, run_info.json, generator.pkl, and snapshots/ when kept);
the generator is loaded through its own script's restricted loader, and every run draws its
samples from the same fixed noise (same seed), so the sample grids differ only by the model.

Outputs in --out-dir:
- comparison.png: one row per run: final samples, losses against step (raw, faint, and
  smoothed), and SWD against epoch when the run kept generator snapshots (snapshot_every).
- comparison.md (also printed): a table of sizes, budgets and final quality, the per-level
  sliced Wasserstein distances, warnings, and a few sentences on which run is best and how far
  to trust that.

Quality needs no network: the sliced Wasserstein distance (SWD) of Karras et al. 2018
("Progressive Growing of GANs", Appendix D) between generated images and the real images of
the preprocess cache the run trained on. FID and KID are added when torchmetrics and its
Inception weights are installed; otherwise the table says why they were skipped.

Bad input (a folder that is not a run, a missing cache, weights the loader refuses) stops the
whole comparison with a one-line `error: ...` and exit status 2 before anything is written:
a table that silently leaves a run out would answer a different question than the one asked.
"""

import argparse
import csv
import importlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure  # the OO API: files only, no display, no global backend change
from matplotlib.ticker import MaxNLocator
from torchvision.utils import make_grid
from tqdm import tqdm

import preprocess

# The training scripts a run folder may come from (config.json "script"). Only these are
# imported: the name comes from a file, and importing whatever it says would run any module.
SCRIPTS = ("gan_complete", "wgan_clip", "dcgan")
REQUIRED_FILES = ("config.json", "run_info.json", "metrics.csv", "generator.pkl")
METRICS_COLUMNS = ("step", "epoch", "d_loss", "g_loss", "w_dist", "gp", "lr", "time")
SNAPSHOT_NAME = re.compile(r"generator_epoch_(\d+)\.pkl")  # snapshots/ of a run, see snapshot_every
RUN_INFO_KEYS = ("generator_params", "critic_params", "epochs_done", "epochs", "generator_steps",
                 "wall_time_s", "images_per_s", "device")  # what the table shows

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
GENERATE_BATCH = 250  # noise vectors per generator call: bounds memory at 1,000+ samples


class RunError(Exception):
    """Bad input (not a run, missing cache, refused weights): one line for the user."""


# ----------------------------------------------------------------------------- reading runs
@dataclass
class Run:
    folder: Path
    variant: str  # the method's name, e.g. "WGAN-GP"
    config: object  # the script's own Config dataclass
    info: dict  # run_info.json
    metrics: dict  # metrics.csv column -> np.ndarray
    generator: torch.nn.Module
    snapshots: list  # [(epoch, path)] of snapshots/generator_epoch_NNN.pkl, by epoch
    load: object  # path -> generator, through the run's own script (raises RunError)


def read_csv_columns(path, columns):
    """A CSV of numbers as {column: float array}; "nan" and "inf" parse as themselves."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in columns if name not in (reader.fieldnames or ())]
        if missing:
            raise RunError(f"{path} lacks the column(s) {', '.join(missing)}")
        try:
            rows = [[float(row[name]) for name in columns] for row in reader]
        except (TypeError, ValueError) as error:  # a short row gives None, a word gives ValueError
            raise RunError(f"{path} holds something that is not a number ({error})") from None
    return dict(zip(columns, np.array(rows, dtype=float).reshape(-1, len(columns)).T))


def read_json(path):
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise RunError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} holds no JSON object")
    return data


def load_run(folder, device="cpu"):
    """Read one run folder and load its generator through its training script's loader."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"{folder} is not a folder")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise RunError(f"{folder} is not a run folder (no {', '.join(missing)})")
    script = read_json(folder / "config.json").get("script")
    if script not in SCRIPTS:
        raise RunError(f"{folder}/config.json names script {script!r}, expected one of {SCRIPTS}")
    try:
        module = importlib.import_module(script)
    except ImportError as error:
        raise RunError(f"{folder} needs {script}.py, which cannot be imported ({error})") from None
    try:
        config = module.read_config(folder / "config.json")
    except module.ConfigError as error:  # the scripts' one-line refusal
        raise RunError(f"{folder}: {error}") from None

    def load(path):
        try:
            return module.load_generator(path, config, device=device)
        except (module.ConfigError, module.WeightsError) as error:
            raise RunError(f"{folder}: {error}") from None

    generator = load(folder / "generator.pkl")
    info = read_json(folder / "run_info.json")
    missing = [key for key in RUN_INFO_KEYS if key not in info]
    if missing:
        raise RunError(f"{folder}/run_info.json lacks {', '.join(missing)}")
    snapshots = sorted((int(match.group(1)), path) for path in (folder / "snapshots").glob("*.pkl")
                       if (match := SNAPSHOT_NAME.fullmatch(path.name)))
    return Run(
        folder=folder,
        variant=info.get("variant", script),
        config=config,
        info=info,
        metrics=read_csv_columns(folder / "metrics.csv", METRICS_COLUMNS),
        generator=generator,
        snapshots=snapshots,
        load=load,
    )


def load_real_images(cache_path):
    """The real images (uint8 [N, 3, H, W]) of a preprocess cache folder."""
    if not Path(cache_path).exists():
        raise RunError(f"real-image cache {cache_path} not found; pass --cache with the preprocess cache "
                       "folder the runs trained on")
    try:
        images, _labels, _classes = preprocess.load_cache(cache_path)
    except preprocess.PreprocessError as error:
        raise RunError(one_line(error)) from None
    return images


def resize_uint8(images, size):
    """Real images at the generator's resolution, so that both sides are measured alike."""
    if images.shape[-1] == size:
        return images
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8)


def to_uint8(images):
    """Generator output in [-1, 1] -> uint8 in [0, 255], exactly as a saved PNG would hold it."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@torch.inference_mode()
def generate(generator, z):
    device = next(generator.parameters()).device
    return torch.cat([to_uint8(generator(chunk.to(device)).float().cpu()) for chunk in z.split(GENERATE_BATCH)])


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
        blurred = F.conv2d(F.pad(current, (2, 2, 2, 2), mode="reflect"), kernel, groups=images.shape[1])
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
        raise ValueError(f"image sets differ in shape: {tuple(real_uint8.shape)} vs {tuple(fake_uint8.shape)}")
    if directions % SWD_DIRECTIONS_PER_CHUNK:
        raise ValueError(f"directions must be a multiple of {SWD_DIRECTIONS_PER_CHUNK}")
    random = torch.Generator().manual_seed(seed)
    pyramids = [
        laplacian_pyramid(images.float() if images.dtype == torch.uint8 else (images.float() + 1) * 127.5, min_resolution)
        for images in (real_uint8, fake_uint8)
    ]
    result = {}
    for real_level, fake_level in zip(*pyramids):
        n, _, height, width = real_level.shape
        ys = torch.randint(0, height - SWD_PATCH + 1, (n, patches_per_image), generator=random)
        xs = torch.randint(0, width - SWD_PATCH + 1, (n, patches_per_image), generator=random)
        corners = ys * width + xs
        distance = sliced_distance(
            patch_descriptors(real_level, corners), patch_descriptors(fake_level, corners), directions, random
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
            self.kid = KernelInceptionDistance(subset_size=subset, reset_real_features=False).to(device)
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
        """"FID / KID mean" of the fake images, or the reason they were skipped."""
        if self.skipped:
            return self.skipped
        self.update(fake_uint8, real=False)
        fid, (kid, _kid_std) = self.fid.compute().item(), self.kid.compute()
        self.fid.reset()  # forgets the fake features only
        self.kid.reset()
        return f"{fid:.2f} / {kid.item():.4f}"


def check_device(name):
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RunError(f"unknown --device {name!r}; use cpu, cuda or cuda:N, mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"--device {name}: CUDA is not available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise RunError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 to "
                       f"cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RunError(f"--device {name}: MPS is not available here; use --device cpu")


def check_writable(folder):
    """An unwritable --out-dir is reported before minutes of scoring, not after; nothing is made yet."""
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(f"cannot write to --out-dir {folder} ({existing} is not a writable folder); "
                       "pass another folder")


def one_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


# ------------------------------------------------------------------------------- diversity
def mean_pairwise_distance(images_uint8):
    small = F.interpolate(
        images_uint8[:DIVERSITY_MAX_IMAGES].float() / 255, size=DIVERSITY_SIZE, mode="bilinear", antialias=True
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
    samples: torch.Tensor  # uint8 [n, 3, s, s], all from the shared fixed noise
    swd: dict  # sliced_wasserstein() of the samples against the real images, x 10^3
    inception: str  # "FID / KID" as numbers, or "skipped: <reason>"
    diversity: float
    curve: list  # [(epoch, average SWD)]: the snapshots, then the final generator
    unreadable: list  # snapshot files the loader refused, left out of the curve


def quality_curve(run, final_swd, real, z, seed, enabled):
    """SWD of every snapshot the run kept, then of its final generator: quality against epoch.

    A snapshot the loader refuses (truncated, tampered with) is left out and named, not fatal:
    the final generator, which the comparison is about, has been loaded already.
    """
    curve, unreadable = [], []
    for epoch, path in run.snapshots if enabled else []:
        if epoch >= run.info["epochs_done"]:  # the same weights as generator.pkl (or a stray file)
            continue
        try:
            generator = run.load(path)
        except RunError:
            unreadable.append(path.name)
            continue
        curve.append((epoch, sliced_wasserstein(real, generate(generator, z), seed)["avg"]))
    curve.append((run.info["epochs_done"], final_swd["avg"]))
    return curve, unreadable


def score_runs(runs, real, reference, num_images, seed, inception, snapshots=True):
    """Score every run on the same real images; also the real-vs-real SWD floor per size.

    With snapshots, each run's snapshots are scored too, on the same noise and real images.

    real and reference are disjoint real samples of num_images each: SWD between them is what a
    perfect generator would score at this sample size.
    """
    scores, floors = [], {}
    for run in tqdm(runs, desc="scoring", disable=None):
        size = run.config.img_size
        real_at_size = resize_uint8(real, size)
        if size not in floors:
            floors[size] = sliced_wasserstein(real_at_size, resize_uint8(reference, size), seed)
        z = torch.randn(num_images, run.config.z_dim, generator=torch.Generator().manual_seed(seed))
        samples = generate(run.generator, z)
        swd = sliced_wasserstein(real_at_size, samples, seed)
        curve, unreadable = quality_curve(run, swd, real_at_size, z, seed, snapshots)
        scores.append(Score(samples=samples, swd=swd, inception=inception(samples),
                            diversity=diversity(samples, real_at_size), curve=curve, unreadable=unreadable))
    return scores, floors


# ------------------------------------------------------------------------------- warnings
def run_warnings(run, score):
    """What makes one run's numbers suspect, in words."""
    warnings = []
    losses = np.stack([run.metrics[name] for name in ("d_loss", "g_loss", "w_dist", "gp")])
    if losses.size == 0:
        warnings.append("metrics.csv has no rows")
    else:
        bad_rows = ~np.isfinite(losses).all(axis=0)
        if bad_rows.any():
            first = int(run.metrics["step"][bad_rows.argmax()])
            warnings.append(f"non-finite losses in {bad_rows.sum()} of {bad_rows.size} steps (first at step {first})")
    if score.diversity < COLLAPSE_RATIO:
        warnings.append(f"mode collapse: diversity {score.diversity:.2f} < {COLLAPSE_RATIO}")
    if not run.info.get("finished", False):
        warnings.append(f"unfinished: {run.info['epochs_done']} of {run.info['epochs']} epochs")
    if score.unreadable:
        warnings.append(f"unreadable snapshot(s) left out of the SWD curve: {', '.join(score.unreadable)}")
    return warnings


def budget_caveats(runs):
    """Budgets that differ by more than BUDGET_TOLERANCE between runs: an unfair comparison."""
    caveats = []
    for key, label in BUDGET_KEYS.items():
        values = [run.info.get(key) for run in runs]
        if not all(isinstance(value, (int, float)) for value in values):
            continue
        largest = max(values)
        if largest > 0 and (largest - min(values)) / largest > BUDGET_TOLERANCE:
            listed = ", ".join(f"{run.folder.name} {value:,}" for run, value in zip(runs, values))
            caveats.append(f"{label} differ by more than {BUDGET_TOLERANCE:.0%}: {listed}")
    return caveats


# ------------------------------------------------------------------------------- the report
LEVEL_MEANING = {"finest": "fine detail and texture", "middle": "mid-scale shapes", "coarsest": "layout and colour"}


def level_cell(swd, level):
    return f"{swd[level]:.2f}" if level in swd else "-"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def level_meaning(levels, level):
    if level == levels[0]:
        return LEVEL_MEANING["finest"]
    return LEVEL_MEANING["coarsest"] if level == levels[-1] else LEVEL_MEANING["middle"]


def verdict(runs, scores, floors, warnings):
    """A few sentences: which run is best on SWD, by how much, where, and how far to trust it."""
    ranked = sorted(range(len(runs)), key=lambda index: scores[index].swd["avg"])
    best = ranked[0]

    def name(index):
        return f"{runs[index].variant} (`{runs[index].folder.name}`)"

    floor = floors[runs[best].config.img_size]["avg"]
    sentences = [f"Best on SWD: {name(best)}, average SWD {scores[best].swd['avg']:.2f} x10^3"]
    if len(ranked) > 1:
        others = ", ".join(f"{scores[index].swd['avg']:.2f} for {name(index)}" for index in ranked[1:])
        sentences[0] += f" against {others}."
        runner_up = ranked[1]
        levels = [key for key in scores[best].swd if key in scores[runner_up].swd and key != "avg"]
        gaps = {level: scores[runner_up].swd[level] - scores[best].swd[level] for level in levels}
        widest = max(gaps, key=gaps.get)
        sentences.append(
            f"Its lead over {runs[runner_up].variant} is widest at the {widest} level "
            f"({level_meaning(levels, widest)}): {gaps[widest]:+.2f} x10^3."
        )
    else:
        sentences[0] += "."
    sentences.append(
        f"For scale, two disjoint samples of real images score {floor:.2f} x10^3 at this sample size: "
        "no generator can be expected to score much below that."
    )
    sizes = sorted({run.config.img_size for run in runs})
    if len(sizes) > 1:
        sentences.append(f"Caution: the runs differ in image size ({', '.join(f'{size} px' for size in sizes)}): "
                         "their SWDs average different pyramid levels, so compare runs of one size only.")
    if warnings[best]:
        sentences.append(f"Caution: the best run has warnings ({'; '.join(warnings[best])}).")
    return sentences


def trend(curve):
    """Where a run's SWD curve ends: still falling, or past its best."""
    best_epoch, best = min(curve, key=lambda point: point[1])
    if best_epoch == curve[-1][0]:
        return "best at the end: more epochs may help"
    return f"best at epoch {best_epoch} ({best:.2f}), {curve[-1][1] - best:+.2f} since"


def curve_lines(runs, scores):
    """The SWD-by-epoch section, for the runs that kept snapshots."""
    rows = [[run.variant, f"`{run.folder}`", ", ".join(f"{epoch}: {value:.2f}" for epoch, value in score.curve),
             trend(score.curve)] for run, score in zip(runs, scores) if len(score.curve) > 1]
    if not rows:
        return []
    return ["## SWD during training (x10^3, from the snapshots)", "",
            *markdown_table(["variant", "run", "epoch: SWD", "trend"], rows), ""]


def report(runs, scores, floors, caveats, num_images, real_count):
    """comparison.md: the table, SWD per level, caveats and the verdict."""
    warnings = [run_warnings(run, score) for run, score in zip(runs, scores)]
    # One reason for every run (no torchmetrics, say) is said once, under the table.
    skipped = {score.inception for score in scores}
    skipped = skipped.pop() if len(skipped) == 1 and next(iter(skipped)).startswith("skipped: ") else None
    fid_note = f" FID / KID {skipped}." if skipped else ""
    if skipped and "torchmetrics" in skipped:
        fid_note += " `pip install torchmetrics[image]` adds them."
    header = ["variant", "run", "G params", "critic params", "epochs", "G steps", "wall time (s)", "images/s",
              "device", "SWD x10^3", "FID / KID", "diversity", "warnings"]
    rows = [
        [run.variant, f"`{run.folder}`", f"{run.info['generator_params']:,}", f"{run.info['critic_params']:,}",
         f"{run.info['epochs_done']}/{run.info['epochs']}", f"{run.info['generator_steps']:,}",
         f"{run.info['wall_time_s']:,.1f}", f"{run.info['images_per_s']:,.1f}", run.info["device"],
         f"{score.swd['avg']:.2f}", "skipped" if skipped else score.inception,
         f"{score.diversity:.2f}", "; ".join(warning) or "none"]
        for run, score, warning in zip(runs, scores, warnings)
    ]
    # Runs at different image sizes have different pyramids: one column per level found anywhere.
    levels = sorted({key for score in scores for key in score.swd} - {"avg"}, key=lambda key: -int(key[:-2]))
    levels.append("avg")
    level_rows = [[run.variant, f"`{run.folder}`", *(level_cell(score.swd, level) for level in levels)]
                  for run, score in zip(runs, scores)]
    level_rows += [["real vs real", f"{size} px", *(level_cell(floor, level) for level in levels)]
                   for size, floor in floors.items()]
    lines = [
        "# GAN runs compared", "",
        *markdown_table(header, rows), "",
        f"Quality on {num_images} generated images (fixed noise, the same seed for every run) against "
        f"{num_images} real images from the run's cache ({real_count} in all). SWD: sliced Wasserstein "
        "distance of Karras et al. 2018 (Appendix D), x10^3, lower is better; diversity: mean pairwise "
        f"distance of generated over real images at {DIVERSITY_SIZE} px, mode collapse flagged below "
        f"{COLLAPSE_RATIO}.{fid_note}", "",
        "## SWD per Laplacian-pyramid level (x10^3)", "",
        *markdown_table(["variant", "run", *levels], level_rows), "",
        *curve_lines(runs, scores),
        "## Verdict", "",
        *verdict(runs, scores, floors, warnings), "",
    ]
    if caveats:
        lines += ["## Caveats", "", *(f"- {caveat}" for caveat in caveats), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- the figure
ROW_HEIGHT, DPI = 4.4, 100  # inches per run, pixels per inch
PANEL_WIDTHS = {"samples": 4.4, "losses": 6.0, "gap": 6.0, "quality": 4.8}  # inches
# The critic's gap gets its own panel: for WGAN-GP the critic loss is dominated by the penalty
# term and would flatten the curve that actually tracks progress (the Wasserstein estimate).
LOSS_PANELS = [
    ("losses (faint: raw, solid: smoothed)", {"d_loss": "critic / D loss", "g_loss": "G loss"}),
    ("mean D(real) - mean D(fake)", {"w_dist": "critic gap"}),
]
COLOURS = ("tab:blue", "tab:orange")
CURVE_PERCENTILE = 1  # the y-axis shows the 1st to 99th percentile of the raw values


def smoothed(steps, values):
    """Moving average over ~1/SMOOTHING_POINTS of the run; non-finite values leave gaps."""
    window = max(1, len(values) // SMOOTHING_POINTS)
    return steps[window - 1:], np.convolve(values, np.ones(window) / window, mode="valid")


def plot_curves(axis, metrics, title, columns):
    shown = []
    for (column, label), colour in zip(columns.items(), COLOURS):
        values = np.where(np.isfinite(metrics[column]), metrics[column], np.nan)  # inf would wreck the axis
        axis.plot(metrics["step"], values, color=colour, alpha=0.25, linewidth=0.8)
        axis.plot(*smoothed(metrics["step"], values), color=colour, linewidth=1.6, label=label)
        shown.append(values)
    # The first few steps (an untrained critic, a penalty of 50) would squash the rest of the run.
    finite = np.concatenate(shown)
    finite = finite[np.isfinite(finite)]
    low, high = np.percentile(finite, [CURVE_PERCENTILE, 100 - CURVE_PERCENTILE]) if finite.size else (0, 0)
    if high > low:
        margin = 0.1 * (high - low)
        axis.set_ylim(min(low - margin, 0), max(high + margin, 0))  # keep 0 in view: the sign matters
    axis.axhline(0, color="grey", linewidth=0.5)
    axis.set(xlabel="critic / D step", title=title)
    axis.legend(fontsize="small")


def plot_quality(axis, curve, floor, top):
    """SWD against epoch on one y-scale (0 to top) for every run, with the real-vs-real floor."""
    if len(curve) < 2:
        axis.text(0.5, 0.5, "no snapshots scored:\nnone kept (snapshot_every),\nor unreadable (see the table)",
                  ha="center", va="center")
        axis.set_axis_off()
        return
    epochs, values = zip(*curve)
    axis.plot(epochs, values, marker="o", color="tab:purple", label="generator")
    axis.axhline(floor, color="grey", linestyle="--", linewidth=1, label="real vs real")
    axis.set(xlabel="epoch", ylabel="SWD x10^3", ylim=(0, top), title="SWD during training (lower is better)")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    axis.legend(fontsize="small")


def save_figure(runs, scores, floors, path, samples_shown, seed):
    """comparison.png: per run, samples from the shared noise, losses, critic gap, SWD by epoch.

    The SWD column is left out when no run kept snapshots.
    """
    panels = [name for name in PANEL_WIDTHS if name != "quality" or any(len(score.curve) > 1 for score in scores)]
    top = 1.1 * max(value for score in scores for _, value in score.curve)
    widths = [PANEL_WIDTHS[name] for name in panels]
    figure = Figure(figsize=(sum(widths), ROW_HEIGHT * len(runs)), layout="constrained")
    axes = figure.subplots(len(runs), len(panels), squeeze=False, gridspec_kw={"width_ratios": widths})
    for row, (run, score) in zip(axes, zip(runs, scores)):
        grid = make_grid(score.samples[:samples_shown], nrow=math.ceil(math.sqrt(samples_shown)), padding=1)
        row[0].imshow(grid.permute(1, 2, 0).numpy())
        row[0].set_axis_off()
        row[0].set_title(f"{run.variant}: {run.folder.name}\nSWD {score.swd['avg']:.2f} x10^3, "
                         f"diversity {score.diversity:.2f}", fontweight="bold")
        for axis, (title, columns) in zip(row[1:3], LOSS_PANELS):
            if len(run.metrics["step"]):
                plot_curves(axis, run.metrics, title, columns)
        if "quality" in panels:
            plot_quality(row[3], score.curve, floors[run.config.img_size]["avg"], top)
    figure.suptitle(f"{len(runs)} run{'s' if len(runs) > 1 else ''}; samples from the same noise (seed {seed}) for every run",
                    fontsize="x-large")
    figure.savefig(path, dpi=DPI)


# ------------------------------------------------------------------------------- main
def build_parser():
    parser = argparse.ArgumentParser(
        description="Compare finished GAN runs (gan_complete.py, wgan_clip.py, dcgan.py output folders)\n"
        "without retraining: a figure of samples, losses and SWD by epoch per run, and a Markdown\n"
        "table of sizes, budgets, SWD (and FID/KID when torchmetrics is installed), diversity and\n"
        "warnings. Any bad run folder stops the comparison (exit 2) before anything is written.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"""outputs in --out-dir:
  comparison.png  one row per run: samples from the shared noise, losses and the critic gap
                  against step (faint: raw, solid: smoothed), SWD against epoch from the
                  run's snapshots/ (kept every snapshot_every epochs)
  comparison.md   the table (also printed), SWD per pyramid level, a verdict, caveats

quality:
  SWD        sliced Wasserstein distance (Karras et al. 2018, App. D) x10^3, lower is better:
             Laplacian pyramid down to {SWD_MIN_RESOLUTION} px; per level, {SWD_PATCHES_PER_IMAGE} random
             {SWD_PATCH}x{SWD_PATCH} patches per image and {SWD_DIRECTIONS} random projections; "real vs real"
             is the floor at this sample size
  FID / KID  torchmetrics, only when it and its Inception weights are installed
  diversity  mean pairwise distance of generated over real images at {DIVERSITY_SIZE} px;
             below {COLLAPSE_RATIO} the run is flagged as mode-collapsed
  caveats    budgets (images seen, wall time, epochs, image size) differing by > {BUDGET_TOLERANCE:.0%}""",
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with config.json, run_info.json, "
                        "metrics.csv and generator.pkl; snapshots/ is optional)")
    parser.add_argument("--out-dir", type=Path, default=Path("comparison"),
                        help="where comparison.png and comparison.md go (default: comparison)")
    parser.add_argument("--num-images", type=int, default=1000,
                        help="generated and real images per quality measurement; capped at half the real set, "
                        "so that a disjoint real sample gives the real-vs-real floor (default: 1000)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="preprocess cache folder of the real images (default: the first run's cache_path "
                        "from run_info.json)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the shared noise, the real sample and the SWD projections (default: 0)")
    parser.add_argument("--samples", type=int, default=16, help="samples shown per run in the figure (default: 16)")
    parser.add_argument("--device", default="cpu", help="device for the generators and FID/KID (default: cpu)")
    parser.add_argument("--no-snapshots", action="store_true",
                        help="score only the final generators, not the snapshots (one SWD each)")
    parser.add_argument("--no-fid", action="store_true",
                        help="skip FID/KID even when torchmetrics is installed (Inception is slow on a CPU)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.num_images < 2 or args.samples < 1:
            raise RunError("--num-images must be at least 2 and --samples at least 1")
        check_device(args.device)
        check_writable(args.out_dir)
        runs = [load_run(folder, args.device) for folder in args.runs]
        cache = args.cache or runs[0].info.get("cache_path")
        if not cache:
            raise RunError(f"{runs[0].folder}/run_info.json names no cache_path; pass --cache")
        all_real = load_real_images(cache)
        num_images = min(args.num_images, len(all_real) // 2)
        if num_images < 2:
            raise RunError(f"the cache {cache} holds {len(all_real)} images; SWD needs at least 4")
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    order = torch.randperm(len(all_real), generator=torch.Generator().manual_seed(args.seed))
    real, reference = all_real[order[:num_images]], all_real[order[num_images:2 * num_images]]

    caveats = budget_caveats(runs)
    caches = {str(run.info.get("cache_path")) for run in runs}
    if len(caches) > 1:
        caveats.append(f"the runs trained on different caches ({', '.join(sorted(caches))}); "
                       f"all are scored against {cache}")
    if num_images < args.num_images:
        caveats.append(f"only {num_images} images per side (half of the {len(all_real)} real images): "
                       "SWD is noisier and higher with fewer images")
    inception = InceptionMetrics(real, args.device, enabled=not args.no_fid)
    scores, floors = score_runs(runs, real, reference, num_images, args.seed, inception, not args.no_snapshots)

    markdown = report(runs, scores, floors, caveats, num_images, len(all_real))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "comparison.md").write_text(markdown)
    save_figure(runs, scores, floors, args.out_dir / "comparison.png", min(args.samples, num_images), args.seed)
    print(markdown)
    print(f"wrote {args.out_dir / 'comparison.md'} and {args.out_dir / 'comparison.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
