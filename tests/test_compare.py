"""compare.py: SWD and the cache CNN's FD behave like distances on images, collapse is caught,
conditional runs get their class match, the report is right and written whole.

Real-like data is drawn here (coloured discs on gradients; classes by the colour of a central
disc); no test reads /work/shared or the network. Fabricated run folders use stand-in training
modules (a generator that returns "memorised" real-like images, one image for every z, or the
images of the asked class) so that the right answer is known. The cache classifier trains for
a few dozen steps here (QUICK_CLASSIFIER), enough for colour classes.
"""

import contextlib
import functools
import json
import math
import re
import shutil
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import gaussian_blur

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import compare  # noqa: E402
import machinery  # noqa: E402


# ----------------------------------------------------------------------------- real-like data
def flower_like(n, size=64, seed=0):
    """uint8 [n, 3, size, size]: a colour gradient with 1-3 soft-edged coloured discs on it."""
    random = torch.Generator().manual_seed(seed)
    coords = (torch.arange(size) + 0.5) / size
    y, x = coords[:, None], coords[None, :]
    images = []
    for _ in range(n):
        top, bottom = torch.rand(2, 3, 1, 1, generator=random)
        angle = torch.rand(1, generator=random) * math.pi
        ramp = (x * torch.cos(angle) + y * torch.sin(angle)).clamp(0, 1)
        image = top * (1 - ramp) + bottom * ramp
        for _ in range(int(torch.randint(1, 4, (1,), generator=random))):
            centre = torch.rand(2, generator=random) * 0.6 + 0.2
            radius = torch.rand(1, generator=random) * 0.2 + 0.08
            colour = torch.rand(3, 1, 1, generator=random)
            distance = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2).sqrt()
            inside = torch.sigmoid((radius - distance) * size)  # about one pixel of soft edge
            image = image * (1 - inside) + colour * inside
        images.append(image)
    return (torch.stack(images) * 255).round().to(torch.uint8)


PALETTE = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.9], [0.9, 0.9, 0.1]])[
    :, :, None, None
]


def classed_like(n, size=32, seed=0, classes=4):
    """(uint8 [n, 3, size, size], labels [n]): flower_like images with a central disc whose colour
    is the class; image i is of class i % classes."""
    images = flower_like(n, size, seed).float() / 255
    coords = (torch.arange(size) + 0.5) / size
    inside = (((coords[:, None] - 0.5) ** 2 + (coords[None, :] - 0.5) ** 2).sqrt() < 0.25).float()
    labels = torch.arange(n) % classes
    images = images * (1 - inside) + PALETTE[labels] * inside
    return (images * 255).round().to(torch.uint8), labels


@pytest.fixture(autouse=True)
def quick_classifier(monkeypatch):
    """The cache classifier trains for seconds, not minutes: colour classes need few steps."""
    monkeypatch.setattr(compare, "CLASSIFIER_STEPS", 60)
    monkeypatch.setattr(compare, "CLASSIFIER_BATCH", 32)


# ----------------------------------------------------------------------------- SWD
N_SWD = 128  # images per set: enough to order the cases, fast on 2 cores


@pytest.fixture(scope="module")
def real_sets():
    images = flower_like(2 * N_SWD, seed=1)
    return images[:N_SWD], images[N_SWD:]


@pytest.fixture(scope="module")
def swd_cases(real_sets):
    real, other_real = real_sets
    # Blur the *other* sample: SWD draws patches at the same positions in both sets, so a
    # blurred copy of the very same images would beat any independent sample.
    blurred = gaussian_blur(other_real, kernel_size=5, sigma=2.0)
    noise = torch.randint(
        0, 256, real.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )
    return {
        name: compare.sliced_wasserstein(real, images, seed=0)
        for name, images in {
            "same": real,
            "halves": other_real,
            "blurred": blurred,
            "noise": noise,
        }.items()
    }


def test_swd_reports_every_pyramid_level_down_to_16px(swd_cases):
    assert list(swd_cases["halves"]) == ["64px", "32px", "16px", "avg"]
    levels = [swd_cases["halves"][key] for key in ("64px", "32px", "16px")]
    assert swd_cases["halves"]["avg"] == pytest.approx(sum(levels) / 3)


def test_swd_of_identical_sets_is_zero(swd_cases):
    assert all(value == pytest.approx(0, abs=1e-6) for value in swd_cases["same"].values())


def test_swd_orders_real_halves_below_blurred_below_noise(swd_cases):
    halves, blurred, noise = (swd_cases[name]["avg"] for name in ("halves", "blurred", "noise"))
    assert 0 < halves < blurred < noise
    assert halves < noise / 4, (
        "two samples of the same data should be far closer than data and noise"
    )
    # Blur removes fine detail and keeps the layout: the finest level sees it most clearly.
    added_by_blur = {
        level: swd_cases["blurred"][level] - swd_cases["halves"][level]
        for level in ("64px", "16px")
    }
    assert added_by_blur["64px"] > max(added_by_blur["16px"], 0) + 5


def test_swd_is_deterministic_for_a_seed_and_accepts_generator_floats(real_sets):
    real, other_real = real_sets[0][:32], real_sets[1][:32]
    # a quicker estimate is enough here
    swd = functools.partial(compare.sliced_wasserstein, directions=128)
    first = swd(real, other_real, seed=3)
    assert swd(real, other_real, seed=3) == first
    assert swd(real, other_real, seed=4) != first
    as_generator_output = other_real.float() / 127.5 - 1  # a generator's [-1, 1] range
    assert swd(real, as_generator_output, seed=3) == pytest.approx(first, rel=1e-4)


