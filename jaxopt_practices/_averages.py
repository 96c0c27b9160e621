"""Parameter averages: ``regularization.ema`` / ``ema_params`` and ``swa`` / ``swa_params`` (re-exported there).

Both average the *parameters* (params + the final updates), so they go last in a chain, or
take the optimizer as ``inner``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_practices import _base
from jaxopt_practices import _fingerprint
from jaxopt_practices import _norms
from jaxopt_practices import _tree
from jaxopt_practices import _validate

__all__ = ["ParamDtypes", "EmaState", "ema", "ema_params", "SwaState", "swa", "swa_params"]


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class _Dtype:
  """One param's dtype: a static pytree node, part of the state's structure, never a leaf."""
  name: str


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ParamDtypes:
  """The params' dtypes, kept in an averaging state to cast the average back to them.

  Attributes:
    per_leaf: shaped like the params, with a static node (no array leaf) per param holding its
      dtype's name. So it survives ``jit``, ``pmap`` and restoring into a target, and, being
      built by mapping over the params, ``optax.tree.map_params`` maps over it like any buffer.
  """
  per_leaf: Any

  @classmethod
  def of(cls, params: Any) -> ParamDtypes:
    """The dtypes of ``params``' leaves, as a params-shaped tree of static nodes."""
    return cls(jax.tree.map(lambda x: _Dtype(jnp.dtype(jnp.result_type(x)).name), params))

  def cast(self, tree: Any) -> Any:
    """``tree`` (shaped like the params) with every leaf cast back to its param's dtype."""
    names = [d.name for d in jax.tree.leaves(self.per_leaf, is_leaf=lambda n: isinstance(n, _Dtype))]
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(treedef, [x.astype(d) for x, d in zip(leaves, names, strict=True)])


def _broadcast_to(scalar: jax.Array, x: jax.Array) -> jax.Array:
  """Lets a (possibly replicated, shape ``(n,)``) scalar broadcast against a leaf."""
  return scalar.reshape(scalar.shape + (1,) * (x.ndim - scalar.ndim))


class EmaState(NamedTuple):
  r"""Weighted sum :math:`z_t` of the params (float32+), its total weight :math:`w_t`, dtypes, and more.

  The average itself is ``weighted_sum / total_weight``: read it with :func:`ema_params`.

  Attributes:
    weighted_sum: :math:`z_t`, shaped like the params, in float32 (float64 for float64 params).
    total_weight: :math:`w_t`, a scalar (1 throughout with ``debias=False``).
    dtypes: the params' dtypes (:class:`ParamDtypes`), for casting the average back.
    count: int32 number of updates so far (``decay`` is read at it, ``every`` counts it).
    checksum: ``[expected, scale]``: a few entries of the params this transform expects at its
      next ``update`` (three of each of up to 8 leaves), and their round-off scale.
    misplaced: bool, set once those params differed (``ema`` was not last in the chain).
  """
  weighted_sum: Any
  total_weight: jax.Array
  dtypes: ParamDtypes
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count: see CONTRIBUTING
  checksum: jax.Array
  misplaced: jax.Array


