"""notebooks/quickstart.ipynb runs top to bottom on its SMALL setting (synthetic data, one epoch a
run), as a student's Jupyter or Colab runs it on the real one, and is kept without outputs."""

import re

import nbclient
import nbformat
import pytest

from conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def test_the_notebook_is_kept_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    # every code cell follows a sentence that says what it does
    kinds = [cell.cell_type for cell in notebook.cells]
    assert all(kinds[i - 1] == "markdown" for i, kind in enumerate(kinds) if kind == "code" and i)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jupyter_client's own
def test_the_quickstart_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("QUICKSTART_SMALL", "1")
    monkeypatch.setenv("QUICKSTART_WORK", str(tmp_path))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if one fails
    shown = [
        kind
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        for kind in output.get("data", {})
        if kind.startswith("image/")
    ]
    # pretrained samples, samples, losses, GIF, latent figure, interpolation, inversion and its
    # path, per-class grid, comparison
    assert len(shown) == 10 and "image/gif" in shown
    assert (tmp_path / "comparison" / "comparison.md").is_file()


def test_the_notebook_points_where_the_readme_does():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    text = "\n".join(cell.source for cell in notebook.cells)
    readme = (ROOT / "README.md").read_text()
    headings = {line.lstrip("#").strip() for line in readme.splitlines() if line.startswith("#")}
    cited = re.findall(r'README, "([^"]+)"', text)
    assert cited and set(cited) <= headings, set(cited) - headings
    # the flowers where the README puts them, so that one copy serves the scripts and the notebook
    assert "data/flowers102" in readme and 'ROOT / "data" / "flowers102"' in text
