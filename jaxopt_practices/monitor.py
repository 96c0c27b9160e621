"""A live view of training: the real learning rate and gradient health, in the optimizer state.

``track(inner)`` wraps any transform; after each update its state holds the number of
updates applied, the learning rate actually applied, the global norms of the gradients,
updates and params, and how many steps had non-finite gradients. ``stats(opt_state)``
reads them from anywhere inside a (chained, injected, masked) state, inside ``jit`` or
after it. The norms are computed inside the same compiled update (no extra compilation,
no extra host round trip) as plain sums of squares, with a second, exactly scaled pass
when a sum overflows or underflows, so they are finite for finite gradients near the float
maximum, as ``clipping.clip_by_global_norm``'s.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_practices import _averages
from jaxopt_practices import _norms
from jaxopt_practices import _tree
from jaxopt_practices import _validate

__all__ = ["TrackState", "track", "stats", "current_learning_rate"]


class TrackState(NamedTuple):
  """The state of :func:`track`: the inner state plus the statistics of the last update.

  Attributes:
    inner_state: the wrapped transform's state.
    count: int32, the number of updates applied so far (0 at ``init``; :func:`stats` reports it
      as ``"step"``).
    learning_rate: the learning rate applied at the last update (see :func:`current_learning_rate`,
      or ``track``'s ``learning_rate=``), in its schedule's dtype (float32 at least); NaN when
      unknown.
    grad_norm: float32 (or wider), the global L2 norm of the last measured gradients.
    update_norm: float32 (or wider), the global L2 norm of the last measured update.
    param_norm: float32 (or wider), the global L2 norm of the params before the last measured
      update (0 when no params were passed).
    nonfinite_count: int32, the number of measured updates so far whose gradients held NaN or Inf.
  """
  inner_state: Any
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count: see CONTRIBUTING
  learning_rate: jax.Array
  grad_norm: jax.Array
  update_norm: jax.Array
  param_norm: jax.Array
  nonfinite_count: jax.Array


def _widest(values: list) -> list[jax.Array]:
  """``values`` as arrays of their widest float dtype (float32 at least): no promotion warnings."""
  values = [jnp.asarray(v) for v in values]
  dtypes = [v.dtype for v in values if jnp.issubdtype(v.dtype, jnp.floating)] + [jnp.dtype(jnp.float32)]
  dtype = max(dtypes, key=lambda d: d.itemsize)
  return [v.astype(dtype) for v in values]


def current_learning_rate(opt_state: Any) -> jax.Array:
  """The learning rate applied at the last update, read from any optimizer state.

  It is the product of every learning rate our transforms applied (schedules and
  Adagrad's lr decay included), every ``plateau`` scale, and the ``learning_rate`` of
  any ``optax.inject_hyperparams`` state, in the widest dtype among them (float64 for a
  schedule computed in float64). It is the base learning rate: per-group multipliers
  (``groups.scale_by_group``) are not in it.

  Args:
    opt_state: any optimizer state or container of one (a raw optax state, a linen
      ``TrainState``, an ``nnx.Optimizer`` or its ``opt_state``), inside ``jit`` or outside.

  Returns:
    A scalar array: the product above, in float32 or the widest dtype among its factors. NaN
    (float32) when the state holds none of these, e.g. plain ``optax.sgd(0.1)``, whose learning
    rate is not in its state: pass it to ``track(tx, learning_rate=...)``, or wrap the optimizer
    in ``optax.inject_hyperparams``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import adaptive, monitor
    >>> tx = adaptive.adam(optax.linear_schedule(1e-3, 0.0, 10))
    >>> p = jnp.ones(2)
    >>> _, state = tx.update(jnp.ones(2), tx.init(p), p)
    >>> print(round(float(monitor.current_learning_rate(state)), 6))   # the lr of update 0
    0.001
    >>> print(monitor.current_learning_rate(optax.sgd(0.1).init(p)))   # optax keeps no lr in its state
    nan
  """
  factors = list(_tree.learning_rate_factors(opt_state))
  for s in _tree.find_states(opt_state, optax.InjectStatefulHyperparamsState):
    if "learning_rate" in s.hyperparams:
      factors.append(s.hyperparams["learning_rate"])
  if not factors:
    return jnp.full([], jnp.nan, jnp.float32)
  factors = _widest(factors)
  lr = factors[0]
  for factor in factors[1:]:
    lr = lr * factor
  return lr


def _stats(grad: tuple, update: tuple, param: tuple, nonfinite_count: jax.Array) -> tuple:
  """``(grad_norm, update_norm, param_norm, nonfinite_count)``, the norms in float32, from the
  ``(norm, m, r)`` of each tree (``_norms.l2_norms``). A gradient holding NaN / Inf gives a
  non-finite ``m``, counted as a non-finite step."""
  bad = (~jnp.isfinite(grad[1])).astype(jnp.int32)
  return (grad[0].astype(jnp.float32), update[0].astype(jnp.float32), param[0].astype(jnp.float32),
          nonfinite_count + bad)


def _measure(updates: Any, new_updates: Any, params: Any, nonfinite_count: jax.Array) -> tuple:
  """:func:`_stats` of the three trees, their norms taken with one overflow check."""
  grad, update, param = _norms.l2_norms([updates, new_updates, params])
  return _stats(grad, update, param, nonfinite_count)


_AVERAGES = (_averages.EmaState, _averages.SwaState)  # transforms that compute params + updates themselves


def track(inner: optax.GradientTransformation, every: int = 1, *,
          learning_rate: float | optax.Schedule | None = None) -> optax.GradientTransformationExtraArgs:
  r"""Wraps ``inner`` so that its state records the statistics of each update.

  Recorded after each update :math:`u_t = \text{inner}(g_t)`: ``count`` (updates applied),
  ``learning_rate`` (``learning_rate(t)`` when given, else :func:`current_learning_rate`),
  ``grad_norm`` :math:`\|g_t\|_2`, ``update_norm`` :math:`\|u_t\|_2`, ``param_norm``
  :math:`\|\theta_{t-1}\|_2` (0 when no params are passed) and ``nonfinite_count`` (steps
  whose gradients held NaN or Inf). Extra keyword arguments (e.g. ``value=loss`` for a
  plateau scheduler) are forwarded.

  How: the inner update runs once; the three norms are plain float32 (or wider) sums of
  squares of the gradients, the update it returned and the params, as ``optax.global_norm``
  would take them, in loops that make a second pass only when one of the sums overflows,
  underflows or is NaN, with the entries scaled by an exact power of two; so the norms are
  finite for finite inputs near the float maximum, as ``clipping.clip_by_global_norm``'s. The
  returned updates depend on the norms (a select fused into ``apply_updates``), so the
  caller's in-place params write waits for the param norm's read and no donated buffer is
  copied. An ``inner`` holding an ``ema`` or ``swa`` computes params + updates itself, so
  its updates are returned untouched (else XLA computes that sum twice and copies the params
  first): the gradient and param norms then come before the inner update, which takes
  gradients that depend on them, and the update norm after it. Cost: the update is
  materialized once (a parameter-sized temporary) and read by one extra reduction, as is
  each of the gradients and params.
  ``every=k`` puts the norms under a ``lax.cond`` taken on updates ``0, k, 2k, ...`` and
  re-runs the inner update there (unless it has side effects such as host callbacks), so
  that the other updates run the plain inner step; they keep the last values. ``count``
  and ``learning_rate`` are exact on every update. Measured costs are in
  ``benchmarks/README.md``.

  Args:
    inner: any ``optax.GradientTransformation``.
    every: measure the norms (and count non-finite steps) on updates ``0, k, 2k, ...``.
    learning_rate: the learning rate (a float or an ``optax.Schedule`` of the update count)
      to report, for an ``inner`` whose state does not show it (e.g. ``optax.sgd(0.1)``,
      reported as NaN without it); it replaces what the state shows. Reported in the dtype
      the schedule returns.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`TrackState`.

  Raises:
    ValueError: for an ``inner`` that is not an ``optax.GradientTransformation``, an ``every``
      that is not an integer number of steps ``>= 1``, or a negative ``learning_rate``; at
      ``update``, for a state that is not a :class:`TrackState` (e.g. a dict restored without a
      target).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import adaptive, monitor
    >>> tx = monitor.track(adaptive.adam(1e-3))
    >>> p = jnp.ones(3)
    >>> u, s = tx.update(jnp.full(3, 2.0), tx.init(p), p)
    >>> print(round(float(monitor.stats(s)["grad_norm"]), 4), round(float(monitor.stats(s)["learning_rate"]), 6))
    3.4641 0.001
    >>> tx = monitor.track(optax.sgd(0.1), learning_rate=0.1)   # optax keeps no lr in its state
    >>> print(monitor.stats(tx.update(jnp.ones(3), tx.init(p), p)[1])["learning_rate"])
    0.1
  """
  _validate.check_transform("inner", inner)
  every = _validate.check_steps("every", every, low=1)
  if learning_rate is not None:
    _validate.check_number("learning_rate", learning_rate, low=0.0, allow_schedule=True)
  inner = optax.with_extra_args_support(inner)

  def reported_learning_rate(inner_state, count):
    if learning_rate is None:
      return current_learning_rate(inner_state)
    return jnp.asarray(learning_rate(count) if callable(learning_rate) else learning_rate)

  def init_fn(params):
    inner_state = inner.init(params)
    zero = lambda: jnp.zeros([], jnp.float32)  # distinct buffers, so the state can be donated
    count = jnp.zeros([], jnp.int32)
    return TrackState(inner_state, count, reported_learning_rate(inner_state, count),
                      zero(), zero(), zero(), jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    _validate.check_state("monitor.track", state, TrackState)
    run = lambda grads: inner.update(grads, state.inner_state, params, **extra_args)
    keep = lambda _: (state.grad_norm, state.update_norm, state.param_norm, state.nonfinite_count)
    rerun = every > 1 and not jax.make_jaxpr(run)(updates).effects
    if every == 1 and _tree.find_states(state.inner_state, _AVERAGES):
      # An ema / swa inside computes params + updates as the caller will: the returned updates
      # must stay the inner's own, or XLA computes that sum twice and copies the params first.
      # So the gradient and param norms come first and the inner update takes gradients that
      # depend on them: every write of the update comes after those reads.
      grad, param = _norms.l2_norms([updates, params])
      new_updates, inner_state = run(_tree.after(_tree.read_flag(grad[0], param[0]), updates))
      (update,) = _norms.l2_norms([new_updates])
      measured = _stats(grad, update, param, state.nonfinite_count)
    elif rerun:
      # every=k: a measured update re-runs the inner update inside the cond, so that the others
      # never materialize it (on XLA:CPU a fresh parameter-sized temporary costs more than a
      # step); the real update then takes gradients that depend on the measurement.
      measure = lambda _: _measure(updates, run(updates)[0], params, state.nonfinite_count)
      measured = _tree.cond(state.count % every == 0, measure, keep, None)
      new_updates, inner_state = run(_tree.after(_tree.read_flag(*measured[:3]), updates))
    else:  # every=1 (one loop for the three norms), or an inner update with side effects (run once)
      new_updates, inner_state = run(updates)
      measure = lambda _: _measure(updates, new_updates, params, state.nonfinite_count)
      measured = measure(None) if every == 1 else _tree.cond(state.count % every == 0, measure, keep, None)
      if params is not None:  # the caller will write params + updates over the params just read
        new_updates = _tree.after(_tree.read_flag(*measured[:3]), new_updates)
    grad_norm, update_norm, param_norm, nonfinite = measured
    new_state = TrackState(inner_state=inner_state, count=_tree.increment(state.count),
                           learning_rate=reported_learning_rate(inner_state, state.count), grad_norm=grad_norm,
                           update_norm=update_norm, param_norm=param_norm, nonfinite_count=nonfinite)
    return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def stats(opt_state: Any) -> dict[str, jax.Array]:
  """The statistics of the last update, from the one :func:`track` state inside ``opt_state``.

  Works inside ``jit`` (traced values) and outside (concrete values).

  Args:
    opt_state: a state holding exactly one :class:`TrackState`: a raw optax state (chained,
      injected, masked), a linen ``TrainState``, an ``nnx.Optimizer`` or its ``opt_state``.

  Returns:
    A dict of scalar arrays: ``step`` (the number of updates applied, the state's ``count``),
    ``learning_rate`` (the base learning rate of the last update, see
    :func:`current_learning_rate`: per-group multipliers of ``groups.scale_by_group`` are not in
    it; NaN when it is not in the state and ``track`` was not given ``learning_rate=``),
    ``grad_norm``, ``update_norm``, ``param_norm``, ``update_param_ratio`` (NaN while
    ``param_norm`` is 0) and ``nonfinite_count``.

  Raises:
    ValueError: when the state holds no :func:`track` state, or more than one.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import momentum, monitor
    >>> tx = optax.chain(optax.identity(), monitor.track(momentum.sgd(0.5)))
    >>> p = jnp.array([6.0, 8.0])
    >>> _, state = tx.update(jnp.array([3.0, 4.0]), tx.init(p), p)
    >>> s = monitor.stats(state)
    >>> print(int(s["step"]), float(s["learning_rate"]), float(s["grad_norm"]), float(s["param_norm"]))
    1 0.5 5.0 10.0
    >>> print(float(s["update_norm"]), float(s["update_param_ratio"]))
    2.5 0.25
  """
  s = _tree.find_state(opt_state, TrackState, "monitor.stats", "wrap the optimizer with monitor.track(tx).")
  ratio = s.update_norm / jnp.where(s.param_norm > 0, s.param_norm, 1.0)
  return {"step": s.count, "learning_rate": s.learning_rate, "grad_norm": s.grad_norm,
          "update_norm": s.update_norm, "param_norm": s.param_norm,
          "update_param_ratio": jnp.where(s.param_norm > 0, ratio, jnp.nan),
          "nonfinite_count": s.nonfinite_count}
