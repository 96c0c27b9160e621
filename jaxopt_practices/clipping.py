"""Practice 6 — gradient clipping: by value, by global norm, adaptive (AGC), and skipping bad steps.

``clip_by_value`` and ``clip_by_global_norm`` follow PyTorch's ``clip_grad_value_`` and
``clip_grad_norm_``. Norms are computed in float32 (or wider) whatever the gradient dtype,
and without overflow: every leaf is divided by the global max-abs before it is raised to
the power ``p``, so float32 gradients around ``1e20`` (whose squares overflow) still clip
to ``max_norm``. Updates come back in the gradient's dtype.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_practices import _tree
from jaxopt_practices import _validate

_NORM_EPS = 1e-6  # PyTorch's clip_grad_norm_: max_norm / (total_norm + 1e-6)


def _widest_acc_dtype(leaves: list) -> jnp.dtype:
  dtypes = [_tree.acc_dtype(jnp.result_type(x)) for x in leaves]
  return max(dtypes, key=lambda d: d.itemsize) if dtypes else jnp.dtype(jnp.float32)


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
    An ``optax.GradientTransformation`` with an empty state.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import clipping
    >>> tx = clipping.clip_by_value(1.0)
    >>> u, _ = tx.update(jnp.array([-3.0, 0.5, 2.0]), tx.init(jnp.zeros(3)))
    >>> print(u)
    [-1.   0.5  1. ]
  """
  _validate.check_number("max_abs", max_abs, low=0.0, low_open=True)

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    c = jnp.asarray(max_abs, jnp.float32)

    def clip(g):
      acc = _tree.acc_dtype(g.dtype)
      return jnp.clip(g.astype(acc), -c.astype(acc), c.astype(acc)).astype(g.dtype)

    return jax.tree.map(clip, updates), state

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------- global norm
class ClipByGlobalNormState(NamedTuple):
  """The global gradient norm of the last update, before clipping (0 before the first)."""
  norm: jax.Array


def _inv_sqrt(m: jax.Array) -> jax.Array:
  """``1 / sqrt(m)`` for finite ``m > 0``, else 1 (so ``0 * inv`` stays 0)."""
  ok = (m > 0) & jnp.isfinite(m)
  return jnp.where(ok, jax.lax.rsqrt(jnp.where(ok, m, jnp.ones_like(m))), jnp.ones_like(m))