def ema(decay: _base.ScalarOrSchedule = 0.999, debias: bool = True, every: int = 1, *,
        inner: optax.GradientTransformation | None = None) -> optax.GradientTransformation:
  r"""Exponential moving average of the *parameters* (updates pass through unchanged).

  .. math::
    z_t = \beta_t z_{t-1} + (1-\beta_t)\,\theta_t,\quad w_t = \beta_t w_{t-1} + (1-\beta_t),\qquad
    \bar\theta_t = z_t / w_t = \frac{\sum_{i=0}^{t} \beta^{t-i}\theta_i}{\sum_{i=0}^{t} \beta^{t-i}}
    \ \ (\text{constant } \beta)

  :math:`\theta_0` are the params given to ``init`` and :math:`\theta_{t+1}` = params + updates
  of the update at count :math:`t` (``optax.apply_updates`` of this transform's input, so it
  goes last in the chain, or give the optimizer as ``inner``). The average moves only at the
  updates with count :math:`t = 0, k, 2k, \dots` (``every = k``; torchvision's
  ``model_ema_steps``), with :math:`\beta_t` = ``decay(t)`` when ``decay`` is a schedule of
  the update count. A decay of 0 *copies* the params. torchvision's classification reference
  (copies through ``lr_warmup_epochs``, and at the first averaging step after them, since it
  resets ``n_averaged`` to 0) is ``decay = lambda t: jnp.where(t <= warmup_steps, 0.0, d)``
  with ``debias=False`` and ``every = model_ema_steps`` dividing the epoch's length (it counts
  ``i % k`` within each epoch); timm's ``ModelEmaV3(d, use_warmup=True)`` (``warmup_gamma`` ``g``,
  ``warmup_power`` ``p``, updated with ``step=num_updates``) is
  ``decay = lambda t: jnp.where(t == 0, 0.0, jnp.clip(1 - (1 + t / g) ** -p, min_decay, d))``
  with ``debias=False``, and TensorFlow's ``ExponentialMovingAverage(num_updates=t)`` warmup is
  ``decay = lambda t: jnp.minimum(0.9998, (1 + t) / (10 + t))``. ``debias=True``:
  :math:`z_0 = (1-\beta_0)\theta_0, w_0 = 1-\beta_0` (:math:`\beta_0` = ``decay(0)``), i.e.
  the weights are normalised (like Adam's bias correction) and :math:`\bar\theta_0 = \theta_0`.
  ``debias=False``: :math:`z_0 = \theta_0, w_t = 1` (the usual EMA initialised at the params,
  as torch's ``AveragedModel`` / timm's ``ModelEma``). :math:`z` is accumulated in float32 (or
  wider) even for bfloat16 params; :func:`ema_params` returns :math:`\bar\theta_t` in the
  params' dtype. Differs from ``optax.ema``, which averages the *updates* and starts from zero.

  Placement: ``inner=tx`` is ``optax.chain(tx, ema(...))``, which cannot be misplaced. Placed
  by hand before another transform (``chain(ema(0.5), sgd(1.0))``) it would average
  params + a non-final update; each ``update`` checks that the params it gets are the ones it
  averaged last time (three entries of each of up to 8 leaves spread over the tree, to
  round-off), and :func:`ema_params` raises a ``ValueError`` naming the fix once they were
  not. One update alone cannot show it.

  Args:
    decay: :math:`\beta \in [0, 1)`, a float or a schedule ``count -> decay`` (values in [0, 1)).
    debias: normalise the weights (see above).
    every: the average moves at the updates with count ``0, every, 2*every, ...``; an integer ``>= 1``.
    inner: the optimizer whose final updates are averaged (returns ``chain(inner, ema)``).

  Returns:
    An ``optax.GradientTransformation`` (needs ``params``); its state is :class:`EmaState`
    (inside a chain's tuple with ``inner``), read the average with :func:`ema_params`.

  Raises:
    ValueError: for a ``decay`` outside ``[0, 1)``, a non-bool ``debias``, an ``every`` out of
      its range or an ``inner`` that is not a ``GradientTransformation``; at ``update`` without
      ``params``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import regularization
    >>> tx = regularization.ema(0.5, inner=optax.sgd(1.0))   # = optax.chain(optax.sgd(1.0), ema(0.5))
    >>> p = jnp.zeros(1)
    >>> state = tx.init(p)
    >>> u, state = tx.update(jnp.array([-2.0]), state, p)   # theta_1 = 2
    >>> print(regularization.ema_params(state))             # (0.5*0 + 1*2) / 1.5
    [1.3333334]

  References:
    Polyak & Juditsky, Acceleration of Stochastic Approximation by Averaging, 1992.
  """
  _validate.check_number("decay", decay, low=0.0, high=1.0, high_open=True, allow_schedule=True)
  _validate.check_bool("debias", debias)
  every = _validate.check_steps("every", every, low=1, allow_traced=True)  # inject_hyperparams: traced
  if inner is not None:
    _validate.check_transform("inner", inner)
    return optax.chain(inner, ema(decay, debias, every))

  def init_fn(params):
    b = _tree.per_dtype(lambda dtype: _tree.as_scalar(decay, jnp.zeros([], jnp.int32), dtype))
    p0 = _tree.to_acc(params)
    w_dtype = _norms.widest_acc_dtype(jax.tree.leaves(params))  # float32, float64 with float64 params
    if debias:
      z, w = _tree.map_components(lambda p: (1.0 - b(p.dtype)) * p, p0), 1.0 - b(w_dtype)
    else:
      z, w = p0, jnp.ones([], w_dtype)
    return EmaState(weighted_sum=z, total_weight=w, dtypes=ParamDtypes.of(params), count=jnp.zeros([], jnp.int32),
                    checksum=_fingerprint.checksum(params), misplaced=jnp.zeros([], bool))

  def update_fn(updates, state, params=None):
    _validate.check_state("regularization.ema", state, EmaState)
    _validate.need_params("ema", params)
    t = state.count
    got = _fingerprint.sampled(params)
    # The caller's params + updates overwrites the params sampled here: the sampled leaves' updates
    # depend on the read, which orders that write after it; the same sum feeds the average.
    updates = _fingerprint.after_sampling(got, updates, params)
    new_params = optax.apply_updates(params, updates)
    b = _tree.per_dtype(lambda dtype: _tree.as_scalar(decay, t, dtype))
    always = isinstance(every, int) and every == 1  # (an array under inject_hyperparams)
    take = (t % jnp.asarray(every, jnp.int32)) == 0
    keep = lambda new, old: new if always else jnp.where(take, new, old)
    z = _tree.map_components(
        lambda z, p: keep(b(z.dtype) * z + (1.0 - b(z.dtype)) * p.astype(z.dtype), z), state.weighted_sum, new_params)
    w = state.total_weight
    weight = keep(b(w.dtype) * w + (1.0 - b(w.dtype)), w) if debias else w
    misplaced = state.misplaced | _fingerprint.mismatch(state.checksum, params, got)
    return updates, EmaState(weighted_sum=z, total_weight=weight, dtypes=state.dtypes, count=_tree.increment(t),
                             checksum=_fingerprint.checksum(new_params, got), misplaced=misplaced)

  return optax.GradientTransformation(init_fn, update_fn)


