"""Count handling and float32 maths shared by the schedules (``schedules`` and ``_cyclic``).

Every schedule turns its ``count`` into int32 with :func:`as_count` and computes in float32:
arithmetic that grows with ``count`` stays in int32 without overflow up to ``2**31 - 1``,
cosine phases go through :func:`half_cos` (accurate near both ends) and powers of a decay
factor through :func:`gamma_power`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

INT32_MAX = 2**31 - 1
F32 = jnp.float32


def as_count(count: Any) -> jax.Array:
  """``count`` as an int32 array: Python ints are checked, arrays clamped to ``[0, 2**31-1]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import _sched_math
    >>> print(_sched_math.as_count(3), _sched_math.as_count(jnp.asarray([-2, 5])))
    3 [0 5]
  """
  if isinstance(count, (int, np.integer)) and not isinstance(count, bool):
    if not 0 <= count <= INT32_MAX:
      raise ValueError(f"count must be an integer in [0, 2**31 - 1], got count = {count}.")
    return jnp.asarray(count, jnp.int32)
  c = jnp.asarray(count)
  if jnp.issubdtype(c.dtype, jnp.floating):
    c = jnp.clip(jnp.floor(c), 0.0, 2147483520.0)  # the largest float32 below 2**31
  else:
    c = jnp.clip(c, 0, INT32_MAX)
  return c.astype(jnp.int32)


def f32(x: Any) -> jax.Array:
  """``x`` as a float32 array."""
  return jnp.asarray(x, F32)


def as_schedule(value: Any) -> Callable[[Any], jax.Array]:
  """A schedule from a schedule or a float (constant); its values come back as float32 arrays.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import _sched_math
    >>> print(_sched_math.as_schedule(0.5)(jnp.arange(2)))
    [0.5 0.5]
  """
  if callable(value):
    return lambda count: f32(value(count))
  return lambda count: jnp.full(jnp.shape(count), value, F32)


def half_cos(k: jax.Array, rem: jax.Array, n: Any) -> jax.Array:
  r""":math:`(1 + \cos(\pi k / n)) / 2` with ``rem = n - k``, accurate near both ends.

  Evaluated as :math:`\cos^2(\pi k / 2n)` or :math:`\sin^2(\pi\,\text{rem} / 2n)`, whichever
  end is nearer, so values close to 0 keep float32 relative accuracy.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import _sched_math
    >>> print(round(float(_sched_math.half_cos(jnp.int32(1), jnp.int32(3), 4)), 4))
    0.8536
  """
  n = f32(n)
  head = jnp.square(jnp.cos(F32(math.pi / 2) * (k.astype(F32) / n)))
  tail = jnp.square(jnp.sin(F32(math.pi / 2) * (rem.astype(F32) / n)))
  return jnp.where(k <= rem, head, tail)


def gamma_power(gamma: float, n: jax.Array) -> jax.Array:
  """``gamma ** n`` in float32, with ``log(gamma)`` in double precision; ``0 ** 0 = 1``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import _sched_math
    >>> print(_sched_math.gamma_power(0.5, jnp.int32(3)), _sched_math.gamma_power(0.0, jnp.int32(0)))
    0.125 1.0
  """
  n = n.astype(F32)
  if gamma == 0.0:
    return jnp.where(n == 0, F32(1.0), F32(0.0))
  return jnp.exp(n * F32(math.log(gamma)))
