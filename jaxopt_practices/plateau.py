"""Practice 2a — adaptive decay: reduce the learning rate when a metric stops improving.

``reduce_on_plateau`` is PyTorch's ``ReduceLROnPlateau`` as an optax transform. It keeps a
*scale* (PyTorch's ``lr / base_lr``) and multiplies the updates by it; place it after the
learning-rate scaling (or anywhere in a chain of linear steps). Differences from
``optax.contrib.reduce_on_plateau``: PyTorch's ``threshold_mode`` (rel/abs), ``mode``
(min/max), the cooldown reset of bad epochs, the ``eps`` rule, and the timing below.

Timing: ``update(updates, state, value=v_t)`` multiplies update ``t`` by the scale *before*
``v_t`` is taken into account; a reduction triggered by ``v_t`` applies from update ``t + 1``.
This is PyTorch's ``optimizer.step(); scheduler.step(metric)``.

Once per epoch on a validation loss (PyTorch's usual ``scheduler.step(val_loss)``): call
``update`` without ``value`` during the epoch and :func:`step` after it::

    for epoch in range(num_epochs):
      for batch in train_batches:
        state = train_step(state, batch)           # tx.update(grads, opt_state, params)
      state = plateau.step(state, val_loss(state))  # the reduced lr applies from the next update

:func:`step` and :func:`scale` take any container: a raw optax state, a linen
``TrainState`` (:class:`jaxopt_practices.training.TrainState` also forwards
``apply_gradients(grads=g, value=loss)`` to the plateau), an ``nnx.Optimizer`` or its
``opt_state``; both work inside ``jax.jit`` / ``nnx.jit``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_practices import _tree
from jaxopt_practices import _validate


__all__ = ["PlateauRule", "ReduceOnPlateauState", "reduce_on_plateau", "scale", "step"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PlateauRule:
  """The arguments of :func:`reduce_on_plateau` that one evaluation reads, kept in its state.

  Every update writes the transform's current rule here; :func:`step` reads it.

  Attributes:
    factor, patience, threshold, cooldown, min_scale, eps: as in :func:`reduce_on_plateau`, as
      array leaves (float32; ``patience`` and ``cooldown`` int32), so the state stays
      checkpointable, replicable and ``inject_hyperparams``-able.
    mode, threshold_mode: as in :func:`reduce_on_plateau`; static fields (part of the tree
      structure, not leaves).
  """
  factor: jax.Array
  patience: jax.Array
  threshold: jax.Array
  cooldown: jax.Array
  min_scale: jax.Array
  eps: jax.Array
  mode: str = dataclasses.field(metadata={"static": True})
  threshold_mode: str = dataclasses.field(metadata={"static": True})

  @classmethod
  def of(cls, factor: Any, patience: Any, threshold: Any, cooldown: Any, min_scale: Any, eps: Any, mode: str,
         threshold_mode: str) -> PlateauRule:
    """The rule of these arguments (numbers or traced arrays, as ``inject_hyperparams`` passes them)."""
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return cls(factor=f32(factor), patience=jnp.asarray(patience, jnp.int32), threshold=f32(threshold),
               cooldown=jnp.asarray(cooldown, jnp.int32), min_scale=f32(min_scale), eps=f32(eps), mode=mode,
               threshold_mode=threshold_mode)


@_tree.learning_rate_factor(lambda s: s.scale)
class ReduceOnPlateauState(NamedTuple):
  """Scale applied to the updates, PyTorch's plateau bookkeeping, the current accumulation window, the rule.

  Attributes:
    scale: float32, the current learning rate over the base one (read it with :func:`scale`).
    best, num_bad_epochs, cooldown_counter: PyTorch's (``best`` is ±inf before any evaluation).
    window_count, window_sum: int32 count and float32 sum of the values in the current window.
    rule: the :class:`PlateauRule` that :func:`step` applies.
    driven_by: int32 bits: 1 = values given to ``update``, 2 = :func:`step` (3, both: an error).
  """
  scale: jax.Array             # float32, lr / base lr
  best: jax.Array              # float32, best metric so far (+inf / -inf before the first)
  num_bad_epochs: jax.Array    # int32, bad evaluations in a row (PyTorch's num_bad_epochs)
  cooldown_counter: jax.Array  # int32, evaluations of cooldown left (PyTorch's cooldown_counter)
  window_count: jax.Array      # int32, values in the current accumulation window
  window_sum: jax.Array        # float32, sum of the values in the current window
  rule: PlateauRule            # factor, patience, ... (what plateau.step needs)
  driven_by: jax.Array         # int32 bits: 1 = values given to update, 2 = plateau.step (3 = both: an error)


def _initial_state(rule: PlateauRule) -> ReduceOnPlateauState:
  worst = jnp.inf if rule.mode == "min" else -jnp.inf
  return ReduceOnPlateauState(
      scale=jnp.ones([], jnp.float32),
      best=jnp.full([], worst, jnp.float32),
      num_bad_epochs=jnp.zeros([], jnp.int32),
      cooldown_counter=jnp.zeros([], jnp.int32),
      window_count=jnp.zeros([], jnp.int32),
      window_sum=jnp.zeros([], jnp.float32),
      rule=rule,
      driven_by=jnp.zeros([], jnp.int32),
  )


_BY_UPDATE, _BY_STEP = 1, 2


def _concrete_max(x: jax.Array) -> int | None:
  """The largest entry of ``x`` (several on a replicated state) when it can be read here, else None."""
  if isinstance(x, jax.core.Tracer) or not getattr(x, "is_fully_addressable", True):
    return None
  return int(np.max(np.asarray(x)))


def _driven(state: ReduceOnPlateauState, by: int, caller: str) -> jax.Array:
  """``state.driven_by`` with ``by`` added; ``ValueError`` when that makes both drivers and it is concrete.

  Passing ``value=`` to every update *and* calling :func:`step` counts each evaluation twice.
  Inside ``jit`` the bits are traced: the conflict is recorded and raised by the first call that
  sees a concrete state (usually the ``plateau.step`` after the epoch).
  """
  driven = state.driven_by | by
  if _concrete_max(driven) == _BY_UPDATE | _BY_STEP:
    raise ValueError(
        f"{caller}: this reduce_on_plateau state is driven twice, by values passed to update (value=loss, e.g. "
        "TrainState.apply_gradients(grads=g, value=loss)) and by plateau.step, so every evaluation would count "
        "twice. Use one: drop value= from the update calls and call state = plateau.step(state, val_loss) once "
        "per epoch (PyTorch's scheduler.step(val_loss)), or keep value= and drop plateau.step.")
  return driven


def _metric_value(value: Any, axis_name: str | None) -> jax.Array:
  """``value`` as a float32 scalar, ``pmean``-ed over ``axis_name`` when given."""
  if value is None:
    raise ValueError("value must be a scalar metric (e.g. the validation loss), got value = None.")
  value = jnp.asarray(value).astype(jnp.float32)
  if jnp.shape(value) != ():
    raise ValueError(f"value must be a scalar, got an array of shape {jnp.shape(value)}.")
  if axis_name is not None:
    value = jax.lax.pmean(value, axis_name)
  return value


def _accumulate(state: ReduceOnPlateauState, value: jax.Array) -> ReduceOnPlateauState:
  """``state`` with ``value`` added to the current window."""
  return state._replace(window_count=_tree.increment(state.window_count), window_sum=state.window_sum + value)


def _is_better(metric: jax.Array, best: jax.Array, rule: PlateauRule) -> jax.Array:
  """PyTorch's ``is_better`` for ``mode`` / ``threshold_mode``; never for a non-finite metric."""
  thr = jnp.asarray(rule.threshold, jnp.float32)
  if rule.mode == "min":
    better = metric < (best * (1.0 - thr) if rule.threshold_mode == "rel" else best - thr)
  else:
    better = metric > (best * (1.0 + thr) if rule.threshold_mode == "rel" else best + thr)
  return better & jnp.isfinite(metric)


