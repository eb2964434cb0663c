"""The training scripts share their common blocks word for word.

    python tools/shared_blocks.py          # list the blocks that drifted from gan_complete.py
    python tools/shared_blocks.py --sync   # copy gan_complete.py's shared blocks into the others

A block is a top-level statement: a function, a class, a constant, the imports, the main guard.
The method-specific ones (METHOD_SPECIFIC) may differ; every other block must be the same text,
in the same order, so that `diff dcgan.py gan_complete.py` shows only what the methods change.
Inside the Config, every field line but the method's own (METHOD_FIELDS) must be the same too.
tests/test_shared_blocks.py runs the check.
"""

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = "gan_complete.py"
SCRIPTS = [REFERENCE, "wgan_clip.py", "dcgan.py", "sngan.py"]
METHOD_SPECIFIC = {
    "__doc__",
    "VARIANT",
    "Config",
    "CRITIC_VIEW",
    "method_checks",
    "make_optimizers",
    "critic_norm",
    "InstanceNormFP32",
    "critic_layer",
    "PRESETS",
    "compute_gradient_penalty",
    "clip_weights",
    "discriminator_loss",
    "generator_loss",
    "critic_step",
    "generator_step",
}


# Config fields whose default or wording is the method's own; every other field line is shared.
METHOD_FIELDS = {
    "epochs",
    "batch_size",
    "lr_generator",
    "lr_discriminator",
    "lr_schedule",
    "betas",
    "n_critic",
    "lambda_gp",
    "clip_value",
    "loss",
    "real_label_smoothing",
    "gradient_clip",
    "feature_matching",
    "d_channels",
    "out_dir",
    "preset",
}


def config_fields(source):
    """{field name: its line} of the Config dataclass."""
    lines = blocks(source)["Config"][2].splitlines()
    return {match.group(1): line for line in lines if (match := re.match(r"    (\w+): ", line))}


def _name(node):
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return node.name
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return "imports"
    if (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    ):
        return "__doc__"
    if isinstance(node, ast.If):
        return "__main__"
    raise ValueError(f"unexpected top-level statement at line {node.lineno}")


def blocks(source):
    """{name: (first line, last line, text)} of the top-level blocks, in file order (1-based lines),
    each with the comment lines right above it, so that a drifted comment is found too."""
    lines = source.splitlines(keepends=True)
    found = {}
    for node in ast.parse(source).body:
        name = _name(node)
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        # the comment lines right above belong to it
        while start > 1 and lines[start - 2].startswith("#"):
            start -= 1
        if name in found:  # consecutive imports form one block
            start = found[name][0]
        found[name] = (start, node.end_lineno, "".join(lines[start - 1 : node.end_lineno]))
    return found


def drift(reference_source, other_source):
    """Messages naming every shared block that differs, is missing, or is out of order."""
    reference, other = blocks(reference_source), blocks(other_source)
    problems = []
    for name, (_, _, text) in reference.items():
        if name in METHOD_SPECIFIC:
            continue
        if name not in other:
            problems.append(f"shared block '{name}' is missing")
        elif other[name][2] != text:
            problems.append(f"shared block '{name}' differs")
    for name in other:
        if name not in reference and name not in METHOD_SPECIFIC:
            problems.append(f"block '{name}' is neither shared nor listed in METHOD_SPECIFIC")
    if "Config" in reference and "Config" in other:
        reference_fields, other_fields = (
            config_fields(reference_source),
            config_fields(other_source),
        )
        for name, line in reference_fields.items():
            if name in METHOD_FIELDS:
                continue
            if name not in other_fields:
                problems.append(f"Config field '{name}' is missing")
            elif other_fields[name] != line:
                problems.append(f"Config field '{name}' differs")
    shared = [n for n in reference if n in other and n not in METHOD_SPECIFIC]
    if shared != [n for n in other if n in reference and n not in METHOD_SPECIFIC]:
        problems.append("shared blocks are in a different order")
    return problems


def gaps(source):
    """{name: the blank lines between the block before it and the block} of the top-level blocks."""
    lines = source.splitlines(keepends=True)
    found, last_end = {}, 0
    for name, (start, end, _) in blocks(source).items():
        found[name] = "".join(lines[last_end : start - 1])
        last_end = end
    return found


def sync(reference_source, other_source):
    """other_source rebuilt in the reference's order: every shared block in the reference's text,
    the method-specific blocks in the other's own text. A block that only the other has (its
    method's own) stays after the block it followed there."""
    reference, other = blocks(reference_source), blocks(other_source)
    reference_gaps, other_gaps = gaps(reference_source), gaps(other_source)
    followers, previous = {}, None  # the other's own blocks, by the shared block before them
    for name in other:
        if name in reference:
            previous = name
        else:
            followers.setdefault(previous, []).append(name)
    parts = []
    for name in [None, *reference]:
        if name in METHOD_SPECIFIC and name in other:
            parts += [reference_gaps[name], other[name][2]]
        elif name is not None and name not in METHOD_SPECIFIC:
            parts += [reference_gaps[name], reference[name][2]]
        for own in followers.get(name, []):
            parts += [other_gaps[own], other[own][2]]
    return "".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sync", action="store_true", help="rewrite the other scripts' shared blocks"
    )
    args = parser.parse_args(argv)
    reference = (ROOT / REFERENCE).read_text()
    failed = False
    for script in SCRIPTS[1:]:
        path = ROOT / script
        if args.sync:
            path.write_text(sync(reference, path.read_text()))
        for problem in drift(reference, path.read_text()):
            print(f"{script}: {problem}")
            failed = True
    if not failed:
        print(f"ok: {', '.join(SCRIPTS[1:])} share every common block with {REFERENCE}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
