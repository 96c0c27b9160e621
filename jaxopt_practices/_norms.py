"""The one overflow-safe norm kernel: global p-norms, unit-wise and segment norms, AGC scaling.

Used by ``clipping`` (global-norm clipping, AGC), ``flat`` (AGC and per-leaf norms on one
buffer) and ``monitor`` (gradient / update / parameter norms), so that every norm the
package reports or acts on is computed the same way: in float32 or wider whatever the
leaf dtype, and finite for finite inputs near the float maximum (whose squares overflow).

Two tricks. Global L2 norms (the common case) take sums of squares, one reduction per leaf
as ``optax.global_norm``, in a loop of at most two passes (:func:`l2_norms`): the first
with the entries as they are; only when a tree's sum overflowed, is NaN or fell below
``2**-100`` does a second pass take that sum again with every entry multiplied by an exact
power of two, ``2**-K`` or ``2**K`` (``K = maxexp / 2 + 32``: 96 for float32, 544 for
float64), whose squares neither overflow nor underflow. One copy of the reductions is
compiled, as the loop's body. The other norms (any ``p``, ``axis_name``, unit-wise,
segments) divide by the max-abs :math:`m` before squaring, as two multiplications by
:math:`1/\\sqrt m` (``1/m`` itself is subnormal above ``2**126`` and XLA flushes it to
zero), then multiply the root back by :math:`m`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_practices import _tree
from jaxopt_practices import _validate

NORM_EPS = 1e-6  # PyTorch's clip_grad_norm_ / AGC guard: max_norm / (total_norm + 1e-6)
_SAFE_LOW = 2.0 ** -100  # below this a plain sum of squares may have lost entries to underflow


def widest_acc_dtype(leaves: list) -> jnp.dtype:
  """The widest real accumulator dtype (float32 or wider; float32 for complex64) among ``leaves``."""
  dtypes = [_tree.real_dtype(jnp.result_type(x)) for x in leaves]
  return max(dtypes, key=lambda d: d.itemsize) if dtypes else jnp.dtype(jnp.float32)


def inv_sqrt(m: jax.Array) -> jax.Array:
  """``1 / sqrt(m)`` for finite ``m > 0``, else 1 (so ``0 * inv`` stays 0)."""
  ok = (m > 0) & jnp.isfinite(m)
  return jnp.where(ok, jax.lax.rsqrt(jnp.where(ok, m, jnp.ones_like(m))), jnp.ones_like(m))


def abs_in(x: Any, dtype: Any) -> jax.Array:
  """``|x|`` in the real ``dtype``; for complex ``x`` the modulus (the norm of its real pair)."""
  x = jnp.asarray(x)
  return jnp.abs(x).astype(dtype) if jnp.iscomplexobj(x) else jnp.abs(x.astype(dtype))


def _second_scale(total: jax.Array) -> jax.Array:
  """The scale of a second pass after a plain sum of squares ``total``: 1 when that sum is the
  norm squared as is (finite and above ``2**-100``, so no entry was lost to underflow),
  ``2**-K`` after an overflow or a NaN, ``2**K`` after an underflow (``K = maxexp / 2 + 32``)."""
  dtype = total.dtype
  k = jnp.finfo(dtype).maxexp // 2 + 32
  low = jnp.asarray(_SAFE_LOW, dtype)
  big = jnp.where(total <= low, jnp.asarray(2.0 ** k, dtype), jnp.asarray(2.0 ** -k, dtype))
  return jnp.where(jnp.isfinite(total) & (total > low), jnp.ones([], dtype), big)


def _sums_of_squares(leaves: list, dtypes: list, scales: list) -> list:
  """Per tree, the sum of ``(x * scale)**2`` over its entries (a complex one's modulus), one
  reduction per leaf, in the tree's accumulator dtype."""
  out = []
  for xs, dtype, scale in zip(leaves, dtypes, scales):
    total = jnp.zeros([], dtype)
    for x in xs:
      if jnp.size(x):
        x = abs_in(x, dtype) if jnp.iscomplexobj(x) else jnp.asarray(x).astype(dtype)
        total = total + jnp.sum(jnp.square(x * scale))
    out.append(total)
  return out


def l2_norms(trees: list, dtypes: list | None = None,
             loop: bool = True) -> list[tuple[jax.Array, jax.Array, jax.Array]]:
  r"""The L2 norms of several trees as ``(norm, m, r)`` each (``norm = m * r``), overflow-free.

  Each tree's sum of squares is taken in its :func:`widest_acc_dtype` (or ``dtypes[i]``) in
  one or two passes. The first pass sums the plain squares :math:`\sum x^2`; a tree whose sum
  is finite and above ``2**-100`` has ``norm = sqrt(sum)`` (``m = norm``, ``r = 1``). Any
  other tree makes a second pass, in which its entries are multiplied by :math:`c = 2^{-K}`
  (after an overflow or a NaN) or :math:`2^{K}` (after an underflow) before squaring: exact,
  and in range for every finite input, so ``m = 1/c`` and ``r = sqrt(sum)``. A tree holding
  Inf or NaN gives a non-finite ``m`` (its sum), so ``m`` is finite exactly when every entry
  is. ``None`` or an empty tree gives zeros.

  Compiled, the passes are either (``loop=True``) a ``lax.while_loop`` whose body is the one
  copy of the per-leaf reductions, or (``loop=False``) the plain reductions followed by a
  ``lax.cond`` whose second pass reduces each tree's entries concatenated. The loop compiles
  faster for several trees (the monitor's three, where it also steps faster); for one tree
  (clipping) the plain first pass steps faster, because its reductions multiply by no runtime
  scale (with one, XLA:CPU's reduction of 10M floats took 0.94 ms instead of 0.48 ms,
  measured). Eagerly (no tracer among the entries) the passes run in Python.
  """
  leaves = [[] if t is None else jax.tree.leaves(t) for t in trees]
  if dtypes is None:
    dtypes = [widest_acc_dtype(xs) for xs in leaves]
  dtypes = [jnp.dtype(d) for d in dtypes]
  ones = [jnp.ones([], d) for d in dtypes]
  sized = [any(jnp.size(x) for x in xs) for xs in leaves]  # an empty tree's zero sum is exact

  def second_scales(totals):
    return [_second_scale(t) if has else one for t, has, one in zip(totals, sized, ones)]

  traced = any(isinstance(x, jax.core.Tracer) for xs in leaves for x in xs)
  if traced and loop:
    def body(carry):
      passes, scales, _ = carry
      totals = _sums_of_squares(leaves, dtypes, scales)
      scales = [jnp.where(passes == 0, c2, c) for c2, c in zip(second_scales(totals), scales)]
      return passes + 1, scales, totals

    def again(carry):
      passes, scales, _ = carry
      return (passes == 0) | ((passes == 1) & jnp.any(jnp.stack([c != 1 for c in scales])))

    zeros = [jnp.zeros([], d) for d in dtypes]
    _, scales, totals = jax.lax.while_loop(again, body, (jnp.zeros([], jnp.int32), ones, zeros))
  else:
    totals = _sums_of_squares(leaves, dtypes, [1.0] * len(leaves))
    scales = second_scales(totals)
    joined = [[jnp.concatenate([jnp.ravel(x) for x in xs if jnp.size(x)])] if traced and has else xs
              for xs, has in zip(leaves, sized)]
    totals = _tree.cond(jnp.all(jnp.stack([c == 1 for c in scales])), lambda: totals,
                        lambda: _sums_of_squares(joined, dtypes, scales))
  out = []
  for total, scale, one in zip(totals, scales, ones):
    root, plain = jnp.sqrt(total), scale == 1
    m = jnp.where(plain, root, jnp.where(jnp.isfinite(total), one / scale, total))
    r = jnp.where(plain, one, root)
    out.append((m * r, m, r))
  return out


def norm_parts(tree: Any, norm_type: Any = 2.0, axis_name: str | None = None,
               dtype: Any = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""The p-norm of all entries of ``tree`` as ``(norm, m, r)``, overflow-free, float32 or wider.

  Each leaf is reduced on its own: :math:`m_l = \max_i |g_{l,i}|` and
  :math:`s_l = \sum_i (|g_{l,i}|/m_l)^p`; then, with :math:`m = \max_l m_l`,
  :math:`\|g\|_p = m\,r`, :math:`r = (\sum_l (m_l/m)^p s_l)^{1/p}`. No intermediate exceeds
  the number of entries. With ``axis_name`` the entries of every replica count (``pmax`` of
  :math:`m`, then ``psum`` of the scaled sums).

  For ``p = 2`` without ``axis_name`` this is :func:`l2_norms`: the plain one-pass sum of
  squares, and a second pass with the entries scaled by an exact power of two only when
  that sum overflows, underflows or is NaN.

  Returns:
    ``(norm, m, r)`` with ``norm = m * r``; ``norm`` is ``inf`` when an entry is infinite
    and NaN when one is NaN.
  """
  leaves = jax.tree.leaves(tree)
  dtype = widest_acc_dtype(leaves) if dtype is None else jnp.dtype(dtype)
  if not leaves:
    zero = jnp.zeros([], dtype)
    return zero, zero, zero
  concrete = _validate.known_value(norm_type)
  if concrete == 2.0 and axis_name is None:
    return l2_norms([leaves], [dtype], loop=False)[0]
  return _scaled_parts(leaves, norm_type, concrete, axis_name, dtype)


def _scaled_parts(leaves: list, norm_type: Any, concrete: float | None, axis_name: str | None,
                  dtype: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The overflow-free two-pass p-norm of :func:`norm_parts`."""
  p = jnp.asarray(norm_type, dtype)  # read only for p other than 2 and inf

  def power(x):  # x in [0, 1]
    return jnp.square(x) if concrete == 2.0 else jnp.power(x, p)

  xs = [abs_in(x, dtype) if jnp.iscomplexobj(x) else jnp.asarray(x).astype(dtype) for x in leaves]
  m_leaf = jnp.stack([jnp.max(jnp.abs(x), initial=0.0) for x in xs])
  m = jnp.max(m_leaf)
  if axis_name is not None:
    m = jax.lax.pmax(m, axis_name)
  if concrete == math.inf:
    return m, m, jnp.ones([], dtype)
  s_leaf = []
  for x, ml in zip(xs, m_leaf):
    inv = inv_sqrt(ml)
    # For p = 2 the sign does not change ((x * inv) * inv)**2, so |x| feeds only the max and
    # is not materialized as a parameter-sized temporary shared by the two reductions.
    s_leaf.append(jnp.sum(power((x if concrete == 2.0 else jnp.abs(x)) * inv * inv)))
  inv = inv_sqrt(m)
  s = jnp.sum(power((m_leaf * inv) * inv) * jnp.stack(s_leaf))
  if axis_name is not None:
    s = jax.lax.psum(s, axis_name)
  if concrete == 2.0:
    r = jnp.sqrt(s)
  else:  # for a traced p = inf: s >= 1 and s ** 0 = 1, so the norm is m as it should be.
    r = jnp.power(s, jnp.asarray(1.0, dtype) / p)
  norm = jnp.where(jnp.isinf(m), jnp.asarray(jnp.inf, dtype), m * r)
  return norm, m, r


def global_norm(tree: Any, norm_type: Any = 2.0, axis_name: str | None = None, dtype: Any = None) -> jax.Array:
  """The overflow-free p-norm of every entry of ``tree`` (see :func:`norm_parts`)."""
  return norm_parts(tree, norm_type, axis_name, dtype)[0]


def unit_axes(ndim: int) -> tuple[int, ...]:
  """The axes one AGC unit reduces over: all but the last for kernels, every axis otherwise."""
  return tuple(range(ndim)) if not _tree.is_kernel_ndim(ndim) else tuple(range(ndim - 1))


def unitwise_norm(x: jax.Array) -> jax.Array:
  """L2 norm of each unit of ``x`` (float32 or wider, overflow-free), shaped to broadcast against ``x``."""
  x = jnp.asarray(x)
  a = abs_in(x, _tree.real_dtype(x.dtype))
  axes = unit_axes(x.ndim)
  m = jnp.max(a, axis=axes, keepdims=True, initial=0.0)
  inv = inv_sqrt(m)
  return m * jnp.sqrt(jnp.sum(jnp.square((a * inv) * inv), axis=axes, keepdims=True))


def segment_norms(flat: jax.Array, ids: np.ndarray, num: int, sorted_ids: bool = False) -> jax.Array:
  """``float32[num]`` (or wider): the L2 norm of every segment of ``flat``, overflow-free, 0 when empty."""
  a = abs_in(flat, _tree.real_dtype(flat.dtype))
  m = jax.ops.segment_max(a, ids, num_segments=num, indices_are_sorted=sorted_ids)
  m = jnp.where(m > 0, m, jnp.zeros_like(m))  # empty segments give -inf
  inv = inv_sqrt(m)[ids]
  s = jax.ops.segment_sum(jnp.square((a * inv) * inv), ids, num_segments=num, indices_are_sorted=sorted_ids)
  return m * jnp.sqrt(s)


def agc_clip(g: jax.Array, g_norm: jax.Array, p_norm: jax.Array, clipping: Any, eps: Any) -> jax.Array:
  r"""AGC on one array: ``g * lam*max(|W|, eps)/|G|`` where ``|G| > lam*max(|W|, eps)``, else ``g``.

  ``g_norm`` / ``p_norm`` broadcast against ``g`` (unit norms). The factor is applied as two
  multiplications by :math:`1/\sqrt{|G|}` so no intermediate is subnormal. Computed in
  float32 or wider, returned in ``g``'s dtype; complex ``g`` is scaled as real pairs. Below
  float32 (bfloat16, float16) a clipping factor is shrunk by the dtype's unit roundoff
  :math:`u`, so rounding the result cannot push a unit's norm above the bound (as in
  ``clipping.clip_by_global_norm``).
  """
  g = jnp.asarray(g)
  acc = _tree.real_dtype(g.dtype)
  max_norm = jnp.asarray(clipping, acc) * jnp.maximum(p_norm.astype(acc), jnp.asarray(eps, acc))
  g_norm = g_norm.astype(acc)
  inv = jax.lax.rsqrt(jnp.maximum(g_norm, jnp.asarray(NORM_EPS, acc)))
  factor = inv * max_norm
  if jnp.finfo(g.dtype).bits < 32:
    factor = factor * (1.0 - jnp.asarray(float(jnp.finfo(g.dtype).eps) / 2, acc))

  def clip(x):
    return jnp.where(g_norm > max_norm, (x.astype(acc) * inv) * factor, x.astype(acc)).astype(x.dtype)

  return _tree.componentwise(clip, g)
