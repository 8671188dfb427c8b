"""The notebooks run from top to bottom on the tiny model (as a user would run them).

``real_model.ipynb`` is written for a Hub model on Colab; here the tiny model is substituted
through its one variable (``JAXALIGN_NOTEBOOK_MODEL``). Each run happens in a temporary folder, so
the notebooks' outputs land in their run folders there, never in ``notebooks/``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _execute(path: Path, cwd: Path):
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def _text(cell) -> str:
    return "".join(out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
                   for out in cell.get("outputs", []))


def _has_image(cell) -> bool:
    return any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_with_inline_plots(path, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXALIGN_NOTEBOOK_MODEL", "tiny-random")
    before = sorted(p.name for p in NOTEBOOK_DIR.iterdir())
    notebook = _execute(path, tmp_path)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert "aligned L1" in "".join(_text(c) for c in code_cells)
    # every cell that draws a figure shows it inline as an image
    plot_cells = [c for c in code_cells if "_figure(" in c.source]
    assert plot_cells, "the notebook should draw figures"
    for cell in plot_cells:
        assert _has_image(cell), f"no inline image from cell:\n{cell.source}"
    # outputs go under the notebook's run folder, nothing into notebooks/
    assert sorted(p.name for p in NOTEBOOK_DIR.iterdir()) == before
    run_dirs = [p for p in (tmp_path / "runs").iterdir()]
    assert len(run_dirs) == 1 and (run_dirs[0] / "results.json").exists()
    assert not (tmp_path / "dims.png").exists()


def test_notebooks_exist_and_start_with_an_install_cell():
    names = {p.name for p in NOTEBOOKS}
    assert {"quickstart.ipynb", "real_model.ipynb"} <= names
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        first_code = next(c for c in notebook.cells if c.cell_type == "code")
        assert "REPO_URL" in first_code.source and "pip" in first_code.source


def test_library_never_switches_the_matplotlib_backend():
    sources = (Path(__file__).parent.parent / "jaxalign").rglob("*.py")
    offenders = [str(p) for p in sources if "matplotlib.use(" in p.read_text()
                 or "import matplotlib.pyplot" in p.read_text()]
    assert offenders == []
