"""Training throughput of the four scripts, against a naive per-epoch PIL DataLoader.

    python benchmarks/bench_train.py --data-dir data/flowers102 --width 128 --batch-size 32
    python benchmarks/bench_train.py --data-dir data/flowers102 --width 1024 --steps 8 \
        --modes naive fast

For each script and mode it runs the script's own training loop (its train(), n_critic as in
its Config, the EMA and the metrics included) in a fresh process, skips the warm-up steps, times
the rest, and prints a Markdown table: steady-state training images/s (images through the
critic), peak memory (process RSS on a CPU, peak allocated GPU memory on CUDA) and the speed-up
over the naive reference.

Modes:
    naive     what most coursework scripts do: a DataLoader decoding the JPEGs with PIL every
              epoch (Resize, CenterCrop, RandomHorizontalFlip, ToTensor, Normalize), NCHW, fp32.
              --naive-size 500 first re-encodes the JPEGs it reads at the official files'
              resolution (shorter side 500), for a data copy that was downsized
    memory    the preprocess cache held in memory (InMemoryLoader), NCHW, fp32
    cl        memory + channels_last
    fast      memory + channels_last + bf16 autocast + keep_freed_cpu_memory: what the scripts run
It is a benchmark, not a test: run it on a quiet machine.
"""

import argparse
import importlib
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = {
    "naive": dict(channels_last=False, amp="off"),
    "memory": dict(channels_last=False, amp="off"),
    "cl": dict(channels_last=True, amp="off"),
    "fast": dict(channels_last=True, amp="bf16"),
    "fp16": dict(channels_last=True, amp="fp16"),
}
SCRIPTS = ["gan_complete", "wgan_clip", "dcgan", "sngan"]


