"""Sharpness of two caches of the same images: is the new data stage's output blurrier than the old
one's?

    python docs/data_stage/compare_sharpness.py OLD_CACHE NEW_CACHE \
        --figure docs/data_stage/side_by_side.png

OLD_CACHE and NEW_CACHE are cache folders (cache/coursework-..._s64_r2_a15_seed0) built from the
same files. Images are paired by class folder and file name. For the unrotated and the rotated
copies apart it prints a Markdown table: the mean variance of the Laplacian (of the luma; higher is
sharper), the share of images whose new variance is below 95% of the old one, and the mean absolute
pixel difference. The figure shows a few pairs side by side at 3x (nearest neighbour, so no
smoothing of its own).
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as PIL's convert("L")
FIGURE_ZOOM = 3


def laplacian_variance(pixels):
    return ndimage.laplace(pixels.astype(np.float64) @ LUMA).var()


def with_gaps(tiles, axis, gap=4):
    """Tiles (HxWx3) joined along axis with white gap-px strips between them."""
    shape = list(tiles[0].shape)
    shape[axis] = gap
    white = np.full(shape, 255, dtype=np.uint8)
    return np.concatenate([part for tile in tiles for part in (tile, white)][:-1], axis=axis)


def pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--figure", type=Path, help="write a side-by-side PNG here")
    parser.add_argument(
        "--figure-images", type=int, default=4, help="pairs in the figure (default: %(default)s)"
    )
    args = parser.parse_args()

    names = sorted(
        path.relative_to(args.old)
        for path in args.old.glob("*/*.png")
        if (args.new / path.relative_to(args.old)).is_file()
    )
    if not names:
        raise SystemExit(f"error: no PNG is in both {args.old} and {args.new}")
    print(f"{len(names)} images in both caches\n")
    print(
        "| copies | images | Laplacian variance old | new | new / old | new < 95% of old | mean "
        "abs difference |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind in ("unrotated", "rotated"):
        chosen = [name for name in names if ("_r" in name.stem) == (kind == "rotated")]
        old = np.array([laplacian_variance(pixels(args.old / name)) for name in chosen])
        new = np.array([laplacian_variance(pixels(args.new / name)) for name in chosen])
        difference = np.mean(
            [
                np.abs(pixels(args.old / name).astype(int) - pixels(args.new / name)).mean()
                for name in chosen
            ]
        )
        print(
            f"| {kind} | {len(chosen)} | {old.mean():.0f} | {new.mean():.0f} | "
            f"{new.mean() / old.mean():.3f} | {np.mean(new < 0.95 * old):.1%} | {difference:.2f} |"
        )

    if args.figure:
        stems = sorted({name for name in names if "_r" not in name.stem})
        picked = stems[:: max(1, len(stems) // args.figure_images)][: args.figure_images]
        rows = []
        for name in picked:  # old | new, unrotated then first rotated copy
            rotated = name.with_name(f"{name.stem}_r1.png")
            tiles = [
                pixels(folder / path) for path in (name, rotated) for folder in (args.old, args.new)
            ]
            rows.append(with_gaps(tiles, axis=1))
        grid = with_gaps(rows, axis=0)
        Image.fromarray(grid).resize(
            (grid.shape[1] * FIGURE_ZOOM, grid.shape[0] * FIGURE_ZOOM), Image.Resampling.NEAREST
        ).save(args.figure)
        print(
            f"\nfigure: {args.figure} (each row: old, new unrotated; old, new first rotated copy)"
        )


if __name__ == "__main__":
    main()