def _check_placement(state: EmaState) -> None:
  """Raises the misplaced-``ema`` ``ValueError`` when a concrete state says so (no-op under ``jit``)."""
  flag = state.misplaced
  if isinstance(flag, jax.core.Tracer) or not bool(jnp.any(flag)):
    return
  raise ValueError(
      "ema_params: regularization.ema averaged params that are not the ones the training loop went on "
      "with: ema is not the last transform of the chain (e.g. chain(ema(0.5), sgd(1.0))), so it averaged "
      "params + a non-final update. Put it last, optax.chain(tx, regularization.ema(...)), or pass the "
      "optimizer to it: regularization.ema(..., inner=tx). (Params changed between updates by hand, "
      "e.g. reloaded, set this too: re-create the optimizer state after such a change.)")


def ema_params(opt_state: Any) -> Any:
  """The EMA of the params, :math:`z_t / w_t`, in the params' dtype.

  Finds the single :class:`EmaState` anywhere inside ``opt_state`` (``optax.chain``,
  ``inject_hyperparams``, ``masked``, :func:`~jaxopt_practices.clipping.skip_nonfinite`,
  ...). Also works on a ``pmap``-replicated state (keeps the leading replica axis).

  Args:
    opt_state: an optimizer state, a linen ``TrainState``, an ``nnx.Optimizer`` or its
      ``opt_state``, holding exactly one :class:`EmaState`.

  Returns:
    The averaged params: a pytree shaped like the params, in their dtypes. For an
    ``nnx.Optimizer(model, tx, wrt=...)`` (or its ``opt_state``) it is an ``nnx.State``
    shaped like ``nnx.state(model, wrt)``, so one call loads it into a model:
    ``nnx.update(model, regularization.ema_params(optimizer))`` (into ``nnx.clone(model)``
    to evaluate with the EMA weights and keep training the raw ones).

  Raises:
    ValueError: when ``opt_state`` holds no ``EmaState`` or more than one, or (outside ``jit``)
      when the ``ema`` was found misplaced (see :func:`ema`).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import regularization
    >>> tx = optax.chain(optax.sgd(1.0), regularization.ema(0.5, debias=False))
    >>> p = {"w": jnp.zeros(2, jnp.bfloat16)}
    >>> u, state = tx.update({"w": -jnp.ones(2, jnp.bfloat16)}, tx.init(p), p)  # theta_1 = 1
    >>> avg = regularization.ema_params(state)   # 0.5 * theta_0 + 0.5 * theta_1
    >>> print(avg["w"], avg["w"].dtype)
    [0.5 0.5] bfloat16

    Flax NNX: the EMA weights into a copy of the model, for evaluation:

    >>> from flax import nnx
    >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    >>> optimizer = nnx.Optimizer(model, optax.chain(optax.sgd(1.0), regularization.ema(0.5)), wrt=nnx.Param)
    >>> _ = optimizer.update(model, nnx.grad(lambda m: m(jnp.ones((1, 2))).sum())(model))
    >>> eval_model = nnx.clone(model)
    >>> nnx.update(eval_model, regularization.ema_params(optimizer))
    >>> print(eval_model.bias[...], model.bias[...])   # (0.5*0 + 1*(-1)) / 1.5 and the raw -1
    [-0.6666667] [-1.]
  """
  state = _tree.find_state(opt_state, EmaState, "ema_params", "chain regularization.ema(...) into the optimizer.")
  _check_placement(state)
  z = _tree.map_components(lambda x: x / _broadcast_to(state.total_weight.astype(x.dtype), x), state.weighted_sum)
  return state.dtypes.cast(z)


