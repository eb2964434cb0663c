"""--conditional: class labels from the data into G(z, y) and the projection critic D(x, y)."""

import importlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import machinery
from PIL import Image

import analysis
from conftest import SCRIPTS, subprocess_env, tiny_args

MODULES = {name: importlib.import_module(name) for name in SCRIPTS}
gan_complete = MODULES["gan_complete"]
CLASSES = 5  # tiny synthetic runs: 5 classes of drawn flowers


def conditional_args(cache_dir, out_dir, *extra):
    return tiny_args(
        cache_dir,
        out_dir,
        "--conditional",
        "--synthetic-classes",
        str(CLASSES),
        "--synthetic-images",
        "60",
        *extra,
    )


@pytest.fixture(scope="module")
def conditional_runs(tmp_path_factory, cache_dir):
    runs = {}
    for name, module in MODULES.items():
        out_dir = tmp_path_factory.mktemp(f"conditional_{name}")
        # bce is covered by the unconditional runs; one run joins the class to z
        extra = {"dcgan": ["--loss", "hinge"], "sngan": ["--no-class-norm"]}.get(name, [])
        assert module.main(conditional_args(cache_dir, out_dir, *extra)) == 0
        runs[name] = out_dir
    return runs


@pytest.mark.parametrize("class_norm", [False, True], ids=["joined to z", "class BatchNorm"])
@pytest.mark.parametrize("image_channels", [3, 1])
def test_conditional_models_take_a_class_and_make_images_of_the_data(image_channels, class_norm):
    config = gan_complete.Config(
        img_size=32, g_channels=32, d_channels=32, z_dim=8, conditional=True, class_norm=class_norm
    )
    generator = (
        gan_complete.Generator(config, 7, image_channels).apply(gan_complete.weights_init).eval()
    )
    discriminator = gan_complete.Discriminator(config, 7, image_channels)
    z = torch.randn(4, 8)
    images = generator(z, torch.tensor([0, 1, 2, 6]))
    assert images.shape == (4, image_channels, 32, 32)
    assert discriminator(images, torch.tensor([0, 1, 2, 6])).shape == (4,)
    # the class reaches the image: the same z in two classes gives two images
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert not torch.allclose(generator(z, zeros), generator(z, ones))
    norms = [type(module) for module in generator.net if "BatchNorm" in type(module).__name__]
    assert len(norms) == 3 and set(norms) == {
        gan_complete.ClassBatchNorm if class_norm else torch.nn.BatchNorm2d
    }
    assert generator.project.in_features == (8 if class_norm else 16), "z alone, or z and y"


def test_the_discriminator_is_psi_of_phi_plus_the_class_projection():
    config = gan_complete.Config(img_size=32, d_channels=32, conditional=True)
    discriminator = gan_complete.Discriminator(config, 3)
    x, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    phi = discriminator.features(x).flatten(1)
    psi = discriminator.score(discriminator.features(x)).view(-1)
    expected = psi + (discriminator.embed.weight[labels] * phi).sum(1)
    assert torch.allclose(discriminator(x, labels), expected, atol=1e-5)
    # D(x, y) - D(x, y') = <embed(y) - embed(y'), phi(x)>: only the projection depends on the class
    gap = discriminator(x, torch.zeros(6, dtype=torch.long)) - discriminator(
        x, torch.ones(6, dtype=torch.long)
    )
    assert torch.allclose(
        gap, phi @ (discriminator.embed.weight[0] - discriminator.embed.weight[1]), atol=1e-5
    )


class ClassLinearCritic(torch.nn.Module):
    """D(x, y) = <w_y, x>: its gradient is w_y, so the penalty is mean (||w_y|| - 1)^2 over the
    batch."""

    def __init__(self):
        super().__init__()
        scales = torch.tensor([[0.1], [1.0], [3.0]], dtype=torch.float64)
        self.weight = torch.nn.Parameter(torch.randn(3, 3 * 8 * 8, dtype=torch.float64) * scales)

    def forward(self, x, labels):
        return (x.flatten(1) * self.weight[labels]).sum(1)


