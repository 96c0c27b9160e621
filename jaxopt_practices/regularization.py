"""Practice 7 — regularization through the optimizer: weight decay, L2, gradient noise, EMA and SWA.

Where each piece goes in an ``optax.chain``::

    chain(l2_penalty(...),              # coupled L2: first, on the raw gradient
          gradient_noise(...),          # on the gradient
          <gradient-based step>,        # e.g. adaptive.scale_by_adam()
          schedules.scale_by_learning_rate(lr),
          decoupled_weight_decay(..., learning_rate=lr),  # after the lr: follows it (AdamW),
                                                          # or learning_rate=None: lr-independent
          ema(...), swa(...))           # last: they average params + final updates

``ema`` / ``swa`` pass the updates through unchanged; read the averaged weights with
:func:`ema_params` / :func:`swa_params` from the whole optimizer state. The placement cannot be
wrong with the forms that take the optimizer: ``decoupled_weight_decay(rate, learning_rate=lr,
inner=tx)`` and ``ema(decay, inner=tx)`` are ``chain(tx, ...)``. Placed by hand, a decoupled
decay before ``schedules.scale_by_learning_rate`` raises at the first update, and an ``ema``
that is not last makes :func:`ema_params` raise from the second update on. After training,
:func:`update_bn` recomputes BatchNorm statistics for the averaged weights.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_practices import _base
from jaxopt_practices._base import DecoupledWeightDecayState as DecoupledWeightDecayState
from jaxopt_practices._base import L2PenaltyState as L2PenaltyState
from jaxopt_practices._base import decoupled_weight_decay as decoupled_weight_decay
from jaxopt_practices._base import l2_penalty as l2_penalty
from jaxopt_practices._averages import EmaState as EmaState
from jaxopt_practices._averages import ParamDtypes as ParamDtypes
from jaxopt_practices._averages import SwaState as SwaState
from jaxopt_practices._averages import ema as ema
from jaxopt_practices._averages import ema_params as ema_params
from jaxopt_practices._averages import swa as swa
from jaxopt_practices._averages import swa_params as swa_params
from jaxopt_practices._batch_norm import update_bn as update_bn
from jaxopt_practices import _tree
from jaxopt_practices import _validate

__all__ = [
    "L2PenaltyState", "l2_penalty", "DecoupledWeightDecayState", "decoupled_weight_decay",
    "GradientNoiseState", "gradient_noise",
    "ParamDtypes", "EmaState", "ema", "ema_params", "SwaState", "swa", "swa_params", "update_bn",
]

ScalarOrSchedule = _base.ScalarOrSchedule


# ----------------------------------------------------------------------------- gradient noise
class GradientNoiseState(NamedTuple):
  """Update count and the raw ``uint32`` PRNG key data (checkpointable, unlike typed keys).

  Attributes:
    count: int32 number of updates applied so far (:math:`t` of the noise's variance).
    key: ``jax.random.key_data`` of the key the next update splits, ``uint32``.
  """
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count: see CONTRIBUTING
  key: jax.Array


def gradient_noise(eta: float = 0.01, gamma: float = 0.55, seed: int = 0,
                   axis_name: str | None = None) -> optax.GradientTransformation:
  r"""Adds annealed Gaussian noise to the gradients.

  .. math:: g_t \leftarrow g_t + \mathcal N(0, \sigma_t^2),\qquad \sigma_t^2 = \frac{\eta}{(1 + t)^\gamma}

  with :math:`t` the number of updates already applied (0 at the first), like
  ``optax.add_noise``. The noise is drawn in float32 and added in float32, then cast to the
  gradient dtype. The key lives in the state as raw ``uint32`` key data and is split once
  per step, so two replicas initialised with the same ``seed`` draw the same noise by
  construction (no communication needed). With ``axis_name`` the key of replica 0 is used
  on every replica (an ``all_gather``), which keeps the noise identical even if the states
  were initialised with different seeds.

  Args:
    eta: :math:`\eta \ge 0`.
    gamma: :math:`\gamma \ge 0`.
    seed: an integer seed for ``jax.random.key``, in [-2**63, 2**63 - 1].
    axis_name: optional ``pmap`` / ``shard_map`` axis (see above).

  Returns:
    An ``optax.GradientTransformation``; its state is :class:`GradientNoiseState`.

  Raises:
    ValueError: for a negative ``eta`` or ``gamma``, a ``seed`` that is not an integer in range,
      or an ``axis_name`` that is not a string or ``None``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import regularization
    >>> tx = regularization.gradient_noise(eta=0.0)
    >>> u, state = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
    >>> print(u, state.key.dtype)
    [1. 1.] uint32

  References:
    Neelakantan et al, Adding Gradient Noise Improves Learning for Very Deep Networks, 2015.
  """
  _validate.check_number("eta", eta, low=0.0)
  _validate.check_number("gamma", gamma, low=0.0)
  _validate.check_seed("seed", seed)
  _validate.check_axis_name(axis_name)

  def init_fn(params):
    del params
    return GradientNoiseState(count=jnp.zeros([], jnp.int32),
                              key=jax.random.key_data(jax.random.key(seed)))

  def update_fn(updates, state, params=None):
    _validate.check_state("regularization.gradient_noise", state, GradientNoiseState)
    del params
    data = state.key
    if axis_name is not None:
      data = jax.lax.all_gather(data, axis_name)[0]
    key, sub = jax.random.split(jax.random.wrap_key_data(data))
    t = state.count.astype(jnp.float32)
    var = jnp.asarray(eta, jnp.float32) / jnp.power(1.0 + t, jnp.asarray(gamma, jnp.float32))
    std = jnp.sqrt(var)
    leaves, treedef = jax.tree.flatten(updates)
    keys = jax.random.split(sub, len(leaves))

    out = jax.tree.unflatten(treedef, [_noisy(g, keys[i], std) for i, g in enumerate(leaves)])
    return out, GradientNoiseState(count=_tree.increment(state.count), key=jax.random.key_data(key))

  return optax.GradientTransformation(init_fn, update_fn)


def _noisy(g: Any, key: jax.Array, std: jax.Array) -> jax.Array:
  """``g + N(0, std^2)``, drawn and added in float32 or wider; a complex ``g`` gets independent
  noise on each real component (as if viewed as real pairs)."""
  g = jnp.asarray(g)
  acc = _tree.real_dtype(g.dtype)

  def add(x, k):
    return x.astype(acc) + jax.random.normal(k, x.shape, acc) * std.astype(acc)

  if jnp.iscomplexobj(g):
    k_re, k_im = jax.random.split(key)
    return jax.lax.complex(add(jnp.real(g), k_re), add(jnp.imag(g), k_im)).astype(g.dtype)
  return add(g, key).astype(g.dtype)
