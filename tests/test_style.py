"""Lines fit in 100 characters in every Python file of the project (STYLE.md point 10)."""

import subprocess

from conftest import ROOT

MAX_LINE = 100


def python_files(root=ROOT):
    """The project's Python files: those git tracks, so that a student's own file beside them
    (hw4_code.py, made by tools/one_file.py) is theirs to style."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "*.py"], cwd=root, capture_output=True, text=True
    )
    if listed.returncode:  # not a git checkout (an unpacked copy): every .py file below the root
        return sorted(path.relative_to(root) for path in root.rglob("*.py"))
    return sorted(map(type(root), listed.stdout.split()))


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


def test_a_students_own_file_beside_the_scripts_is_not_checked(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "sngan.py").write_text("x = 1\n")
    git("add", "sngan.py")
    (tmp_path / "hw4_code.py").write_text("x = '" + "a" * 120 + "'\n")  # not the project's
    assert [path.name for path in python_files(tmp_path)] == ["sngan.py"]
