"""Small transforms shared by several practices: learning-rate scaling and weight decay.

They differ from ``optax.scale_by_learning_rate`` / ``optax.add_decayed_weights`` only
in dtype handling: the scalar is applied in float32 and the result is cast back to the
gradient's dtype, so bfloat16 gradients stay bfloat16 also when the learning rate is a
schedule or an injected array (optax would promote them to float32 there).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_practices import _tree
from jaxopt_practices import _validate

ScalarOrSchedule = float | jax.Array | optax.Schedule


class ScaleByLearningRateState(NamedTuple):
  """Updates applied so far (the schedule's ``count``) and the last learning rate applied.

  ``learning_rate`` is what ``monitor.stats`` reports (times any plateau scale).
  """
  count: jax.Array
  learning_rate: jax.Array


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, lr_decay: float = 0.0, flip_sign: bool = True
) -> optax.GradientTransformation:
  r"""Scales updates by :math:`-\eta_t / (1 + t \cdot \text{lr\_decay})`.

  ``learning_rate`` is a float or a schedule evaluated at ``t`` = updates applied so far.
  ``lr_decay`` is Adagrad's (PyTorch) learning-rate decay; 0 for every other optimizer.

  Args:
    learning_rate: a non-negative float or an ``optax.Schedule``.
    lr_decay: non-negative decay of the learning rate with the step count.
    flip_sign: multiply by ``-1`` so the result can be added to the params.

  Returns:
    An ``optax.GradientTransformation``.
  """
  _validate.check_number("learning_rate", learning_rate, low=0.0, allow_schedule=True)
  _validate.check_number("lr_decay", lr_decay, low=0.0)
  sign = -1.0 if flip_sign else 1.0

  def init_fn(params):
    del params
    return ScaleByLearningRateState(count=jnp.zeros([], jnp.int32), learning_rate=_lr(jnp.zeros([], jnp.int32)))

  def _lr(count):
    lr = _tree.as_scalar(learning_rate, count)
    if not _validate.is_zero(lr_decay):
      lr = lr / (1.0 + count.astype(jnp.float32) * jnp.asarray(lr_decay, jnp.float32))
    return lr

  def update_fn(updates, state, params=None):
    del params
    lr = _lr(state.count)
    step = sign * lr
    updates = jax.tree.map(lambda g: (g.astype(_tree.acc_dtype(g.dtype)) * step).astype(g.dtype), updates)
    return updates, ScaleByLearningRateState(count=_tree.increment(state.count), learning_rate=lr)

  return optax.GradientTransformation(init_fn, update_fn)


def _resolve_mask(mask: Any, params: Any) -> Any:
  if mask is None:
    return jax.tree.map(lambda _: True, params)
  if isinstance(mask, str):
    if mask != "auto":
      raise ValueError(f"mask must be 'auto', None, a pytree of bools or a callable; got mask = {mask!r}.")
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)
  if callable(mask):
    return mask(params)
  return mask


def check_mask(mask: Any) -> None:
  """Raises ``ValueError`` for a mask that is not 'auto', None, a pytree or a callable."""
  bad_string = isinstance(mask, str) and mask != "auto"
  number = isinstance(mask, (int, float, np.number)) and not isinstance(mask, (bool, np.bool_))
  if bad_string or number:
    raise ValueError(f"mask must be 'auto', None, a pytree of bools or a callable; got mask = {mask!r}.")


def add_weight_decay(rate: float | jax.Array, mask: Any = None) -> optax.GradientTransformation:
  r"""Adds ``rate * param`` to the updates of the leaves selected by ``mask``.

  Placed before the optimizer it is coupled L2 (PyTorch's ``weight_decay`` of SGD, Adam,
  Adagrad, RMSprop); placed after the gradient-based step and before the learning rate it
  is decoupled decay (AdamW). ``mask`` is ``None`` (all leaves), ``"auto"`` (leaves with
  ``ndim >= 2``), a pytree of bools, or a callable ``params -> pytree of bools``.
  """
  _validate.check_number("weight_decay", rate, low=0.0)
  check_mask(mask)

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("weight decay needs the params: call update(updates, state, params).")
    selected = _resolve_mask(mask, params)
    r = jnp.asarray(rate, jnp.float32)

    def decay(g, p, on):
      if on is False:
        return g
      acc = _tree.acc_dtype(g.dtype)
      out = (g.astype(acc) + r.astype(acc) * p.astype(acc)).astype(g.dtype)
      return out if on is True else jnp.where(on, out, g)

    return jax.tree.map(decay, updates, params, selected), state

  return optax.GradientTransformation(init_fn, update_fn)


class DecoupledWeightDecayState(NamedTuple):
  """Number of updates applied so far (the learning-rate schedule's ``count``)."""
  count: jax.Array


def add_decoupled_weight_decay(
    learning_rate: ScalarOrSchedule, rate: float | jax.Array, mask: Any = None
) -> optax.GradientTransformation:
  r"""Adds :math:`(\mathrm{fl}(1 - \eta_t\lambda) - 1)\,\theta` to already lr-scaled updates.

  This is PyTorch's AdamW decay, ``θ ← θ·(1 − η_t λ)``, to the bit: the factor
  :math:`1 - \eta_t\lambda` is rounded to float32 first, as ``param.mul_(1 - lr * wd)``
  does. Over many steps that rounding is a systematic relative drift of up to
  :math:`\approx 3\cdot10^{-8}` per step, which parity with PyTorch needs reproduced.
  Mathematically it equals ``add_weight_decay(rate)`` placed before the learning rate.
  Place it after :func:`scale_by_learning_rate`.
  """
  _validate.check_number("learning_rate", learning_rate, low=0.0, allow_schedule=True)
  _validate.check_number("weight_decay", rate, low=0.0)
  check_mask(mask)

  def init_fn(params):
    del params
    return DecoupledWeightDecayState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("weight decay needs the params: call update(updates, state, params).")
    selected = _resolve_mask(mask, params)
    factor = 1.0 - _tree.as_scalar(learning_rate, state.count) * jnp.asarray(rate, jnp.float32)

    def decay(u, p, on):
      if on is False:
        return u
      acc = _tree.acc_dtype(u.dtype)
      out = (u.astype(acc) + (factor.astype(acc) - 1.0) * p.astype(acc)).astype(u.dtype)
      return out if on is True else jnp.where(on, out, u)

    out = jax.tree.map(decay, updates, params, selected)
    return out, DecoupledWeightDecayState(count=_tree.increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)
