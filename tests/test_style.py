"""Lines fit in 100 characters in every Python file of the project (STYLE.md point 10)."""

import subprocess

from conftest import ROOT

MAX_LINE = 100


def python_files():
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if listed.returncode:  # not a git checkout (an unpacked copy): every .py file below the root
        return sorted(path.relative_to(ROOT) for path in ROOT.rglob("*.py"))
    return sorted(map(type(ROOT), listed.stdout.split()))


def test_every_line_fits_in_100_characters():
    files = python_files()
    assert any(path.name == "gan_complete.py" for path in files)
    long_lines = [
        f"{path}:{number}: {len(line)} characters"
        for path in files
        for number, line in enumerate((ROOT / path).read_text().splitlines(), 1)
        if len(line) > MAX_LINE
    ]
    assert not long_lines, "lines over 100 characters:\n" + "\n".join(long_lines[:20])
