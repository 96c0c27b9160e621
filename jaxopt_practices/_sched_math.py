"""Count handling and floating-point maths shared by the schedules (``schedules``, ``_cyclic``, ...).

Every schedule turns its ``count`` into int32 with :func:`as_count` and computes in
:func:`real`: float32, or float64 under ``jax_enable_x64`` (read when the schedule is called,
so under ``jit`` when it is traced). Arithmetic that grows with ``count`` stays in int32
without overflow up to ``2**31 - 1``, cosine phases go through :func:`half_cos` (accurate near
both ends) and powers of a decay factor through :func:`gamma_power`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

INT32_MAX = 2**31 - 1


def real() -> jnp.dtype:
  """The dtype schedules compute and return in: float64 under ``jax_enable_x64``, else float32.

  Example:
    >>> import jax
    >>> from jaxopt_practices import _sched_math
    >>> with jax.enable_x64(True):
    ...   print(_sched_math.real())
    float64
    >>> print(_sched_math.real())
    float32
  """
  return jnp.dtype(jnp.result_type(float))


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


def fl(x: Any) -> jax.Array:
  """``x`` as an array of the schedules' dtype (:func:`real`)."""
  return jnp.asarray(x, real())


def as_schedule(value: Any) -> Callable[[Any], jax.Array]:
  """A schedule from a schedule or a float (constant); its values come back in :func:`real`.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import _sched_math
    >>> print(_sched_math.as_schedule(0.5)(jnp.arange(2)))
    [0.5 0.5]
  """
  if callable(value):
    return lambda count: fl(value(count))
  return lambda count: jnp.full(jnp.shape(count), value, real())


def half_cos(k: jax.Array, rem: jax.Array, n: Any) -> jax.Array:
  r""":math:`(1 + \cos(\pi k / n)) / 2` with ``rem = n - k``, accurate near both ends.

  Evaluated as :math:`\cos^2(\pi k / 2n)` or :math:`\sin^2(\pi\,\text{rem} / 2n)`, whichever
  end is nearer, so values close to 0 keep their relative accuracy.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import _sched_math
    >>> print(round(float(_sched_math.half_cos(jnp.int32(1), jnp.int32(3), 4)), 4))
    0.8536
  """
  dt = real()
  n = fl(n)
  head = jnp.square(jnp.cos(fl(math.pi / 2) * (k.astype(dt) / n)))
  tail = jnp.square(jnp.sin(fl(math.pi / 2) * (rem.astype(dt) / n)))
  return jnp.where(k <= rem, head, tail)


def gamma_power(gamma: float, n: jax.Array) -> jax.Array:
  """``gamma ** n`` in :func:`real`, with ``log(gamma)`` in double precision; ``0 ** 0 = 1``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import _sched_math
    >>> print(_sched_math.gamma_power(0.5, jnp.int32(3)), _sched_math.gamma_power(0.0, jnp.int32(0)))
    0.125 1.0
  """
  n = n.astype(real())
  if gamma == 0.0:
    return jnp.where(n == 0, fl(1.0), fl(0.0))
  return jnp.exp(n * fl(math.log(gamma)))


def cos_weight(k: jax.Array, rem: jax.Array, n: Any, k_decay: float = 1.0) -> jax.Array:
  r"""timm's :math:`(1 + \cos(\pi k^{\kappa} / n^{\kappa})) / 2` with ``rem = n - k``, accurate near both ends.

  :func:`half_cos` for :math:`\kappa = 1` (the same arithmetic); otherwise the phase
  :math:`x = (k/n)^{\kappa}` and its complement :math:`1 - x = -\mathrm{expm1}(\kappa
  \log(1 - \text{rem}/n))` (exact near the end) go through :func:`half_cos` with ``n = 1``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import _sched_math
    >>> print(round(float(_sched_math.cos_weight(jnp.int32(1), jnp.int32(1), 2, k_decay=2.0)), 4))
    0.8536
  """
  if k_decay == 1.0:
    return half_cos(k, rem, n)
  dt = real()
  n = fl(n)
  x = jnp.power(k.astype(dt) / n, fl(k_decay))
  x_rem = -jnp.expm1(fl(k_decay) * jnp.log1p(-(rem.astype(dt) / n)))
  return half_cos(x, x_rem, 1.0)
