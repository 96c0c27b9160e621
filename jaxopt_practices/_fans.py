"""Fans, gains and float32 sampling shared by the initializers (practice 3 internals).

``initializers`` builds its public factories from these, and ``_lsuv`` draws its orthogonal
pre-initialization with :func:`orthogonal_kernel`, so neither imports the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[..., jax.Array]

NONLINEARITIES = (
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu",
)
MODES = ("fan_in", "fan_out")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
  r"""The recommended gain for a nonlinearity, as ``torch.nn.init.calculate_gain``.

  ============================  ==========================================
  nonlinearity                  gain
  ============================  ==========================================
  linear, conv*, sigmoid        :math:`1`
  tanh                          :math:`5/3`
  relu                          :math:`\sqrt{2}`
  leaky_relu                    :math:`\sqrt{2 / (1 + \text{slope}^2)}`
  selu                          :math:`3/4`
  ============================  ==========================================

  Args:
    nonlinearity: one of ``linear``, ``conv1d``, ``conv2d``, ``conv3d``,
      ``conv_transpose1d``, ``conv_transpose2d``, ``conv_transpose3d``, ``sigmoid``,
      ``tanh``, ``relu``, ``leaky_relu``, ``selu``.
    param: the negative slope of ``leaky_relu`` (default 0.01); ignored otherwise,
      as in PyTorch.

  Returns:
    The gain, a Python float.

  Raises:
    ValueError: for an unknown nonlinearity, or a ``leaky_relu`` slope that is not a
      finite number (PyTorch raises ``ValueError`` for both too).

  Example:
    >>> from jaxopt_practices import initializers
    >>> round(initializers.calculate_gain("leaky_relu", 0.2), 6)
    1.38675
  """
  if not isinstance(nonlinearity, str) or nonlinearity not in NONLINEARITIES:
    raise ValueError(
        f"Unsupported nonlinearity: nonlinearity must be one of {', '.join(NONLINEARITIES)}; "
        f"got nonlinearity = {nonlinearity!r}."
    )
  if nonlinearity == "tanh":
    return 5.0 / 3.0
  if nonlinearity == "relu":
    return math.sqrt(2.0)
  if nonlinearity == "selu":
    return 3.0 / 4.0
  if nonlinearity == "leaky_relu":
    if param is None:
      slope = 0.01
    elif isinstance(param, bool) or not isinstance(param, (int, float, np.integer, np.floating)):
      raise ValueError(f"param (the negative slope of leaky_relu) must be a number, got param = {param!r}.")
    elif not math.isfinite(float(param)):
      raise ValueError(f"param (the negative slope of leaky_relu) must be finite, got param = {param!r}.")
    else:
      slope = float(param)
    return math.sqrt(2.0 / (1.0 + slope**2))
  return 1.0  # linear, conv*, sigmoid


def as_shape(shape: Any) -> tuple[int, ...]:
  """``shape`` (an int or a sequence of non-negative ints) as a tuple of ints; ValueError otherwise."""
  if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
    shape = (shape,)
  try:
    dims = tuple(shape)
  except TypeError:
    raise ValueError(f"shape must be a sequence of non-negative ints, got shape = {shape!r}.") from None
  for d in dims:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
      raise ValueError(f"shape must be a sequence of non-negative ints, got shape = {shape!r}.")
  return tuple(int(d) for d in dims)


def float_dtype(dtype: Any) -> jnp.dtype:
  """``dtype`` as a floating ``jnp.dtype``; ValueError for anything else (ints, bool, junk)."""
  try:
    dt = jnp.dtype(dtype)
  except TypeError:
    raise ValueError(f"dtype must be a floating dtype, got dtype = {dtype!r}.") from None
  if not jnp.issubdtype(dt, jnp.floating):
    raise ValueError(f"dtype must be a floating dtype (float32, bfloat16, ...), got dtype = {dtype!r}.")
  return dt


def compute_fans(shape: Sequence[int]) -> tuple[int, int]:
  """``(fan_in, fan_out)`` of a kernel in Flax layout.

  Dense ``(in, out)``: ``(in, out)``. Conv ``(*spatial, in, out)``:
  ``(in * prod(spatial), out * prod(spatial))`` — PyTorch's
  ``_calculate_fan_in_and_fan_out`` on the transposed weight.

  Args:
    shape: the kernel's shape, a sequence of non-negative ints.

  Returns:
    ``(fan_in, fan_out)`` as Python ints.

  Raises:
    ValueError: when ``shape`` has fewer than 2 dimensions.

  Example:
    >>> from jaxopt_practices import initializers
    >>> initializers.compute_fans((3, 3, 16, 32))
    (144, 288)
  """
  dims = as_shape(shape)
  if len(dims) < 2:
    raise ValueError(
        "fan_in and fan_out need a kernel shape with at least 2 dimensions (Dense (in, out) or "
        f"Conv (*spatial, in, out)), got shape = {shape!r}."
    )
  receptive = math.prod(dims[:-2])
  return dims[-2] * receptive, dims[-1] * receptive


def _flat(sampler, key, shape, *args) -> jax.Array:
  # Drawn flat and reshaped: the same values as drawing ``shape`` directly, but XLA:CPU
  # compiles a multi-dimensional threefry draw more than ten times slower.
  return sampler(key, (math.prod(shape),), jnp.float32, *args).reshape(shape)


def draw_normal(key, shape, dtype, mean: float, std: float) -> jax.Array:
  """``N(mean, std^2)`` of ``shape``, drawn in float32 and cast to ``dtype``."""
  dt = float_dtype(dtype)
  x = _flat(jax.random.normal, key, shape) * std + mean
  return x.astype(dt)


def draw_uniform(key, shape, dtype, low: float, high: float) -> jax.Array:
  """``U(low, high)`` of ``shape``, drawn in float32 and cast to ``dtype``."""
  dt = float_dtype(dtype)
  return _flat(jax.random.uniform, key, shape, low, high).astype(dt)


def fan_based(name: str, std_fn: Callable[[int, int], float], dist: str) -> Initializer:
  """An initializer with ``std = std_fn(fan_in, fan_out)``; uniform bound ``sqrt(3) * std``."""

  def init(key, shape, dtype=jnp.float32):
    dims = as_shape(shape)
    if len(dims) < 2:
      raise ValueError(
          f"{name} needs a kernel shape with at least 2 dimensions (Dense (in, out) or "
          f"Conv (*spatial, in, out)) to compute its fans, got shape = {shape!r}."
      )
    if math.prod(dims) == 0:
      return jnp.zeros(dims, float_dtype(dtype))
    std = std_fn(*compute_fans(dims))
    if dist == "normal":
      return draw_normal(key, dims, dtype, 0.0, std)
    bound = math.sqrt(3.0) * std
    return draw_uniform(key, dims, dtype, -bound, bound)

  init.__name__ = name
  return init


def orthogonal_kernel(key: jax.Array, shape: Any, dtype: Any, gain: float) -> jax.Array:
  """A (semi-)orthogonal kernel times ``gain``: the sampler of ``initializers.orthogonal``.

  ``shape`` viewed as ``(prod(shape[:-1]), shape[-1])`` is the ``Q`` of a QR decomposition
  of a standard normal matrix (drawn in float32; the QR in float32, or float64 for a float64
  ``dtype``) with the signs of ``diag(R)`` folded in, transposed when it has fewer rows than
  columns; the result is cast to ``dtype``.
  """
  dims = as_shape(shape)
  if len(dims) < 2:
    raise ValueError(f"orthogonal needs a kernel shape with at least 2 dimensions, got shape = {shape!r}.")
  dt = float_dtype(dtype)
  rows, cols = math.prod(dims[:-1]), dims[-1]
  if rows * cols == 0:
    return jnp.zeros(dims, dt)
  # The QR runs in float64 for float64 kernels (orthogonal to double precision), else float32.
  qr_dt = dt if dt.itemsize > 4 else jnp.dtype(jnp.float32)
  a = _flat(jax.random.normal, key, (max(rows, cols), min(rows, cols))).astype(qr_dt)
  q, r = jnp.linalg.qr(a)
  d = jnp.diagonal(r)
  q = q * jnp.where(d < 0, -1.0, 1.0).astype(qr_dt)[None, :]
  if rows < cols:
    q = q.T
  return (q * gain).reshape(dims).astype(dt)
