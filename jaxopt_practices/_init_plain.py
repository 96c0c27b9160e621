"""The plain initializers of ``torch.nn.init``: zeros, ones, constant, normal and uniform.

Public through ``jaxopt_practices.initializers``; the conventions of that module hold here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_practices import _fans
from jaxopt_practices import _validate
from jaxopt_practices._fans import Initializer

__all__ = ["zeros", "ones", "constant", "normal", "uniform"]


def zeros(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
  """An initializer of zeros, as ``torch.nn.init.zeros_``.

  Args:
    key: unused (the ``jax.nn.initializers`` signature).
    shape: the array's shape, a sequence of ints ``>= 0``.
    dtype: the array's dtype.

  Returns:
    An array of zeros of ``shape`` and ``dtype``.

  Raises:
    ValueError: for a shape that is not a sequence of ints ``>= 0``.

  Example:
    >>> import jax
    >>> from jaxopt_practices import initializers
    >>> initializers.zeros(jax.random.key(0), (2,))
    Array([0., 0.], dtype=float32)
  """
  del key
  return jnp.zeros(_fans.as_shape(shape), dtype)


def ones(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
  """An initializer of ones, as ``torch.nn.init.ones_``.

  Args:
    key, shape, dtype: as in :func:`zeros`.

  Returns:
    An array of ones of ``shape`` and ``dtype``.

  Raises:
    ValueError: as :func:`zeros` (a bad ``shape``).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxopt_practices import initializers
    >>> w = initializers.ones(jax.random.key(0), (2, 3), jnp.bfloat16)
    >>> w.dtype, w.shape, float(w.sum())
    (dtype(bfloat16), (2, 3), 6.0)
  """
  del key
  return jnp.ones(_fans.as_shape(shape), dtype)


def constant(value: float) -> Initializer:
  """An initializer filling with ``value``, as ``torch.nn.init.constant_``.

  Args:
    value: a finite number.

  Returns:
    An :data:`Initializer` ``init(key, shape, dtype=jnp.float32)``; ``init`` raises
    ``ValueError`` for a shape that is not a sequence of ints ``>= 0``.

  Raises:
    ValueError: if ``value`` is not a finite number.

  Example:
    >>> import jax
    >>> from jaxopt_practices import initializers
    >>> initializers.constant(0.5)(jax.random.key(0), (2,))
    Array([0.5, 0.5], dtype=float32)
  """
  _validate.check_number("value", value)

  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.full(_fans.as_shape(shape), value, dtype)

  return init


def normal(stddev: float = 0.01, mean: float = 0.0) -> Initializer:
  r"""Plain normal :math:`\mathcal N(\text{mean}, \text{stddev}^2)`, as ``torch.nn.init.normal_``.

  The default ``stddev=0.01`` is ``jax.nn.initializers.normal``'s (PyTorch's default is 1).

  Args:
    stddev: the standard deviation, ``>= 0``.
    mean: the mean.

  Returns:
    An :data:`Initializer` ``init(key, shape, dtype=jnp.float32)``; ``init`` raises
    ``ValueError`` for a shape that is not a sequence of ints ``>= 0`` or a non-float dtype.

  Raises:
    ValueError: for a negative or non-finite ``stddev``, or a non-finite ``mean``.

  Example:
    >>> import jax
    >>> from jaxopt_practices import initializers
    >>> initializers.normal(0.0, mean=2.0)(jax.random.key(0), (2,))
    Array([2., 2.], dtype=float32)
  """
  _validate.check_number("stddev", stddev, low=0.0)
  _validate.check_number("mean", mean)
  stddev, mean = float(stddev), float(mean)

  def init(key, shape, dtype=jnp.float32):
    return _fans.draw_normal(key, _fans.as_shape(shape), dtype, mean, stddev)

  return init


def uniform(low: float = 0.0, high: float = 1.0) -> Initializer:
  r"""Uniform :math:`\mathcal U(\text{low}, \text{high})`, as ``torch.nn.init.uniform_(a, b)``.

  (``jax.nn.initializers.uniform(scale)`` draws from ``[0, scale)`` instead.)

  Args:
    low: the lower bound.
    high: the upper bound, ``>= low``.

  Returns:
    An :data:`Initializer` ``init(key, shape, dtype=jnp.float32)``; ``init`` raises
    ``ValueError`` for a shape that is not a sequence of ints ``>= 0`` or a non-float dtype.

  Raises:
    ValueError: for a non-finite ``low`` or ``high``, or ``high < low``.

  Example:
    >>> import jax
    >>> from jaxopt_practices import initializers
    >>> w = initializers.uniform(-1.0, 1.0)(jax.random.key(0), (1000,))
    >>> bool((w >= -1).all() and (w < 1).all())
    True
  """
  _validate.check_number("low", low)
  _validate.check_number("high", high)
  if float(high) < float(low):
    raise ValueError(f"high must be >= low, got low = {low!r}, high = {high!r}.")
  low, high = float(low), float(high)

  def init(key, shape, dtype=jnp.float32):
    return _fans.draw_uniform(key, _fans.as_shape(shape), dtype, low, high)

  return init
