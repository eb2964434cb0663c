"""SNGAN on the Oxford 102 Flowers: spectral normalisation with the hinge loss.

Spectral normalisation (Miyato et al. 2018, "Spectral Normalization for Generative Adversarial
Networks") divides every weight of the discriminator by its largest singular value, estimated by
one power iteration at every forward pass in training, so that each layer, and so the whole
discriminator, is at most 1-Lipschitz: the constraint lives in the layers, with no penalty and
no second backward pass. The hinge loss, no normalisation layer in the discriminator, Adam with
betas (0, 0.9), n_critic 5 and a linear decay, as in the authors' released code.

Run it:
    python sngan.py                                  # the defaults: 64x64, 60 epochs
    python sngan.py --preset cpu                     # the best 10 minutes of a 2-core CPU
    python sngan.py --resume                         # continue SNGAN_output after a stop
    python sngan.py --sample SNGAN_output/generator.pkl --num-samples 100
    python sngan.py --help                           # every Config field as a flag

How it differs from its siblings (`diff sngan.py gan_complete.py` shows exactly this):
    gan_complete.py  WGAN-GP: Wasserstein loss and a gradient penalty, InstanceNorm critic.
    wgan_clip.py     WGAN with weight clipping: Wasserstein loss, critic weights clamped, RMSprop.
    dcgan.py         DCGAN: BCE on logits (or hinge), BatchNorm, no Lipschitz constraint.
What is no part of the method (data, checkpoints, outputs, command line) is in machinery.py.
"""

import math
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

import machinery

VARIANT = "SNGAN"


# ------------------------------------------------------------------------------------------ Config
@dataclass
class Config(machinery.Settings):
    """Every setting of a run: these, then machinery.Settings' (data, devices, outputs, sampling).
    Each field is a command-line flag (--lr-generator for lr_generator); the comment after it is
    the flag's --help text."""

    # the method
    n_critic: int = 5  # discriminator steps per generator step
    lr_generator: float = 2e-4  # Adam learning rate of the generator (peak of the schedule)
    lr_discriminator: float = 2e-4  # Adam learning rate of the discriminator (peak)
    betas: tuple = (0.0, 0.9)  # Adam betas of the authors' code (beta1 = 0, as WGAN-GP's)
    lr_schedule: str = "linear"  # linear (to 0 at the last step, the authors') | cosine | constant
    warmup_steps: int = 0  # linear warm-up of both learning rates over this many critic steps
    ema_decay: float = 0.999  # EMA of the generator's weights (samples, saved weights); 0 = off
    diffaugment: str = ""  # DiffAugment of every critic input: color,translation,cutout; "" = off
    # the run
    preset: str = ""  # a recipe of PRESETS below (cpu: 10 minutes of a CPU); flags typed win
    epochs: int = 60  # passes over the (rotated) data set
    # the data stage is not counted; a resumed run counts the minutes of its earlier sessions
    minutes: float = 0.0  # also stop once training has run this many minutes; 0 = no limit
    batch_size: int = 64  # images per discriminator step
    seed: int = 42  # seeds python, numpy and torch: the same seed, the same weights on a CPU
    out_dir: str = "SNGAN_output"  # where every output file goes
    # the models
    img_size: int = 64  # image side in pixels: 32, 64, 128 or 256
    z_dim: int = 100  # length of the noise vector z
    g_channels: int = 1024  # generator width: channels of its first 4x4 feature map
    d_channels: int = 1024  # discriminator width: channels of its last 4x4 feature map
    # transpose: ConvTranspose2d k4 s2, DCGAN's; nearest: nearest-neighbour x2, then Conv2d k3
    upsample: str = "transpose"  # how the generator doubles its size: transpose | nearest
    conditional: bool = False  # class-conditional G(z, y) and D(x, y); classes from the data
    class_norm: bool = True  # conditional: each BatchNorm of G takes its scale from the class


