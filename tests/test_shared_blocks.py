"""The blocks the four scripts still copy (the models, the entry points) stay the same text, and
the rest of each script is its method (tools/shared_blocks.py)."""

import difflib
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import shared_blocks  # noqa: E402

SCRIPTS = ["gan_complete.py", "wgan_clip.py", "dcgan.py", "sngan.py"]


def read(name):
    return (ROOT / name).read_text()


def test_the_scripts_copy_the_models_word_for_word():
    reference = read("gan_complete.py")
    for other in SCRIPTS[1:]:
        assert shared_blocks.drift(reference, read(other)) == [], (
            f"{other} drifted from gan_complete.py: run `python tools/shared_blocks.py --sync`"
        )


def test_an_edited_copy_fails_names_the_block_and_sync_repairs_it():
    reference = read("gan_complete.py")
    edited = read("dcgan.py").replace(
        "        self.embed = nn.Embedding(num_classes, config.z_dim) if num_classes else None",
        "        self.embed = nn.Embedding(num_classes, 2 * config.z_dim) if num_classes else None",
    )
    assert edited != read("dcgan.py")
    assert shared_blocks.drift(reference, edited) == ["copied block 'Generator' differs"]
    assert shared_blocks.sync(reference, edited) == read("dcgan.py")
    lines = read("sngan.py").splitlines(keepends=True)
    start, end, _ = shared_blocks.blocks(read("sngan.py"))["ClassBatchNorm"]
    without = "".join(lines[: start - 1] + lines[end:])
    assert "copied block 'ClassBatchNorm' is missing" in shared_blocks.drift(reference, without)


def test_two_scripts_differ_by_their_method_not_by_machinery():
    # what `diff gan_complete.py sngan.py` shows: the docstring, the Config's method fields, the
    # critic's layers, the losses and the loop's two updates; no plumbing, which is machinery's
    for other in SCRIPTS[1:]:
        changed = [
            line
            for line in difflib.unified_diff(
                read("gan_complete.py").splitlines(), read(other).splitlines(), n=0
            )
            if line[:1] in "+-" and not line.startswith(("+++", "---"))
        ]
        assert len(changed) < 260, (other, len(changed))
        assert len(read(other).splitlines()) < 450, other
