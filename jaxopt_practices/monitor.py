"""A live view of training: the real learning rate and gradient health, in the optimizer state.

``track(inner)`` wraps any transform; after each update its state holds the number of
updates applied, the learning rate actually applied, the global norms of the gradients,
updates and params, and how many steps had non-finite gradients. ``stats(opt_state)``
reads them from anywhere inside a (chained, injected, masked) state, inside ``jit`` or
after it. The norms are computed inside the same compiled update (no extra compilation,
no extra host round trip) in one fused pass, with the package's overflow-safe norm kernel
as the fallback, so they are finite for finite gradients near the float maximum, as
``clipping.clip_by_global_norm``'s.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_practices import _norms
from jaxopt_practices import _tree
from jaxopt_practices import _validate

__all__ = ["TrackState", "track", "stats", "current_learning_rate"]


class TrackState(NamedTuple):
  """The inner state plus the statistics of the last update (float32 / int32 scalars).

  ``count`` is the number of updates applied so far (``stats()`` reports it as ``"step"``).
  """
  inner_state: Any
  count: jax.Array
  learning_rate: jax.Array
  grad_norm: jax.Array
  update_norm: jax.Array
  param_norm: jax.Array
  nonfinite_count: jax.Array


def current_learning_rate(opt_state: Any) -> jax.Array:
  """The learning rate applied at the last update, read from any optimizer state.

  It is the product of every learning rate our transforms applied (schedules and
  Adagrad's lr decay included), every ``plateau`` scale, and the ``learning_rate`` of
  any ``optax.inject_hyperparams`` state. NaN when the state holds none of these (e.g.
  plain ``optax.adam``, whose learning rate is not in its state: wrap it in
  ``optax.inject_hyperparams`` to see it).
  """
  lr, found = jnp.ones([], jnp.float32), False
  for factor in _tree.learning_rate_factors(opt_state):
    lr, found = lr * factor, True
  for s in _tree.find_states(opt_state, optax.InjectStatefulHyperparamsState):
    if "learning_rate" in s.hyperparams:
      lr, found = lr * jnp.asarray(s.hyperparams["learning_rate"], jnp.float32), True
  return lr if found else jnp.full([], jnp.nan, jnp.float32)


def _all_finite(tree: Any, norm: jax.Array) -> jax.Array:
  """Whether every value is finite; the full check runs only when the norm is not."""
  def check(_):
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.size(x)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)
  return _tree.cond(jnp.isfinite(norm), lambda _: jnp.asarray(True), check, None)


# Primitives that make re-running the inner update costly or observable: matrix work, loops,
# sorting, collectives, host callbacks. With any of them in the inner update, the update norm
# is taken from the update itself (materialized) instead of from a re-run fused into the pass.
_NO_RERUN = frozenset({
    "dot_general", "conv_general_dilated", "while", "scan", "fft", "cholesky", "eigh", "eig", "svd", "qr", "lu",
    "triangular_solve", "custom_linear_solve", "sort", "top_k", "cumsum", "cumprod", "cummax", "cummin",
    "psum", "pmax", "pmin", "all_gather", "all_to_all", "ppermute", "psum_scatter", "reduce_scatter",
    "debug_callback", "io_callback", "pure_callback", "debug_print",
})


def _primitives(jaxpr: Any):
  """The names of every primitive in ``jaxpr`` and its sub-jaxprs (cond branches, pjit, custom_jvp)."""
  for eqn in jaxpr.eqns:
    yield eqn.primitive.name
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, "jaxpr", sub)
        if hasattr(sub, "eqns"):
          yield from _primitives(sub)


def _rerun_is_cheap(rerun: Any) -> bool:
  """Whether the inner update ``rerun()`` is elementwise-cheap and free of side effects."""
  return _NO_RERUN.isdisjoint(_primitives(jax.make_jaxpr(rerun)().jaxpr))


def _measure(updates: Any, new_updates: Any, params: Any, nonfinite_count: jax.Array) -> tuple:
  """``(grad_norm, update_norm, param_norm, nonfinite_count)`` of one update, in one pass.

  ``new_updates()`` gives the update: a re-run of the inner update on the same inputs, fused
  into the one loop that also sums the squares of the gradients and params (the update is
  never materialized), or the update itself when a re-run would be costly.
  """
  sums = _norms.sums_of_squares([updates, new_updates(), params])
  grad_norm, update_norm, param_norm = (
      _norms.norm_from_sum(s, tree_fn).astype(jnp.float32)
      for s, tree_fn in zip(sums, (lambda: updates, new_updates, lambda: params)))
  bad = (~_all_finite(updates, grad_norm)).astype(jnp.int32)
  return grad_norm, update_norm, param_norm, nonfinite_count + bad


def _after(flag: jax.Array, tree: Any) -> Any:
  """``tree`` itself, but as values that depend on ``flag`` (always true): ``where(flag, x, 0)``.

  Applied to the inner state the update reads and to the updates it returns, so that XLA
  orders the measurement (which reads the old state and params) before the writes that
  overwrite those donated buffers in place, instead of copying the buffers first.
  """
  def after(x):
    if not isinstance(x, jax.Array) or jnp.issubdtype(x.dtype, jax.dtypes.extended):
      return x
    return jnp.where(flag, x, jnp.zeros_like(x))
  return jax.tree.map(after, tree)


def track(inner: optax.GradientTransformation, every: int = 1) -> optax.GradientTransformationExtraArgs:
  r"""Wraps ``inner`` so that its state records the statistics of each update.

  Recorded after each update :math:`u_t = \text{inner}(g_t)`: ``count`` (updates applied),
  ``learning_rate`` (see :func:`current_learning_rate`), ``grad_norm`` :math:`\|g_t\|_2`,
  ``update_norm`` :math:`\|u_t\|_2`, ``param_norm`` :math:`\|\theta_{t-1}\|_2` (0 when no
  params are passed) and ``nonfinite_count`` (steps whose gradients held NaN or Inf).
  Extra keyword arguments (e.g. ``value=loss`` for a plateau scheduler) are forwarded.

  Cost: one extra pass over the gradients, the params and the inner state, in which the
  inner update is re-run and the three sums of squares are taken together (a multi-threaded
  variadic reduce); the update itself is never materialized and no donated buffer is copied
  (the inner state and the returned updates are ordered after the pass). Inner updates with
  matrix work, loops, collectives or host callbacks are not re-run: their update is
  measured as it is (and materialized). On XLA:CPU that pass costs about 1-1.5 AdamW
  steps (the re-run arithmetic compiles to a scalar loop inside a reduction), so
  ``track(adamw)`` is about 2-2.5x ``adamw`` there; ``every=k`` runs the pass under a
  ``lax.cond`` on updates ``0, k, 2k, ...`` only, the other steps run the plain inner
  update and keep the last values (``every=10``: about 1.2x ``adamw`` on CPU, see
  ``benchmarks/README.md``). ``count`` and ``learning_rate`` are exact on every step.

  Args:
    inner: any ``optax.GradientTransformation``.
    every: measure the norms (and count non-finite steps) on updates ``0, k, 2k, ...``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`TrackState`.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive, monitor
    >>> tx = monitor.track(adaptive.adam(1e-3))
    >>> p = jnp.ones(3)
    >>> u, s = tx.update(jnp.full(3, 2.0), tx.init(p), p)
    >>> print(round(float(monitor.stats(s)["grad_norm"]), 4), round(float(monitor.stats(s)["learning_rate"]), 6))
    3.4641 0.001
  """
  _validate.check_transform("inner", inner)
  _validate.check_int("every", every, low=1)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    inner_state = inner.init(params)
    zero = lambda: jnp.zeros([], jnp.float32)  # distinct buffers, so the state can be donated
    return TrackState(inner_state, jnp.zeros([], jnp.int32), current_learning_rate(inner_state),
                      zero(), zero(), zero(), jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    _validate.check_state("monitor.track", state, TrackState)
    rerun = lambda: inner.update(updates, state.inner_state, params, **extra_args)[0]
    inner_state, main = state.inner_state, None
    if not _rerun_is_cheap(rerun):  # measure the update itself (it is then an operand)
      main, inner_state = inner.update(updates, inner_state, params, **extra_args)

    def measure(_):
      return _measure(updates, rerun if main is None else lambda: main, params, state.nonfinite_count)

    def keep(_):
      return state.grad_norm, state.update_norm, state.param_norm, state.nonfinite_count

    if every == 1:
      measured = measure(None)
    else:
      measured = _tree.cond(state.count % every == 0, measure, keep, None)
    grad_norm, update_norm, param_norm, nonfinite = measured
    measured_first = ~(grad_norm + update_norm + param_norm < 0)  # always true, even for NaN
    if main is None:
      main, inner_state = inner.update(updates, _after(measured_first, inner_state), params, **extra_args)
    new_updates = _after(measured_first, main)  # so params are updated in place after the measurement
    new_state = TrackState(inner_state=inner_state, count=_tree.increment(state.count),
                           learning_rate=current_learning_rate(inner_state), grad_norm=grad_norm,
                           update_norm=update_norm, param_norm=param_norm, nonfinite_count=nonfinite)
    return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def stats(opt_state: Any) -> dict[str, jax.Array]:
  """The statistics of the last update, from the one :func:`track` state inside ``opt_state``.

  Returns a dict of scalar arrays: ``step`` (the number of updates applied, the state's
  ``count``), ``learning_rate``, ``grad_norm``, ``update_norm``, ``param_norm``,
  ``update_param_ratio`` (NaN while ``param_norm`` is 0) and ``nonfinite_count``. Works
  inside ``jit`` (traced values) and outside (concrete values), on a raw optax state, a
  linen ``TrainState``, an ``nnx.Optimizer`` or its ``opt_state``.

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
