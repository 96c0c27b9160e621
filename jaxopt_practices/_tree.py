"""Pytree helpers shared by the practices: dtypes, moments, masks and finding states.

Conventions: accumulators live in float32 (or wider, e.g. float64 under x64) whatever the
parameter dtype; updates go back out in the gradient's dtype. Scalars (learning rates, betas,
bias corrections) meet each leaf in its :func:`real_dtype` (:func:`per_dtype`), so float64
leaves get float64 scalars. Complex leaves keep complex64 / complex128 accumulators and are
optimized as real pairs, as PyTorch does (:func:`componentwise`).

Three shared rules live here and nowhere else:

* the *kernel* rule (:func:`is_kernel`): a leaf with ``ndim >= 2`` is a kernel; it decides
  ``mask="auto"`` (only kernels decay) and the units of AGC (one per output of a kernel);
* masks (:func:`resolve_mask`): ``"auto"``, ``None``, a pytree of bools (or a prefix of
  the params tree, as ``optax.masked`` takes) or a callable;
* the state search (:func:`find_states`, :func:`find_state`): one lookup contract for every
  reader (``monitor.stats``, ``plateau.scale``, ``regularization.ema_params``, ...) over any
  container (a raw optax state, a linen ``TrainState``, an ``nnx.Optimizer`` or its
  ``opt_state``, whose leaves are ``nnx.Variable`` objects), and :func:`replace_state`, which
  gives back the same kind of container with that one state replaced (``plateau.step``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxopt_practices import _validate


def acc_dtype(dtype: Any) -> jnp.dtype:
  """The accumulator dtype for values of ``dtype``: float32 or wider; complex values keep theirs."""
  dtype = jnp.dtype(dtype)
  if jnp.issubdtype(dtype, jnp.complexfloating):
    return dtype  # complex64 or complex128: the real pairs are float32 or float64
  if not jnp.issubdtype(dtype, jnp.floating):
    return jnp.dtype(jnp.float32)
  return dtype if dtype.itemsize >= 4 else jnp.dtype(jnp.float32)


def real_dtype(dtype: Any) -> jnp.dtype:
  """The real dtype that scalars meet values of ``dtype`` in: float32, or float64 for float64 / complex128.

  Learning rates, betas, bias corrections, norms and clipping factors are computed in it, so
  float64 params get float64 scalars under x64 while float32 and bfloat16 keep float32 ones.
  """
  return jnp.dtype(jnp.finfo(acc_dtype(dtype)).dtype)


def componentwise(fn: Callable[..., Any], *xs: Any) -> Any:
  """``fn(*xs)``; complex arrays among ``xs`` go through ``fn`` as real pairs (``torch.view_as_real``).

  ``fn`` is elementwise and written for real arrays: for complex inputs it runs once on the
  real parts and once on the imaginary parts (other inputs, e.g. scalars, go to both) and the
  results (an array or a tuple of arrays) are recombined into complex arrays. This is how
  PyTorch optimizes complex params: every moment, clip and decay acts on each real component.
  """
  arrays = [jnp.asarray(x) for x in xs]
  if not any(jnp.iscomplexobj(x) for x in arrays):
    return fn(*arrays)
  re = fn(*[jnp.real(x) if jnp.iscomplexobj(x) else x for x in arrays])
  im = fn(*[jnp.imag(x) if jnp.iscomplexobj(x) else x for x in arrays])
  return jax.tree.map(jax.lax.complex, re, im)


def map_components(fn: Callable[..., Any], *trees: Any) -> Any:
  """``jax.tree.map`` of :func:`componentwise` ``(fn, ...)`` over the matching leaves of ``trees``."""
  return jax.tree.map(lambda *xs: componentwise(fn, *xs), *trees)


def per_dtype(make: Callable[[jnp.dtype], Any]) -> Callable[[Any], Any]:
  """``get(dtype)`` = ``make(real_dtype(dtype))``, computed once per real dtype (float32 / float64).

  For scalars that the leaves of a tree meet: each leaf gets them in its :func:`real_dtype`
  (float32 leaves exactly as before, float64 leaves without a float32 rounding).
  """
  cache: dict[jnp.dtype, Any] = {}

  def get(dtype: Any) -> Any:
    dtype = real_dtype(dtype)
    if dtype not in cache:
      cache[dtype] = make(dtype)
    return cache[dtype]

  return get


def zeros_acc(tree: Any) -> Any:
  """Zeros shaped like ``tree`` in the accumulator dtype of each leaf."""
  return jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), acc_dtype(jnp.result_type(x))), tree)


def full_acc(tree: Any, value: float) -> Any:
  """``value`` everywhere, shaped like ``tree``, in the accumulator dtype of each leaf.

  Complex leaves get ``value`` in both components (``complex(value, value)``, as PyTorch's
  Adagrad initial accumulator).
  """
  def full(x):
    dtype = acc_dtype(jnp.result_type(x))
    fill = complex(value, value) if jnp.issubdtype(dtype, jnp.complexfloating) else value
    return jnp.full(jnp.shape(x), fill, dtype)

  return jax.tree.map(full, tree)


def to_acc(tree: Any) -> Any:
  """Casts each leaf to its accumulator dtype."""
  return jax.tree.map(lambda x: jnp.asarray(x).astype(acc_dtype(jnp.result_type(x))), tree)


def cast_like(tree: Any, like: Any) -> Any:
  """Casts each leaf of ``tree`` to the dtype of the matching leaf of ``like``."""
  return jax.tree.map(lambda x, y: jnp.asarray(x).astype(jnp.result_type(y)), tree, like)


def as_scalar(value: Any, count: jax.Array | None = None, dtype: Any = jnp.float32) -> jax.Array:
  """A ``dtype`` (float32) scalar from a number, an array, or a schedule evaluated at ``count``."""
  if callable(value):
    value = value(count)
  return jnp.asarray(value, dtype=dtype)


def bias_correction(decay: Any, step: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
  r"""``1 - decay**step`` in ``dtype`` (float32), accurate also when ``decay`` is close to 1.

  Computed as :math:`-\mathrm{expm1}(t \log \beta)`; for a Python float ``decay`` the
  logarithm is taken in double precision, so ``1 - 0.999**1`` is ``1e-3`` to float32
  round-off rather than ``1 - float32(0.999)``.
  """
  step = jnp.asarray(step, dtype)
  if isinstance(decay, (int, float)) and not isinstance(decay, bool):
    if decay == 0.0:
      return jnp.ones_like(step)
    log_decay = jnp.asarray(math.log(decay), dtype)
  else:
    decay = jnp.asarray(decay, dtype)
    log_decay = jnp.log(decay)
  return -jnp.expm1(step * log_decay)


def bias_corrections(b1: Any, b2: Any, count: jax.Array) -> Callable[[Any], tuple[jax.Array, jax.Array]]:
  """Adam's ``(1 - b1**t, sqrt(1 - b2**t))`` at ``t = count + 1``, per dtype (:func:`per_dtype`)."""
  def make(dtype):
    step = count.astype(dtype) + 1.0
    return bias_correction(b1, step, dtype), jnp.sqrt(bias_correction(b2, step, dtype))

  return per_dtype(make)


