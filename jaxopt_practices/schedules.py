"""Practice 1 — learning-rate (and momentum) schedules with PyTorch's step convention.

Every schedule is an ``optax.Schedule``: ``schedule(count)`` with ``count`` the number of
updates already applied (0 for the first update). The value at ``count = t`` is the learning
rate PyTorch uses in its ``(t+1)``-th ``optimizer.step()`` when ``scheduler.step()`` is called
once after every ``optimizer.step()`` (i.e. PyTorch's ``last_epoch = t``).

``count`` may be a Python int (a negative one raises ``ValueError``) or an integer array,
traced or not, of any shape (negative entries clamp to 0); one compiled function serves every
count. Schedules compute and return float32, or float64 under ``jax_enable_x64`` (so a
float64 port follows torch float64 to round-off with a schedule too; float32 results are the
same either way). All arithmetic that can grow with ``count`` is done in int32 without
overflow up to ``2**31 - 1`` or in that float dtype; cosine phases are evaluated as
:math:`\\cos^2` / :math:`\\sin^2` of the distance to the nearer end, so values close to
``eta_min`` keep their relative accuracy. Results are arrays shaped like ``count``.

Step-count arguments (``step_size``, ``milestones``, ``total_steps``, ``t_max``, ``t_0``,
``warmup_steps``, ...) take integers or integral floats such as ``110.0`` (from epoch
arithmetic such as ``warmup_epochs * steps_per_epoch``); ``110.5`` raises ``ValueError``.
Schedules built from other schedules (``warmup``, ``sequential``, ``swa_lr``, ``per_epoch``,
``multiply``) take a float wherever they take a schedule. The decays take any ``gamma >= 0`` as
PyTorch does: above 1 the value grows, and ``gamma = 0`` gives 0 from the first decay on
(PyTorch's value too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_practices import _validate
from jaxopt_practices._base import ScaleByLearningRateState as ScaleByLearningRateState
from jaxopt_practices._base import scale_by_learning_rate as scale_by_learning_rate
from jaxopt_practices._compose import multiply as multiply
from jaxopt_practices._compose import per_epoch as per_epoch
from jaxopt_practices._compose import sequential as sequential
from jaxopt_practices._compose import swa_lr as swa_lr
from jaxopt_practices._compose import warmup as warmup
from jaxopt_practices._cosine import cosine_annealing as cosine_annealing
from jaxopt_practices._cosine import cosine_warm_restarts as cosine_warm_restarts
from jaxopt_practices._cyclic import cyclical as cyclical
from jaxopt_practices._cyclic import cyclical_momentum as cyclical_momentum
from jaxopt_practices._cyclic import one_cycle as one_cycle
from jaxopt_practices._cyclic import one_cycle_momentum as one_cycle_momentum
from jaxopt_practices._lambda import lambda_lr as lambda_lr
from jaxopt_practices._lambda import linear as linear
from jaxopt_practices._lambda import multiplicative as multiplicative
from jaxopt_practices._sched_math import as_count, fl, gamma_power, real

__all__ = [
    "constant", "step_decay", "multistep_decay", "exponential_decay", "polynomial_decay", "cosine_annealing",
    "cosine_warm_restarts", "cyclical", "cyclical_momentum", "one_cycle", "one_cycle_momentum", "warmup",
    "sequential", "inverse_sqrt", "swa_lr", "plot", "scale_by_learning_rate", "ScaleByLearningRateState",
    "per_epoch", "multiply", "linear", "lambda_lr", "multiplicative",
]


def _check_gamma(gamma: float) -> None:
  """Any finite ``gamma >= 0``, as PyTorch: above 1 the learning rate grows (beyond float32's range it is inf)."""
  _validate.check_number("gamma", gamma, low=0.0)


def constant(value: float, factor: float = 1.0, total_steps: int = 0) -> optax.Schedule:
  r"""``value * factor`` for the first ``total_steps`` steps, then ``value`` ≙ ``torch ConstantLR``.

  .. math:: \eta_t = \eta\,f \ (t < T), \qquad \eta_t = \eta \ (t \ge T)

  PyTorch's ``ConstantLR(optimizer, factor, total_iters)`` with ``value`` the optimizer's lr;
  its defaults are ``factor=1/3, total_iters=5``, ours ``1.0, 0`` (a plain constant).
  ``factor = 0`` is allowed (PyTorch divides by it at ``total_iters``).

  Args:
    value: :math:`\eta \ge 0`.
    factor: :math:`f \in [0, 1]`, as PyTorch.
    total_steps: :math:`T \ge 0`, PyTorch's ``total_iters``.

  Returns:
    An ``optax.Schedule`` of the count.

  Raises:
    ValueError: for a negative ``value``, a ``factor`` outside ``[0, 1]``, or a ``total_steps``
      that is not a count ``>= 0``.

  Example:
    >>> from jaxopt_practices import schedules
    >>> print(schedules.constant(0.1)(5))
    0.1
    >>> sched = schedules.constant(1.0, factor=0.5, total_steps=2)
    >>> print([float(sched(t)) for t in range(4)])
    [0.5, 0.5, 1.0, 1.0]
  """
  _validate.check_number("value", value, low=0.0)
  _validate.check_number("factor", factor, low=0.0, high=1.0)
  total_steps = _validate.check_steps("total_steps", total_steps)
  low = float(value) * float(factor)
  return lambda count: jnp.where(as_count(count) < total_steps, fl(low), fl(value))


def step_decay(init_value: float, step_size: int, gamma: float = 0.1) -> optax.Schedule:
  r"""Decays by ``gamma`` every ``step_size`` steps ≙ ``torch StepLR``.

  .. math:: \eta_t = \eta_0 \, \gamma^{\lfloor t / \text{step\_size} \rfloor}

  Args:
    init_value: :math:`\eta_0 \ge 0`.
    step_size: steps between decays, ``>= 1``.
    gamma: factor :math:`\gamma \ge 0` (``> 1`` grows, as PyTorch allows).

  Returns:
    An ``optax.Schedule`` of the count.

  Raises:
    ValueError: for a negative ``init_value`` or ``gamma``, or a ``step_size`` that is not a
      count ``>= 1``.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.step_decay(1.0, step_size=10, gamma=0.5)
    >>> print(sched(9), sched(10), sched(25))
    1.0 0.5 0.25
  """
  _validate.check_number("init_value", init_value, low=0.0)
  step_size = _validate.check_steps("step_size", step_size, low=1)
  _check_gamma(gamma)
  return lambda count: fl(init_value) * gamma_power(gamma, as_count(count) // step_size)


def multistep_decay(init_value: float, milestones: Sequence[int], gamma: float = 0.1) -> optax.Schedule:
  r"""Decays by ``gamma`` at each milestone ≙ ``torch MultiStepLR``.

  .. math:: \eta_t = \eta_0 \, \gamma^{\#\{m \in \text{milestones} : m \le t\}}

  Repeated milestones decay several times, as in PyTorch.

  Args:
    init_value: :math:`\eta_0 \ge 0`.
    milestones: positive integer steps (any order).
    gamma: factor :math:`\gamma \ge 0` (``> 1`` grows, as PyTorch allows).

  Returns:
    An ``optax.Schedule`` of the count.

  Raises:
    ValueError: for a negative ``init_value`` or ``gamma``, or ``milestones`` that are not a
      non-empty sequence of counts ``>= 1``.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.multistep_decay(1.0, [2, 4], gamma=0.1)
    >>> print([round(float(sched(t)), 4) for t in range(6)])
    [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
  """
  _validate.check_number("init_value", init_value, low=0.0)
  if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence) or not milestones:
    raise ValueError(f"milestones must be a non-empty sequence of positive integers, got milestones = {milestones!r}.")
  marks = np.sort(np.asarray([_validate.check_steps("milestones", m, low=1) for m in milestones], np.int32))
  _check_gamma(gamma)

  def schedule(count):
    t = as_count(count)
    n = jnp.sum(t[..., None] >= jnp.asarray(marks).reshape((1,) * t.ndim + marks.shape), axis=-1)
    return fl(init_value) * gamma_power(gamma, n)

  return schedule


def exponential_decay(init_value: float, gamma: float) -> optax.Schedule:
  r"""Multiplies by ``gamma`` every step ≙ ``torch ExponentialLR``.

  .. math:: \eta_t = \eta_0 \, \gamma^t

  Args:
    init_value: :math:`\eta_0 \ge 0`.
    gamma: factor :math:`\gamma \ge 0` (``> 1`` grows, as PyTorch allows), computed as
      :math:`\exp(t \log\gamma)` with the logarithm in double precision.

  Returns:
    An ``optax.Schedule`` of the count.

  Raises:
    ValueError: for a negative ``init_value`` or ``gamma``.

  Example:
    >>> from jaxopt_practices import schedules
    >>> print(schedules.exponential_decay(1.0, 0.5)(3))
    0.125
  """
  _validate.check_number("init_value", init_value, low=0.0)
  _check_gamma(gamma)
  return lambda count: fl(init_value) * gamma_power(gamma, as_count(count))


def polynomial_decay(init_value: float, total_steps: int, power: float = 1.0,
                     end_value: float = 0.0) -> optax.Schedule:
  r"""Polynomial decay to ``end_value`` over ``total_steps`` ≙ ``torch PolynomialLR`` (held after).

  .. math:: \eta_t = (\eta_0 - \eta_{end}) \, (1 - \min(t, T)/T)^{p} + \eta_{end}

  With ``end_value = 0`` this is PyTorch's ``PolynomialLR(total_iters=T, power=p)``; with
  ``end_value`` it is big_vision's ``decay_type="linear"`` / ``"polynomial"`` schedule with
  ``linear_end`` (or ``end``) :math:`= \eta_{end}` (put big_vision's warmup in front with
  ``schedules.warmup(..., warmup_steps)`` and ``T = total_steps - warmup_steps``).

  Args:
    init_value: :math:`\eta_0 \ge 0`.
    total_steps: :math:`T \ge 1`, PyTorch's ``total_iters``.
    power: :math:`p \ge 0`.
    end_value: :math:`\eta_{end} \ge 0`, the value from ``T`` on (above ``init_value``: a rise).

  Returns:
    An ``optax.Schedule``: the polynomial, then ``end_value``.

  Raises:
    ValueError: for a negative ``init_value``, ``power`` or ``end_value``, or a ``total_steps``
      that is not a count ``>= 1``.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.polynomial_decay(1.0, total_steps=4, power=2.0)
    >>> print(sched(2), sched(10))
    0.25 0.0
    >>> print(schedules.polynomial_decay(1.0, total_steps=4, end_value=0.2)(2))
    0.6

  References:
    big_vision ``big_vision/utils.py`` (``create_learning_rate_schedule``).
  """
  _validate.check_number("init_value", init_value, low=0.0)
  total_steps = _validate.check_steps("total_steps", total_steps, low=1)
  _validate.check_number("power", power, low=0.0)
  _validate.check_number("end_value", end_value, low=0.0)

  def schedule(count):
    left = (total_steps - jnp.minimum(as_count(count), total_steps)).astype(real())
    # Barriers keep XLA from turning the division into a multiplication by 1/T, or init * (left / T)
    # into (init * left) / T, under jit: the value is the same in and out of jit, and exact at 0.
    frac = left / jax.lax.optimization_barrier(fl(total_steps))
    ratio = frac ** int(power) if float(power).is_integer() else jnp.power(frac, fl(power))
    if end_value == 0.0:
      return fl(init_value) * jax.lax.optimization_barrier(ratio)
    return fl(end_value) + fl(init_value - end_value) * jax.lax.optimization_barrier(ratio)

  return schedule


def inverse_sqrt(peak_value: float, warmup_steps: int, timescale: int | None = None) -> optax.Schedule:
  r"""The Transformer / fairseq / lm1b "rsqrt" schedule: linear warmup, then inverse square root.

  .. math:: \eta_t = \eta_{peak}\, t / W \ (t < W), \qquad
    \eta_t = \eta_{peak} \sqrt{W / t} \ (t \ge W), \qquad
    \text{i.e. } \eta_t = \eta_{peak} \min(t / W, \sqrt{W / t})

  with ``t = count``, the number of updates already applied: the first update uses 0, the
  peak is reached at ``count = W`` and the value halves at ``count = 4W``. This is

  * fairseq's ``inverse_sqrt`` with ``warmup_init_lr = 0``, ``warmup_updates = W`` and
    ``lr = peak_value``: fairseq sets the lr from ``num_updates``, which is our ``count``;
  * the Transformer's ``lr = d_model**-0.5 * min(step**-0.5, step * W**-1.5)`` (Vaswani et
    al. 2017) with ``step = count`` and ``peak_value = (d_model * W)**-0.5``; a loop whose
    first update is ``step = 1`` uses ``lambda count: sched(count + 1)``;
  * Flax's lm1b ``create_learning_rate_schedule(peak_value, W)`` (``optax.join_schedules``
    of a linear warmup and ``rsqrt_schedule``), value for value.

  T5's ``rsqrt_decay`` has no ramp: :math:`1/\sqrt{\max(t, W)}`, constant before ``W`` and
  equal to this schedule with ``peak_value = W**-0.5`` from ``W`` on.

  With a ``timescale`` :math:`\tau`, the decay is big_vision's ``decay_type="rsqrt"``
  (``timescale`` :math:`= \tau`, ``warmup_steps`` :math:`= W`, ``lr`` :math:`= \eta_{peak}`):

  .. math:: \eta_t = \eta_{peak} / \sqrt{1 + (t - W)/\tau} \quad (t \ge W)

  which is the formula above for :math:`\tau = W` (the default, ``timescale=None``).

  Args:
    peak_value: :math:`\eta_{peak} \ge 0`, the value at ``count = W``.
    warmup_steps: :math:`W \ge 1` (``>= 0`` with a ``timescale``).
    timescale: :math:`\tau \ge 1` steps, or ``None`` for :math:`\tau = W`.

  Returns:
    An ``optax.Schedule``: the ramp, then the inverse square root.

  Raises:
    ValueError: for a negative ``peak_value``, or a ``warmup_steps`` or ``timescale`` that is
      not a step count in its range.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.inverse_sqrt(1.0, warmup_steps=4)
    >>> print([round(float(sched(t)), 4) for t in (0, 1, 4, 9, 16)])
    [0.0, 0.25, 1.0, 0.6667, 0.5]
    >>> big_vision = schedules.inverse_sqrt(1.0, warmup_steps=4, timescale=12)
    >>> print(round(float(big_vision(40)), 4))
    0.5

  References:
    Vaswani et al, Attention Is All You Need, 2017; Ott et al, fairseq: A Fast, Extensible
    Toolkit for Sequence Modeling, 2019; big_vision ``big_vision/utils.py``
    (``create_learning_rate_schedule``).
  """
  _validate.check_number("peak_value", peak_value, low=0.0)
  warmup_steps = _validate.check_steps("warmup_steps", warmup_steps, low=1 if timescale is None else 0)
  tau = None if timescale is None else _validate.check_steps("timescale", timescale, low=1)
  scale = float(peak_value) * math.sqrt(warmup_steps)  # in double precision

  def schedule(count):
    t = as_count(count)
    ramp = fl(peak_value) * (t.astype(real()) / fl(max(warmup_steps, 1)))
    if tau is None:
      decay = fl(scale) / jnp.sqrt(jnp.maximum(t, 1).astype(real()))
    else:
      decay = fl(peak_value) / jnp.sqrt(fl(1.0) + jnp.maximum(t - warmup_steps, 0).astype(real()) / fl(tau))
    return jnp.where(t < warmup_steps, ramp, decay)

  return schedule


def plot(schedule: optax.Schedule, num_steps: int, ax: Any = None, *, label: str | None = None) -> Any:
  """Plots ``schedule(t)`` for ``t = 0 .. num_steps - 1``; returns the matplotlib figure.

  Args:
    schedule: any ``optax.Schedule`` (evaluated with ``jax.vmap``).
    num_steps: number of steps to plot, ``>= 1``.
    ax: a matplotlib ``Axes`` to draw on (default: a new figure).
    label: the curve's legend label and, on a new figure, its title.

  Returns:
    The ``matplotlib.figure.Figure`` drawn on (``ax.figure`` when ``ax`` is given).

  Raises:
    ValueError: if ``schedule`` is not callable or ``num_steps`` is not a count ``>= 1``.

  Example:
    >>> from jaxopt_practices import schedules
    >>> fig = schedules.plot(schedules.cosine_annealing(0.1, 100), 120)
    >>> type(fig).__name__
    'Figure'
  """
  _validate.check_callable("schedule", schedule)
  num_steps = _validate.check_steps("num_steps", num_steps, low=1)
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
