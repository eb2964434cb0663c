"""DCGAN on the Oxford 102 Flowers (Radford et al. 2015): the baseline the WGANs and SNGAN are
judged against.

A discriminator with BatchNorm outputs a logit; it is trained to tell real from generated
images with binary cross-entropy (BCEWithLogitsLoss: the sigmoid is folded into the loss, which
is numerically safer), and the generator is trained to fool it with the non-saturating loss
-log D(G(z)). Adam with betas (0.5, 0.999), one-sided label smoothing (Salimans et al. 2016),
optional gradient-norm clipping, and a hinge loss as an alternative (Miyato et al. 2018).

Run it:
    python dcgan.py                             # the defaults: 64x64, 60 epochs, batch 128
    python dcgan.py --g-channels 128 --d-channels 128 --epochs 5   # a CPU-sized run
    python dcgan.py --resume                                # continue DCGAN_output after a stop
    python dcgan.py --sample DCGAN_output/generator.pkl --num-samples 100
    python dcgan.py --help                                  # every Config field as a flag

How it differs from its siblings (`diff dcgan.py gan_complete.py` shows exactly this):
    gan_complete.py  WGAN-GP: an unbounded critic, Wasserstein loss and a gradient penalty,
                     InstanceNorm critic, Adam (0, 0.9), n_critic = 5.
    wgan_clip.py     WGAN with weight clipping: Wasserstein loss, critic weights clamped,
                     RMSprop, n_critic = 5.
    sngan.py         SNGAN: spectral normalisation of every discriminator weight, the hinge
                     loss, no normalisation layer, Adam (0, 0.9), n_critic = 5.
What is no part of the method (data, checkpoints, outputs, command line) is in machinery.py.
"""

import math
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import machinery

VARIANT = "DCGAN"


# ------------------------------------------------------------------------------------------ Config
@dataclass
class Config(machinery.Settings):
    """Every setting of a run: these, then machinery.Settings' (data, devices, outputs, sampling).
    Each field is a command-line flag (--lr-generator for lr_generator); the comment after it is
    the flag's --help text."""

    # the method
    n_critic: int = 1  # discriminator steps per generator step
    loss: str = "bce"  # bce (non-saturating, the paper's) | hinge
    real_label_smoothing: float = 0.9  # target for real images (one-sided, bce only); 1.0 = off
    gradient_clip: float = 0.0  # max gradient norm of both networks; 0 = off
    # adds W * ||E f(x) - E f(G(z))||^2 to L_G, where f is the discriminator's last features
    feature_matching: float = 0.0  # the weight W of feature matching; 0 = off
    lr_generator: float = 2e-4  # Adam learning rate of the generator (peak of the schedule)
    lr_discriminator: float = 2e-4  # Adam learning rate of the discriminator (peak)
    betas: tuple = (0.5, 0.999)  # Adam betas of the DCGAN paper
    lr_schedule: str = "constant"  # constant: the DCGAN paper's Adam at 2e-4 | cosine | linear
    warmup_steps: int = 0  # linear warm-up of both learning rates over this many critic steps
    ema_decay: float = 0.999  # EMA of the generator's weights (samples, saved weights); 0 = off
    diffaugment: str = ""  # DiffAugment of every critic input: color,translation,cutout; "" = off
    # the run
    preset: str = ""  # a recipe of PRESETS: none measured for this method (gan_complete.py: cpu)
    epochs: int = 60  # passes over the (rotated) data set
    # the data stage is not counted; a resumed run counts the minutes of its earlier sessions
    minutes: float = 0.0  # also stop once training has run this many minutes; 0 = no limit
    batch_size: int = 128  # images per discriminator step
    seed: int = 42  # seeds python, numpy and torch: the same seed, the same weights on a CPU
    out_dir: str = "DCGAN_output"  # where every output file goes
    # the models
    img_size: int = 64  # image side in pixels: 32, 64, 128 or 256
    z_dim: int = 100  # length of the noise vector z
    g_channels: int = 1024  # generator width: channels of its first 4x4 feature map
    d_channels: int = 1024  # discriminator width: channels of its last 4x4 feature map
    # transpose: ConvTranspose2d k4 s2, DCGAN's; nearest: nearest-neighbour x2, then Conv2d k3
    upsample: str = "transpose"  # how the generator doubles its size: transpose | nearest
    conditional: bool = False  # class-conditional G(z, y) and D(x, y); classes from the data
    class_norm: bool = True  # conditional: each BatchNorm of G takes its scale from the class


# --preset: none measured for this method yet (gan_complete.py has cpu, from the sweep in
# docs/preset_cpu/).
PRESETS = {}


# ------------------------------------------------------------------------------------------ models
def weights_init(module):
    """DCGAN initialisation (Radford et al. 2015): N(0, 0.02) weights, N(1, 0.02) norm scales.
    Class embeddings keep their own (the models' __init__)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)) and module.weight is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


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
    """BatchNorm in every layer but the discriminator's first (DCGAN paper, section 3)."""
    return nn.BatchNorm2d(channels)


