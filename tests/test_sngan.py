"""sngan.py: spectral normalisation in every discriminator layer, the hinge loss."""

import torch

import sngan
from conftest import tiny_args


class FixedScores(torch.nn.Module):
    """A stand-in discriminator: real images score `real`, generated ones `fake` (per image)."""

    def __init__(self, real, fake):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.real, self.fake = real, fake

    def forward(self, x, labels=None):
        scores = self.real if (x > 0.9).all() else self.fake
        return scores * self.weight


class WhiteGenerator(torch.nn.Module):
    num_classes = 0

    def __init__(self, value):
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(value))

    def forward(self, z, labels=None):
        return self.value.expand(len(z), 3, 8, 8)


def test_the_hinge_losses():
    config = sngan.Config(z_dim=4)
    real = torch.ones(4, 3, 8, 8)
    critic = FixedScores(
        real=torch.tensor([2.0, 0.5, -1.0, 1.0]), fake=torch.tensor([-3.0, 0.0, 0.5, -1.0])
    )
    opt_d = torch.optim.SGD(critic.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    no_autocast = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
    d_loss, gap, gp, _ = sngan.critic_step(
        WhiteGenerator(0.0), critic, real, None, opt_d, scaler, config, no_autocast
    )
    # E[max(0, 1 - D(x))] = (0 + 0.5 + 2 + 0) / 4; E[max(0, 1 + D(G(z)))] = (0 + 1 + 1.5 + 0) / 4
    assert torch.isclose(d_loss, torch.tensor(0.625 + 0.625))
    assert torch.isclose(gap, torch.tensor(0.625 - (-0.875))) and gp == 0
    opt_g = torch.optim.SGD(critic.parameters(), lr=0.0)
    g_loss, _ = sngan.generator_step(
        WhiteGenerator(0.0), critic, real, None, opt_g, scaler, config, no_autocast
    )
    assert torch.isclose(g_loss, torch.tensor(0.875))  # -E[D(G(z))]


def test_every_discriminator_weight_is_spectrally_normalised_and_nothing_else_is():
    config = sngan.Config(img_size=32, d_channels=32, g_channels=32)
    discriminator = sngan.Discriminator(config, num_classes=5).apply(sngan.weights_init)
    weighted = [m for m in discriminator.modules() if hasattr(m, "parametrizations")]
    kinds = [type(m).__name__.removeprefix("Parametrized") for m in weighted]
    assert kinds == ["Conv2d", "Conv2d", "Conv2d", "Conv2d", "Embedding"]
    assert not any(
        isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d))
        for m in discriminator.modules()
    )
    # the DCGAN initialisation reaches the stored weights under the parametrisation
    original = weighted[0].parametrizations.weight.original
    assert abs(original.std().item() - 0.02) < 0.005
    generator = sngan.Generator(config)
    assert not any(hasattr(m, "parametrizations") for m in generator.modules())


def test_after_training_every_weight_has_largest_singular_value_one(cache_dir, tmp_path):
    args = tiny_args(cache_dir, tmp_path, "--synthetic-images", "160", "--epochs", "3")
    assert sngan.main(args) == 0
    config = sngan.read_config(tmp_path / "config.json")
    discriminator = sngan.Discriminator(config)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["discriminator"]
    discriminator.load_state_dict(state)
    discriminator.eval()  # uses the stored u and v, no further power iteration
    layers = [m for m in discriminator.modules() if hasattr(m, "parametrizations")]
    assert len(layers) == 4
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2).item()
        raw = torch.linalg.matrix_norm(
            layer.parametrizations.weight.original.detach().flatten(1), ord=2
        ).item()
        assert abs(sigma - 1) < 0.05 and abs(raw - 1) > 0.2, (sigma, raw)
    # the saved discriminator.pkl holds the parametrisation's state as plain tensors
    saved = sngan.load_state_dict_safely(tmp_path / "discriminator.pkl")
    assert any(key.endswith("parametrizations.weight.original") for key in saved)
    assert any(key.endswith("._u") for key in saved)
