"""Cold-build time of the data stage (preprocess.py) on a folder of real image files.

    python benchmarks/bench_preprocess.py PHOTOS      # a folder of full-size photos
    python benchmarks/bench_preprocess.py PHOTOS --repeats 3 --extrapolate-to 8189
    python benchmarks/bench_preprocess.py PHOTOS --copies 8   # 8 copies of each photo, new names
    git show OLD:preprocess.py > /tmp/old_preprocess.py   # then, to time that version the same way:
    python benchmarks/bench_preprocess.py PHOTOS --script /tmp/old_preprocess.py

Each run builds the cache from nothing into a fresh temporary folder (no reuse, no resume) in a
fresh process, so that imports and starting the workers count, as they do on a user's first run. Per
run it prints wall time, CPU time (user + system of that process and its workers: what the work
costs, whatever else the machine runs), source images/s, and the 1-minute load average before and
after. The machine may be shared: a load average above ~0.5 before a run means someone else was
computing, so the wall time is inflated; the script says so, and the run should be repeated.

Time the full-size files: decoding a 500 px JPEG costs many times what a downsized copy's does. It
extrapolates only when asked (--extrapolate-to N), and labels that line as an extrapolation. With
only a sample of the full-size files at hand, --copies N times a folder of N copies of each
(coursework layout, new names): as many full-size decodes as the whole set, measured rather than
extrapolated.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUSY_LOAD = 0.5  # 1-minute load average above which another job was likely running


def cpu_model():
    with open("/proc/cpuinfo") as cpuinfo:  # Linux; elsewhere the model is just not named
        return next(
            (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
            "?",
        )


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for children and their workers
    return usage.ru_utime + usage.ru_stime


def timed(command):
    """(wall s, CPU s) of a command run to completion; its output goes to a log on failure only."""
    cpu, start = children_cpu_seconds(), time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(
            f"error: {' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}"
        )
    return wall, children_cpu_seconds() - cpu


def copied_set(data_dir, copies, into):
    """data_dir's coursework layout with each photo `copies` times under new names, in the folder
    into."""
    try:
        classes = json.loads((data_dir / "category_to_images.json").read_text())
    except (OSError, ValueError) as error:
        sys.exit(
            "error: --copies needs the coursework layout (jpg/ + category_to_images.json) in "
            f"{data_dir} ({error})"
        )
    (into / "jpg").mkdir()
    copied = {
        name: [f"copy{copy}_{file}" for copy in range(copies) for file in files]
        for name, files in classes.items()
    }
    for new in (new for files in copied.values() for new in files):
        original = data_dir / "jpg" / new.split("_", 1)[1]
        try:  # a hard link where both folders are on one file system: the same bytes, no copying
            os.link(original, into / "jpg" / new)
        except OSError:
            shutil.copyfile(original, into / "jpg" / new)
    (into / "category_to_images.json").write_text(json.dumps(copied))
    return into


def cold_build(args):
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as cache_dir:
        command = [
            sys.executable,
            str(args.script),
            "--data-dir",
            str(args.data_dir),
            "--cache-dir",
            cache_dir,
            "--size",
            str(args.size),
            "--rotations",
            str(args.rotations),
            "--no-progress",
        ]
        if args.workers:
            command += ["--workers", str(args.workers)]
        load_before = os.getloadavg()[0]
        wall, cpu = timed(command)
        manifest = json.loads(next(Path(cache_dir).glob("*/manifest.json")).read_text())
    return dict(
        wall=wall,
        cpu=cpu,
        load_before=load_before,
        load_after=os.getloadavg()[0],
        images=manifest["num_source_images"],
        outputs=manifest["num_images"],
        skipped=len(manifest["skipped"]),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "data_dir",
        type=Path,
        help="folder in a layout preprocess.py finds (e.g. the full-res sample)",
    )
    parser.add_argument(
        "--size", type=int, default=64, help="--size for preprocess.py (default: %(default)s)"
    )
    parser.add_argument(
        "--rotations",
        type=int,
        default=2,
        help="--rotations for preprocess.py (default: %(default)s)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="--workers for preprocess.py (default: all cores)"
    )
    parser.add_argument(
        "--script",
        type=Path,
        default=ROOT / "preprocess.py",
        help="the preprocess.py to time (default: this checkout's)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="cold builds to time (default: %(default)s)"
    )
    parser.add_argument(
        "--copies",
        type=int,
        default=1,
        metavar="N",
        help="time a folder holding each photo of data_dir N times (coursework layout)",
    )
    parser.add_argument(
        "--extrapolate-to",
        type=int,
        default=None,
        metavar="N",
        help="also print an estimate for N source images (labelled as extrapolated)",
    )
    args = parser.parse_args()
    if not args.data_dir.is_dir():
        sys.exit(f"error: {args.data_dir} is not a folder")
    if args.copies < 1:
        sys.exit(f"error: --copies must be at least 1, got {args.copies}")
    args.source_dir = args.data_dir
    if args.copies > 1:
        with tempfile.TemporaryDirectory(prefix="bench_preprocess_copies_") as folder:
            args.data_dir = copied_set(args.data_dir, args.copies, Path(folder))
            return measure(args)
    return measure(args)


def measure(args):
    """Time args.repeats cold builds of args.data_dir and print the table."""
    print(
        f"machine: {cpu_model()}, {len(os.sched_getaffinity(0))} usable cores; python "
        f"{sys.version.split()[0]}"
    )
    copies = f"{args.copies} copies of each photo in " if args.copies > 1 else ""
    print(
        f"data: {copies}{args.source_dir.resolve()}, --size {args.size} --rotations "
        f"{args.rotations}; script: {args.script}"
    )
    script = args.script.resolve()
    import_wall, import_cpu = timed(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(script.parent)!r}); import {script.stem}",
        ]
    )
    print(
        f"start-up (a process that imports {script.name}): {import_wall:.2f} s wall, "
        f"{import_cpu:.2f} s CPU"
    )
    print(
        "| run | wall s | CPU s | source images/s (wall) | CPU ms/image | load before | load "
        "after |"
    )
    print("|---|---|---|---|---|---|---|")
    runs = []
    for number in range(1, args.repeats + 1):
        run = cold_build(args)
        runs.append(run)
        busy = "  (busy machine: repeat)" if run["load_before"] > BUSY_LOAD else ""
        print(
            f"| {number} | {run['wall']:.2f} | {run['cpu']:.2f} | "
            f"{run['images'] / run['wall']:.0f} | {1000 * run['cpu'] / run['images']:.1f} | "
            f"{run['load_before']:.2f} | {run['load_after']:.2f} |{busy}"
        )
    best = min(runs, key=lambda run: run["wall"])
    print(
        f"measured: {best['images']} source images -> {best['outputs']} cached ({best['skipped']} "
        f"skipped); best wall {best['wall']:.2f} s, median "
        f"{statistics.median(run['wall'] for run in runs):.2f} s"
    )
    if args.extrapolate_to:
        per_image = (best["wall"] - import_wall) / best["images"]
        estimate = import_wall + args.extrapolate_to * per_image
        print(
            f"EXTRAPOLATED, not measured: {args.extrapolate_to} source images ~ {import_wall:.1f} "
            f"s start-up + {args.extrapolate_to} x {1000 * per_image:.2f} ms = {estimate:.0f} s "
            "wall at the best run's rate (CPU ~ "
            f"{args.extrapolate_to * best['cpu'] / best['images']:.0f} s)"
        )


if __name__ == "__main__":
    sys.exit(main())
