"""Sharded training with ``jax.jit`` on a ``Mesh``: one global program, XLA inserts the collectives.

The public names are re-exported by :mod:`jaxopt_practices.parallel` (read its module
docstring for when to use this rather than ``pmap``, and which practices need
``axis_name``): :func:`data_parallel_shardings` replicates the params and shards the
batch; :func:`fsdp_shardings` shards each parameter along one mesh axis (FSDP / ZeRO-3
style); :func:`opt_state_shardings` gives every optimizer-state leaf that mirrors a
parameter *exactly* that parameter's sharding; :func:`make_train_step` jits the one train
step of :mod:`jaxopt_practices._step` with those in/out shardings and donates the params
and state buffers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxopt_practices import _step
from jaxopt_practices import _validate
from jaxopt_practices._mesh import check_mesh, check_mesh_axes, replicated_sharding

__all__ = [
    "data_parallel_shardings", "fsdp_shardings", "opt_state_shardings", "shard", "init_sharded",
    "make_train_step",
]


def check_shardings(name: str, tree: Any) -> None:
  """Raises ``ValueError`` unless ``tree`` is a non-empty pytree of ``jax.sharding.Sharding``."""
  leaves = jax.tree.leaves(tree, is_leaf=lambda s: isinstance(s, jax.sharding.Sharding))
  if not leaves or not all(isinstance(s, jax.sharding.Sharding) for s in leaves):
    raise ValueError(f"{name} must be a pytree of jax.sharding.Sharding shaped like the params (e.g. "
                     f"parallel.fsdp_shardings(params, mesh)), got {name} = {tree!r:.200}.")


def data_parallel_shardings(params: Any, mesh: Mesh) -> Any:
  """Pure data parallelism: every parameter replicated on every device of ``mesh``.

  Args:
    params: a pytree of arrays (or ``jax.ShapeDtypeStruct``).
    mesh: the device mesh.

  Returns:
    A pytree shaped like ``params`` of :func:`replicated_sharding` ``(mesh)``.

  Raises:
    ValueError: if ``mesh`` is not a ``jax.sharding.Mesh``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import parallel
    >>> sh = parallel.data_parallel_shardings({"w": jnp.zeros((2, 3))}, parallel.make_mesh(("data",)))
    >>> print(sh["w"].spec)
    P()
  """
  sharding = replicated_sharding(mesh)
  return jax.tree.map(lambda _: sharding, params)


def fsdp_shardings(params: Any, mesh: Mesh, axis: str = "data", min_size: int = 0) -> Any:
  """FSDP (ZeRO-3) style: each parameter sharded along one of its dimensions over ``axis``.

  The dimension is the largest one divisible by the size of mesh ``axis`` (ties: the
  first); leaves with no such dimension, or with fewer than ``min_size`` entries (small
  biases are cheaper replicated), are replicated.

  Args:
    params: a pytree of arrays (or ``jax.ShapeDtypeStruct``).
    mesh: the mesh.
    axis: the mesh axis to shard over.
    min_size: leaves with fewer entries stay replicated.

  Returns:
    A pytree of ``NamedSharding`` shaped like ``params``.

  Raises:
    ValueError: if ``mesh`` is not a ``Mesh``, ``axis`` is not one of its axes or
      ``min_size`` is not an integer ``>= 0``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxopt_practices import parallel
    >>> mesh = parallel.make_mesh(("data",))
    >>> n = jax.device_count()
    >>> sh = parallel.fsdp_shardings({"w": jnp.zeros((3, 8 * n)), "b": jnp.zeros(3)}, mesh, min_size=4)
    >>> print(sh["w"].spec, sh["b"].spec)
    P(None, 'data') P()
  """
  if axis not in check_mesh(mesh).axis_names:
    raise ValueError(f"axis must be one of the mesh axes {mesh.axis_names}, got axis = {axis!r}.")
  _validate.check_int("min_size", min_size, low=0)
  size = mesh.shape[axis]

  def pick(x):
    shape = tuple(jnp.shape(x))
    candidates = [(d, i) for i, d in enumerate(shape) if d % size == 0 and d >= size]
    if not candidates or int(np.prod(shape)) < min_size:
      return replicated_sharding(mesh)
    dim = max(candidates, key=lambda c: (c[0], -c[1]))[1]
    spec: list[str | None] = [None] * len(shape)
    spec[dim] = axis
    return NamedSharding(mesh, P(*spec))

  return jax.tree.map(pick, params)


def _signature(tree):
  return jax.tree.structure(tree), [tuple(jnp.shape(x)) for x in jax.tree.leaves(tree)]


def opt_state_shardings(opt_state: Any, params: Any, params_shardings: Any,
                        default: NamedSharding | None = None) -> Any:
  """Shardings for an optimizer state: every copy of the params tree inside it is sharded like the params.

  Walks ``opt_state`` and finds each subtree with the same tree structure and leaf shapes
  as ``params`` (a momentum buffer, Adam's ``mu`` / ``nu``, an EMA, ...): its leaves get
  the matching ``params_shardings``. A copy with some leaves masked out (``optax.MaskedNode``,
  as ``optax.masked`` and every branch of ``optax.multi_transform`` keep it: Muon on the
  kernels, AdamW on the rest) counts too: its remaining leaves are sharded like their
  params. All other leaves (step counts, scalars, learning rates, flags) are replicated
  (``default``). Works for any chain, any nesting (wrappers
  such as ``skip_nonfinite`` or ``inject_hyperparams`` included) and any transform whose
  init calls ``jnp`` on the params (unlike ``optax.tree_map_params``, which needs inits
  that treat the params as opaque). Only shapes are read: ``opt_state`` may be the output
  of ``jax.eval_shape(tx.init, params)``.

  Args:
    opt_state: the state (or its shapes).
    params: the params (or their shapes).
    params_shardings: a pytree of shardings shaped like ``params``.
    default: the sharding of non-parameter leaves (default: replicated over the mesh of
      the first parameter sharding).

  Returns:
    A pytree of shardings shaped like ``opt_state``.

  Raises:
    ValueError: if ``default`` is None and ``params_shardings`` holds no ``NamedSharding``,
      or ``default`` is not a sharding.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from jaxopt_practices import parallel
    >>> mesh = parallel.make_mesh(("data",))
    >>> params = {"w": jnp.zeros((8 * jax.device_count(), 2))}
    >>> p_sh = parallel.fsdp_shardings(params, mesh)
    >>> state = jax.eval_shape(optax.adam(1e-3).init, params)
    >>> s_sh = parallel.opt_state_shardings(state, params, p_sh)
    >>> print(s_sh[0].mu["w"].spec, s_sh[0].count.spec)
    P('data', None) P()
  """
  sig = _signature(params)
  if default is None:
    first = jax.tree.leaves(params_shardings, is_leaf=lambda s: isinstance(s, jax.sharding.Sharding))
    if not first or not isinstance(first[0], NamedSharding):
      raise ValueError("params_shardings must be a non-empty pytree of NamedSharding when default is None, "
                       f"got params_shardings = {params_shardings!r:.200}.")
    default = replicated_sharding(check_mesh(first[0].mesh))
  elif not isinstance(default, jax.sharding.Sharding):
    raise ValueError(f"default must be a jax.sharding.Sharding or None, got default = {default!r}.")
  params_sh = jax.tree.map(lambda _, s: s, params, params_shardings,
                           is_leaf=lambda s: isinstance(s, jax.sharding.Sharding))
  sh_leaves = jax.tree.leaves(params_sh, is_leaf=lambda s: isinstance(s, jax.sharding.Sharding))

  def is_params_copy(node):
    try:
      return _signature(node) == sig or _masked_signature(node, sig)
    except TypeError:
      return False

  def assign(node):  # a full copy and a masked one alike: each leaf left takes its param's sharding
    if not is_params_copy(node):
      return default
    leaves, treedef = jax.tree.flatten(node, is_leaf=_is_masked)
    return jax.tree.unflatten(treedef, [x if _is_masked(x) else s for x, s in zip(leaves, sh_leaves)])

  return jax.tree.map(assign, opt_state, is_leaf=is_params_copy)


def _is_masked(x: Any) -> bool:
  return isinstance(x, optax.MaskedNode)


def _masked_signature(node: Any, sig: tuple) -> bool:
  """Whether ``node`` is a copy of the params with some leaves masked out (``optax.masked``, and so
  every branch of ``optax.multi_transform``): the params' structure, ``MaskedNode`` in place of
  the masked leaves, the params' shapes elsewhere, and at least one leaf left."""
  leaves, treedef = jax.tree.flatten(node, is_leaf=_is_masked)
  kept = [not _is_masked(x) for x in leaves]
  return (treedef == sig[0] and any(kept) and not all(kept)
          and all(tuple(jnp.shape(x)) == shape for x, k, shape in zip(leaves, kept, sig[1]) if k))


def shard(tree: Any, shardings: Any) -> Any:
  """``jax.device_put`` of every leaf with its sharding (works across processes too).

  Args:
    tree: a pytree of host or device arrays, the same global value on every process.
    shardings: a pytree of ``jax.sharding.Sharding`` shaped like ``tree``.

  Returns:
    ``tree`` as ``jax.Array`` leaves laid out by ``shardings``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxopt_practices import parallel
    >>> mesh = parallel.make_mesh(("data",))
    >>> x = parallel.shard(jnp.zeros((jax.device_count(), 2)), parallel.batch_sharding(mesh))
    >>> print(x.sharding.spec)
    P('data',)
  """
  return jax.tree.map(lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda idx: np.asarray(x)[idx])
                      if jax.process_count() > 1 else jax.device_put(x, s), tree, shardings)