def _count_bad(state: ReduceOnPlateauState, better: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The bad-evaluation and cooldown counters after one evaluation, before any reduction.

  A better metric resets the bad count; during cooldown the cooldown counter ticks down and
  bad evaluations are ignored.
  """
  bad = jnp.where(better, 0, _tree.increment(state.num_bad_epochs))
  in_cooldown = state.cooldown_counter > 0
  cool = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
  return jnp.where(in_cooldown, 0, bad), cool


def _reduced_scale(scale: jax.Array, rule: PlateauRule) -> jax.Array:
  """``max(scale * factor, min_scale)``, or ``scale`` when that changes it by ``eps`` or less."""
  new = jnp.maximum(scale * jnp.asarray(rule.factor, jnp.float32), jnp.asarray(rule.min_scale, jnp.float32))
  return jnp.where(scale - new > jnp.asarray(rule.eps, jnp.float32), new, scale)


def _after_evaluation(state: ReduceOnPlateauState, metric: jax.Array, rule: PlateauRule) -> ReduceOnPlateauState:
  """The state after PyTorch's ``scheduler.step(metric)``, with an empty window."""
  better = _is_better(metric, state.best, rule)
  bad, cool = _count_bad(state, better)
  reduce = bad > jnp.asarray(rule.patience, jnp.int32)
  return state._replace(
      scale=jnp.where(reduce, _reduced_scale(state.scale, rule), state.scale),
      best=jnp.where(better, metric, state.best),
      num_bad_epochs=jnp.where(reduce, 0, bad).astype(jnp.int32),
      cooldown_counter=jnp.where(reduce, jnp.asarray(rule.cooldown, jnp.int32), cool).astype(jnp.int32),
      window_count=jnp.zeros_like(state.window_count),
      window_sum=jnp.zeros_like(state.window_sum),
  )


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

  Two ways to drive it:

  * per update: ``update(updates, state, params, value=loss)`` (with ``accumulation_size``
    to average several values into one evaluation);
  * once per epoch, as PyTorch users call ``scheduler.step(val_loss)``: ``update`` without
    ``value`` (the updates are only scaled) and :func:`step` ``(opt_state, val_loss)``
    after each epoch. Its reduced scale applies from the very next update.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; call
    ``update(updates, state, params=None, *, value=None)``. Its state is a
    :class:`ReduceOnPlateauState`, which also holds the rule (:class:`PlateauRule`).

  Raises:
    ValueError: for an argument outside the range its ``Args`` line gives, an unknown ``mode`` or
      ``threshold_mode``, or an ``axis_name`` that is not a string or ``None``.

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
  patience = _validate.check_steps("patience", patience, allow_traced=True)  # inject_hyperparams: traced
  _validate.check_number("threshold", threshold, low=0.0)
  _validate.check_choice("threshold_mode", threshold_mode, ("rel", "abs"))
  _validate.check_choice("mode", mode, ("min", "max"))
  cooldown = _validate.check_steps("cooldown", cooldown, allow_traced=True)
  _validate.check_number("min_scale", min_scale, low=0.0, high=1.0)
  accumulation_size = _validate.check_steps("accumulation_size", accumulation_size, low=1, allow_traced=True)
  _validate.check_axis_name(axis_name)
  _validate.check_number("eps", eps, low=0.0)
  arguments = (factor, patience, threshold, cooldown, min_scale, eps, mode, threshold_mode)

  def init_fn(params):
    del params
    return _initial_state(PlateauRule.of(*arguments))

  def update_fn(updates, state, params=None, *, value=None, **extra_args):
    _validate.check_state("plateau.reduce_on_plateau", state, ReduceOnPlateauState)
    del params, extra_args
    rule = PlateauRule.of(*arguments)  # the current rule (injected hyperparameters included)
    s = state.scale  # the scale from before `value`: a reduction applies from the next update
    out = _tree.map_components(  # complex leaves as real pairs, float64 leaves in float64
        lambda g: (g.astype(_tree.real_dtype(g.dtype)) * s.astype(_tree.real_dtype(g.dtype))).astype(g.dtype), updates)
    state = state._replace(rule=rule)
    if value is None:  # driven by plateau.step: scale only
      return out, state
    state = state._replace(driven_by=_driven(state, _BY_UPDATE, "plateau.reduce_on_plateau update"))
    state = _accumulate(state, _metric_value(value, axis_name))
    ready = state.window_count >= jnp.asarray(accumulation_size, jnp.int32)
    evaluated = _after_evaluation(state, state.window_sum / state.window_count.astype(jnp.float32), rule)
    return out, jax.tree.map(lambda new, old: jnp.where(ready, new, old), evaluated, state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale(state: Any) -> jax.Array:
  """The current scale of the ``reduce_on_plateau`` state inside ``state``.

  ``state`` may be the transform's own state or any container holding exactly one (an
  ``optax.chain`` state, ``inject_hyperparams``, a linen ``TrainState``, an
  ``nnx.Optimizer`` or its ``opt_state``).

  Args:
    state: an optimizer state, or a container of one, holding one ``reduce_on_plateau`` state.

  Returns:
    The float32 scale, the learning rate over the base one (1 until the first reduction).

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


def step(opt_state: Any, value: Any, *, axis_name: str | None = None) -> Any:
  """``opt_state`` with its ``reduce_on_plateau`` state advanced by one evaluation of ``value``.

  ≙ PyTorch's ``scheduler.step(val_loss)`` called once per epoch: the metric is compared
  with the best so far using the rule stored in the state (``factor``, ``patience``,
  ``threshold``, ``threshold_mode``, ``mode``, ``cooldown``, ``min_scale``, ``eps``), and a
  reduction applies from the very next update. ``accumulation_size`` does not apply:
  ``value`` is one evaluation (a partial window of per-update values is discarded).

  ``opt_state`` is any container holding exactly one plateau state: a raw optax state
  (``optax.chain``, ``inject_hyperparams``, ``monitor.track``, ...) comes back as a new
  state; a linen ``TrainState`` as a new ``TrainState`` (``.replace``); an
  ``nnx.Optimizer`` or its ``opt_state`` is updated in place and returned. Works inside
  ``jax.jit`` / ``nnx.jit`` (``value`` may be traced) and outside, also on a
  ``pmap``-replicated state (every replica takes the same ``value``).

  Args:
    opt_state: the container (see above).
    value: the metric, a scalar (e.g. the validation loss; an accuracy with ``mode="max"``).
    axis_name: inside ``pmap`` / ``shard_map``, the axis to ``pmean`` a per-replica
      ``value`` over (so the replicas keep the same scale); ``None`` otherwise.

  Returns:
    The same kind of container, with the plateau state advanced.

  Raises:
    ValueError: when ``opt_state`` holds no ``reduce_on_plateau`` state or more than one,
      or ``value`` is not a scalar; when the state is also fed ``value=`` in ``update`` (each
      evaluation would count twice; raised by the first call that sees both drivers on a
      concrete state, and by an eager ``update`` with ``value`` after a ``step``); when the
      result is thrown away (``plateau.step(state, v)`` as a statement) while ``opt_state`` is a
      raw optax state or a ``TrainState``, which are not changed in place (an ``nnx.Optimizer``
      is: there the statement form is right).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import plateau
    >>> tx = optax.chain(optax.sgd(1.0), plateau.reduce_on_plateau(factor=0.5, patience=0))
    >>> state = tx.init(jnp.zeros(1))
    >>> for val_loss in [1.0, 2.0]:            # two epochs; the second is worse
    ...   u, state = tx.update(jnp.ones(1), state)   # one update per epoch, no value
    ...   state = plateau.step(state, val_loss)
    >>> print(u, plateau.scale(state))          # the 2nd update still used scale 1
    [-1.] 0.5
    >>> print(tx.update(jnp.ones(1), state)[0])  # the reduced scale applies from the next one
    [-0.5]
  """
  _validate.check_axis_name(axis_name)
  metric = _metric_value(value, axis_name)

  def evaluate(s):
    return _after_evaluation(s, metric, s.rule)._replace(driven_by=_driven(s, _BY_STEP, "plateau.step"))

  new = _tree.replace_state(opt_state, ReduceOnPlateauState, evaluate, "plateau.step",
                            "chain plateau.reduce_on_plateau(...) into the optimizer.")
  if new is not opt_state and _validate.result_discarded():
    raise ValueError(
        f"plateau.step returns the advanced state and leaves the {type(opt_state).__name__} it was given as it was "
        "(only an nnx.Optimizer is updated in place), and its result was discarded: this evaluation is lost. "
        "Write state = plateau.step(state, val_loss).")
  return new
