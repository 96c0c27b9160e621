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

_INT32_MAX = 2**31 - 1
_F32 = jnp.float32


def _count(count: Any) -> jax.Array:
  """``count`` as an int32 array: Python ints are checked, arrays clamped to ``[0, 2**31-1]``."""
  if isinstance(count, (int, np.integer)) and not isinstance(count, bool):
    if not 0 <= count <= _INT32_MAX:
      raise ValueError(f"count must be an integer in [0, 2**31 - 1], got count = {count}.")
    return jnp.asarray(count, jnp.int32)
  c = jnp.asarray(count)
  if jnp.issubdtype(c.dtype, jnp.floating):
    c = jnp.clip(jnp.floor(c), 0.0, 2147483520.0)  # the largest float32 below 2**31
  else:
    c = jnp.clip(c, 0, _INT32_MAX)
  return c.astype(jnp.int32)


def _f32(x: Any) -> jax.Array:
  return jnp.asarray(x, _F32)


def _half_cos(k: jax.Array, rem: jax.Array, n: Any) -> jax.Array:
  r""":math:`(1 + \cos(\pi k / n)) / 2` with ``rem = n - k``, accurate near both ends."""
  n = _f32(n)
  head = jnp.square(jnp.cos(_F32(math.pi / 2) * (k.astype(_F32) / n)))
  tail = jnp.square(jnp.sin(_F32(math.pi / 2) * (rem.astype(_F32) / n)))
  return jnp.where(k <= rem, head, tail)


def _check_gamma(gamma: float) -> None:
  _validate.check_number("gamma", gamma, low=0.0, high=1.0)


def _gamma_power(gamma: float, n: jax.Array) -> jax.Array:
  """``gamma ** n`` in float32, with ``log(gamma)`` in double precision; ``0 ** 0 = 1``."""
  n = n.astype(_F32)
  if gamma == 0.0:
    return jnp.where(n == 0, _F32(1.0), _F32(0.0))
  return jnp.exp(n * _F32(math.log(gamma)))


