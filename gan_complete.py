"""WGAN-GP on the Oxford 102 Flowers: the flagship script of this collection.

Wasserstein GAN with gradient penalty (Gulrajani et al. 2017, "Improved Training of
Wasserstein GANs"): the critic estimates the Wasserstein-1 distance between real and
generated images, and a penalty (||grad_x D(x_hat)|| - 1)^2 on random interpolates keeps it
close to 1-Lipschitz. Critic with InstanceNorm (BatchNorm would break the per-sample
penalty), Adam with betas (0, 0.9), n_critic critic steps per generator step, cosine LR.

Run it:
    python gan_complete.py                                  # the defaults: 64x64, 60 epochs
    python gan_complete.py --preset cpu                     # the best 10 minutes of a 2-core CPU
    python gan_complete.py --resume                         # continue GAN_output after a stop
    python gan_complete.py --sample GAN_output/generator.pkl --num-samples 100
    python gan_complete.py --help                           # every Config field as a flag

How it differs from its siblings (`diff gan_complete.py wgan_clip.py` shows exactly this):
    wgan_clip.py  WGAN with weight clipping (Arjovsky et al. 2017): the critic's weights are
                  clamped to +-clip_value instead of a gradient penalty; RMSprop; BatchNorm.
    dcgan.py      DCGAN (Radford et al. 2015): a discriminator with a sigmoid (BCE on logits),
                  BatchNorm, Adam (0.5, 0.999), one-sided label smoothing.
    sngan.py      SNGAN (Miyato et al. 2018): spectral normalisation of every discriminator
                  weight, the hinge loss, no normalisation layer.
Everything else (data, generator, outputs, checkpoints, command line) is the same text.
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
from torch.nn.utils import parametrize
from torchvision.utils import make_grid, save_image
from tqdm.auto import tqdm

import analysis
import preprocess


VARIANT = "WGAN-GP"


# ------------------------------------------------------------------------------------------ Config
@dataclass
class Config:
    """Every setting of a run. Each field is a command-line flag (--lr-generator for lr_generator);
    the comment after it is the flag's --help text."""

    preset: str = ""  # a recipe of PRESETS below (cpu: 10 minutes of a CPU); flags typed win
    # data: handed to preprocess.py, which caches cleaned images once for all the scripts
    data_dir: str = "."  # the flowers' folder (jpg/ + category_to_images.json, or the official one)
    source: str = "auto"  # auto | coursework | official | torchvision | folder | synthetic
    cache_dir: str = "cache"  # where preprocess.py keeps the cleaned images
    img_size: int = 64  # image side in pixels: 32, 64, 128 or 256
    rotations: int = preprocess.DEFAULT_ROTATIONS  # extra randomly rotated copies per image
    max_angle: float = preprocess.DEFAULT_MAX_ANGLE  # largest rotation, degrees
    data_seed: int = 0  # seed of the rotations (part of the cache's name)
    synthetic_images: int = 2000  # images drawn by --source synthetic
    synthetic_classes: int = 10  # classes drawn by --source synthetic
    preprocess_workers: int = 0  # processes for preprocessing; 0 = all CPU cores
    # models
    z_dim: int = 100  # length of the noise vector z
    g_channels: int = 1024  # generator width: channels of its first 4x4 feature map
    d_channels: int = 1024  # critic width: channels of its last 4x4 feature map
    # transpose: ConvTranspose2d k4 s2, DCGAN's; nearest: nearest-neighbour x2, then Conv2d k3
    upsample: str = "transpose"  # how the generator doubles its size: transpose | nearest
    conditional: bool = False  # class-conditional G(z, y) and D(x, y); classes from the data
    class_norm: bool = True  # conditional: each BatchNorm of G takes its scale from the class
    # training
    epochs: int = 60  # passes over the (rotated) data set
    # the data stage is not counted; a resumed run counts the minutes of its earlier sessions
    minutes: float = 0.0  # also stop once training has run this many minutes; 0 = no limit
    batch_size: int = 32  # images per critic step
    lr_generator: float = 2e-4  # Adam learning rate of the generator (peak of the schedule)
    lr_discriminator: float = 2e-4  # Adam learning rate of the critic (peak of the schedule)
    lr_schedule: str = "cosine"  # cosine | linear (both decay to 0 at the last step) | constant
    warmup_steps: int = 0  # linear warm-up of both learning rates over this many critic steps
    betas: tuple = (0.0, 0.9)  # Adam betas; beta1 = 0 as in the WGAN-GP paper
    n_critic: int = 5  # critic steps per generator step
    lambda_gp: float = 10.0  # weight of the gradient penalty
    ema_decay: float = 0.999  # EMA of the generator's weights (samples, saved weights); 0 = off
    diffaugment: str = ""  # DiffAugment of every critic input: color,translation,cutout; "" = off
    seed: int = 42  # seeds python, numpy and torch: the same seed, the same weights on a CPU
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    # auto: bf16 on GPUs from Ampere on and CPUs with bf16 units, fp16 on V100/T4/Turing, else fp32
    amp: str = "auto"  # mixed precision: auto | bf16 | fp16 | off
    channels_last: bool = True  # NHWC memory layout: faster convolutions on CPU and tensor cores
    compile: bool = False  # torch.compile the generator (minutes to start, faster GPU steps)
    deterministic: bool = False  # deterministic GPU kernels (slower); CPU runs always repeat
    # outputs
    out_dir: str = "GAN_output"  # where every output file goes
    log_every: int = 20  # steps between metric flushes and progress updates (one host sync each)
    checkpoint_every: int = 0  # also checkpoint every N steps within an epoch; 0 = at epoch ends
    snapshot_every: int = 10  # keep every N-th epoch's generator in snapshots/; 0 = off
    latent_pool: int = 256  # images generated for the latent-space analysis
    resume: bool = False  # continue the run in out_dir from its checkpoint
    overwrite: bool = False  # start afresh even if out_dir holds a run
    progress: bool = True  # show tqdm progress bars
    tensorboard: bool = False  # also log to out_dir/tensorboard/ (pip install tensorboard)
    # sampling from saved weights instead of training
    sample: str = ""  # path of a generator.pkl: write samples from it and exit
    num_samples: int = 64  # images written by --sample and in generated_samples.png
    per_class: int = 0  # with --sample, a conditional generator: N images of every class
    classes: str = ""  # with --per-class or --invert: only these classes, by name or number (3,17)
    invert: tuple = ()  # with --sample: find these photos in z (--invert a.jpg b.jpg)


# --preset cpu: the best samples a 2-core CPU reached in 10 minutes of training, in a sweep of the
# widths, batch, n_critic, learning rates, EMA, rotations and upsampling at equal wall time
# (docs/preset_cpu/). The 10 minutes end it: its 200 epochs are far more than a CPU reaches in that
# time, and its learning rate is constant, so a stop by time cuts no decay.
PRESETS = {
    "cpu": dict(
        g_channels=128,
        d_channels=128,
        upsample="nearest",
        rotations=0,
        n_critic=2,
        lr_schedule="constant",
        epochs=200,
        minutes=10.0,
    )
}


