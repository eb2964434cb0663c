"""The training scripts share their common blocks word for word (tools/shared_blocks.py)."""

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import shared_blocks  # noqa: E402


def read(name):
    return (ROOT / name).read_text()


def test_the_three_scripts_share_their_common_blocks():
    reference = read("gan_complete.py")
    for other in ("wgan_clip.py", "dcgan.py", "sngan.py"):
        assert shared_blocks.drift(reference, read(other)) == [], (
            f"{other} drifted from gan_complete.py: run `python tools/shared_blocks.py --sync`"
        )


def test_the_scripts_really_share_most_of_their_text():
    # Guard against a METHOD_SPECIFIC list that grows until nothing is compared.
    blocks = shared_blocks.blocks(read("gan_complete.py"))
    shared = [name for name in blocks if name not in shared_blocks.METHOD_SPECIFIC]
    assert {
        "imports",
        "Generator",
        "Discriminator",
        "InMemoryLoader",
        "train_gan",
        "generate_per_class",
        "load_state_dict_safely",
        "main",
        "__main__",
    } <= set(shared)
    assert len(shared) >= 40


def test_an_edited_copy_fails_and_names_the_block(tmp_path):
    edited = read("dcgan.py").replace(
        "def check_finite(modules, step):", "def check_finite(modules, step=0):"
    )
    edited = edited.replace(
        "    return sum(p.numel() for p in module.parameters())",
        "    return sum(p.numel() for p in module.parameters() if p.requires_grad)",
    )
    problems = shared_blocks.drift(read("gan_complete.py"), edited)
    assert problems == [
        "shared block 'check_finite' differs",
        "shared block 'count_parameters' differs",
    ]


def test_a_drifted_comment_above_a_shared_block_fails_and_sync_restores_it():
    reference = read("gan_complete.py")
    comment = "# What a resumed run may change;"
    assert comment in read("dcgan.py")
    edited = read("dcgan.py").replace(comment, "# What a resumed run can change;")
    assert shared_blocks.drift(reference, edited) == ["shared block 'RESUME_MAY_CHANGE' differs"]
    assert shared_blocks.sync(reference, edited) == read("dcgan.py")


def test_a_missing_or_moved_block_fails():
    reference = read("gan_complete.py")
    blocks = shared_blocks.blocks(read("wgan_clip.py"))
    start, end, text = blocks["csv_text"]
    lines = read("wgan_clip.py").splitlines(keepends=True)
    without = "".join(lines[: start - 1] + lines[end:])
    assert "shared block 'csv_text' is missing" in shared_blocks.drift(reference, without)
    moved = without + "\n\n" + text
    assert shared_blocks.drift(reference, moved) == ["shared blocks are in a different order"]


def test_sync_repairs_an_edited_copy():
    reference = read("gan_complete.py")
    edited = read("wgan_clip.py").replace(
        "def check_finite(modules, step):", "def check_finite(modules, step=0):"
    )
    repaired = shared_blocks.sync(reference, edited)
    assert repaired == read("wgan_clip.py")
    assert shared_blocks.drift(reference, repaired) == []


def test_a_shared_config_field_that_drifts_fails():
    edited = read("dcgan.py").replace("    z_dim: int = 100  #", "    z_dim: int = 128  #")
    assert shared_blocks.drift(read("gan_complete.py"), edited) == ["Config field 'z_dim' differs"]
    # a method's own default may differ
    edited = read("dcgan.py").replace("    epochs: int = 60  #", "    epochs: int = 25  #")
    assert shared_blocks.drift(read("gan_complete.py"), edited) == []
