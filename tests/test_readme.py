"""Every ``python`` block of the README runs as written (the quickstart is a complete example)."""

from __future__ import annotations

import pathlib
import re

import jax
import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_readme_has_a_quickstart():
  assert BLOCKS, "README.md has no ```python block"
  assert "tx.init" in BLOCKS[0] and "tx.update" in BLOCKS[0]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, capsys):
  with jax.numpy_rank_promotion("allow"):  # users run the README with JAX's defaults, not conftest's
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {"__name__": "__readme__"})
  if index == 0:
    loss = float(re.search(r"final loss ([0-9.]+)", capsys.readouterr().out).group(1))
    assert loss < 0.05, f"the quickstart does not train: final loss {loss}"