# --preset cpu: the best of an equal-wall-time sweep on a 2-core CPU (4 minutes each; n_critic 1,
# 2 and 5, the paper's Adam (0.5, 0.999), two learning rates, and the discriminator's width; the
# table in docs/measurements/README.md). Spectral norm bounds every layer, so the discriminator
# needs more width than WGAN-GP's: 256 channels gave the best FD of the sweep. 10 minutes of
# training end it; its learning rate is constant, so a stop by time cuts no decay.
PRESETS = {
    "cpu": dict(
        g_channels=128,
        d_channels=256,
        upsample="nearest",
        rotations=0,
        batch_size=32,
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
    """The weight tensor a layer learns: under spectral norm's parametrisation the stored original,
    not the normalised weight computed from it at each use."""
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


def critic_norm(channels):
    """No normalisation layer: spectral norm alone conditions the discriminator (Miyato et al.
    2018, section 4); BatchNorm would make each score depend on the rest of the batch."""
    return nn.Identity()


def critic_layer(layer):
    """The layer's weight W divided by its largest singular value sigma(W) at every use, sigma
    estimated by one power iteration at every forward pass in training mode (torch's spectral_norm
    parametrisation), so a critic step, which scores the real and the fake batch, takes two. Its
    vectors u and v are buffers of the layer: saved in the checkpoint, so a resumed run stays
    bitwise equal, and in discriminator.pkl, beside the unnormalised weight (keys ending
    parametrizations.weight.original, ..._u, ..._v). A convolution's kernel counts as a matrix of
    out_channels rows, as in the paper."""
    return nn.utils.parametrizations.spectral_norm(layer)


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


# ------------------------------------------------------------------------------- the method: SNGAN
# metrics.csv's columns of this method: its two losses, and the mean scores of the real and the
# generated images, which the hinge loss pushes past +1 and -1
METRICS = ["d_loss", "g_loss", "d_real", "d_fake"]
CRITIC_VIEW = "discriminator's view: mean scores D(x) and D(G(z)); margins +-1"


def check_config(config):
    """This method's own fields (machinery.validate_config checks the others)."""
    if not all(0 <= b < 1 for b in config.betas):
        raise machinery.ConfigError(f"--betas must be two numbers in [0, 1), got {config.betas}")


def make_optimizers(generator, discriminator, config):
    # Adam at 2e-4 with betas (0, 0.9) and n_critic 5: the hinge-loss setting of the authors'
    # released code (pfnet-research/sngan_projection, configs/sn_cifar10_unconditional.yml).
    fused = next(generator.parameters()).is_cuda  # one kernel for all parameters
    opt_g = torch.optim.Adam(
        generator.parameters(), lr=config.lr_generator, betas=config.betas, fused=fused
    )
    opt_d = torch.optim.Adam(
        discriminator.parameters(), lr=config.lr_discriminator, betas=config.betas, fused=fused
    )
    return opt_g, opt_d


def hinge_loss(real_scores, fake_scores):
    """L_D = E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]: no reward for a score past its margin."""
    return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()


# ------------------------------------------------------------------------------- the training loop
def train(run):
    """Train on run.data, an epoch at a time, one discriminator step a batch and a generator step
    every n_critic batches, until --epochs (or --minutes); returns the run's numbers
    (run_info.json). machinery.train_command made the run and writes the final outputs after it."""
    config, data, device = run.config, run.data, run.device
    generator = Generator(config, data.num_classes, data.channels).apply(weights_init)
    discriminator = Discriminator(config, data.num_classes, data.channels).apply(weights_init)
    generator.to(device, memory_format=data.memory_format)
    discriminator.to(device, memory_format=data.memory_format)
    opt_g, opt_d = make_optimizers(generator, discriminator, config)
    # the schedules, the fp16 loss scalers and the EMA; --resume restores all from the checkpoint
    machinery.start_training(run, generator, discriminator, opt_g, opt_d)
    scaler_g, scaler_d, autocast = run.scaler_g, run.scaler_d, run.autocast

    for epoch in machinery.epochs(run):
        for real, labels in machinery.batches(run, epoch):
            # the discriminator, on every batch: the hinge loss
            z = torch.randn(real.size(0), config.z_dim, device=device)
            with torch.no_grad(), autocast():
                fake = generator(z, labels)  # the real batch's classes (unconditional: ignored)
            real = machinery.diff_augment(real, config.diffaugment)  # unchanged when off
            fake = machinery.diff_augment(fake, config.diffaugment)
            with autocast():
                # each forward pass also takes one power-iteration step of every spectral norm
                real_scores = discriminator(real, labels).float()
                fake_scores = discriminator(fake, labels).float()
            d_loss = hinge_loss(real_scores, fake_scores)
            opt_d.zero_grad(set_to_none=True)
            scaler_d.scale(d_loss).backward()
            d_skipped = machinery.optimizer_step(opt_d, scaler_d)

            # the generator, on the first of every n_critic batches: L_G = -E[D(G(z))]
            if run.step % config.n_critic == 0:
                discriminator.requires_grad_(False)  # no discriminator weight gradients here
                z = torch.randn(real.size(0), config.z_dim, device=device)
                with autocast():
                    fake = machinery.diff_augment(generator(z, labels), config.diffaugment)
                    g_loss = -discriminator(fake, labels).float().mean()
                opt_g.zero_grad(set_to_none=True)
                scaler_g.scale(g_loss).backward()
                g_skipped = machinery.optimizer_step(opt_g, scaler_g)
                discriminator.requires_grad_(True)
                # the EMA of the generator's weights; g_loss is logged until its next step
                machinery.end_generator_step(run, g_loss=g_loss.detach(), g_skipped=g_skipped)

            # the schedules, metrics.csv, checkpoints, Ctrl-C; True once --minutes is spent
            d_real, d_fake = real_scores.mean().detach(), fake_scores.mean().detach()
            metrics = dict(d_loss=d_loss.detach(), d_real=d_real, d_fake=d_fake)
            if machinery.end_step(run, **metrics, d_skipped=d_skipped):
                break
        # generator.pkl, discriminator.pkl, samples_epoch_NNN.png, then the checkpoint
        machinery.end_epoch(run)
    return machinery.end_training(run)


# -------------------------------------------------------------------------- the reproduce function
def generate_per_class(weights_path, per_class=10, classes="", device="cpu"):
    """{class name: uint8 images [per_class, H, W, 3]} from a conditional generator.pkl and the
    config.json beside it: a coursework's reproduce function, `generate_per_class(path, 10)`."""
    script = sys.modules[__name__]
    return machinery.draw_per_class(script, weights_path, per_class, classes, device)


def main(argv=None):
    """Train, or --sample from saved weights, as the command line says; returns the exit status."""
    return machinery.run_command(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
