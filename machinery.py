"""What the four training scripts share and is no part of any method, written once.

gan_complete.py, wgan_clip.py, dcgan.py and sngan.py each hold their method: the Config, the
models, the losses and the Lipschitz constraint, the optimisers and the training loop. This module
holds the rest, as plain functions that a script's loop calls where the bookkeeping happens:

    command line   the flags built from the script's Config, presets, one-line errors
    main           train, or sample from saved weights (--sample, --per-class, --invert)
    data           the cleaned images (preprocess.py) held on the device as uint8, in batches
    the run        amp, the EMA, learning-rate schedules, metrics.csv, the --minutes budget, Ctrl-C
    outputs        samples, weights, figures (analysis.py) at each epoch's end and the run's
    checkpoints    bitwise resume, and a loader that refuses hostile pickles
    devices        cuda / mps / cpu, mixed precision, CPU threads and memory, seeds
    DiffAugment    differentiable augmentation of every critic input (--diffaugment)

A script is a module that defines VARIANT (the method's name), Config (a dataclass), PRESETS,
Generator(config, num_classes, channels), METRICS (its metrics.csv columns, the two losses first),
CRITIC_VIEW (what its critic's metrics mean), check_config(config) (its own fields' rules) and
train(run); its main() is `machinery.run_command(sys.modules[__name__], argv)`.
"""

import argparse
import collections
import contextlib
import copy
import csv
import ctypes
import dataclasses
import errno
import functools
import hashlib
import importlib.util
import inspect
import io
import json
import math
import os
import pickle
import random
import re
import shlex
import signal
import sys
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.utils import make_grid, save_image
from tqdm.auto import tqdm

import analysis
import preprocess


class ConfigError(Exception):
    """A user mistake in the configuration; the message says what to do."""


class WeightsError(Exception):
    """A weights or checkpoint file that cannot be used; the message says why."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM arrived; a checkpoint was saved at the last finished step."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class NonFiniteLoss(Exception):
    """A loss or weight became inf/nan; nothing was saved after the last good checkpoint."""


# -------------------------------------------------------------------------------------- settings
@dataclass
class Settings:
    """The settings every script has besides its method's: the data, the devices, the outputs and
    sampling. Each script's Config adds its method's, the run's and the models' fields to these;
    each field is a command-line flag (--data-dir for data_dir), the comment after it its --help."""

    # the data: handed to preprocess.py, which caches cleaned images once for all the scripts
    data_dir: str = "."  # the flowers' folder (jpg/ + category_to_images.json, or the official one)
    source: str = "auto"  # auto | coursework | official | torchvision | folder | synthetic | mnist
    cache_dir: str = "cache"  # where preprocess.py keeps the cleaned images
    rotations: int = preprocess.DEFAULT_ROTATIONS  # extra randomly rotated copies per image
    max_angle: float = preprocess.DEFAULT_MAX_ANGLE  # largest rotation, degrees
    data_seed: int = 0  # seed of the rotations (part of the cache's name)
    synthetic_images: int = 2000  # images drawn by --source synthetic
    synthetic_classes: int = 10  # classes drawn by --source synthetic
    preprocess_workers: int = 0  # processes for preprocessing; 0 = all CPU cores
    # devices
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    # auto: bf16 on GPUs from Ampere on and CPUs with bf16 units, fp16 on V100/T4/Turing, else fp32
    amp: str = "auto"  # mixed precision: auto | bf16 | fp16 | off
    channels_last: bool = True  # NHWC memory layout: faster convolutions on CPU and tensor cores
    compile: bool = False  # torch.compile the generator (minutes to start, faster GPU steps)
    deterministic: bool = False  # deterministic GPU kernels (slower); CPU runs always repeat
    # 0: OMP_NUM_THREADS if set, else one fewer than the cores: a busy core stalls every thread
    threads: int = 0  # CPU threads of torch
    # outputs
    log_every: int = 20  # steps between metric flushes and progress updates (one host sync each)
    checkpoint_every: int = 0  # also checkpoint every N steps within an epoch; 0 = at epoch ends
    snapshot_every: int = 10  # keep every N-th epoch's generator in snapshots/; 0 = off
    latent_pool: int = 256  # images generated for the latent-space analysis
    resume: bool = False  # continue the run in out_dir from its checkpoint
    overwrite: bool = False  # start afresh even if out_dir holds a run
    progress: bool = True  # show tqdm progress bars (in a terminal; never in a redirected log)
    tensorboard: bool = False  # also log to out_dir/tensorboard/ (pip install tensorboard)
    # sampling from saved weights instead of training
    sample: str = ""  # path of a generator.pkl: write samples from it and exit
    num_samples: int = 64  # images written by --sample and in generated_samples.png
    per_class: int = 0  # with --sample, a conditional generator: N images of every class
    classes: str = ""  # with --per-class or --invert: only these classes, by name or number (3,17)
    invert: tuple = ()  # with --sample: find these photos in z (--invert a.jpg b.jpg)


# ------------------------------------------------------------------------------------ command line
class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line instead of argparse's usage wall: the Config has many fields.
        raise ConfigError(f"{message} (see --help)")


def flag(name):
    """The command-line flag of a Config field: lr_generator -> --lr-generator."""
    return "--" + name.replace("_", "-")


def field_comments(config_class):
    """{field: the comment after it}: each field's --help text, from the sources of the Config and
    of the Settings it adds to."""
    field_comment = r"^\s+(\w+): [^=]+= .*?  # (.*)$"
    comments = {}
    for cls in reversed(config_class.__mro__):
        if dataclasses.is_dataclass(cls):
            comments.update(re.findall(field_comment, inspect.getsource(cls), flags=re.M))
    return comments


def fields_in_reading_order(config_class):
    """The Config's fields, its own (the method's, the run's, the models') before the Settings'."""
    own = inspect.get_annotations(config_class)
    fields = dataclasses.fields(config_class)
    return [f for f in fields if f.name in own] + [f for f in fields if f.name not in own]


def build_parser(script):
    """A flag for every field of the script's Config; the comment after the field is its --help
    text, with its default and the value each preset gives it."""
    presets = "\n".join(
        f"    --preset {name}: " + " ".join(f"{flag(k)} {v}" for k, v in values.items())
        for name, values in script.PRESETS.items()
    )
    parser = _Parser(
        description=script.__doc__.split("\n\n")[0],
        epilog=script.__doc__.split("\n\n", 1)[1]
        + (f"\nPresets (the flags you type win over them):\n{presets}\n" if presets else ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,  # so that only the flags a user typed are returned
    )
    comments = field_comments(script.Config)
    for field in fields_in_reading_order(script.Config):
        preset_values = "".join(
            f"; --preset {name}: {values[field.name]}"
            for name, values in script.PRESETS.items()
            if field.name in values
        )
        help_text = f"{comments.get(field.name, '')} (default: {field.default}{preset_values})"
        if isinstance(field.default, bool):
            parser.add_argument(
                flag(field.name), action=argparse.BooleanOptionalAction, help=help_text
            )
        elif isinstance(field.default, tuple) and field.default:  # --betas: two numbers
            parser.add_argument(
                flag(field.name), nargs=len(field.default), type=float, help=help_text
            )
        elif isinstance(field.default, tuple):  # --invert: one or more paths
            parser.add_argument(flag(field.name), nargs="+", help=help_text)
        else:
            parser.add_argument(flag(field.name), type=type(field.default), help=help_text)
    return parser


def parse_config(script, argv=None):
    """(Config, the fields typed on the command line): the typed fields over the --preset's over the
    Config's defaults. A resumed run or a --sample takes the rest from its config.json, which holds
    the preset's values."""
    given = vars(build_parser(script).parse_args(argv))
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in given.items()}
    if given.get("preset", "") not in {"", *script.PRESETS}:
        raise ConfigError(
            f"--preset must be {' or '.join(script.PRESETS) or 'empty (this script has none)'}, "
            f"got {given['preset']!r}"
        )
    preset = script.PRESETS.get(given.get("preset"), {})
    return script.Config(**{**preset, **given}), given


def preset_overrides(script, config, given):
    """The line that says which of the Config's values the --preset replaced (a value edited in
    the file loses to the preset unless typed as a flag), or "" when it replaced none."""
    defaults = script.Config()
    replaced = [
        f"{name}={value} (Config: {getattr(defaults, name)})"
        for name, value in script.PRESETS.get(config.preset, {}).items()
        if name not in given and getattr(defaults, name) != value
    ]
    if not replaced:
        return ""
    return (
        f"--preset {config.preset} sets {', '.join(replaced)}; a flag typed beside it wins "
        f"(e.g. {flag(replaced[0].split('=')[0])} ...)"
    )


POSITIVE = [
    "epochs",
    "batch_size",
    "z_dim",
    "g_channels",
    "d_channels",
    "n_critic",
    "log_every",
    "num_samples",
    "synthetic_images",
    "synthetic_classes",
    "lr_generator",
    "lr_discriminator",
]
NOT_NEGATIVE = [
    "rotations",
    "checkpoint_every",
    "snapshot_every",
    "preprocess_workers",
    "max_angle",
    "warmup_steps",
    "per_class",
    "minutes",
    "threads",
]
CHOICES = {
    "lr_schedule": ("cosine", "linear", "constant"),
    "amp": ("auto", "bf16", "fp16", "off"),
    "upsample": ("transpose", "nearest"),
}


