"""Putting a checkpoint restored without a target back into its target's structure (Flax internals).

Orbax (like ``flax.serialization``) restores a tree saved without a target as dicts and lists:
NamedTuple states become dicts of their fields, tuple positions become the keys ``"0"``,
``"1"``, ..., and an ``nnx.State`` keeps each Variable as ``{"value": array}``. ``nnx.update``
then fails inside flax (``Cannot set key '0' on immutable node of type tuple``) and a linen
update fails on a dict where a NamedTuple was expected. :func:`into` reads such a tree by the
target's own leaf paths, so it fits any optimizer state of any library.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx

from jaxopt_practices import _validate

__all__ = ["into"]


def _child(node: Any, key: Any) -> Any:
  """``node``'s child at one path entry of the target, or ``KeyError``."""
  name = getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))
  if isinstance(node, dict):
    for k in (name, str(name)):
      if k in node:
        return node[k]
    raise KeyError(name)
  if isinstance(node, (list, tuple)) and isinstance(name, int) and name < len(node):
    return node[name]
  if isinstance(name, str) and hasattr(node, name):
    return getattr(node, name)
  raise KeyError(name)


def _leaf(value: Any) -> Any:
  """An array, unwrapping the ``{"value": array}`` of a saved ``nnx.Variable``."""
  while isinstance(value, dict) and set(value) == {"value"}:
    value = value["value"]
  if isinstance(value, nnx.Variable):
    value = value.get_value()
  return value


def _read(restored: Any, path: tuple, like: Any) -> Any:
  """The leaf of ``restored`` at the target's ``path``, checked against the target's leaf ``like``."""
  where = jax.tree_util.keystr(path)
  node = restored
  try:
    for key in path:
      node = _child(node, key)
  except KeyError as e:
    raise ValueError(f"training.restore: the checkpoint has no entry {where} (missing {e}) that the target has: it "
                     f"was made by another optimizer or model. {_validate.RESTORE_HINT}") from None
  value = _leaf(node)
  dtype = getattr(like, "dtype", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):  # a typed key (nnx.Rngs)
    if not jax.dtypes.issubdtype(getattr(value, "dtype", np.float32), jax.dtypes.prng_key):
      value = jax.random.wrap_key_data(jax.numpy.asarray(value), impl=jax.random.key_impl(like))
    return value
  if np.shape(value) != np.shape(like):
    raise ValueError(f"training.restore: the checkpoint's {where} has shape {np.shape(value)}, the target's "
                     f"{np.shape(like)}: it was made by another optimizer or model.")
  return jax.numpy.asarray(value, dtype=dtype)


def _count(restored: Any) -> int:
  is_var = lambda x: isinstance(x, dict) and set(x) == {"value"}  # noqa: E731
  return len(jax.tree.leaves(restored, is_leaf=is_var))


def into(target: Any, restored: Any) -> Any:
  """``restored`` in ``target``'s structure: ``target`` updated in place if it is an NNX object, else a new tree.

  Raises:
    ValueError: when an entry of the target is missing from ``restored``, has another shape, or
      ``restored`` holds more leaves than the target (a checkpoint of another optimizer or model).
  """
  if isinstance(restored, nnx.State):
    restored = nnx.to_pure_dict(restored)
  graph = isinstance(target, nnx.Pytree)  # an nnx.Module, nnx.Optimizer, ...: updated in place
  state = nnx.state(target) if graph else None
  tree = target if state is None else nnx.to_pure_dict(state)
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
  leaves = [_read(restored, path, like) for path, like in flat]
  if _count(restored) != len(leaves):
    raise ValueError(f"training.restore: the checkpoint holds {_count(restored)} arrays and the target "
                     f"{len(leaves)}: it was made by another optimizer or model.")
  new = jax.tree_util.tree_unflatten(treedef, leaves)
  if state is None:
    return new
  nnx.replace_by_pure_dict(state, new)
  nnx.update(target, state)
  return target