# ------------------------------------------------------------------------------------------ models
def weights_init(module):
    """DCGAN initialisation (Radford et al. 2015): N(0, 0.02) weights, N(1, 0.02) norm scales.
    Class embeddings keep their own (the models' __init__)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(learned_weight(module), 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)) and module.weight is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def learned_weight(module):
    """The weight tensor a layer learns: under a parametrisation (sngan.py's spectral norm) the
    stored original, not the normalised weight computed from it at each use."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def upsample(config, channels_in, channels_out, bias):
    """x2: ConvTranspose2d k4 s2 (DCGAN's), or nearest x2 + Conv2d k3: less checkerboard (Odena et
    al. 2016)."""
    if config.upsample == "nearest":
        return [
            nn.Upsample(scale_factor=2),
            nn.Conv2d(channels_in, channels_out, 3, 1, 1, bias=bias),
        ]
    return [nn.ConvTranspose2d(channels_in, channels_out, 4, 2, 1, bias=bias)]


class ClassBatchNorm(nn.Module):
    """Conditional BatchNorm (de Vries et al. 2017; BigGAN's generator): BatchNorm without its own
    scale and shift, then 1 + gain(e) and bias(e), two linear maps of the class embedding e."""

    def __init__(self, channels, embed_dim):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(embed_dim, channels, bias=False)
        self.bias = nn.Linear(embed_dim, channels, bias=False)

    def forward(self, x, embedded):
        scale, shift = 1 + self.gain(embedded), self.bias(embedded)
        return self.norm(x) * scale[:, :, None, None] + shift[:, :, None, None]


class Generator(nn.Module):
    """z -> Linear -> g_channels x 4 x 4 -> (x2 by --upsample, BatchNorm, ReLU) x n -> Tanh.
    Conditional: a learned embedding of the class y, as long as z, sets the scale and shift of
    every BatchNorm (ClassBatchNorm); with --no-class-norm it joins z at the input instead. The
    first is the default: its classes were recognised more often (README, "Class-conditional
    generation")."""

    def __init__(self, config, num_classes=0, image_channels=3):
        super().__init__()
        self.channels, self.num_classes = config.g_channels, num_classes
        self.class_norm = bool(num_classes) and config.class_norm
        # N(0, 1), as z
        self.embed = nn.Embedding(num_classes, config.z_dim) if num_classes else None
        joined = num_classes and not self.class_norm
        self.project = nn.Linear(config.z_dim * (2 if joined else 1), config.g_channels * 4 * 4)

        def norm(channels):
            if self.class_norm:
                return ClassBatchNorm(channels, config.z_dim)
            return nn.BatchNorm2d(channels)

        layers = [norm(config.g_channels), nn.ReLU(True)]
        channels = config.g_channels
        for _ in range(int(math.log2(config.img_size)) - 3):  # 4 -> img_size / 2
            layers += [
                *upsample(config, channels, channels // 2, False),
                norm(channels // 2),
                nn.ReLU(True),
            ]
            channels //= 2
        # img_size / 2 -> img_size
        layers += [*upsample(config, channels, image_channels, True), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z, labels=None):
        embedded = None
        if self.embed is not None:  # labels are ignored by an unconditional generator
            embedded = self.embed(labels)
            if not self.class_norm:
                z = torch.cat([z, embedded], dim=1)
        x = self.project(z).view(-1, self.channels, 4, 4)
        for layer in self.net:
            x = layer(x, embedded) if isinstance(layer, ClassBatchNorm) else layer(x)
        return x


class InstanceNormFP32(nn.InstanceNorm2d):
    """InstanceNorm in fp32 under autocast: in fp16 its double backward (the penalty's) is NaN."""

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float()).to(x.dtype)


def critic_norm(channels):
    """InstanceNorm, not BatchNorm: the gradient penalty is per sample, and BatchNorm makes
    each critic output depend on the whole batch (Gulrajani et al. 2017, section 4)."""
    return InstanceNormFP32(channels, affine=True)


def critic_layer(layer):
    """A critic layer as it is: WGAN-GP keeps the critic near 1-Lipschitz with the gradient
    penalty (compute_gradient_penalty), not inside its layers."""
    return layer


class Discriminator(nn.Module):
    """The critic (a WGAN's name) or discriminator (DCGAN's): strided Conv2d blocks with critic_norm
    on all but the first, LeakyReLU(0.2), to phi(x) (d_channels x 4 x 4), then a 4x4 conv psi to one
    unbounded score (a Wasserstein score, or DCGAN's logit; no sigmoid, the loss holds it).
    Conditional: the projection discriminator (Miyato & Koyama 2018), D(x, y) = psi(phi(x)) +
    <embed(y), phi(x)>; the embedding is a critic weight (clipped by WGAN-clip, penalised by
    WGAN-GP). Every weighted layer passes through critic_layer: the method's Lipschitz
    constraint where it lives in the layers (sngan.py's spectral norm), else the layer as it is."""

    def __init__(self, config, num_classes=0, image_channels=3):
        super().__init__()
        blocks = int(math.log2(config.img_size)) - 2  # img_size -> 4
        channels = config.d_channels // 2 ** (blocks - 1)
        # no norm on the input
        layers = [
            critic_layer(nn.Conv2d(image_channels, channels, 4, 2, 1)),
            nn.LeakyReLU(0.2, True),
        ]
        for _ in range(blocks - 1):
            layers += [
                critic_layer(nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=False)),
                critic_norm(channels * 2),
                nn.LeakyReLU(0.2, True),
            ]
            channels *= 2
        self.features = nn.Sequential(*layers)
        self.score = critic_layer(nn.Conv2d(channels, 1, 4, 1, 0))
        self.embed = None
        if num_classes:
            embed = nn.Embedding(num_classes, channels * 4 * 4)
            # on the scale of psi's weights, so neither term drowns the other
            nn.init.normal_(embed.weight, 0.0, 0.02)
            self.embed = critic_layer(embed)

    def forward(self, x, labels=None, with_features=False):
        """D(x, y); with_features: (D(x, y), phi(x) flattened), for feature matching."""
        features = self.features(x)
        score = self.score(features).view(-1)
        if self.embed is not None:
            score = score + (self.embed(labels) * features.flatten(1)).sum(1)
        return (score, features.flatten(1)) if with_features else score


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
    alike before the critic, so that a critic trained on few images cannot simply memorise them."""
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


# ----------------------------------------------------------------------------- the method: WGAN-GP
CRITIC_VIEW = "critic's view: E[D(x)] - E[D(G(z))] (w_dist) and the gradient penalty (gp)"


def method_checks(config):
    if not config.lambda_gp > 0:
        raise ConfigError(f"--lambda-gp must be > 0 for WGAN-GP, got {config.lambda_gp}")
    if not all(0 <= b < 1 for b in config.betas):
        raise ConfigError(f"--betas must be two numbers in [0, 1), got {config.betas}")


def make_optimizers(generator, discriminator, config, device):
    # beta1 = 0: momentum fights the critic's moving target (WGAN-GP paper, Algorithm 1).
    fused = device.type == "cuda"  # one kernel for all parameters
    opt_g = torch.optim.Adam(
        generator.parameters(), lr=config.lr_generator, betas=config.betas, fused=fused
    )
    opt_d = torch.optim.Adam(
        discriminator.parameters(), lr=config.lr_discriminator, betas=config.betas, fused=fused
    )
    return opt_g, opt_d


def compute_gradient_penalty(discriminator, real, fake, labels=None, scaler=None):
    """E[(||grad_x_hat D(x_hat, y)||_2 - 1)^2] on x_hat = a * real + (1 - a) * fake, a ~ U[0, 1] per
    sample; real and fake share their classes y, so x_hat has them too.

    Under fp16 the inner gradient is taken of the scaled scores (small fp16 gradients underflow) and
    unscaled before its norm, in fp32: torch.amp's pattern for gradient penalties. An overflow gives
    an inf penalty, and the scaler skips that step.
    """
    alpha = torch.rand(real.size(0), 1, 1, 1, device=real.device)
    interpolates = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = discriminator(interpolates, labels)
    # no host sync
    scale = 1.0 if scaler is None else scaler.scale(torch.ones((), device=real.device))
    (gradients,) = torch.autograd.grad(
        scores.float().sum() * scale, interpolates, create_graph=True
    )
    # reshape, not view: the gradient of a channels_last input is not contiguous in NCHW order.
    gradients = (gradients.float() / scale).reshape(gradients.size(0), -1)
    return ((gradients.norm(2, dim=1) - 1) ** 2).mean()


def critic_step(generator, discriminator, real, labels, opt_d, scaler, config, autocast):
    """One critic update; returns (d_loss, Wasserstein estimate, gradient penalty, skipped by the
    scaler)."""
    z = torch.randn(real.size(0), config.z_dim, device=real.device)
    with torch.no_grad(), autocast():
        fake = generator(z, labels)  # the real batch's classes (ignored by unconditional models)
    # the generated batch in fp32, as the real one is, so that both are augmented the same way
    real = diff_augment(real, config.diffaugment)
    fake = diff_augment(fake.float(), config.diffaugment)
    with autocast():
        real_score = discriminator(real, labels).float().mean()
        fake_score = discriminator(fake, labels).float().mean()
        # between the augmented images: the critic is penalised on what it sees
        gradient_penalty = compute_gradient_penalty(discriminator, real, fake, labels, scaler)
    # L_D = E[D(G(z))] - E[D(x)] + lambda * GP
    d_loss = fake_score - real_score + config.lambda_gp * gradient_penalty
    skipped = scaled_step(d_loss, opt_d, scaler)
    return d_loss.detach(), (real_score - fake_score).detach(), gradient_penalty.detach(), skipped


def generator_step(generator, discriminator, real, labels, opt_g, scaler, config, autocast):
    """One generator update for a batch of the real batch's size and classes; returns (g_loss,
    skipped)."""
    z = torch.randn(real.size(0), config.z_dim, device=real.device)
    with autocast():
        # L_G = -E[D(G(z))]
        g_loss = (
            -discriminator(diff_augment(generator(z, labels), config.diffaugment), labels)
            .float()
            .mean()
        )
    return g_loss.detach(), scaled_step(g_loss, opt_g, scaler)


# ------------------------------------------------------------------------------- the training loop
# metrics.csv's columns. d_skipped / g_skipped: 1 where the fp16 loss scaler skipped the critic's /
# the generator's update (its gradients overflowed): a skipped step, not a divergence.
METRIC_COLUMNS = [
    "step",
    "epoch",
    "d_loss",
    "g_loss",
    "w_dist",
    "gp",
    "lr",
    "time",
    "d_skipped",
    "g_skipped",
]
COLUMN = {name: index for index, name in enumerate(METRIC_COLUMNS)}  # a column's place in a row
STEP_METRICS = ["d_loss", "g_loss", "w_dist", "gp", "d_skipped", "g_skipped"]  # kept on the device
SKIPPED_LIMIT = 100  # this many steps in a row with a skipped update: the run diverged
# The fp16 loss scalers' first scale. torch's default, 65,536, overflows the gradients of the first
# steps, each skipped while the scale halves; these are where the scales of the flowers' runs came
# down to (docs/measurements). The scalers still double their scale after every 2,000 steps without
# an overflow.
FP16_INITIAL_SCALE = {"scaler_d": 2.0**5, "scaler_g": 2.0**14}
# train-mode passes that measure the EMA generator's BatchNorm statistics
BN_CALIBRATION_BATCHES = 16


def train_gan(generator, discriminator, dataloader, config):
    """Train in place on an InMemoryLoader, writing checkpoints, weights, samples and metrics into
    config.out_dir (continuing from its checkpoint.pt with config.resume); returns the run's
    numbers, as in run_info.json."""
    run = start_training(generator, discriminator, dataloader, config)
    parts, state, autocast = run.parts, run.state, run.autocast
    opt_g, opt_d, scaler_g, scaler_d = (
        parts[name] for name in ("opt_g", "opt_d", "scaler_g", "scaler_d")
    )
    step_generator = torch.compile(generator) if config.compile else generator
    # the generator's last loss and skip, logged with every critic step: it steps once in n_critic
    g_loss = torch.tensor(
        run.rows[-1][COLUMN["g_loss"]] if run.rows else math.nan, device=run.device
    )
    g_skipped = torch.zeros((), device=run.device)
    pace_step = state["step"] + config.log_every  # when the pace line is printed

    with _StopRequest() as stop, warnings.catch_warnings(), run.writer or contextlib.nullcontext():
        # a step the fp16 scaler skips looks to the LR scheduler like a missed optimizer.step()
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
        for epoch in range(state["epoch"], config.epochs):
            if out_of_time(config, state["elapsed"]):  # spent while the last outputs were written
                break
            epoch_start, first_batch = time.perf_counter(), state["batch"]
            bar = progress_bar(len(dataloader), first_batch, epoch, config)
            for index, real, labels in dataloader.batches(epoch, start=first_batch):
                # the critic: one step on every batch
                d_loss, w_dist, gp, d_skipped = critic_step(
                    step_generator, discriminator, real, labels, opt_d, scaler_d, config, autocast
                )

                # the generator: one step on the first of every n_critic batches, then its average
                if state["step"] % config.n_critic == 0:
                    discriminator.requires_grad_(False)  # no critic weight gradients in the G step
                    g_loss, g_skipped = generator_step(
                        step_generator,
                        discriminator,
                        real,
                        labels,
                        opt_g,
                        scaler_g,
                        config,
                        autocast,
                    )
                    discriminator.requires_grad_(True)
                    if parts["ema"] is not None:
                        update_ema(parts["ema"], generator, config.ema_decay, state["ema_updates"])
                        state["ema_updates"] += 1
                    state["g_steps"] += 1

                # the learning-rate schedule and the counters
                lr = opt_g.param_groups[0]["lr"]
                parts["sched_g"].step()
                parts["sched_d"].step()
                state["step"] += 1
                state["batch"] = index + 1
                state["images_seen"] += real.size(0)

                # metrics, the pace line, checkpoints, and a stop by Ctrl-C or by the time budget
                metrics = [d_loss, g_loss, w_dist, gp, d_skipped, g_skipped]  # as STEP_METRICS
                run.pending.append((state["step"], epoch + 1, lr, training_time(run), metrics))
                bar.update(1)
                log_and_checkpoint(run, config, bar, stop.signum)
                if state["step"] == pace_step:
                    report_pace(run, config)
                if stop.signum:
                    bar.close()
                    raise TrainingInterrupted(stop.signum)
                if out_of_time(config, training_time(run)):
                    break  # no further step: this (partial) epoch's outputs, then the final ones

            bar.close()
            finish_epoch(run, dataloader, config, epoch, first_batch, epoch_start)
        if state["epoch"] < config.epochs:
            report_time_stop(config, state)
    return write_run_info(run, dataloader, config)


@dataclass
class Training:
    """What train_gan works with besides the data: made by start_training (restored from the
    checkpoint on --resume), saved whole by save_checkpoint."""

    parts: dict  # generator, discriminator, ema, opt_g, opt_d, sched_g, sched_d, scaler_g, scaler_d
    state: dict  # epoch, batch, step, g_steps, ema_updates, images_seen, elapsed, images, data
    rows: list  # metrics.csv's rows so far
    fixed: tuple  # (z, classes) of samples_epoch_XXX.png: the same 64 images every epoch
    autocast: object  # a function that returns the autocast context of --amp
    writer: object  # TensorBoard's SummaryWriter, or None
    device: torch.device
    total_steps: int  # critic steps of all the epochs
    started: float = 0.0  # time.perf_counter() when the run would have started without a break
    elapsed_at_start: float = 0.0  # seconds of training before this session (a resumed run's)
    pending: list = dataclasses.field(default_factory=list)  # step metrics still on the device


def progress_bar(batches, first_batch, epoch, config):
    """A tqdm bar over an epoch's batches, starting at first_batch in a resumed epoch."""
    return tqdm(
        total=batches,
        initial=first_batch,
        desc=f"epoch {epoch + 1}/{config.epochs}",
        leave=False,
        dynamic_ncols=True,
        disable=not config.progress,
    )