def test_the_gradient_penalty_takes_each_samples_class():
    critic, labels = ClassLinearCritic(), torch.tensor([0, 1, 2, 2])
    real, fake = torch.randn(2, 4, 3, 8, 8, dtype=torch.float64)
    penalty = gan_complete.gradient_penalty(critic, real, fake, labels)
    expected = ((critic.weight.detach()[labels].norm(dim=1) - 1) ** 2).mean()
    assert torch.allclose(penalty.double(), expected)


def test_labels_travel_with_their_images():
    labels = torch.arange(40) % 4
    images = (labels * 60).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    config = gan_complete.Config(batch_size=8, seed=1, channels_last=False, conditional=True)
    loader = machinery.InMemoryLoader(images, labels, ["a", "b", "c", "d"], config, "cpu")
    seen = []
    for real, batch_labels in loader.batches(epoch=0):
        level = ((real[:, 0, 0, 0] + 1) * 127.5).round().long()
        assert torch.equal(level, batch_labels * 60)
        seen.append(batch_labels)
    assert sorted(torch.cat(seen).tolist()) == sorted(labels.tolist())  # shuffled, none lost


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_conditional_run_records_its_classes_and_draws_every_class(name, conditional_runs):
    out_dir = conditional_runs[name]
    run = json.loads((out_dir / "config.json").read_text())
    assert run["config"]["conditional"] and run["data"] == {
        "channels": 3,
        "class_names": [f"class_{i}" for i in range(CLASSES)],
    }
    weights = machinery.load_state_dict_safely(out_dir / "generator.pkl")
    assert weights["embed.weight"].shape == (CLASSES, 100)
    assert ("net.0.gain.weight" in weights) == (name != "sngan") == run["config"]["class_norm"]
    critic = machinery.load_state_dict_safely(out_dir / "discriminator.pkl")
    # sngan.py keeps the projection's unnormalised weight under its spectral-norm parametrisation
    embedding = critic.get("embed.weight", critic.get("embed.parametrizations.weight.original"))
    assert embedding.shape[0] == CLASSES
    with Image.open(out_dir / "samples_per_class.png") as grid:  # one labelled row of 10 per class
        assert grid.size[1] >= CLASSES * (32 + 2) and grid.size[0] >= 10 * (32 + 2)
    with Image.open(out_dir / "samples_epoch_002.png") as grid:  # 8 labelled rows of fixed classes
        assert grid.size[1] >= 8 * (32 + 2)
    assert (
        "classes drawn uniformly over the 5 classes"
        in (out_dir / "latent_l2_norms.txt").read_text()
    )


def test_sampling_per_class_writes_n_images_of_each_chosen_class(
    conditional_runs, tmp_path, capsys
):
    weights = conditional_runs["gan_complete"] / "generator.pkl"
    assert (
        gan_complete.main(
            ["--sample", str(weights), "--per-class", "3", "--out-dir", str(tmp_path)]
        )
        == 0
    )
    folders = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert folders == [f"class_{i}" for i in range(CLASSES)]
    for folder in folders:
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == [
            "sample_0001.png",
            "sample_0002.png",
            "sample_0003.png",
        ]
    assert (tmp_path / "samples_per_class.png").exists()
    assert (
        gan_complete.main(
            [
                "--sample",
                str(weights),
                "--per-class",
                "2",
                "--classes",
                "1,class_3",
                "--out-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert (
        sorted(p.parent.name for p in tmp_path.glob("*/*.png")) == ["class_1"] * 2 + ["class_3"] * 2
    )
    # the other classes' folders went with their images
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["class_1", "class_3"]


def test_sampling_a_conditional_generator_draws_random_classes_and_names_each(
    conditional_runs, tmp_path, capsys
):
    weights = conditional_runs["gan_complete"] / "generator.pkl"
    arguments = ["--sample", str(weights), "--num-samples", "12", "--out-dir", str(tmp_path)]
    assert gan_complete.main(arguments) == 0
    files = sorted(tmp_path.glob("sample_*.png"))
    assert len(files) == 12
    named = [int(path.stem.rsplit("_", 1)[1]) for path in files]  # sample_0001_class_3 -> 3
    assert len(set(named)) >= 3, f"random classes, not one: {named}"
    assert "random classes" in capsys.readouterr().out
    # each file is its z drawn in the class its name gives, not in any other class
    config, data = machinery.weights_run(gan_complete, weights, {"device": "cpu"})
    generator = machinery.load_generator(gan_complete, weights, config, "cpu", data)
    z = torch.randn(12, config.z_dim, generator=torch.Generator().manual_seed(config.seed))
    for path, z_one, label in zip(files, z, named):
        saved = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32))
        every_class = machinery.generate(
            generator, z_one.repeat(CLASSES, 1), "cpu", torch.arange(CLASSES)
        )
        pixels = ((every_class + 1) * 127.5).permute(0, 2, 3, 1)
        errors = (pixels - saved).abs().flatten(1).mean(1)
        assert errors.argmin().item() == label and errors[label] < 1, path.name


