"""The figures every training script writes for a person to look at, the same for all three methods.

    losses         training_losses.png: the losses against the step, raw and smoothed
    latent space   latent_space_analysis.png, latent_l2_norms.txt, interpolation.png: are the z's of
                   similar images closer? (classical MDS of the chosen z's, slerp between them)
    traversal      latent_traversal.png: one latent dimension at a time, and the two directions of z
                   that change the image most
    classes        samples_per_class.png: labelled rows of a conditional generator's classes

Kept apart from gan_complete.py, wgan_clip.py and dcgan.py as preprocess.py is: these are no part of
any method, and each script stays the one file that tells its method. Every function takes images or
a draw(z) -> images function, never a model, and writes whole files (preprocess.write_atomically).
"""

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from preprocess import write_atomically

# rows of one samples_per_class page: the 102 flower classes fill 3 legible pages
CLASSES_PER_PAGE = 34


# rows of latent_traversal.png per z: the latent dimensions that change the image most
TRAVERSAL_DIMS = 6


TRAVERSAL_STEPS = 7  # images along a traversal row (and the grid's side), from -3 to +3 sigma


# metrics.csv: the update each logged value comes from, and the column that marks it skipped by the
# fp16 loss scaler (the scripts leave such a value blank when it is not finite)
SKIPPED_BY = {
    "d_loss": "d_skipped",
    "w_dist": "d_skipped",
    "gp": "d_skipped",
    "g_loss": "g_skipped",
}


def smooth(values, window):
    if len(values) < window or window < 2:
        return np.arange(len(values)), values
    return np.arange(window - 1, len(values)), np.convolve(
        values, np.ones(window) / window, mode="valid"
    )


