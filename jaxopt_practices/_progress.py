"""Progress bars that only a terminal sees (shared by ``lr_finder`` and the tour).

A bar redraws itself with carriage returns: in a terminal that is one line that moves; in a
notebook (stderr is the kernel's stream, not a terminal), a CI log or a file it is dozens of
stored lines of noise, and ``tqdm.auto``'s notebook widget warns when ``ipywidgets`` is missing.
So a bar is drawn only when it is asked for *and* ``sys.stderr.isatty()``; otherwise nothing is
imported and nothing is written. ``tqdm`` (plain, not ``tqdm.auto``) is imported only to draw one.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["bar", "shown"]


class _NoBar:
  """Stands in for a ``tqdm`` bar that is not drawn."""

  def __enter__(self) -> _NoBar:
    return self

  def __exit__(self, *exc: Any) -> None:
    return None

  def update(self, n: int = 1) -> None:
    del n

  def set_postfix(self, **kwargs: Any) -> None:
    del kwargs


def shown(progress: bool) -> bool:
  """Whether a bar asked for with ``progress`` is drawn: only when stderr is a terminal."""
  isatty = getattr(sys.stderr, "isatty", None)
  return bool(progress) and callable(isatty) and bool(isatty())


def bar(progress: bool, **kwargs: Any) -> Any:
  """A plain ``tqdm(**kwargs)`` on stderr when :func:`shown`, else a bar that draws nothing (no import)."""
  if not shown(progress):
    return _NoBar()
  from tqdm import tqdm  # noqa: PLC0415 - imported only to draw a bar

  return tqdm(file=sys.stderr, **kwargs)
