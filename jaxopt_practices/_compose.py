"""Schedules built from other schedules: ``warmup``, ``sequential``, ``swa_lr``, ``per_epoch``, ``multiply``.

Public through ``jaxopt_practices.schedules``; the conventions of that module hold here. Each
takes a float wherever it takes a schedule (a constant), evaluates every inner schedule at a
non-negative int32 count and selects with ``jnp.where``, so one compiled function serves
every count.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import optax

from jaxopt_practices import _validate
from jaxopt_practices._sched_math import as_count, as_schedule, fl, half_cos, real

__all__ = ["warmup", "sequential", "swa_lr", "per_epoch", "multiply"]


def warmup(schedule: float | optax.Schedule, warmup_steps: int, start_value: float = 0.0,
           shift: bool = True) -> optax.Schedule:
  r"""Linear warmup from ``start_value`` to ``schedule(0)`` in front of any schedule or float.

  .. math:: \eta_t = v_0 + (s(0) - v_0)\, t / W \ (t < W), \qquad
    \eta_t = s(t - W) \ (t \ge W,\ \texttt{shift}) \quad\text{or}\quad s(t) \ (t \ge W,\ \text{not } \texttt{shift})

  With ``shift=True`` the schedule starts after the warmup: ``torch SequentialLR([LinearLR,
  scheduler], milestones=[W])`` with LinearLR going from ``start_value`` to the base lr, and
  timm's ``warmup_prefix=True``. With ``shift=False`` the warmup replaces the schedule's first
  ``W`` steps and the schedule keeps its own clock: timm's default ``warmup_prefix=False``
  (``CosineLRScheduler(warmup_t=W, warmup_lr_init=start_value)``) and big_vision's warmup on
  an absolute (stair) schedule.

  Args:
    schedule: a float (constant after warmup) or an ``optax.Schedule``.
    warmup_steps: :math:`W \ge 0` (0: no warmup).
    start_value: :math:`v_0 \ge 0`.
    shift: whether the schedule starts at ``count = W`` (``True``) or at 0 (``False``).

  Returns:
    An ``optax.Schedule``: the warmup ramp, then ``schedule``.

  Raises:
    ValueError: for a negative ``schedule`` or ``start_value``, a ``warmup_steps`` that is not a
      step count ``>= 0``, or a ``shift`` that is not a bool.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.warmup(schedules.exponential_decay(1.0, 0.5), warmup_steps=2)
    >>> print([float(sched(t)) for t in range(5)])
    [0.0, 0.5, 1.0, 0.5, 0.25]
    >>> timm = schedules.warmup(schedules.exponential_decay(1.0, 0.5), warmup_steps=2, shift=False)
    >>> print([float(timm(t)) for t in range(5)])
    [0.0, 0.5, 0.25, 0.125, 0.0625]

  References:
    timm ``timm/scheduler/cosine_lr.py`` (``warmup_t``, ``warmup_lr_init``, ``warmup_prefix``).
  """
  _validate.check_number("schedule", schedule, low=0.0, allow_schedule=True)
  warmup_steps = _validate.check_steps("warmup_steps", warmup_steps)
  _validate.check_number("start_value", start_value, low=0.0)
  _validate.check_bool("shift", shift)
  inner = as_schedule(schedule)

  def sched(count):
    t = as_count(count)
    after = inner(jnp.maximum(t - warmup_steps, 0) if shift else t)
    if warmup_steps == 0:
      return after
    peak = inner(jnp.zeros_like(t))
    ramp = fl(start_value) + (peak - fl(start_value)) * (t.astype(real()) / fl(warmup_steps))
    return jnp.where(t < warmup_steps, ramp, after)

  return sched


def _check_sequence(name: str, value: object) -> None:
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
    raise ValueError(f"{name} must be a list, got {name} = {value!r}.")


def sequential(schedules: Sequence[float | optax.Schedule], milestones: Sequence[int]) -> optax.Schedule:
  r"""Schedules one after another ≙ ``torch SequentialLR`` and ``optax.join_schedules``.

  With milestones :math:`m_1 < \dots < m_{n-1}` (and :math:`m_0 = 0`), schedule :math:`i`
  runs from :math:`m_i` with its count restarted at 0:

  .. math:: \eta_t = s_i(t - m_i) \quad\text{for } m_i \le t < m_{i+1}

  PyTorch's ``SequentialLR(optimizer, [s_0, ..., s_{n-1}], milestones)`` stepped once per
  update gives the same values when each ``s_i`` is the matching schedule here with the
  optimizer's lr as its initial value (PyTorch restarts the scheduler at each milestone from
  the base lr, as we restart the count). ``optax.join_schedules(schedules, boundaries)`` is
  the same function.

  Args:
    schedules: ``n >= 1`` schedules (or floats, constants).
    milestones: ``n - 1`` strictly increasing step counts ``>= 1``.

  Returns:
    An ``optax.Schedule`` of the count.

  Raises:
    ValueError: if ``schedules`` or ``milestones`` is not a list, ``schedules`` is empty or holds
      a negative float, ``milestones`` has not ``len(schedules) - 1`` entries, or they are not
      strictly increasing counts ``>= 1``.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.sequential(
    ...     [schedules.constant(1.0, factor=0.5, total_steps=2), schedules.cosine_annealing(1.0, t_max=2)],
    ...     milestones=[3])
    >>> print([round(float(sched(t)), 4) for t in range(6)])
    [0.5, 0.5, 1.0, 1.0, 0.5, 0.0]
  """
  _check_sequence("schedules", schedules)
  _check_sequence("milestones", milestones)
  if not schedules:
    raise ValueError("schedules must hold at least one schedule, got schedules = [].")
  for s in schedules:
    _validate.check_number("schedules", s, low=0.0, allow_schedule=True)
  if len(milestones) != len(schedules) - 1:
    raise ValueError(f"milestones must hold one fewer entry than schedules ({len(schedules) - 1}), got "
                     f"{len(milestones)}: milestones = {milestones!r}.")
  marks = [_validate.check_steps("milestones", m, low=1) for m in milestones]
  if any(b <= a for a, b in zip(marks, marks[1:])):
    raise ValueError(f"milestones must be strictly increasing, got milestones = {milestones!r}.")
  inner = [as_schedule(s) for s in schedules]

  def schedule(count):
    t = as_count(count)
    out = jnp.broadcast_to(inner[0](t), t.shape)
    for start, s in zip(marks, inner[1:]):
      out = jnp.where(t >= start, s(jnp.maximum(t - start, 0)), out)
    return out

  return schedule


def swa_lr(schedule: float | optax.Schedule, swa_lr: float, start_step: int | None = None, anneal_steps: int = 10,
           anneal_strategy: str = "cos", *, swa_start: int | None = None) -> optax.Schedule:
  r"""``schedule`` until ``start_step``, then annealed to ``swa_lr`` and held ≙ ``torch SWALR``.

  With :math:`S` = ``start_step``, :math:`A` = ``max(anneal_steps, 1)`` and
  :math:`k = \min(t - S, A)`:

  .. math:: \eta_t = s(t) \ (t \le S), \qquad
    \eta_t = \eta_{swa} + (s(S) - \eta_{swa})\, w(k / A) \ (t > S)

  with :math:`w(x) = \tfrac{1}{2}(1 + \cos \pi x)` (``"cos"``) or :math:`1 - x`
  (``"linear"``): ``swa_lr`` is reached at :math:`t = S + A` and held. This is the
  ``torch.optim.swa_utils`` pattern, with ``scheduler`` ≙ ``schedule`` and
  ``SWALR(optimizer, swa_lr, anneal_epochs=A, anneal_strategy)``: stepping
  ``scheduler.step()`` after each update while ``count < S`` and ``swa_scheduler.step()``
  from then on. The docs' loop (``if i > swa_start: swa_scheduler.step() else:
  scheduler.step()``) is ``start_step = swa_start + 1``. ``anneal_steps = 0`` acts as 1,
  as SWALR's formula does (SWALR with ``anneal_epochs=0`` also overwrites the lr when it is
  constructed; that is not reproduced). Pair it with ``regularization.swa``.

  Args:
    schedule: the learning rate before SWA, a schedule or a float.
    swa_lr: :math:`\eta_{swa} \ge 0`.
    start_step: :math:`S \ge 0`, the update count where the annealing starts (as
      ``regularization.swa(start_step=)``).
    anneal_steps: steps of the annealing, ``>= 0``, PyTorch's ``anneal_epochs``.
    anneal_strategy: ``"cos"`` or ``"linear"``.
    swa_start: deprecated name of ``start_step`` (v0.3; warns, removed in the next release).

  Returns:
    An ``optax.Schedule`` of the count.

  Raises:
    ValueError: for a negative float ``schedule`` or ``swa_lr``, a ``swa_start`` /
      ``anneal_steps`` that is not a count ``>= 0``, or an unknown ``anneal_strategy``.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.swa_lr(1.0, swa_lr=0.5, start_step=2, anneal_steps=2, anneal_strategy="linear")
    >>> print([float(sched(t)) for t in range(6)])
    [1.0, 1.0, 1.0, 0.75, 0.5, 0.5]

  References:
    Izmailov et al, Averaging Weights Leads to Wider Optima and Better Generalization, 2018.
  """
  _validate.check_number("schedule", schedule, low=0.0, allow_schedule=True)
  _validate.check_number("swa_lr", swa_lr, low=0.0)
  first = _start_step(start_step, swa_start)
  anneal_steps = _validate.check_steps("anneal_steps", anneal_steps)
  _validate.check_choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
  inner, n = as_schedule(schedule), max(anneal_steps, 1)

  def sched(count):
    t = as_count(count)
    start = inner(jnp.full_like(t, first))
    k = jnp.clip(t - first, 0, n)
    weight = half_cos(k, n - k, n) if anneal_strategy == "cos" else (n - k).astype(real()) / fl(n)
    annealed = fl(swa_lr) + (start - fl(swa_lr)) * weight
    return jnp.where(t <= first, inner(t), annealed)

  return sched


def _start_step(start_step: Any, swa_start: Any) -> int:
  """``swa_lr``'s ``start_step``, or its deprecated name ``swa_start`` (checked, then a warning)."""
  if swa_start is None:
    if start_step is None:
      raise ValueError("swa_lr needs start_step, the update count where the annealing starts (an integer >= 0), "
                       "got start_step = None.")
    return _validate.check_steps("start_step", start_step)
  if start_step is not None:
    raise ValueError(f"swa_lr takes start_step (swa_start is its deprecated name), not both; got "
                     f"start_step = {start_step!r} and swa_start = {swa_start!r}.")
  value = _validate.check_steps("swa_start", swa_start)
  warnings.warn("schedules.swa_lr(swa_start=) is deprecated since v0.3 and will be removed in the next release: "
                "write swa_lr(..., start_step=), the name regularization.swa(start_step=) uses.",
                DeprecationWarning, stacklevel=3)
  return value