def plot_losses(metrics, path, variant, critic_view):
    """training_losses.png: the losses against the step (raw, faint) and a moving average. metrics:
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
        (right, [("w_dist", "w_dist"), ("gp", "gp")]),
    )
    for ax, columns in panels:
        shown = []
        for column, label in columns:
            kept = metrics[SKIPPED_BY[column]] == 0
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
    """A grid with a name at the left of each row, pixel for pixel (matplotlib, no display)."""
    from matplotlib.figure import Figure

    grid = make_grid(images, nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    fig = Figure(figsize=(2 + grid.size(2) / 100, 0.6 + grid.size(1) / 100), layout="constrained")
    axis = fig.subplots()
    axis.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    axis.set_yticks(
        [(images.size(-1) + 2) * (n + 0.5) + 1 for n in range(len(row_names))], row_names
    )
    axis.set_xticks([])
    axis.set_title(title)
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100))


def class_label(name):
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


def classical_mds(points):
    """2-D coordinates whose pairwise L2 distances match the points' as well as 2-D can (Torgerson's
    classical MDS: the top two eigenvectors of the double-centred squared distances)."""
    squared = torch.cdist(points.double(), points.double()) ** 2
    centring = torch.eye(len(points), dtype=torch.float64) - 1 / len(points)
    # ascending eigenvalues
    values, vectors = torch.linalg.eigh(-0.5 * centring @ squared @ centring)
    return (vectors[:, -2:].flip(1) * values[-2:].flip(0).clamp(min=0).sqrt()).float()


@torch.no_grad()
def latent_space_analysis(draw, config, out_dir, variant, within="", count=3):
    """Are the z's of similar images closer? latent_space_analysis.png, latent_l2_norms.txt,
    interpolation.png. draw(z): images in [-1, 1]; a conditional run draws the whole pool in one
    class (within names it), so that the pairs differ by z alone."""
    from matplotlib.figure import Figure
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    z = torch.randn(
        config.latent_pool, config.z_dim, generator=torch.Generator().manual_seed(config.seed + 1)
    )
    images = draw(z)
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
    baseline = latent_distance.mean().item()
    correlation = torch.corrcoef(torch.stack([image_distance, latent_distance]))[0, 1].item()

    lines = [
        f"{variant} latent-space analysis: {len(z)} images from z ~ N(0, I), z_dim = "
        f"{config.z_dim}{within}",
        "image distance = L2 between 32x32 downsampled images in [-1, 1]; z distance = L2 between "
        "z's",
        "",
    ]
    means = {}
    for name, pairs in groups.items():
        lines.append(f"the {count} most {name} pairs of images:")
        for i, j, k in pairs:
            lines.append(
                f"  z#{i:<4d} z#{j:<4d} image distance {image_distance[k]:8.3f}   "
                f"z L2 distance {latent_distance[k]:8.3f}"
            )
        means[name] = float(np.mean([latent_distance[k].item() for _, _, k in pairs]))
        lines.append(f"  mean z L2 distance: {means[name]:.3f}\n")
    lines += [
        f"baseline: mean z L2 distance over all {len(first)} pairs: {baseline:.3f} "
        f"(sqrt(2 * z_dim) = {math.sqrt(2 * config.z_dim):.3f})",
        f"correlation of image distance and z distance over all pairs: {correlation:+.3f}",
        "",
        f"answer: the z's of the most similar images are {means['similar'] / baseline:.0%} of the "
        "baseline distance apart, those of the most dissimilar "
        f"{means['dissimilar'] / baseline:.0%}.",
    ]
    write_atomically(
        Path(out_dir) / "latent_l2_norms.txt", lambda f: f.write(("\n".join(lines) + "\n").encode())
    )

    # PCA of isotropic noise keeps ~2/z_dim of its variance: distances there say nothing. MDS of the
    # chosen z's keeps their pairwise distances as well as 2-D can, and the plot says how well.
    chosen = [index for pairs in groups.values() for i, j, _ in pairs for index in (i, j)]
    points = classical_mds(z[chosen])
    pairs_first, pairs_second = torch.triu_indices(len(chosen), len(chosen), 1)
    true, drawn = (torch.cdist(p, p)[pairs_first, pairs_second] for p in (z[chosen], points))
    stress = ((true - drawn).square().sum() / true.square().sum()).sqrt().item()
    fit = torch.corrcoef(torch.stack([true, drawn]))[0, 1].item()
    position = dict(zip(chosen, points.numpy()))
    fig = Figure(figsize=(15, 6.5), layout="constrained")
    scatter, histogram = fig.subplots(1, 2, width_ratios=[1.6, 1])
    # grey: RGB
    thumbnails = ((images + 1) / 2).clamp(0, 1).expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()
    for (name, pairs), color, style in zip(groups.items(), ("tab:blue", "tab:red"), ("-", "--")):
        for n, (i, j, k) in enumerate(pairs):
            scatter.plot(
                *zip(position[i], position[j]),
                style,
                color=color,
                marker="o",
                label=f"{name} pairs" if n == 0 else None,
            )
            scatter.annotate(
                f"{latent_distance[k]:.1f}", (position[i] + position[j]) / 2, color=color
            )
            for index in (i, j):
                box = AnnotationBbox(
                    OffsetImage(thumbnails[index], zoom=40 / config.img_size),
                    position[index],
                    xybox=(22, 22),
                    boxcoords="offset points",
                    frameon=True,
                    bboxprops={"edgecolor": color, "linewidth": 2},
                )
                scatter.add_artist(box)
            histogram.axvline(latent_distance[k], color=color, linestyle=style)
    scatter.set_xlabel("MDS axis 1 (z-space units)")
    scatter.set_ylabel("MDS axis 2")
    scatter.set_aspect("equal", adjustable="datalim")
    scatter.set_title(
        f"the {len(chosen)} chosen z's, classical MDS to 2-D (labels: z L2 distance)\n"
        f"fit: stress {stress:.2f}, correlation of drawn and true distances {fit:.2f}"
    )
    scatter.legend(loc="lower right")
    histogram.hist(latent_distance.numpy(), bins=60, color="lightgrey", label="all pairs")
    histogram.axvline(baseline, color="black", label=f"mean of all pairs {baseline:.2f}")
    histogram.set_xlabel("L2 distance between z's")
    histogram.set_title("z distances: chosen pairs (lines) against all pairs")
    histogram.legend()
    write_atomically(
        Path(out_dir) / "latent_space_analysis.png", lambda f: fig.savefig(f, format="png", dpi=100)
    )

    path = torch.cat([slerp(z[i], z[j], 10) for pairs in groups.values() for i, j, _ in pairs])
    rows = [
        f"{name} {n + 1}: z#{i} to z#{j}"
        for name, pairs in groups.items()
        for n, (i, j, _) in enumerate(pairs)
    ]
    save_labelled_grid(
        draw(path),
        rows,
        Path(out_dir) / "interpolation.png",
        f"slerp between the z's of each pair, 10 steps{within} (see latent_l2_norms.txt)",
        nrow=10,
    )


@torch.no_grad()
def latent_traversal(draw, config, out_dir, variant, count=2):
    """latent_traversal.png. Left: for `count` z's, one dimension at a time moved over -3..+3 sigma,
    a row each, the dimensions that change the image most first. Right: a grid over the two
    directions of z that change the image most at the first z (the top left singular vectors of the
    generator's finite-difference Jacobian there). draw(z): images in [-1, 1]."""
    from matplotlib.figure import Figure

    z = torch.randn(count, config.z_dim, generator=torch.Generator().manual_seed(config.seed + 4))
    step, values = 1e-2, torch.linspace(-3, 3, TRAVERSAL_STEPS)
    # row d: how the image changes per unit of dimension d, at each z
    jacobians = [
        (draw(one + step * torch.eye(config.z_dim)) - draw(one[None])).flatten(1) / step
        for one in z
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
            names.append(f"z{n + 1}, dim {d}")
    # unit vectors in z-space
    directions = torch.linalg.svd(jacobians[0], full_matrices=False)[0][:, :2]
    plane = torch.stack(
        [z[0] + a * directions[:, 0] + b * directions[:, 1] for b in values for a in values]
    )
    side = (config.img_size + 2) / 100  # inches per image, pixel for pixel at dpi 100
    fig = Figure(
        figsize=(2 * TRAVERSAL_STEPS * side + 3, len(rows) * side + 1.2), layout="constrained"
    )
    fig.suptitle(f"{variant}: z moved from -3 to +3 sigma")
    left, right = fig.subplots(1, 2)
    for axis, images, title in (
        (left, draw(torch.cat(rows)), "one dimension at a time"),
        (right, draw(plane), "along the 2 most changing directions"),
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