def test_swd_noise_estimates_the_standard_deviation_of_one_score(monkeypatch):
    """The estimator alone, on a stand-in SWD of known noise: normal, sigma at the full sample
    size, its variance falling as 1 / images (the docstring's scaling). Mean |d| / 2 over two
    splits averaged 0.80 sigma here: for normal d, E|d| = sqrt(2 / pi) sd(d)."""
    sigma, images = 0.5, 200
    random = torch.Generator().manual_seed(0)

    def noisy_swd(real, fake, seed):
        spread = sigma * math.sqrt(images / len(real))
        return {"avg": 20 + spread * torch.randn((), generator=random).item()}

    monkeypatch.setattr(compare, "sliced_wasserstein", noisy_swd)
    real = torch.zeros(images, 3, 16, 16, dtype=torch.uint8)
    estimates = torch.tensor([compare.swd_noise(real, real, seed) for seed in range(300)])
    # the root mean square of 8 differences is 3% low on average (Jensen); 300 calls: +-1.5%
    assert estimates.mean().item() == pytest.approx(sigma, rel=0.06)
    assert estimates.square().mean().sqrt().item() == pytest.approx(sigma, rel=0.05)


def test_swd_refuses_sets_of_different_shapes(real_sets):
    with pytest.raises(ValueError, match="differ in shape"):
        compare.sliced_wasserstein(real_sets[0], real_sets[1][:10])


# ----------------------------------------------------------------------------- diversity, FID/KID
def test_diversity_flags_identical_images_but_not_varied_ones(real_sets):
    real, other_real = real_sets
    identical = other_real[:1].expand(N_SWD, -1, -1, -1)
    assert compare.diversity(identical, real) == pytest.approx(0, abs=1e-6)
    assert compare.diversity(other_real, real) == pytest.approx(1, abs=0.15)
    assert (
        compare.diversity(identical, real)
        < compare.COLLAPSE_RATIO
        < compare.diversity(other_real, real)
    )


def test_fid_kid_are_skipped_with_the_reason_without_torchmetrics(monkeypatch, real_sets):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # makes `import torchmetrics...` fail
    inception = compare.InceptionMetrics(real_sets[0])
    assert inception(real_sets[1]).startswith("skipped: ") and "torchmetrics" in inception(
        real_sets[1]
    )
    assert (
        compare.InceptionMetrics(real_sets[0], enabled=False)(real_sets[1])
        == "skipped: --no-fid given"
    )


# ----------------------------------------------------------------------------- fabricated runs
@dataclass
class StandInConfig:
    z_dim: int = 8
    img_size: int = 32
    conditional: bool = False
    # the data settings, as the scripts' Config has them: where a cache is found or built
    data_dir: str = "data"
    source: str = "auto"
    cache_dir: str = "cache"
    rotations: int = 0
    max_angle: float = 15.0
    data_seed: int = 0
    synthetic_images: int = 2000
    synthetic_classes: int = 10
    preprocess_workers: int = 1


class WeightsError(Exception):
    pass


CLASSES = ["a", "b", "c", "d"]
# what the stand-in generators draw; bank[i] is of class i % 4
BANK = classed_like(64, seed=5)[0].float() / 127.5 - 1
KINDS = (b"memorised", b"collapsed", b"conditional", b"mislabelled", b"one per class")


