"""Executes every notebook top to bottom (as CI does) and fails on any cell error."""

from __future__ import annotations

import pathlib
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = ["01_schedules", "02_plateau_and_lr_finder", "03_initialization", "04_momentum", "05_adaptive",
            "06_clipping", "07_regularization", "08_full_recipe", "09_flax_nnx", "10_porting_from_pytorch",
            "11_porting_recipes"]


def test_one_notebook_per_practice_and_the_full_recipe():
  assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs(name, tmp_path):
  path = NOTEBOOKS / f"{name}.ipynb"
  if not path.exists():
    pytest.fail(f"{path.name} is missing")
  nb = nbformat.read(path, as_version=4)
  first = nb.cells[0]
  assert first.cell_type == "code", "the first cell installs the package in Colab"
  assert "import jaxopt_practices" in first.source and "%pip install" in first.source
  client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                   resources={"metadata": {"path": str(tmp_path)}})
  start = time.perf_counter()
  client.execute()  # raises CellExecutionError on the first failing cell
  elapsed = time.perf_counter() - start
  assert elapsed < 240, f"{name} took {elapsed:.0f} s; keep notebooks around a minute"
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
  assert not errors
