"""A fingerprint of the params, for ``regularization.ema``'s placement check.

``ema`` placed by hand before another transform averages params + a non-final update. Each
of its updates compares a few entries of the params it gets with the params it expected
(``params + updates`` of its previous update), to round-off: :func:`checksum` records them,
:func:`mismatch` compares. A later transform that changes only leaves outside the sample is
not seen; ``ema(..., inner=tx)`` cannot be misplaced at all.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_practices import _norms
from jaxopt_practices import _tree

__all__ = ["chosen", "sampled", "after_sampling", "checksum", "mismatch"]

_SAMPLED_LEAVES = 8


def chosen(tree: Any) -> list[int]:
  """The positions (in ``jax.tree.leaves(tree)``) of the leaves :func:`sampled` reads: every
  non-empty leaf, or 8 of them spread evenly when there are more."""
  sized = [i for i, x in enumerate(jax.tree.leaves(tree)) if jnp.size(x)]
  if len(sized) <= _SAMPLED_LEAVES:
    return sized
  return [sized[round(i * (len(sized) - 1) / (_SAMPLED_LEAVES - 1))] for i in range(_SAMPLED_LEAVES)]


def sampled(tree: Any) -> jax.Array:
  """Entries ``0``, ``n // 2`` and ``n - 1`` (real and imaginary parts) of the :func:`chosen`
  leaves, in the widest accumulator dtype: a fingerprint of the params that costs a few dozen
  scalar reads, one gather per leaf (XLA fuses them into one small kernel; a slice per entry
  would be a kernel each, and compile time grows with the number of kernels)."""
  leaves = [jnp.asarray(x) for x in jax.tree.leaves(tree)]
  dtype = _norms.widest_acc_dtype(leaves)
  parts = []
  for x in (leaves[i] for i in chosen(tree)):
    flat_positions = np.array(sorted({0, x.size // 2, x.size - 1}))
    picked = x[np.unravel_index(flat_positions, x.shape)] if x.ndim else x[None]
    parts += [jnp.real(picked), jnp.imag(picked)] if jnp.iscomplexobj(x) else [picked]
  return jnp.concatenate([x.astype(dtype) for x in parts]) if parts else jnp.zeros([0], dtype)


def after_sampling(got: jax.Array, updates: Any, params: Any) -> Any:
  """``updates`` with the leaves of the :func:`chosen` params made to depend on their samples
  ``got`` (``_tree.after``): the caller's in-place ``params + updates`` then waits for the read
  instead of XLA copying those params first. The other leaves are not touched."""
  flag = _tree.read_flag(got)
  picked = set(chosen(params))
  positions = jax.tree.unflatten(jax.tree.structure(params), range(len(jax.tree.leaves(params))))
  try:
    return jax.tree.map(lambda i, u: _tree.after(flag, u) if i in picked else u, positions, updates)
  except ValueError:  # updates not shaped like the params: order every leaf
    return _tree.after(flag, updates)


def checksum(new_params: Any, got: jax.Array | None = None) -> jax.Array:
  """``[expected, scale]``: the sampled entries (:func:`sampled`) of ``new_params`` and their
  round-off scale ``|params| + |new_params|`` there (``got``: the params' samples; at ``init``,
  no ``got``, ``|new_params|``). The scale is within a factor 2 of ``|params| + |updates|``
  (triangle inequality), and reading ``new_params`` (the caller's output buffers) rather than
  the updates keeps the updates of the sampled leaves fused into the loop that writes the
  params: read twice, they were materialized (a kernel and a buffer each), and with updates
  that read the params (weight decay) XLA copied those params first."""
  expected = sampled(new_params)
  if got is None:
    return jnp.stack([expected, jnp.abs(expected)])
  return jnp.stack([expected, jnp.abs(got).astype(expected.dtype) + jnp.abs(expected)])


def mismatch(recorded: jax.Array, params: Any, got: jax.Array) -> jax.Array:
  """Whether the sampled entries ``got`` of ``params`` differ from what :func:`checksum`
  ``recorded`` expects by more than 16 ulps of the params' widest-spaced dtype, relative to
  ``|params| + |new params|`` there (so an update applied in another order, FMA or bfloat16, is not)."""
  dtypes = [jnp.asarray(x).dtype for x in jax.tree.leaves(params)]
  eps = max((float(jnp.finfo(d).eps) for d in dtypes if jnp.issubdtype(d, jnp.inexact)), default=0.0)
  return jnp.any(jnp.abs(got - recorded[0]) > 16.0 * max(eps, 1e-7) * recorded[1])
