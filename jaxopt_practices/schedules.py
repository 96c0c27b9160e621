"""Practice 1 — learning-rate (and momentum) schedules with PyTorch's step convention.

Every schedule is an ``optax.Schedule``: ``schedule(count)`` with ``count`` the number of
updates already applied (0 for the first update). The value at ``count = t`` is the learning
rate PyTorch uses in its ``(t+1)``-th ``optimizer.step()`` when ``scheduler.step()`` is called
once after every ``optimizer.step()`` (i.e. PyTorch's ``last_epoch = t``).

``count`` may be a Python int (a negative one raises ``ValueError``) or an integer array,
traced or not, of any shape (negative entries clamp to 0); one compiled function serves every
count. All arithmetic that can grow with ``count`` is done in int32 without overflow up to
``2**31 - 1`` or in float32; cosine phases are evaluated as :math:`\\cos^2` / :math:`\\sin^2`
of the distance to the nearer end, so values close to ``eta_min`` keep float32 relative
accuracy. Results are float32 arrays shaped like ``count``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_practices import _validate
from jaxopt_practices._base import ScaleByLearningRateState as ScaleByLearningRateState
from jaxopt_practices._base import scale_by_learning_rate as scale_by_learning_rate
from jaxopt_practices._cyclic import cyclical as cyclical
from jaxopt_practices._cyclic import cyclical_momentum as cyclical_momentum
from jaxopt_practices._cyclic import one_cycle as one_cycle
from jaxopt_practices._cyclic import one_cycle_momentum as one_cycle_momentum
from jaxopt_practices._sched_math import F32, INT32_MAX, as_count, f32, gamma_power, half_cos

__all__ = [
    "constant", "step_decay", "multistep_decay", "exponential_decay", "polynomial_decay", "cosine_annealing",
    "cosine_warm_restarts", "cyclical", "cyclical_momentum", "one_cycle", "one_cycle_momentum", "warmup", "plot",
    "scale_by_learning_rate", "ScaleByLearningRateState",
]


def _check_gamma(gamma: float) -> None:
  _validate.check_number("gamma", gamma, low=0.0, high=1.0)


def constant(value: float) -> optax.Schedule:
  """A constant schedule ≙ ``torch ConstantLR(factor=1)``.

  Example:
    >>> from jaxopt_practices import schedules
    >>> print(schedules.constant(0.1)(5))
    0.1
  """
  _validate.check_number("value", value, low=0.0)
  return lambda count: jnp.full(jnp.shape(as_count(count)), value, F32)


def step_decay(init_value: float, step_size: int, gamma: float = 0.1) -> optax.Schedule:
  r"""Decays by ``gamma`` every ``step_size`` steps ≙ ``torch StepLR``.

  .. math:: \eta_t = \eta_0 \, \gamma^{\lfloor t / \text{step\_size} \rfloor}

  Args:
    init_value: :math:`\eta_0 \ge 0`.
    step_size: steps between decays, ``>= 1``.
    gamma: decay factor in [0, 1].

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.step_decay(1.0, step_size=10, gamma=0.5)
    >>> print(sched(9), sched(10), sched(25))
    1.0 0.5 0.25
  """
  _validate.check_number("init_value", init_value, low=0.0)
  _validate.check_int("step_size", step_size, low=1)
  _check_gamma(gamma)
  return lambda count: f32(init_value) * gamma_power(gamma, as_count(count) // step_size)


def multistep_decay(init_value: float, milestones: Sequence[int], gamma: float = 0.1) -> optax.Schedule:
  r"""Decays by ``gamma`` at each milestone ≙ ``torch MultiStepLR``.

  .. math:: \eta_t = \eta_0 \, \gamma^{\#\{m \in \text{milestones} : m \le t\}}

  Repeated milestones decay several times, as in PyTorch.

  Args:
    init_value: :math:`\eta_0 \ge 0`.
    milestones: positive integer steps (any order).
    gamma: decay factor in [0, 1].

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.multistep_decay(1.0, [2, 4], gamma=0.1)
    >>> print([round(float(sched(t)), 4) for t in range(6)])
    [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
  """
  _validate.check_number("init_value", init_value, low=0.0)
  if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence) or not milestones:
    raise ValueError(f"milestones must be a non-empty sequence of positive integers, got milestones = {milestones!r}.")
  for m in milestones:
    _validate.check_int("milestones", m, low=1, high=INT32_MAX)
  _check_gamma(gamma)
  marks = np.sort(np.asarray(milestones, np.int32))

  def schedule(count):
    t = as_count(count)
    n = jnp.sum(t[..., None] >= jnp.asarray(marks).reshape((1,) * t.ndim + marks.shape), axis=-1)
    return f32(init_value) * gamma_power(gamma, n)

  return schedule


def exponential_decay(init_value: float, gamma: float) -> optax.Schedule:
  r"""Multiplies by ``gamma`` every step ≙ ``torch ExponentialLR``.

  .. math:: \eta_t = \eta_0 \, \gamma^t

  Args:
    init_value: :math:`\eta_0 \ge 0`.
    gamma: decay factor in [0, 1] (computed as :math:`\exp(t \log\gamma)`).

  Example:
    >>> from jaxopt_practices import schedules
    >>> print(schedules.exponential_decay(1.0, 0.5)(3))
    0.125
  """
  _validate.check_number("init_value", init_value, low=0.0)
  _check_gamma(gamma)
  return lambda count: f32(init_value) * gamma_power(gamma, as_count(count))


def polynomial_decay(init_value: float, total_steps: int, power: float = 1.0) -> optax.Schedule:
  r"""Polynomial decay to 0 over ``total_steps`` ≙ ``torch PolynomialLR`` (held at 0 after).

  .. math:: \eta_t = \eta_0 \, (1 - \min(t, T)/T)^{p}

  Args:
    init_value: :math:`\eta_0 \ge 0`.
    total_steps: :math:`T \ge 1`, PyTorch's ``total_iters``.
    power: :math:`p \ge 0`.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.polynomial_decay(1.0, total_steps=4, power=2.0)
    >>> print(sched(2), sched(10))
    0.25 0.0
  """
  _validate.check_number("init_value", init_value, low=0.0)
  _validate.check_int("total_steps", total_steps, low=1, high=INT32_MAX)
  _validate.check_number("power", power, low=0.0)

  def schedule(count):
    left = (total_steps - jnp.minimum(as_count(count), total_steps)).astype(F32)
    # Barriers keep XLA from turning the division into a multiplication by 1/T, or init * (left / T)
    # into (init * left) / T, under jit: the value is the same in and out of jit, and exact at 0.
    frac = left / jax.lax.optimization_barrier(F32(total_steps))
    ratio = frac ** int(power) if float(power).is_integer() else jnp.power(frac, F32(power))
    return f32(init_value) * jax.lax.optimization_barrier(ratio)

  return schedule


def cosine_annealing(init_value: float, t_max: int, eta_min: float = 0.0) -> optax.Schedule:
  r"""Cosine annealing ≙ ``torch CosineAnnealingLR`` for :math:`t \le T`, held at ``eta_min`` after.

  .. math:: \eta_t = \eta_{\min} + (\eta_0 - \eta_{\min}) \tfrac{1}{2}(1 + \cos(\pi \min(t, T)/T))

  PyTorch keeps following the cosine back up after ``T_max``; we hold ``eta_min`` (use
  :func:`cosine_warm_restarts` for restarts).

  Args:
    init_value: :math:`\eta_0 \ge 0`.
    t_max: :math:`T \ge 1`.
    eta_min: floor :math:`\eta_{\min} \ge 0`.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.cosine_annealing(1.0, t_max=4)
    >>> print([round(float(sched(t)), 4) for t in range(6)])
    [1.0, 0.8536, 0.5, 0.1464, 0.0, 0.0]
  """
  _validate.check_number("init_value", init_value, low=0.0)
  _validate.check_int("t_max", t_max, low=1, high=INT32_MAX)
  _validate.check_number("eta_min", eta_min, low=0.0)

  def schedule(count):
    k = jnp.minimum(as_count(count), t_max)
    return f32(eta_min) + F32(init_value - eta_min) * half_cos(k, t_max - k, t_max)

  return schedule


def cosine_warm_restarts(init_value: float, t_0: int, t_mult: int = 1, eta_min: float = 0.0) -> optax.Schedule:
  r"""SGDR: cosine annealing with warm restarts ≙ ``torch CosineAnnealingWarmRestarts``.

  Cycle :math:`i` lasts :math:`T_i = T_0 m^i` steps; with :math:`t_{cur}` the steps since
  the last restart,

  .. math:: \eta_t = \eta_{\min} + (\eta_0 - \eta_{\min}) \tfrac{1}{2}(1 + \cos(\pi t_{cur}/T_i)).

  Restarts are unbounded; the cycle boundaries are precomputed in Python integers, so
  nothing overflows up to ``count = 2**31 - 1``.

  Args:
    init_value: :math:`\eta_0 \ge 0` (the value right after each restart).
    t_0: :math:`T_0 \ge 1`, length of the first cycle.
    t_mult: integer :math:`m \ge 1`, growth of the cycle length.
    eta_min: :math:`\eta_{\min} \ge 0`.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.cosine_warm_restarts(1.0, t_0=2, t_mult=2)
    >>> print([round(float(sched(t)), 4) for t in range(7)])
    [1.0, 0.5, 1.0, 0.8536, 0.5, 0.1464, 1.0]

  References:
    Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts, 2017.
  """
  _validate.check_number("init_value", init_value, low=0.0)
  _validate.check_int("t_0", t_0, low=1, high=INT32_MAX)
  _validate.check_int("t_mult", t_mult, low=1)
  _validate.check_number("eta_min", eta_min, low=0.0)
  starts, lengths = [0], [t_0]
  if t_mult > 1:
    while starts[-1] + lengths[-1] <= INT32_MAX:
      starts.append(starts[-1] + lengths[-1])
      lengths.append(lengths[-1] * t_mult)
  starts_arr = np.asarray(starts, np.int32)
  len_int = np.asarray([min(n, INT32_MAX) for n in lengths], np.int32)
  len_f32 = np.asarray([float(n) for n in lengths], np.float32)

  def schedule(count):
    t = as_count(count)
    if t_mult == 1:
      k, rem, n = t % t_0, t_0 - t % t_0, t_0
    else:
      bounds = jnp.asarray(starts_arr[1:]).reshape((1,) * t.ndim + (len(starts) - 1,))
      i = jnp.sum(t[..., None] >= bounds, axis=-1)
      k = t - jnp.asarray(starts_arr)[i]
      rem, n = jnp.asarray(len_int)[i] - k, jnp.asarray(len_f32)[i]
    return f32(eta_min) + F32(init_value - eta_min) * half_cos(k, rem, n)

  return schedule



def warmup(schedule: float | optax.Schedule, warmup_steps: int, start_value: float = 0.0) -> optax.Schedule:
  r"""Linear warmup from ``start_value`` to ``schedule(0)`` in front of any schedule or float.

  .. math:: \eta_t = v_0 + (s(0) - v_0)\, t / W \ (t < W), \qquad \eta_t = s(t - W) \ (t \ge W)

  Equivalent to ``torch SequentialLR([LinearLR, scheduler], milestones=[W])`` with LinearLR
  going from ``start_value`` to the base lr.

  Args:
    schedule: a float (constant after warmup) or an ``optax.Schedule``.
    warmup_steps: :math:`W \ge 0` (0: no warmup).
    start_value: :math:`v_0 \ge 0`.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.warmup(schedules.exponential_decay(1.0, 0.5), warmup_steps=2)
    >>> print([float(sched(t)) for t in range(5)])
    [0.0, 0.5, 1.0, 0.5, 0.25]
  """
  _validate.check_number("schedule", schedule, low=0.0, allow_schedule=True)
  _validate.check_int("warmup_steps", warmup_steps, low=0, high=INT32_MAX)
  _validate.check_number("start_value", start_value, low=0.0)
  inner = schedule if callable(schedule) else (lambda count: jnp.full(jnp.shape(count), schedule, F32))

  def sched(count):
    t = as_count(count)
    after = jnp.asarray(inner(jnp.maximum(t - warmup_steps, 0)), F32)
    if warmup_steps == 0:
      return after
    peak = jnp.asarray(inner(jnp.zeros_like(t)), F32)
    ramp = f32(start_value) + (peak - f32(start_value)) * (t.astype(F32) / F32(warmup_steps))
    return jnp.where(t < warmup_steps, ramp, after)

  return sched


def plot(schedule: optax.Schedule, num_steps: int, ax: Any = None, *, label: str | None = None) -> Any:
  """Plots ``schedule(t)`` for ``t = 0 .. num_steps - 1``; returns the matplotlib figure.

  Args:
    schedule: any ``optax.Schedule`` (evaluated with ``jax.vmap``).
    num_steps: number of steps to plot, ``>= 1``.
    ax: a matplotlib ``Axes`` to draw on (default: a new figure).
    label: the curve's legend label and, on a new figure, its title.

  Example:
    >>> from jaxopt_practices import schedules
    >>> fig = schedules.plot(schedules.cosine_annealing(0.1, 100), 120)
    >>> type(fig).__name__
    'Figure'
  """
  _validate.check_callable("schedule", schedule)
  _validate.check_int("num_steps", num_steps, low=1, high=INT32_MAX)
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  values = np.asarray(jax.vmap(schedule)(jnp.arange(num_steps, dtype=jnp.int32)))
  new = ax is None
  if new:
    fig, ax = plt.subplots(figsize=(5, 3))
  ax.plot(np.arange(num_steps), values, label=label)
  ax.set_xlabel("step (count)")
  ax.set_ylabel("value")
  if label is not None and new:
    ax.set_title(label)
  elif label is not None:
    ax.legend()
  return ax.figure
