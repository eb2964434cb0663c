"""The sweeps behind `--preset cpu`: candidates trained for the same wall-clock budget.

    python benchmarks/sweep_preset.py --minutes 4 --data-dir ../shared/data/flowers102 \\
        base="--g-channels 64 --d-channels 64" wide_g="--g-channels 128 --d-channels 64" ...
    python benchmarks/sweep_preset.py --table docs/preset_cpu/sweep.md   # the table of every result

Each candidate is a name and the flags it adds to --script (gan_complete.py, sngan.py, ...).
Every one trains with --minutes
(equal wall time, not equal epochs; the data stage is not counted) and a constant learning rate,
unless its flags say otherwise; then its final (EMA) generator is scored as compare.py scores it:
SWD against the unrotated real images and FD in the features of the cache's CNN, on the same
noise for every candidate. Results are appended to --results (one JSON line per run): a sweep
stopped part-way goes on where it was, and a candidate already measured at this budget is skipped.
Run one sweep at a time and nothing else beside it: the budget is wall-clock time.
"""

import argparse
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import compare  # noqa: E402


def read_results(path):
    return (
        [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        if Path(path).exists()
        else []
    )


def score(folder, reference_cache, num_images, seed=0):
    """compare.py's SWD (mean over levels, x 10^3) and cache-CNN FD of the run's final generator."""
    run = compare.load_run(folder)
    cache = compare.load_real_cache(reference_cache)
    real, reference, real_labels = compare.real_samples(cache, num_images, seed)
    structure = compare.StructureMeasure(cache, num_images, seed)
    scores, floors = compare.score_runs(
        [run],
        real,
        reference,
        real_labels,
        num_images,
        seed,
        compare.InceptionMetrics(real, "cpu", enabled=False),
        structure,
        snapshots=False,
    )
    return {
        "swd": scores[0].swd["avg"],
        "fd": scores[0].structure["fd"],
        "kid": scores[0].structure["kid"],
        "swd_floor": floors[run.config.img_size]["avg"],
        "fd_floor": structure.floor["fd"],
    }


def train_and_score(name, flags, args):
    folder = Path(args.out) / f"{name}_{args.minutes:g}min"
    command = [
        sys.executable,
        str(ROOT / args.script),
        "--data-dir",
        args.data_dir,
        "--cache-dir",
        args.cache_dir,
        "--out-dir",
        str(folder),
        "--overwrite",
        "--no-progress",
        "--epochs",
        "10000",
        "--lr-schedule",
        "constant",
        "--snapshot-every",
        "0",
        "--minutes",
        str(args.minutes),
        *shlex.split(flags),
    ]
    print("$", shlex.join(command), flush=True)
    log = folder.parent / f"{folder.name}.log"
    with open(log, "w") as out:
        if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode:
            raise SystemExit(f"error: {name} failed; see {log}")
    info = json.loads((folder / "run_info.json").read_text())
    reference = args.reference_cache or info["cache_path"]
    result = {
        "name": name,
        "flags": flags,
        "minutes": args.minutes,
        **score(folder, reference, args.num_images),
        **{
            k: info[k]
            for k in (
                "wall_time_s",
                "critic_steps",
                "generator_steps",
                "images_seen",
                "epochs_done",
                "generator_params",
                "critic_params",
            )
        },
        "machine": (
            f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        ),
    }
    print(json.dumps(result), flush=True)
    with open(args.results, "a") as f:
        f.write(json.dumps(result) + "\n")


def write_table(results, path):
    lines = [
        "| budget | name | flags | SWD | FD | critic steps | G steps | images | wall s |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(results, key=lambda r: (r["minutes"], r["swd"])):
        lines.append(
            f"| {r['minutes']:g} min | {r['name']} | `{r['flags']}` | {r['swd']:.1f} | "
            f"{r['fd']:.1f} | {r['critic_steps']:,} | {r['generator_steps']:,} | "
            f"{r['images_seen']:,} | {r['wall_time_s']:.0f} |"
        )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidates", nargs="*", help='name="flags" pairs')
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="training budget of every candidate"
    )
    parser.add_argument("--script", default="gan_complete.py", help="the training script")
    parser.add_argument("--data-dir", default=".")
    parser.add_argument("--cache-dir", default="cache")
    parser.add_argument(
        "--reference-cache",
        default="",
        help="cache of the real images scored against "
        "(default: the run's own); use the unrotated one so that every candidate is scored alike",
    )
    parser.add_argument("--num-images", type=int, default=1000)
    parser.add_argument("--out", default="sweep_output", help="where the runs go")
    parser.add_argument("--results", default="sweep_output/results.jsonl")
    parser.add_argument(
        "--table", default="", help="write the Markdown table of --results here and exit"
    )
    args = parser.parse_args()
    if args.table:
        return write_table(read_results(args.results), args.table)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    for candidate in args.candidates:
        name, _, flags = candidate.partition("=")
        if any(
            r["name"] == name and r["minutes"] == args.minutes for r in read_results(args.results)
        ):
            print(f"{name}: measured at {args.minutes:g} min already, skipped")
            continue
        train_and_score(name, flags, args)


if __name__ == "__main__":
    main()