class StandInGenerator(torch.nn.Module):
    """Maps z to a bank image picked by z ("memorised"), always the first one ("collapsed"), or
    one of the asked class ("conditional"), of the next class ("mislabelled") or the first of the
    asked class ("one per class"). bank[i] is of class i % 4. Built as machinery.load_generator
    builds a script's Generator; its kind is a tensor of its state_dict, so generator.pkl holds
    it."""

    def __init__(self, config=None, num_classes=0, image_channels=3, kind=b"memorised", bank=BANK):
        super().__init__()
        self.num_classes, self.bank = num_classes, bank
        self.register_buffer("kind_index", torch.tensor(KINDS.index(kind)))
        self.scale = torch.nn.Parameter(torch.ones(()))  # compare.generate looks up the device here

    @property
    def kind(self):
        return KINDS[int(self.kind_index)]

    def forward(self, z, labels=None):
        picked = (z[:, 0].abs() * 1e4).long() * (self.kind != b"one per class")
        if self.kind == b"collapsed":
            index = torch.zeros(len(z), dtype=torch.long)
        elif labels is None:
            index = picked % len(self.bank)
        else:  # conditional, mislabelled or one per class
            index = (labels + (self.kind == b"mislabelled")) % len(CLASSES) + len(CLASSES) * (
                picked % (len(self.bank) // len(CLASSES))
            )
        return self.bank[index] * self.scale


def stand_in_module(name):
    """A training script as compare.py sees it, through machinery: its Config, its Generator and
    the metrics its runs log."""
    module = types.ModuleType(name)
    module.Config, module.Generator = StandInConfig, StandInGenerator
    module.METRICS = ["d_loss", "g_loss", "w_dist", "gp"]
    return module


def write_weights(path, weights):
    """generator.pkl of a stand-in generator of this kind; other bytes as they are (a damaged
    file)."""
    if weights in KINDS:
        machinery.save_state_dict(StandInGenerator(kind=weights), path)
    else:
        path.write_bytes(weights)


REAL_LOAD_CACHE = compare.preprocess.load_cache


def use_cache(monkeypatch, folder, images, labels, classes, rotations=0):
    """A preprocess cache as compare.py reads it: load_cache's arrays, manifest.json's rotations."""
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_text(
        json.dumps({"params": {"rotations": rotations}, "classes": classes})
    )
    monkeypatch.setattr(compare.preprocess, "load_cache", lambda path: (images, labels, classes))
    return folder


@pytest.fixture
def stand_ins(monkeypatch, tmp_path):
    """Stand-ins of the four training scripts and a one-class preprocess cache of real-like images
    (so the cache classifier is skipped: there are no classes to learn)."""
    for name in ("gan_complete", "wgan_clip", "dcgan", "sngan"):
        monkeypatch.setitem(sys.modules, name, stand_in_module(name))
    use_cache(
        monkeypatch,
        tmp_path / "cache",
        classed_like(200, seed=6)[0],
        torch.zeros(200, dtype=torch.long),
        ["flower"],
    )
    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    return tmp_path


@pytest.fixture
def classed_stand_ins(stand_ins, monkeypatch):
    """The same, with a cache of four classes told apart by colour: the classifier is trained."""
    use_cache(monkeypatch, stand_ins / "cache", *classed_like(240, seed=6), CLASSES)
    return stand_ins


def write_run(
    folder,
    variant,
    script,
    weights,
    images_seen=1000,
    epochs_done=2,
    metrics_rows=None,
    snapshots=(),
    conditional=False,
    generator_steps=1000,
):
    folder.mkdir()
    config = {"z_dim": 8, "img_size": 32, "conditional": conditional}
    saved = {"variant": variant, "script": script, "config": config}
    if conditional:
        saved["data"] = {"channels": 3, "class_names": CLASSES}
    (folder / "config.json").write_text(json.dumps(saved))
    info = {
        "variant": variant,
        "script": script,
        "generator_params": 12345,
        "critic_params": 6789,
        "epochs_done": epochs_done,
        "epochs": 2,
        "generator_steps": generator_steps,
        "critic_steps": 50,
        "images_seen": images_seen,
        "wall_time_s": 10.0,
        "images_per_s": images_seen / 10,
        "device": "cpu",
        "img_size": 32,
        "z_dim": 8,
        "batch_size": 20,
        "cache_path": str(folder.parent / "cache"),
        "finished": epochs_done == 2,
    }
    (folder / "run_info.json").write_text(json.dumps(info))
    rows = metrics_rows or [
        f"{step},1,{1 / step},{-step / 10},0.5,0.1,0.0002,{step}" for step in range(1, 51)
    ]
    (folder / "metrics.csv").write_text(
        "\n".join(["step,epoch,d_loss,g_loss,w_dist,gp,lr,time", *rows]) + "\n"
    )
    write_weights(folder / "generator.pkl", weights)
    for epoch, snapshot in enumerate(snapshots, 1):  # snapshot_every 1
        (folder / "snapshots").mkdir(exist_ok=True)
        write_weights(folder / "snapshots" / f"generator_epoch_{epoch:03d}.pkl", snapshot)
    return folder


def write_generator_only(folder, variant, script, weights, **config):
    """A folder of generator.pkl and config.json alone, as pretrained/ holds: no training run."""
    folder.mkdir(parents=True)
    saved = {"variant": variant, "script": script, "config": {"z_dim": 8, "img_size": 32, **config}}
    (folder / "config.json").write_text(json.dumps(saved))
    write_weights(folder / "generator.pkl", weights)
    (folder / "README.md").write_text("how it was trained\n")
    return folder


def table_rows(markdown):
    """The main table's data rows, as lists of cells."""
    table = markdown.split("\n\n")[1].splitlines()[2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table]


def sizes_rows(markdown):
    """The rows of the table of sizes, speed and more measures."""
    table = markdown.split("## Sizes, speed and more measures")[1].split("\n\n")[1]
    return [
        [cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]
    ]


def curve_rows(markdown):
    """The quality-by-epoch table's data rows, as lists of cells ([] when there is none)."""
    if "during training (from the snapshots)" not in markdown:
        return []
    table = (
        markdown.split("during training (from the snapshots)")[1].split("\n\n")[1].splitlines()[2:]
    )
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table]


def expected_figure_size(rows, with_quality):
    """One row of panels per run; the SWD-by-epoch panel only when some run kept snapshots."""
    widths = [
        width for name, width in compare.PANEL_WIDTHS.items() if with_quality or name != "quality"
    ]
    return round(sum(widths) * compare.DPI), round(rows * compare.ROW_HEIGHT * compare.DPI)


def test_report_ranks_runs_and_warns_about_collapse_nan_and_budgets(stand_ins, capsys):
    good = write_run(
        stand_ins / "GAN_output",
        "WGAN-GP",
        "gan_complete",
        b"memorised",
        snapshots=[b"collapsed", b"memorised"],
    )
    nan_rows = [f"{step},1,nan,inf,0.5,0.0,0.0002,{step}" for step in range(1, 4)]
    collapsed = write_run(
        stand_ins / "DCGAN_output",
        "DCGAN",
        "dcgan",
        b"collapsed",
        images_seen=2000,
        epochs_done=1,
        metrics_rows=nan_rows,
    )
    out_dir = stand_ins / "comparison"

    assert (
        compare.main([str(good), str(collapsed), "--out-dir", str(out_dir), "--num-images", "64"])
        == 0
    )

    markdown = (out_dir / "comparison.md").read_text()
    assert markdown in capsys.readouterr().out
    rows, sizes = table_rows(markdown), sizes_rows(markdown)
    assert [row[0] for row in rows] == [row[0] for row in sizes] == ["WGAN-GP", "DCGAN"]
    assert len(rows[0]) == 9, "the main table stays narrow"
    assert sizes[0][2:4] == ["12,345", "6,789"]
    good_warnings, collapsed_warnings = rows[0][-1], rows[1][-1]
    assert good_warnings == "none"
    assert "mode collapse" in collapsed_warnings
    assert "non-finite losses in 3 of 3 steps" in collapsed_warnings
    assert "unfinished: 1 of 2 epochs" in collapsed_warnings
    # FID / KID without torchmetrics: the reason once, below
    assert sizes[0][7] == sizes[1][7] == "skipped"
    assert (
        markdown.count("FID / KID skipped: ") == 1 and "pip install torchmetrics[image]" in markdown
    )
    assert rows[0][6] == sizes[0][6] == "skipped", "one class: no classifier of classes"
    assert markdown.count("FD (cache CNN) and KID skipped: the cache has one class") == 1
    assert "images seen differ by more than 10%: GAN_output 1,000, DCGAN_output 2,000" in markdown
    assert "epochs differ" in markdown
    assert "Best on SWD: WGAN-GP (`GAN_output`)" in markdown
    assert float(rows[0][5]) < float(rows[1][5])
    # The epoch-1 snapshot (collapsed) scores worse than the final generator, which is not scored
    # twice.
    cells = curve_rows(markdown)[0]
    epoch_1, epoch_2 = (float(point.split(": ")[1]) for point in cells[2].split(", "))
    assert cells[:2] == ["WGAN-GP", f"`{good}`"] and epoch_1 > epoch_2 == float(rows[0][5])
    assert cells[3] == "SWD best at the end: more epochs may help"

    with Image.open(out_dir / "comparison.png") as figure:
        assert figure.size == expected_figure_size(rows=2, with_quality=True)


