"""The LR range test's suggestions (fastai 2.4+), read from a recorded sweep with NumPy.

``lr_finder.lr_range_test`` records the sweep; this module reads ``valley``, ``minimum`` and
``steep`` off it, from fastai's trimmed window.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_WINDOW", "valley_index", "window", "suggest"]

MIN_WINDOW = 5  # fewer points than this left after the trim: read the suggestions from the whole finite sweep


def valley_index(losses: np.ndarray) -> int:
  """fastai's ``valley``: the index 1/3 + 1/6 of the way along the longest decreasing subsequence.

  ``lds[i]`` is the length of the longest strictly decreasing subsequence ending at ``i``; the
  longest one ends at ``max_end`` and (as fastai counts it) starts at ``max_end - lds[max_end]``.
  fastai can return index -1 (the last lr) when the whole curve decreases from its first point;
  here that index is clamped to 0.
  """
  n = len(losses)
  lds = np.ones(n, np.int64)
  max_start = max_end = 0
  for i in range(1, n):
    lower = losses[i] < losses[:i]
    if lower.any():
      lds[i] = max(lds[i], int(lds[:i][lower].max()) + 1)
    if lds[max_end] < lds[i]:
      max_end, max_start = i, i - int(lds[i])
  sections = (max_end - max_start) / 3
  return min(max(max_start + int(sections) + int(sections / 2), 0), n - 1)


def window(smoothed: np.ndarray, num_steps: int, stopped: bool) -> tuple[int, int]:
  """fastai's trim ``[num_steps // 10 : -5]``, cut at the first non-finite loss; see ``lr_finder.lr_range_test``."""
  n = len(smoothed)
  finite = np.isfinite(smoothed)
  m = n if finite.all() else int(np.argmin(finite))  # the finite prefix
  start, stop = num_steps // 10, min(n - 5, m)
  if stop - start >= MIN_WINDOW:
    return start, stop
  return 0, max(1, m - 1 if stopped and m == n else m)  # too short: all of it but the point that diverged


def suggest(lrs: np.ndarray, smoothed: np.ndarray, window: tuple[int, int]) -> dict[str, float]:
  """The three suggestions, read from ``lrs[start:stop]`` / ``smoothed[start:stop]``."""
  start, stop = window
  lrs, smoothed = lrs[start:stop], smoothed[start:stop]
  steep = int(np.argmin(np.diff(smoothed))) if len(smoothed) >= 2 else 0
  return {
      "valley": float(lrs[valley_index(smoothed)]),
      "minimum": float(lrs[int(np.argmin(smoothed))] / 10.0),
      "steep": float(lrs[steep]),
  }
