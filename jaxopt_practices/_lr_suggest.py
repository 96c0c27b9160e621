"""The LR range test's suggestions (fastai 2.4+), read from a recorded sweep with NumPy.

``lr_finder.lr_range_test`` records the sweep; this module reads ``valley``, ``minimum`` and
``steep`` off it, from fastai's trimmed window, and estimates the batch noise of the smoothed
loss that ``valley`` does not count as a descent.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MIN_WINDOW", "valley_index", "window", "smoothed_noise", "suggest"]

MIN_WINDOW = 5  # fewer points than this left after the trim: read the suggestions from the whole finite sweep
_MAD_TO_STD = 1.4826  # the std of a normal distribution is 1.4826 times its median absolute deviation


def valley_index(losses: np.ndarray, min_drop: float = 0.0) -> int:
  """fastai's ``valley``: the index 1/3 + 1/6 of the way along the longest decreasing subsequence.

  ``lds[i]`` is the length of the longest subsequence ending at ``i`` in which each point is
  more than ``min_drop`` (loss units) below the one before it (``min_drop = 0``: strictly decreasing, as
  fastai); the longest one ends at ``max_end`` and (as fastai counts it) starts at
  ``max_end - lds[max_end]``. fastai can return index -1 (the last lr) when the whole curve
  decreases from its first point; here that index is clamped to 0.
  """
  n = len(losses)
  lds = np.ones(n, np.int64)
  max_start = max_end = 0
  for i in range(1, n):
    lower = losses[i] < losses[:i] - min_drop
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


def smoothed_noise(losses: np.ndarray, window: tuple[int, int], smoothing: float) -> float:
  """The std of the batch noise left in the smoothed loss, estimated from the raw ``losses[start:stop]``.

  Batch to batch, the raw loss is a trend plus noise of std :math:`\\sigma`. Second differences
  cancel a linear trend and turn independent noise into a sequence of std :math:`\\sigma\\sqrt 6`;
  their median absolute deviation (times 1.4826) estimates that std robustly, ignoring the
  few points where the curve bends or spikes. An EMA with weight :math:`\\alpha` keeps
  :math:`\\sigma\\sqrt{\\alpha / (2 - \\alpha)}` of it. Fewer than 3 second differences: 0.
  """
  start, stop = window
  d2 = np.diff(np.asarray(losses[start:stop], np.float64), 2)
  d2 = d2[np.isfinite(d2)]
  if len(d2) < 3:
    return 0.0
  sigma = _MAD_TO_STD * float(np.median(np.abs(d2 - np.median(d2)))) / math.sqrt(6.0)
  return sigma * math.sqrt(smoothing / (2.0 - smoothing))


def suggest(lrs: np.ndarray, smoothed: np.ndarray, window: tuple[int, int],
            min_drop: float = 0.0) -> dict[str, float]:
  """The three suggestions, read from ``lrs[start:stop]`` / ``smoothed[start:stop]``.

  ``min_drop`` is the drop, in loss units, a point needs to extend a valley (``lr_range_test``'s
  ``valley_tolerance`` is in units of the smoothed loss's noise: ``min_drop = valley_tolerance * noise``).
  """
  start, stop = window
  lrs, smoothed = lrs[start:stop], smoothed[start:stop]
  steep = int(np.argmin(np.diff(smoothed))) if len(smoothed) >= 2 else 0
  return {
      "valley": float(lrs[valley_index(smoothed, min_drop)]),
      "minimum": float(lrs[int(np.argmin(smoothed))] / 10.0),
      "steep": float(lrs[steep]),
  }