def test_an_unreadable_snapshot_is_left_out_with_a_warning(stand_ins, capsys):
    run = write_run(
        stand_ins / "GAN_output", "WGAN-GP", "gan_complete", b"memorised", snapshots=[b"truncated"]
    )
    out_dir = stand_ins / "comparison"
    assert compare.main([str(run), "--out-dir", str(out_dir), "--num-images", "32"]) == 0
    markdown = capsys.readouterr().out
    assert (
        table_rows(markdown)[0][-1]
        == "unreadable snapshot(s) left out of the SWD curve: generator_epoch_001.pkl"
    )
    assert curve_rows(markdown) == []
    with Image.open(out_dir / "comparison.png") as figure:
        assert figure.size == expected_figure_size(rows=1, with_quality=False)


def test_no_snapshots_scores_only_the_final_generators(stand_ins, capsys):
    run = write_run(
        stand_ins / "GAN_output", "WGAN-GP", "gan_complete", b"memorised", snapshots=[b"collapsed"]
    )
    out_dir = stand_ins / "comparison"
    assert (
        compare.main([str(run), "--out-dir", str(out_dir), "--num-images", "32", "--no-snapshots"])
        == 0
    )
    assert curve_rows(capsys.readouterr().out) == []
    with Image.open(out_dir / "comparison.png") as figure:
        assert figure.size == expected_figure_size(rows=1, with_quality=False)


@pytest.mark.parametrize(
    "problem, message",
    [
        (
            "not a run",
            "is not a run folder (no config.json, generator.pkl)",
        ),
        ("bad weights", "generator.pkl: not a plain state_dict"),
        ("missing cache", "real-image cache"),
        ("incomplete cache", "is not a complete cache"),
    ],
)
def test_bad_input_stops_with_one_line_and_exit_2(stand_ins, monkeypatch, capsys, problem, message):
    good = write_run(stand_ins / "GAN_output", "WGAN-GP", "gan_complete", b"memorised")
    if problem == "not a run":
        bad = stand_ins / "holiday_photos"
        bad.mkdir()
    else:
        bad = write_run(
            stand_ins / "DCGAN_output",
            "DCGAN",
            "dcgan",
            b"\x80\x04 hostile" if problem == "bad weights" else b"collapsed",
        )
    if problem == "missing cache":
        shutil.rmtree(stand_ins / "cache")
    if problem == "incomplete cache":  # the real preprocess.load_cache on an empty cache folder
        monkeypatch.setattr(compare.preprocess, "load_cache", REAL_LOAD_CACHE)

    assert compare.main([str(good), str(bad), "--out-dir", str(stand_ins / "comparison")]) == 2

    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and message in stderr
    assert stderr.count("\n") == 1
    assert not (stand_ins / "comparison").exists(), "nothing is written for a failed comparison"


def test_a_renamed_copy_is_read_by_its_method_not_its_file_name(stand_ins, monkeypatch, capsys):
    """A student hands in sngan.py as hw4_code.py: config.json says script "hw4_code", variant
    "SNGAN"; sngan.py's loader reads it (the four scripts' generators are the same code)."""
    run = write_run(stand_ins / "hw4_output", "SNGAN", "hw4_code", b"memorised")
    loaded = []
    original = machinery.load_generator

    def spy(script, path, *args, **kwargs):
        loaded.append(path)
        assert script is sys.modules["sngan"]
        return original(script, path, *args, **kwargs)

    monkeypatch.setattr(machinery, "load_generator", spy)
    out_dir = stand_ins / "comparison"
    assert compare.main([str(run), "--out-dir", str(out_dir), "--num-images", "32"]) == 0
    assert table_rows(capsys.readouterr().out)[0][:2] == ["SNGAN", f"`{run}`"]
    assert loaded == [run / "generator.pkl"]


def test_an_unknown_method_is_refused_naming_the_four_known(stand_ins, capsys):
    run = write_run(stand_ins / "BigGAN_output", "BigGAN", "biggan", b"memorised")
    assert compare.main([str(run), "--out-dir", str(stand_ins / "comparison")]) == 2
    stderr = capsys.readouterr().err
    assert stderr == (
        f"error: {run}/config.json names the method 'BigGAN'; compare.py reads runs of WGAN-GP, "
        "WGAN-clip, DCGAN and SNGAN\n"
    )