def test_generate_per_class_is_a_function_for_a_reproduce_file(conditional_runs):
    images = gan_complete.generate_per_class(
        conditional_runs["gan_complete"] / "generator.pkl", per_class=4
    )
    assert list(images) == [f"class_{i}" for i in range(CLASSES)]
    assert all(
        batch.shape == (4, 32, 32, 3) and batch.dtype == np.uint8 for batch in images.values()
    )
    again = gan_complete.generate_per_class(
        conditional_runs["gan_complete"] / "generator.pkl", 4, classes="2"
    )
    assert list(again) == ["class_2"] and np.array_equal(again["class_2"], images["class_2"])


def test_a_reproduce_file_run_from_another_folder_finds_its_weights(conditional_runs, tmp_path):
    # the coursework's reproduce function, handed in beside generator.pkl and its config.json,
    # run by a grader from another folder
    handed_in = tmp_path / "handed_in"
    handed_in.mkdir()
    for name in ("generator.pkl", "config.json"):
        (handed_in / name).write_bytes((conditional_runs["gan_complete"] / name).read_bytes())
    (handed_in / "hw4.py").write_text(
        "from pathlib import Path\n"
        "from gan_complete import generate_per_class\n\n\n"
        "def reproduce_hw4():\n"
        '    weights = Path(__file__).resolve().parent / "generator.pkl"\n'
        "    return generate_per_class(weights, per_class=10)\n\n\n"
        'if __name__ == "__main__":\n'
        "    images = reproduce_hw4()\n"
        "    print(len(images), sorted({batch.shape for batch in images.values()}))\n"
    )
    elsewhere = tmp_path / "grader"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, str(handed_in / "hw4.py")],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{CLASSES} [(10, 32, 32, 3)]\n"


def test_generate_per_class_says_what_is_wrong(conditional_runs, cache_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(machinery.WeightsError) as error:
        gan_complete.generate_per_class("GAN_output/generator.pkl")
    assert str(error.value).startswith(f"no weights file at {tmp_path / 'GAN_output'}")
    assert f"is read from the current folder, {tmp_path}" in str(error.value)

    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "generator.pkl").write_bytes(
        (conditional_runs["gan_complete"] / "generator.pkl").read_bytes()
    )
    with pytest.raises(machinery.ConfigError, match="no config.json beside .*copy it"):
        gan_complete.generate_per_class(lone / "generator.pkl")

    plain = tmp_path / "plain"
    assert gan_complete.main(tiny_args(cache_dir, plain, "--epochs", "1")) == 0
    with pytest.raises(machinery.ConfigError, match="is an unconditional generator"):
        gan_complete.generate_per_class(plain / "generator.pkl")