def moment(new: Any, old: Any, decay: Any, order: int) -> Any:
  """Exponential moving average ``decay * old + (1 - decay) * new**order`` in ``old``'s dtype.

  For a Python float ``decay`` the weight ``1 - decay`` is computed in double precision
  (as PyTorch does), so ``1 - 0.999`` is ``1e-3`` to float32 round-off rather than
  ``1 - float32(0.999)``, which is off by 1.3e-5 relative. The weights are in ``old``'s
  :func:`real_dtype`; complex moments are per real component (``order = 2`` squares each).
  """
  def weights(dtype):
    if isinstance(decay, (int, float)) and not isinstance(decay, bool):
      return jnp.asarray(decay, dtype), jnp.asarray(1.0 - decay, dtype)
    keep = jnp.asarray(decay, dtype)
    return keep, 1.0 - keep

  coefs = per_dtype(weights)

  def one(g, m):
    keep, take = coefs(m.dtype)
    return componentwise(lambda g, m: keep * m + take * (g.astype(m.dtype) ** order), g, m)

  return jax.tree.map(one, new, old)


def increment(count: jax.Array) -> jax.Array:
  """``count + 1``, saturating at the integer maximum (``optax.safe_increment``)."""
  return optax.safe_increment(count)


# ----------------------------------------------------------------------------- the kernel rule and masks
def read_flag(*values: jax.Array) -> jax.Array:
  """A flag for :func:`after` that is always true (NaN included) and depends on ``values``
  (any arrays: the results of the reads that must come first)."""
  return ~(jnp.sum(jnp.stack([jnp.sum(jnp.abs(v)).astype(jnp.float32) for v in values])) < 0)


def after(flag: jax.Array, tree: Any) -> Any:
  """``tree`` itself, as values that depend on ``flag`` (always true): ``where(flag, x, 0)``.

  A caller writes ``params + updates`` into the donated params buffer; making the updates
  depend on a check that read the old params (norms, samples) orders that write after it,
  instead of XLA copying the params first. ``lax.optimization_barrier`` does not do this on
  XLA:CPU (measured: the copy stays); the select fuses into the loop that writes.
  """
  def one(x):
    if not isinstance(x, jax.Array) or not jnp.issubdtype(x.dtype, jnp.inexact):
      return x
    return jnp.where(flag, x, jnp.zeros_like(x))
  return jax.tree.map(one, tree)


