"""tools/one_file.py: a script and the modules it imports as the one file a coursework hands in,
which trains, samples and reproduces alone, from a folder with nothing else in it."""

import ast
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, tiny_args

sys.path.insert(0, str(ROOT / "tools"))
import one_file  # noqa: E402


def alone():
    """The environment of a folder without the project: no PYTHONPATH to its modules."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return {**env, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}


def run_alone(folder, *args):
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        env=alone(),
    )


@pytest.fixture(scope="module")
def handed_in(tmp_path_factory, cache_dir):
    """hw4_code.py made from sngan.py in an empty folder, and a conditional run of it there."""
    folder = tmp_path_factory.mktemp("hand_in")
    made = run_alone(ROOT, ROOT / "tools" / "one_file.py", "sngan.py", folder / "hw4_code.py")
    assert made.returncode == 0, made.stderr
    arguments = tiny_args(cache_dir, folder / "run", "--conditional", "--synthetic-classes", "4")
    trained = run_alone(folder, "hw4_code.py", *arguments)
    assert trained.returncode == 0, trained.stderr[-2000:]
    return folder


def test_the_one_file_trains_alone_and_writes_every_output(handed_in):
    assert sorted(path.name for path in handed_in.iterdir()) == ["hw4_code.py", "run"]
    run = handed_in / "run"
    for name in ("generator.pkl", "discriminator.pkl", "training_losses.png", "interpolation.png"):
        assert (run / name).stat().st_size > 0, name
    saved = json.loads((run / "config.json").read_text())
    assert (saved["variant"], saved["script"]) == ("SNGAN", "hw4_code")
    text = (handed_in / "hw4_code.py").read_text()
    # the script's docstring opens it, its method comes last, nothing imports the project
    assert text.startswith('"""SNGAN on the Oxford 102 Flowers')
    assert text.index("def hinge_loss") > text.index("def end_step")
    code = ast.walk(ast.parse(text))
    modules = {"machinery", "preprocess", "analysis"}
    assert not any(
        (isinstance(node, ast.Name) and node.id in modules)
        or (isinstance(node, ast.alias) and node.name in modules)
        or (isinstance(node, ast.ImportFrom) and node.module in modules)
        for node in code
    )


def test_the_one_file_samples_resumes_and_reproduces(handed_in):
    run = handed_in / "run"
    sampled = run_alone(
        handed_in, "hw4_code.py", "--sample", run / "generator.pkl", "--per-class", 2
    )
    assert sampled.returncode == 0, sampled.stderr
    assert len(list((run / "samples").glob("*/sample_*.png"))) == 4 * 2
    resumed = run_alone(handed_in, "hw4_code.py", "--out-dir", run, "--resume", "--epochs", 3)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run / "run_info.json").read_text())["epochs_done"] == 3
    reproduce = (
        "from hw4_code import generate_per_class\n"
        "images = generate_per_class('run/generator.pkl', per_class=3)\n"
        "print(len(images), sorted({batch.shape for batch in images.values()}))\n"
    )
    (handed_in / "hw4.py").write_text(reproduce)
    done = run_alone(handed_in, "hw4.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4 [(3, 32, 32, 3)]"


def test_a_name_two_modules_define_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    script = tmp_path / "mine.py"
    # a student's copy that defines a function machinery.py has too
    source = (ROOT / "gan_complete.py").read_text() + "\n\ndef end_step(run):\n    pass\n"
    script.write_text(source)
    assert one_file.main([str(script), str(tmp_path / "hw4_code.py")]) == 2
    err = capsys.readouterr().err
    assert "end_step is defined in machinery.py and in mine.py" in err and err.count("\n") == 1
    assert not (tmp_path / "hw4_code.py").exists()
