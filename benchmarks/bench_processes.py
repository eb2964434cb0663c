"""Training images/s of one process against N under torchrun, the whole run as a user starts it.

    python benchmarks/bench_processes.py --data-dir data/flowers102
    python benchmarks/bench_processes.py --data-dir data/flowers102 --processes 1 2 4 --device cuda

For each process count it runs `torchrun --nproc_per_node N SCRIPT --preset cpu --minutes M` (on
GPUs: the script's defaults and --minutes M), each process with its share of the CPU's cores as
torch threads, and reads the run's own images/s (run_info.json) and generator steps. On a CPU, N
processes share the same cores: that shows the cost of splitting the batch and averaging the
gradients, not a speed-up; a speed-up needs a device for each process. It is a benchmark, not a
test: run it on a machine where nothing else runs.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(args, processes):
    with tempfile.TemporaryDirectory() as out_dir:
        recipe = ["--preset", "cpu"] if args.device == "cpu" else []
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
            str(ROOT / f"{args.script}.py"),
            *recipe,
            "--minutes",
            str(args.minutes),
            "--data-dir",
            args.data_dir,
            "--cache-dir",
            args.cache_dir,
            "--out-dir",
            out_dir,
            "--device",
            args.device,
            "--no-progress",
            "--snapshot-every",
            "0",
        ]
        threads = max(1, os.cpu_count() // processes)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode:
            sys.exit(f"error: {processes} processes failed:\n{done.stderr[-2000:]}")
        info = json.loads((Path(out_dir) / "run_info.json").read_text())
    return threads, info


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", default=".", help="flowers in the coursework layout")
    parser.add_argument("--cache-dir", default="cache", help="preprocess cache (built if missing)")
    parser.add_argument("--script", default="gan_complete")
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--minutes", type=float, default=1.0, help="of training in each run")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: one GPU a process")
    args = parser.parse_args()
    print(f"{args.script}, {args.minutes:g} minutes of training each, {os.cpu_count()} cores\n")
    print("| processes | torch threads each | images/s | generator steps |")
    print("| ---: | ---: | ---: | ---: |", flush=True)
    for processes in args.processes:
        threads, info = measure(args, processes)
        print(
            f"| {processes} | {threads} | {info['images_per_s']:.0f} | "
            f"{info['generator_steps']:,} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
