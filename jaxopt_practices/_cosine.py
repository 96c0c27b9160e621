"""The cosine family of ``schedules``: CosineAnnealingLR and SGDR, with timm's ``CosineLRScheduler`` options.

Public through ``jaxopt_practices.schedules`` (``cosine_annealing``, ``cosine_warm_restarts``);
the conventions of that module hold here. timm's options are ``k_decay`` (the phase is
:math:`t^k / T^k`), ``cycle_decay`` (the peak of cycle :math:`i` is :math:`\\eta_0 d^i`),
``cycle_limit`` (``eta_min`` from that many cycles on) and a float ``t_mult`` (timm's
``cycle_mul``). Cycle boundaries are precomputed in Python (double precision), so nothing
overflows up to ``count = 2**31 - 1``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_practices import _validate
from jaxopt_practices._sched_math import INT32_MAX, as_count, cos_weight, fl, gamma_power, real

__all__ = ["cosine_annealing", "cosine_warm_restarts"]

_MAX_CYCLES = 2**20  # a t_mult so close to 1 that more cycles start below 2**31 is refused


def cosine_annealing(init_value: float, t_max: int, eta_min: float = 0.0, k_decay: float = 1.0) -> optax.Schedule:
  r"""Cosine annealing ≙ ``torch CosineAnnealingLR`` for :math:`t \le T`, held at ``eta_min`` after.

  .. math:: \eta_t = \eta_{\min} + (\eta_0 - \eta_{\min}) \tfrac{1}{2}(1 + \cos(\pi \min(t, T)^k/T^k))

  PyTorch keeps following the cosine back up after ``T_max``; we hold ``eta_min`` (use
  :func:`cosine_warm_restarts` for restarts). With ``k_decay`` this is timm's
  ``CosineLRScheduler(t_initial=T, lr_min=eta_min, k_decay=k)`` without warmup (its default
  ``cycle_limit=1`` holds ``lr_min`` after the cycle, as we do); add a warmup with
  ``schedules.warmup`` (``shift=False`` is timm's default ``warmup_prefix=False``).

  Args:
    init_value: :math:`\eta_0 \ge 0`.
    t_max: :math:`T \ge 1`.
    eta_min: floor :math:`\eta_{\min} \ge 0`.
    k_decay: timm's :math:`k > 0` (1: PyTorch's cosine; above 1 the lr stays high for longer).

  Returns:
    An ``optax.Schedule``: the cosine, then ``eta_min``.

  Raises:
    ValueError: for a negative ``init_value`` or ``eta_min``, a ``t_max`` that is not a count
      ``>= 1`` or a ``k_decay <= 0``.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.cosine_annealing(1.0, t_max=4)
    >>> print([round(float(sched(t)), 4) for t in range(6)])
    [1.0, 0.8536, 0.5, 0.1464, 0.0, 0.0]

  References:
    Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts, 2017; timm
    ``timm/scheduler/cosine_lr.py`` (``k_decay``: Zhang & Li, k-decay, 2020).
  """
  _validate.check_number("init_value", init_value, low=0.0)
  t_max = _validate.check_steps("t_max", t_max, low=1)
  _validate.check_number("eta_min", eta_min, low=0.0)
  _validate.check_number("k_decay", k_decay, low=0.0, low_open=True)
  k_decay = float(k_decay)

  def schedule(count):
    k = jnp.minimum(as_count(count), t_max)
    return fl(eta_min) + fl(init_value - eta_min) * cos_weight(k, t_max - k, t_max, k_decay)

  return schedule


def _check_t_mult(t_mult: float) -> float:
  try:
    _validate.check_number("t_mult", t_mult, low=1.0)
  except ValueError:
    raise ValueError(f"t_mult must be a cycle-length multiplier >= 1 (any float, timm's cycle_mul), "
                     f"got t_mult = {t_mult!r}.") from None
  return float(t_mult)


def _cycles(t_0: int, t_mult: float, limit: int | None) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
  r"""The cycles that start at or below ``2**31 - 1`` (at most ``limit``), from timm's formulas.

  Cycle :math:`i` starts at :math:`S_i = T_0 (m^i - 1)/(m - 1)` and lasts :math:`T_i = T_0 m^i`.
  Returns the integer bounds :math:`\lceil S_i \rceil` (Python ints, one more than there are
  cycles: the first count after the last one), :math:`\lceil S_i \rceil - S_i` for each bound,
  the lengths :math:`T_i` and the integer lengths between bounds (at most ``2**31 - 1``).
  """
  integral = t_mult == int(t_mult)

  def start(i: int) -> float:  # exact for an integer multiplier; timm's closed form otherwise
    return float(t_0 * (int(t_mult)**i - 1) // (int(t_mult) - 1)) if integral else t_0 * (t_mult**i - 1) / (t_mult - 1)

  starts = [0.0]
  while start(len(starts)) <= INT32_MAX and (limit is None or len(starts) < limit):
    if len(starts) >= _MAX_CYCLES:
      raise ValueError(f"t_mult = {t_mult!r} with t_0 = {t_0} starts more than 2**20 cycles below count 2**31; "
                       "use t_mult = 1, a larger t_mult or a cycle_limit.")
    starts.append(start(len(starts)))
  edges = starts + [start(len(starts))]
  bounds = [math.ceil(x) for x in edges]
  frac = np.asarray([b - x for b, x in zip(bounds, edges)], np.float64)
  lengths = np.asarray([t_0 * t_mult**i for i in range(len(starts))], np.float64)
  len_int = np.asarray([min(b1 - b0, INT32_MAX) for b0, b1 in zip(bounds, bounds[1:])], np.int32)
  return bounds, frac, lengths, len_int


def _phase(t: jax.Array, t_0: int, t_mult: float, limit: int | None, cycles: tuple | None):
  """``(i, k, rem, n)`` at int32 ``t``: cycle index (``limit`` past the last), steps into it, left, its length."""
  if cycles is None:  # t_mult = 1
    return t // t_0, t % t_0, t_0 - t % t_0, t_0
  bounds, frac, lengths, len_int = cycles
  i = jnp.searchsorted(jnp.asarray(bounds[1:-1], jnp.int32), t, side="right")
  if limit is not None and bounds[-1] <= INT32_MAX:
    i = jnp.where(t >= bounds[-1], limit, i)
  into = t - jnp.asarray(bounds[:-1], jnp.int32)[i]
  rem = jnp.asarray(len_int)[i] - into
  if t_mult != int(t_mult):  # fractional starts, as timm: t_cur = t - S_i
    into = into.astype(real()) + jnp.asarray(frac[:-1], real())[i]
    rem = rem.astype(real()) - jnp.asarray(frac[1:], real())[i]
  return i, into, rem, jnp.asarray(lengths, real())[i]


def cosine_warm_restarts(init_value: float, t_0: int, t_mult: float = 1, eta_min: float = 0.0, k_decay: float = 1.0,
                         cycle_decay: float = 1.0, cycle_limit: int | None = None) -> optax.Schedule:
  r"""SGDR: cosine annealing with warm restarts ≙ ``torch CosineAnnealingWarmRestarts`` / timm ``CosineLRScheduler``.

  Cycle :math:`i` starts at :math:`S_i = T_0 (m^i - 1)/(m - 1)` and lasts :math:`T_i = T_0
  m^i` steps (:math:`S_i = i T_0` for :math:`m = 1`); with :math:`t_{cur} = t - S_i`,

  .. math:: \eta_t = \eta_{\min} + (\eta_0 d^i - \eta_{\min}) \tfrac{1}{2}(1 + \cos(\pi t_{cur}^k/T_i^k))
    \ (i < L), \qquad \eta_t = \eta_{\min} \ (i \ge L).

  With :math:`k = d = 1`, :math:`L = \infty` and an integer :math:`m` this is PyTorch's
  ``CosineAnnealingWarmRestarts(T_0, T_mult, eta_min)``; in general it is timm's
  ``CosineLRScheduler(t_initial=T_0, lr_min=eta_min, cycle_mul=m, cycle_decay=d,
  cycle_limit=L, k_decay=k)`` without warmup (timm's default ``cycle_limit`` is 1, ours
  ``None``: unbounded restarts, as PyTorch). With a fractional :math:`m` the cycles start at
  fractional steps, as in timm.

  Args:
    init_value: :math:`\eta_0 \ge 0` (the value right after the first restart).
    t_0: :math:`T_0 \ge 1`, length of the first cycle.
    t_mult: multiplier :math:`m \ge 1` of the cycle length, any float (timm's ``cycle_mul``).
    eta_min: :math:`\eta_{\min} \ge 0`.
    k_decay: timm's :math:`k > 0`.
    cycle_decay: :math:`d \ge 0`, the peak of each new cycle is :math:`d` times the last one's.
    cycle_limit: :math:`L \ge 1` cycles, then ``eta_min`` for good; ``None``: no limit.

  Returns:
    An ``optax.Schedule``: the cosine cycles, then ``eta_min`` past ``cycle_limit``.

  Raises:
    ValueError: for a ``t_mult < 1`` (or one so close to 1 that over 2**20 cycles start below
      2**31), a ``cycle_limit`` or ``t_0`` below 1, or any other argument out of its range.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.cosine_warm_restarts(1.0, t_0=2, t_mult=2)
    >>> print([round(float(sched(t)), 4) for t in range(7)])
    [1.0, 0.5, 1.0, 0.8536, 0.5, 0.1464, 1.0]
    >>> timm = schedules.cosine_warm_restarts(1.0, t_0=2, cycle_decay=0.5, cycle_limit=2)
    >>> print([round(float(timm(t)), 4) for t in range(5)])
    [1.0, 0.5, 0.5, 0.25, 0.0]

  References:
    Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts, 2017; timm
    ``timm/scheduler/cosine_lr.py``.
  """
  _validate.check_number("init_value", init_value, low=0.0)
  t_0 = _validate.check_steps("t_0", t_0, low=1)
  t_mult = _check_t_mult(t_mult)
  _validate.check_number("eta_min", eta_min, low=0.0)
  _validate.check_number("k_decay", k_decay, low=0.0, low_open=True)
  _validate.check_number("cycle_decay", cycle_decay, low=0.0)
  limit = None if cycle_limit is None else _validate.check_steps("cycle_limit", cycle_limit, low=1)
  k_decay, cycle_decay = float(k_decay), float(cycle_decay)
  cycles = None if t_mult == 1.0 else _cycles(t_0, t_mult, limit)  # once, here (and refused here)

  def schedule(count):
    i, k, rem, n = _phase(as_count(count), t_0, t_mult, limit, cycles)
    if cycle_decay == 1.0:
      out = fl(eta_min) + fl(init_value - eta_min) * cos_weight(k, rem, n, k_decay)
    else:
      peak = fl(init_value) * gamma_power(cycle_decay, i)
      out = fl(eta_min) + (peak - fl(eta_min)) * cos_weight(k, rem, n, k_decay)
    return out if limit is None else jnp.where(i < limit, out, fl(eta_min))

  return schedule
