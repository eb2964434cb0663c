"""One training script and the modules it imports, as one file that runs alone: the hand-in.

    python tools/one_file.py sngan.py hw4_code.py      # or your own edited copy of a script

A coursework asks for one code file with the model, the training, the sampling and the latent
figures. The scripts keep what is no part of their method in machinery.py, preprocess.py and
analysis.py; this writes those three, then the script, into one file, each module's names used
bare (`machinery.end_step(run)` becomes `end_step(run)`), the imports gathered at the top. The
script's docstring opens the file, so its --help is the script's. The result runs as the script
does (`python hw4_code.py --preset cpu`, `--sample`, `--resume`) and its generate_per_class is
the reproduce function. The modules' own command lines (preprocess.py's) are left out.
"""

import argparse
import ast
import io
import re
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the project's modules in the order they need each other, and what of each is its own command
# line, which a hand-in does not need
MODULES = {
    "preprocess": {"option", "Config", "_Parser", "build_parser", "main"},
    "analysis": set(),
    "machinery": set(),
}


MODULE_PREFIX = re.compile(r"(?<![\w.])(?:" + "|".join(MODULES) + r")\.(?=\w)")


class OneFileError(Exception):
    """The script cannot be made one file; the message says why."""


def top_level(source):
    """(the module's docstring or "", [(name or None, first line, last line, node)]) of its
    top-level statements, 1-based lines, decorators and the comments right above included."""
    tree = ast.parse(source)
    lines = source.splitlines()
    docstring = ast.get_docstring(tree, clean=False) or ""
    statements = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            name = node.name
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
        else:
            name = None
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        while start > 1 and lines[start - 2].startswith("#"):
            start -= 1
        statements.append((name, start, node.end_lineno, node))
    return docstring, statements


def is_project_import(node):
    names = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        names = [node.module or ""]
    return any(name in MODULES for name in names)


def bare_names(source):
    """source with every `machinery.X`, `preprocess.X`, `analysis.X` made `X`, as tokens: strings
    and comments that name a module stay as they are."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    edits = []  # (start, end, new text), as (row, column) positions of the source
    for i, token in enumerate(tokens[:-1]):
        before = tokens[i - 1].string if i else ""
        if token.type == tokenize.NAME and token.string in MODULES:
            if tokens[i + 1].string == "." and before != ".":
                edits.append((token.start, tokens[i + 1].end, ""))
        elif token.type == tokenize.STRING and is_f_string(token.string):
            # before Python 3.12 an f-string is one token: its {expressions} are rewritten as text
            rewritten = re.sub(
                r"\{[^{}]*\}", lambda field: MODULE_PREFIX.sub("", field[0]), token.string
            )
            if rewritten != token.string:
                edits.append((token.start, token.end, rewritten))
    offsets = [0]
    for line in source.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    for (row, column), (end_row, end_column), text in reversed(edits):
        first, last = offsets[row - 1] + column, offsets[end_row - 1] + end_column
        source = source[:first] + text + source[last:]
    return source


def is_f_string(literal):
    prefix = re.match(r"[a-zA-Z]*", literal)[0]
    return "f" in prefix.lower()


def part(name, source, leave_out=(), is_script=False):
    """(imports, body, defined names) of one module: its code without its docstring, its imports
    (gathered at the top of the file), the statements left out and, but for the script's, its main
    guard."""
    docstring, statements = top_level(source)
    lines = source.splitlines(keepends=True)
    imports, kept, defined = [], [], []
    for statement_name, start, end, node in statements:
        text = "".join(lines[start - 1 : end])
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if not is_project_import(node):
                imports.append(text.strip())
        elif isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and not is_script:
            continue
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        elif statement_name in leave_out:
            continue
        else:
            kept.append(text)
            if statement_name:
                defined.append(statement_name)
    summary = docstring.strip().splitlines()[0] if docstring.strip() else ""
    header = f"\n\n# {'-' * 30} {name}.py: {summary}\n"
    return imports, header + bare_names("\n\n".join(kept)), defined


def one_file(script_path):
    """The text of the one file for this script."""
    script_source = Path(script_path).read_text()
    docstring, _ = top_level(script_source)
    imports, bodies, owners = [], [], {}
    parts = [(name, (ROOT / f"{name}.py").read_text(), leave) for name, leave in MODULES.items()]
    parts.append((Path(script_path).stem, script_source, ()))
    for name, source, leave_out in parts:
        is_script = name == Path(script_path).stem
        module_imports, body, defined = part(name, source, leave_out, is_script)
        for defined_name in defined:
            if defined_name in owners and defined_name != "__all__":
                raise OneFileError(
                    f"{defined_name} is defined in {owners[defined_name]}.py and in {name}.py: "
                    "rename one of them"
                )
            owners[defined_name] = name
        imports += [line for line in module_imports if line not in imports]
        bodies.append(body)
    # `from __future__` first, then the rest as the modules had them
    imports.sort(key=lambda line: not line.startswith("from __future__"))
    note = (
        f"# One file made by tools/one_file.py from {Path(script_path).name} and the modules it "
        f"imports\n# ({', '.join(f'{name}.py' for name in MODULES)}): the method is the last part."
    )
    return f'"""{docstring}"""\n\n{note}\n\n' + "\n".join(imports) + "\n" + "".join(bodies)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("script", help="a training script, e.g. sngan.py or your edited copy")
    parser.add_argument("out", help="the one file to write, e.g. hw4_code.py")
    args = parser.parse_args(argv)
    if not Path(args.script).is_file():
        print(f"error: no script at {args.script}", file=sys.stderr)
        return 2
    if Path(args.out).resolve() in {(ROOT / f"{name}.py").resolve() for name in MODULES}:
        print(f"error: {args.out} would overwrite a module the file is made of", file=sys.stderr)
        return 2
    try:
        text = one_file(args.script)
    except (OneFileError, SyntaxError) as error:
        print(f"error: {args.script}: {error}", file=sys.stderr)
        return 2
    Path(args.out).write_text(text)
    lines = text.count("\n")
    print(f"wrote {args.out}: {lines:,} lines; run it as the script: python {args.out} --help")
    return 0


if __name__ == "__main__":
    sys.exit(main())
