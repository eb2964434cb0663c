"""pretrained/: the generators that come with the clone load with their config.json, draw varied
flowers with no data and no training, from Python and from the command line, in a few MB."""

import pytest
import torch

import machinery

import gan_complete
from conftest import ROOT, run_cli

PRETRAINED = ROOT / "pretrained"
NAMES = ["wgan_gp", "sngan_conditional"]


def test_the_pretrained_folder_is_a_few_mb_with_the_command_and_figures_of_each():
    # what the clone brings: not the samples/ that the README's first command writes beside them
    files = [
        path
        for path in PRETRAINED.rglob("*")
        if path.is_file() and "samples" not in path.relative_to(PRETRAINED).parts
    ]
    assert {path.name for path in files} == {"README.md", "config.json", "generator.pkl"}
    assert sum(path.stat().st_size for path in files) < 10e6
    for name in NAMES:
        about = (PRETRAINED / name / "README.md").read_text()
        assert "python " in about and "SWD" in about and "FD" in about


@pytest.mark.parametrize("name", NAMES)
def test_a_pretrained_generator_draws_varied_images(name):
    weights = PRETRAINED / name / "generator.pkl"
    config, data = machinery.weights_run(gan_complete, weights.resolve(), {"device": "cpu"})
    generator = machinery.load_generator(gan_complete, weights, config, "cpu", data)
    z = torch.randn(16, config.z_dim, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(16) % max(generator.num_classes, 1)
    images = machinery.generate(generator, z, "cpu", labels)
    assert images.shape == (16, 3, 64, 64) and images.abs().max() <= 1
    # every image differs from the others, and the pixels are far from one flat colour
    distances = torch.cdist(images.flatten(1), images.flatten(1))
    assert distances[~torch.eye(16, dtype=torch.bool)].min() > 5
    assert images.std(dim=(2, 3)).mean() > 0.2


def test_sampling_a_pretrained_generator_from_the_command_line(tmp_path):
    weights = PRETRAINED / "wgan_gp" / "generator.pkl"
    done = run_cli("gan_complete", "--sample", weights, "--out-dir", tmp_path, "--num-samples", 4)
    assert done.returncode == 0, done.stderr
    assert len(list(tmp_path.glob("sample_*.png"))) == 4


def test_ten_images_of_a_class_from_the_conditional_one():
    weights = PRETRAINED / "sngan_conditional" / "generator.pkl"
    flowers = gan_complete.generate_per_class(weights, 10, classes="1,77")
    assert list(flowers) == ["001", "077"]
    assert all(batch.shape == (10, 64, 64, 3) for batch in flowers.values())
    assert (flowers["001"][0] != flowers["001"][1]).any(), "ten images, not one ten times"
