"""The cyclical families of ``schedules``: CyclicLR and OneCycleLR, learning rate and momentum.

Public through ``jaxopt_practices.schedules`` (``cyclical``, ``cyclical_momentum``,
``one_cycle``, ``one_cycle_momentum``); the conventions of that module hold here. Each lr
schedule and its momentum variant share one phase computation (``_cycle_position``,
``_one_cycle``) and differ only in the values at the phase ends.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxopt_practices import _validate
from jaxopt_practices._sched_math import INT32_MAX, as_count, fl, gamma_power, half_cos, real

__all__ = ["cyclical", "cyclical_momentum", "one_cycle", "one_cycle_momentum"]


def _check_cycle(step_size_up: int, step_size_down: int | None, mode: str, gamma: float) -> tuple[int, int]:
  """Validates CyclicLR's cycle arguments; returns the (up, down) step counts."""
  up = _validate.check_steps("step_size_up", step_size_up, low=1, high=2**30 - 1)
  down = up if step_size_down is None else _validate.check_steps("step_size_down", step_size_down, high=2**30 - 1)
  _validate.check_choice("mode", mode, ("triangular", "triangular2", "exp_range"))
  _validate.check_number("gamma", gamma, low=0.0, high=1.0, low_open=True)
  return up, down


def _cycle_position(count: Any, up: int, down: int, mode: str, gamma: float) -> tuple[jax.Array, jax.Array]:
  """CyclicLR's ``scale_factor`` (0 at the cycle start, 1 at the peak) and amplitude scale."""
  t = as_count(count)
  total = up + down
  pos = t % total
  rising = pos.astype(real()) / fl(up)
  falling = (total - pos).astype(real()) / fl(max(down, 1))
  frac = jnp.where(pos <= up, rising, falling)
  if mode == "triangular":
    amp = jnp.ones_like(frac)
  elif mode == "triangular2":  # 1 / 2**(cycle - 1) with cycle = t // total + 1
    amp = jnp.exp2(-(t // total).astype(real()))
  else:  # exp_range: gamma**t
    amp = gamma_power(gamma, t)
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

  Returns:
    An ``optax.Schedule`` of the count.

  Raises:
    ValueError: for a negative ``base_lr`` or ``max_lr``, a ``step_size_up`` / ``step_size_down``
      that is not a count in range, an unknown ``mode``, or a ``gamma`` outside ``(0, 1]``.

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
    return fl(base_lr) + fl(max_lr - base_lr) * frac * amp

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

  Returns:
    An ``optax.Schedule`` of the count, for a ``momentum`` / ``b1`` argument.

  Raises:
    ValueError: for a momentum outside ``[0, 1)``, or cycle arguments :func:`cyclical` rejects.

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
    return fl(max_momentum) - fl(max_momentum - base_momentum) * frac * amp

  return schedule


def _total_steps(total_steps: int | None, epochs: int | None, steps_per_epoch: int | None) -> int:
  """OneCycleLR's length: ``total_steps``, or ``epochs * steps_per_epoch``; giving both must agree."""
  per_epoch = None
  if epochs is not None or steps_per_epoch is not None:
    if epochs is None or steps_per_epoch is None:
      raise ValueError("epochs and steps_per_epoch go together (total_steps = epochs * steps_per_epoch), got "
                       f"epochs = {epochs!r}, steps_per_epoch = {steps_per_epoch!r}.")
    per_epoch = (_validate.check_steps("epochs", epochs, low=1)
                 * _validate.check_steps("steps_per_epoch", steps_per_epoch, low=1))
  if total_steps is None:
    if per_epoch is None:
      raise ValueError("total_steps is required unless epochs and steps_per_epoch are given (as OneCycleLR), "
                       "got total_steps = None, epochs = None, steps_per_epoch = None.")
    if per_epoch > INT32_MAX:
      raise ValueError(f"total_steps = epochs * steps_per_epoch must be at most 2**31 - 1, got {per_epoch}.")
    return per_epoch
  total = _validate.check_steps("total_steps", total_steps, low=1)
  if per_epoch is not None and per_epoch != total:
    raise ValueError(f"total_steps = {total_steps!r} disagrees with epochs * steps_per_epoch = {per_epoch}; "
                     "give one or the other.")
  return total


def _one_cycle(total_steps: int, pct_start: float, anneal_strategy: str, three_phase: bool,
               values: list[float]) -> optax.Schedule:
  """OneCycleLR's phases; ``values`` are the ``len(phases) + 1`` knots (start, ends...)."""
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
    t = as_count(count)
    out = jnp.zeros(t.shape, real())
    done = jnp.zeros(t.shape, bool)
    for i, (s, e) in enumerate(zip(starts, ends)):
      last = i == len(ends) - 1
      here = ~done if last else (~done & (t <= math.floor(e)))
      width = e - s
      if width > 0:
        pct = jnp.clip((t.astype(real()) - fl(s)) / fl(width), 0.0, 1.0)
        e_int = math.floor(e)
        rem = ((e_int - t).astype(real()) + fl(e - e_int)) / fl(width)
        rem = jnp.clip(rem, 0.0, 1.0)
      else:  # a phase of zero length (PyTorch divides by zero): its start value
        pct, rem = jnp.zeros(t.shape, real()), jnp.ones(t.shape, real())
      start, end = values[i], values[i + 1]
      if anneal_strategy == "cos":
        weight = half_cos(pct, rem, 1.0)  # weight of `start`
      else:
        weight = rem
      val = fl(end) + fl(start - end) * weight
      out = jnp.where(here, val, out)
      done = done | here
    return out

  return schedule


def one_cycle(
    max_lr: float,
    total_steps: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
    *,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
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
  where PyTorch divides by zero) gives the phase's start value; ``total_steps`` given with
  ``epochs`` and ``steps_per_epoch`` must equal their product (PyTorch ignores them).

  Args:
    max_lr: peak learning rate, ``>= 0``.
    total_steps: :math:`T \ge 1`, the number of optimizer steps; or give both
      ``epochs`` and ``steps_per_epoch`` (:math:`T` = their product), as OneCycleLR.
    pct_start: :math:`p \in [0, 1]`, fraction of the steps spent increasing.
    anneal_strategy: ``"cos"`` or ``"linear"``.
    div_factor: ``> 0``, :math:`\eta_{init} = \eta_{max}/\text{div\_factor}`.
    final_div_factor: ``> 0``, :math:`\eta_{min} = \eta_{init}/\text{final\_div\_factor}`.
    three_phase: use PyTorch's symmetric three-phase variant.
    epochs, steps_per_epoch: ``>= 1`` each, instead of ``total_steps``.

  Returns:
    An ``optax.Schedule`` of the count.

  Raises:
    ValueError: for a negative ``max_lr``, a ``div_factor`` / ``final_div_factor`` ``<= 0``, a
      ``pct_start`` outside ``[0, 1]``, an unknown ``anneal_strategy``, no length (neither
      ``total_steps`` nor ``epochs`` with ``steps_per_epoch``), only one of ``epochs`` /
      ``steps_per_epoch``, or a ``total_steps`` that disagrees with their product.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.one_cycle(1.0, total_steps=10, div_factor=10.0, final_div_factor=1.0)
    >>> print(round(float(sched(0)), 4), round(float(sched(2)), 4), round(float(sched(9)), 4))
    0.1 1.0 0.1
    >>> same = schedules.one_cycle(1.0, epochs=2, steps_per_epoch=5, div_factor=10.0, final_div_factor=1.0)
    >>> print(round(float(same(2)), 4))
    1.0

  References:
    Smith & Topin, Super-Convergence: Very Fast Training of Neural Networks Using Large Learning Rates, 2019.
  """
  _validate.check_number("max_lr", max_lr, low=0.0)
  _validate.check_number("div_factor", div_factor, low=0.0, low_open=True)
  _validate.check_number("final_div_factor", final_div_factor, low=0.0, low_open=True)
  initial = max_lr / div_factor
  minimum = initial / final_div_factor
  values = [initial, max_lr, initial, minimum] if three_phase else [initial, max_lr, minimum]
  total = _total_steps(total_steps, epochs, steps_per_epoch)
  return _one_cycle(total, pct_start, anneal_strategy, three_phase, values)


def one_cycle_momentum(
    total_steps: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    three_phase: bool = False,
    *,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
) -> optax.Schedule:
  r"""OneCycleLR's momentum cycling (``cycle_momentum=True``), inverse to :func:`one_cycle`.

  ``max_momentum`` → ``base_momentum`` while the lr rises, then back to ``max_momentum``
  (``three_phase``: back over the second phase, then held), over the same phases as
  :func:`one_cycle` with the same arguments. Use as ``momentum=`` of ``momentum.sgd`` or
  ``b1=`` of ``adaptive.adam``.

  Args:
    total_steps, pct_start, anneal_strategy, three_phase, epochs, steps_per_epoch: as in
      :func:`one_cycle`.
    base_momentum: momentum at the lr peak, in [0, 1).
    max_momentum: momentum at the start and end, in [0, 1).

  Returns:
    An ``optax.Schedule`` of the count, for a ``momentum`` / ``b1`` argument.

  Raises:
    ValueError: for a momentum outside ``[0, 1)``, or phase arguments :func:`one_cycle` rejects.

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
  total = _total_steps(total_steps, epochs, steps_per_epoch)
  return _one_cycle(total, pct_start, anneal_strategy, three_phase, values)