def validate_config(script, config):
    """A ConfigError naming the flag and what it takes, for the first value that is wrong."""
    for name in POSITIVE:
        if not getattr(config, name) > 0:  # also catches nan
            raise ConfigError(f"{flag(name)} must be > 0, got {getattr(config, name)}")
    for name in NOT_NEGATIVE:
        if not getattr(config, name) >= 0:
            raise ConfigError(f"{flag(name)} must be >= 0, got {getattr(config, name)}")
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        numbers = value if isinstance(value, tuple) else [value]
        if any(isinstance(number, float) and not math.isfinite(number) for number in numbers):
            raise ConfigError(f"{flag(field.name)} must be a finite number, got {value}")
    for name, choices in CHOICES.items():
        if getattr(config, name) not in choices:
            raise ConfigError(
                f"{flag(name)} must be {' or '.join(choices)}, got {getattr(config, name)!r}"
            )
    for name in ["seed", "data_seed"]:
        if not 0 <= getattr(config, name) < 2**32:  # numpy's seed range
            raise ConfigError(f"{flag(name)} must be in [0, 2**32), got {getattr(config, name)}")

    if config.resume and config.overwrite:
        raise ConfigError(
            "--resume continues the run in --out-dir and --overwrite deletes it: pass one of them"
        )
    if config.z_dim < 2:
        raise ConfigError(
            f"--z-dim must be at least 2 (the latent analysis projects z to 2-D), "
            f"got {config.z_dim}"
        )
    if config.img_size not in (32, 64, 128, 256):
        raise ConfigError(f"--img-size must be 32, 64, 128 or 256, got {config.img_size}")
    halvings = int(math.log2(config.img_size)) - 3  # the models halve their width this often
    for name in ["g_channels", "d_channels"]:
        if getattr(config, name) % 2**halvings:
            raise ConfigError(
                f"{flag(name)} must be a multiple of {2**halvings} at --img-size "
                f"{config.img_size} (it is halved per block)"
            )
    if not 0 <= config.ema_decay < 1:
        raise ConfigError(f"--ema-decay must be in [0, 1), got {config.ema_decay}")
    if config.latent_pool < 8:
        raise ConfigError(f"--latent-pool must be at least 8, got {config.latent_pool}")
    if not set(filter(None, config.diffaugment.split(","))) <= {"color", "translation", "cutout"}:
        raise ConfigError(
            f"--diffaugment takes color, translation and cutout, comma-separated; "
            f"got {config.diffaugment!r}"
        )
    if config.classes and not (config.per_class or config.invert):
        raise ConfigError(
            "--classes chooses the classes of --per-class or --invert: pass --per-class N too"
        )
    if config.invert and not config.sample:
        raise ConfigError("--invert finds photos in a trained generator: pass --sample WEIGHTS too")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", config.device):
        raise ConfigError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {config.device!r}")
    script.check_config(config)


def config_from_dict(script, values):
    """The script's Config from a dict (config.json, a checkpoint), ignoring unknown keys."""
    names = {f.name: f for f in dataclasses.fields(script.Config)}
    kept = {
        k: (tuple(v) if isinstance(names[k].default, tuple) else v)
        for k, v in values.items()
        if k in names
    }
    return script.Config(**kept)


# Actions of one command, not settings of a run: saved, a later --resume would inherit --overwrite.
ACTIONS = ("resume", "overwrite")


def run_settings(config):
    """The Config as config.json and the checkpoint record it: every field but the ACTIONS."""
    return {name: value for name, value in asdict(config).items() if name not in ACTIONS}


def read_config(script, path):
    """The Config a run was trained with, from its config.json."""
    try:
        return config_from_dict(script, json.loads(Path(path).read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"cannot read the run's config {path}: {error}") from None


# -------------------------------------------------------------------------------------------- main
def run_command(script, argv=None):
    """A script's command line: train, or sample from saved weights; returns the exit status. Every
    user mistake is one line on stderr and exit 2; nothing half-written is left behind."""
    try:
        config, given = parse_config(script, argv)
        validate_config(script, config)
        if config.sample:
            return sample_from_weights(script, config, given)
        return train_command(script, config, given)
    except (ConfigError, WeightsError, preprocess.PreprocessError) as error:
        complain(f"error: {preprocess.one_line(error)}")
        return 2
    except KeyboardInterrupt:
        complain(
            "interrupted; the files on disk are intact: run the command again "
            "(with --resume if training had started)"
        )
        return 130
    except OSError as error:  # a full disk, a folder removed under us
        advice = (
            ": free some space, then run the command again (add --resume if training had started; "
            "every file was written whole)"
            if error.errno == errno.ENOSPC
            else ""
        )
        complain(f"error: {preprocess.one_line(error)}{advice}")
        return 1
    finally:
        leave_processes()


def complain(message):
    """An error line on stderr, from the first process only (under torchrun all stop alike)."""
    if rank() == 0:
        print(message, file=sys.stderr)


def train_command(script, config, given):
    """Train with the script's loop (script.train) into config.out_dir, then write the run's final
    outputs; a stop by Ctrl-C or a diverged loss says how to go on. Under torchrun every process
    runs this; the first writes every file and says every line."""
    out_dir = Path(config.out_dir)
    # the run's settings; flags typed now (--epochs) win
    if config.resume and (out_dir / "checkpoint.pt").exists():
        config = resumed_config(script, out_dir, given)
    device = join_processes(config)
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard")
    new_folder = not out_dir.exists()
    first_process_first(lambda: check_out_dir(config))
    seed_everything(config.seed, config.deterministic)
    with contextlib.redirect_stdout(io.StringIO()) if rank() > 0 else contextlib.nullcontext():
        data = first_process_first(lambda: load_data(config, device, new_folder))
    set_cpu_threads(config, device)
    keep_freed_cpu_memory(device)
    run = Run(script=script, config=config, data=data, device=device, out_dir=out_dir)
    if rank() == 0:
        print_banner(run, given)
    try:
        with _StopRequest() as run.stop, warnings.catch_warnings():
            # a step the fp16 scaler skips looks to the LR scheduler like a missed optimizer.step()
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
            info = script.train(run)
    except TrainingInterrupted as stop:
        if rank() == 0:
            save_loss_plot(run.script, run.out_dir)
        complain(
            f"stopped by {stop}: checkpoint saved in {out_dir / 'checkpoint.pt'}. Resume with:\n"
            f"  {resume_command(run)}"
        )
        return 128 + stop.signum
    except NonFiniteLoss as error:
        if rank() == 0:
            save_loss_plot(run.script, run.out_dir)
        complain(
            f"error: {error}; stopped without saving anything after it; {advice_after_nan(run)}"
        )
        return 1
    except torch.distributed.DistError as error:  # a process of this run is gone
        complain(
            f"error: a process of this run stopped ({preprocess.one_line(error)[:120]}); the "
            f"last checkpoint is whole: resume with {resume_command(run)}"
        )
        return 1
    finally:
        if run.writer is not None:
            run.writer.close()
    if rank() == 0:
        write_final_outputs(run)
        epochs = f"{info['epochs_done']} epoch" + ("s" if info["epochs_done"] != 1 else "")
        print(
            f"done: {epochs}, {info['generator_steps']} generator steps in "
            f"{info['wall_time_s']:.0f}s ({info['images_per_s']:.0f} img/s). Outputs in {out_dir}/"
        )
    return 0


def set_cpu_threads(config, device):
    """torch's CPU threads for a run on the CPU: --threads, else OMP_NUM_THREADS, else one fewer
    than the cores. With every core taken, one busy core (a browser, a second run) makes every
    thread wait for the one that lost it at each operation's end, and the run slows several times
    over; a core left free costs a little alone (benchmarks/bench_threads.py; README, "A CPU shared
    with other programs")."""
    if device.type != "cpu":
        return
    if config.threads:
        torch.set_num_threads(config.threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, preprocess.usable_cores() - 1))


def print_banner(run, given):
    """The start: method, device, data, model sizes, the settings; a GPU-sized model on a CPU and
    a preset over values edited in the Config are said at once."""
    config, data = run.config, run.data
    dtype = amp_dtype(config, run.device)
    print(
        f"{run.script.VARIANT} | device {run.device} | amp {dtype or 'off (fp32)'} | "
        f"{len(data.images):,} images from {data.cache_path}"
    )
    processes = f" over {world()} processes" if world() > 1 else ""
    count = torch.get_num_threads()
    threads = f" | {count} CPU thread{'s' * (count > 1)}" if run.device.type == "cpu" else ""
    print(
        f"{data.steps_per_epoch} critic steps per epoch of batch {config.batch_size}{processes}"
        f"{threads} | outputs in {run.out_dir}"
    )
    fields = fields_in_reading_order(type(config))
    print(" ".join(f"{field.name}={getattr(config, field.name)}" for field in fields))
    # a resumed run keeps the values its config.json saved, whatever the preset says
    if not config.resume and (overrides := preset_overrides(run.script, config, given)):
        print(overrides)
    width = max(config.g_channels, config.d_channels)
    if run.device.type == "cpu" and width > CPU_WIDTH:
        print(cpu_advice(run.script, f"width {width} is sized for a GPU: on a CPU a step takes"))


CPU_WIDTH = 256  # a model wider than this on a CPU is a GPU's default met by a CPU


def cpu_advice(script, start):
    """A sentence on a slow CPU run, naming the preset made for CPUs where the script has one."""
    if "cpu" in script.PRESETS:
        return f"{start} seconds; for a run of 10 minutes on a CPU, use --preset cpu"
    return f"{start} seconds; on a CPU try --g-channels 128 --d-channels 128"


def advice_after_nan(run):
    """What to do after a loss diverged: resume from the last good checkpoint at a lower rate."""
    checkpoint = run.out_dir / "checkpoint.pt"
    if not checkpoint.exists():
        return (
            "no checkpoint was written yet: lower the learning rate and start again with "
            "--overwrite"
        )
    counters = load_checkpoint(checkpoint)["counters"]
    return (
        f"the last good checkpoint is {checkpoint} (epoch {counters['epoch']}, step "
        f"{counters['step']}): lower the learning rate and resume with {resume_command(run)} "
        "--lr-generator X --lr-discriminator Y"
    )


# -------------------------------------------------------------------------------------------- data
def load_data(config, device, new_folder=False):
    """The cleaned images of config's data settings (preprocess.py builds the cache once, then
    reads it), held on the device in an InMemoryLoader. new_folder: out_dir was made for this run,
    and is removed again when the data cannot be had."""
    out_dir = Path(config.out_dir)
    try:
        images, labels, cache_path = preprocess.prepare_data(
            data_dir=config.data_dir,
            source=config.source,
            cache_dir=config.cache_dir,
            size=config.img_size,
            rotations=config.rotations,
            max_angle=config.max_angle,
            seed=config.data_seed,
            workers=config.preprocess_workers or None,
            synthetic_images=config.synthetic_images,
            synthetic_classes=config.synthetic_classes,
            progress=config.progress,
        )
        class_names = json.loads((Path(cache_path) / "manifest.json").read_text())["classes"]
        if config.conditional and len(class_names) < 2:
            raise ConfigError(
                f"--conditional needs labelled data, and {cache_path} holds one class: use class "
                "subfolders (--source folder) or the flowers' labels"
            )
        return InMemoryLoader(images, labels, class_names, config, device, str(cache_path))
    except (preprocess.PreprocessError, ConfigError, KeyboardInterrupt):
        if new_folder and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # leave no empty output folder behind a data problem
        raise