class SwaState(NamedTuple):
  """Updates applied, snapshots averaged so far, the running average (float32+), dtypes.

  Attributes:
    count: int32 number of updates applied so far (0 at ``init``).
    n_averaged: int32 number of snapshots in ``average`` (torch ``AveragedModel.n_averaged``).
    average: the running mean, shaped like the params, in float32 or wider (the params until
      the first snapshot); read it with :func:`swa_params`.
    dtypes: the params' dtypes (:class:`ParamDtypes`).
  """
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count: see CONTRIBUTING
  n_averaged: jax.Array
  average: Any
  dtypes: ParamDtypes


def swa(start_step: int, every: int = 1, *,
        inner: optax.GradientTransformation | None = None) -> optax.GradientTransformation:
  r"""Stochastic weight averaging: the equal-weight mean of params snapshots.

  .. math::
    \bar\theta = \frac{1}{n}\sum_{k=1}^{n} \theta_{t_k},\qquad
    t_k \in \{t \ge \text{start\_step} : (t - \text{start\_step}) \bmod \text{every} = 0\}

  :math:`\theta_t` are the params after :math:`t` updates, i.e. params + updates of the t-th
  call (put it last in the chain); :math:`\theta_0` (the params given to ``init``) is the
  first snapshot when ``start_step = 0``. The average is updated as
  ``torch.optim.swa_utils.AveragedModel.update_parameters`` does (a copy for the first
  snapshot, then :math:`\bar\theta \leftarrow \bar\theta + (\theta - \bar\theta)/(n + 1)`), in
  float32 or wider, so calling ``update_parameters`` at the same steps gives the same average.
  Before the first snapshot :func:`swa_params` returns the current params.

  Args:
    start_step: first update count snapshotted, an integer ``>= 0``.
    every: snapshot period in updates, an integer ``>= 1``.
    inner: the optimizer whose final updates are applied (returns ``chain(inner, swa)``, which
      cannot be misplaced, as :func:`ema`'s ``inner``).

  Returns:
    An ``optax.GradientTransformation`` (needs ``params``); its state is :class:`SwaState`,
    read the average with :func:`swa_params`.

  Raises:
    ValueError: for a ``start_step`` or ``every`` out of its range or an ``inner`` that is not a
      ``GradientTransformation``; at ``update`` without ``params``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import regularization
    >>> tx = optax.chain(optax.sgd(1.0), regularization.swa(start_step=2, every=2))
    >>> p = jnp.zeros(1)
    >>> state = tx.init(p)
    >>> for _ in range(4):   # theta_t = t; snapshots at t = 2 and 4
    ...   u, state = tx.update(-jnp.ones(1), state, p)
    ...   p = optax.apply_updates(p, u)
    >>> print(regularization.swa_params(state))
    [3.]

  References:
    Izmailov et al, Averaging Weights Leads to Wider Optima and Better Generalization, 2018.
  """
  start_step = _validate.check_steps("start_step", start_step, allow_traced=True)  # inject_hyperparams: traced
  every = _validate.check_steps("every", every, low=1, allow_traced=True)
  if inner is not None:
    _validate.check_transform("inner", inner)
    return optax.chain(inner, swa(start_step, every))

  def init_fn(params):
    first = jnp.asarray(start_step, jnp.int32) == 0
    return SwaState(count=jnp.zeros([], jnp.int32), n_averaged=first.astype(jnp.int32),
                    average=_tree.to_acc(params), dtypes=ParamDtypes.of(params))

  def update_fn(updates, state, params=None):
    _validate.check_state("regularization.swa", state, SwaState)
    _validate.need_params("swa", params)
    t = _tree.increment(state.count)
    start = jnp.asarray(start_step, jnp.int32)
    take = (t >= start) & ((t - start) % jnp.asarray(every, jnp.int32) == 0)
    n = state.n_averaged
    theta = _tree.to_acc(optax.apply_updates(params, updates))

    def average(avg, x):
      running = avg + (x - avg) / (n + 1).astype(avg.dtype)
      return jnp.where(n == 0, x, jnp.where(take, running, avg))

    avg = _tree.map_components(average, state.average, theta)
    n_new = jnp.where(take, _tree.increment(n), n)
    return updates, SwaState(count=t, n_averaged=n_new, average=avg, dtypes=state.dtypes)

  return optax.GradientTransformation(init_fn, update_fn)


