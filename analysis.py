"""The figures every training script writes for a person to look at, the same for all four methods.

    losses         training_losses.png: the losses against the step, raw and smoothed
    latent space   latent_space_analysis.png, latent_l2_norms.txt, latent_pairs.csv,
                   interpolation.png: are the z's of similar images closer? (the pairs, their
                   distances among all pairs', their z's; slerp between them)
    traversal      latent_traversal.png: one latent dimension at a time, and the two directions of z
                   that change the image most
    classes        samples_per_class.png: labelled rows of a conditional generator's classes
    progress       training_progress.gif: the fixed-noise grid of every epoch, as an animation
    inversion      inversion.png, inversion_interpolation.png (--invert): real photos found in z

Kept apart from gan_complete.py, wgan_clip.py, dcgan.py and sngan.py as preprocess.py and
machinery.py are: these are no part of any method, and each script tells only its method. Every
function takes images or a draw(z, labels) -> images function (labels None for an unconditional
generator), never a model, and writes whole files (preprocess.write_atomically).
"""

import csv
import io
import math
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

import preprocess
from preprocess import write_atomically

# rows of one samples_per_class page: the 102 flower classes fill 3 legible pages
CLASSES_PER_PAGE = 34


# rows of latent_traversal.png per z: the latent dimensions that change the image most
TRAVERSAL_DIMS = 6


TRAVERSAL_STEPS = 7  # images along a traversal row (and the grid's side), from -3 to +3 sigma


INTERPOLATION_STEPS = 10  # images along each pair's slerp in interpolation.png


# matplotlib does not wrap a title to its figure: at 12 pt, 100 dpi, a character is 0.09 inch on
# average (DejaVu Sans); 0.1 leaves room for wide letters
TITLE_CHAR_INCHES = 0.1


# training_progress.gif: small enough for a report (2 to 3 MB at 64 px)
GIF_FRAMES = 24  # epochs shown at most, evenly spread; the first and the last always
GIF_WIDTH = 360  # px: the 8 x 8 grid at about 44 px an image
GIF_FRAME_MS, GIF_LAST_MS = 250, 2500  # the last epoch is held


# --invert: a photo's place in z, by Adam on z from several random starts at once
INVERT_STEPS = 300
INVERT_STARTS = 4  # per photo (and per class tried): the closest image is kept
INVERT_LR = 0.05
INVERT_CLASSES = 3  # a conditional generator tries the classes whose random images come closest
INVERT_SCREEN = 16  # random images of each class that choose them
INVERT_BETWEEN = 8  # images on the way from one photo's z to the other's
INVERT_SHOWN = 128  # px an image is drawn at in the two figures (nearest: no detail invented)


def skipped_by(column):
    """metrics.csv's column that marks the update a logged value comes from as skipped by the fp16
    loss scaler (the scripts leave such a value blank when it is not finite): the generator's loss
    from its own step, every other value from the critic's."""
    return "g_skipped" if column == "g_loss" else "d_skipped"


def smooth(values, window):
    if len(values) < window or window < 2:
        return np.arange(len(values)), values
    return np.arange(window - 1, len(values)), np.convolve(
        values, np.ones(window) / window, mode="valid"
    )


