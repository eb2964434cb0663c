"""Shared test helpers: tiny runs of the training scripts on a synthetic cache.

Nothing here downloads or reads ../shared: the data are drawn by preprocess.py's synthetic source.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the scripts are importable modules: `import gan_complete`
# The tests run alone on their machine: the runs they start in this process take every core, not
# the one fewer a run leaves free by default (machinery.set_cpu_threads), unless told otherwise.
os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))

SCRIPTS = ["gan_complete", "wgan_clip", "dcgan", "sngan"]


def tiny_args(cache_dir, out_dir, *extra):
    """Command-line arguments of a run that takes seconds on a CPU: 32 px, width 16, 2 epochs."""
    return [
        "--source",
        "synthetic",
        "--synthetic-images",
        "48",
        "--preprocess-workers",
        "1",
        "--cache-dir",
        str(cache_dir),
        "--out-dir",
        str(out_dir),
        "--img-size",
        "32",
        "--g-channels",
        "16",
        "--d-channels",
        "16",
        "--batch-size",
        "16",
        "--epochs",
        "2",
        "--latent-pool",
        "16",
        "--num-samples",
        "12",
        "--no-progress",
        *extra,
    ]


def run_cli(script, *args, timeout=300):
    """Run a script as a user does; returns the CompletedProcess (text output)."""
    return subprocess.run(
        [sys.executable, str(ROOT / f"{script}.py"), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
    )


def subprocess_env():
    # The same thread count in every process of a test: a run and its resumed half compare
    # bitwise, and another count changes the order of the sums in a CPU kernel.
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One preprocess cache for the whole session: each setting is built once, then reused."""
    return tmp_path_factory.mktemp("cache")
