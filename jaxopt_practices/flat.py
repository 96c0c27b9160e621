"""Speed: train on one contiguous buffer instead of a pytree of thousands of leaves.

An optimizer applied leaf by leaf emits one small kernel (and, on CPU, one loop) per leaf
and per operation: with optax's Adam on a 10M-parameter tree, a donated step costs about
11 ms with 500 leaves but 55-59 ms with 5,000 leaves, and the 5,000-leaf step takes about
45 s to compile. Keeping params, gradients and optimizer state in *one* flat buffer brings
the step to about 7 ms and the compile to about 0.3 s (``optax.flatten`` does not help: it
concatenates the gradients every step and splits them again). Measured numbers for this
machine are in ``benchmarks/README.md``.

How to train on a flat buffer (the model still sees its pytree):

>>> import jax.numpy as jnp, optax
>>> from jaxopt_practices import adaptive, flat
>>> params = {"w": jnp.full((2, 3), 0.5), "b": jnp.zeros(3)}
>>> buf, layout = flat.flatten(params)        # one 1-D array + where each leaf lives
>>> tx = optax.chain(
...     flat.adaptive_grad_clip(0.01, layout=layout),        # unit-wise ops need the layout
...     adaptive.adamw(1e-3, mask=layout.mask("auto")))      # masks become flat boolean vectors
>>> loss_fn = lambda p, x: jnp.mean((x @ p["w"] + p["b"][None, :]) ** 2)
>>> step = flat.flat_train_step(loss_fn, tx, layout)  # loss on layout.unravel(buf): grads come out flat
>>> state = tx.init(buf)
>>> for x in [jnp.ones((4, 2))] * 3:
...   buf, state, loss = step(buf, state, x)           # buf and state are donated
>>> trained = layout.unravel(buf)
>>> print(trained["w"].shape, bool(trained["w"][0, 0] < 0.5))
(2, 3) True

What works on the flat buffer, and how (all seven practices):

* elementwise transforms work unchanged: every schedule (1), ``plateau`` (2, a scalar),
  ``momentum`` / ``adaptive`` (4, 5), ``clip_by_value`` and ``clip_by_global_norm`` (6:
  the global norm of the buffer *is* the global norm of the tree), ``l2_penalty``,
  ``decoupled_weight_decay``, ``ema``, ``swa`` (7), ``skip_nonfinite``;
* initializers (3) run on the tree before :func:`flatten`;
* anything with a per-leaf ``mask`` takes ``layout.mask(mask)``: ``"auto"`` (kernels, the
  leaves with ``ndim >= 2``), ``None``, a pytree of bools or a callable, as a flat boolean vector;
* unit-wise and per-leaf operations use segment ids: :func:`adaptive_grad_clip` (AGC over
  the output axis of each kernel), :meth:`FlatLayout.leaf_norms`, :meth:`FlatLayout.unit_norms`;
* ``regularization.gradient_noise`` works but draws its noise for one array instead of one
  per leaf: same distribution, not the same random numbers as the tree path.
* ``momentum.asgd`` is elementwise and works unchanged; ``adaptive.muon`` refuses the buffer
  (``ValueError``: it is 1-D, Muon takes matrices); ``adaptive.adafactor`` treats it as *one*
  1-D param (unfactored, one RMS scale and one clip for the whole buffer), which is not torch's
  per-tensor Adafactor: train Muon and Adafactor on the pytree.

Donation: :func:`flat_train_step` donates the params and the optimizer state
(``donate_argnums=(0, 1)``) so XLA updates them in place; without it a CPU step is 3-4x
slower (every step allocates and writes fresh copies of all buffers). Do not reuse a
donated array after the call.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_practices import _fans
from jaxopt_practices import _norms
from jaxopt_practices import _step
from jaxopt_practices import _tree
from jaxopt_practices import _validate

__all__ = ["FlatLayout", "flatten", "adaptive_grad_clip", "flat_train_step"]


class FlatLayout:
  """Where each leaf of a params pytree lives inside one flat 1-D buffer.

  Built once from the params (or their shapes); every method is jit-friendly (the layout
  is static: offsets, segment ids and masks are NumPy constants). Calling the layout is
  :meth:`unravel`, so ``flat, unravel = flatten(params)`` reads naturally.

  Args:
    params: a pytree of floating arrays (or ``jax.ShapeDtypeStruct``).
    dtype: the buffer's dtype (default: the widest of the leaves' dtypes).

  Attributes:
    treedef: the params' tree structure.
    shapes, dtypes: per leaf, in ``jax.tree.leaves`` order.
    offsets: start of each leaf in the buffer (``len = num_leaves + 1``; the last is ``size``).
    size: total number of entries.
    dtype: the buffer's dtype (the params' common floating dtype, or the widest).

  Raises:
    ValueError: if a leaf is not floating or ``dtype`` is not a floating dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import flat
    >>> layout = flat.FlatLayout({"b": jnp.zeros(2), "w": jnp.ones((2, 3))})
    >>> layout.size, layout.shapes, layout.offsets.tolist()
    (8, [(2,), (2, 3)], [0, 2, 8])
  """

  def __init__(self, params: Any, dtype: Any = None):
    leaves, treedef = jax.tree.flatten(params)
    self.treedef: Any = treedef  # a PyTreeDef (typed Any: jaxlib's stub lacks flatten_up_to)
    self.shapes = [tuple(jnp.shape(x)) for x in leaves]
    self.dtypes = []
    for i, x in enumerate(leaves):
      try:
        d = jnp.dtype(jnp.result_type(x))
      except TypeError:  # a string leaf, ...
        d = None
      if d is None or not jnp.issubdtype(d, jnp.floating):
        raise ValueError(f"params must hold floating leaves only; leaf {i} is {x!r:.80} (dtype {d}).")
      self.dtypes.append(d)
    if dtype is None:
      dtype = max(self.dtypes, key=lambda d: d.itemsize) if self.dtypes else jnp.dtype(jnp.float32)
    self.dtype = _fans.float_dtype(dtype)  # an integer buffer would truncate the params
    sizes = [int(np.prod(s)) for s in self.shapes]
    self.offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
    self.size = int(self.offsets[-1])

  @property
  def num_leaves(self) -> int:
    return len(self.shapes)

  # --------------------------------------------------------------------------- conversions
  def ravel(self, tree: Any) -> jax.Array:
    """Concatenates the leaves of ``tree`` (shaped like the params) into one buffer."""
    leaves = self.treedef.flatten_up_to(tree)
    if not leaves:
      return jnp.zeros((0,), self.dtype)
    return jnp.concatenate([jnp.asarray(x).astype(self.dtype).reshape(-1) for x in leaves])

  def unravel(self, flat: jax.Array) -> Any:
    """The pytree view of ``flat``: static slices, reshaped and cast to each leaf's dtype."""
    if flat.shape != (self.size,):
      raise ValueError(f"flat must have shape ({self.size},), got shape {flat.shape}.")
    leaves = [jax.lax.slice(flat, (int(a),), (int(b),)).reshape(s).astype(d)
              for a, b, s, d in zip(self.offsets[:-1], self.offsets[1:], self.shapes, self.dtypes)]
    return jax.tree.unflatten(self.treedef, leaves)

  __call__ = unravel

  def template(self) -> Any:
    """The params' structure with ``jax.ShapeDtypeStruct`` leaves (for mask callables)."""
    return jax.tree.unflatten(self.treedef, [jax.ShapeDtypeStruct(s, d) for s, d in zip(self.shapes, self.dtypes)])

  # --------------------------------------------------------------------------- masks and segments
  def _per_entry(self, per_leaf: list) -> np.ndarray:
    sizes = np.diff(self.offsets)
    return np.repeat(np.asarray(per_leaf), sizes) if per_leaf else np.zeros((0,), np.asarray(per_leaf).dtype)

  @functools.cached_property
  def segment_ids(self) -> np.ndarray:
    """``int32[size]``: the index of the leaf each entry belongs to."""
    return self._per_entry(list(range(self.num_leaves))).astype(np.int32)

  def mask(self, mask: Any = "auto") -> np.ndarray:
    """A per-leaf mask as a flat boolean vector (for ``mask=`` of weight decay and friends).

    Args:
      mask: ``"auto"`` (leaves with ``ndim >= 2``: kernels yes, biases and scales no),
        ``None`` (every entry), a pytree of bools shaped like the params or a prefix of it
        (``{"dense": False}`` leaves a whole subtree out, as in ``optax.masked``; a leaf may
        also be a boolean array of the leaf's shape), or a callable returning one (called on
        :meth:`template`, so it may look at shapes and paths, not values).

    Returns:
      ``bool[size]``, a NumPy constant.
    """
    _validate.check_mask(mask)
    selected = _tree.resolve_mask(mask, self.template())
    parts = [np.broadcast_to(np.asarray(m, dtype=bool), shape).reshape(-1)
             for m, shape in zip(self.treedef.flatten_up_to(selected), self.shapes)]
    return np.concatenate(parts) if parts else np.zeros((0,), bool)

  @functools.cached_property
  def _units(self) -> tuple[np.ndarray, int]:
    ids, start = [], 0
    for shape in self.shapes:
      n = int(np.prod(shape))
      if _tree.is_kernel_ndim(len(shape)):  # unit = index along the last (output) axis, as clipping.unitwise_norm
        ids.append(start + np.tile(np.arange(shape[-1], dtype=np.int64), n // max(shape[-1], 1)))
        start += shape[-1]
      else:  # scalars and vectors: one unit
        ids.append(np.full((n,), start, np.int64))
        start += 1
    flat_ids = np.concatenate(ids).astype(np.int32) if ids else np.zeros((0,), np.int32)
    return flat_ids, start

  @property
  def unit_ids(self) -> np.ndarray:
    """``int32[size]``: the AGC unit of each entry (an output unit of a kernel, or a whole 0-D/1-D leaf)."""
    return self._units[0]

  @property
  def num_units(self) -> int:
    return self._units[1]

  def leaf_norms(self, flat: jax.Array) -> jax.Array:
    """``float32[num_leaves]``: the L2 norm of every leaf (overflow-free, 0 for empty leaves)."""
    return _norms.segment_norms(flat, self.segment_ids, self.num_leaves, sorted_ids=True)

  def unit_norms(self, flat: jax.Array) -> jax.Array:
    """``float32[num_units]``: the L2 norm of every AGC unit (see ``clipping.unitwise_norm``)."""
    return _norms.segment_norms(flat, self.unit_ids, self.num_units)


def flatten(params: Any, dtype: Any = None) -> tuple[jax.Array, FlatLayout]:
  """One flat buffer holding every leaf of ``params``, and its :class:`FlatLayout`.

  Args:
    params: a pytree of floating arrays.
    dtype: the buffer's floating dtype (default: the leaves' common dtype, or the widest).

  Returns:
    ``(flat, layout)``; ``layout(flat)`` (or ``layout.unravel(flat)``) gives the pytree back.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import flat
    >>> buf, unravel = flat.flatten({"b": jnp.zeros(2), "w": jnp.ones((2, 2))})
    >>> print(buf, unravel(buf)["w"].shape)
    [0. 0. 1. 1. 1. 1.] (2, 2)
  """
  layout = FlatLayout(params, dtype)
  return layout.ravel(params), layout


def adaptive_grad_clip(clipping: float = 0.01, eps: float = 1e-3,
                       layout: FlatLayout | None = None) -> optax.GradientTransformation:
  r"""Adaptive gradient clipping (AGC) on a flat buffer, unit by unit through ``layout``.

  .. math::
    G_i \leftarrow G_i \min\!\Big(1, \frac{\lambda \max(\|W_i\|, \epsilon)}{\|G_i\|}\Big)

  for every unit :math:`i` of ``layout`` (one output unit of each ``ndim >= 2`` leaf, a
  whole scalar or vector leaf): the same result as ``clipping.adaptive_grad_clip`` on the
  pytree (the same overflow-safe norms and scaling, finite for huge finite gradients), with
  the unit norms taken by ``segment_sum`` over ``layout.unit_ids``. It reads like the
  per-leaf one: ``clipping.adaptive_grad_clip(0.01)`` becomes
  ``flat.adaptive_grad_clip(0.01, layout=layout)``. The 0.x form with the layout first,
  ``adaptive_grad_clip(layout, clipping, eps)``, still works and warns (deprecated).

  Args:
    clipping: :math:`\lambda > 0`.
    eps: :math:`\epsilon \ge 0`.
    layout: the :class:`FlatLayout` of the params (required; pass it by keyword).

  Returns:
    An ``optax.GradientTransformation`` over flat buffers (it needs ``params``).

  Raises:
    ValueError: if ``layout`` is not a :class:`FlatLayout`, ``clipping <= 0`` or ``eps < 0``;
      at ``update``, if ``params`` is missing.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import flat
    >>> w, layout = flat.flatten({"w": jnp.array([[3.0], [4.0]])})   # one unit, norm 5
    >>> tx = flat.adaptive_grad_clip(0.1, layout=layout)
    >>> u, _ = tx.update(jnp.array([6.0, 8.0]), tx.init(w), w)       # norm 10 > 0.1 * 5
    >>> print([round(float(x), 4) for x in u])
    [0.3, 0.4]

  References:
    Brock et al, High-Performance Large-Scale Image Recognition Without Normalization, 2021.
  """
  if isinstance(clipping, FlatLayout):  # the deprecated form adaptive_grad_clip(layout, clipping, eps)
    warnings.warn("flat.adaptive_grad_clip(layout, clipping, eps) is deprecated and will be removed in the next "
                  "release: use flat.adaptive_grad_clip(clipping, eps, layout=layout), as "
                  "clipping.adaptive_grad_clip(clipping, eps).", DeprecationWarning, stacklevel=2)
    clipping, eps, layout = eps, (1e-3 if layout is None else layout), clipping  # type: ignore[assignment]
  if not isinstance(layout, FlatLayout):
    raise ValueError(f"layout must be a FlatLayout, got layout = {layout!r}.")
  _validate.check_number("clipping", clipping, low=0.0, low_open=True)
  _validate.check_number("eps", eps, low=0.0)

  def update_fn(updates, state, params=None):
    _validate.check_state("flat.adaptive_grad_clip", state, optax.EmptyState)
    _validate.need_params("adaptive_grad_clip", params)
    ids = layout.unit_ids
    g_norm, p_norm = layout.unit_norms(updates), layout.unit_norms(params)
    return _norms.agc_clip(updates, g_norm[ids], p_norm[ids], clipping, eps), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def flat_train_step(
    loss_fn: Callable[[Any, Any], jax.Array],
    tx: optax.GradientTransformation,
    layout: FlatLayout,
    *,
    donate: bool = True,
    has_aux: bool = False,
    value_from_loss: bool = False,
) -> Callable[..., tuple[jax.Array, Any, Any]]:
  r"""A jitted train step on a flat buffer: the loss sees the pytree, the optimizer the buffer.

  .. math:: g = \nabla_{\text{flat}}\, L(\mathrm{unravel}(\text{flat}); B), \quad
            (u, s) = \mathrm{tx.update}(g, s, \text{flat}), \quad \text{flat} \leftarrow \text{flat} + u

  Differentiating through ``layout.unravel`` (static slices) gives the gradient already as
  one flat buffer, so the optimizer runs a handful of fused loops over one array whatever
  the number of leaves.

  Args:
    loss_fn: ``loss_fn(params_tree, batch) -> scalar`` (``(scalar, aux)`` with ``has_aux``).
    tx: an optimizer over flat buffers (see the module docstring for masks and AGC).
    layout: from :func:`flatten`.
    donate: donate ``flat`` and ``opt_state`` (in-place update; 3-4x faster on CPU).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    value_from_loss: pass the loss as ``value=`` to ``tx.update`` (``reduce_on_plateau``).

  Returns:
    ``step(flat, opt_state, batch, **extra_args) -> (flat, opt_state, loss)``.

  Raises:
    ValueError: if ``loss_fn`` is not callable, ``tx`` is not a gradient transformation,
      ``layout`` is not a :class:`FlatLayout` or a flag is not a bool.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import flat
    >>> buf, layout = flat.flatten({"w": jnp.zeros(3)})
    >>> tx = optax.sgd(0.5)
    >>> step = flat.flat_train_step(lambda p, x: jnp.sum((p["w"] - x) ** 2), tx, layout)
    >>> buf, state, loss = step(buf, tx.init(buf), jnp.ones(3))
    >>> print(layout(buf)["w"])
    [1. 1. 1.]
  """
  _validate.check_callable("loss_fn", loss_fn)
  _validate.check_transform("tx", tx)
  if not isinstance(layout, FlatLayout):
    raise ValueError(f"layout must be a FlatLayout, got layout = {layout!r}.")
  _validate.check_bool("donate", donate)
  _validate.check_bool("has_aux", has_aux)
  _validate.check_bool("value_from_loss", value_from_loss)
  step = _step.train_step(loss_fn, tx, has_aux=has_aux, value_from_loss=value_from_loss, unravel=layout.unravel)
  jitted = jax.jit(step, donate_argnums=(0, 1) if donate else ())

  def wrapped(flat, opt_state, batch, **extra_args):
    if donate:
      flat, opt_state = _unalias(flat, opt_state)
    return jitted(flat, opt_state, batch, extra_args)

  return wrapped


def _unalias(flat: jax.Array, opt_state: Any) -> tuple[jax.Array, Any]:
  """Copies any buffer that appears twice among ``flat`` and the state leaves.

  An ``init`` may legitimately return the params array itself (e.g. an EMA of the params,
  or a float32 ``astype`` that is a no-op); donating one buffer twice is an error, so the
  second occurrence is copied. A few ``id`` checks per step: the flat state has few leaves.
  """
  seen = {id(flat)}

  def fresh(x):
    if isinstance(x, jax.Array) and id(x) in seen:
      return jnp.copy(x)
    seen.add(id(x))
    return x

  return flat, jax.tree.map(fresh, opt_state)
