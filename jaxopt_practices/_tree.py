"""Pytree maths shared by the practices: accumulator dtypes, casts, moments, bias correction.

Conventions: accumulators live in float32 (or wider, e.g. float64 under x64) whatever the
parameter dtype; updates go back out in the gradient's dtype.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax


def acc_dtype(dtype: Any) -> jnp.dtype:
  """The accumulator dtype for values of ``dtype``: float32 or wider."""
  dtype = jnp.dtype(dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    return jnp.dtype(jnp.float32)
  return dtype if dtype.itemsize >= 4 else jnp.dtype(jnp.float32)


def zeros_acc(tree: Any) -> Any:
  """Zeros shaped like ``tree`` in the accumulator dtype of each leaf."""
  return jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), acc_dtype(jnp.result_type(x))), tree)


def full_acc(tree: Any, value: float) -> Any:
  """``value`` everywhere, shaped like ``tree``, in the accumulator dtype of each leaf."""
  return jax.tree.map(lambda x: jnp.full(jnp.shape(x), value, acc_dtype(jnp.result_type(x))), tree)


def to_acc(tree: Any) -> Any:
  """Casts each leaf to its accumulator dtype."""
  return jax.tree.map(lambda x: jnp.asarray(x).astype(acc_dtype(jnp.result_type(x))), tree)


def cast_like(tree: Any, like: Any) -> Any:
  """Casts each leaf of ``tree`` to the dtype of the matching leaf of ``like``."""
  return jax.tree.map(lambda x, y: x.astype(jnp.result_type(y)), tree, like)


def as_scalar(value: Any, count: jax.Array | None = None) -> jax.Array:
  """A float32 scalar from a number, an array, or a schedule evaluated at ``count``."""
  if callable(value):
    value = value(count)
  return jnp.asarray(value, dtype=jnp.float32)


def bias_correction(decay: Any, step: jax.Array) -> jax.Array:
  r"""``1 - decay**step`` in float32, accurate also when ``decay`` is close to 1.

  Computed as :math:`-\mathrm{expm1}(t \log \beta)`; for a Python float ``decay`` the
  logarithm is taken in double precision, so ``1 - 0.999**1`` is ``1e-3`` to float32
  round-off rather than ``1 - float32(0.999)``.
  """
  step = jnp.asarray(step, jnp.float32)
  if isinstance(decay, (int, float)) and not isinstance(decay, bool):
    if decay == 0.0:
      return jnp.ones_like(step)
    log_decay = jnp.float32(math.log(decay))
  else:
    decay = jnp.asarray(decay, jnp.float32)
    log_decay = jnp.log(decay)
  return -jnp.expm1(step * log_decay)


def moment(new: Any, old: Any, decay: Any, order: int) -> Any:
  """Exponential moving average ``decay * old + (1 - decay) * new**order`` in ``old``'s dtype.

  For a Python float ``decay`` the weight ``1 - decay`` is computed in double precision
  (as PyTorch does), so ``1 - 0.999`` is ``1e-3`` to float32 round-off rather than
  ``1 - float32(0.999)``, which is off by 1.3e-5 relative.
  """
  if isinstance(decay, (int, float)) and not isinstance(decay, bool):
    keep, take = jnp.float32(decay), jnp.float32(1.0 - decay)
  else:
    keep = jnp.asarray(decay, jnp.float32)
    take = 1.0 - keep
  return jax.tree.map(
      lambda g, m: keep.astype(m.dtype) * m + take.astype(m.dtype) * (g.astype(m.dtype) ** order), new, old
  )


def find_states(tree: Any, kind: type | tuple[type, ...]) -> list:
  """Every sub-tree of ``tree`` (e.g. a chained optimizer state) that is a ``kind``, in order."""
  return [x for x in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, kind)) if isinstance(x, kind)]


def increment(count: jax.Array) -> jax.Array:
  """``count + 1``, saturating at the integer maximum (``optax.safe_increment``)."""
  return optax.safe_increment(count)