def constant(value: float) -> optax.Schedule:
  """A constant schedule ≙ ``torch ConstantLR(factor=1)``.

  Example:
    >>> from jaxopt_practices import schedules
    >>> print(schedules.constant(0.1)(5))
    0.1
  """
  _validate.check_number("value", value, low=0.0)
  return lambda count: jnp.full(jnp.shape(_count(count)), value, _F32)


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
  return lambda count: _f32(init_value) * _gamma_power(gamma, _count(count) // step_size)


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
    _validate.check_int("milestones", m, low=1, high=_INT32_MAX)
  _check_gamma(gamma)
  marks = np.sort(np.asarray(milestones, np.int32))

  def schedule(count):
    t = _count(count)
    n = jnp.sum(t[..., None] >= jnp.asarray(marks).reshape((1,) * t.ndim + marks.shape), axis=-1)
    return _f32(init_value) * _gamma_power(gamma, n)

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
  return lambda count: _f32(init_value) * _gamma_power(gamma, _count(count))


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
  _validate.check_int("total_steps", total_steps, low=1, high=_INT32_MAX)
  _validate.check_number("power", power, low=0.0)

  def schedule(count):
    left = (total_steps - jnp.minimum(_count(count), total_steps)).astype(_F32)
    return _f32(init_value) * jnp.power(left / _F32(total_steps), _F32(power))

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
  _validate.check_int("t_max", t_max, low=1, high=_INT32_MAX)
  _validate.check_number("eta_min", eta_min, low=0.0)

  def schedule(count):
    k = jnp.minimum(_count(count), t_max)
    return _f32(eta_min) + _F32(init_value - eta_min) * _half_cos(k, t_max - k, t_max)

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
  _validate.check_int("t_0", t_0, low=1, high=_INT32_MAX)
  _validate.check_int("t_mult", t_mult, low=1)
  _validate.check_number("eta_min", eta_min, low=0.0)
  starts, lengths = [0], [t_0]
  if t_mult > 1:
    while starts[-1] + lengths[-1] <= _INT32_MAX:
      starts.append(starts[-1] + lengths[-1])
      lengths.append(lengths[-1] * t_mult)
  starts_arr = np.asarray(starts, np.int32)
  len_int = np.asarray([min(n, _INT32_MAX) for n in lengths], np.int32)
  len_f32 = np.asarray([float(n) for n in lengths], np.float32)

  def schedule(count):
    t = _count(count)
    if t_mult == 1:
      k, rem, n = t % t_0, t_0 - t % t_0, t_0
    else:
      bounds = jnp.asarray(starts_arr[1:]).reshape((1,) * t.ndim + (len(starts) - 1,))
      i = jnp.sum(t[..., None] >= bounds, axis=-1)
      k = t - jnp.asarray(starts_arr)[i]
      rem, n = jnp.asarray(len_int)[i] - k, jnp.asarray(len_f32)[i]
    return _f32(eta_min) + _F32(init_value - eta_min) * _half_cos(k, rem, n)

  return schedule


def _check_cycle(step_size_up, step_size_down, mode, gamma):
  _validate.check_int("step_size_up", step_size_up, low=1, high=2**30 - 1)
  if step_size_down is not None:
    _validate.check_int("step_size_down", step_size_down, low=0, high=2**30 - 1)
  _validate.check_choice("mode", mode, ("triangular", "triangular2", "exp_range"))
  _validate.check_number("gamma", gamma, low=0.0, high=1.0, low_open=True)
  return step_size_up, step_size_up if step_size_down is None else step_size_down


def _cycle_position(count, up, down, mode, gamma):
  """CyclicLR's ``scale_factor`` (0 at the cycle start, 1 at the peak) and amplitude scale."""
  t = _count(count)
  total = up + down
  pos = t % total
  rising = pos.astype(_F32) / _F32(up)
  falling = (total - pos).astype(_F32) / _F32(max(down, 1))
  frac = jnp.where(pos <= up, rising, falling)
  if mode == "triangular":
    amp = jnp.ones_like(frac)
  elif mode == "triangular2":  # 1 / 2**(cycle - 1) with cycle = t // total + 1
    amp = jnp.exp2(-(t // total).astype(_F32))
  else:  # exp_range: gamma**t
    amp = _gamma_power(gamma, t)
  return frac, amp


def cyclical(
    base_lr: float,
    max_lr: float,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
) -> optax.Schedule:
  r"""Cyclical learning rate ≙ ``torch CyclicLR``'s learning rate.

  With :math:`u` / :math:`d` steps up / down, :math:`p = t \bmod (u + d)` and
  :math:`x = p/u` if :math:`p \le u` else :math:`(u + d - p)/d`:

  .. math:: \eta_t = \eta_{base} + (\eta_{max} - \eta_{base})\, x \, s_t

  with :math:`s_t = 1` (``"triangular"``), :math:`2^{-\lfloor t/(u+d) \rfloor}`
  (``"triangular2"``) or :math:`\gamma^t` (``"exp_range"``).

  Args:
    base_lr: lower bound, ``>= 0``.
    max_lr: upper bound, ``>= 0``.
    step_size_up: steps of the rising half, ``>= 1``.
    step_size_down: steps of the falling half, ``>= 0`` (``None``: same as up).
    mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
    gamma: ``exp_range``'s decay in (0, 1].

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.cyclical(0.0, 1.0, step_size_up=2, step_size_down=1)
    >>> print([float(sched(t)) for t in range(4)])
    [0.0, 0.5, 1.0, 0.0]

  References:
    Smith, Cyclical Learning Rates for Training Neural Networks, 2017.
  """
  _validate.check_number("base_lr", base_lr, low=0.0)
  _validate.check_number("max_lr", max_lr, low=0.0)
  up, down = _check_cycle(step_size_up, step_size_down, mode, gamma)

  def schedule(count):
    frac, amp = _cycle_position(count, up, down, mode, gamma)
    return _f32(base_lr) + _F32(max_lr - base_lr) * frac * amp

  return schedule


def cyclical_momentum(
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
) -> optax.Schedule:
  r"""CyclicLR's momentum cycling (``cycle_momentum=True``), inverse to :func:`cyclical`.

  .. math:: \mu_t = \mu_{max} - (\mu_{max} - \mu_{base})\, x \, s_t

  with :math:`x, s_t` as in :func:`cyclical` for the same step sizes, mode and gamma.
  Use as ``momentum=`` of ``momentum.sgd`` or ``b1=`` of ``adaptive.adam``.

  Args:
    base_momentum: momentum at the lr peak, in [0, 1).
    max_momentum: momentum at the cycle start, in [0, 1).
    step_size_up, step_size_down, mode, gamma: as in :func:`cyclical`.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.cyclical_momentum(0.8, 0.9, step_size_up=2)
    >>> print([round(float(sched(t)), 4) for t in range(4)])
    [0.9, 0.85, 0.8, 0.85]
  """
  _validate.check_number("base_momentum", base_momentum, low=0.0, high=1.0, high_open=True)
  _validate.check_number("max_momentum", max_momentum, low=0.0, high=1.0, high_open=True)
  up, down = _check_cycle(step_size_up, step_size_down, mode, gamma)

  def schedule(count):
    frac, amp = _cycle_position(count, up, down, mode, gamma)
    return _f32(max_momentum) - _F32(max_momentum - base_momentum) * frac * amp

  return schedule


def _one_cycle(total_steps, pct_start, anneal_strategy, three_phase, values):
  """OneCycleLR's phases; ``values`` are the ``len(phases) + 1`` knots (start, ends...)."""
  _validate.check_int("total_steps", total_steps, low=1, high=_INT32_MAX)
  _validate.check_number("pct_start", pct_start, low=0.0, high=1.0)
  _validate.check_choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
  _validate.check_bool("three_phase", three_phase)
  pct_start = float(pct_start)
  ends = [pct_start * total_steps - 1.0]
  if three_phase:
    ends.append(2.0 * pct_start * total_steps - 2.0)
  ends.append(float(total_steps - 1))
  starts = [0.0] + ends[:-1]

  def schedule(count):
    t = _count(count)
    out = jnp.zeros(t.shape, _F32)
    done = jnp.zeros(t.shape, bool)
    for i, (s, e) in enumerate(zip(starts, ends)):
      last = i == len(ends) - 1
      here = ~done if last else (~done & (t <= math.floor(e)))
      width = e - s
      if width > 0:
        pct = jnp.clip((t.astype(_F32) - _F32(s)) / _F32(width), 0.0, 1.0)
        e_int = math.floor(e)
        rem = ((e_int - t).astype(_F32) + _F32(e - e_int)) / _F32(width)
        rem = jnp.clip(rem, 0.0, 1.0)
      else:  # a phase of zero length (PyTorch divides by zero): its start value
        pct, rem = jnp.zeros(t.shape, _F32), jnp.ones(t.shape, _F32)
      start, end = values[i], values[i + 1]
      if anneal_strategy == "cos":
        weight = _half_cos(pct, rem, 1.0)  # weight of `start`
      else:
        weight = rem
      val = _f32(end) + _F32(start - end) * weight
      out = jnp.where(here, val, out)
      done = done | here
    return out

  return schedule


def one_cycle(
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> optax.Schedule:
  r"""The 1cycle policy ≙ ``torch OneCycleLR``'s learning rate (PyTorch's phase boundaries).

  From :math:`\eta_{init} = \eta_{max}/\text{div\_factor}` up to :math:`\eta_{max}` over steps
  :math:`[0, p T - 1]`, then down to :math:`\eta_{init}/\text{final\_div\_factor}` at step
  :math:`T - 1` (``three_phase``: back to :math:`\eta_{init}` at :math:`2pT - 2`, then down to
  the minimum). Each phase anneals with :math:`\text{pct} = (t - s)/(e - s)`:

  .. math:: \eta = \eta_{end} + (\eta_{start} - \eta_{end}) \tfrac{1}{2}(1 + \cos \pi\,\text{pct})
    \quad\text{or}\quad \eta_{start} + (\eta_{end} - \eta_{start})\,\text{pct}

  Differences from PyTorch: counts past ``total_steps - 1`` hold the final value (PyTorch
  raises after ``total_steps``); a zero-length first phase (``pct_start * total_steps == 1``,
  where PyTorch divides by zero) gives the phase's start value.

  Args:
    max_lr: peak learning rate, ``>= 0``.
    total_steps: :math:`T \ge 1`, the number of optimizer steps.
    pct_start: :math:`p \in [0, 1]`, fraction of the steps spent increasing.
    anneal_strategy: ``"cos"`` or ``"linear"``.
    div_factor: ``> 0``, :math:`\eta_{init} = \eta_{max}/\text{div\_factor}`.
    final_div_factor: ``> 0``, :math:`\eta_{min} = \eta_{init}/\text{final\_div\_factor}`.
    three_phase: use PyTorch's symmetric three-phase variant.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.one_cycle(1.0, total_steps=10, div_factor=10.0, final_div_factor=1.0)
    >>> print(round(float(sched(0)), 4), round(float(sched(2)), 4), round(float(sched(9)), 4))
    0.1 1.0 0.1

  References:
    Smith & Topin, Super-Convergence: Very Fast Training of Neural Networks Using Large Learning Rates, 2019.
  """
  _validate.check_number("max_lr", max_lr, low=0.0)
  _validate.check_number("div_factor", div_factor, low=0.0, low_open=True)
  _validate.check_number("final_div_factor", final_div_factor, low=0.0, low_open=True)
  initial = max_lr / div_factor
  minimum = initial / final_div_factor
  values = [initial, max_lr, initial, minimum] if three_phase else [initial, max_lr, minimum]
  return _one_cycle(total_steps, pct_start, anneal_strategy, three_phase, values)


def one_cycle_momentum(
    total_steps: int,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    three_phase: bool = False,
) -> optax.Schedule:
  r"""OneCycleLR's momentum cycling (``cycle_momentum=True``), inverse to :func:`one_cycle`.

  ``max_momentum`` → ``base_momentum`` while the lr rises, then back to ``max_momentum``
  (``three_phase``: back over the second phase, then held), over the same phases as
  :func:`one_cycle` with the same arguments. Use as ``momentum=`` of ``momentum.sgd`` or
  ``b1=`` of ``adaptive.adam``.

  Args:
    total_steps, pct_start, anneal_strategy, three_phase: as in :func:`one_cycle`.
    base_momentum: momentum at the lr peak, in [0, 1).
    max_momentum: momentum at the start and end, in [0, 1).

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.one_cycle_momentum(10, anneal_strategy="linear")
    >>> print(round(float(sched(0)), 4), round(float(sched(2)), 4), round(float(sched(9)), 4))
    0.95 0.85 0.95
  """
  _validate.check_number("base_momentum", base_momentum, low=0.0, high=1.0, high_open=True)
  _validate.check_number("max_momentum", max_momentum, low=0.0, high=1.0, high_open=True)
  if three_phase:
    values = [max_momentum, base_momentum, max_momentum, max_momentum]
  else:
    values = [max_momentum, base_momentum, max_momentum]
  return _one_cycle(total_steps, pct_start, anneal_strategy, three_phase, values)


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
  _validate.check_int("warmup_steps", warmup_steps, low=0, high=_INT32_MAX)
  _validate.check_number("start_value", start_value, low=0.0)
  inner = schedule if callable(schedule) else (lambda count: jnp.full(jnp.shape(count), schedule, _F32))

  def sched(count):
    t = _count(count)
    after = jnp.asarray(inner(jnp.maximum(t - warmup_steps, 0)), _F32)
    if warmup_steps == 0:
      return after
    peak = jnp.asarray(inner(jnp.zeros_like(t)), _F32)
    ramp = _f32(start_value) + (peak - _f32(start_value)) * (t.astype(_F32) / _F32(warmup_steps))
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
  _validate.check_int("num_steps", num_steps, low=1, high=_INT32_MAX)
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
