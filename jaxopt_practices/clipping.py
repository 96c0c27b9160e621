"""Practice 6 — gradient clipping: by value, by global norm, adaptive (AGC), and skipping bad steps.

``clip_by_value`` and ``clip_by_global_norm`` follow PyTorch's ``clip_grad_value_`` and
``clip_grad_norm_``. Norms are computed in float32 (or wider) whatever the gradient dtype,
and without overflow: every leaf is divided by the global max-abs before it is raised to
the power ``p``, so float32 gradients around ``1e20`` (whose squares overflow) still clip
to ``max_norm``. Updates come back in the gradient's dtype. The norms are the package's one
overflow-safe kernel, shared with ``flat`` and ``monitor``; ``skip_nonfinite`` wraps any
optimizer and is re-exported here.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_practices import _norms
from jaxopt_practices import _tree
from jaxopt_practices import _validate
from jaxopt_practices._skip import NonfiniteGradientsError as NonfiniteGradientsError
from jaxopt_practices._skip import SkipNonfiniteState as SkipNonfiniteState
from jaxopt_practices._skip import skip_nonfinite as skip_nonfinite

__all__ = [
    "clip_by_value",
    "ClipByGlobalNormState", "global_norm", "clip_by_global_norm",
    "unitwise_norm", "adaptive_grad_clip",
    "SkipNonfiniteState", "NonfiniteGradientsError", "skip_nonfinite",
]


def _check_norm_type(norm_type: Any) -> None:
  if not isinstance(norm_type, (bool, np.bool_)) and not callable(norm_type):
    try:
      if _validate.known_value(norm_type) == math.inf:
        return
    except (TypeError, ValueError):
      pass  # not a number: check_number below says so
  _validate.check_number("norm_type", norm_type, low=0.0, low_open=True)


# ----------------------------------------------------------------------------- by value
def clip_by_value(max_abs: float) -> optax.GradientTransformation:
  r"""Clips every gradient entry to ``[-max_abs, max_abs]`` ≙ ``torch.nn.utils.clip_grad_value_``.

  .. math:: u = \min(\max(g, -c), c)

  NaN entries stay NaN (like ``torch.clamp``).

  Args:
    max_abs: :math:`c > 0`.

  Returns:
    An ``optax.GradientTransformation`` with an empty state (``update`` also takes ``None``).

  Raises:
    ValueError: for a ``max_abs`` that is not a number ``> 0``; at ``update``, for a state other
      than ``optax.EmptyState`` or ``None`` (e.g. a dict restored without a target).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import clipping
    >>> tx = clipping.clip_by_value(1.0)
    >>> u, _ = tx.update(jnp.array([-3.0, 0.5, 2.0]), tx.init(jnp.zeros(3)))
    >>> print(u)
    [-1.   0.5  1. ]
  """
  _validate.check_number("max_abs", max_abs, low=0.0, low_open=True)

  def update_fn(updates, state, params=None):
    _validate.check_state("clipping.clip_by_value", state, optax.EmptyState)
    del params
    def clip(g):  # complex entries: each real component clipped (torch.view_as_real)
      c = jnp.asarray(max_abs, _tree.real_dtype(jnp.result_type(g)))
      return _tree.componentwise(lambda g: jnp.clip(g.astype(c.dtype), -c, c).astype(g.dtype), g)

    return jax.tree.map(clip, updates), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


# ----------------------------------------------------------------------------- global norm
class ClipByGlobalNormState(NamedTuple):
  """The state of :func:`clip_by_global_norm`: the global gradient norm of the last update.

  Attributes:
    norm: the global ``norm_type``-norm of the last update's gradients, before clipping (0 before
      the first update; ``inf`` when it exceeds the float range), float32 (float64 for float64
      params).
  """
  norm: jax.Array


def global_norm(tree: Any, norm_type: float = 2.0, axis_name: str | None = None) -> jax.Array:
  r"""The p-norm of all entries of ``tree``: one scalar, overflow-free, in float32 or wider.

  .. math:: \|g\|_p = \Big(\sum_{\text{leaves}} \sum_i |g_i|^p\Big)^{1/p}
    \ (\max_i |g_i| \text{ for } p=\infty) = m\,\Big(\sum_{\text{leaves}} \sum_i (|g_i|/m)^p\Big)^{1/p}

  Each leaf is reduced on its own and divided by the max-abs :math:`m` before the power, so
  no intermediate exceeds the number of entries: float32 gradients near ``1e20`` (whose
  squares overflow) are fine. For ``p = 2`` without ``axis_name`` the plain one-pass sum of
  squares is used whenever it neither overflows nor underflows. This is the norm :func:`clip_by_global_norm`
  clips by (and keeps in its state).

  Args:
    tree: a pytree of arrays (any float dtype; accumulated in float32 or wider).
    norm_type: :math:`p`, a number ``> 0`` or ``float("inf")``.
    axis_name: a ``pmap`` / ``shard_map`` axis over which ``tree`` is *sharded*: the norm
      then covers the entries of every replica (``pmax`` of :math:`m`, ``psum`` of the sums).

  Returns:
    A scalar: ``inf`` when an entry is infinite, NaN when one is NaN, 0 for an empty tree.

  Raises:
    ValueError: for a ``norm_type`` that is neither a number ``> 0`` nor ``inf``, or an
      ``axis_name`` that is not a string or ``None``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import clipping
    >>> print(clipping.global_norm({"a": jnp.array([3.0]), "b": jnp.array([[4.0]])}))
    5.0
    >>> print(f"{float(clipping.global_norm(jnp.array([3e20, -4e20]))):.6g}")  # float32 squares overflow
    5e+20
  """
  _check_norm_type(norm_type)
  _validate.check_axis_name(axis_name)
  return _norms.global_norm(tree, norm_type, axis_name)


def clip_by_global_norm(max_norm: float, norm_type: float = 2.0,
                        axis_name: str | None = None) -> optax.GradientTransformation:
  r"""Rescales all gradients by a common factor ≙ ``torch.nn.utils.clip_grad_norm_``.

  .. math::
    \|g\|_p = \Big(\sum_{\text{leaves}} \sum_i |g_i|^p\Big)^{1/p}\ (\max_i |g_i| \text{ for } p=\infty),
    \qquad u = g \cdot \min\Big(1, \frac{c}{\|g\|_p + 10^{-6}}\Big)

  The norm is computed in float32 (float64 for float64 gradients) and without overflow
  (see :func:`global_norm`); the pre-clip norm is kept in the state for logging (``inf``
  when it exceeds the float range). When the factor would be subnormal (finite gradients
  near the float maximum), the scaling is split into two normal factors, so the result is
  still clipped to ``max_norm`` instead of being flushed to zero.
  A gradient holding NaN makes everything NaN and one holding Inf gives NaN/0, as in
  PyTorch with ``error_if_nonfinite=False``; wrap the optimizer in :func:`skip_nonfinite`
  to skip such steps. For bfloat16 / float16 gradients a factor below 1 is shrunk by the
  dtype's unit roundoff :math:`u` (``2**-8`` for bfloat16), so that rounding the result cannot
  push the clipped norm above ``max_norm`` (float32 results: at most 1 ulp above, as in
  PyTorch).

  Differs from ``optax.clip_by_global_norm``: the ``1e-6`` in the denominator (PyTorch's),
  any ``p > 0`` or ``inf``, float32 accumulation and overflow-free scaling, the norm in the
  state, and ``axis_name``.

  Args:
    max_norm: :math:`c > 0`.
    norm_type: :math:`p`, a number ``> 0`` or ``float("inf")``.
    axis_name: a ``pmap`` / ``shard_map`` axis over which the gradients are *sharded*
      (different entries on each replica): the norm then covers the concatenation of all
      shards. Leave it ``None`` for gradients that are already all-reduced (identical).

  Returns:
    An ``optax.GradientTransformation``; its state is :class:`ClipByGlobalNormState`.

  Raises:
    ValueError: for a ``max_norm`` that is not a number ``> 0``, a ``norm_type`` that is neither
      a number ``> 0`` nor ``inf``, or an ``axis_name`` that is not a string or ``None``; at
      ``update``, for a state that is not a :class:`ClipByGlobalNormState` (e.g. a dict restored
      without a target).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import clipping
    >>> tx = clipping.clip_by_global_norm(1.0)
    >>> u, state = tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))
    >>> print([round(float(x), 4) for x in u], state.norm)   # factor 1 / (5 + 1e-6)
    [0.6, 0.8] 5.0

  References:
    Pascanu et al, On the difficulty of training recurrent neural networks, 2013.
  """
  _validate.check_number("max_norm", max_norm, low=0.0, low_open=True)
  _check_norm_type(norm_type)
  _validate.check_axis_name(axis_name)

  def init_fn(params):
    return ClipByGlobalNormState(norm=jnp.zeros([], _norms.widest_acc_dtype(jax.tree.leaves(params))))

  def update_fn(updates, state, params=None):
    _validate.check_state("clipping.clip_by_global_norm", state, ClipByGlobalNormState)
    del params
    dtype = state.norm.dtype
    norm, m, r = _norms.norm_parts(updates, norm_type, axis_name, dtype)
    c = jnp.asarray(max_norm, dtype)
    eps = jnp.asarray(_norms.NORM_EPS, dtype)
    one = jnp.ones([], dtype)
    den = norm + eps
    factor = jnp.minimum(c / den, one)
    # u = (g * a1) * a2. Usually a1 = factor, a2 = 1 (PyTorch's g * factor). When the factor
    # is subnormal (it would flush to zero: huge finite gradients), a1 = 1/sqrt(m) and
    # a2 = m * factor / sqrt(m) = c / sqrt(m) / (r + eps/m), both normal numbers.
    tiny = (factor < jnp.asarray(2.0 ** -100, dtype)) & (m > 0) & jnp.isfinite(m)
    inv = _norms.inv_sqrt(m)
    # Each scale is one division (min(c, den) / den is c / den or exactly 1): XLA computes a
    # division once, where the chain of selects before it would be copied into every leaf's
    # loop (measured: compile of chain(clip, adamw) 1.40x -> 1.25x optax's at 120 leaves).
    a1 = jnp.where(tiny, inv, jnp.minimum(c, den)) / jnp.where(tiny, one, den)
    a2 = jnp.where(tiny, inv * c, one) / jnp.where(tiny, r + eps * (inv * inv), one)
    shrunk = {}  # below float32, shrink by the unit roundoff u so rounding cannot grow the norm

    def scale(g):  # complex entries: both real components scaled
      if jnp.finfo(g.dtype).bits >= 32:
        return ((g.astype(dtype) * a1) * a2).astype(g.dtype)
      if g.dtype not in shrunk:
        u = jnp.asarray(float(jnp.finfo(g.dtype).eps) / 2, dtype)
        shrunk[g.dtype] = jnp.where(factor < one, a2 * (one - u), a2)
      return ((g.astype(dtype) * a1) * shrunk[g.dtype]).astype(g.dtype)

    out = _tree.map_components(scale, updates)
    return out, ClipByGlobalNormState(norm=norm)

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------- AGC
def unitwise_norm(x: jax.Array) -> jax.Array:
  r"""L2 norm of each unit of ``x`` in float32 or wider, shaped to broadcast against ``x``.

  A unit is one index of the last (output) axis of a Flax kernel: Dense ``(in, out)``,
  Conv ``(*spatial, in, out)``, or any ``ndim >= 2`` leaf; the norm reduces over all the
  other axes. Scalars and 1-D leaves (biases, norm scales) are a single unit: the norm of
  the whole leaf, as in the NFNet reference code and ``optax.adaptive_grad_clip``.
  Overflow-free (scaled by the unit's max-abs). These are the norms :func:`adaptive_grad_clip`
  compares.

  Args:
    x: one array (a parameter or gradient leaf).

  Returns:
    The unit norms, with the reduced axes kept as size 1.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import clipping
    >>> w = jnp.array([[3.0, 1.0], [4.0, 0.0]])   # Dense (in=2, out=2): one unit per column
    >>> print(clipping.unitwise_norm(w))
    [[5. 1.]]
    >>> print(clipping.unitwise_norm(jnp.array([3.0, 4.0])))   # a bias: one unit
    [5.]
  """
  return _norms.unitwise_norm(x)


def adaptive_grad_clip(clipping: float = 0.01, eps: float = 1e-3) -> optax.GradientTransformation:
  r"""Adaptive gradient clipping (AGC), unit-wise over the output axis of Flax kernels.

  .. math::
    G_i \leftarrow \begin{cases}
      \lambda \dfrac{\max(\|W_i\|, \epsilon)}{\|G_i\|}\, G_i & \text{if } \|G_i\| > \lambda \max(\|W_i\|, \epsilon) \\
      G_i & \text{otherwise}\end{cases}

  for every unit :math:`i` (see :func:`unitwise_norm`: the last axis of ``ndim >= 2``
  leaves; a scalar or 1-D leaf is one unit). Place it before the optimizer, on the raw
  gradients; it needs ``params``. Norms in float32 or wider, updates in the gradient dtype.

  Differences from ``optax.adaptive_grad_clip``: optax picks the reduction axes from the rank
  (rank 2 and 3: axis 0 only, i.e. a 3-D kernel ``(in, heads, dim)`` has ``heads * dim``
  units; ranks above 5 raise; a kernel with a size-1 axis such as ``(1, out)`` is squeezed
  and treated as one unit), while here every ``ndim >= 2`` leaf reduces over all axes but
  the last, so ``(in, out)``, ``(k, in, out)`` (1-D conv) and ``(1, out)`` all have ``out``
  units. Norms are also accumulated in float32 and computed without overflow here.

  Args:
    clipping: :math:`\lambda > 0`, the largest allowed ratio of unit gradient norm to unit
      parameter norm.
    eps: :math:`\epsilon \ge 0`, the smallest parameter norm used (so zero-initialised
      params can still move).

  Returns:
    An ``optax.GradientTransformation`` (empty state) whose ``update`` needs the params.

  Raises:
    ValueError: for a ``clipping`` that is not a number ``> 0`` or a negative ``eps``; at
      ``update``, when no params are passed, or for a state other than ``optax.EmptyState`` or
      ``None``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import clipping
    >>> tx = clipping.adaptive_grad_clip(0.1)
    >>> w = jnp.array([[3.0], [4.0]])             # one unit, norm 5
    >>> u, _ = tx.update(jnp.array([[6.0], [8.0]]), tx.init(w), w)  # norm 10 > 0.1 * 5
    >>> print([round(float(x), 4) for x in u.ravel()])
    [0.3, 0.4]

  References:
    Brock et al, High-Performance Large-Scale Image Recognition Without Normalization, 2021.
  """
  _validate.check_number("clipping", clipping, low=0.0, low_open=True)
  _validate.check_number("eps", eps, low=0.0)

  def update_fn(updates, state, params=None):
    _validate.check_state("clipping.adaptive_grad_clip", state, optax.EmptyState)
    _validate.need_params("adaptive_grad_clip", params)

    def clip(g, p):
      return _norms.agc_clip(g, _norms.unitwise_norm(g), _norms.unitwise_norm(p), clipping, eps)

    return jax.tree.map(clip, updates, params), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)