def per_epoch(schedule: float | optax.Schedule, steps_per_epoch: int) -> optax.Schedule:
  r"""``schedule`` stepped once per epoch: ``schedule(count // steps_per_epoch)``.

  .. math:: \eta_t = s(\lfloor t / E \rfloor)

  PyTorch's ``scheduler.step()`` called once per epoch (torchvision's reference scripts) and
  timm's ``t_in_epochs=True`` (its default): the lr is a staircase in updates, and ``schedule``'s
  step arguments (``t_max``, ``warmup_steps``, ``milestones``, ...) count epochs.

  Args:
    schedule: a schedule of the epoch (or a float).
    steps_per_epoch: :math:`E \ge 1` updates per epoch.

  Returns:
    An ``optax.Schedule`` of the update count.

  Raises:
    ValueError: for a negative ``schedule`` or a ``steps_per_epoch`` that is not a count ``>= 1``.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.per_epoch(schedules.step_decay(1.0, step_size=1, gamma=0.5), steps_per_epoch=2)
    >>> print([float(sched(t)) for t in range(5)])
    [1.0, 1.0, 0.5, 0.5, 0.25]
  """
  _validate.check_number("schedule", schedule, low=0.0, allow_schedule=True)
  steps_per_epoch = _validate.check_steps("steps_per_epoch", steps_per_epoch, low=1)
  inner = as_schedule(schedule)
  return lambda count: inner(as_count(count) // steps_per_epoch)


def multiply(*factors: float | optax.Schedule) -> optax.Schedule:
  r"""The pointwise product of schedules, floats and callables of the count.

  .. math:: \eta_t = \prod_i f_i(t)

  ≙ ``torch ChainedScheduler`` of multiplicative schedulers (``ConstantLR``, ``LinearLR``,
  ``ExponentialLR``, ``StepLR``, ...: each multiplies the lr by its factor), with one factor
  holding the base lr; big_vision's cooldown is a factor
  ``lambda t: jnp.minimum(1.0, (total_steps - t).astype(float) / cooldown_steps)`` (callables
  get the int32 count; ``astype(float)`` divides in float64 under x64, where int32 / int
  would round to float32).

  Args:
    *factors: at least one; each a float ``>= 0`` or a callable ``count -> value``
      (an ``optax.Schedule``), traceable with a traced count.

  Returns:
    An ``optax.Schedule``: the product of the factors at each count.

  Raises:
    ValueError: for no factor or a bad one.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.multiply(0.1, schedules.constant(1.0, factor=0.5, total_steps=2),
    ...                            schedules.exponential_decay(1.0, 0.5))
    >>> print([round(float(sched(t)), 4) for t in range(4)])
    [0.05, 0.025, 0.025, 0.0125]

  References:
    big_vision ``big_vision/utils.py`` (``create_learning_rate_schedule``, ``cooldown_steps``).
  """
  if not factors:
    raise ValueError("multiply needs at least one factor (a float or a schedule), got factors = ().")
  for f in factors:
    _validate.check_number("factors", f, low=0.0, allow_schedule=True)
  inner = [as_schedule(f) for f in factors]

  def schedule(count):
    t = as_count(count)
    out = inner[0](t)
    for f in inner[1:]:
      out = out * f(t)
    return jnp.broadcast_to(out, t.shape)

  return schedule