class InMemoryLoader:
    """Batches of (images in [-1, 1], their class labels) from uint8 images held on the training
    device.

    Decoding JPEGs every epoch costs more than the training step on a small machine, so the
    preprocessed images are decoded once and kept as uint8 (8,189 x 3 x 64 x 64 is 100 MB);
    shuffling, random horizontal flips and scaling happen on the device. The order of an epoch
    depends only on (seed, epoch), so a run resumed in the middle of an epoch sees the same batches.
    """

    def __init__(self, images, labels, class_names, config, device, cache_path=""):
        if len(images) < config.batch_size:
            raise ConfigError(
                f"--batch-size {config.batch_size} is larger than the data set ({len(images)} "
                "images)"
            )
        self.images = images.to(device)  # once, at start-up: no host-to-device copy per step
        self.labels = labels.to(device)
        self.class_names = class_names
        self.cache_path = cache_path
        self.num_classes = len(class_names) if config.conditional else 0  # the models' classes
        self.channels = images.size(1)
        self.batch_size = config.batch_size  # of all processes together under torchrun
        self.seed = config.seed
        self.device = torch.device(device)
        self.memory_format = (
            torch.channels_last if config.channels_last else torch.contiguous_format
        )
        self.steps_per_epoch = len(images) // self.batch_size  # drop the last partial batch
        # under torchrun each process takes its shard of every batch
        shard = self.batch_size // world()
        self.shard = slice(rank() * shard, (rank() + 1) * shard)

    def batches(self, epoch, start=0):
        order = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        permutation = torch.randperm(len(self.images), generator=order).to(self.device)
        flips = (torch.rand(len(self.images), generator=order) < 0.5).to(self.device)
        for index in range(start, self.steps_per_epoch):
            batch = permutation[index * self.batch_size : (index + 1) * self.batch_size]
            picked = batch[self.shard]
            real = self.images[picked].float().div_(127.5).sub_(1.0)
            real = torch.where(flips[picked, None, None, None], real.flip(3), real)
            yield real.contiguous(memory_format=self.memory_format), self.labels[picked]


# ------------------------------------------------------------------------------------------ the run
# The fp16 loss scalers' first scale. torch's default, 65,536, overflows the gradients of the first
# steps, each skipped while the scale halves; these are where the scales of the flowers' runs came
# down to (docs/measurements). The scalers still double their scale after every 2,000 steps without
# an overflow.
FP16_INITIAL_SCALE = {"scaler_g": 2.0**14, "scaler_d": 2.0**5}
SKIPPED_LIMIT = 100  # this many steps in a row with a skipped update: the run diverged
# the pace line comes once PACE_STEPS steps of a session are done (the first, a warm-up, not timed)
# and PACE_SECONDS of steps are timed or an epoch has ended: the first few steps run slower, and a
# fast run's estimate from them was half again too long
PACE_STEPS = 3
PACE_SECONDS = 10
# what a checkpoint holds besides the metrics: the parts' state_dicts and the counters
PARTS = ("generator", "discriminator", "ema", "opt_g", "opt_d", "sched_g", "sched_d")
SCALERS = ("scaler_g", "scaler_d")
COUNTERS = ("epoch", "batch", "step", "g_steps", "ema_updates", "images_seen", "elapsed")
# metrics.csv's columns besides the method's METRICS. d_skipped / g_skipped: 1 where the fp16 loss
# scaler skipped the critic's / the generator's update (its gradients overflowed): a skipped step,
# not a divergence.
BOOKKEEPING_COLUMNS = ("step", "epoch", "lr", "time", "d_skipped", "g_skipped")


@dataclass
class Run:
    """One training run: made by train_command, its parts set up (or restored from the checkpoint
    on --resume) by start_training, moved on by the loop's calls to end_step and end_epoch."""

    script: object  # the training script's module: its VARIANT, METRICS, Generator ...
    config: object  # the script's Config
    data: InMemoryLoader
    device: torch.device
    out_dir: Path
    # the parts, from start_training
    generator: nn.Module = None
    discriminator: nn.Module = None
    ema: nn.Module = None  # the average of the generator's weights; None with --ema-decay 0
    opt_g: torch.optim.Optimizer = None
    opt_d: torch.optim.Optimizer = None
    sched_g: object = None
    sched_d: object = None
    scaler_g: torch.amp.GradScaler = None  # a pass-through scaler unless fp16
    scaler_d: torch.amp.GradScaler = None
    autocast: object = None  # a function that returns the autocast context of --amp
    # the counters, saved in the checkpoint
    epoch: int = 0  # epochs done
    batch: int = 0  # batches done of the current epoch
    step: int = 0  # critic steps done
    g_steps: int = 0
    ema_updates: int = 0
    images_seen: int = 0
    elapsed: float = 0.0  # seconds of training in all sessions, at the last checkpoint
    # the records
    columns: list = None  # metrics.csv's
    rows: list = dataclasses.field(default_factory=list)  # metrics.csv's rows so far
    pending: list = dataclasses.field(default_factory=list)  # step metrics still on the device
    last_generator: dict = None  # the generator's metrics, logged with every critic step
    fixed: tuple = None  # (z, classes) of samples_epoch_XXX.png: the same 64 images every epoch
    writer: object = None  # TensorBoard's SummaryWriter, or None
    stop: object = None  # the _StopRequest that catches Ctrl-C and SIGTERM
    total_steps: int = 0  # critic steps of all the epochs
    started: float = 0.0  # time.perf_counter() when the run would have started without a break
    elapsed_at_start: float = 0.0  # seconds of training before this session (a resumed run's)
    first_step: int = 0  # the step this session started at
    pace_from: tuple = None  # (step, seconds) at the end of the session's first step
    epoch_start: float = 0.0  # time.perf_counter() when the current epoch (or its rest) began
    first_batch: int = 0  # the batch the current epoch began at in this session


def start_training(run, generator, discriminator, opt_g, opt_d):
    """Set up the rest of the run: the learning-rate schedules, the fp16 scalers, the EMA, the
    metrics, all restored from the checkpoint on --resume; writes config.json, and metrics.csv up to
    the checkpoint. The models are trained in place."""
    config, device, data = run.config, run.device, run.data
    dtype = amp_dtype(config, device)
    run.total_steps = config.epochs * data.steps_per_epoch
    run.generator, run.discriminator, run.opt_g, run.opt_d = generator, discriminator, opt_g, opt_d
    for model in (generator, discriminator):  # under torchrun: every process from the same start
        share_weights(model)
    run.ema = copy.deepcopy(generator).requires_grad_(False) if config.ema_decay > 0 else None
    run.sched_g = lr_schedule(opt_g, config, run.total_steps)
    run.sched_d = lr_schedule(opt_d, config, run.total_steps)
    for name in SCALERS:
        scaler = torch.amp.GradScaler(
            device.type, init_scale=FP16_INITIAL_SCALE[name], enabled=dtype == torch.float16
        )
        setattr(run, name, scaler)
    run.columns = ["step", "epoch", *run.script.METRICS, "lr", "time", "d_skipped", "g_skipped"]
    if rank() > 0:  # the processes draw their own noise (their own shards, their own z)
        seed_everything(config.seed + 7919 * rank(), config.deterministic)
    if config.resume:
        restore_checkpoint(run)
    if out_of_time(config, run.elapsed):
        raise ConfigError(
            f"--minutes {config.minutes:g}: the run has trained {run.elapsed / 60:.2f} minutes "
            f"already; to go on, pass a larger --minutes, or --minutes 0 to train to the end of "
            f"its --epochs ({config.epochs})"
        )
    # the generator's last loss, logged with every critic step (it steps once in n_critic)
    last = dict(zip(run.columns, run.rows[-1])) if run.rows else {"g_loss": math.nan}
    run.last_generator = {
        "g_loss": torch.tensor(last["g_loss"], device=device),
        "g_skipped": torch.zeros((), device=device),
    }

    # samples_epoch_XXX.png: the same 64 z's every epoch, and 8 classes spread over all, one a row
    fixed_z = torch.randn(64, config.z_dim, generator=torch.Generator().manual_seed(config.seed))
    classes = torch.linspace(0, max(data.num_classes - 1, 0), 8).round().long()
    run.fixed = (fixed_z.to(device), classes.repeat_interleave(8).to(device))

    if rank() == 0:
        write_run_start(run)
    if config.tensorboard and rank() == 0:
        from torch.utils.tensorboard import SummaryWriter  # optional: train_command checked for it

        # purge_step drops what a stopped run logged after its checkpoint
        run.writer = SummaryWriter(run.out_dir / "tensorboard", purge_step=run.step or None)
    if config.compile:
        generator.compile()  # in place: the state_dict keeps its keys
    generator.train()
    discriminator.train()
    run.autocast = functools.partial(
        torch.autocast, device.type, dtype=dtype or torch.float32, enabled=dtype is not None
    )
    run.started = time.perf_counter() - run.elapsed
    run.elapsed_at_start, run.first_step = run.elapsed, run.step


def write_run_start(run):
    """config.json, and metrics.csv rewritten from the checkpoint's rows: it drops the steps a
    stopped run made after its checkpoint."""
    write_json(
        run.out_dir / "config.json",
        {
            "variant": run.script.VARIANT,
            "script": Path(run.script.__file__).stem,
            "config": run_settings(run.config),
            "data": {"channels": run.data.channels, "class_names": run.data.class_names},
            "torch": torch.__version__,
            "device": str(run.device),
            "processes": world(),
        },
    )
    header = ",".join(run.columns).encode() + b"\n"
    rows = csv_text(run.rows, run.columns)
    preprocess.write_atomically(run.out_dir / "metrics.csv", lambda f: f.write(header + rows))


def epochs(run):
    """The epochs left to train, from the checkpoint's on --resume; none once the --minutes budget
    is spent (the last epoch's outputs count against it)."""
    for epoch in range(run.epoch, run.config.epochs):
        if out_of_time(run.config, run.elapsed):
            return
        yield epoch


def batches(run, epoch):
    """The epoch's batches of (real images, their classes) left to train on, behind a progress
    bar; a resumed run starts at the batch its checkpoint was saved after."""
    run.epoch_start, run.first_batch = time.perf_counter(), run.batch
    bar = tqdm(
        total=run.data.steps_per_epoch,
        initial=run.batch,
        desc=f"epoch {epoch + 1}/{run.config.epochs}",
        leave=False,
        dynamic_ncols=True,
        disable=None if run.config.progress and rank() == 0 else True,  # None: a terminal only
    )
    with bar:
        for real, labels in run.data.batches(epoch, start=run.batch):
            yield real, labels
            bar.update(1)
            if run.step % run.config.log_every == 0 and run.rows:
                bar.set_postfix({name: f"{value:.3f}" for name, value in last_metrics(run).items()})