def start_training(generator, discriminator, dataloader, config):
    """The optimisers, schedules, fp16 scalers and EMA, restored from the checkpoint on --resume;
    writes config.json, and metrics.csv up to the checkpoint."""
    out_dir, device = Path(config.out_dir), dataloader.device
    dtype = amp_dtype(config, device)
    total_steps = config.epochs * len(dataloader)
    opt_g, opt_d = make_optimizers(generator, discriminator, config, device)
    parts = {
        "generator": generator,
        "discriminator": discriminator,
        "ema": copy.deepcopy(generator).requires_grad_(False) if config.ema_decay > 0 else None,
        "opt_g": opt_g,
        "opt_d": opt_d,
        "sched_g": lr_schedule(opt_g, config, total_steps),
        "sched_d": lr_schedule(opt_d, config, total_steps),
    }
    for name in ("scaler_g", "scaler_d"):  # a pass-through scaler unless fp16
        parts[name] = torch.amp.GradScaler(
            device.type, init_scale=FP16_INITIAL_SCALE[name], enabled=dtype == torch.float16
        )
    state = {
        "epoch": 0,
        "batch": 0,
        "step": 0,
        "g_steps": 0,
        "ema_updates": 0,
        "images_seen": 0,
        "elapsed": 0.0,
        "images": len(dataloader.images),
        "data": fingerprint(dataloader.images),
    }
    rows = []
    if config.resume:
        rows = restore_checkpoint(out_dir / "checkpoint.pt", parts, state, config, device)
    if out_of_time(config, state["elapsed"]):
        raise ConfigError(
            f"--minutes {config.minutes:g}: the run has trained "
            f"{state['elapsed'] / 60:.2f} minutes already; to go on, pass a larger "
            f"--minutes, or --minutes 0 to train to the end of its --epochs "
            f"({config.epochs})"
        )

    # samples_epoch_XXX.png: the same 64 z's every epoch, and 8 classes spread over all, one a row
    fixed_z = torch.randn(64, config.z_dim, generator=torch.Generator().manual_seed(config.seed))
    classes = torch.linspace(0, max(generator.num_classes - 1, 0), 8).round().long()
    fixed = (fixed_z.to(device), classes.repeat_interleave(8).to(device))

    data = {"channels": dataloader.images.size(1), "class_names": dataloader.class_names}
    write_json(
        out_dir / "config.json",
        {
            "variant": VARIANT,
            "script": Path(__file__).stem,
            "config": run_settings(config),
            "data": data,
            "torch": torch.__version__,
            "device": str(device),
        },
    )
    # rewritten from the checkpoint's rows: drops the steps a stopped run made after it
    header = ",".join(METRIC_COLUMNS).encode() + b"\n"
    preprocess.write_atomically(out_dir / "metrics.csv", lambda f: f.write(header + csv_text(rows)))
    writer = None
    if config.tensorboard:
        from torch.utils.tensorboard import SummaryWriter  # optional: run_training checked for it

        # purge_step drops what a stopped run logged after its checkpoint
        writer = SummaryWriter(out_dir / "tensorboard", purge_step=state["step"] or None)

    generator.train()
    discriminator.train()
    autocast = functools.partial(
        torch.autocast, device.type, dtype=dtype or torch.float32, enabled=dtype is not None
    )
    return Training(
        parts=parts,
        state=state,
        rows=rows,
        fixed=fixed,
        autocast=autocast,
        writer=writer,
        device=device,
        total_steps=total_steps,
        started=time.perf_counter() - state["elapsed"],
        elapsed_at_start=state["elapsed"],
    )


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


