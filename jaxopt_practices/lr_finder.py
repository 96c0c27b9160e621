"""Practice 2b — the learning-rate range test (Smith 2017; fastai's and torch-lr-finder's "LR finder").

Train for a few steps while the learning rate sweeps from tiny to huge, record the loss,
and read a good learning rate off the curve, as fastai does (2.4+): ``valley`` (the default;
fastai's rule, made robust to the batch noise of the smoothed loss),
``minimum`` (the lr of the lowest smoothed loss, / 10) and ``steep`` (the steepest descent),
all read from the trimmed sweep.
The sweep runs one compiled step with the learning rate as a traced input, so it compiles
once (twice if the last batch has a different shape); the caller's ``params`` are never
touched. An NNX model is swept the same way (``lr_range_test(loss_fn, model, ..., wrt=nnx.Param)``,
``loss_fn(model, batch)``), on a copy.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxopt_practices import _lr_suggest
from jaxopt_practices import _lr_sweep
from jaxopt_practices import _validate

__all__ = ["MIN_WINDOW", "SUGGESTIONS", "LRRangeTestResult", "lr_range_test"]


SUGGESTIONS = ("valley", "minimum", "steep")
MIN_WINDOW = _lr_suggest.MIN_WINDOW


@dataclasses.dataclass(frozen=True)
class LRRangeTestResult:
  """What an LR range test recorded, and the learning rates it suggests.

  Attributes:
    lrs: the learning rate of each step taken (float64 array, monotone).
    losses: the loss of each step's batch, computed before that step's update.
    smoothed_losses: their exponential moving average
      (``s_i = smoothing * loss_i + (1 - smoothing) * s_{i-1}``, ``s_0 = loss_0``).
    suggestion: ``suggestions[suggested_by]``.
    suggestions: ``{"valley": ..., "minimum": ..., "steep": ...}``, read from
      ``lrs[window[0]:window[1]]`` (see :func:`lr_range_test`).
    stopped_early: whether the sweep stopped on divergence or a non-finite loss.
    mode: the sweep's spacing, ``"exp"`` or ``"linear"``.
    suggested_by: the name of the suggestion in ``suggestion``.
    window: ``(start, stop)``, the trimmed sweep the suggestions are read from.
    noise: the estimated std of the batch noise in ``smoothed_losses`` over the window
      (see :func:`lr_range_test`); ``valley`` ignores drops smaller than ``valley_tolerance * noise``.
  """

  lrs: np.ndarray
  losses: np.ndarray
  smoothed_losses: np.ndarray
  suggestion: float
  suggestions: dict[str, float]
  stopped_early: bool
  mode: str = "exp"
  suggested_by: str = "valley"
  window: tuple[int, int] = (0, 0)
  noise: float = 0.0

  def plot(self, ax: Any = None) -> Any:
    """Plots the raw and smoothed losses against the lr, shades the trimmed sweep and marks the three
    suggestions (legend outside the axes, on the right); returns the figure."""
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    if ax is None:
      _, ax = plt.subplots(figsize=(7.5, 3.5))
    ax.plot(self.lrs, self.losses, color="0.75", lw=1, label="loss")
    ax.plot(self.lrs, self.smoothed_losses, color="C0", label="smoothed loss")
    start, stop = self.window
    if stop > start:
      ax.axvspan(self.lrs[start], self.lrs[stop - 1], color="C0", alpha=0.08, lw=0, label="trimmed sweep")
    x = np.log(self.lrs) if self.mode == "exp" else self.lrs
    for (name, lr), (color, marker) in zip(self.suggestions.items(), [("C3", "o"), ("C2", "v"), ("C1", "s")]):
      y = np.interp(math.log(lr) if self.mode == "exp" else lr, x, self.smoothed_losses)
      used = " (suggestion)" if name == self.suggested_by else ""
      ax.axvline(lr, color=color, ls="--", lw=0.8)
      ax.plot([lr], [y], marker, color=color, ms=7, label=f"{_LABELS[name]}: {lr:.2e}{used}")
    if self.mode == "exp":
      ax.set_xscale("log")
    finite = self.smoothed_losses[np.isfinite(self.smoothed_losses)]
    if finite.size:
      top = min(finite.max(), finite[0] + 2.0 * abs(finite[0]) + 1e-12)
      ax.set_ylim(finite.min() - 0.05 * abs(top - finite.min()), top)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    ax.figure.tight_layout()
    return ax.figure

  def valley(self, valley_tolerance: float) -> float:
    """``valley`` re-read from this sweep with another ``valley_tolerance`` (0: fastai's rule), no new sweep."""
    _validate.check_number("valley_tolerance", valley_tolerance, low=0.0)
    drop = valley_tolerance * self.noise  # valley_tolerance counts noise stds; min_drop is in loss units
    return _lr_suggest.suggest(self.lrs, self.smoothed_losses, self.window, min_drop=drop)["valley"]


_LABELS = {"valley": "valley", "minimum": "minimum/10", "steep": "steep"}


def lr_range_test(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    batches: Iterable[Any],
    make_optimizer: Callable[[Any], optax.GradientTransformation],
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    mode: str = "exp",
    smoothing: float = 0.05,
    diverge_threshold: float = 5.0,
    progress: bool = True,
    wrt: Any = None,
    suggestion: str = "valley",
    valley_tolerance: float = 1.0,
    rngs: nnx.Rngs | None = None,
) -> LRRangeTestResult:
  r"""Runs an LR range test: trains while sweeping the lr and records the loss.

  Step :math:`i = 0..N-1` uses

  .. math:: \eta_i = \eta_{start} (\eta_{end}/\eta_{start})^{i/(N-1)} \ (\text{exp})
    \quad\text{or}\quad \eta_{start} + (\eta_{end} - \eta_{start})\, i/(N-1) \ (\text{linear}),

  records :math:`\ell_i` = ``loss_fn(params_i, batch_i)`` (before that step's update) and its
  smoothed value :math:`s_i`, and stops after the first step where :math:`s_i` is not finite
  or :math:`s_i > s^* + (\text{diverge\_threshold} - 1)|s^*|` with :math:`s^*` the best
  smoothed loss so far (that is, :math:`s_i > \text{diverge\_threshold}\cdot s^*` for positive
  losses).

  The suggestions follow fastai (2.4+) and are all read from the trimmed sweep
  ``lrs[start:stop]``: ``start = num_steps // 10`` (the smoothed loss is still settling over
  batches of different difficulty) and ``stop`` drops the last 5 recorded points (where the
  loss already blows up) and everything from the first non-finite loss on. A sweep too short
  or stopped too early to leave :data:`MIN_WINDOW` points after that trim is read whole
  instead, without the point that ended it. In that window of :math:`s`:

  - ``"valley"`` (the default): fastai's valley, made robust to batch noise. Take the longest
    subsequence of :math:`s` in which each point is more than :math:`\delta` below the one
    before it, ending at index :math:`e` after :math:`L` points, and :math:`b = e - L`; the
    suggestion is the lr at :math:`b + \lfloor (e-b)/3 \rfloor + \lfloor (e-b)/6 \rfloor`,
    a little before the middle of that decreasing run. :math:`\delta` is ``valley_tolerance``
    times ``result.noise``, :math:`\hat\sigma_s = \hat\sigma \sqrt{\alpha / (2 - \alpha)}`,
    the std that the batch noise keeps in :math:`s` (:math:`\alpha` = ``smoothing``), with
    :math:`\hat\sigma` = 1.4826 MAD of the raw losses' second differences in the window
    :math:`/\sqrt 6`. fastai takes :math:`\delta = 0` (``valley_tolerance=0`` reproduces it
    exactly): then, on the flat start of a sweep, the smoothed loss wanders by a few
    :math:`\hat\sigma_s` and a decreasing subsequence threads through that noise, so the
    "valley" grows leftwards over lrs that do not train and its middle lands up to 16
    times too low (``benchmarks/README.md`` measures what that costs in test accuracy).
  - ``"minimum"``: the lr of the lowest :math:`s`, divided by 10.
  - ``"steep"``: :math:`\eta_i` for the most negative :math:`s_{i+1} - s_i` (the steepest
    descent, per step of the sweep: per unit of :math:`\log\eta` in ``"exp"`` mode).

  What holds by construction: ``valley`` and ``steep`` are learning rates of the trimmed sweep;
  ``10 * minimum`` is one too (the lr of its lowest smoothed loss), so
  ``lrs[start] / 10 <= minimum < 10 * minimum <= lrs[stop - 1]``. Nothing orders ``valley``
  against ``steep`` or ``10 * minimum`` in general (a loss that falls, spikes and falls again
  can put the longest decreasing run after the minimum); on the usual U-shaped curve
  ``valley <= 10 * minimum``.

  The step is compiled once for the whole sweep (the lr is a traced input and
  ``make_optimizer(lr)`` is called inside the compiled step, so the optimizer factory must
  accept a traced lr, as ``optax`` and this package's do). ``params`` are copied first and
  never modified. ``batches`` is consumed one batch per step; when it runs out it is cycled
  (re-iterated if it is a re-iterable such as a list, otherwise the batches already drawn
  from the iterator are replayed). To reuse one batch, pass ``[batch]``.

  Flax NNX: pass the model itself, ``lr_range_test(loss_fn, model, batches, make_optimizer,
  wrt=nnx.Param)`` with ``loss_fn(model, batch)``. The sweep runs on a copy (``nnx.split`` /
  ``nnx.merge`` inside the compiled step): only the ``wrt`` variables (default
  ``nnx.Param``) are swept; the others (``nnx.BatchStat``, RNG counters) are updated by the
  forward pass as in training, never by the optimizer, and the caller's model is never
  mutated (put it in the mode you train in, e.g. ``model.train()``, first). Dropout that owns
  its ``Rngs`` (``nnx.Dropout(rate, rngs=rngs)``) draws fresh masks every step. Call-time rngs,
  the Flax tutorial's ``model(x, rngs=rngs)``: pass them as ``rngs=rngs`` and write
  ``loss_fn(model, batch, rngs)``; a copy of them is split and merged with the model in each
  step (the caller's ``rngs`` is not advanced). A ``loss_fn`` that closes over an ``nnx.Rngs``
  instead raises a ``ValueError`` saying so (flax cannot let a compiled step mutate it).

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar`` loss, differentiable in ``params``
      (``loss_fn(model, batch)`` when ``params`` is an ``nnx.Module``).
    params: the starting parameters (any pytree of arrays), or an ``nnx.Module``.
    batches: an iterable or iterator of batches.
    make_optimizer: ``make_optimizer(lr) -> GradientTransformation``, e.g.
      ``lambda lr: momentum.sgd(lr, momentum=0.9)``.
    start_lr: first lr, ``> 0``.
    end_lr: last lr, ``> start_lr``.
    num_steps: :math:`N \ge 2`, the length of the full sweep.
    mode: ``"exp"`` (log-spaced) or ``"linear"``.
    smoothing: EMA weight of the newest loss, in (0, 1] (1: no smoothing).
    diverge_threshold: ``> 1``, see above.
    progress: show a plain ``tqdm`` progress bar on stderr, only when stderr is a terminal (in a
      notebook, a CI log or a file there is none: no bar noise; ``tqdm`` is not even imported).
    wrt: for an ``nnx.Module``, the filter of the swept variables (default ``nnx.Param``,
      as ``nnx.Optimizer(model, tx, wrt=nnx.Param)``); only with a Module.
    suggestion: which of :data:`SUGGESTIONS` (``"valley"``, ``"minimum"``, ``"steep"``)
      ``result.suggestion`` holds; ``result.suggestions`` holds all three.
    valley_tolerance: ``>= 0``, the drop, in units of the smoothed loss's noise std, that
      extends a valley (0: fastai's valley exactly).
    rngs: only with an ``nnx.Module``: an ``nnx.Rngs`` for call-time randomness, handed to
      ``loss_fn(model, batch, rngs)`` (a copy, advanced every step).

  Returns:
    An :class:`LRRangeTestResult`.

  Raises:
    ValueError: for a bad argument (naming it), a non-finite loss at the starting params, or a
      ``loss_fn`` that mutates an NNX object outside the model (an ``nnx.Rngs`` it closes over).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import lr_finder
    >>> loss_fn = lambda p, b: jnp.mean((b[0] @ p - b[1]) ** 2)
    >>> x = jnp.linspace(-1, 1, 32).reshape(16, 2); batch = (x, x @ jnp.array([1.0, -2.0]))
    >>> res = lr_finder.lr_range_test(loss_fn, jnp.zeros(2), [batch], optax.sgd,
    ...                               start_lr=1e-4, end_lr=10.0, num_steps=50, progress=False)
    >>> res.suggestion == res.suggestions["valley"]
    True
    >>> start, stop = res.window
    >>> bool(res.lrs[start] <= res.suggestion <= res.lrs[stop - 1])
    True

    On an NNX model (the model is left as it was):

    >>> from flax import nnx
    >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    >>> nnx_loss = lambda m, b: jnp.mean((m(b[0])[:, 0] - b[1]) ** 2)
    >>> res = lr_finder.lr_range_test(nnx_loss, model, [batch], optax.sgd, wrt=nnx.Param,
    ...                               start_lr=1e-4, end_lr=10.0, num_steps=50, progress=False)
    >>> bool(1e-4 <= res.suggestion <= 10.0)
    True

  References:
    Smith, Cyclical Learning Rates for Training Neural Networks, 2017;
    Howard & Gugger, fastai: A Layered API for Deep Learning, 2020.
  """
  _validate.check_choice("suggestion", suggestion, SUGGESTIONS)
  num_steps = _check_arguments(loss_fn, params, make_optimizer, start_lr, end_lr, num_steps, mode, smoothing,
                               diverge_threshold, progress, wrt, rngs)
  _validate.check_number("valley_tolerance", valley_tolerance, low=0.0)
  tx0 = make_optimizer(start_lr)
  if not (hasattr(tx0, "init") and hasattr(tx0, "update")):
    raise ValueError(f"make_optimizer(lr) must return an optax.GradientTransformation, got {tx0!r}.")
  stream = _lr_sweep.Cycle(batches)
  lrs = _lr_sweep.sweep_lrs(start_lr, end_lr, num_steps, mode)
  step, carry, swept = _lr_sweep.sweep_step(loss_fn, make_optimizer, params, wrt, rngs)
  losses, smoothed, stopped = _lr_sweep.sweep(step, carry, tx0.init(swept), stream, lrs, smoothing,
                                              diverge_threshold, progress)

  n = len(losses)
  lrs, losses_arr, smoothed_arr = lrs[:n], np.asarray(losses), np.asarray(smoothed)
  if not math.isfinite(smoothed_arr[0]):
    raise ValueError(f"the loss at the starting params is not finite ({losses[0]}); check loss_fn and params.")
  window = _lr_suggest.window(smoothed_arr, num_steps, stopped)
  noise = _lr_suggest.smoothed_noise(losses_arr, window, smoothing)
  suggestions = _lr_suggest.suggest(lrs, smoothed_arr, window, min_drop=valley_tolerance * noise)
  return LRRangeTestResult(lrs=lrs, losses=losses_arr, smoothed_losses=smoothed_arr,
                           suggestion=suggestions[suggestion], suggestions=suggestions,
                           stopped_early=stopped, mode=mode, suggested_by=suggestion, window=window,
                           noise=noise)


def _check_arguments(loss_fn: Any, params: Any, make_optimizer: Any, start_lr: Any, end_lr: Any, num_steps: Any,
                     mode: Any, smoothing: Any, diverge_threshold: Any, progress: Any, wrt: Any,
                     rngs: Any) -> int:
  """The argument checks of :func:`lr_range_test` (ValueError naming the argument); returns ``num_steps``."""
  _validate.check_callable("loss_fn", loss_fn)
  _validate.check_callable("make_optimizer", make_optimizer)
  _validate.check_number("start_lr", start_lr, low=0.0, low_open=True)
  _validate.check_number("end_lr", end_lr, low=float(start_lr), low_open=True)
  num_steps = _validate.check_steps("num_steps", num_steps, low=2)
  _validate.check_choice("mode", mode, ("exp", "linear"))
  _validate.check_number("smoothing", smoothing, low=0.0, high=1.0, low_open=True)
  _validate.check_number("diverge_threshold", diverge_threshold, low=1.0, low_open=True)
  _validate.check_bool("progress", progress)
  if isinstance(params, nnx.Module):
    leaves = jax.tree.leaves(nnx.state(params, nnx.Param if wrt is None else wrt))
    what = f"the model's wrt={'nnx.Param' if wrt is None else wrt!r} variables"
  elif wrt is not None or rngs is not None:
    if rngs is not None:
      raise ValueError(f"rngs is handed to loss_fn(model, batch, rngs) with an nnx.Module; params is a pytree, got "
                       f"rngs = {rngs!r}. A pytree loss takes its random keys in the batch.")
    raise ValueError(f"wrt selects the swept variables of an nnx.Module; params is a pytree, got wrt = {wrt!r}.")
  else:
    leaves, what = jax.tree.leaves(params), "params"
  if rngs is not None and not isinstance(rngs, nnx.Rngs):
    raise ValueError(f"rngs must be an nnx.Rngs (e.g. nnx.Rngs(dropout=0)) or None, got rngs = {rngs!r}.")
  if not leaves or not all(jnp.issubdtype(jnp.result_type(x), jnp.inexact) for x in leaves):
    raise ValueError(f"{what} must be a non-empty pytree of floating-point arrays.")
  return num_steps


