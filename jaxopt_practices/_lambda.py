"""The factor schedulers of ``torch.optim.lr_scheduler``.

``linear`` (LinearLR), ``lambda_lr`` (LambdaLR) and ``multiplicative`` (MultiplicativeLR).

Public through ``jaxopt_practices.schedules``; the conventions of that module hold here. Each
multiplies a base value (PyTorch's optimizer ``lr``) by a factor of the count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_practices import _validate
from jaxopt_practices._sched_math import as_count, fl, real

__all__ = ["linear", "lambda_lr", "multiplicative"]


def linear(value: float, start_factor: float = 1.0 / 3.0, end_factor: float = 1.0,
           total_steps: int = 5) -> optax.Schedule:
  r"""A linear change of the factor from ``start_factor`` to ``end_factor`` ≙ ``torch LinearLR``.

  .. math:: \eta_t = \eta\,\big(f_s + (f_e - f_s)\,\min(t, T)/T\big)

  PyTorch's ``LinearLR(optimizer, start_factor, end_factor, total_iters)`` with ``value`` the
  optimizer's lr, with its defaults; held at :math:`\eta f_e` from ``T`` on.

  Args:
    value: :math:`\eta \ge 0`.
    start_factor: :math:`f_s \in (0, 1]`, as PyTorch.
    end_factor: :math:`f_e \in [0, 1]`, as PyTorch.
    total_steps: :math:`T \ge 1`, PyTorch's ``total_iters``.

  Returns:
    An ``optax.Schedule``: the linearly changing factor times ``value``.

  Raises:
    ValueError: for a negative ``value``, factors outside PyTorch's ranges or a
      ``total_steps`` that is not a count ``>= 1``.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.linear(1.0, start_factor=0.5, total_steps=2)
    >>> print([float(sched(t)) for t in range(4)])
    [0.5, 0.75, 1.0, 1.0]
  """
  _validate.check_number("value", value, low=0.0)
  _validate.check_number("start_factor", start_factor, low=0.0, high=1.0, low_open=True)
  _validate.check_number("end_factor", end_factor, low=0.0, high=1.0)
  total_steps = _validate.check_steps("total_steps", total_steps, low=1)
  slope = float(end_factor) - float(start_factor)

  def schedule(count):
    k = jnp.minimum(as_count(count), total_steps).astype(real())
    return fl(value) * (fl(start_factor) + fl(slope) * (k / fl(total_steps)))

  return schedule


def lambda_lr(value: float, fn: Callable[[Any], Any]) -> optax.Schedule:
  r"""``value`` times a factor computed from the count ≙ ``torch LambdaLR``.

  .. math:: \eta_t = \eta \, \lambda(t)

  PyTorch's ``LambdaLR(optimizer, lr_lambda=fn)`` with ``value`` the optimizer's lr. ``fn``
  receives the count as an int32 array (traced under ``jit``; PyTorch's int epoch), so it is
  written with array operations: ``lambda t: 0.95 ** t``, or ``0.95 ** t.astype(float)`` under
  ``jax_numpy_dtype_promotion="strict"``. Its value is cast to the schedules' dtype.

  Args:
    value: :math:`\eta \ge 0`.
    fn: :math:`\lambda`, a callable ``count -> factor``.

  Returns:
    An ``optax.Schedule``: ``value * fn(count)``.

  Raises:
    ValueError: for a negative ``value`` or a ``fn`` that is not callable.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.lambda_lr(0.1, lambda t: 1.0 / (1.0 + t.astype(float)))
    >>> print([round(float(sched(t)), 4) for t in range(3)])
    [0.1, 0.05, 0.0333]
  """
  _validate.check_number("value", value, low=0.0)
  fn = _validate.check_callable("fn", fn)
  def schedule(count):
    t = as_count(count)
    return fl(value) * jnp.broadcast_to(fl(fn(t)), t.shape)  # shaped like count even for a constant fn

  return schedule


def multiplicative(value: float, fn: Callable[[int], float], total_steps: int) -> optax.Schedule:
  r"""The lr multiplied by ``fn(t)`` at each step ≙ ``torch MultiplicativeLR``, held after ``total_steps``.

  .. math:: \eta_t = \eta \prod_{e=1}^{\min(t, T)} \lambda(e)

  PyTorch's ``MultiplicativeLR(optimizer, lr_lambda=fn)`` with ``value`` the optimizer's lr.
  ``fn`` is called on the host, once for each ``e = 1 .. total_steps``, with a Python int;
  the products are accumulated in double precision in PyTorch's order into a table that
  the schedule reads (PyTorch's values, rounded once to the schedules' dtype). From
  ``total_steps`` on the lr holds.

  Args:
    value: :math:`\eta \ge 0`.
    fn: :math:`\lambda`, a callable ``int -> float`` returning finite factors ``>= 0``.
    total_steps: :math:`T \ge 0`, the steps that multiply.

  Returns:
    An ``optax.Schedule`` reading the table of products.

  Raises:
    ValueError: for an argument out of its range or a factor ``fn(e)`` that is not a finite
      number ``>= 0``.

  Example:
    >>> from jaxopt_practices import schedules
    >>> sched = schedules.multiplicative(1.0, lambda e: 0.5, total_steps=2)
    >>> print([float(sched(t)) for t in range(4)])
    [1.0, 0.5, 0.25, 0.25]
  """
  _validate.check_number("value", value, low=0.0)
  fn = _validate.check_callable("fn", fn)
  total_steps = _validate.check_steps("total_steps", total_steps)
  table = [float(value)]
  for e in range(1, total_steps + 1):
    factor = fn(e)
    _validate.check_number(f"fn({e})", factor, low=0.0)
    table.append(table[-1] * float(factor))
  if not all(math.isfinite(v) for v in table):
    raise ValueError(f"the products of fn's factors must stay finite, got an lr of inf within total_steps = "
                     f"{total_steps}.")
  values = np.asarray(table, np.float64)

  def schedule(count):
    return jnp.asarray(values, real())[jnp.minimum(as_count(count), total_steps)]

  return schedule
