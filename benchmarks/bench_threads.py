"""Training images/s with each number of torch threads, alone and beside a busy neighbour.

    python benchmarks/bench_threads.py --data-dir data/flowers102
    python benchmarks/bench_threads.py --data-dir data/flowers102 --threads 2 1 --steps 60

A student's laptop is never idle. On a machine of few cores, torch's OpenMP threads wait for each
other at the end of every parallel operation, so one busy core can slow every step of a run that
uses them all. For each thread count and neighbour (none; one process that spins on a core; the
same at nice 19) this runs bench_train.py's measurement (the script's own training loop, --preset
cpu's models, bf16 where the CPU has it) in a fresh process with OMP_NUM_THREADS set, and prints a
Markdown table. It is a benchmark, not a test: run it on a machine where nothing else runs.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPIN = "while True: pass"
NEIGHBOURS = {
    "alone": None,
    "one busy process": [sys.executable, "-c", SPIN],
    "one busy process at nice 19": ["nice", "-n", "19", sys.executable, "-c", SPIN],
}


def images_per_s(args, threads):
    command = [
        sys.executable,
        str(HERE / "bench_train.py"),
        "--script",
        args.script,
        "--mode",
        "fast",
        "--preset",
        "cpu",
        "--width",
        "128",
        "--batch-size",
        "32",
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--data-dir",
        args.data_dir,
        "--cache-dir",
        args.cache_dir,
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"error: the measurement failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["images_per_s"]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", default=".", help="flowers in the coursework layout")
    parser.add_argument("--cache-dir", default="cache", help="preprocess cache (built if missing)")
    parser.add_argument("--script", default="gan_complete")
    cores = os.cpu_count()
    parser.add_argument(
        "--threads",
        nargs="+",
        type=int,
        default=sorted({cores, max(cores - 1, 1), 1}, reverse=True),
    )
    parser.add_argument("--steps", type=int, default=60, help="timed critic steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed critic steps first")
    args = parser.parse_args()
    print(f"{cores} cores; {args.script}, --preset cpu's models, batch 32, {args.steps} steps\n")
    print("| torch threads | " + " | ".join(NEIGHBOURS) + " |")
    print("| ---: |" + " ---: |" * len(NEIGHBOURS), flush=True)
    for threads in args.threads:
        cells = []
        for command in NEIGHBOURS.values():
            neighbour = subprocess.Popen(command) if command else None
            try:
                cells.append(f"{images_per_s(args, threads):.0f}")
            finally:
                if neighbour:
                    neighbour.kill()
                    neighbour.wait()
        print(f"| {threads} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