def swa_params(opt_state: Any) -> Any:
  """The SWA average in the params' dtype, from the single :class:`SwaState` in ``opt_state``.

  Before the first snapshot it is the current params. Finds the state anywhere, like
  :func:`ema_params`.

  Args:
    opt_state: an optimizer state, a linen ``TrainState``, an ``nnx.Optimizer`` or its
      ``opt_state``, holding exactly one :class:`SwaState`.

  Returns:
    The averaged params: a pytree shaped like the params, in their dtypes (an
    ``nnx.State`` for an ``nnx.Optimizer``: ``nnx.update(model, swa_params(optimizer))``).

  Raises:
    ValueError: when ``opt_state`` holds no ``SwaState`` or more than one.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import regularization
    >>> tx = optax.chain(optax.sgd(1.0), regularization.swa(start_step=1))
    >>> p = jnp.zeros(1)
    >>> state = tx.init(p)
    >>> for _ in range(3):   # theta_t = t; snapshots at t = 1, 2, 3
    ...   u, state = tx.update(-jnp.ones(1), state, p)
    ...   p = optax.apply_updates(p, u)
    >>> print(regularization.swa_params(state))
    [2.]
  """
  state = _tree.find_state(opt_state, SwaState, "swa_params", "chain regularization.swa(...) into the optimizer.")
  return state.dtypes.cast(state.average)