def optimizer_step(optimizer, scaler, max_grad_norm=0.0):
    """optimizer.step() through the loss scaler (a pass-through one without fp16), after
    backward: the gradients averaged over the processes (under torchrun), clipped to max_grad_norm
    if > 0. Returns 1.0 on the device when the
    scaler skipped the step (inf/nan gradients; it lowered its scale), else 0.0: read with the
    other metrics, not now, which would wait for the GPU."""
    scale_before = scaler.scale(torch.ones((), device=scaler_device(optimizer)))
    average_gradients(optimizer)  # over the processes of a torchrun run; none with one
    if max_grad_norm > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    return (scaler.scale(torch.ones((), device=scale_before.device)) < scale_before).float()


def scaler_device(optimizer):
    return optimizer.param_groups[0]["params"][0].device


def end_generator_step(run, **metrics):
    """After a generator step: its metrics (g_loss, g_skipped) for the log, the EMA of its
    weights, its step count."""
    run.last_generator = metrics
    share_buffers(run.generator)  # the first process's BatchNorm statistics, before the EMA
    if run.ema is not None:
        update_ema(run.ema, run.generator, run.config.ema_decay, run.ema_updates)
        run.ema_updates += 1
    run.g_steps += 1


def end_step(run, **metrics):
    """After a critic step (and the generator's, if it stepped): the learning-rate schedules, the
    counters, the metrics (kept on the device, written every log_every steps), a checkpoint every
    checkpoint_every steps, the pace line once, and a stop: TrainingInterrupted after Ctrl-C (with a
    checkpoint at this step); True once the --minutes budget is spent, so that no step starts after
    it. Under torchrun the processes agree on both stops, so that they stop at one step."""
    config = run.config
    # the critic's step ran the generator in train mode too: its BatchNorm statistics moved
    share_buffers(run.generator)
    share_buffers(run.discriminator)
    lr = run.opt_g.param_groups[0]["lr"]
    run.sched_g.step()
    run.sched_d.step()
    run.step += 1
    run.batch += 1
    run.images_seen += config.batch_size
    metrics = {**metrics, **run.last_generator}
    run.pending.append((run.step, run.epoch + 1, lr, training_time(run), metrics))
    # the budget by the first process's clock, a signal from any process
    spent = rank() == 0 and out_of_time(config, training_time(run))
    signum, spent = map(int, agreed([run.stop.signum or 0, spent]))
    at_checkpoint = config.checkpoint_every and run.step % config.checkpoint_every == 0
    if signum:
        say(f"{signal.Signals(signum).name}: saving a checkpoint at step {run.step} ...")
    if run.step % config.log_every == 0 or at_checkpoint or signum:
        flush_metrics(run)
    if at_checkpoint or signum:
        run.elapsed = first_process_value(training_time(run))
        check_finite(run)
        save_checkpoint(run)
    if run.step == run.first_step + 1:
        run.pace_from = (run.step, training_time(run))
    if pace_known(run):
        report_pace(run)
        run.pace_from = None  # said once a session
    if signum:
        raise TrainingInterrupted(signum)
    return bool(spent)


def end_epoch(run):
    """The end of an epoch, or of its part that the time budget allowed: the weights and samples,
    run_info.json, then the checkpoint, and a summary line."""
    flush_metrics(run)
    epoch, batches = run.epoch + 1, run.batch - run.first_batch
    if run.batch == run.data.steps_per_epoch:  # a partial epoch stays unfinished: a resume ends it
        run.epoch, run.batch = run.epoch + 1, 0
    check_finite(run)
    if rank() == 0:
        write_epoch_outputs(run, epoch)
    # the outputs' time counts against --minutes, by the first process's clock
    run.elapsed = first_process_value(training_time(run))
    write_run_info(run)
    save_checkpoint(run)  # last: the epoch is done only once all its files are whole
    seconds = time.perf_counter() - run.epoch_start
    losses = "  ".join(f"{name} {value:.4f}" for name, value in last_metrics(run).items())
    say(
        f"epoch {epoch}/{run.config.epochs}  {losses}  {seconds:.1f}s  "
        f"{batches * run.config.batch_size / seconds:.0f} img/s"
    )


def end_training(run):
    """After the last epoch (or the --minutes budget): says how to go on after a stop by time;
    returns the run's numbers, as in run_info.json."""
    check_processes_agree(run)
    if run.epoch < run.config.epochs:
        command = resume_command(run)
        say(
            f"--minutes {run.config.minutes:g} spent at step {run.step}, in epoch "
            f"{run.epoch + 1}. To train on: {command} --minutes M (M > {run.config.minutes:g}, "
            f"the budget in all), or --minutes 0 to train to the end of its --epochs "
            f"({run.config.epochs})"
        )
    return write_run_info(run)


def lr_schedule(optimizer, config, total_steps):
    """Linear warm-up from 0 over warmup_steps, then a cosine or linear decay to 0, or constant.
    A closed form of the step (not a recursion), so that a resumed run may change lr or epochs."""
    decay_steps = max(total_steps - config.warmup_steps, 1)

    def multiplier(step):
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        progress = min(step - config.warmup_steps, decay_steps) / decay_steps
        return decay(config.lr_schedule, progress)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def decay(schedule, progress):
    """The learning rate's multiplier at progress (0 to 1) through the decay."""
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1 - progress
    return 1.0  # constant


@torch.no_grad()
def update_ema(ema, generator, decay, updates):
    """ema <- ema + (1 - w) * (generator - ema), w = min(decay, (1 + n) / (10 + n)) at update n.

    A plain 0.999 keeps 37% of the random initial weights after 1,000 generator steps: a short
    run would save grey noise. The ramp follows TensorFlow's ExponentialMovingAverage(num_updates).
    Not torch's AveragedModel: it reads its update count back from the GPU (a sync) every call.
    """
    weight = min(decay, (1 + updates) / (10 + updates))
    for mine, theirs in zip(ema.state_dict().values(), generator.state_dict().values()):
        if updates == 0 or not mine.is_floating_point():  # a first copy; BatchNorm's step count
            mine.copy_(theirs)
        else:
            mine.lerp_(theirs, 1 - weight)


def training_time(run):
    """Seconds of training so far, the earlier sessions of a resumed run included."""
    return time.perf_counter() - run.started


def out_of_time(config, elapsed):
    """Whether elapsed seconds of training spend the --minutes budget (checked after every step
    and before every epoch, so no step starts once it is spent)."""
    return config.minutes > 0 and elapsed >= 60 * config.minutes


def pace_known(run):
    """Whether the steps timed so far give a pace (PACE_STEPS, PACE_SECONDS)."""
    if run.pace_from is None or run.step < run.pace_from[0] + PACE_STEPS - 1:
        return False
    timed = training_time(run) - run.pace_from[1]
    return timed >= PACE_SECONDS or run.step % run.data.steps_per_epoch == 0


def report_pace(run):
    """Once a session, when pace_known: roughly how long the run will take at this speed, and
    whether a --minutes budget ends it before its learning rate has decayed. The session's first
    step (a warm-up) is not timed."""
    config, (since_step, since) = run.config, run.pace_from
    timed_steps = run.step - since_step
    per_step = (training_time(run) - since) / timed_steps
    hours = (run.total_steps - run.step) * per_step / 3600
    left = f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} minutes"
    message = (
        f"pace: about {per_step:.2f} s a step here (timed over {timed_steps:,} steps), so the "
        f"{config.epochs} epochs ({run.total_steps:,} steps) need roughly {left} more"
    )
    if run.device.type == "cpu" and hours > 0.5 and not config.minutes:
        message += "; " + cpu_advice(run.script, "a step takes").split("seconds; ", 1)[1]
    if config.minutes:
        steps_left = round((60 * config.minutes - training_time(run)) / per_step)
        last_step = min(run.total_steps, run.step + steps_left)
        message += f"; --minutes {config.minutes:g} stops it near step {last_step:,}"
        if config.lr_schedule != "constant" and last_step < run.total_steps:
            message += (
                f", {last_step / run.total_steps:.0%} of the way through its "
                f"{config.lr_schedule} learning-rate decay (--lr-schedule constant suits a "
                "run stopped by time)"
            )
    say(message)


def flush_metrics(run):
    """Read the pending step metrics back from the device (one sync), append them to metrics.csv
    and give the last row to TensorBoard (when on); stop the run if a loss is not finite where no
    skipped update explains it."""
    if not run.pending:
        return
    names = [*run.script.METRICS, "d_skipped", "g_skipped"]
    on_device = torch.stack(
        [
            torch.stack([torch.as_tensor(metrics[name]).float() for name in names])
            for *_, metrics in run.pending
        ]
    )
    if world() > 1:  # the mean over the processes: the metrics of the whole batch
        torch.distributed.all_reduce(on_device)
        on_device /= world()
    new_rows = []
    for (step, epoch, lr, seconds, _), values in zip(run.pending, on_device.cpu().tolist()):
        row = {"step": step, "epoch": epoch, "lr": lr, "time": seconds, **dict(zip(names, values))}
        new_rows.append([row[name] for name in run.columns])
    run.pending.clear()
    run.rows.extend(new_rows)
    if rank() == 0:
        with open(run.out_dir / "metrics.csv", "ab") as f:  # whole rows in one write
            f.write(csv_text(new_rows, run.columns))
    if run.writer is not None:
        step = new_rows[-1][0]
        for name, value in {
            **last_metrics(run),
            "lr": new_rows[-1][run.columns.index("lr")],
        }.items():
            run.writer.add_scalar(name, value, step)
    check_losses(run, new_rows)


def last_metrics(run):
    """{metric: value} of the method's metrics in the last row written."""
    row = dict(zip(run.columns, run.rows[-1]))
    return {name: row[name] for name in run.script.METRICS}