def scaled_step(loss, optimizer, scaler, max_grad_norm=0.0):
    """backward and step through the loss scaler (a pass-through one without fp16), the gradients
    clipped to max_grad_norm if > 0. Returns 1.0 on the device when the scaler skipped the step
    (inf/nan gradients; it lowered its scale), else 0.0: read with the other metrics, not now,
    which would wait for the GPU."""
    scale_before = scaler.scale(torch.ones((), device=loss.device))
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if max_grad_norm > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    return (scaler.scale(torch.ones((), device=loss.device)) < scale_before).float()


def training_time(run):
    """Seconds of training so far, the earlier sessions of a resumed run included."""
    return time.perf_counter() - run.started


def log_and_checkpoint(run, config, bar, signum):
    """After a step: every log_every steps, write the pending metrics to metrics.csv; every
    checkpoint_every steps, or when a stop was asked for (signum), save a checkpoint."""
    step = run.state["step"]
    at_checkpoint = config.checkpoint_every and step % config.checkpoint_every == 0
    if signum:
        tqdm.write(f"{signal.Signals(signum).name}: saving a checkpoint at step {step} ...")
    if step % config.log_every == 0 or at_checkpoint or signum:
        flush_metrics(run, config, bar)
    if at_checkpoint or signum:
        run.state["elapsed"] = training_time(run)
        check_finite([run.parts["generator"], run.parts["discriminator"]], step)
        save_checkpoint(run, config)


def report_pace(run, config):
    """Once, after the first log_every steps of a session: how long the run will take at this
    speed, and whether a --minutes budget ends it before its learning rate has decayed."""
    state, now = run.state, training_time(run)
    per_step = (now - run.elapsed_at_start) / config.log_every
    hours = (run.total_steps - state["step"]) * per_step / 3600
    message = (
        f"pace: {per_step:.2f} s a step here, so the {config.epochs} epochs "
        f"({run.total_steps:,} steps) need about {hours:.1f} h more"
    )
    if run.device.type == "cpu" and hours > 0.5 and "cpu" in PRESETS and not config.minutes:
        message += "; for a run of 10 minutes on a CPU, use --preset cpu"
    if config.minutes:
        steps_left = round((60 * config.minutes - now) / per_step)
        last_step = min(run.total_steps, state["step"] + steps_left)
        message += f"; --minutes {config.minutes:g} stops it near step {last_step:,}"
        if config.lr_schedule != "constant" and last_step < run.total_steps:
            message += (
                f", {last_step / run.total_steps:.0%} of the way through its "
                f"{config.lr_schedule} learning-rate decay (--lr-schedule constant suits a "
                "run stopped by time)"
            )
    tqdm.write(message)