def init_sharded(tx: optax.GradientTransformation, params: Any, params_shardings: Any) -> tuple[Any, Any]:
  """Places ``params`` with ``params_shardings`` and creates ``tx``'s state already sharded.

  The state is created by a jitted ``tx.init`` whose ``out_shardings`` come from
  :func:`opt_state_shardings`, so no device ever holds the whole state.

  Args:
    tx: the optimizer.
    params: the params (host or device arrays).
    params_shardings: a pytree of shardings shaped like ``params`` (e.g. from
      :func:`fsdp_shardings`).

  Returns:
    ``(params, opt_state)`` as sharded ``jax.Array`` pytrees.

  Raises:
    ValueError: if ``tx`` is not a gradient transformation or ``params_shardings`` is not a
      non-empty pytree of shardings.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from jaxopt_practices import parallel
    >>> mesh = parallel.make_mesh(("data",))
    >>> params = {"w": jnp.zeros((8 * jax.device_count(), 3))}
    >>> params, state = parallel.init_sharded(optax.adam(1e-3), params, parallel.fsdp_shardings(params, mesh))
    >>> print(state[0].mu["w"].sharding.spec)
    P('data', None)
  """
  _validate.check_transform("tx", tx)
  check_shardings("params_shardings", params_shardings)
  params = shard(params, params_shardings)
  state_sh = opt_state_shardings(jax.eval_shape(tx.init, params), params, params_shardings)
  return params, jax.jit(tx.init, out_shardings=state_sh)(params)