def test_a_flowers_class_is_named_and_chosen_by_its_official_name():
    flowers = [f"{number:03d}" for number in range(1, 103)]
    assert machinery.class_indices(flowers, "sunflower, 5, Buttercup") == [53, 4, 47]
    assert analysis.class_label("054") == "054 sunflower"
    # other data's classes stay as they are
    assert machinery.class_indices(["class_0", "class_1"], "1") == [1]
    assert analysis.class_label("class_1") == "class_1" and analysis.class_label("7") == "class 7"
    with pytest.raises(machinery.ConfigError, match="there is no class 'tulip'.*flower's name"):
        machinery.class_indices(flowers, "tulip")
    with pytest.raises(machinery.ConfigError, match="class_1$"):  # no flowers, no name hint
        machinery.class_indices(["class_0", "class_1"], "tulip")


def test_many_classes_make_pages_of_labelled_rows(tmp_path):
    names = [f"{i:03d}" for i in range(1, 103)]
    images = torch.rand(102, 2, 3, 16, 16) * 2 - 1
    analysis.save_per_class_grid(images, names, tmp_path)
    pages = sorted(p.name for p in tmp_path.glob("samples_per_class*.png"))
    assert pages == [
        "samples_per_class_p1.png",
        "samples_per_class_p2.png",
        "samples_per_class_p3.png",
    ]
    with Image.open(tmp_path / "samples_per_class_p1.png") as page:
        assert page.size[1] >= analysis.CLASSES_PER_PAGE * (16 + 2)


def test_conditional_mistakes_stop_with_one_line(cache_dir, conditional_runs, tmp_path, capsys):
    unconditional = tmp_path / "plain"
    assert gan_complete.main(tiny_args(cache_dir, unconditional, "--epochs", "1")) == 0
    weights = conditional_runs["gan_complete"] / "generator.pkl"
    cases = [
        (
            ["--sample", str(unconditional / "generator.pkl"), "--per-class", "2"],
            "not a conditional generator",
        ),
        (["--sample", str(weights), "--per-class", "2", "--classes", "9"], "there is no class '9'"),
        (["--sample", str(weights), "--classes", "2"], "pass --per-class"),
        (
            ["--out-dir", str(unconditional), "--resume", "--conditional", "--epochs", "2"],
            "cannot change --conditional",
        ),
        (
            [
                "--out-dir",
                str(conditional_runs["gan_complete"]),
                "--resume",
                "--no-conditional",
                "--epochs",
                "3",
            ],
            "cannot change --conditional",
        ),
    ]
    for args, words in cases:
        capsys.readouterr()
        assert gan_complete.main(args) == 2, args
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    assert not (unconditional / "samples").exists()  # nothing written for a refused request


def test_a_generator_of_the_other_class_input_names_the_flag_that_fits_it(
    conditional_runs, tmp_path, capsys
):
    # sngan's fixture run joins the class to z (--no-class-norm); its config.json, with the field
    # left out, reads as the default class BatchNorm
    run = tmp_path / "joined"
    run.mkdir()
    (run / "generator.pkl").write_bytes((conditional_runs["sngan"] / "generator.pkl").read_bytes())
    saved = json.loads((conditional_runs["sngan"] / "config.json").read_text())
    assert saved["config"].pop("class_norm") is False
    (run / "config.json").write_text(json.dumps(saved))
    sngan = MODULES["sngan"]
    assert sngan.main(["--sample", str(run / "generator.pkl"), "--num-samples", "4"]) == 2
    err = capsys.readouterr().err
    assert "--no-class-norm" in err and err.count("\n") == 1, err
    arguments = ["--sample", str(run / "generator.pkl"), "--num-samples", "4", "--no-class-norm"]
    assert sngan.main(arguments) == 0


def test_conditional_training_needs_more_than_one_class(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(20):
        Image.fromarray(np.full((40, 40, 3), index * 10, dtype=np.uint8)).save(
            folder / f"p{index}.png"
        )
    args = [
        "--source",
        "folder",
        "--data-dir",
        str(folder),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out-dir",
        str(tmp_path / "out"),
        "--img-size",
        "32",
        "--g-channels",
        "16",
        "--d-channels",
        "16",
        "--batch-size",
        "8",
        "--rotations",
        "0",
        "--conditional",
        "--no-progress",
        "--preprocess-workers",
        "1",
    ]
    assert gan_complete.main(args) == 2
    err = capsys.readouterr().err
    assert "--conditional needs labelled data" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
