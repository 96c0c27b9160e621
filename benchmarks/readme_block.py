"""The one helper the benchmark scripts share: rewrite their marked block of a README."""

from __future__ import annotations

import pathlib


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
