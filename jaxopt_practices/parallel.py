"""Scale: data parallelism with ``jax.pmap`` and sharded training with ``jax.jit`` on a ``Mesh``.

Two ways to run one optimizer step on many devices, both giving the same result as one
device on the concatenated batch (to float32 round-off of the gradient's reduction order):

* ``pmap`` (one program per device, explicit collectives): :func:`replicate` copies the
  params and optimizer state to every device, :func:`pmap_train_step` averages the
  gradients with ``jax.lax.pmean`` over ``axis_name`` before ``tx.update``, and
  :func:`unreplicate` reads one copy back.
* ``jax.jit`` with ``NamedSharding`` (one global program, XLA inserts the collectives):
  :func:`data_parallel_shardings` replicates the params and shards the batch;
  :func:`fsdp_shardings` shards each parameter along one mesh axis (FSDP / ZeRO-3 style);
  :func:`opt_state_shardings` gives every optimizer-state leaf that mirrors a parameter
  (momentum, Adam's moments, EMA/SWA averages, ...) *exactly* that parameter's sharding, so
  the state is never gathered onto one device; :func:`make_train_step` jits a step with
  those in/out shardings and donates the params and state buffers.

Which practices need ``axis_name`` — and why:
  ``axis_name`` only matters where the program is written *per device*: inside
  ``jax.pmap`` or ``shard_map``. There, any value computed from data that differs between
  devices must be reduced over the axis or the replicas drift apart:

  * the gradients themselves — :func:`pmap_train_step` ``pmean``-s them, after which every
    elementwise transform (SGD, momentum, Adagrad, RMSprop, Adam/AdamW, weight decay, L2,
    EMA, SWA, clipping by value, schedules) sees identical inputs and needs no axis;
  * ``clipping.clip_by_global_norm(axis_name=...)`` when the gradients are *sharded*
    between devices (each holds a slice): the global norm must ``psum`` the partial sums.
    After a ``pmean`` of full gradients it is not needed;
  * ``plateau.reduce_on_plateau(axis_name=...)``: the monitored ``value`` (a loss) is
    per-device unless it was ``pmean``-ed first (:func:`pmap_train_step` does so);
  * ``regularization.gradient_noise(axis_name=...)``: the random key must be the same on
    every replica (and the noise added once to the mean gradient, not per replica).

  Under ``jax.jit`` with shardings (data parallel or FSDP), the program is global: a mean
  over the batch or a norm over a sharded gradient is computed over the whole array and XLA
  inserts the ``all-reduce``; pass ``axis_name=None`` (the default) everywhere.

Performance notes: pass ``donate=True`` (the default) so XLA updates the params and the
state in place; on CPU a step without donation is 3-4x slower (every step allocates and
copies all buffers). For trees with thousands of leaves see :mod:`jaxopt_practices.flat`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxopt_practices import _mesh
from jaxopt_practices import _step
from jaxopt_practices import _validate
from jaxopt_practices._mesh import batch_sharding as batch_sharding
from jaxopt_practices._mesh import make_mesh as make_mesh
from jaxopt_practices._mesh import replicated_sharding as replicated_sharding
from jaxopt_practices._sharding import data_parallel_shardings as data_parallel_shardings
from jaxopt_practices._sharding import fsdp_shardings as fsdp_shardings
from jaxopt_practices._sharding import init_sharded as init_sharded
from jaxopt_practices._sharding import make_train_step as make_train_step
from jaxopt_practices._sharding import opt_state_shardings as opt_state_shardings
from jaxopt_practices._sharding import shard as shard

__all__ = [
    "replicate", "unreplicate", "assert_replicated", "pmap_train_step", "make_mesh", "replicated_sharding",
    "batch_sharding", "data_parallel_shardings", "fsdp_shardings", "opt_state_shardings", "shard", "init_sharded",
    "make_train_step", "replicated",
]


# ----------------------------------------------------------------------------- pmap
def replicate(tree: Any, devices: Sequence[jax.Device] | None = None, axis_name: str = "batch") -> Any:
  """Copies a host (or single-device) pytree onto every local device, for ``jax.pmap``.

  Every leaf gets a new leading axis of size ``len(devices)``, one copy per device, laid
  out exactly as ``jax.pmap(..., axis_name=axis_name)`` lays out its outputs — use the
  step's ``axis_name``, or the second step sees a different input sharding and compiles
  the step again.

  Args:
    tree: params, optimizer state, or any pytree of arrays.
    devices: the devices (default: ``jax.local_devices()``).
    axis_name: the ``pmap`` axis name of the step that will consume the copies.

  Returns:
    The replicated pytree (each leaf a sharded ``jax.Array`` of shape ``(n, *shape)``).

  Raises:
    ValueError: if ``devices`` is not a non-empty sequence of ``jax.Device`` or
      ``axis_name`` is not a non-empty string.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxopt_practices import parallel
    >>> rep = parallel.replicate({"w": jnp.ones(3)})
    >>> rep["w"].shape == (jax.local_device_count(), 3)
    True
  """
  devices = _mesh.check_devices(jax.local_devices() if devices is None else devices)
  _validate.check_axis_name(axis_name, optional=False)
  sharding = NamedSharding(Mesh(np.asarray(devices, dtype=object), (axis_name,)), P(axis_name))

  def put(x):
    x = np.asarray(x)
    return jax.device_put(np.broadcast_to(x[None], (len(devices),) + x.shape), sharding)

  return jax.tree.map(put, tree)


def unreplicate(tree: Any) -> Any:
  """The copy on the first device of a replicated pytree (the inverse of :func:`replicate`).

  Args:
    tree: a pytree whose leaves have a leading replica axis (``pmap``'s layout).

  Returns:
    The pytree of ``leaf[0]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import parallel
    >>> print(parallel.unreplicate(parallel.replicate(jnp.arange(3))))
    [0 1 2]
  """
  return jax.tree.map(lambda x: x[0], tree)


def replicated(mesh: Mesh) -> NamedSharding:
  """Deprecated alias of :func:`replicated_sharding` (it returns a sharding; :func:`replicate` copies data).

  Args:
    mesh: the device mesh.

  Returns:
    ``replicated_sharding(mesh)``, after a ``DeprecationWarning``.

  Example:
    >>> import warnings
    >>> from jaxopt_practices import parallel
    >>> with warnings.catch_warnings(record=True):
    ...   warnings.simplefilter("always")
    ...   print(parallel.replicated(parallel.make_mesh(("data",))).spec)
    P()
  """
  sharding = replicated_sharding(mesh)  # a bad mesh raises first, as with the new name
  warnings.warn("parallel.replicated is deprecated and will be removed in the next release: use "
                "parallel.replicated_sharding (a sharding; parallel.replicate copies data).", DeprecationWarning,
                stacklevel=2)
  return sharding


def _copies(leaf: Any) -> list[np.ndarray]:
  """The replicas of one leaf: a multi-device replicated ``jax.Array``'s per-device copies, else ``leaf[i]``."""
  if isinstance(leaf, jax.core.Tracer):
    raise ValueError("assert_replicated reads concrete values: call it outside jit / pmap.")
  if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  if isinstance(leaf, jax.Array) and len(leaf.sharding.device_set) > 1:
    if leaf.sharding.is_fully_replicated:
      return [np.asarray(s.data) for s in leaf.addressable_shards]
    if any(s.data.shape != (1,) + leaf.shape[1:] for s in leaf.addressable_shards):
      raise ValueError(f"is sharded ({leaf.sharding}), neither replicated nor laid out one replica per device")
  x = np.asarray(leaf)
  if x.ndim == 0:
    raise ValueError("has no replica axis (a scalar that is not a jax.Array replicated over several devices)")
  return list(x)


def _differ(a: np.ndarray, b: np.ndarray, atol: float) -> bool:
  """Whether two copies differ (bitwise for ``atol == 0``; NaNs at the same places are equal)."""
  if atol == 0.0 or not np.issubdtype(a.dtype, np.inexact):
    return not np.array_equal(a, b, equal_nan=np.issubdtype(a.dtype, np.inexact))
  return not np.allclose(a, b, rtol=0.0, atol=atol, equal_nan=True)


def assert_replicated(tree: Any, atol: float = 0.0) -> None:
  """Raises ``ValueError`` naming the first leaf whose replicas differ (by more than ``atol``).

  Under ``pmap`` every replica must hold the same params and optimizer state; a step that
  forgets to ``pmean`` the gradients (or a loss for ``plateau``) lets them drift apart
  silently. Two layouts of a leaf are understood:

  * a ``jax.Array`` replicated over several devices (``NamedSharding`` with ``P()``, e.g.
    params under ``jit`` data parallelism): its per-device copies are compared;
  * anything else has a leading replica axis (``pmap``'s layout, :func:`replicate`):
    ``leaf[i]`` is compared with ``leaf[0]``. A leaf sharded some other way (FSDP) or a
    scalar that is not replicated over devices raises ``ValueError``.

  With ``atol=0`` the copies must be bitwise equal (NaNs in the same places count as equal).
  Typed PRNG keys are compared through their key data. It reads concrete values, so call it
  between steps, outside ``jit`` / ``pmap``.

  Args:
    tree: params, optimizer state, a linen ``TrainState``, or any pytree of replicated arrays.
    atol: largest absolute difference tolerated, ``>= 0``.

  Raises:
    ValueError: naming the leaf's key path, which replica differs and by how much.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import parallel
    >>> parallel.assert_replicated({"w": jnp.ones((4, 3))})           # 4 equal replicas
    >>> parallel.assert_replicated({"w": jnp.array([[1.0], [1.1]])})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: assert_replicated: leaf ['w'] differs between replicas: replica 1 differs from replica 0 by up to 0.1...
  """
  _validate.check_number("atol", atol, low=0.0)
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    name = jax.tree_util.keystr(path) or "<root>"
    try:
      copies = _copies(leaf)
    except ValueError as e:
      raise ValueError(f"assert_replicated: leaf {name} {e}") from None
    for i, c in enumerate(copies[1:], start=1):
      if _differ(c, copies[0], float(atol)):
        gap = np.max(np.abs(c.astype(np.float64) - copies[0].astype(np.float64))) if c.size else 0.0
        raise ValueError(f"assert_replicated: leaf {name} differs between replicas: replica {i} differs from "
                         f"replica 0 by up to {gap:.3g} (atol={atol}). A pmap step that does not pmean its "
                         "gradients (or the loss given to a plateau) lets the replicas drift apart.")


def pmap_train_step(
    loss_fn: Callable[[Any, Any], jax.Array],
    tx: optax.GradientTransformation,
    *,
    axis_name: str = "batch",
    donate: bool = True,
    has_aux: bool = False,
    value_from_loss: bool = False,
) -> Callable[..., tuple[Any, Any, jax.Array]]:
  r"""A data-parallel ``jax.pmap`` train step: local gradients, ``pmean``, one optimizer step.

  .. math:: g = \frac{1}{R}\sum_{r=1}^{R} \nabla_\theta L(\theta; B_r), \quad
            (u, s) = \mathrm{tx.update}(g, s, \theta), \quad \theta \leftarrow \theta + u

  With equal per-device batch sizes and a mean loss, :math:`g` is the gradient on the
  concatenated batch. The loss (and ``aux``) are ``pmean``-ed too, so everything the step
  returns is identical on every replica.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar`` (``-> (scalar, aux)`` with ``has_aux``).
    tx: the optimizer; build it with ``axis_name=`` for the transforms that need it (see
      the module docstring).
    axis_name: the ``pmap`` axis name.
    donate: donate the params and state buffers (updated in place).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    value_from_loss: pass the ``pmean``-ed loss as ``value=`` to ``tx.update`` (for
      ``plateau.reduce_on_plateau``).

  Returns:
    ``step(params, opt_state, batch, **extra_args) -> (params, opt_state, loss)`` (``loss``
    is ``(loss, aux)`` with ``has_aux``), where params and state are replicated (see
    :func:`replicate` with the same ``axis_name``), ``batch`` has a leading device axis, and ``extra_args`` (e.g.
    ``value=``) are broadcast to every device and forwarded to ``tx.update``.

  Raises:
    ValueError: if ``loss_fn`` is not callable, ``tx`` is not a gradient transformation,
      a flag is not a bool or ``axis_name`` is not a non-empty string.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from jaxopt_practices import parallel
    >>> n = jax.local_device_count()
    >>> step = parallel.pmap_train_step(lambda p, x: jnp.mean((x - p) ** 2), optax.sgd(0.5))
    >>> params = parallel.replicate(jnp.zeros([]))
    >>> state = parallel.replicate(optax.sgd(0.5).init(jnp.zeros([])))
    >>> params, state, loss = step(params, state, jnp.ones((n, 4)))
    >>> print(parallel.unreplicate(params))
    1.0
  """
  _validate.check_callable("loss_fn", loss_fn)
  _validate.check_transform("tx", tx)
  _validate.check_bool("donate", donate)
  _validate.check_bool("has_aux", has_aux)
  _validate.check_bool("value_from_loss", value_from_loss)
  _validate.check_axis_name(axis_name, optional=False)
  step = _step.train_step(loss_fn, tx, has_aux=has_aux, value_from_loss=value_from_loss, axis_name=axis_name)
  pstep = jax.pmap(step, axis_name=axis_name, in_axes=(0, 0, 0, None),
                   donate_argnums=(0, 1) if donate else ())

  @functools.wraps(step)
  def wrapped(params, opt_state, batch, **extra_args):
    return pstep(params, opt_state, batch, extra_args)

  return wrapped
