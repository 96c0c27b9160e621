"""The rest of ``torch.nn.init`` in Flax's kernel layout: ``trunc_normal_``, ``sparse_``, ``dirac_``, ``eye_``.

Re-exported by ``initializers``. Flax kernels are PyTorch's weights transposed: Dense
``(in, out)`` for torch's ``(out, in)``, Conv ``(*spatial, in, out)`` for ``(out, in, *spatial)``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_practices import _fans
from jaxopt_practices import _validate

Initializer = _fans.Initializer


def trunc_normal(mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0) -> Initializer:
  r"""Normal :math:`\mathcal N(\text{mean}, \text{std}^2)` truncated to ``[a, b]``, as ``torch.nn.init.trunc_normal_``.

  ``a`` and ``b`` are *absolute* bounds, as in torch (timm's and ViT's init is
  ``trunc_normal(std=0.02)``: bounds at ±2, i.e. ±100 std, so effectively untruncated).
  ``jax.nn.initializers.truncated_normal(stddev)`` instead truncates at ±2 standard
  deviations and rescales: a different distribution. Drawn in float32, clipped to ``[a, b]``
  and cast to ``dtype``.

  Args:
    mean: the mean of the normal before truncation.
    std: its standard deviation, ``> 0``.
    a: lower bound.
    b: upper bound, ``> a``.

  Returns:
    An :data:`~jaxopt_practices.initializers.Initializer` ``init(key, shape, dtype=jnp.float32)``.

  Raises:
    ValueError: for a non-finite ``mean``, ``a`` or ``b``, a ``std <= 0``, or ``a >= b``; ``init``
      for a non-float dtype.

  Example:
    >>> import jax
    >>> from jaxopt_practices import initializers
    >>> w = initializers.trunc_normal(std=1.0, a=0.0, b=0.5)(jax.random.key(0), (1000,))
    >>> print(bool(w.min() >= 0.0), bool(w.max() <= 0.5))
    True True
  """
  _validate.check_number("mean", mean)
  _validate.check_number("std", std, low=0.0, low_open=True)
  _validate.check_number("a", a)
  _validate.check_number("b", b)
  if not float(a) < float(b):
    raise ValueError(f"trunc_normal needs a < b, got a = {a!r}, b = {b!r}.")
  mean, std, a, b = float(mean), float(std), float(a), float(b)

  def init(key, shape, dtype=jnp.float32):
    shape, dt = _fans.as_shape(shape), _fans.float_dtype(dtype)
    z = jax.random.truncated_normal(key, (a - mean) / std, (b - mean) / std, (math.prod(shape),), jnp.float32)
    return jnp.clip(z.reshape(shape) * std + mean, a, b).astype(dt)

  return init


def _matrix(name: str, shape: Any) -> tuple[int, int]:
  dims = _fans.as_shape(shape)
  if len(dims) != 2:
    raise ValueError(f"{name} takes a 2-D (in, out) kernel, as torch takes only 2-D tensors; got shape = {shape!r}.")
  return dims


def sparse(sparsity: float, std: float = 0.01) -> Initializer:
  r"""A sparse Dense kernel, as ``torch.nn.init.sparse_``: normal entries, a fraction of each input's zeroed.

  Torch zeroes ``ceil(sparsity * out)`` randomly chosen entries in every column of its
  ``(out, in)`` weight; a column there is one input unit, so here every *row* ``K[i, :]`` of
  the ``(in, out)`` kernel has exactly that many zeros. The non-zeros are
  :math:`\mathcal N(0, \text{std}^2)`. 2-D shapes only.

  Args:
    sparsity: the fraction of each input's weights set to zero, in [0, 1].
    std: the standard deviation of the non-zero values, ``>= 0``.

  Returns:
    An :data:`~jaxopt_practices.initializers.Initializer` ``init(key, shape, dtype=jnp.float32)``.

  Raises:
    ValueError: for a ``sparsity`` outside ``[0, 1]`` or a negative ``std``; ``init`` for a shape
      that is not 2-D.

  Example:
    >>> import jax
    >>> from jaxopt_practices import initializers
    >>> w = initializers.sparse(0.5)(jax.random.key(0), (3, 4))
    >>> print((w == 0).sum(axis=1))
    [2 2 2]

  References:
    Martens, Deep learning via Hessian-free optimization, 2010.
  """
  _validate.check_number("sparsity", sparsity, low=0.0, high=1.0)
  _validate.check_number("std", std, low=0.0)
  sparsity, std = float(sparsity), float(std)

  def init(key, shape, dtype=jnp.float32):
    fan_in, out = _matrix("sparse", shape)
    k_normal, k_perm = jax.random.split(key)
    w = _fans.draw_normal(k_normal, (fan_in, out), jnp.float32, 0.0, std)
    num_zeros = math.ceil(sparsity * out)
    ranks = jnp.argsort(jax.random.uniform(k_perm, (fan_in, out)), axis=1).argsort(axis=1)
    return jnp.where(ranks < num_zeros, 0.0, w).astype(_fans.float_dtype(dtype))

  return init


def dirac(groups: int = 1) -> Initializer:
  r"""A Conv kernel that passes its input through, as ``torch.nn.init.dirac_``.

  For a ``(*spatial, in, out)`` kernel (1, 2 or 3 spatial dims) with ``out`` divisible by
  ``groups``, the centre tap is 1 from input channel ``d`` to output channel
  ``g * out // groups + d`` for ``d < min(out // groups, in)`` and every group ``g``; all else
  is 0. A convolution with it (``feature_group_count=groups``, ``in`` channels per group) is
  the identity on the first ``min(out // groups, in)`` channels of each group; torch's centre
  is index ``k // 2`` of each spatial size ``k``.

  Args:
    groups: the number of convolution groups, ``>= 1``.

  Returns:
    An :data:`~jaxopt_practices.initializers.Initializer` ``init(key, shape, dtype=jnp.float32)``.

  Raises:
    ValueError: for a ``groups`` that is not an int ``>= 1``; ``init`` for a shape that is not a
      Conv kernel with 1-3 spatial dims, or an ``out`` not divisible by ``groups``.

  Example:
    >>> import jax
    >>> from jaxopt_practices import initializers
    >>> w = initializers.dirac()(jax.random.key(0), (3, 2, 2))
    >>> print(w[1].tolist(), float(w.sum()))
    [[1.0, 0.0], [0.0, 1.0]] 2.0
  """
  _validate.check_int("groups", groups, low=1)
  groups = int(groups)

  def init(key, shape, dtype=jnp.float32):
    del key
    dims = _fans.as_shape(shape)
    if not 3 <= len(dims) <= 5:
      raise ValueError(f"dirac takes a Conv kernel (*spatial, in, out) with 1-3 spatial dims; got shape = {shape!r}.")
    spatial, fan_in, out = dims[:-2], dims[-2], dims[-1]
    if out % groups:
      raise ValueError(f"dirac needs out = {out} divisible by groups = {groups} (shape = {shape!r}).")
    per_group = out // groups
    d = jnp.arange(min(per_group, fan_in))
    centre = tuple(k // 2 for k in spatial)
    w = jnp.zeros(dims, _fans.float_dtype(dtype))
    for g in range(groups):
      w = w.at[centre + (d, g * per_group + d)].set(1.0)
    return w

  return init


def eye() -> Initializer:
  r"""The identity matrix, as ``torch.nn.init.eye_``: a Dense layer with it copies its inputs.

  ``jnp.eye(in, out)`` for an ``(in, out)`` kernel (torch's ``eye(out, in)`` transposed):
  ``x @ K`` keeps the first ``min(in, out)`` features and pads with zeros. 2-D shapes only.

  Returns:
    An :data:`~jaxopt_practices.initializers.Initializer` ``init(key, shape, dtype=jnp.float32)``.

  Raises:
    ValueError: ``init``, for a shape that is not 2-D.

  Example:
    >>> import jax
    >>> from jaxopt_practices import initializers
    >>> print(initializers.eye()(jax.random.key(0), (2, 3)))
    [[1. 0. 0.]
     [0. 1. 0.]]
  """
  def init(key, shape, dtype=jnp.float32):
    del key
    fan_in, out = _matrix("eye", shape)
    return jnp.eye(fan_in, out, dtype=_fans.float_dtype(dtype))

  return init
