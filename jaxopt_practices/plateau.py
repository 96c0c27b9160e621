"""Practice 2a — adaptive decay: reduce the learning rate when a metric stops improving.

``reduce_on_plateau`` is PyTorch's ``ReduceLROnPlateau`` as an optax transform. It keeps a
*scale* (PyTorch's ``lr / base_lr``) and multiplies the updates by it; place it after the
learning-rate scaling (or anywhere in a chain of linear steps). Differences from
``optax.contrib.reduce_on_plateau``: PyTorch's ``threshold_mode`` (rel/abs), ``mode``
(min/max), the cooldown reset of bad epochs, the ``eps`` rule, and the timing below.

Timing: ``update(updates, state, value=v_t)`` multiplies update ``t`` by the scale *before*
``v_t`` is taken into account; a reduction triggered by ``v_t`` applies from update ``t + 1``.
This is PyTorch's ``optimizer.step(); scheduler.step(metric)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_practices import _tree
from jaxopt_practices import _validate


@_tree.learning_rate_factor(lambda s: s.scale)
class ReduceOnPlateauState(NamedTuple):
  """Scale applied to the updates, plateau bookkeeping and the current accumulation window."""
  scale: jax.Array            # float32, lr / base lr
  best: jax.Array             # float32, best metric so far (+inf / -inf before the first)
  num_bad_epochs: jax.Array   # int32
  cooldown_counter: jax.Array  # int32
  count: jax.Array            # int32, values in the current window
  accumulated: jax.Array      # float32, sum of the values in the current window


def _check_count(name: str, value: Any, low: int) -> None:
  """``check_int`` that also accepts the concrete int arrays ``inject_hyperparams`` passes."""
  if isinstance(value, (jax.Array, np.ndarray)) and not isinstance(value, jax.core.Tracer):
    if value.shape == () and jnp.issubdtype(value.dtype, jnp.integer):
      value = int(value)
  _validate.check_int(name, value, low=low)


def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    mode: str = "min",
    cooldown: int = 0,
    min_scale: float = 0.0,
    accumulation_size: int = 1,
    axis_name: str | None = None,
    *,
    eps: float = 1e-8,
) -> optax.GradientTransformationExtraArgs:
  r"""Multiplies updates by a scale that drops by ``factor`` on a plateau ≙ ``torch ReduceLROnPlateau``.

  Every ``accumulation_size`` calls, the mean :math:`m` of the values passed forms one
  evaluation (PyTorch's ``scheduler.step(m)``). With ``mode="min"`` it improves on the best
  :math:`b` when :math:`m < b(1 - \text{threshold})` (``"rel"``) or
  :math:`m < b - \text{threshold}` (``"abs"``); ``"max"`` mirrors this. Otherwise it is a bad
  evaluation; bad evaluations during cooldown are ignored. When there have been more than
  ``patience`` bad evaluations in a row:

  .. math:: s \leftarrow \max(s \cdot \text{factor}, \text{min\_scale})
    \quad\text{if}\quad s - \max(s \cdot \text{factor}, \text{min\_scale}) > \epsilon,

  then the cooldown restarts and the bad count resets. ``eps`` is PyTorch's ``eps`` measured
  on the scale, i.e. relative to the base learning rate (identical to PyTorch for a base lr of
  1; pass ``eps = torch_eps / base_lr`` otherwise).

  Non-finite evaluations: a NaN compares false in PyTorch, so it is a bad evaluation; we do
  the same, and ``±inf`` is a bad evaluation too, so non-finite values never become the best
  (PyTorch would adopt ``-inf`` as the best in ``"min"`` mode).

  The value passed with update :math:`t` only affects updates :math:`t+1, t+2, \dots` (see
  the module docstring). With ``axis_name`` the value is ``pmean``-ed over that axis, so
  every replica keeps the same scale.

  Args:
    factor: multiplier in [0, 1) applied on a plateau.
    patience: bad evaluations tolerated before reducing, ``>= 0``.
    threshold: improvement threshold, ``>= 0``.
    threshold_mode: ``"rel"`` or ``"abs"``.
    mode: ``"min"`` (a loss) or ``"max"`` (an accuracy).
    cooldown: evaluations to wait after a reduction before counting bad ones, ``>= 0``.
    min_scale: floor of the scale in [0, 1] (PyTorch's ``min_lr / base_lr``).
    accumulation_size: values averaged into one evaluation, ``>= 1``.
    axis_name: a ``pmap`` / ``shard_map`` axis to average the value over, or ``None``.
    eps: minimal change of the scale, ``>= 0``; smaller reductions are skipped.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; call
    ``update(updates, state, params=None, *, value)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import plateau
    >>> tx = plateau.reduce_on_plateau(factor=0.5, patience=1)
    >>> state = tx.init(jnp.zeros(1))
    >>> for loss in [1.0, 1.0, 1.0, 1.0]:
    ...   u, state = tx.update(jnp.ones(1), state, value=loss)
    >>> print(u, plateau.scale(state))
    [0.5] 0.5

  References:
    PyTorch, ``torch.optim.lr_scheduler.ReduceLROnPlateau``.
  """
  _validate.check_number("factor", factor, low=0.0, high=1.0, high_open=True)
  _check_count("patience", patience, 0)
  _validate.check_number("threshold", threshold, low=0.0)
  _validate.check_choice("threshold_mode", threshold_mode, ("rel", "abs"))
  _validate.check_choice("mode", mode, ("min", "max"))
  _check_count("cooldown", cooldown, 0)
  _validate.check_number("min_scale", min_scale, low=0.0, high=1.0)
  _check_count("accumulation_size", accumulation_size, 1)
  _validate.check_axis_name(axis_name)
  _validate.check_number("eps", eps, low=0.0)
  worst = jnp.inf if mode == "min" else -jnp.inf

  def init_fn(params):
    del params
    return ReduceOnPlateauState(
        scale=jnp.ones([], jnp.float32),
        best=jnp.full([], worst, jnp.float32),
        num_bad_epochs=jnp.zeros([], jnp.int32),
        cooldown_counter=jnp.zeros([], jnp.int32),
        count=jnp.zeros([], jnp.int32),
        accumulated=jnp.zeros([], jnp.float32),
    )

  def _evaluate(state, metric):
    f32 = jnp.float32
    thr = jnp.asarray(threshold, f32)
    best = state.best
    if mode == "min":
      better = metric < (best * (1.0 - thr) if threshold_mode == "rel" else best - thr)
    else:
      better = metric > (best * (1.0 + thr) if threshold_mode == "rel" else best + thr)
    better = better & jnp.isfinite(metric)
    best = jnp.where(better, metric, best)
    bad = jnp.where(better, 0, _tree.increment(state.num_bad_epochs))
    in_cooldown = state.cooldown_counter > 0
    cool = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
    bad = jnp.where(in_cooldown, 0, bad)
    reduce = bad > jnp.asarray(patience, jnp.int32)
    old = state.scale
    new = jnp.maximum(old * jnp.asarray(factor, f32), jnp.asarray(min_scale, f32))
    scale = jnp.where(reduce & (old - new > jnp.asarray(eps, f32)), new, old)
    cool = jnp.where(reduce, jnp.asarray(cooldown, jnp.int32), cool)
    bad = jnp.where(reduce, 0, bad)
    return scale, best, bad.astype(jnp.int32), cool.astype(jnp.int32)

  def update_fn(updates, state, params=None, *, value, **extra_args):
    del params, extra_args
    value = jnp.asarray(value).astype(jnp.float32)
    if jnp.shape(value) != ():
      raise ValueError(f"value must be a scalar, got an array of shape {jnp.shape(value)}.")
    if axis_name is not None:
      value = jax.lax.pmean(value, axis_name)
    s = state.scale
    out = jax.tree.map(lambda g: (g.astype(_tree.acc_dtype(g.dtype)) * s).astype(g.dtype), updates)

    count = _tree.increment(state.count)
    accumulated = state.accumulated + value
    ready = count >= jnp.asarray(accumulation_size, jnp.int32)
    metric = accumulated / count.astype(jnp.float32)
    scale, best, bad, cool = _evaluate(state, metric)
    new_state = ReduceOnPlateauState(
        scale=jnp.where(ready, scale, state.scale),
        best=jnp.where(ready, best, state.best),
        num_bad_epochs=jnp.where(ready, bad, state.num_bad_epochs),
        cooldown_counter=jnp.where(ready, cool, state.cooldown_counter),
        count=jnp.where(ready, 0, count).astype(jnp.int32),
        accumulated=jnp.where(ready, 0.0, accumulated).astype(jnp.float32),
    )
    return out, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale(state: Any) -> jax.Array:
  """The current scale of the ``reduce_on_plateau`` state inside ``state``.

  ``state`` may be the transform's own state or any container holding exactly one (an
  ``optax.chain`` state, ``inject_hyperparams``, a linen ``TrainState``, an
  ``nnx.Optimizer`` or its ``opt_state``).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import plateau
    >>> tx = optax.chain(optax.sgd(0.1), plateau.reduce_on_plateau())
    >>> print(plateau.scale(tx.init(jnp.zeros(3))))
    1.0

  Raises:
    ValueError: when ``state`` holds no ``reduce_on_plateau`` state, or more than one.
  """
  return _tree.find_state(state, ReduceOnPlateauState, "plateau.scale",
                          "chain plateau.reduce_on_plateau(...) into the optimizer.").scale