def check_losses(run, new_rows):
    """NonFiniteLoss for a loss that is inf/nan in a step whose update was not skipped, or for
    SKIPPED_LIMIT steps in a row with a skipped update."""
    for row in (dict(zip(run.columns, values)) for values in new_rows):
        for name in run.script.METRICS:
            if not math.isfinite(row[name]) and not row[analysis.skipped_by(name)]:
                raise NonFiniteLoss(
                    f"non-finite {name} at step {row['step']} (d_loss={row['d_loss']}, "
                    f"g_loss={row['g_loss']})"
                )
    streak = 0
    for row in reversed(run.rows):
        cells = dict(zip(run.columns, row))
        if not (cells["d_skipped"] or cells["g_skipped"]):
            break
        streak += 1
    if streak >= SKIPPED_LIMIT:
        raise NonFiniteLoss(
            f"the fp16 loss scaler skipped an update in each of the {streak} steps "
            f"to {run.rows[-1][0]}"
        )


def check_finite(run):
    parameters = [*run.generator.parameters(), *run.discriminator.parameters()]
    if not torch.stack([torch.isfinite(p).all() for p in parameters]).all():
        raise NonFiniteLoss(f"a weight became inf/nan by step {run.step}")


def write_run_info(run):
    """run_info.json: what compare.py needs to put this run beside the others."""
    config = run.config
    info = {
        "variant": run.script.VARIANT,
        "script": Path(run.script.__file__).stem,
        "generator_params": count_parameters(run.generator),
        "critic_params": count_parameters(run.discriminator),
        "epochs_done": run.epoch,
        "epochs": config.epochs,
        "generator_steps": run.g_steps,
        "critic_steps": run.step,
        "images_seen": run.images_seen,
        "wall_time_s": round(run.elapsed, 2),
        "device": str(run.device),
        "images_per_s": round(run.images_seen / max(run.elapsed, 1e-9), 2),
        "img_size": config.img_size,
        "z_dim": config.z_dim,
        "batch_size": config.batch_size,
        "cache_path": run.data.cache_path,
        "finished": run.epoch >= config.epochs or out_of_time(config, run.elapsed),
        "processes": world(),
    }
    if rank() == 0:
        write_json(run.out_dir / "run_info.json", info)
    return info


def fingerprint(images):
    """A short hash of the training images' pixels: a resume on other data is refused."""
    return hashlib.sha1(images.cpu().numpy().data, usedforsecurity=False).hexdigest()[:16]


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())


