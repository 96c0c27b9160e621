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
:func:`ema_params` / :func:`swa_params` from the whole optimizer state.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_practices import _base
from jaxopt_practices._base import DecoupledWeightDecayState as DecoupledWeightDecayState
from jaxopt_practices._base import L2PenaltyState as L2PenaltyState
from jaxopt_practices._base import decoupled_weight_decay as decoupled_weight_decay
from jaxopt_practices._base import l2_penalty as l2_penalty
from jaxopt_practices import _norms
from jaxopt_practices import _tree
from jaxopt_practices import _validate

__all__ = [
    "L2PenaltyState", "l2_penalty", "DecoupledWeightDecayState", "decoupled_weight_decay",
    "GradientNoiseState", "gradient_noise",
    "ParamDtypes", "EmaState", "ema", "ema_params", "SwaState", "swa", "swa_params",
]

ScalarOrSchedule = _base.ScalarOrSchedule


# ----------------------------------------------------------------------------- gradient noise
class GradientNoiseState(NamedTuple):
  """Update count and the raw ``uint32`` PRNG key data (checkpointable, unlike typed keys)."""
  count: jax.Array
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


# ----------------------------------------------------------------------------- parameter averages
@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class _Dtype:
  """One param's dtype: a static pytree node, part of the state's structure, never a leaf."""
  name: str


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ParamDtypes:
  """The params' dtypes: ``per_leaf`` is shaped like the params, with a static node (no array
  leaf) per param. So it survives ``jit``, ``pmap`` and restoring into a target, and, being
  built by mapping over the params, ``optax.tree.map_params`` maps over it like any buffer."""
  per_leaf: Any

  @classmethod
  def of(cls, params: Any) -> "ParamDtypes":
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
  r"""Weighted sum :math:`z_t` of the params (float32+), its total weight :math:`w_t`, dtypes.

  The average itself is ``weighted_sum / total_weight``: read it with :func:`ema_params`.
  """
  weighted_sum: Any
  total_weight: jax.Array
  dtypes: ParamDtypes


def ema(decay: float = 0.999, debias: bool = True) -> optax.GradientTransformation:
  r"""Exponential moving average of the *parameters* (updates pass through unchanged).

  .. math::
    z_t = \beta z_{t-1} + (1-\beta)\,\theta_t,\quad w_t = \beta w_{t-1} + (1-\beta),\qquad
    \bar\theta_t = z_t / w_t = \frac{\sum_{i=0}^{t} \beta^{t-i}\theta_i}{\sum_{i=0}^{t} \beta^{t-i}}

  :math:`\theta_0` are the params given to ``init`` and :math:`\theta_t` = params + updates
  after the t-th update (``optax.apply_updates`` of this transform's input, so put it last in
  the chain). ``debias=True``: :math:`z_0 = (1-\beta)\theta_0, w_0 = 1-\beta`, i.e. the
  weights are normalised (like Adam's bias correction) and :math:`\bar\theta_0 = \theta_0`.
  ``debias=False``: :math:`z_0 = \theta_0, w_t = 1` (the usual EMA initialised at the params,
  biased towards them for the first ~:math:`1/(1-\beta)` steps). :math:`z` is accumulated in
  float32 (or wider) even for bfloat16 params; :func:`ema_params` returns
  :math:`\bar\theta_t` in the params' dtype.

  Differs from ``optax.ema``, which averages the *updates* and starts from zero.

  Args:
    decay: :math:`\beta \in [0, 1)`.
    debias: normalise the weights (see above).

  Returns:
    An ``optax.GradientTransformation`` (needs ``params``); its state is :class:`EmaState`,
    read the average with :func:`ema_params`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import regularization
    >>> tx = optax.chain(optax.sgd(1.0), regularization.ema(0.5))
    >>> p = jnp.zeros(1)
    >>> state = tx.init(p)
    >>> u, state = tx.update(jnp.array([-2.0]), state, p)   # theta_1 = 2
    >>> print(regularization.ema_params(state))             # (0.5*0 + 1*2) / 1.5
    [1.3333334]

  References:
    Polyak & Juditsky, Acceleration of Stochastic Approximation by Averaging, 1992.
  """
  _validate.check_number("decay", decay, low=0.0, high=1.0, high_open=True)
  _validate.check_bool("debias", debias)

  def beta():  # beta in each leaf's real dtype
    return _tree.per_dtype(lambda dtype: jnp.asarray(decay, dtype))

  def init_fn(params):
    p0, b = _tree.to_acc(params), beta()
    w_dtype = _norms.widest_acc_dtype(jax.tree.leaves(params))  # float32, float64 with float64 params
    if debias:
      z = _tree.map_components(lambda p: (1.0 - b(p.dtype)) * p, p0)
      return EmaState(weighted_sum=z, total_weight=1.0 - b(w_dtype), dtypes=ParamDtypes.of(params))
    return EmaState(weighted_sum=p0, total_weight=jnp.ones([], w_dtype), dtypes=ParamDtypes.of(params))

  def update_fn(updates, state, params=None):
    _validate.check_state("regularization.ema", state, EmaState)
    _validate.need_params("ema", params)
    new_params, b = optax.apply_updates(params, updates), beta()
    z = _tree.map_components(lambda z, p: b(z.dtype) * z + (1.0 - b(z.dtype)) * p.astype(z.dtype),
                             state.weighted_sum, new_params)
    w = state.total_weight
    weight = b(w.dtype) * w + (1.0 - b(w.dtype)) if debias else w
    return updates, EmaState(weighted_sum=z, total_weight=weight, dtypes=state.dtypes)

  return optax.GradientTransformation(init_fn, update_fn)


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
    ValueError: when ``opt_state`` holds no ``EmaState`` or more than one.

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
  z = _tree.map_components(lambda x: x / _broadcast_to(state.total_weight.astype(x.dtype), x), state.weighted_sum)
  return state.dtypes.cast(z)


class SwaState(NamedTuple):
  """Updates applied, snapshots averaged so far, the running average (float32+), dtypes."""
  count: jax.Array
  n_averaged: jax.Array
  average: Any
  dtypes: ParamDtypes


def swa(start_step: int, every: int = 1) -> optax.GradientTransformation:
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

  Returns:
    An ``optax.GradientTransformation`` (needs ``params``); its state is :class:`SwaState`,
    read the average with :func:`swa_params`.

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
  _validate.check_int("start_step", start_step, low=0)
  _validate.check_int("every", every, low=1)

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