def critic_layer(layer):
    """A discriminator layer as it is: DCGAN puts no Lipschitz constraint on its discriminator;
    the loss and BatchNorm alone keep it in check."""
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


# ------------------------------------------------------------------------------- the method: DCGAN
# metrics.csv's columns of this method: its two losses, and D(x) and D(G(z)), the discriminator's
# mean probability that the real and the generated images are real (pytorch/examples' D(x), D(G(z)))
METRICS = ["d_loss", "g_loss", "d_real", "d_fake"]
CRITIC_VIEW = "discriminator's view: D(x) and D(G(z)), as probabilities"


def check_config(config):
    """This method's own fields (machinery.validate_config checks the others)."""
    if config.loss not in ("bce", "hinge"):
        raise machinery.ConfigError(f"--loss must be bce or hinge, got {config.loss!r}")
    if not 0 < config.real_label_smoothing <= 1:
        raise machinery.ConfigError(
            f"--real-label-smoothing must be in (0, 1], got {config.real_label_smoothing}"
        )
    if not config.gradient_clip >= 0:
        raise machinery.ConfigError(f"--gradient-clip must be >= 0, got {config.gradient_clip}")
    if not config.feature_matching >= 0:
        raise machinery.ConfigError(
            f"--feature-matching must be >= 0, got {config.feature_matching}"
        )
    if not all(0 <= b < 1 for b in config.betas):
        raise machinery.ConfigError(f"--betas must be two numbers in [0, 1), got {config.betas}")


def make_optimizers(generator, discriminator, config):
    # beta1 = 0.5: the DCGAN paper found the default 0.9 oscillated.
    fused = next(generator.parameters()).is_cuda  # one kernel for all parameters
    opt_g = torch.optim.Adam(
        generator.parameters(), lr=config.lr_generator, betas=config.betas, fused=fused
    )
    opt_d = torch.optim.Adam(
        discriminator.parameters(), lr=config.lr_discriminator, betas=config.betas, fused=fused
    )
    return opt_g, opt_d


def discriminator_loss(real_logits, fake_logits, config):
    if config.loss == "hinge":
        # L_D = E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    # L_D = BCE(D(x), s) + BCE(D(G(z)), 0); s < 1 is one-sided label smoothing (fakes keep 0)
    real_target = torch.full_like(real_logits, config.real_label_smoothing)
    return F.binary_cross_entropy_with_logits(
        real_logits, real_target
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def generator_loss(fake_logits, config):
    if config.loss == "hinge":
        # L_G = -E[D(G(z))]
        return -fake_logits.mean()
    # L_G = BCE(D(G(z)), 1) = -E[log sigmoid(D(G(z)))]: the non-saturating loss
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def feature_distance(discriminator, real, labels, fake_features):
    """||E f(x) - E f(G(z))||^2 over f, the discriminator's last features: feature matching
    (Salimans et al. 2016), the generator matching the statistics of the real batch."""
    with torch.no_grad():
        _, real_features = discriminator(real, labels, with_features=True)
    return (real_features.float().mean(0) - fake_features.float().mean(0)).square().sum()


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
            # the discriminator, on every batch: BCE of real against s, generated against 0
            z = torch.randn(real.size(0), config.z_dim, device=device)
            with torch.no_grad(), autocast():
                fake = generator(z, labels)  # the real batch's classes (unconditional: ignored)
            real = machinery.diff_augment(real, config.diffaugment)  # unchanged when off
            fake = machinery.diff_augment(fake, config.diffaugment)
            with autocast():
                real_logits = discriminator(real, labels).float()
                fake_logits = discriminator(fake, labels).float()
            d_loss = discriminator_loss(real_logits, fake_logits, config)
            opt_d.zero_grad(set_to_none=True)
            scaler_d.scale(d_loss).backward()
            d_skipped = machinery.optimizer_step(opt_d, scaler_d, config.gradient_clip)

            # the generator, on the first of every n_critic batches: L_G = -E[log D(G(z))]
            if run.step % config.n_critic == 0:
                discriminator.requires_grad_(False)  # no discriminator weight gradients here
                z = torch.randn(real.size(0), config.z_dim, device=device)
                with autocast():
                    fake = machinery.diff_augment(generator(z, labels), config.diffaugment)
                    fake_logits, fake_features = discriminator(fake, labels, with_features=True)
                    g_loss = generator_loss(fake_logits.float(), config)
                    if config.feature_matching > 0:
                        distance = feature_distance(discriminator, real, labels, fake_features)
                        g_loss = g_loss + config.feature_matching * distance
                opt_g.zero_grad(set_to_none=True)
                scaler_g.scale(g_loss).backward()
                g_skipped = machinery.optimizer_step(opt_g, scaler_g, config.gradient_clip)
                discriminator.requires_grad_(True)
                # the EMA of the generator's weights; g_loss is logged until its next step
                machinery.end_generator_step(run, g_loss=g_loss.detach(), g_skipped=g_skipped)

            # the schedules, metrics.csv, checkpoints, Ctrl-C; True once --minutes is spent
            d_real = torch.sigmoid(real_logits).mean().detach()
            d_fake = torch.sigmoid(fake_logits).mean().detach()
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