def out_of_time(config, elapsed):
    """Whether elapsed seconds of training spend the --minutes budget (checked after every step
    and before every epoch, so no step starts once it is spent)."""
    return config.minutes > 0 and elapsed >= 60 * config.minutes


def report_time_stop(config, state):
    command = resume_command(config.out_dir)
    tqdm.write(
        f"--minutes {config.minutes:g} spent at step {state['step']}, in epoch "
        f"{state['epoch'] + 1}. To train on: {command} --minutes M (M > {config.minutes:g}, "
        f"the budget in all), or --minutes 0 to train to the end of its --epochs "
        f"({config.epochs})"
    )


def finish_epoch(run, dataloader, config, epoch, first_batch, epoch_start):
    """The end of an epoch, or of its part that the time budget allowed: the weights and samples,
    run_info.json, then the checkpoint, and a summary line."""
    state = run.state
    flush_metrics(run, config, None)
    batches = state["batch"] - first_batch
    if state["batch"] == len(dataloader):  # a partial epoch stays unfinished: a resume completes it
        state["epoch"] = epoch + 1
        state["batch"] = 0
    check_finite([run.parts["generator"], run.parts["discriminator"]], state["step"])
    write_epoch_outputs(run, config, epoch + 1, dataloader.class_names)
    state["elapsed"] = training_time(run)  # the outputs' time counts against --minutes
    write_run_info(run, dataloader, config)
    save_checkpoint(run, config)  # last: the epoch is done only once all its files are whole
    seconds = time.perf_counter() - epoch_start
    last = dict(zip(METRIC_COLUMNS, run.rows[-1]))
    tqdm.write(
        f"epoch {epoch + 1}/{config.epochs}  D {last['d_loss']:.4f}  G {last['g_loss']:.4f}  "
        f"W {last['w_dist']:.4f}  GP {last['gp']:.4f}  {seconds:.1f}s  "
        f"{batches * dataloader.batch_size / seconds:.0f} img/s"
    )


def flush_metrics(run, config, bar):
    """Read the pending step metrics back from the device (one sync), append them to metrics.csv,
    give the last row to TensorBoard (when on) and the progress bar (when given); stop the run if
    a loss is not finite where no skipped update explains it."""
    if not run.pending:
        return
    on_device = torch.stack([torch.stack(metrics) for *_, metrics in run.pending])
    new_rows = []
    for (step, epoch, lr, seconds, _), values in zip(run.pending, on_device.float().cpu().tolist()):
        row = {
            "step": step,
            "epoch": epoch,
            "lr": lr,
            "time": seconds,
            **dict(zip(STEP_METRICS, values)),
        }
        new_rows.append([row[name] for name in METRIC_COLUMNS])
    run.pending.clear()
    run.rows.extend(new_rows)
    with open(Path(config.out_dir) / "metrics.csv", "ab") as f:  # whole rows in one write
        f.write(csv_text(new_rows))
    last = dict(zip(METRIC_COLUMNS, new_rows[-1]))
    if run.writer is not None:
        for name in ("d_loss", "g_loss", "w_dist", "gp", "lr"):
            run.writer.add_scalar(name, last[name], last["step"])
    if bar is not None:
        bar.set_postfix(
            D=f"{last['d_loss']:.3f}",
            G=f"{last['g_loss']:.3f}",
            W=f"{last['w_dist']:.3f}",
            GP=f"{last['gp']:.3f}",
        )
    check_losses(new_rows, run.rows)


def check_losses(new_rows, rows):
    """NonFiniteLoss for a loss that is inf/nan in a step whose update was not skipped, or for
    SKIPPED_LIMIT steps in a row with a skipped update."""
    for row in map(lambda values: dict(zip(METRIC_COLUMNS, values)), new_rows):
        critic_diverged = not all(map(math.isfinite, (row["d_loss"], row["w_dist"], row["gp"])))
        generator_diverged = not math.isfinite(row["g_loss"])
        if (critic_diverged and not row["d_skipped"]) or (
            generator_diverged and not row["g_skipped"]
        ):
            raise NonFiniteLoss(
                f"non-finite loss at step {row['step']} (d_loss={row['d_loss']}, "
                f"g_loss={row['g_loss']})"
            )
    streak = 0
    for row in reversed(rows):
        if not (row[COLUMN["d_skipped"]] or row[COLUMN["g_skipped"]]):
            break
        streak += 1
    if streak >= SKIPPED_LIMIT:
        raise NonFiniteLoss(
            f"the fp16 loss scaler skipped an update in each of the {streak} steps "
            f"to {rows[-1][COLUMN['step']]}"
        )


def check_finite(modules, step):
    finite = [torch.isfinite(p).all() for module in modules for p in module.parameters()]
    if not torch.stack(finite).all():
        raise NonFiniteLoss(f"a weight became inf/nan by step {step}")


def write_epoch_outputs(run, config, epoch, class_names):
    """generator.pkl, its snapshot, discriminator.pkl and the epoch's samples, all before the
    checkpoint that marks the epoch done: a run stopped in between redoes the epoch, so no file is
    ever stale. The EMA generator, when there is one, is what is saved and sampled."""
    out_dir = Path(config.out_dir)
    sampler = run.parts["ema"] if run.parts["ema"] is not None else run.parts["generator"]
    if config.ema_decay > 0:
        sampler = recalibrated_batchnorm(sampler, config, config.seed + epoch)
    save_state_dict(sampler, out_dir / "generator.pkl")
    if config.snapshot_every and epoch % config.snapshot_every == 0:
        (out_dir / "snapshots").mkdir(exist_ok=True)
        save_state_dict(sampler, out_dir / "snapshots" / f"generator_epoch_{epoch:03d}.pkl")
    save_state_dict(run.parts["discriminator"], out_dir / "discriminator.pkl")
    path = out_dir / f"samples_epoch_{epoch:03d}.png"
    images = save_samples(sampler, *run.fixed, path, class_names)
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


def write_run_info(run, dataloader, config):
    """run_info.json: what compare.py needs to put this run beside the others."""
    state = run.state
    info = {
        "variant": VARIANT,
        "script": Path(__file__).stem,
        "generator_params": count_parameters(run.parts["generator"]),
        "critic_params": count_parameters(run.parts["discriminator"]),
        "epochs_done": state["epoch"],
        "epochs": config.epochs,
        "generator_steps": state["g_steps"],
        "critic_steps": state["step"],
        "images_seen": state["images_seen"],
        "wall_time_s": round(state["elapsed"], 2),
        "device": str(run.device),
        "images_per_s": round(state["images_seen"] / max(state["elapsed"], 1e-9), 2),
        "img_size": config.img_size,
        "z_dim": config.z_dim,
        "batch_size": config.batch_size,
        "cache_path": getattr(dataloader, "cache_path", ""),
        "finished": state["epoch"] >= config.epochs or out_of_time(config, state["elapsed"]),
    }
    write_json(Path(config.out_dir) / "run_info.json", info)
    return info


def fingerprint(images):
    """A short hash of the training images' pixels: a resume on other data is refused."""
    return hashlib.sha1(images.cpu().numpy().data, usedforsecurity=False).hexdigest()[:16]