def cond(pred: Any, true_fn: Callable[..., Any], false_fn: Callable[..., Any], *operands: Any) -> Any:
  """``lax.cond``, except that a concrete ``pred`` (eager use) picks its branch in Python.

  An eager ``lax.cond`` of freshly made closures is traced and compiled again on every call
  (seconds for a large tree); choosing the branch here costs nothing and gives the same value.
  """
  if isinstance(pred, jax.core.Tracer):
    return jax.lax.cond(pred, true_fn, false_fn, *operands)
  return true_fn(*operands) if bool(pred) else false_fn(*operands)


def is_kernel_ndim(ndim: int) -> bool:
  """The kernel rule: an array with ``ndim >= 2`` is a kernel (Dense ``(in, out)``, Conv, ...)."""
  return ndim >= 2


def is_kernel(leaf: Any) -> bool:
  """Whether ``leaf`` is a kernel (:func:`is_kernel_ndim` of its ``ndim``); biases and norm scales are not."""
  return is_kernel_ndim(jnp.ndim(leaf))


def _mask_leaf(m: Any) -> Any:
  """A mask leaf as a Python bool when it is a concrete scalar (the pass-through fast path)."""
  if not _validate.is_mask_leaf(m):
    raise ValueError(f"mask leaves must be bools or boolean arrays, got a leaf {m!r:.100}.")
  if isinstance(m, (bool, np.bool_)) or (isinstance(m, np.ndarray) and m.shape == ()):
    return bool(m)
  if isinstance(m, jax.Array) and m.shape == () and not isinstance(m, jax.core.Tracer):
    return bool(m)
  return m


def _spread(m: Any, subtree: Any) -> Any:
  """One mask leaf over the params subtree it covers (a bool covers every leaf under it)."""
  m = _mask_leaf(m)
  leaves, treedef = jax.tree.flatten(subtree)
  if isinstance(m, bool):
    return jax.tree.unflatten(treedef, [m] * len(leaves))
  if not jax.tree_util.treedef_is_leaf(treedef):
    raise ValueError(f"a boolean-array mask leaf must stand for one param, not a subtree; got one of shape "
                     f"{m.shape} over {subtree!r:.100}.")
  return m


def resolve_mask(mask: Any, params: Any) -> Any:
  """The mask as a pytree shaped like ``params`` whose leaves are bools (or boolean arrays).

  ``mask`` takes every form ``optax.masked`` takes, and two more: ``None`` (every leaf),
  ``"auto"`` (kernels only, :func:`is_kernel`), a pytree of bools with the structure of
  ``params`` *or a prefix of it* (``{"dense": False}`` leaves the whole ``"dense"`` subtree
  out; ``True`` alone selects everything), or a callable ``params -> such a pytree``. A leaf
  may also be a boolean array shaped (or broadcastable) like its param: entries where it is
  False are left out. Check ``mask`` first with ``_validate.check_mask``.

  Raises:
    ValueError: when the mask is not a prefix of the params' structure, or a leaf is not a
      bool / boolean array.
  """
  if mask is None:
    return jax.tree.map(lambda _: True, params)
  if isinstance(mask, str):
    return jax.tree.map(is_kernel, params)
  if callable(mask):
    mask = mask(params)
  leaves, treedef = jax.tree.flatten(mask)
  try:
    subtrees = flatten_up_to(mask, params)
  except (ValueError, TypeError) as e:
    raise ValueError(f"mask must have the structure of the params or a prefix of it (as in optax.masked); "
                     f"mask structure {treedef}, params structure {jax.tree.structure(params)}.") from e
  return jax.tree.unflatten(treedef, [_spread(m, sub) for m, sub in zip(leaves, subtrees)])


def flatten_up_to(prefix: Any, tree: Any) -> list[Any]:
  """The subtrees of ``tree`` at the leaves of ``prefix`` (``PyTreeDef.flatten_up_to``), in leaf order."""
  treedef: Any = jax.tree.structure(prefix)  # jaxlib's stub of PyTreeDef lacks flatten_up_to
  return treedef.flatten_up_to(tree)


# ----------------------------------------------------------------------------- finding states
def _holder(container: Any) -> Any:
  """The optimizer state a container holds (itself for a raw state or an nnx ``opt_state``)."""
  if isinstance(container, nnx.Optimizer) or (hasattr(container, "opt_state") and hasattr(container, "tx")):
    return container.opt_state
  return container