def naive_batches(args, config):
    """Per-epoch JPEG decoding, as in torchvision's ImageFolder tutorials."""
    from PIL import Image
    from torchvision import transforms

    files = sorted(naive_folder(args).glob("*.jpg"))
    transform = transforms.Compose(
        [
            transforms.Resize(config.img_size),
            transforms.CenterCrop(config.img_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )

    class Flowers(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, index):
            with Image.open(files[index]) as image:
                return transform(image.convert("RGB"))

    loader = torch.utils.data.DataLoader(
        Flowers(),
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.naive_workers,
        pin_memory=config.device != "cpu",
    )
    for _ in itertools.count():
        yield from loader


def naive_folder(args):
    return (
        Path(args.cache_dir) / f"naive_jpg_{args.naive_size}"
        if args.naive_size
        else Path(args.data_dir) / "jpg"
    )


def prepare_naive_folder(args):
    """With --naive-size: JPEGs re-encoded at that shorter side, as many as the timed steps read."""
    from PIL import Image

    files = sorted((Path(args.data_dir) / "jpg").glob("*.jpg"))
    if not files:
        sys.exit(f"error: no {Path(args.data_dir) / 'jpg'}/*.jpg for the naive reference")
    folder = naive_folder(args)
    if not args.naive_size:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for path in files[: (args.warmup + args.steps + 2) * args.batch_size]:
        if not (folder / path.name).exists():
            with Image.open(path) as image:
                scale = args.naive_size / min(image.size)
                image.convert("RGB").resize(
                    (round(image.width * scale), round(image.height * scale)), Image.LANCZOS
                ).save(folder / path.name, quality=90)


class NaiveLoader:
    """The naive reference as the scripts' loop takes its data: batches of an epoch."""

    def __init__(self, args, config, device):
        self.batches_of = naive_batches(args, config)
        self.device, self.steps_per_epoch = device, args.warmup + args.steps + 1
        self.num_classes, self.channels, self.class_names, self.cache_path = 0, 3, ["all"], ""
        self.memory_format = torch.contiguous_format
        self.images = torch.zeros(self.steps_per_epoch * config.batch_size, 3, 1, 1)

    def batches(self, epoch, start=0):
        for _ in range(start, self.steps_per_epoch):
            real = next(self.batches_of).to(self.device, non_blocking=True)
            yield real, torch.zeros(real.size(0), dtype=torch.long, device=self.device)


class Timed(Exception):
    """The timed steps are done: the run stops here, before its epoch's outputs."""


def measure(args):
    """One (script, mode) in this process: {'images_per_s', 'peak_mb'}. The script's own training
    loop (script.train) runs on the mode's data for warm-up + timed steps, its end_step timed."""
    import tempfile

    import machinery

    module = importlib.import_module(args.script)
    settings = dict(
        img_size=args.img_size,
        g_channels=args.width,
        d_channels=args.width,
        batch_size=args.batch_size,
        device=args.device,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        progress=False,
        **MODES[args.mode],
    )
    # the preset's model and method (cpu: its upsampling and n_critic), the flags above on top
    config = module.Config(**{**module.PRESETS.get(args.preset, {}), **settings})
    device = machinery.resolve_device(config.device)
    if args.mode in ("fast", "fp16"):  # as train_command does
        machinery.keep_freed_cpu_memory(device)
    machinery.seed_everything(0, deterministic=False)
    if args.mode == "naive":
        data = NaiveLoader(args, config, device)
    else:
        data = machinery.load_data(config, device)
        data.steps_per_epoch = args.warmup + args.steps + 1  # the epoch ends after the timing
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, end_step = [], machinery.end_step

    def timed_end_step(run, **metrics):
        end_step(run, **metrics)
        if run.step in (args.warmup, args.warmup + args.steps):
            sync()
            times.append(time.perf_counter())
        if len(times) == 2:
            raise Timed

    machinery.end_step = timed_end_step
    with tempfile.TemporaryDirectory() as out_dir:
        config.out_dir = out_dir
        run = machinery.Run(
            script=module, config=config, data=data, device=device, out_dir=Path(out_dir)
        )
        with machinery._StopRequest() as run.stop:
            try:
                module.train(run)
            except Timed:
                pass
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "images_per_s": args.steps * config.batch_size / (times[1] - times[0]),
        "peak_mb": peak,
        "device": str(device),
    }


def machine(device):
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    threads = torch.get_num_threads()
    return f"{model}, {os.cpu_count()} cores, {threads} threads, torch {torch.__version__}"


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", default=".", help="flowers in the coursework or official layout"
    )
    parser.add_argument("--cache-dir", default="cache", help="preprocess cache (built if missing)")
    parser.add_argument("--scripts", nargs="+", default=SCRIPTS, choices=SCRIPTS)
    parser.add_argument(
        "--modes", nargs="+", default=["naive", "memory", "cl", "fast"], choices=list(MODES)
    )
    parser.add_argument("--width", type=int, default=128, help="g_channels = d_channels")
    parser.add_argument(
        "--preset",
        default="",
        help="start from the script's preset (cpu: its upsampling, n_critic)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40, help="timed critic steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed critic steps first")
    parser.add_argument(
        "--naive-workers", type=int, default=0, help="DataLoader workers of the naive reference"
    )
    parser.add_argument(
        "--naive-size",
        type=int,
        default=0,
        help="re-encode the naive reference's JPEGs at this shorter side first (500 = the "
        "official files; 0 = read them as they are)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", help="also write the Markdown table here")
    parser.add_argument("--script", help=argparse.SUPPRESS)  # internal: measure one (script, mode)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.script:
        print(json.dumps(measure(args)))
        return 0

    # Build the cache once, before any timing.
    import preprocess

    try:
        preprocess.prepare_data(
            data_dir=args.data_dir, cache_dir=args.cache_dir, size=args.img_size
        )
    except preprocess.PreprocessError as error:
        sys.exit(f"error: {error}")
    prepare_naive_folder(args)
    if args.naive_size:
        jpegs = f"JPEGs re-encoded at {args.naive_size} px."
    else:
        jpegs = "the JPEGs as they are."
    lines = [
        f"Machine: {machine(args.device)}. Width {args.width}, batch {args.batch_size}, "
        f"{args.img_size}x{args.img_size}, {args.steps} timed steps after {args.warmup} warm-up; "
        f"naive loader with {args.naive_workers} workers reading {jpegs}",
        "",
        "| script | mode | images/s | peak memory (MB) | vs naive |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    print("\n".join(lines), flush=True)
    for script in args.scripts:
        reference = None
        for mode in args.modes:
            command = [sys.executable, __file__, "--script", script, "--mode", mode] + sys.argv[1:]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode:
                sys.exit(f"error: {script} {mode} failed:\n{result.stderr[-2000:]}")
            numbers = json.loads(result.stdout.strip().splitlines()[-1])
            reference = numbers["images_per_s"] if mode == "naive" else reference
            ratio = f"{numbers['images_per_s'] / reference:.2f}x" if reference else "-"
            lines.append(
                f"| {script} | {mode} | {numbers['images_per_s']:.1f} | {numbers['peak_mb']:.0f} | "
                f"{ratio} |"
            )
            print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