# ----------------------------------------------------------------------------------------- outputs
PER_CLASS_GRID = 10  # images of each class in a conditional run's samples_per_class.png


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
    """The indices of --classes (names, or numbers: 3 finds '003' and 'class_3'); all when it is
    empty."""
    indices = []
    numbers = [
        int(match.group()) if (match := re.search(r"\d+$", name)) else None for name in class_names
    ]
    for token in filter(None, (t.strip() for t in classes.split(","))):
        found = [
            i
            for i, name in enumerate(class_names)
            if name == token or (token.isdigit() and numbers[i] == int(token))
        ]
        if not found:
            raise ConfigError(
                f"--classes: there is no class {token!r}; this generator's classes are "
                f"{', '.join(class_names[:3])}, ..., {class_names[-1]}"
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


def plot_losses(out_dir):
    metrics = dict(zip(METRIC_COLUMNS, read_metrics(out_dir).T))
    analysis.plot_losses(metrics, Path(out_dir) / "training_losses.png", VARIANT, CRITIC_VIEW)


def read_metrics(out_dir):
    lines = (Path(out_dir) / "metrics.csv").read_text().split("\n")  # the last is "" or a torn row
    # blank: skipped
    rows = [[float(v) if v else math.nan for v in row] for row in csv.reader(lines[1:-1])]
    return np.array(rows).reshape(-1, len(METRIC_COLUMNS))


def write_final_outputs(config, device, data):
    out_dir = Path(config.out_dir)
    generator = load_generator(out_dir / "generator.pkl", config, device, data)
    plot_losses(out_dir)
    random = torch.Generator().manual_seed(config.seed + 2)
    z = torch.randn(config.num_samples, config.z_dim, generator=random)
    labels = torch.randint(max(generator.num_classes, 1), (config.num_samples,), generator=random)
    save_grid(generate(generator, z, device, labels), out_dir / "generated_samples.png")
    if generator.num_classes:
        indices = list(range(generator.num_classes))
        analysis.save_per_class_grid(
            per_class_images(generator, config, indices, PER_CLASS_GRID, device),
            data["class_names"],
            out_dir,
        )
    draw = lambda z: generate(generator, z, device)  # class 0 of a conditional generator
    within = f", all of class {data['class_names'][0]}" if generator.num_classes else ""
    analysis.latent_space_analysis(draw, config, out_dir, VARIANT, within)
    analysis.latent_traversal(draw, config, out_dir, VARIANT)
    analysis.save_progress_gif(out_dir)


def weights_run(weights, given):
    """(Config, data) of the run a generator.pkl (or a snapshot of it) comes from: its config.json's
    model settings with the fields typed now on top; the typed Config alone when there is none."""
    run_folder = weights.parent.parent if weights.parent.name == "snapshots" else weights.parent
    if not (run_folder / "config.json").exists():
        return config_from_dict({**asdict(Config()), **given}), None
    config = config_from_dict(
        {**asdict(read_config(run_folder / "config.json")), "device": "auto", **given}
    )
    validate_config(config)
    return config, json.loads((run_folder / "config.json").read_text()).get("data")


def generate_per_class(weights_path, per_class=10, classes="", device="cpu"):
    """{class name: uint8 images [per_class, H, W, 3] (or [per_class, H, W] grayscale)} from a
    conditional generator.pkl and its config.json.

    For a coursework's reproduce file: `generate_per_class("GAN_output/generator.pkl", 10)`.
    """
    weights = Path(weights_path).resolve()
    if not weights.is_file():
        raise WeightsError(no_weights_file(weights_path))
    config, data = weights_run(weights, {"device": device})
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
    generator = load_generator(weights_path, config, resolve_device(config.device), data)
    indices = class_indices(data["class_names"], classes)
    images = per_class_images(generator, config, indices, per_class, resolve_device(config.device))
    pixels = (
        ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
    )
    # grayscale: [N, H, W], as PIL takes it
    pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
    return {data["class_names"][i]: batch for i, batch in zip(indices, pixels)}


def sample_from_weights(config, given):
    """--sample: a grid and single PNGs from saved weights, without training; --per-class: of each
    class. All in one folder, --out-dir or samples/ beside the weights, never over a run's own
    outputs."""
    weights = Path(config.sample).resolve()
    if not weights.is_file():
        raise WeightsError(no_weights_file(config.sample))
    config, data = weights_run(weights, given)
    out_dir = Path(given["out_dir"]) if "out_dir" in given else weights.parent / "samples"
    if config.per_class and not (config.conditional and data):
        raise ConfigError(
            f"--per-class: {weights} is not a conditional generator (trained without "
            "--conditional, or without its config.json): use --num-samples"
        )
    indices = class_indices(data["class_names"], config.classes) if config.per_class else []
    device = resolve_device(config.device)
    generator = load_generator(weights, config, device, data)
    check_writable(out_dir)
    if config.invert:
        return invert_photos(config, generator, data, device, out_dir)
    # the files of an earlier call (a larger --num-samples, other --classes)
    for pattern in ("sample_*.png", "*/sample_*.png", "samples_grid.png", "samples_per_class*.png"):
        for old in out_dir.glob(pattern):
            old.unlink()
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
    analysis.latent_traversal(lambda z: generate(generator, z, device), config, out_dir, VARIANT)
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
    except OSError as error:  # no such file, or not an image
        raise ConfigError(f"--invert: cannot read {path} as an image ({one_line(error)})") from None
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
    z, labels, found, rms = analysis.invert(draw, photos, candidates, config.z_dim, config.seed)
    for old in out_dir.glob("inversion*.png"):  # an earlier call's (two photos, then one)
        old.unlink()
    rows = []
    for path, error, label in zip(config.invert, rms.tolist(), labels.tolist()):
        rows.append(
            f"{Path(path).name}: RMS {error:.0f}/255" + (f", {names[label]}" if names else "")
        )
        found_as = f" as {names[label]}" if names else ""
        print(f"{path}: found in z{found_as} at an RMS error of {error:.1f} of 255 levels")
    analysis.save_inversion(photos, found, rows, out_dir)
    written = "inversion.png"
    if len(photos) == 2:
        analysis.save_inversion_path(draw, photos, z, labels, out_dir)
        written += " and inversion_interpolation.png"
    print(f"wrote {written} in {out_dir}/")
    return 0


# ------------------------------------------------------------------------------------ command line
class ConfigError(Exception):
    """A user mistake in the configuration; the message says what to do."""


class WeightsError(Exception):
    """A weights or checkpoint file that cannot be used; the message says why."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line instead of argparse's usage wall: the Config has many fields.
        raise ConfigError(f"{message} (see --help)")


def flag(name):
    """The command-line flag of a Config field: lr_generator -> --lr-generator."""
    return "--" + name.replace("_", "-")


def build_parser():
    """A flag for every Config field; the comment after the field is its --help text."""
    parser = _Parser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,  # so that only the flags a user typed are returned
    )
    field_comment = r"^\s+(\w+): [^=]+= .*?  # (.*)$"
    comments = dict(re.findall(field_comment, inspect.getsource(Config), flags=re.M))
    for field in dataclasses.fields(Config):
        help_text = f"{comments.get(field.name, '')} (default: {field.default})"
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


def parse_config(argv=None):
    """(Config, the fields typed on the command line): the typed fields over the --preset's over the
    defaults. A resumed run or a --sample takes the rest from its config.json, which holds the
    preset's values."""
    given = vars(build_parser().parse_args(argv))
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in given.items()}
    if given.get("preset", "") not in {"", *PRESETS}:
        raise ConfigError(
            f"--preset must be {' or '.join(PRESETS) or 'empty (this script has none)'}, got "
            f"{given['preset']!r}"
        )
    return Config(**{**PRESETS.get(given.get("preset"), {}), **given}), given


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
]
CHOICES = {
    "lr_schedule": ("cosine", "linear", "constant"),
    "amp": ("auto", "bf16", "fp16", "off"),
    "upsample": ("transpose", "nearest"),
}


