"""Executes the practice 1 and 2 notebooks (schedules; plateau and LR range test) and fails on any cell error."""

from __future__ import annotations

import pathlib
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["01_schedules.ipynb", "02_plateau_and_lr_finder.ipynb"])
def test_notebook_runs(name, tmp_path):
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  first = nb.cells[0] if nb.cells[0].cell_type == "code" else nb.cells[1]
  assert "import jaxopt_practices" in first.source and "%pip install" in first.source
  client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                   resources={"metadata": {"path": str(tmp_path)}})
  start = time.perf_counter()
  client.execute()  # raises CellExecutionError on the first failing cell
  elapsed = time.perf_counter() - start
  assert elapsed < 240, f"{name} took {elapsed:.0f} s; keep notebooks well under 2 minutes"
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
  assert not errors