def make_train_step(
    loss_fn: Callable[[Any, Any], jax.Array],
    tx: optax.GradientTransformation,
    mesh: Mesh,
    params_shardings: Any,
    *,
    batch_axis: str | Sequence[str] = "data",
    donate: bool = True,
    has_aux: bool = False,
    value_from_loss: bool = False,
) -> Callable[..., tuple[Any, Any, jax.Array]]:
  r"""A ``jax.jit`` train step with explicit shardings: data parallel or FSDP.

  .. math:: g = \nabla_\theta L(\theta; B), \quad (u, s) = \mathrm{tx.update}(g, s, \theta),
            \quad \theta \leftarrow \theta + u

  computed as one global program: the batch ``B`` is sharded along ``batch_axis``, the
  params keep ``params_shardings`` (from :func:`data_parallel_shardings` or
  :func:`fsdp_shardings`), and the optimizer state keeps :func:`opt_state_shardings`
  (derived on the first call from the state it is given), in and out, so it is never
  gathered. Params and state are donated (updated in place) unless ``donate=False``.
  Build ``tx`` with ``axis_name=None``: XLA does the cross-device reductions.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss (``(scalar, aux)`` with ``has_aux``).
    tx: the optimizer.
    mesh: the device mesh.
    params_shardings: a pytree of ``NamedSharding`` shaped like the params.
    batch_axis: mesh axis (or axes) the batch's leading dimension is sharded over.
    donate: donate the params and the state.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    value_from_loss: pass the loss as ``value=`` to ``tx.update`` (``reduce_on_plateau``).

  Returns:
    ``step(params, opt_state, batch, **extra_args) -> (params, opt_state, loss)``; use
    :func:`init_sharded` for the first ``params, opt_state``.

  Raises:
    ValueError: if ``loss_fn`` is not callable, ``tx`` is not a gradient transformation,
      ``mesh`` is not a ``Mesh``, ``batch_axis`` names no axis of it, ``params_shardings``
      is not a pytree of shardings or a flag is not a bool.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from jaxopt_practices import parallel
    >>> mesh = parallel.make_mesh(("data",))
    >>> n, tx = jax.device_count(), optax.sgd(0.5)
    >>> p_sh = parallel.fsdp_shardings(jnp.zeros(n), mesh)
    >>> params, state = parallel.init_sharded(tx, jnp.zeros(n), p_sh)
    >>> loss_fn = lambda p, x: jnp.mean(jnp.sum((x - p[None, :]) ** 2, axis=-1))
    >>> step = parallel.make_train_step(loss_fn, tx, mesh, p_sh)
    >>> params, state, loss = step(params, state, jnp.ones((2 * n, n)))
    >>> print(params.sharding.spec, float(params[0]))
    P('data',) 1.0
  """
  _validate.check_callable("loss_fn", loss_fn)
  _validate.check_transform("tx", tx)
  _validate.check_bool("donate", donate)
  _validate.check_bool("has_aux", has_aux)
  _validate.check_bool("value_from_loss", value_from_loss)
  check_mesh_axes("batch_axis", batch_axis, check_mesh(mesh))
  check_shardings("params_shardings", params_shardings)
  step = _step.train_step(loss_fn, tx, has_aux=has_aux, value_from_loss=value_from_loss)
  b_sh, rep = NamedSharding(mesh, P(batch_axis)), replicated_sharding(mesh)
  cache: dict[Any, Callable] = {}

  def compiled(params, opt_state, batch, extra_args):
    key = (jax.tree.structure(opt_state), jax.tree.structure(batch), jax.tree.structure(extra_args))
    if key not in cache:
      s_sh = opt_state_shardings(opt_state, params, params_shardings, default=rep)
      cache[key] = jax.jit(
          step,
          in_shardings=(params_shardings, s_sh, jax.tree.map(lambda _: b_sh, batch),
                        jax.tree.map(lambda _: rep, extra_args)),
          out_shardings=(params_shardings, s_sh, rep),
          donate_argnums=(0, 1) if donate else ())
    return cache[key]

  def wrapped(params, opt_state, batch, **extra_args):
    return compiled(params, opt_state, batch, extra_args)(params, opt_state, batch, extra_args)

  return wrapped