def validate_config(config):
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
    method_checks(config)


def config_from_dict(values):
    """A Config from a dict (config.json, a checkpoint), ignoring unknown keys."""
    names = {f.name: f for f in dataclasses.fields(Config)}
    kept = {
        k: (tuple(v) if isinstance(names[k].default, tuple) else v)
        for k, v in values.items()
        if k in names
    }
    return Config(**kept)


# Actions of one command, not settings of a run: saved, a later --resume would inherit --overwrite.
ACTIONS = ("resume", "overwrite")


def run_settings(config):
    """The Config as config.json and the checkpoint record it: every field but the ACTIONS."""
    return {name: value for name, value in asdict(config).items() if name not in ACTIONS}


def read_config(path):
    """The Config a run was trained with, from its config.json."""
    try:
        return config_from_dict(json.loads(Path(path).read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"cannot read the run's config {path}: {error}") from None


# ------------------------------------------------------------------------------- devices and seeds
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
    cores) underflows small gradients, so it comes with a GradScaler (train_gan, scaled_step)."""
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


# -------------------------------------------------------------------------------------------- data
class InMemoryLoader:
    """Batches of (images in [-1, 1], their class labels) from uint8 images held on the training
    device.

    Decoding JPEGs every epoch costs more than the training step on a small machine, so the
    preprocessed images are decoded once and kept as uint8 (8,189 x 3 x 64 x 64 is 100 MB);
    shuffling, random horizontal flips and scaling happen on the device. The order of an epoch
    depends only on (seed, epoch), so a run resumed in the middle of an epoch sees the same batches.
    """

    def __init__(self, images, labels, batch_size, seed, device, channels_last=True):
        if len(images) < batch_size:
            raise ConfigError(
                f"--batch-size {batch_size} is larger than the data set ({len(images)} images)"
            )
        self.images = images.to(device)  # once, at start-up: no host-to-device copy per step
        self.labels = labels.to(device)
        self.batch_size, self.seed, self.device = batch_size, seed, torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self):
        return len(self.images) // self.batch_size  # drop the last partial batch (BatchNorm)

    def batches(self, epoch, start=0):
        order = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        permutation = torch.randperm(len(self.images), generator=order).to(self.device)
        flips = (torch.rand(len(self.images), generator=order) < 0.5).to(self.device)
        for index in range(start, len(self)):
            picked = permutation[index * self.batch_size : (index + 1) * self.batch_size]
            real = self.images[picked].float().div_(127.5).sub_(1.0)
            real = torch.where(flips[picked, None, None, None], real.flip(3), real)
            yield index, real.contiguous(memory_format=self.memory_format), self.labels[picked]


# ------------------------------------------------------------- checkpoints, stops and safe loading
class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM arrived; a checkpoint was saved at the last finished step."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class NonFiniteLoss(Exception):
    """A loss or weight became inf/nan; nothing was saved after the last good checkpoint."""


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked after each step; a second Ctrl-C stops at once."""

    signum = None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum  # only a flag: printing here could interrupt a write in progress

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def save_checkpoint(run, config):
    """checkpoint.pt: everything a resume needs: the parts' state_dicts, the counters, the metrics,
    every RNG."""
    checkpoint = {
        name: None if part is None else part.state_dict() for name, part in run.parts.items()
    }
    metrics = torch.tensor(run.rows, dtype=torch.float64).reshape(-1, len(METRIC_COLUMNS))
    checkpoint.update(
        state=dict(run.state),
        metrics=metrics,
        rng=rng_states(run.device),
        config=run_settings(config),
    )
    path = Path(config.out_dir) / "checkpoint.pt"
    preprocess.write_atomically(path, lambda f: torch.save(checkpoint, f))


def restore_checkpoint(path, parts, state, config, device):
    """Load path into the parts (models, optimisers, schedulers) and state; returns the metrics."""
    checkpoint = load_checkpoint(path)
    saved = checkpoint["state"]
    if saved["images"] != state["images"]:
        raise ConfigError(
            f"the data changed since the checkpoint ({saved['images']} images then, "
            f"{state['images']} now): resume with the same data settings"
        )
    if saved["data"] != state["data"]:
        raise ConfigError(
            "the data changed since the checkpoint (as many images, other pixels): resume "
            "with the --data-dir (and Pillow version) the run was trained on"
        )
    done = saved["epoch"] + (saved["batch"] > 0)  # a started epoch counts
    if config.epochs < done:
        raise ConfigError(
            f"--epochs {config.epochs}: the run is at epoch {done} already; pass at least "
            f"--epochs {done} to go on"
        )
    for name in ("generator", "discriminator", "ema"):
        if parts[name] is not None and checkpoint[name] is not None:
            load_weights(parts[name], checkpoint[name], path)
    for name in ("opt_g", "opt_d"):
        for group, fresh in zip(checkpoint[name]["param_groups"], parts[name].param_groups):
            # this machine's kernels, not the checkpoint's: a CPU run resumed on a GPU gets fused
            # Adam
            group.update({key: fresh[key] for key in ("fused", "foreach") if key in fresh})
        parts[name].load_state_dict(checkpoint[name])
    for name in ("scaler_g", "scaler_d"):
        # empty when the run had no fp16 scaler; a resumed fp16 run keeps its scale
        if checkpoint[name]:
            parts[name].load_state_dict(checkpoint[name])
    for name, lr in (("sched_g", config.lr_generator), ("sched_d", config.lr_discriminator)):
        parts[name].load_state_dict(checkpoint[name])
        parts[name].base_lrs = [lr]  # the Config may lower the LR on resume (after a NaN, say)
        parts[name].optimizer.param_groups[0]["lr"] = lr * parts[name].lr_lambdas[0](
            parts[name].last_epoch
        )
    state.update(saved)
    # EMA switched on now: it starts from the generator
    if parts["ema"] is not None and checkpoint["ema"] is None:
        state["ema_updates"] = 0
    set_rng_states(checkpoint["rng"], device)
    return [[int(row[0]), int(row[1]), *row[2:]] for row in checkpoint["metrics"].tolist()]


