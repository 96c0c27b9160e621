"""The helpers the benchmark scripts share: write their results JSON, rewrite their README block."""

from __future__ import annotations

import json
import pathlib
from typing import Any


def replace_block(path: pathlib.Path, name: str, block: str, heading: str = "") -> None:
  """Replaces the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``path``
  with ``block``; without the markers, appends them (under ``## heading`` when given)."""
  text = path.read_text() if path.exists() else "# Benchmarks\n"
  begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
  if begin in text and end in text:
    text = text[: text.index(begin) + len(begin)] + "\n" + block + "\n" + text[text.index(end):]
  else:
    text += (f"\n## {heading}\n" if heading else "") + f"\n{begin}\n{block}\n{end}\n"
  path.write_text(text)


def write_results(out: str | None, payload: Any, total_s: float) -> bool:
  """Writes ``payload`` as JSON to ``out`` (creating its folder) and says so; with ``out=None``
  (a smoke run) writes nothing. Returns whether it wrote, i.e. whether the README should follow."""
  if out is None:
    print(f"smoke run done ({total_s:.0f} s)")
    return False
  path = pathlib.Path(out)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(payload, indent=1) + "\n")
  print(f"wrote {path} ({total_s:.0f} s)")
  return True
