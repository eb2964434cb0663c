"""sngan.py: spectral normalisation in every discriminator layer, the hinge loss."""

import torch

import machinery

import sngan
from conftest import tiny_args


def test_the_hinge_loss():
    real_scores = torch.tensor([2.0, 0.5, -1.0, 1.0])
    fake_scores = torch.tensor([-3.0, 0.0, 0.5, -1.0])
    # E[max(0, 1 - D(x))] = (0 + 0.5 + 2 + 0) / 4; E[max(0, 1 + D(G(z)))] = (0 + 1 + 1.5 + 0) / 4
    assert torch.isclose(sngan.hinge_loss(real_scores, fake_scores), torch.tensor(0.625 + 0.625))
    # no reward past the margins: scores beyond +1 and -1 change nothing
    assert sngan.hinge_loss(real_scores + 5, fake_scores - 5) == 0


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
    config = machinery.read_config(sngan, tmp_path / "config.json")
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
    saved = machinery.load_state_dict_safely(tmp_path / "discriminator.pkl")
    assert any(key.endswith("parametrizations.weight.original") for key in saved)
    assert any(key.endswith("._u") for key in saved)