def load_checkpoint(path):
    """The checkpoint's dict; a file that is only unreachable now is not called damaged."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"no checkpoint at {path}; start without --resume") from None
    # permissions, an I/O error, a folder, no memory: the file may be fine
    except (OSError, MemoryError) as error:
        raise WeightsError(
            f"cannot read the checkpoint {path}: {one_line(error)}; fix that and run the command "
            "again (nothing was changed)"
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
            f"{one_line(error)[:80]}); restore a copy, or start again with --overwrite"
        ) from None


def csv_text(rows):
    """metrics.csv's lines for these rows. The losses of an update that the fp16 scaler skipped (its
    gradients overflowed, so nothing was learned) are left blank when they are not finite: a reader
    or a plot would take a NaN there for a diverged run."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        cells = dict(zip(METRIC_COLUMNS, row))
        for loss, skipped in analysis.SKIPPED_BY.items():
            if cells[skipped] == 1 and not math.isfinite(cells[loss]):
                cells[loss] = ""
        writer.writerow(cells.values())
    return buffer.getvalue().encode()


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
            f"refusing {path}: not a plain state_dict ({one_line(error)}), so not a file this "
            "collection's scripts wrote; pass the generator.pkl of a run of gan_complete.py, "
            "wgan_clip.py, dcgan.py or sngan.py"
        ) from None
    if not (
        isinstance(state, dict)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise WeightsError(f"refusing {path}: it holds no state_dict of tensors")
    return state


def no_weights_file(path):
    """The message for a weights path with no file; a relative one is read from this folder."""
    message = f"no weights file at {Path(path).resolve()}"
    if not Path(path).is_absolute():
        message += (
            f" (the relative path {path} is read from the current folder, {Path.cwd()}; in a "
            "script, build it from the script's own folder: Path(__file__).parent / ...)"
        )
    return message


def one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


def load_weights(module, state, path):
    """load_state_dict with a message that names the mismatch and the Config fields behind it."""
    expected = module.state_dict()
    if isinstance(module, Generator) and "score.weight" in state:
        raise WeightsError(
            f"{path} holds a discriminator's weights; pass the generator.pkl beside it"
        )
    if not set(state) & set(expected):
        raise WeightsError(
            f"{path} was not written by this collection's generator (none of its tensors is a "
            f"Generator's: {', '.join(sorted(state)[:2])}, ...); pass the generator.pkl of a run "
            "of gan_complete.py, wgan_clip.py, dcgan.py or sngan.py"
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


def load_generator(weights_path, config, device="cpu", data=None):
    """A Generator in eval mode with the weights of a generator.pkl (used by --sample and
    compare.py). data: config.json's "data" ({"channels", "class_names"}); None is 3 channels, no
    classes."""
    data = data or {"channels": 3, "class_names": []}
    generator = Generator(
        config, len(data["class_names"]) if config.conditional else 0, data["channels"]
    )
    load_weights(generator, load_state_dict_safely(weights_path), weights_path)
    return generator.to(device).train(False)


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())


def write_json(path, data):
    preprocess.write_atomically(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


# -------------------------------------------------------------------------------------------- main
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


def resumed_config(out_dir, given):
    config = read_config(out_dir / "config.json")  # one line if it is missing or damaged
    script = json.loads((out_dir / "config.json").read_text()).get("script", Path(__file__).stem)
    if script != Path(__file__).stem:
        raise ConfigError(f"{out_dir} holds a {script}.py run: resume it with {script}.py")
    changed = [
        name
        for name, value in given.items()
        if name not in RESUME_MAY_CHANGE and getattr(config, name) != value
    ]
    if changed:
        flags = ", ".join(f"{flag(name)} (was {getattr(config, name)})" for name in changed)
        raise ConfigError(f"--resume cannot change {flags}: start a new run with another --out-dir")
    config = config_from_dict({**asdict(config), **given})
    validate_config(config)
    return config


def resume_command(out_dir):
    return f"python {Path(__file__).name} --out-dir {shlex.quote(str(out_dir))} --resume"


def run_training(config, given):
    out_dir = Path(config.out_dir)
    # the run's settings; flags typed now (--epochs) win
    if config.resume and (out_dir / "checkpoint.pt").exists():
        config = resumed_config(out_dir, given)
    device = resolve_device(config.device)
    new_folder = not out_dir.exists()
    check_out_dir(config)
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard")
    seed_everything(config.seed, config.deterministic)
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
        loader = InMemoryLoader(
            images, labels, config.batch_size, config.seed, device, config.channels_last
        )
        loader.class_names = json.loads((Path(cache_path) / "manifest.json").read_text())["classes"]
        if config.conditional and len(loader.class_names) < 2:
            raise ConfigError(
                f"--conditional needs labelled data, and {cache_path} holds one class: use class "
                "subfolders (--source folder) or the flowers' labels"
            )
    except (preprocess.PreprocessError, ConfigError, KeyboardInterrupt):
        if new_folder and not any(out_dir.iterdir()):
            out_dir.rmdir()  # leave no empty output folder behind a data problem
        raise
    loader.cache_path = str(cache_path)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    num_classes = len(loader.class_names) if config.conditional else 0
    generator = Generator(config, num_classes, images.size(1)).apply(weights_init)
    discriminator = Discriminator(config, num_classes, images.size(1)).apply(weights_init)
    generator, discriminator = (
        m.to(device, memory_format=memory_format) for m in (generator, discriminator)
    )
    dtype = amp_dtype(config, device)
    keep_freed_cpu_memory(device)
    print(
        f"{VARIANT} | device {device} | amp {dtype or 'off (fp32)'} | {len(images):,} images "
        f"from {cache_path}"
    )
    print(
        f"generator {count_parameters(generator):,} parameters | critic "
        f"{count_parameters(discriminator):,} parameters | {len(loader)} critic steps per epoch | "
        f"outputs in {out_dir}"
    )
    print(" ".join(f"{name}={value}" for name, value in asdict(config).items()))
    try:
        info = train_gan(generator, discriminator, loader, config)
    except TrainingInterrupted as stop:
        plot_losses(out_dir)
        print(
            f"stopped by {stop}: checkpoint saved in {out_dir / 'checkpoint.pt'}. Resume with:\n"
            f"  {resume_command(out_dir)}",
            file=sys.stderr,
        )
        return 128 + stop.signum
    except NonFiniteLoss as error:
        plot_losses(out_dir)
        state = (
            load_checkpoint(out_dir / "checkpoint.pt")["state"]
            if (out_dir / "checkpoint.pt").exists()
            else None
        )
        if state:
            advice = (
                f"the last good checkpoint is {out_dir / 'checkpoint.pt'} (epoch {state['epoch']}, "
                f"step {state['step']}): lower the learning rate and resume with "
                f"{resume_command(out_dir)} --lr-generator X --lr-discriminator Y"
            )
        else:
            advice = (
                "no checkpoint was written yet: lower the learning rate and start again with "
                "--overwrite"
            )
        print(
            f"error: {error}; stopped without saving anything after it; {advice}", file=sys.stderr
        )
        return 1
    write_final_outputs(
        config, device, {"channels": images.size(1), "class_names": loader.class_names}
    )
    print(
        f"done: {info['epochs_done']} epochs, {info['generator_steps']} generator steps in "
        f"{info['wall_time_s']:.0f}s ({info['images_per_s']:.0f} img/s). Outputs in {out_dir}/"
    )
    return 0


def main(argv=None):
    try:
        config, given = parse_config(argv)
        validate_config(config)
        return sample_from_weights(config, given) if config.sample else run_training(config, given)
    except (ConfigError, WeightsError, preprocess.PreprocessError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; the files on disk are intact: run the command again "
            "(with --resume if training had started)",
            file=sys.stderr,
        )
        return 130
    except OSError as error:  # a full disk, a folder removed under us
        advice = (
            ": free some space, then run the command again (add --resume if training had started; "
            "every file was written whole)"
            if error.errno == errno.ENOSPC
            else ""
        )
        print(f"error: {one_line(error)}{advice}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