def global_norm(tree: Any, norm_type: Any = 2.0, axis_name: str | None = None,
                dtype: Any = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""The p-norm of all entries of ``tree``, overflow-free, in float32 or wider.

  Each leaf is reduced on its own: :math:`m_l = \max_i |g_{l,i}|` and
  :math:`s_l = \sum_i (|g_{l,i}|/m_l)^p`; then, with :math:`m = \max_l m_l`,
  :math:`\|g\|_p = m\,(\sum_l (m_l/m)^p s_l)^{1/p}`. No intermediate exceeds the number of
  entries, so float32 gradients near ``1e20`` (whose squares overflow) are fine. Divisions
  by :math:`m` are two multiplications by :math:`1/\sqrt m`, which stays a normal number
  for every finite :math:`m` (``1/m`` is subnormal above ``2**126``, flushed to zero by
  XLA). With ``axis_name`` the entries of every replica count (``pmax`` of :math:`m`, then
  ``psum`` of the scaled sums).

  For ``p = 2`` without ``axis_name`` the plain one-pass sum of squares is used whenever it
  is finite and above ``2**-100`` (then ``m = norm`` and ``r = 1``); the scaled version runs
  (under ``lax.cond``) only when it is not.

  Returns:
    ``(norm, m, r)``: the norm, the max-abs and :math:`(\sum_l (m_l/m)^p s_l)^{1/p}`
    (``norm = m * r``; ``norm`` is ``inf`` when an entry is infinite, NaN when one is NaN).
  """
  leaves = jax.tree.leaves(tree)
  dtype = _widest_acc_dtype(leaves) if dtype is None else jnp.dtype(dtype)
  if not leaves:
    zero = jnp.zeros([], dtype)
    return zero, zero, zero
  concrete = _validate.known_value(norm_type)
  if concrete == 2.0 and axis_name is None:
    # Fast path, one pass: the plain sum of squares, exact whenever it neither overflows nor
    # underflows; otherwise (inf, NaN, or below 2**-100) the scaled two-pass version below.
    total = sum(jnp.sum(jnp.square(x.astype(dtype))) for x in leaves)
    safe = jnp.isfinite(total) & (total > jnp.asarray(2.0 ** -100, dtype))
    return jax.lax.cond(safe, lambda _: (jnp.sqrt(total), jnp.sqrt(total), jnp.ones([], dtype)),
                        lambda _: _scaled_norm(leaves, norm_type, concrete, None, dtype), None)
  return _scaled_norm(leaves, norm_type, concrete, axis_name, dtype)


def _scaled_norm(leaves: list, norm_type: Any, concrete: float | None, axis_name: str | None,
                 dtype: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The overflow-free two-pass p-norm of :func:`global_norm`."""
  p = None if concrete in (2.0, math.inf) else jnp.asarray(norm_type, dtype)

  def power(x):  # x in [0, 1]
    return jnp.square(x) if concrete == 2.0 else jnp.power(x, p)

  absg = [jnp.abs(x.astype(dtype)) for x in leaves]
  m_leaf = jnp.stack([jnp.max(a, initial=0.0) for a in absg])
  m = jnp.max(m_leaf)
  if axis_name is not None:
    m = jax.lax.pmax(m, axis_name)
  if concrete == math.inf:
    return m, m, jnp.ones([], dtype)
  s_leaf = []
  for a, ml in zip(absg, m_leaf):
    inv = _inv_sqrt(ml)
    s_leaf.append(jnp.sum(power((a * inv) * inv)))
  inv = _inv_sqrt(m)
  s = jnp.sum(power((m_leaf * inv) * inv) * jnp.stack(s_leaf))
  if axis_name is not None:
    s = jax.lax.psum(s, axis_name)
  if concrete == 2.0:
    r = jnp.sqrt(s)
  else:  # for a traced p = inf: s >= 1 and s ** 0 = 1, so the norm is m as it should be.
    r = jnp.power(s, jnp.asarray(1.0, dtype) / p)
  norm = jnp.where(jnp.isinf(m), jnp.asarray(jnp.inf, dtype), m * r)
  return norm, m, r


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
  if axis_name is not None and not isinstance(axis_name, str):
    raise ValueError(f"axis_name must be a string or None, got axis_name = {axis_name!r}.")

  def init_fn(params):
    return ClipByGlobalNormState(norm=jnp.zeros([], _widest_acc_dtype(jax.tree.leaves(params))))

  def update_fn(updates, state, params=None):
    del params
    dtype = state.norm.dtype
    norm, m, r = global_norm(updates, norm_type, axis_name, dtype)
    c = jnp.asarray(max_norm, jnp.float32).astype(dtype)
    eps = jnp.asarray(_NORM_EPS, dtype)
    one = jnp.ones([], dtype)
    factor = jnp.minimum(c / (norm + eps), one)
    # u = (g * a1) * a2. Usually a1 = factor, a2 = 1 (PyTorch's g * factor). When the factor
    # is subnormal (it would flush to zero: huge finite gradients), a1 = 1/sqrt(m) and
    # a2 = m * factor / sqrt(m), both normal numbers.
    tiny = (factor < jnp.asarray(2.0 ** -100, dtype)) & (m > 0) & jnp.isfinite(m)
    inv = _inv_sqrt(m)
    m_factor = c / (r + eps * (inv * inv))  # = m * c / (m r + eps), without forming m r
    a1 = jnp.where(tiny, inv, factor)
    a2 = jnp.where(tiny, inv * m_factor, one)
    shrunk = {}  # below float32, shrink by the unit roundoff u so rounding cannot grow the norm

    def scale(g):
      if jnp.dtype(g.dtype).itemsize >= 4:
        return ((g.astype(dtype) * a1) * a2).astype(g.dtype)
      if g.dtype not in shrunk:
        u = jnp.asarray(float(jnp.finfo(g.dtype).eps) / 2, dtype)
        shrunk[g.dtype] = jnp.where(factor < one, a2 * (one - u), a2)
      return ((g.astype(dtype) * a1) * shrunk[g.dtype]).astype(g.dtype)

    out = jax.tree.map(scale, updates)
    return out, ClipByGlobalNormState(norm=norm)

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------- AGC
def unitwise_norm(x: jax.Array) -> jax.Array:
  r"""L2 norm of each unit of ``x`` in float32 or wider, shaped to broadcast against ``x``.

  A unit is one index of the last (output) axis of a Flax kernel: Dense ``(in, out)``,
  Conv ``(*spatial, in, out)``, or any ``ndim >= 2`` leaf; the norm reduces over all the
  other axes. Scalars and 1-D leaves (biases, norm scales) are a single unit: the norm of
  the whole leaf, as in the NFNet reference code and ``optax.adaptive_grad_clip``.
  Overflow-free (scaled by the unit's max-abs).
  """
  a = jnp.abs(x.astype(_tree.acc_dtype(x.dtype)))
  axes = tuple(range(x.ndim)) if x.ndim <= 1 else tuple(range(x.ndim - 1))
  m = jnp.max(a, axis=axes, keepdims=True, initial=0.0)
  inv = _inv_sqrt(m)
  return m * jnp.sqrt(jnp.sum(jnp.square((a * inv) * inv), axis=axes, keepdims=True))


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
    An ``optax.GradientTransformation`` with an empty state.

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

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("adaptive_grad_clip needs the params: call update(updates, state, params).")
    lam = jnp.asarray(clipping, jnp.float32)
    e = jnp.asarray(eps, jnp.float32)

    def clip(g, p):
      acc = _tree.acc_dtype(g.dtype)
      g_norm = unitwise_norm(g)
      max_norm = lam.astype(acc) * jnp.maximum(unitwise_norm(p).astype(acc), e.astype(acc))
      inv = jax.lax.rsqrt(jnp.maximum(g_norm, jnp.asarray(1e-6, acc)))  # g * max / |g|, no subnormals
      scaled = (g.astype(acc) * inv) * (inv * max_norm)
      return jnp.where(g_norm > max_norm, scaled, g.astype(acc)).astype(g.dtype)

    return jax.tree.map(clip, updates, params), state

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------- skip non-finite
class SkipNonfiniteState(NamedTuple):
  """Counts of skipped steps, the failure flag and the wrapped optimizer's state."""
  total_nonfinite: jax.Array
  consecutive_nonfinite: jax.Array
  failed: jax.Array
  inner_state: Any


class NonfiniteGradientsError(FloatingPointError):
  """Raised (through ``jax.debug.callback``) after too many non-finite steps in a row."""


def _raise_if_failed(failed, consecutive, max_consecutive):
  if np.any(failed):
    raise NonfiniteGradientsError(
        f"skip_nonfinite: {int(np.max(consecutive))} consecutive steps with NaN/Inf gradients "
        f"or updates, more than max_consecutive = {int(np.max(max_consecutive))}; the updates are NaN.")


def _all_finite(tree: Any) -> jax.Array:
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.array(True)


def skip_nonfinite(inner: optax.GradientTransformation, max_consecutive: int | None = None, *,
                   on_failure: str = "raise") -> optax.GradientTransformationExtraArgs:
  r"""Skips steps whose gradients (or ``inner``'s updates) hold NaN or Inf.

  On a bad step the updates are zeros (params unchanged) and ``inner``'s state is kept
  bitwise as it was, so a run with bad steps ends exactly where the same run without those
  steps would. Bad steps are counted (``total_nonfinite``, ``consecutive_nonfinite``); a good
  step resets the consecutive count.

  With ``max_consecutive = k``, up to ``k`` bad steps in a row are skipped; the next
  consecutive bad step fails loudly: (1) the updates of that and every later step are NaN,
  so training visibly diverges, and ``state.failed`` is set for good; (2) with
  ``on_failure="raise"`` (the default) it also raises :class:`NonfiniteGradientsError`
  through ``jax.debug.callback`` (only called on failure, inside a ``lax.cond``): the
  message comes back as a ``JaxRuntimeError`` eagerly and under ``jit`` / ``pmap`` when the
  step runs (at the latest when its result is read; under ``pmap`` JAX also keeps the error
  in its runtime token, so later ``jax.effects_barrier()`` calls re-raise it). ``on_failure="nan"`` skips the
  exception (e.g. where host callbacks are unavailable) and keeps only (1). With
  ``max_consecutive=None`` bad steps are skipped forever (but counted).

  Differs from ``optax.apply_if_finite``: that one, after too many bad steps, silently
  *applies* the bad update; also ``max_consecutive=None``, the failure, and checking the
  inner updates as well as the gradients.

  Args:
    inner: the optimizer to protect (any ``GradientTransformation``, extra args forwarded).
    max_consecutive: ``None`` or an integer ``>= 0``.
    on_failure: ``"raise"`` or ``"nan"``, see above.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; its state is :class:`SkipNonfiniteState`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import clipping
    >>> tx = clipping.skip_nonfinite(optax.sgd(0.1))
    >>> u, state = tx.update(jnp.array([jnp.nan]), tx.init(jnp.zeros(1)))
    >>> print(u, state.total_nonfinite)
    [0.] 1
  """
  if not isinstance(inner, optax.GradientTransformation):
    raise ValueError(f"inner must be an optax.GradientTransformation, got inner = {inner!r}.")
  if max_consecutive is not None:
    _validate.check_int("max_consecutive", max_consecutive, low=0)
  _validate.check_choice("on_failure", on_failure, ("raise", "nan"))
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    zero = jnp.zeros([], jnp.int32)
    return SkipNonfiniteState(total_nonfinite=zero, consecutive_nonfinite=zero,
                              failed=jnp.array(False), inner_state=inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
    ok = _all_finite(updates) & _all_finite(new_updates)
    consecutive = jnp.where(ok, jnp.zeros([], jnp.int32), _tree.increment(state.consecutive_nonfinite))
    total = jnp.where(ok, state.total_nonfinite, _tree.increment(state.total_nonfinite))
    out = jax.tree.map(lambda u: jnp.where(ok, u, jnp.zeros_like(u)), new_updates)
    inner_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_inner, state.inner_state)
    failed = state.failed
    if max_consecutive is not None:
      limit = jnp.asarray(max_consecutive, jnp.int32)
      failed = failed | (consecutive > limit)
      out = jax.tree.map(
          lambda u: jnp.where(failed, jnp.full_like(u, jnp.nan), u)
          if jnp.issubdtype(u.dtype, jnp.inexact) else u, out)
      if on_failure == "raise":
        jax.lax.cond(failed,
                     lambda *a: jax.debug.callback(_raise_if_failed, *a),
                     lambda *a: None,
                     failed, consecutive, limit)
    return out, SkipNonfiniteState(total_nonfinite=total, consecutive_nonfinite=consecutive,
                                   failed=failed, inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
