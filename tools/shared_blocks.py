"""The models and the entry points the four training scripts still copy stay word for word the same.

    python tools/shared_blocks.py          # the copied blocks that drifted from gan_complete.py
    python tools/shared_blocks.py --sync   # copy gan_complete.py's blocks into the others

Everything that is no part of a method lives once, in machinery.py. What each script still holds
in the same text is what a student reads beside its method: the generator, the discriminator's
frame (its layers come from the method's critic_norm and critic_layer), and the three lines that
make the script a command and a reproduce function. A block is a top-level statement, with the
comment lines right above it. tests/test_shared_blocks.py runs the check.
"""

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = "gan_complete.py"
SCRIPTS = [REFERENCE, "wgan_clip.py", "dcgan.py", "sngan.py"]
COPIED = [
    "upsample",
    "ClassBatchNorm",
    "Generator",
    "Discriminator",
    "generate_per_class",
    "main",
    "__main__",
]


def _name(node):
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return node.name
    if isinstance(node, ast.If):
        return "__main__"
    return None


def blocks(source):
    """{name: (first line, last line, text)} of the named top-level blocks (functions, classes,
    the main guard), in file order (1-based lines), each with the comment lines right above it."""
    lines = source.splitlines(keepends=True)
    found = {}
    for node in ast.parse(source).body:
        name = _name(node)
        if name is None:
            continue
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        while start > 1 and lines[start - 2].startswith("#"):
            start -= 1
        found[name] = (start, node.end_lineno, "".join(lines[start - 1 : node.end_lineno]))
    return found


def drift(reference_source, other_source):
    """Messages naming every copied block that differs from the reference's or is missing."""
    reference, other = blocks(reference_source), blocks(other_source)
    problems = []
    for name in COPIED:
        if name not in other:
            problems.append(f"copied block '{name}' is missing")
        elif other[name][2] != reference[name][2]:
            problems.append(f"copied block '{name}' differs")
    return problems


def sync(reference_source, other_source):
    """other_source with each copied block replaced by the reference's text, in place."""
    reference = blocks(reference_source)
    lines = other_source.splitlines(keepends=True)
    # from the last block up, so that the line numbers of the blocks above stay right
    found = sorted(blocks(other_source).items(), key=lambda item: item[1][0], reverse=True)
    for name, (start, end, _) in found:
        if name in COPIED:
            lines[start - 1 : end] = [reference[name][2]]
    return "".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sync", action="store_true", help="rewrite the others' copied blocks")
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
        print(f"ok: {', '.join(SCRIPTS[1:])} copy {', '.join(COPIED)} from {REFERENCE} as it is")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