def test_a_generator_without_a_training_run_is_scored_beside_the_runs(stand_ins, capsys):
    run = write_run(stand_ins / "GAN_output", "WGAN-GP", "gan_complete", b"memorised")
    pretrained = write_generator_only(
        stand_ins / "pretrained" / "sngan", "SNGAN", "sngan", b"collapsed"
    )
    out_dir = stand_ins / "comparison"
    assert (
        compare.main([str(run), str(pretrained), "--out-dir", str(out_dir), "--num-images", "32"])
        == 0
    )
    markdown = capsys.readouterr().out
    rows, sizes = table_rows(markdown), sizes_rows(markdown)
    # scored as any run (the training run's cache: the pretrained folder names none)...
    assert [row[0] for row in rows] == ["WGAN-GP", "SNGAN"]
    assert float(rows[1][5]) > float(rows[0][5]), "the collapsed stand-in scores worse on SWD"
    assert "mode collapse" in rows[1][-1]
    # ... but has no epochs, steps, speed or losses to show
    assert rows[1][2:5] == ["not a training run", "-", "-"]
    assert sizes[1][2:6] == ["1", "-", "-", "-"], "G params counted from the generator itself"
    assert (
        f"Not a training run (config.json and generator.pkl only): `{pretrained}`: no losses or "
        "speed" in markdown
    )
    assert "barely trained" not in markdown and "unfinished" not in markdown
    with Image.open(out_dir / "comparison.png") as figure:
        assert figure.size == expected_figure_size(rows=2, with_quality=False)