def write_json(path, data):
    preprocess.write_atomically(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


# ----------------------------------------------------------------------------------------- outputs
BN_CALIBRATION_BATCHES = 16  # train-mode passes that measure the EMA generator's BatchNorm stats
PER_CLASS_GRID = 10  # images of each class in a conditional run's samples_per_class.png


def write_epoch_outputs(run, epoch):
    """generator.pkl, its snapshot, discriminator.pkl and the epoch's samples, all before the
    checkpoint that marks the epoch done: a run stopped in between redoes the epoch, so no file is
    ever stale. The EMA generator, when there is one, is what is saved and sampled."""
    config, out_dir = run.config, run.out_dir
    sampler = run.generator
    if run.ema is not None:
        sampler = recalibrated_batchnorm(run.ema, config, config.seed + epoch)
    save_state_dict(sampler, out_dir / "generator.pkl")
    if config.snapshot_every and epoch % config.snapshot_every == 0:
        (out_dir / "snapshots").mkdir(exist_ok=True)
        save_state_dict(sampler, out_dir / "snapshots" / f"generator_epoch_{epoch:03d}.pkl")
    save_state_dict(run.discriminator, out_dir / "discriminator.pkl")
    path = out_dir / f"samples_epoch_{epoch:03d}.png"
    images = save_samples(sampler, *run.fixed, path, run.data.class_names)
    if run.writer is not None:
        grid = make_grid(images, normalize=True, value_range=(-1, 1))
        run.writer.add_image("fixed_noise_samples", grid, epoch)


@torch.no_grad()
def recalibrated_batchnorm(ema, config, seed):
    """A copy of the EMA generator with BatchNorm statistics measured on its own weights: the
    averaged running mean/var are the raw generator's, of other weights, and misstate the samples'
    contrast. Train-mode passes on fresh z, a cumulative average (momentum None), a private RNG."""
    calibrated = copy.deepcopy(ema).train()
    for norm in calibrated.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.reset_running_stats()
            norm.momentum = None
    noise = torch.Generator().manual_seed(seed)
    device = next(calibrated.parameters()).device
    for _ in range(BN_CALIBRATION_BATCHES):
        labels = torch.randint(
            max(calibrated.num_classes, 1), (config.batch_size,), generator=noise
        )
        z = torch.randn(config.batch_size, config.z_dim, generator=noise)
        calibrated(z.to(device), labels.to(device))
    return calibrated.train(False)


def write_final_outputs(run):
    """At the end of a run: the loss plot, generated_samples.png, a conditional run's per-class
    pages, the latent-space figures and the training GIF, from the saved generator.pkl."""
    config, out_dir, device = run.config, run.out_dir, run.device
    data = {"channels": run.data.channels, "class_names": run.data.class_names}
    generator = load_generator(run.script, out_dir / "generator.pkl", config, device, data)
    save_loss_plot(run.script, run.out_dir)
    random = torch.Generator().manual_seed(config.seed + 2)
    z = torch.randn(config.num_samples, config.z_dim, generator=random)
    labels = torch.randint(max(generator.num_classes, 1), (config.num_samples,), generator=random)
    save_grid(generate(generator, z, device, labels), out_dir / "generated_samples.png")
    if generator.num_classes:
        indices = list(range(generator.num_classes))
        analysis.save_per_class_grid(
            per_class_images(generator, config, indices, PER_CLASS_GRID, device),
            run.data.class_names,
            out_dir,
        )
    draw = lambda z, labels: generate(generator, z, device, labels)
    classes = run.data.class_names if generator.num_classes else None  # drawn over all of them
    analysis.latent_space_analysis(draw, config, out_dir, run.script.VARIANT, classes)
    analysis.latent_traversal(draw, config, out_dir, run.script.VARIANT, classes)
    analysis.save_progress_gif(out_dir)


def save_loss_plot(script, out_dir):
    """training_losses.png from the run's metrics.csv (a torn last row left out)."""
    header = (Path(out_dir) / "metrics.csv").read_text().split("\n", 1)[0].split(",")
    columns = dict(zip(header, read_metrics(out_dir).T))
    figure = Path(out_dir) / "training_losses.png"
    analysis.plot_losses(columns, figure, script.VARIANT, script.CRITIC_VIEW, script.METRICS[2:])


def read_metrics(out_dir, columns=None):
    """metrics.csv as an array of rows (a blank, a skipped update's loss, is nan); a torn last row
    is left out. columns: the header's, checked when given."""
    lines = (Path(out_dir) / "metrics.csv").read_text().split("\n")  # the last is "" or a torn row
    header = lines[0].split(",")
    if columns is not None and header != list(columns):
        raise ConfigError(f"{out_dir}/metrics.csv has the columns {header}, not {columns}")
    rows = [[float(v) if v else math.nan for v in row] for row in csv.reader(lines[1:-1])]
    return np.array(rows).reshape(-1, len(header))


def csv_text(rows, columns):
    """metrics.csv's lines for these rows. The losses of an update that the fp16 scaler skipped (its
    gradients overflowed, so nothing was learned) are left blank when they are not finite: a reader
    or a plot would take a NaN there for a diverged run."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        cells = dict(zip(columns, row))
        for name in columns:
            if name in BOOKKEEPING_COLUMNS:
                continue
            if cells[analysis.skipped_by(name)] == 1 and not math.isfinite(cells[name]):
                cells[name] = ""
        writer.writerow(cells.values())
    return buffer.getvalue().encode()


# ---------------------------------------------------------------------- sampling from saved weights
@torch.no_grad()
def generate(generator, z, device, labels=None, chunk=128):
    """Images in [-1, 1] on the CPU, with the generator in eval mode (BatchNorm's running stats);
    labels are the classes of a conditional generator (class 0 when not given)."""
    labels = torch.zeros(len(z), dtype=torch.long) if labels is None else labels
    was_training = generator.training
    generator.train(False)
    images = torch.cat(
        [
            generator(part.to(device), part_labels.to(device)).float().cpu()
            for part, part_labels in zip(z.split(chunk), labels.split(chunk))
        ]
    )
    generator.train(was_training)
    return images


def save_grid(images, path, nrow=8):
    preprocess.write_atomically(
        path,
        lambda f: save_image(
            images, f, format="png", nrow=nrow, normalize=True, value_range=(-1, 1)
        ),
    )


def save_samples(generator, noise, labels, path, class_names):
    """path: the 64 images (8 labelled rows of one class each when conditional); returns them."""
    images = generate(generator, noise, noise.device, labels)
    if not generator.num_classes:
        save_grid(images, path)
    else:
        names = [analysis.class_label(class_names[i]) for i in labels[::8].tolist()]
        analysis.save_labelled_grid(images, names, path, f"{path.stem}: one class a row", nrow=8)
    return images


def class_indices(class_names, classes):
    """The indices of --classes (names, or numbers: 3 finds '003' and 'class_3'; a Flowers
    class also by its official name, sunflower for 054); all when it is empty."""
    indices = []
    numbers = [
        int(match.group()) if (match := re.search(r"\d+$", name)) else None for name in class_names
    ]
    for token in filter(None, (t.strip() for t in classes.split(","))):
        found = [
            i
            for i, name in enumerate(class_names)
            if name == token
            or (token.isdigit() and numbers[i] == int(token))
            or (preprocess.flower_name(name) or "").lower() == token.lower()  # sunflower: 054
        ]
        if not found:
            names = (
                " (or a flower's name: sunflower)" if preprocess.flower_name(class_names[0]) else ""
            )
            raise ConfigError(
                f"--classes: there is no class {token!r}; this generator's classes are "
                f"{', '.join(class_names[:3])}, ..., {class_names[-1]}{names}"
            )
        indices.append(found[0])
    return indices or list(range(len(class_names)))


def per_class_images(generator, config, indices, per_class, device):
    """[len(indices), per_class, C, H, W] in [-1, 1]: the same per_class z's for every class, so
    that a column shows what the class alone changes."""
    z = torch.randn(
        per_class, config.z_dim, generator=torch.Generator().manual_seed(config.seed + 3)
    )
    labels = torch.tensor(indices).repeat_interleave(per_class)
    return generate(generator, z.repeat(len(indices), 1), device, labels).unflatten(
        0, (len(indices), per_class)
    )


def weights_run(script, weights, given):
    """(Config, data) of the run a generator.pkl (or a snapshot of it) comes from: its config.json's
    model settings with the fields typed now on top; the typed Config alone when there is none."""
    run_folder = weights.parent.parent if weights.parent.name == "snapshots" else weights.parent
    if not (run_folder / "config.json").exists():
        return config_from_dict(script, {**asdict(script.Config()), **given}), None
    config = config_from_dict(
        script,
        {**asdict(read_config(script, run_folder / "config.json")), "device": "auto", **given},
    )
    validate_config(script, config)
    return config, json.loads((run_folder / "config.json").read_text()).get("data")


def draw_per_class(script, weights_path, per_class=10, classes="", device="cpu"):
    """{class name: uint8 images [per_class, H, W, 3] (or [per_class, H, W] grayscale)} from a
    conditional generator.pkl and its config.json (each script's generate_per_class)."""
    weights = Path(weights_path).resolve()
    if not weights.is_file():
        raise WeightsError(no_weights_file(weights_path))
    config, data = weights_run(script, weights, {"device": device})
    if data is None:
        raise ConfigError(
            f"no config.json beside {weights}: the classes and the model's sizes are read from "
            "the run's config.json; copy it from the run folder next to the weights"
        )
    if not config.conditional:
        raise ConfigError(
            f"{weights} is an unconditional generator (its run was trained without "
            "--conditional): it has no classes to draw; train with --conditional"
        )
    device = resolve_device(config.device)
    generator = load_generator(script, weights_path, config, device, data)
    indices = class_indices(data["class_names"], classes)
    images = per_class_images(generator, config, indices, per_class, device)
    pixels = (
        ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
    )
    # grayscale: [N, H, W], as PIL takes it
    pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
    return {data["class_names"][i]: batch for i, batch in zip(indices, pixels)}


def sample_from_weights(script, config, given):
    """--sample: a grid and single PNGs from saved weights, without training; --per-class: of each
    class. All in one folder, --out-dir or samples/ beside the weights, never over a run's own
    outputs."""
    weights = Path(config.sample).resolve()
    if not weights.is_file():
        raise WeightsError(no_weights_file(config.sample))
    config, data = weights_run(script, weights, given)
    out_dir = Path(given["out_dir"]) if "out_dir" in given else weights.parent / "samples"
    if config.per_class and not (config.conditional and data):
        raise ConfigError(
            f"--per-class: {weights} is not a conditional generator (trained without "
            "--conditional, or without its config.json): use --num-samples"
        )
    indices = class_indices(data["class_names"], config.classes) if config.per_class else []
    device = resolve_device(config.device)
    generator = load_generator(script, weights, config, device, data)
    check_writable(out_dir)
    if config.invert:
        return invert_photos(config, generator, data, device, out_dir)
    # the files of an earlier call (a larger --num-samples, other --classes)
    for pattern in ("sample_*.png", "*/sample_*.png", "samples_grid.png", "samples_per_class*.png"):
        for old in out_dir.glob(pattern):
            old.unlink()
            if old.parent != out_dir and not any(old.parent.iterdir()):  # its class folder
                old.parent.rmdir()
    written = []  # (image, its file)
    if config.per_class:
        names = [data["class_names"][i] for i in indices]
        batches = per_class_images(generator, config, indices, config.per_class, device)
        analysis.save_per_class_grid(batches, names, out_dir)
        for name, batch in zip(names, batches):
            for n, image in enumerate(batch, 1):
                written.append((image, out_dir / name / f"sample_{n:04d}.png"))
    else:
        random = torch.Generator().manual_seed(config.seed)
        z = torch.randn(config.num_samples, config.z_dim, generator=random)
        # a conditional generator draws random classes, as generated_samples.png does
        labels = torch.randint(
            max(generator.num_classes, 1), (config.num_samples,), generator=random
        )
        images = generate(generator, z, device, labels)
        save_grid(images, out_dir / "samples_grid.png", nrow=math.ceil(math.sqrt(len(images))))
        for n, (image, label) in enumerate(zip(images, labels.tolist()), 1):
            drawn = ""
            if generator.num_classes:
                drawn = "_" + analysis.class_label(data["class_names"][label]).replace(" ", "_")
            written.append((image, out_dir / f"sample_{n:04d}{drawn}.png"))
    for image, path in written:
        path.parent.mkdir(exist_ok=True)
        save_grid(image, path)
    draw = lambda z, labels: generate(generator, z, device, labels)
    classes = data["class_names"] if generator.num_classes else None
    analysis.latent_traversal(draw, config, out_dir, script.VARIANT, classes)
    grid = "samples_per_class*.png" if config.per_class else "samples_grid.png"
    classes = ""
    if generator.num_classes and not config.per_class:
        classes = " (random classes, each named in its file name; --per-class N for N of each)"
    print(
        f"{len(written)} samples from {weights} in {out_dir}/, with {grid} and "
        f"latent_traversal.png{classes}"
    )
    return 0


def load_photo(path, size, channels):
    """A photo as the data stage makes a training image of it (white margins trimmed, the centre
    square at size px), in [-1, 1]."""
    try:
        picture = preprocess.trim_white_margins(preprocess.load_rgb(path)[0])
        image = preprocess.clean_and_rotate(picture, size, [], size)[0]
    except preprocess.DECODE_ERRORS as error:  # no such file, not an image, a decompression bomb
        raise ConfigError(
            f"--invert: cannot read {path} as an image ({preprocess.one_line(error)})"
        ) from None
    except preprocess.SkipImage as error:
        raise ConfigError(f"--invert: {path} is {error}") from None
    pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
    pixels = torch.from_numpy(pixels).view(size, size, channels).permute(2, 0, 1)
    return pixels / 127.5 - 1


def invert_photos(config, generator, data, device, out_dir):
    """--invert: each photo's place in z (and its class, for a conditional generator: those of
    --classes, or the closest), beside the image drawn there; with two photos, the way between."""
    channels = data["channels"] if data else 3
    photos = torch.stack([load_photo(path, config.img_size, channels) for path in config.invert])
    # differentiable in z; an unconditional generator ignores the labels
    draw = lambda z, labels: generator(z.to(device), labels.to(device)).float().cpu()
    names = data["class_names"] if generator.num_classes else None
    if names and config.classes:
        candidates = torch.tensor(class_indices(names, config.classes)).repeat(len(photos), 1)
    elif names:
        candidates = analysis.closest_classes(
            draw, photos, generator.num_classes, config.z_dim, config.seed
        )
    else:
        candidates = torch.zeros(len(photos), 1, dtype=torch.long)
    generator.requires_grad_(False)  # only z is searched: no graph for the weights
    found = analysis.invert(draw, photos, candidates, config.z_dim, config.seed)
    for old in out_dir.glob("inversion*.png"):  # an earlier call's (two photos, then one)
        old.unlink()
    rows = []
    for path, error, label, norm in zip(
        config.invert, found.rms.tolist(), found.classes.tolist(), found.z_norm.tolist()
    ):
        found_as = f" as {analysis.class_label(names[label])}" if names else ""
        rows.append(f"{Path(path).name}: RMS {error:.0f}/255{found_as}")
        print(
            f"{path}: found in z{found_as} at an RMS error of {error:.1f} of 255 levels, "
            f"|z| = {norm:.2f} sqrt(z_dim) (N(0, I) puts z near 1)"
        )
    analysis.save_inversion(photos, found.images, rows, out_dir)
    written = "inversion.png"
    if len(photos) == 2:
        analysis.save_inversion_path(draw, photos, found.z, found.classes, out_dir)
        written += " and inversion_interpolation.png"
    print(f"wrote {written} in {out_dir}/")
    return 0


# ----------------------------------------------------------------------------- devices and seeds
def resolve_device(name):
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available here; use --device cpu or auto")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ConfigError(
            f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 to "
            f"cuda:{torch.cuda.device_count() - 1}"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: MPS is not available here; use --device cpu or auto")
    return torch.device(name)


def cpu_has_native_bf16():
    """AVX512-BF16 or AMX: there bf16 autocast is faster; elsewhere it is emulated, and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: do not guess
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def amp_dtype(config, device):
    """bf16 has fp32's exponent range and needs no loss scaler; fp16 (a T4's or V100's fast tensor
    cores) underflows small gradients, so it comes with a GradScaler (optimizer_step)."""
    if config.amp != "auto":
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[config.amp]
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        # bf16 tensor cores from Ampere on; older GPUs only emulate bf16, slowly
        if capability >= (8, 0):
            return torch.bfloat16
        if capability >= (7, 0):  # fp16 tensor cores: V100, T4, Turing
            return torch.float16
        # Pascal and older have no tensor cores and run fp16 no faster (consumer Pascal 1/64)
        return None
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None


def keep_freed_cpu_memory(device):
    """glibc gives freed blocks over 128 KB back to the OS, so each CPU step page-faults its
    activations in afresh: keeping up to 128 MB (blocks under 16 MB from the heap) makes a CPU step
    faster (README, "Measurements and machines")."""
    if device.type == "cpu" and sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl, say): nothing to set
            libc = ctypes.CDLL("libc.so.6")
            # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
            libc.mallopt(-3, 16 << 20), libc.mallopt(-1, 128 << 20)


def seed_everything(seed, deterministic):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # cudnn.benchmark picks the fastest kernels by timing them, which can differ run to run.
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


# ------------------------------------------------------------------------- stops and checkpoints
class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked after each step; a second Ctrl-C stops at once."""

    signum = None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def handle(self, signum, frame):
        # torchrun passes a Ctrl-C on as SIGTERM: a second signal there is not a second Ctrl-C
        if self.signum is not None and world() == 1:
            raise KeyboardInterrupt
        self.signum = self.signum or signum  # a flag: printing here could interrupt a write

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def save_checkpoint(run):
    """checkpoint.pt: everything a resume needs: the parts' state_dicts, the counters, the metrics,
    every RNG."""
    checkpoint = {
        name: None if getattr(run, name) is None else getattr(run, name).state_dict()
        for name in PARTS + SCALERS
    }
    checkpoint.update(
        counters={name: getattr(run, name) for name in COUNTERS},
        data={"images": len(run.data.images), "fingerprint": fingerprint(run.data.images)},
        columns=run.columns,
        metrics=torch.tensor(run.rows, dtype=torch.float64).reshape(-1, len(run.columns)),
        rng=gathered(rng_states(run.device)),  # one for each process, from the first on
        config=run_settings(run.config),
    )
    if rank() == 0:
        path = run.out_dir / "checkpoint.pt"
        preprocess.write_atomically(path, lambda f: torch.save(checkpoint, f))


def restore_checkpoint(run):
    """Load the run's checkpoint.pt into its parts, counters and metrics."""
    config, path = run.config, run.out_dir / "checkpoint.pt"
    checkpoint = load_checkpoint(path)
    saved, images = checkpoint["data"], len(run.data.images)
    if saved["images"] != images:
        raise ConfigError(
            f"the data changed since the checkpoint ({saved['images']} images then, "
            f"{images} now): resume with the same data settings"
        )
    if saved["fingerprint"] != fingerprint(run.data.images):
        raise ConfigError(
            "the data changed since the checkpoint (as many images, other pixels): resume "
            "with the --data-dir (and Pillow version) the run was trained on"
        )
    counters = checkpoint["counters"]
    done = counters["epoch"] + (counters["batch"] > 0)  # a started epoch counts
    if config.epochs < done:
        raise ConfigError(
            f"--epochs {config.epochs}: the run is at epoch {done} already; pass at least "
            f"--epochs {done} to go on"
        )
    for name in ("generator", "discriminator", "ema"):
        if getattr(run, name) is not None and checkpoint[name] is not None:
            load_weights(getattr(run, name), checkpoint[name], path)
    for name in ("opt_g", "opt_d"):
        optimizer = getattr(run, name)
        for group, fresh in zip(checkpoint[name]["param_groups"], optimizer.param_groups):
            # this machine's kernels, not the checkpoint's: a CPU run resumed on a GPU gets fused
            # Adam
            group.update({key: fresh[key] for key in ("fused", "foreach") if key in fresh})
        optimizer.load_state_dict(checkpoint[name])
    for name in SCALERS:
        # empty when the run had no fp16 scaler; a resumed fp16 run keeps its scale
        if checkpoint[name]:
            getattr(run, name).load_state_dict(checkpoint[name])
    for name, lr in (("sched_g", config.lr_generator), ("sched_d", config.lr_discriminator)):
        schedule = getattr(run, name)
        schedule.load_state_dict(checkpoint[name])
        schedule.base_lrs = [lr]  # the Config may lower the LR on resume (after a NaN, say)
        schedule.optimizer.param_groups[0]["lr"] = lr * schedule.lr_lambdas[0](schedule.last_epoch)
    for name in COUNTERS:
        setattr(run, name, counters[name])
    if run.ema is not None and checkpoint["ema"] is None:  # EMA switched on now: from the generator
        run.ema_updates = 0
    states = checkpoint["rng"]  # resumed by more processes than saved it: the others start afresh
    if rank() < len(states):
        set_rng_states(states[rank()], run.device)
    else:
        seed_everything(run.config.seed + 7919 * rank() + run.step, run.config.deterministic)
    rows = checkpoint["metrics"].tolist()
    run.rows = [[int(row[0]), int(row[1]), *row[2:]] for row in rows]
    say(
        f"resumed from {path} at step {run.step:,} ({run.g_steps:,} generator steps, epoch "
        f"{run.epoch + 1}, {run.elapsed / 60:.1f} minutes trained)"
    )


def load_checkpoint(path):
    """The checkpoint's dict; a file that is only unreachable now is not called damaged."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"no checkpoint at {path}; start without --resume") from None
    # permissions, an I/O error, a folder, no memory: the file may be fine
    except (OSError, MemoryError) as error:
        raise WeightsError(
            f"cannot read the checkpoint {path}: {preprocess.one_line(error)}; fix that and run "
            "the command again (nothing was changed)"
        ) from None
    except Exception as error:  # truncated zip, foreign file, refused global: unusable
        if "allocate" in str(error):  # torch's out-of-memory is a RuntimeError
            raise WeightsError(
                f"out of memory while reading the checkpoint {path}: free some memory and run the "
                "command again (nothing was changed)"
            ) from None
        # (torch's own message would suggest weights_only=False: unsafe advice for a stranger's
        # file)
        raise WeightsError(
            f"checkpoint {path} is damaged or not a checkpoint of these scripts ("
            f"{preprocess.one_line(error)[:80]}); restore a copy, or start again with --overwrite"
        ) from None


def rng_states(device):
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()  # loadable with weights_only
    # Only the training GPU's generator: a checkpoint must resume on a machine with fewer GPUs.
    return {
        "python": random.getstate(),
        "numpy": numpy_state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def set_rng_states(states, device):
    random.setstate((states["python"][0], tuple(states["python"][1]), states["python"][2]))
    numpy_state = copy.deepcopy(states["numpy"])
    numpy_state["state"]["key"] = np.array(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


# ------------------------------------------------------------------------- weights, loaded safely
def save_state_dict(module, path):
    """A state_dict as a pickle of CPU tensors, so it loads on a machine without a GPU."""
    state = collections.OrderedDict((k, v.detach().cpu()) for k, v in module.state_dict().items())
    preprocess.write_atomically(
        path, lambda f: pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
    )


class _StateDictUnpickler(pickle.Unpickler):
    # A pickle can name any callable and have it run on load. A state_dict needs only these
    # three; torch's own storage loader is swapped for one that loads with weights_only=True.
    ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch.storage", "_load_from_bytes"): lambda data: torch.load(
            io.BytesIO(data), weights_only=True
        ),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"it asks for {module}.{name}, which a state_dict never holds"
            )
        return self.ALLOWED[(module, name)]


def load_state_dict_safely(path):
    """Load a .pkl state_dict without running code from it (a classmate's file can be hostile)."""
    try:
        with open(path, "rb") as f:
            state = _StateDictUnpickler(f).load()
    except FileNotFoundError:
        raise WeightsError(no_weights_file(path)) from None
    except Exception as error:  # a truncated or foreign file can fail in many ways inside pickle
        if zipfile.is_zipfile(path):
            raise WeightsError(
                f"{path} is a checkpoint (torch.save), not a generator.pkl: pass the "
                "generator.pkl of the same run"
            ) from None
        raise WeightsError(
            f"refusing {path}: not a plain state_dict ({preprocess.one_line(error)}), so not a "
            f"file this collection's scripts wrote; {PASS_A_GENERATOR}"
        ) from None
    if not (
        isinstance(state, dict)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise WeightsError(f"refusing {path}: it holds no state_dict of tensors")
    return state


PASS_A_GENERATOR = (
    "pass the generator.pkl of a run of gan_complete.py, wgan_clip.py, dcgan.py or sngan.py"
)


def no_weights_file(path):
    """The message for a weights path with no file; a relative one is read from this folder."""
    message = f"no weights file at {Path(path).resolve()}"
    if not Path(path).is_absolute():
        message += (
            f" (the relative path {path} is read from the current folder, {Path.cwd()}; in a "
            "script, build it from the script's own folder: Path(__file__).parent / ...)"
        )
    return message


def load_weights(module, state, path):
    """load_state_dict with a message that names the mismatch and the Config fields behind it."""
    expected = module.state_dict()
    if "score.weight" in state and "score.weight" not in expected:
        raise WeightsError(
            f"{path} holds a discriminator's weights; pass the generator.pkl beside it"
        )
    if not set(state) & set(expected):
        raise WeightsError(
            f"{path} was not written by this collection's generator (none of its tensors is a "
            f"Generator's: {', '.join(sorted(state)[:2])}, ...); {PASS_A_GENERATOR}"
        )
    # the flags that change a model's tensors (conditional: how the class enters the generator)
    flags = "--z-dim / --g-channels / --d-channels / --img-size / --upsample"
    if getattr(module, "num_classes", 0):
        flags += " / --conditional / --no-class-norm"
    for key, value in expected.items():
        if key not in state:
            raise WeightsError(f"{path} does not fit the Config: it has no '{key}' (pass {flags})")
        if state[key].shape != value.shape:
            raise WeightsError(
                f"{path} does not fit the Config: '{key}' has shape {list(state[key].shape)} in "
                f"the file but {list(value.shape)} here; pass the {flags} the weights were "
                "trained with"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise WeightsError(
            f"{path} does not fit the Config: unexpected '{extra[0]}' (another {flags}, or "
            "--conditional?)"
        )
    module.load_state_dict(state)


def load_generator(script, weights_path, config, device="cpu", data=None):
    """The script's Generator in eval mode with the weights of a generator.pkl (used by --sample
    and compare.py). data: config.json's "data" ({"channels", "class_names"}); None is 3 channels,
    no classes."""
    data = data or {"channels": 3, "class_names": []}
    generator = script.Generator(
        config, len(data["class_names"]) if config.conditional else 0, data["channels"]
    )
    load_weights(generator, load_state_dict_safely(weights_path), weights_path)
    return generator.to(device).train(False)


# ---------------------------------------------------------------------------------- the run folder
# the script of each method, by the name its runs' config.json gives it ("variant"): a run of a
# renamed copy (a student's hw4_code.py) is still a run of its method
METHOD_SCRIPTS = {
    "WGAN-GP": "gan_complete",
    "WGAN-clip": "wgan_clip",
    "DCGAN": "dcgan",
    "SNGAN": "sngan",
}


RUN_FILES = [
    "checkpoint.pt",
    "config.json",
    "metrics.csv",
    "run_info.json",
    "generator.pkl",
    "discriminator.pkl",
    "training_losses.png",
    "generated_samples.png",
    "latent_space_analysis.png",
    "latent_l2_norms.txt",
    "latent_pairs.csv",
    "interpolation.png",
    "latent_traversal.png",
    "training_progress.gif",
]


def check_writable(folder):
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_test{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"cannot write to {folder} ({error.strerror}); pass another --out-dir"
        ) from None


def check_out_dir(config):
    """Report an unwritable or occupied out_dir now, not an hour into training."""
    out_dir = Path(config.out_dir)
    check_writable(out_dir)
    if config.resume and not (out_dir / "checkpoint.pt").exists():
        raise ConfigError(f"--resume: no checkpoint in {out_dir}; start without --resume")
    # Not only the checkpoint: a new run must not inherit an old run's weights or snapshots.
    leftovers = [
        *(
            out_dir / name
            for name in ("checkpoint.pt", "generator.pkl", "run_info.json")
            if (out_dir / name).exists()
        ),
        *out_dir.glob("snapshots/generator_epoch_*.pkl"),
    ]
    if leftovers and not config.resume and not config.overwrite:
        found = ", ".join(path.name for path in leftovers[:2])
        raise ConfigError(
            f"{out_dir} already holds a run ({found}): pass --resume to continue it, "
            "--overwrite to start afresh, or another --out-dir"
        )
    if config.overwrite and not config.resume:  # no old file may be mistaken for the new run's
        for old in [
            *map(out_dir.joinpath, RUN_FILES),
            *out_dir.glob("samples_*.png"),
            *out_dir.glob("snapshots/*.pkl"),
        ]:
            old.unlink(missing_ok=True)


# What a resumed run may change; anything else (batch, seeds, data, models, betas) makes another
# run.
RESUME_MAY_CHANGE = {
    "epochs",
    "lr_generator",
    "lr_discriminator",
    "n_critic",
    "ema_decay",
    "device",
    "amp",
    "channels_last",
    "compile",
    "deterministic",
    "data_dir",
    "cache_dir",
    "preprocess_workers",
    "out_dir",
    "log_every",
    "checkpoint_every",
    "snapshot_every",
    "latent_pool",
    "resume",
    "overwrite",
    "progress",
    "num_samples",
    "per_class",
    "classes",
    "lr_schedule",
    "warmup_steps",
    "minutes",
}


def resumed_config(script, out_dir, given):
    """The Config of the run in out_dir, with the flags typed now on top where a resume allows."""
    config = read_config(script, out_dir / "config.json")  # one line if missing or damaged
    saved = json.loads((out_dir / "config.json").read_text())
    if saved.get("variant") != script.VARIANT:  # by its method: a renamed copy resumes its run
        raise ConfigError(
            f"{out_dir} holds a {saved.get('variant')} run (of {saved.get('script')}.py), not a "
            f"{script.VARIANT} run: resume it with the script of its method"
        )
    changed = [
        name
        for name, value in given.items()
        if name not in RESUME_MAY_CHANGE and getattr(config, name) != value
    ]
    if changed:
        flags = ", ".join(f"{flag(name)} (was {getattr(config, name)})" for name in changed)
        raise ConfigError(f"--resume cannot change {flags}: start a new run with another --out-dir")
    config = config_from_dict(script, {**asdict(config), **given})
    validate_config(script, config)
    return config


def resume_command(run):
    """The command that goes on with this run after a stop."""
    script = Path(run.script.__file__).name
    launcher = f"torchrun --nproc_per_node {world()}" if world() > 1 else "python"
    return f"{launcher} {script} --out-dir {shlex.quote(str(run.out_dir))} --resume"


# ------------------------------------------------------------------------------------- DiffAugment
def translate(x, max_rows, max_columns):
    """Each image shifted by whole pixels, up to max_rows down or up and max_columns right or left,
    zeros shifted in. Integer indexing into a zero-padded copy, as the DiffAugment authors' code
    does: exact in every dtype (a bf16 sampling grid cannot even address every pixel of a 256 px
    image)."""
    n, _, height, width = x.shape
    shifts = torch.stack(
        [
            torch.randint(-max_rows, max_rows + 1, (n,), device=x.device),
            torch.randint(-max_columns, max_columns + 1, (n,), device=x.device),
        ],
        1,
    )
    padded = F.pad(x, [max_columns, max_columns, max_rows, max_rows])
    # output pixel (r, c) of image i is input pixel (r - dy_i, c - dx_i), found at an offset in the
    # padding
    rows = torch.arange(height, device=x.device) + max_rows - shifts[:, 0, None]
    columns = torch.arange(width, device=x.device) + max_columns - shifts[:, 1, None]
    batch = torch.arange(n, device=x.device)[:, None, None]
    # advanced indices on dims 0, 2, 3 around a slice: the result is [n, height, width, channels]
    return padded[batch, :, rows[:, :, None], columns[:, None, :]].permute(0, 3, 1, 2)


def diff_augment(x, policy):
    """DiffAugment (Zhao et al. 2020): random colour, translation (1/8 of the side) and cutout (a
    square of half the side), drawn per image and differentiable, given to real and generated images
    alike before the critic, so that a critic trained on few images cannot simply memorise them.
    Generated images are augmented in fp32, as the real ones are: a bf16 image would be shifted and
    coloured in another precision."""
    if not policy:
        return x
    x = x.float()
    n, _, height, width = x.shape
    uniform = lambda: torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype)
    if "color" in policy:  # brightness, saturation, contrast
        x = x + uniform() - 0.5
        x = (x - x.mean(1, keepdim=True)) * 2 * uniform() + x.mean(1, keepdim=True)
        x = (x - x.mean((1, 2, 3), keepdim=True)) * (uniform() + 0.5) + x.mean(
            (1, 2, 3), keepdim=True
        )
    if "translation" in policy:
        x = translate(x, height // 8, width // 8)
    if "cutout" in policy:
        centre = torch.rand(n, 2, 1, 1, device=x.device)
        rows = (torch.arange(height, device=x.device) + 0.5) / height
        columns = (torch.arange(width, device=x.device) + 0.5) / width
        inside = ((rows[:, None] - centre[:, 0]).abs() < 0.25) & (
            (columns[None, :] - centre[:, 1]).abs() < 0.25
        )
        x = x * ~inside[:, None]
    return x


# --------------------------------------------------------------------- more than one process
# Under torchrun every process runs the same command; these say which one this is. Read from the
# environment torchrun sets, so that they hold before the process group is joined and after.
def rank():
    return int(os.environ.get("RANK", 0))


def world():
    return int(os.environ.get("WORLD_SIZE", 1))


_control_group = None  # gloo group for what every process must agree on: flags, seconds, RNGs


def join_processes(config):
    """This process's device. Under torchrun (more than one process): the device of its
    LOCAL_RANK, and the process group joined, NCCL between GPUs and gloo between CPUs, with a gloo
    group beside NCCL's for the small things every process must agree on (no GPU sync for them)."""
    global _control_group
    device = resolve_device(config.device)
    if world() == 1:
        return device
    processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", world()))
    if device.type == "mps":
        raise ConfigError("--device mps trains in one process: start it without torchrun")
    if config.batch_size % world():
        raise ConfigError(
            f"--batch-size {config.batch_size} is the batch of all {world()} processes together "
            f"and must divide among them: pass a multiple of {world()}"
        )
    if device.type == "cuda":
        if config.device.startswith("cuda:"):
            raise ConfigError(
                f"--device {config.device} picks one GPU, and torchrun gives each process the GPU "
                "of its LOCAL_RANK: pass --device cuda (or auto)"
            )
        if torch.cuda.device_count() < processes_here:
            raise ConfigError(
                f"torchrun starts {processes_here} processes on this machine, which has "
                f"{torch.cuda.device_count()} GPU(s): pass --nproc_per_node "
                f"{torch.cuda.device_count()} or fewer"
            )
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl", device_id=device)
        _control_group = torch.distributed.new_group(backend="gloo")
    else:
        torch.distributed.init_process_group("gloo")
        _control_group = torch.distributed.group.WORLD
    return device


def leave_processes():
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def first_process_first(function):
    """function() on the first process, then on the others: the data stage builds the cache once
    and the others read it; a user's mistake that the first finds stops them all alike."""
    if world() == 1:
        return function()
    result, error = None, None
    if rank() == 0:
        try:
            result = function()
        except (ConfigError, preprocess.PreprocessError) as found:
            error = found
    message = [preprocess.one_line(error) if error else None]
    torch.distributed.broadcast_object_list(message, src=0, group=_control_group)
    if error is not None:
        raise error
    if message[0] is not None:
        raise ConfigError(message[0])
    return result if rank() == 0 else function()


def average_gradients(optimizer):
    """The gradients of the optimizer's parameters averaged over the processes, in place, after
    backward: each process's batch is its shard of the global batch, so the mean of the processes'
    gradients is the gradient of the whole batch's loss, as one process would have it. By hand,
    not by DistributedDataParallel's wrapper: its gradient hooks do not support the double
    backward of WGAN-GP's penalty (pytorch issues 47562, 63812), and StyleGAN3's loop does the
    same. One flat all-reduce for all of them; one pattern for the four methods."""
    if world() == 1:
        return
    gradients = [p.grad for group in optimizer.param_groups for p in group["params"]]
    gradients = [gradient for gradient in gradients if gradient is not None]
    flat = torch.cat([gradient.flatten() for gradient in gradients])
    torch.distributed.all_reduce(flat)
    flat /= world()
    for gradient, averaged in zip(gradients, flat.split([g.numel() for g in gradients])):
        gradient.copy_(averaged.view_as(gradient))


def share_weights(module):
    """The first process's parameters and buffers on every process: they start from the same
    seed, and this makes sure of it."""
    if world() == 1:
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)


def share_buffers(module):
    """The first process's floating-point buffers (BatchNorm's running statistics, spectral norm's
    u and v) on every process, as DistributedDataParallel's broadcast_buffers does: each process
    normalises its own shard of a batch, so their running statistics drift apart, and the saved
    weights and the EMA must be the same on all."""
    if world() == 1:
        return
    buffers = [buffer for buffer in module.buffers() if buffer.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([buffer.flatten() for buffer in buffers])
    torch.distributed.broadcast(flat, src=0)
    for buffer, shared in zip(buffers, flat.split([b.numel() for b in buffers])):
        buffer.copy_(shared.view_as(buffer))


def agreed(values):
    """values (a list of numbers) as the processes agree on them: the largest of each, so that a
    stop one process asks for (Ctrl-C, the time budget, on the first) stops every process at the
    same step."""
    if world() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX, group=_control_group)
    return tensor.tolist()


def first_process_value(value):
    """The first process's value of a number every process computes for itself (a clock's)."""
    if world() == 1:
        return value
    shared = [value]
    torch.distributed.broadcast_object_list(shared, src=0, group=_control_group)
    return shared[0]


def gathered(value):
    """[every process's value], on every process (the RNG states for the checkpoint)."""
    if world() == 1:
        return [value]
    values = [None] * world()
    torch.distributed.all_gather_object(values, value, group=_control_group)
    return values


def check_processes_agree(run):
    """At the end of a run on several processes: every process holds the same weights, buffers
    and EMA, bit for bit, or the run is refused as diverged between processes."""
    if world() == 1:
        return
    digest = hashlib.sha1(usedforsecurity=False)
    for module in (run.generator, run.discriminator, run.ema):
        for tensor in module.state_dict().values() if module is not None else []:
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digests = gathered(digest.hexdigest())
    if len(set(digests)) > 1:
        raise NonFiniteLoss(
            f"the {world()} processes ended with different weights ({', '.join(digests)})"
        )
    say(f"the {world()} processes end with the same weights, bit for bit")


def say(message):
    """A line for the person at the terminal: from the first process only."""
    if rank() == 0:
        tqdm.write(message)