def opt_state_of(container: Any) -> Any:
  """The optimizer state inside ``container``, with ``nnx.Variable`` leaves replaced by their values.

  ``container`` is a raw optax state, a linen ``TrainState`` (anything with ``opt_state``
  and ``tx`` attributes), an ``nnx.Optimizer``, or an ``nnx.Optimizer``'s ``opt_state``.
  """
  return jax.tree.map(lambda v: v.get_value() if isinstance(v, nnx.Variable) else v, _holder(container),
                      is_leaf=lambda v: isinstance(v, nnx.Variable))


def find_states(container: Any, kind: type | tuple[type, ...]) -> list:
  """Every state of type ``kind`` inside ``container`` (see :func:`opt_state_of`), in tree order."""
  tree = opt_state_of(container)
  return [x for x in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, kind)) if isinstance(x, kind)]


def find_state(container: Any, kind: type, reader: str, hint: str = "") -> Any:
  """The one state of type ``kind`` inside ``container``; ``ValueError`` unless there is exactly one.

  This is the lookup contract of every public reader: exactly one match, anywhere inside
  any container, else an error that names the reader, the state type and how many were found.

  Args:
    container: see :func:`opt_state_of`.
    kind: the state's NamedTuple type.
    reader: the public reader's name, for the message (e.g. ``"monitor.stats"``).
    hint: what to do when none is found (e.g. ``"wrap the optimizer with monitor.track(tx)"``).
  """
  found = find_states(container, kind)
  if len(found) != 1:
    what = f"no {kind.__name__}" if not found else f"{len(found)} {kind.__name__}s (ambiguous)"
    msg = f"{reader} expects exactly one {kind.__name__} inside the optimizer state and found {what}."
    if not found and _restored_lookalikes(container, kind):
      raise ValueError(f"{msg} It found a dict with the fields of {kind.__name__} instead. {_validate.RESTORE_HINT}")
    raise ValueError(msg + (f" {hint}" if hint and not found else ""))
  return found[0]


def replace_state(container: Any, kind: type, new: Callable[[Any], Any], reader: str, hint: str = "") -> Any:
  """``container`` with its one state of type ``kind`` replaced by ``new(state)``, as the same kind of container.

  The state is found as :func:`find_state` finds it (exactly one, else its ``ValueError``).
  A raw optax state comes back as a new tree; a linen ``TrainState`` through
  ``.replace(opt_state=...)``; an ``nnx.Optimizer`` or its ``opt_state`` (``nnx.Variable``
  leaves) is updated in place (the variables of the replaced state get the new values,
  which also works inside ``nnx.jit``) and returned. Works inside ``jit``.

  Args:
    container: see :func:`opt_state_of`.
    kind: the state's NamedTuple type.
    new: ``new(state) -> state`` of the same structure.
    reader: the public function's name, for the message.
    hint: what to do when none is found.
  """
  find_state(container, kind, reader, hint)
  is_kind = lambda x: isinstance(x, kind)  # noqa: E731
  held = _holder(container)
  raw = opt_state_of(held)
  replaced = jax.tree.map(lambda s: new(s) if is_kind(s) else s, raw, is_leaf=is_kind)
  is_var = lambda v: isinstance(v, nnx.Variable)  # noqa: E731
  if any(is_var(v) for v in jax.tree.leaves(held, is_leaf=is_var)):
    def write(var, old, value):
      if is_var(var) and value is not old:
        var.set_value(value)
    jax.tree.map(write, held, raw, replaced, is_leaf=is_var)
    return container
  if held is not container:
    return container.replace(opt_state=replaced)
  return replaced


def _restored_lookalikes(container: Any, kind: type) -> int:
  """How many dicts inside ``container`` have exactly the fields of the NamedTuple ``kind``."""
  fields = set(getattr(kind, "_fields", ()))

  def match(x):
    return isinstance(x, dict) and bool(fields) and set(x) == fields

  try:
    tree = opt_state_of(container)
  except Exception:  # noqa: BLE001 - only a better message is at stake
    return 0
  return sum(match(x) for x in jax.tree.leaves(tree, is_leaf=match))


# ----------------------------------------------------------------------------- learning-rate factors
_LR_FACTORS: dict[type, Callable[[Any], jax.Array]] = {}


def learning_rate_factor(read: Callable[[Any], jax.Array]) -> Callable[[type], type]:
  """Class decorator: declares that a state type multiplies the learning rate by ``read(state)``.

  :func:`learning_rate_factors` finds every declared state inside an optimizer state, so a
  reader such as ``monitor.current_learning_rate`` needs no import of the practice that
  defines the state.
  """
  def register(cls: type) -> type:
    _LR_FACTORS[cls] = read
    return cls

  return register


def learning_rate_factors(container: Any) -> list[jax.Array]:
  """``read(state)`` of every state declared with :func:`learning_rate_factor`, in tree order."""
  kinds = tuple(_LR_FACTORS)
  return [_LR_FACTORS[type(s)](s) for s in find_states(container, kinds)] if kinds else []