def test_generators_alone_find_or_build_their_cache_from_config_json(
    stand_ins, monkeypatch, capsys
):
    """No run names a cache: config.json's data settings build it, with --data-dir for where the
    photos are now (a folder of class subfolders here; pretrained/ names Flowers)."""
    monkeypatch.setattr(compare.preprocess, "load_cache", REAL_LOAD_CACHE)
    photos = stand_ins / "photos"
    images, labels = classed_like(48, size=40, seed=8)
    for index, (image, label) in enumerate(zip(images, labels)):
        (photos / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(
            photos / CLASSES[label] / f"{index}.png"
        )
    data = {"source": "folder", "data_dir": "moved_away", "cache_dir": str(stand_ins / "built")}
    first = write_generator_only(stand_ins / "a", "WGAN-GP", "gan_complete", b"memorised", **data)
    second = write_generator_only(stand_ins / "b", "DCGAN", "dcgan", b"collapsed", **data)
    out_dir = stand_ins / "comparison"
    folders = [str(first), str(second), "--out-dir", str(out_dir), "--num-images", "16"]

    # where config.json says the photos were, there are none: say what to pass
    assert compare.main(folders) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and stderr.startswith(
        f"error: no run names its real images' cache ({first} is not a training run) and "
        "moved_away does not exist; pass --data-dir with the photos it trained on, or --cache"
    )

    assert compare.main([*folders, "--data-dir", str(photos)]) == 0
    printed = capsys.readouterr()
    (cache,) = (stand_ins / "built").iterdir()
    assert cache.name.startswith("folder-") and "_s32_r0_" in cache.name
    assert f"building {cache}" in printed.err, (
        "preprocess's lines go to stderr, the table to stdout"
    )
    assert f"real images from {cache} (48 in all)" in printed.out
    assert [row[2] for row in table_rows(printed.out)] == ["not a training run"] * 2

    # built once: the next comparison finds it, without --data-dir where config.json's data_dir
    # is right
    for folder in (first, second):
        saved = json.loads((folder / "config.json").read_text())
        saved["config"]["data_dir"] = str(photos)
        (folder / "config.json").write_text(json.dumps(saved))
    assert compare.main(folders) == 0
    assert f"reusing the complete cache {cache}" in capsys.readouterr().err


def test_generators_alone_never_download_the_flowers(stand_ins, monkeypatch, capsys):
    monkeypatch.setattr(
        compare.preprocess, "download_flowers102", lambda *args: pytest.fail("downloaded")
    )
    empty = stand_ins / "empty"
    empty.mkdir()
    pretrained = write_generator_only(
        stand_ins / "pretrained", "WGAN-GP", "gan_complete", b"memorised", data_dir=str(empty)
    )
    assert compare.main([str(pretrained), "--out-dir", str(stand_ins / "comparison")]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and (
        f"and {empty} holds no Oxford 102 Flowers (jpg/ and a label file)" in stderr
    )
    assert "pass --data-dir with the photos it trained on, or --cache" in stderr


# ----------------------------------------------------------------------------- end to end
def test_compare_two_real_gan_complete_runs(tmp_path, capsys, monkeypatch):
    import gan_complete

    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    tiny = [
        "--source",
        "synthetic",
        "--synthetic-images",
        "64",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--batch-size",
        "16",
        "--d-channels",
        "16",
        "--img-size",
        "32",
        "--latent-pool",
        "32",
        "--preprocess-workers",
        "1",
        "--no-progress",
    ]
    wide, narrow = tmp_path / "wide", tmp_path / "narrow"
    assert (
        gan_complete.main(
            [
                *tiny,
                "--out-dir",
                str(wide),
                "--epochs",
                "2",
                "--g-channels",
                "16",
                "--snapshot-every",
                "1",
            ]
        )
        == 0
    )
    assert (
        gan_complete.main([*tiny, "--out-dir", str(narrow), "--epochs", "1", "--g-channels", "8"])
        == 0
    )
    capsys.readouterr()

    out_dir = tmp_path / "comparison"
    assert compare.main([str(wide), str(narrow), "--out-dir", str(out_dir)]) == 0

    printed = capsys.readouterr()
    markdown = printed.out
    # said before the minutes it takes, the first time a cache is compared
    assert "training the cache's classifier" in printed.err and "once: it is kept in" in printed.err
    assert (out_dir / "comparison.md").read_text() in markdown
    rows, sizes = table_rows(markdown), sizes_rows(markdown)
    assert len(rows) == 2 and {row[0] for row in rows} == {"WGAN-GP"}
    for row, folder in zip(sizes, (wide, narrow)):
        info = json.loads((folder / "run_info.json").read_text())
        assert row[1] == f"`{folder}`"
        assert row[2:4] == [f"{info['generator_params']:,}", f"{info['critic_params']:,}"]
    assert sizes[0][2] != sizes[1][2], "--g-channels 8 gives a smaller generator"
    assert "images seen differ by more than 10%" in markdown and "epochs differ" in markdown
    # one epoch each: a lead, or a tie within the measures' noise, which the verdict then says
    verdicts = ("Best on SWD: WGAN-GP", "No run leads beyond the measures' noise", "within noise")
    assert any(verdict in markdown for verdict in verdicts)
    assert "Noise: at this sample size one SWD varies by about" in markdown
    with Image.open(out_dir / "comparison.png") as figure:
        assert figure.format == "PNG"
        assert figure.size == expected_figure_size(rows=2, with_quality=True)
    curves = curve_rows(markdown)
    assert len(curves) == 1 and curves[0][1] == f"`{wide}`", "only the wide run kept snapshots"
    assert [point.split(": ")[0] for point in curves[0][2].split(", ")] == ["1", "2"]
    assert all(len(point.split(": ")[1].split(" / ")) == 2 for point in curves[0][2].split(", ")), (
        "SWD / FD"
    )
    # The synthetic cache has 10 classes: its classifier was trained once and kept beside it.
    (cache,) = (tmp_path / "cache").iterdir()
    assert (cache / compare.CLASSIFIER_FILES[False]).is_file()
    assert all(float(row[6].split(" ± ")[0]) > 0 for row in rows), "FD (cache CNN) of each run"
    assert all(float(row[6].split(" ± ")[1]) > 0 for row in rows), "and how much it varies"
    assert "Not FID" in markdown


def test_a_bad_device_or_out_dir_stops_before_any_scoring(stand_ins, monkeypatch, capsys):
    run = write_run(stand_ins / "GAN_output", "WGAN-GP", "gan_complete", b"memorised")
    monkeypatch.setattr(
        compare, "score_runs", lambda *args: pytest.fail("scored before checking the input")
    )
    blocker = stand_ins / "a_file"
    blocker.write_text("")
    for extra, message in (
        (["--device", "gpu0"], "unknown --device 'gpu0'"),
        (["--out-dir", str(blocker / "comparison")], "cannot write to --out-dir"),
    ):
        assert compare.main([str(run), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_the_verdict_warns_when_image_sizes_differ():
    def run(size):
        return types.SimpleNamespace(
            variant="WGAN-GP", folder=Path(f"run{size}"), config=StandInConfig(img_size=size)
        )

    def score(avg):
        return types.SimpleNamespace(swd={"16px": avg, "avg": avg}, structure=None)

    floors = {32: {"avg": 10.0}, 64: {"avg": 11.0}}
    same = compare.verdict([run(32), run(32)], [score(50.0), score(60.0)], floors, [[], []])
    mixed = compare.verdict([run(32), run(64)], [score(50.0), score(60.0)], floors, [[], []])
    assert not any("differ in image size" in sentence for sentence in same)
    assert any("differ in image size (32 px, 64 px)" in sentence for sentence in mixed)


# ----------------------------------------------------------------------------- global structure
def test_frechet_distance_and_kid_on_known_gaussians():
    random = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 4000, 8, generator=random, dtype=torch.float64)
    shifted = b + torch.tensor([3.0, 4.0] + [0.0] * 6, dtype=torch.float64)  # |mean shift|^2 = 25
    assert compare.frechet_distance(a, a) == pytest.approx(0, abs=1e-9)
    assert compare.frechet_distance(a, b) == pytest.approx(0, abs=0.05), (
        "two samples of one Gaussian"
    )
    assert compare.frechet_distance(a, shifted) == pytest.approx(25, rel=0.02)
    wider = b * 2  # covariance 4 I against I: Tr(I + 4I - 2 * 2I) = 8 in 8 dimensions
    assert compare.frechet_distance(a, wider) == pytest.approx(8, rel=0.05)
    # KID is unbiased: two samples of one distribution average to about 0, either sign.
    same, apart = compare.kernel_distance(a, b, seed=0), compare.kernel_distance(a, shifted, seed=0)
    assert abs(same) < apart / 100 and apart > 0


@contextlib.contextmanager
def quick_classifiers(steps=60):
    """For a module-scoped fixture, where the autouse quick_classifier does not reach: cache
    classifiers of `steps` steps of 32 images."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compare, "CLASSIFIER_STEPS", steps)
        patch.setattr(compare, "CLASSIFIER_BATCH", 32)
        yield


@pytest.fixture(scope="module")
def structure(tmp_path_factory):
    """A StructureMeasure of a four-class cache (the classifier trained once for these tests)."""
    images, labels = classed_like(240, seed=6)
    cache = compare.Cache(tmp_path_factory.mktemp("cache"), images, labels, CLASSES, copies=1)
    with quick_classifiers():
        return compare.StructureMeasure(cache, num_images=64, seed=0)


def test_the_cache_cnn_puts_new_real_images_near_the_floor_and_collapse_far(structure):
    assert structure.classifier.info["top1"] > 0.9, (
        "colour classes are easy: the features know them"
    )
    assert (
        structure.classifier.info["held_out_images"] == 60
        and structure.classifier.info["train_images"] == 180
    )
    new_real = classed_like(64, seed=7)[0]
    collapsed = new_real[:1].expand(64, -1, -1, -1)
    noise = torch.randint(
        0, 256, new_real.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    fd = {
        name: structure(images)["fd"]
        for name, images in {"real": new_real, "collapsed": collapsed, "noise": noise}.items()
    }
    assert fd["real"] < 2 * structure.floor["fd"] < fd["collapsed"]
    assert fd["real"] < fd["noise"]
    assert structure(new_real)["kid"] < structure(collapsed)["kid"]


def test_conditional_runs_get_their_class_match_beside_real_accuracy_and_chance(
    classed_stand_ins, capsys
):
    right = write_run(
        classed_stand_ins / "GAN_output",
        "WGAN-GP",
        "gan_complete",
        b"conditional",
        conditional=True,
    )
    wrong = write_run(
        classed_stand_ins / "DCGAN_output", "DCGAN", "dcgan", b"mislabelled", conditional=True
    )
    plain = write_run(classed_stand_ins / "plain_output", "WGAN-GP", "gan_complete", b"memorised")
    out_dir = classed_stand_ins / "comparison"
    assert (
        compare.main(
            [str(right), str(wrong), str(plain), "--out-dir", str(out_dir), "--num-images", "64"]
        )
        == 0
    )

    markdown = capsys.readouterr().out
    rows = table_rows(markdown)
    right_match, wrong_match = (float(row[7].split(" / ")[0].rstrip("%")) for row in rows[:2])
    assert right_match > 90 and wrong_match < 10
    assert rows[2][7] == "- (unconditional)"
    assert "/" not in rows[0][7], "top-5 of four classes says nothing: top-1 only"
    assert "conditional and unconditional runs side by side" in markdown
    assert "Not FID" in markdown
    # The classes section: both conditional runs beside real photos, and what each confuses.
    classes = class_rows(markdown)
    assert [row[0] for row in classes] == ["WGAN-GP", "DCGAN", "real photos"]
    assert classes[0][2] == rows[0][7] and "chance 25.0%" in markdown
    # beside the colour-blind ceiling: what brightness alone (no shape) tells of the real photos
    assert re.fullmatch(r"\d+\.\d% \(brightness alone: \d+\.\d%\)", classes[-1][3])
    assert "brightness alone (a nearest-centroid classifier on grey-level histograms" in markdown
    assert f"- `{wrong}`: a -> b (16 of 16), b -> c (16 of 16), c -> d (16 of 16)" in markdown
    assert f"- `{right}`: none" in markdown


def class_rows(markdown):
    """The rows of the table of class measures."""
    table = markdown.split("## Classes (conditional runs)")[1].split("\n\n")[1]
    return [
        [cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]
    ]


def test_a_conditional_run_on_other_classes_is_refused(classed_stand_ins, capsys):
    run = write_run(
        classed_stand_ins / "GAN_output",
        "WGAN-GP",
        "gan_complete",
        b"conditional",
        conditional=True,
    )
    config = json.loads((run / "config.json").read_text())
    config["data"]["class_names"] = ["x", "y"]
    (run / "config.json").write_text(json.dumps(config))
    assert compare.main([str(run), "--out-dir", str(classed_stand_ins / "comparison")]) == 2
    assert (
        "is conditional on classes ['x', 'y'] that are not the cache's" in capsys.readouterr().err
    )


def test_a_conditional_run_is_scored_on_the_datas_class_frequencies_and_matched_on_uniform_classes(
    stand_ins, monkeypatch
):
    images, labels = classed_like(480, seed=6)
    # every image of class a, a sixth of the others
    keep = (labels == 0) | (torch.arange(480) % 24 < 4)
    # 120 a, 20 b, c, d
    use_cache(monkeypatch, stand_ins / "cache", images[keep], labels[keep], CLASSES)
    run = compare.load_run(
        write_run(
            stand_ins / "GAN_output", "WGAN-GP", "gan_complete", b"conditional", conditional=True
        )
    )
    cache = compare.load_real_cache(stand_ins / "cache")
    real, reference, real_labels = compare.real_samples(cache, 64, seed=0)
    structure = compare.StructureMeasure(cache, 64, seed=0)
    [score], _ = compare.score_runs(
        [run],
        real,
        reference,
        real_labels,
        64,
        0,
        compare.InceptionMetrics(real, "cpu", enabled=False),
        structure,
        classes=compare.ClassMeasure(cache, structure, 64, seed=0),
        snapshots=False,
    )
    # the stand-in draws the asked class: the centre's colour says which class SWD and FD were given
    centre = score.samples[:, :, 16, 16].float()[:, :, None] / 255
    drawn = (centre - PALETTE[:, :, 0, 0].T[None]).square().sum(1).argmin(1)
    assert torch.equal(drawn, real_labels)  # as the real images it is compared with: 2/3 of class a
    assert score.classes["top1"] > 0.9  # and the class match asked for each class as often


def test_leads_within_the_measures_noise_are_ties():
    runs = [
        types.SimpleNamespace(
            variant="WGAN-GP", folder=Path(name), config=StandInConfig(img_size=64)
        )
        for name in ("run", "resumed")
    ]

    def score(swd, fd):
        return types.SimpleNamespace(
            swd={"64px": swd, "avg": swd}, structure={"fd": fd, "fd_std": 0.4}
        )

    floors = {64: {"avg": 10.0, "noise": 0.15}}  # two SWDs differ by up to 2 * sqrt(2) * 0.15
    # the case: the same settings, one run interrupted and resumed
    text = " ".join(
        compare.verdict(runs, [score(27.99, 23.1), score(27.93, 23.3)], floors, [[], []])
    )
    assert "Best on" not in text and "No run leads beyond the measures' noise" in text
    assert "0.06 apart where noise alone reaches 0.42" in text and "Call it a tie" in text
    # a clear lead on FD, none on SWD: FD decides, and SWD is said to be within noise
    text = " ".join(
        compare.verdict(runs, [score(27.99, 23.1), score(27.93, 30.0)], floors, [[], []])
    )
    assert "On SWD the two leading runs are within noise" in text
    assert "on FD (cache CNN) WGAN-GP (`run`) leads, 23.10 against 30.00" in text
    # beyond the noise on both: a best run, as before
    text = " ".join(compare.verdict(runs, [score(20.0, 20.0), score(27.9, 30.0)], floors, [[], []]))
    assert text.startswith("Best on SWD: WGAN-GP (`run`)")


def test_a_barely_trained_run_is_not_called_collapsed(stand_ins, capsys):
    short = write_run(
        stand_ins / "WGAN_clip_output", "WGAN-clip", "wgan_clip", b"collapsed", generator_steps=95
    )
    assert compare.main([str(short), "--out-dir", str(stand_ins / "comparison")]) == 0
    warnings = table_rows(capsys.readouterr().out)[0][-1]
    assert "barely trained (95 generator steps)" in warnings and "mode collapse" not in warnings


def test_a_run_under_500_generator_steps_is_barely_trained_however_varied(stand_ins, capsys):
    """Three or four epochs on the CPU preset: varied samples, but hardly started."""
    short = write_run(
        stand_ins / "GAN_output", "WGAN-GP", "gan_complete", b"memorised", generator_steps=384
    )
    trained = write_run(
        stand_ins / "DCGAN_output", "DCGAN", "dcgan", b"memorised", generator_steps=500
    )
    out_dir = stand_ins / "comparison"
    assert compare.main([str(short), str(trained), "--out-dir", str(out_dir)]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert float(rows[0][7]) > compare.COLLAPSE_RATIO
    assert (
        rows[0][-1] == "barely trained (384 generator steps, under 500): its scores say little yet"
    )
    assert rows[1][-1] == "none"


def test_the_verdict_says_where_swd_and_fd_disagree_and_calls_no_run_best():
    runs = [
        types.SimpleNamespace(variant=name, folder=Path(name), config=StandInConfig(img_size=64))
        for name in ("epoch10", "epoch20")
    ]
    # The case: the same mean SWD, worse at 64 px and better at 32 and 16 px, better shapes.
    swd_10 = {"64px": 63.0, "32px": 22.0, "16px": 18.0}
    swd_20 = {"64px": 70.0, "32px": 18.0, "16px": 15.4}
    scores = [
        types.SimpleNamespace(swd={**swd, "avg": sum(swd.values()) / 3}, structure={"fd": fd})
        for swd, fd in ((swd_10, 30.0), (swd_20, 20.0))
    ]
    text = " ".join(compare.verdict(runs, scores, {64: {"avg": 11.0}}, [[], []], fd_floor=2.0))
    assert "disagree, so no run is called best" in text and "Best on" not in text
    assert (
        "on SWD epoch10 (`epoch10`) leads" in text
        and "on FD (cache CNN) epoch20 (`epoch20`) leads" in text
    )
    assert (
        "epoch20 is ahead at 32px (mid-scale shapes, 4.00), 16px (layout and colour, 2.60)" in text
    )
    assert "epoch10 at 64px (fine detail and texture, 7.00)" in text
    assert "2.00 on FD (cache CNN)" in text
    scores[1].structure["fd"] = 40.0  # now both prefer epoch10
    assert compare.verdict(runs, scores, {64: {"avg": 11.0}}, [[], []], fd_floor=2.0)[2].startswith(
        "FD (cache CNN) agrees: 30.00, against 40.00"
    )


# ----------------------------------------------------------------------------- whole files
def test_a_torn_last_row_of_a_running_run_is_left_out_but_damage_elsewhere_is_refused(
    stand_ins, capsys
):
    rows = [f"{step},1,{1 / step},{-step / 10},0.5,0.1,0.0002,{step}" for step in range(1, 11)]
    run = write_run(
        stand_ins / "GAN_output", "WGAN-GP", "gan_complete", b"memorised", metrics_rows=rows
    )
    with open(run / "metrics.csv", "a") as file:
        file.write("11,1,0.09")  # a writer caught mid-append: no line end
    out_dir = stand_ins / "comparison"
    assert compare.main([str(run), "--out-dir", str(out_dir), "--num-images", "32"]) == 0
    warnings = table_rows(capsys.readouterr().out)[0][-1]
    assert "metrics.csv ends in a partial row (a run still writing?), left out" in warnings
    assert len(compare.load_run(run).metrics["step"]) == 10

    # a short row in the middle is not a run still writing
    damaged = rows[:4] + ["5,1,0.2"] + rows[5:]
    bad = write_run(
        stand_ins / "DCGAN_output", "DCGAN", "dcgan", b"memorised", metrics_rows=damaged
    )
    assert compare.main([str(bad), "--out-dir", str(out_dir)]) == 2
    assert "metrics.csv holds something that is not a number" in capsys.readouterr().err


def test_an_interrupted_comparison_leaves_the_previous_files_whole(stand_ins, monkeypatch):
    run = write_run(stand_ins / "GAN_output", "WGAN-GP", "gan_complete", b"memorised")
    out_dir = stand_ins / "comparison"
    out_dir.mkdir()
    (out_dir / "comparison.md").write_text("previous table")
    (out_dir / "comparison.png").write_bytes(b"previous figure")

    def full_disk(self, target, **kwargs):  # half a PNG, then the disk is full
        (target.write if hasattr(target, "write") else Path(target).write_bytes)(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compare.Figure, "savefig", full_disk)
    with pytest.raises(OSError, match="No space left"):
        compare.main([str(run), "--out-dir", str(out_dir), "--num-images", "32"])
    assert (out_dir / "comparison.png").read_bytes() == b"previous figure"
    assert (out_dir / "comparison.md").read_text() == "previous table"
    assert sorted(path.name for path in out_dir.iterdir()) == ["comparison.md", "comparison.png"], (
        "no temporary left"
    )