def plot_losses(metrics, path, variant, critic_view, view_columns):
    """training_losses.png: the losses against the step (raw, faint) and a moving average, and
    beside them the method's view_columns (its critic's other metrics), titled critic_view. metrics:
    {column of metrics.csv: its values}. The steps whose update the fp16 loss scaler skipped are
    left out of the curves of that update's values, and counted in the title."""
    from matplotlib.figure import Figure  # the OO API: no pyplot, no display, never blocks

    steps = metrics["step"]
    if not len(steps):
        return
    fig = Figure(figsize=(13, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    panels = (
        (left, [("d_loss", "D loss"), ("g_loss", "G loss")]),
        (right, [(column, column) for column in view_columns]),
    )
    for ax, columns in panels:
        shown = []
        for column, label in columns:
            kept = metrics[skipped_by(column)] == 0
            (line,) = ax.plot(steps[kept], metrics[column][kept], alpha=0.25, linewidth=0.7)
            window = max(1, kept.sum() // 100)
            x, y = smooth(metrics[column][kept], window)
            ax.plot(
                steps[kept][x],
                y,
                color=line.get_color(),
                label=f"{label} (moving mean of {window})" if window > 1 else label,
            )
            shown.append(metrics[column][kept])
        values = np.concatenate(shown)
        values = values[np.isfinite(values)]
        if len(values):  # the first steps' spikes would squash the rest of the curve
            low, high = np.percentile(values, [0.5, 99.5])
            ax.set_ylim(low - 0.1 * (high - low) - 1e-6, high + 0.1 * (high - low) + 1e-6)
        ax.set_xlabel("critic step")
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.legend()
    skipped = int(metrics["d_skipped"].sum())
    note = (
        f" ({skipped} critic steps skipped by the fp16 loss scaler, not drawn)" if skipped else ""
    )
    left.set_title(f"{variant}: losses{note}")
    right.set_title(critic_view)
    write_atomically(Path(path), lambda f: fig.savefig(f, format="png", dpi=110))


def save_labelled_grid(images, row_names, path, title, nrow):
    """A grid with a name at the left of each row, pixel for pixel, under its title wrapped to the
    figure's width (matplotlib, no display)."""
    from matplotlib.figure import Figure

    grid = make_grid(images, nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    grid_width, grid_height = grid.size(2) / 100, grid.size(1) / 100  # inches at dpi 100
    names_width = 2  # inches left of the grid for the row names
    width = names_width + grid_width
    fig = Figure(figsize=(width, grid_height))
    # placed by hand: a layout engine scales the grid to fill the figure, and then moves the row
    # names past its left edge
    axis = fig.add_axes((names_width / width, 0, grid_width / width, 1))
    axis.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    axis.set_yticks(
        [(images.size(-1) + 2) * (n + 0.5) + 1 for n in range(len(row_names))], row_names
    )
    axis.set_xticks([])
    axis.set_title("\n".join(textwrap.wrap(title, int(width / TITLE_CHAR_INCHES))))
    # "tight": the PNG grows to hold the title and the row names, wherever they reach
    write_atomically(
        path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight", pad_inches=0.1)
    )


def class_label(name):
    """A class as the figures name it: a Flowers class by its number and official name ("054
    sunflower"), another number as "class N", any other name as it is."""
    if flower := preprocess.flower_name(name):
        return f"{name} {flower}"
    return f"class {name}" if name.isdigit() else name


def save_per_class_grid(images, names, out_dir):
    """samples_per_class.png, one row a class; pages of CLASSES_PER_PAGE rows (_p1, _p2, ...)
    beyond."""
    pages = math.ceil(len(names) / CLASSES_PER_PAGE)
    for page in range(pages):
        rows = slice(page * CLASSES_PER_PAGE, (page + 1) * CLASSES_PER_PAGE)
        name = "samples_per_class.png" if pages == 1 else f"samples_per_class_p{page + 1}.png"
        title = f"{images.size(1)} samples of each class" + (
            f", page {page + 1} of {pages}" if pages > 1 else ""
        )
        save_labelled_grid(
            images[rows].flatten(0, 1),
            [class_label(n) for n in names[rows]],
            Path(out_dir) / name,
            title,
            nrow=images.size(1),
        )


def slerp(z0, z1, steps):
    """Spherical interpolation: Gaussian z's live near a sphere, a straight line cuts inside it."""
    t = torch.linspace(0, 1, steps)[:, None]
    omega = torch.arccos(torch.clamp(F.cosine_similarity(z0, z1, dim=0), -1, 1))
    if omega < 1e-4:
        return (1 - t) * z0 + t * z1
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


def pick_pairs(order, first, second, count, used):
    """The first `count` pairs in `order` whose images are not in `used` (which grows): every image
    shown is a different one, and none is both in a similar and in a dissimilar pair."""
    pairs = []
    for k in order.tolist():
        i, j = int(first[k]), int(second[k])
        if i not in used and j not in used:
            pairs.append((i, j, k))
            used.update((i, j))
        if len(pairs) == count:
            break
    return pairs


@torch.no_grad()
def latent_space_analysis(draw, config, out_dir, variant, class_names=None, count=3):
    """Are the z's of similar images closer? Writes latent_l2_norms.txt (the answer in numbers),
    latent_space_analysis.png (the pairs, their distances against all pairs', their z's),
    latent_pairs.csv (the chosen z's themselves) and interpolation.png. draw(z, labels): images in
    [-1, 1]. class_names None or empty: an unconditional generator, drawn with labels None; else
    each image's class is drawn uniformly over the classes, so that the pairs come from all the
    generator draws, not from one class's images."""
    random = torch.Generator().manual_seed(config.seed + 1)
    z = torch.randn(config.latent_pool, config.z_dim, generator=random)
    if class_names:
        # after z, from the same generator: the pool's z's are those of an unconditional run
        labels = torch.randint(len(class_names), (len(z),), generator=random)
        classes = [class_label(class_names[label]) for label in labels.tolist()]
        over_classes = f"drawn uniformly over the {len(class_names)} classes"
    else:
        labels = None
        classes = [""] * len(z)
        over_classes = ""
    images = draw(z, labels)
    # Image distance on 32x32 area-downsampled pixels: shape and colour, not pixel noise.
    features = F.interpolate(images, size=min(32, config.img_size), mode="area").flatten(1)
    first, second = torch.triu_indices(len(z), len(z), 1)
    image_distance = torch.cdist(features, features)[first, second]
    latent_distance = torch.cdist(z, z)[first, second]
    order, used = image_distance.argsort(), set()
    groups = {
        "similar": pick_pairs(order, first, second, count, used),
        "dissimilar": pick_pairs(order.flip(0), first, second, count, used),
    }
    pairs = [
        LatentPair(
            name=f"{group} {n + 1}",
            first=i,
            second=j,
            first_class=classes[i],
            second_class=classes[j],
            image_distance=image_distance[k].item(),
            z_distance=latent_distance[k].item(),
            z_percentile=(latent_distance < latent_distance[k]).float().mean().item(),
        )
        for group, chosen in groups.items()
        for n, (i, j, k) in enumerate(chosen)
    ]
    summary = LatentSummary(
        pool=len(z),
        pairs=len(first),
        baseline=latent_distance.mean().item(),
        correlation=torch.corrcoef(torch.stack([image_distance, latent_distance]))[0, 1].item(),
    )
    write_latent_report(pairs, summary, config, out_dir, variant, over_classes, count)
    write_latent_pairs(pairs, z, out_dir)
    plot_latent_pairs(
        pairs, summary, images, z, image_distance, latent_distance, out_dir, over_classes
    )
    save_interpolation(draw, pairs, z, labels, out_dir)


def save_interpolation(draw, pairs, z, labels, out_dir):
    """interpolation.png: a row a pair, the images along the slerp from its first z to its second;
    a conditional generator draws the first half of each row in the first image's class and the
    second half in the second's, as inversion_interpolation.png does."""
    path = torch.cat([slerp(z[pair.first], z[pair.second], INTERPOLATION_STEPS) for pair in pairs])
    first_half = torch.arange(INTERPOLATION_STEPS) < INTERPOLATION_STEPS / 2
    path_labels = None
    if labels is not None:
        path_labels = torch.cat(
            [torch.where(first_half, labels[pair.first], labels[pair.second]) for pair in pairs]
        )
    rows = []
    for pair in pairs:
        classes = f"{pair.first_class} to {pair.second_class}\n" if labels is not None else ""
        rows.append(
            f"{pair.name}: z#{pair.first} to z#{pair.second}\n{classes}"
            f"image {pair.image_distance:.2f}, z {pair.z_distance:.2f}"
        )
    halves = ""
    if labels is not None:
        halves = (
            f"; the first {int(first_half.sum())} in the first image's class, "
            "the rest in the second's"
        )
    save_labelled_grid(
        draw(path, path_labels),
        rows,
        Path(out_dir) / "interpolation.png",
        f"slerp from each pair's first z to its second, {INTERPOLATION_STEPS} steps{halves}; "
        "L2 distances at left",
        nrow=INTERPOLATION_STEPS,
    )


@dataclass
class LatentPair:
    """One chosen pair of the latent-space analysis."""

    name: str  # "similar 1", ..., "dissimilar 3"
    first: int  # index of its first z in the pool
    second: int
    first_class: str  # the class its first image is drawn in ("" for an unconditional generator)
    second_class: str
    image_distance: float  # L2 between the 32x32 downsampled images
    z_distance: float  # L2 between the z's
    z_percentile: float  # the fraction of all pairs whose z's are closer


@dataclass
class LatentSummary:
    pool: int  # images drawn
    pairs: int  # pairs among them
    baseline: float  # mean z distance over all pairs
    correlation: float  # of image and z distance over all pairs


def write_latent_report(pairs, summary, config, out_dir, variant, over_classes, count):
    """latent_l2_norms.txt: each chosen pair's distances, the groups' means against all pairs'."""
    lines = [
        f"{variant} latent-space analysis: {summary.pool} images from z ~ N(0, I), z_dim = "
        f"{config.z_dim}" + (f", their classes {over_classes}" if over_classes else ""),
        "image distance = L2 between 32x32 downsampled images in [-1, 1]; "
        "z distance = L2 between z's",
        "",
    ]
    means = {}
    for group in ("similar", "dissimilar"):
        members = [pair for pair in pairs if pair.name.startswith(group)]
        lines.append(f"the {count} most {group} pairs of images:")
        for pair in members:
            line = (
                f"  z#{pair.first:<4d} z#{pair.second:<4d} image distance "
                f"{pair.image_distance:8.3f}   z L2 distance {pair.z_distance:8.3f}"
            )
            if pair.first_class:
                line += f"   {pair.first_class}, {pair.second_class}"
            lines.append(line)
        means[group] = float(np.mean([pair.z_distance for pair in members]))
        lines.append(f"  mean z L2 distance: {means[group]:.3f}\n")
    lines += [
        f"baseline: mean z L2 distance over all {summary.pairs} pairs: {summary.baseline:.3f} "
        f"(sqrt(2 * z_dim) = {math.sqrt(2 * config.z_dim):.3f})",
        f"correlation of image distance and z distance over all pairs: {summary.correlation:+.3f}",
        "",
        f"answer: the z's of the most similar images are {means['similar'] / summary.baseline:.0%} "
        "of the baseline distance apart, those of the most dissimilar "
        f"{means['dissimilar'] / summary.baseline:.0%}.",
        "The chosen z's themselves: latent_pairs.csv.",
    ]
    text = ("\n".join(lines) + "\n").encode()
    write_atomically(Path(out_dir) / "latent_l2_norms.txt", lambda f: f.write(text))


def write_latent_pairs(pairs, z, out_dir):
    """latent_pairs.csv: the chosen z vectors, two rows a pair, with each image's class (blank for
    an unconditional generator) and the pair's distances."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["pair", "image", "z_index", "class", "image_distance", "z_distance"]
    writer.writerow(header + [f"z_{d}" for d in range(z.size(1))])
    for pair in pairs:
        members = (("a", pair.first, pair.first_class), ("b", pair.second, pair.second_class))
        for member, index, name in members:
            distances = [f"{pair.image_distance:.4f}", f"{pair.z_distance:.4f}"]
            writer.writerow([pair.name, member, index, name, *distances, *z[index].tolist()])
    text = buffer.getvalue().encode()
    write_atomically(Path(out_dir) / "latent_pairs.csv", lambda f: f.write(text))


def plot_latent_pairs(pairs, summary, images, z, image_distance, z_distance, out_dir, over_classes):
    """latent_space_analysis.png: left, each pair's two images side by side with its distances
    (and their classes below); middle, where the pairs fall among all pairs (image against z
    distance, and the z distances alone); right, the chosen z vectors themselves."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(17, 8.5), layout="constrained")
    columns = fig.add_gridspec(1, 3, width_ratios=[0.8, 1.3, 1.3])
    pair_axes = columns[0].subgridspec(len(pairs), 1).subplots()
    scatter, histogram = columns[1].subgridspec(2, 1).subplots()
    vectors = fig.add_subplot(columns[2])
    colours = {"similar": "tab:blue", "dissimilar": "tab:red"}

    for axis, pair in zip(pair_axes, pairs):
        colour = colours[pair.name.split()[0]]
        side_by_side = make_grid(images[[pair.first, pair.second]], nrow=2, padding=2, pad_value=1)
        picture = ((side_by_side + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()
        axis.imshow(picture, interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
        for spine in axis.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(2)
        axis.set_title(
            f"{pair.name}: image {pair.image_distance:.2f}, z {pair.z_distance:.2f}\n"
            f"(closer z's than {pair.z_percentile:.0%} of all pairs)",
            fontsize=9,
            color=colour,
        )
        if pair.first_class:
            axis.set_xlabel(f"{pair.first_class}  |  {pair.second_class}", fontsize=8)

    scatter.hexbin(image_distance.numpy(), z_distance.numpy(), gridsize=40, cmap="Greys", mincnt=1)
    for n, pair in enumerate(pairs):
        colour = colours[pair.name.split()[0]]
        point = (pair.image_distance, pair.z_distance)
        scatter.plot(*point, "o", color=colour, markersize=8)
        # inward from the plot's edge (similar pairs sit left, dissimilar right), alternately
        # above and below, so that two pairs on one spot stay readable
        scatter.annotate(
            pair.name,
            point,
            color=colour,
            fontsize=9,
            textcoords="offset points",
            xytext=(8 if pair.name.startswith("similar") else -72, 8 if n % 2 else -14),
        )
    scatter.set_xlabel("image distance (L2, 32x32)")
    scatter.set_ylabel("z distance (L2)")
    title = (
        f"all {summary.pairs:,} pairs of {summary.pool} images (grey) and the chosen 6; "
        f"correlation {summary.correlation:+.2f}"
    )
    if over_classes:
        title += f"\ntheir classes {over_classes}"
    scatter.set_title(title, fontsize=10)

    histogram.hist(z_distance.numpy(), bins=60, color="lightgrey", label="all pairs")
    histogram.axvline(summary.baseline, color="black", label=f"mean {summary.baseline:.2f}")
    for pair in pairs:
        group = pair.name.split()[0]
        histogram.axvline(
            pair.z_distance, color=colours[group], linestyle="-" if group == "similar" else "--"
        )
    histogram.set_xlabel("z distance (L2)")
    histogram.set_title(
        "z distances: the chosen pairs (blue: similar, red dashed: dissimilar)", fontsize=10
    )
    histogram.legend(fontsize=9)

    chosen = [index for pair in pairs for index in (pair.first, pair.second)]
    limit = z[chosen].abs().max().item()
    shown = vectors.imshow(
        z[chosen].numpy(),
        aspect="auto",
        cmap="coolwarm",
        vmin=-limit,
        vmax=limit,
        interpolation="nearest",
    )
    labels = [
        f"{pair.name} {member}" + (f", {name}" if name else "")
        for pair in pairs
        for member, name in (("a", pair.first_class), ("b", pair.second_class))
    ]
    vectors.set_yticks(range(len(labels)), labels, fontsize=9)
    vectors.set_xlabel("z dimension")
    vectors.set_title(
        "the chosen z vectors, two rows a pair (values in latent_pairs.csv)", fontsize=10
    )
    fig.colorbar(shown, ax=vectors, shrink=0.6, label="z value")
    write_atomically(
        Path(out_dir) / "latent_space_analysis.png", lambda f: fig.savefig(f, format="png", dpi=90)
    )


def repeated_class(classes, index, count):
    """count labels, all the class of z number index; None for an unconditional generator."""
    return None if classes is None else classes[index].repeat(count)


@torch.no_grad()
def latent_traversal(draw, config, out_dir, variant, class_names=None, count=2):
    """latent_traversal.png. Left: for `count` z's, one dimension at a time moved over -3..+3 sigma,
    a row each, the dimensions that change the image most first. Right: a grid over the two
    directions of z that change the image most at the first z (the top left singular vectors of the
    generator's finite-difference Jacobian there). draw(z, labels): images in [-1, 1].
    class_names None or empty: an unconditional generator, drawn with labels None; else each z
    gets one class at random (seeded) and keeps it in all its images, so that only z moves."""
    from matplotlib.figure import Figure

    random = torch.Generator().manual_seed(config.seed + 4)
    z = torch.randn(count, config.z_dim, generator=random)
    classes = torch.randint(len(class_names), (count,), generator=random) if class_names else None
    names_of_z = [
        f"z{n + 1}" + (f", {class_label(class_names[classes[n]])}" if class_names else "")
        for n in range(count)
    ]
    step, values = 1e-2, torch.linspace(-3, 3, TRAVERSAL_STEPS)
    # row d: how the image changes per unit of dimension d, at each z
    jacobians = [
        (
            draw(one + step * torch.eye(config.z_dim), repeated_class(classes, n, config.z_dim))
            - draw(one[None], repeated_class(classes, n, 1))
        ).flatten(1)
        / step
        for n, one in enumerate(z)
    ]
    dimensions = (
        torch.stack([j.norm(dim=1) for j in jacobians])
        .mean(0)
        .argsort(descending=True)[:TRAVERSAL_DIMS]
    )
    rows, names = [], []
    for n, one in enumerate(z):
        for d in dimensions.tolist():
            rows.append(
                one.repeat(TRAVERSAL_STEPS, 1).index_fill(1, torch.tensor([d]), 0)
                + torch.outer(values, torch.eye(config.z_dim)[d])
            )
            names.append(f"{names_of_z[n]}, dim {d}")
    row_classes = None
    if classes is not None:
        row_classes = classes.repeat_interleave(len(dimensions) * TRAVERSAL_STEPS)
    # unit vectors in z-space
    directions = torch.linalg.svd(jacobians[0], full_matrices=False)[0][:, :2]
    plane = torch.stack(
        [z[0] + a * directions[:, 0] + b * directions[:, 1] for b in values for a in values]
    )
    side = (config.img_size + 2) / 100  # inches per image, pixel for pixel at dpi 100
    fig = Figure(
        figsize=(2 * TRAVERSAL_STEPS * side + 3, len(rows) * side + 1.2), layout="constrained"
    )
    in_classes = ", each z in one class drawn at random" if class_names else ""
    fig.suptitle(f"{variant}: z moved from -3 to +3 sigma{in_classes}")
    left, right = fig.subplots(1, 2)
    row_images = draw(torch.cat(rows), row_classes)
    plane_images = draw(plane, repeated_class(classes, 0, len(plane)))
    for axis, images, title in (
        (left, row_images, "one dimension at a time"),
        (right, plane_images, f"along the 2 most changing directions at {names_of_z[0]}"),
    ):
        grid = make_grid(
            images, nrow=TRAVERSAL_STEPS, padding=2, normalize=True, value_range=(-1, 1)
        )
        axis.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ticks = [(config.img_size + 2) * (n + 0.5) + 1 for n in range(TRAVERSAL_STEPS)]
        axis.set_xticks(ticks, [f"{v:+.1f}" for v in values.tolist()])
        axis.set_title(title)
    left.set_yticks([(config.img_size + 2) * (n + 0.5) + 1 for n in range(len(rows))], names)
    right.set_yticks(ticks, [f"{v:+.1f}" for v in values.tolist()])
    right.set_xlabel("direction 1")
    right.set_ylabel("direction 2")
    write_atomically(
        Path(out_dir) / "latent_traversal.png", lambda f: fig.savefig(f, format="png", dpi=100)
    )


def save_progress_gif(out_dir):
    """training_progress.gif from the samples_epoch_XXX.png grids in out_dir (the same noise every
    epoch), oldest first, each captioned with its epoch. Nothing is written without grids."""
    epochs = {}
    for path in Path(out_dir).glob("samples_epoch_*.png"):
        number = re.fullmatch(r"samples_epoch_(\d+)", path.stem)
        if number:
            epochs[int(number[1])] = path
    # by the number, not the name: "1000" sorts before "500" as text, once a run passes epoch 999
    order = sorted(epochs)
    if not order:
        return
    picks = np.unique(np.linspace(0, len(order) - 1, min(GIF_FRAMES, len(order))).round())
    frames = []
    for epoch in (order[int(index)] for index in picks):
        with Image.open(epochs[epoch]) as grid:
            grid = grid.convert("RGB")
        if grid.width > GIF_WIDTH:
            height = round(grid.height * GIF_WIDTH / grid.width)
            grid = grid.resize((GIF_WIDTH, height), Image.Resampling.LANCZOS)
        frame = Image.new("RGB", (grid.width, grid.height + 16), "white")
        frame.paste(grid, (0, 0))
        ImageDraw.Draw(frame).text((4, grid.height + 2), f"epoch {epoch}", fill="black")
        frames.append(frame)
    write_atomically(
        Path(out_dir) / "training_progress.gif",
        lambda f: frames[0].save(
            f,
            format="GIF",
            save_all=True,
            append_images=frames[1:],
            duration=[GIF_FRAME_MS] * (len(frames) - 1) + [GIF_LAST_MS],
            loop=0,
        ),
    )


def image_distance(images, photos):
    """Per pair, the mean squared error of [-1, 1] pixels at full, half and quarter size, summed:
    the layout and colours count as much as the detail a 64 px generator cannot match."""
    total = 0
    for _ in range(3):
        total = total + (images - photos).square().flatten(1).mean(1)
        images, photos = F.avg_pool2d(images, 2), F.avg_pool2d(photos, 2)
    return total


def closest_classes(draw, photos, num_classes, z_dim, seed, count=INVERT_CLASSES):
    """long [n, count]: for each photo, the classes with a random image (of INVERT_SCREEN) closest
    to it. draw(z, labels) -> images."""
    z = torch.randn(INVERT_SCREEN, z_dim, generator=torch.Generator().manual_seed(seed))
    best = []
    with torch.no_grad():
        for c in range(num_classes):
            images = draw(z, torch.full((INVERT_SCREEN,), c, dtype=torch.long))
            pairs = image_distance(
                images[None].expand(len(photos), *images.shape).flatten(0, 1),
                photos[:, None].expand(-1, INVERT_SCREEN, *photos.shape[1:]).flatten(0, 1),
            )
            best.append(pairs.view(len(photos), INVERT_SCREEN).min(1).values)
    return torch.stack(best, 1).topk(min(count, num_classes), largest=False).indices


def onto_sphere(z):
    """Each z scaled to |z| = sqrt(z_dim): N(0, I) in many dimensions puts nearly all its z's near
    that sphere (|z|^2 / z_dim within about 1 +- 3 sqrt(2 / z_dim)), so the generator was trained
    on z's there and hardly ever saw a longer or a shorter one."""
    return z * (math.sqrt(z.size(1)) / z.norm(dim=1, keepdim=True))


@dataclass
class Inversion:
    """What invert finds for each of n photos."""

    z: torch.Tensor  # [n, z_dim], on the sphere |z| = sqrt(z_dim)
    classes: torch.Tensor  # long [n]: the class it is drawn in (0 for an unconditional generator)
    images: torch.Tensor  # [n, C, H, W]: the image drawn there, in [-1, 1]
    rms: torch.Tensor  # [n]: RMS error of that image against the photo, in 0-255 levels
    z_norm: torch.Tensor  # [n]: |z| / sqrt(z_dim) measured on z: 1 where N(0, I) puts z


def invert(draw, photos, candidates, z_dim, seed, steps=INVERT_STEPS):
    """For each photo ([-1, 1], [n, C, H, W]) the z, and the class among its candidates (long
    [n, k]; zeros for an unconditional generator), whose image is closest by image_distance.

    Adam on z from INVERT_STARTS random starts per photo and candidate, all in one batch, on the
    sphere of onto_sphere: the starts are on it, Adam sees only the gradient along it, and each
    step's z goes back onto it. Left free, the search drifts to z's far longer than any the
    generator was trained on, and matches a photo with images it was never taught to draw.
    draw(z, labels) -> images, differentiable in z. Only z's gradient is computed, never the
    weights'; freeze the generator all the same (generator.requires_grad_(False)), so that
    autograd keeps no graph for its weights. Returns an Inversion."""
    n, k = candidates.shape
    starts = k * INVERT_STARTS
    z = torch.randn(n * starts, z_dim, generator=torch.Generator().manual_seed(seed))
    z = onto_sphere(z).requires_grad_()
    labels = candidates.repeat_interleave(INVERT_STARTS, dim=1).flatten()
    targets = photos.repeat_interleave(starts, dim=0)
    optimiser = torch.optim.Adam([z], lr=INVERT_LR)
    for _ in range(steps):
        loss = image_distance(draw(z, labels), targets).sum()
        (gradient,) = torch.autograd.grad(loss, [z])
        with torch.no_grad():
            # less its part along z, which the projection would undo: left in, it fills Adam's
            # per-coordinate scale, and the steps along the sphere shrink (measured: the search
            # then stops short of the closest image on it)
            radial = (gradient * z).sum(1, keepdim=True) / z.square().sum(1, keepdim=True)
            z.grad = gradient - radial * z
        optimiser.step()
        with torch.no_grad():
            z.copy_(onto_sphere(z))
    with torch.no_grad():
        images = draw(z, labels)
        kept = image_distance(images, targets).view(n, starts).argmin(1) + torch.arange(n) * starts
        rms = (images[kept] - photos).square().flatten(1).mean(1).sqrt() * 127.5
        return Inversion(
            z=z[kept].detach(),
            classes=labels[kept],
            images=images[kept],
            rms=rms,
            z_norm=z[kept].norm(dim=1) / math.sqrt(z_dim),
        )


def enlarged(images):
    """Images at INVERT_SHOWN px at least, each pixel repeated: small images stay legible."""
    factor = max(1, INVERT_SHOWN // images.shape[-1])
    return F.interpolate(images, scale_factor=factor, mode="nearest")


def save_inversion(photos, found, names, out_dir):
    """inversion.png: each photo beside the closest image the generator draws, with the RMS error
    (and the class) in the row's name."""
    save_labelled_grid(
        enlarged(torch.stack([photos, found], 1).flatten(0, 1)),
        names,
        Path(out_dir) / "inversion.png",
        "photo | closest in z",
        nrow=2,
    )


def save_inversion_path(draw, photos, z, labels, out_dir):
    """inversion_interpolation.png: the first photo, the images along the slerp from its z to the
    second's (a conditional generator draws each point in the nearer photo's class), the second."""
    path = slerp(z[0], z[1], INVERT_BETWEEN)
    classes = torch.where(torch.arange(INVERT_BETWEEN) < INVERT_BETWEEN / 2, labels[0], labels[1])
    with torch.no_grad():
        between = draw(path, classes)
    save_labelled_grid(
        enlarged(torch.cat([photos[:1], between, photos[1:2]])),
        ["photo 1 ... photo 2"],
        Path(out_dir) / "inversion_interpolation.png",
        "from one photo's z to the other's",
        nrow=INVERT_BETWEEN + 2,
    )
