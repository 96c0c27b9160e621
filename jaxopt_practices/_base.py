"""The three steps every optimizer is built from: learning-rate scaling, coupled L2, decoupled decay.

Each has exactly one implementation, here, and one public name:
``schedules.scale_by_learning_rate``, ``regularization.l2_penalty`` and
``regularization.decoupled_weight_decay``. The optimizers (``momentum.sgd``,
``adaptive.adam``, ``adaptive.adamw``, ...) are literal ``optax.chain``-s of them::

    sgd / adagrad / rmsprop / adam:   chain(l2_penalty(wd), scale_by_X(...), scale_by_learning_rate(lr))
    adamw:                            chain(scale_by_adam(...), scale_by_learning_rate(lr),
                                            decoupled_weight_decay(wd, mask, learning_rate=lr))

They differ from ``optax.scale_by_learning_rate`` / ``optax.add_decayed_weights`` in dtype
handling (the scalar is applied in float32, float64 for float64 leaves, and the result cast
back to the gradient's dtype, so bfloat16 gradients stay bfloat16 also under a schedule or an
injected array; complex leaves are scaled as real pairs) and, for the decoupled decay, in
reproducing PyTorch's AdamW to the bit.
"""

from __future__ import annotations

import weakref
from typing import Any, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
import optax

from jaxopt_practices import _tree
from jaxopt_practices import _validate

ScalarOrSchedule: TypeAlias = float | jax.Array | optax.Schedule

# The update leaves decoupled_weight_decay produced, by id (weakly held: an entry dies with its
# array or tracer). scale_by_learning_rate refuses them: the decay was put before the lr scaling.
_DECAYED: dict[int, weakref.ref] = {}

DECAY_BEFORE_LR = (
    "schedules.scale_by_learning_rate got updates that regularization.decoupled_weight_decay already "
    "decayed: the decay sits before the learning-rate scaling (optax's slot for add_decayed_weights), so "
    "its -rate*params is multiplied by -lr and the weights grow instead of shrinking. Put it after the "
    "scaling: chain(scale_by_adam(), scale_by_learning_rate(lr), decoupled_weight_decay(rate, "
    "learning_rate=lr)), or give it the optimizer: decoupled_weight_decay(rate, learning_rate=lr, "
    "inner=optimizer). In optax's slot use optax.add_decayed_weights(rate) (it adds +rate*params).")


def _mark_decayed(out: Any, updates: Any) -> None:
  """Remembers the leaves of ``out`` that the decay produced (not passed through from ``updates``)."""
  for x, u in zip(jax.tree.leaves(out), jax.tree.leaves(updates), strict=True):
    if x is u:
      continue
    key = id(x)

    def forget(_: weakref.ref, key: int = key) -> None:
      _DECAYED.pop(key, None)

    try:
      _DECAYED[key] = weakref.ref(x, forget)
    except TypeError:  # a leaf that cannot be weakly referenced: not tracked
      pass


def _check_not_decayed(updates: Any) -> None:
  """Raises :data:`DECAY_BEFORE_LR` when a leaf of ``updates`` came out of a decoupled decay."""
  for x in jax.tree.leaves(updates):
    ref = _DECAYED.get(id(x))
    if ref is not None and ref() is x:
      raise ValueError(DECAY_BEFORE_LR)


def _widest_float() -> Any:
  """float64 under ``jax_enable_x64`` (the dtype schedules then return), float32 otherwise."""
  return jax.dtypes.canonicalize_dtype(jnp.float64)


@_tree.learning_rate_factor(lambda s: s.learning_rate)
class ScaleByLearningRateState(NamedTuple):
  """Updates applied so far (the schedule's ``count``) and the last learning rate applied.

  ``learning_rate`` is what ``monitor.stats`` reports (times any plateau scale).

  Attributes:
    count: int32 number of updates applied so far (0 at ``init``); the schedule is evaluated at it.
    learning_rate: the learning rate of the last update (at ``init``: the one the first update will
      use), after ``lr_decay``, in float32.
  """
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count: see CONTRIBUTING
  learning_rate: jax.Array


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, lr_decay: float = 0.0, flip_sign: bool = True
) -> optax.GradientTransformation:
  r"""Scales updates by :math:`-\eta_t / (1 + t \cdot \text{lr\_decay})`, keeping the gradient dtype.

  ``learning_rate`` is a float or a schedule evaluated at ``t`` = updates applied so far; the
  value applied is recorded in the state (``monitor.stats`` reads it). ``lr_decay`` is
  Adagrad's (PyTorch) learning-rate decay; 0 for every other optimizer. Differs from
  ``optax.scale_by_learning_rate``: the product is taken in float32 (or wider) and cast back,
  so bfloat16 updates stay bfloat16 under a schedule; the state records the learning rate.

  Args:
    learning_rate: a non-negative float or an ``optax.Schedule``.
    lr_decay: non-negative decay of the learning rate with the step count.
    flip_sign: multiply by ``-1`` so the result can be added to the params.

  Returns:
    An ``optax.GradientTransformation``; its state is :class:`ScaleByLearningRateState`.

  Raises:
    ValueError: at construction for a negative ``learning_rate`` or ``lr_decay`` or a
      non-bool ``flip_sign``; at ``update`` when a decoupled weight decay was placed before it
      (its message names the fix).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import schedules
    >>> tx = schedules.scale_by_learning_rate(schedules.step_decay(1.0, step_size=1, gamma=0.5))
    >>> state = tx.init(jnp.zeros(2))
    >>> u, state = tx.update(jnp.ones(2), state)
    >>> u, state = tx.update(jnp.ones(2), state)
    >>> print(u, state.learning_rate)
    [-0.5 -0.5] 0.5
  """
  _validate.check_number("learning_rate", learning_rate, low=0.0, allow_schedule=True)
  _validate.check_number("lr_decay", lr_decay, low=0.0)
  _validate.check_bool("flip_sign", flip_sign)
  sign = -1.0 if flip_sign else 1.0

  def lr_at(count, dtype=jnp.float32):
    lr = _tree.as_scalar(learning_rate, count, dtype)
    if not _validate.is_zero(lr_decay):
      lr = lr / (1.0 + count.astype(dtype) * jnp.asarray(lr_decay, dtype))
    return lr

  def init_fn(params):
    del params
    return ScaleByLearningRateState(count=jnp.zeros([], jnp.int32),
                                    learning_rate=lr_at(jnp.zeros([], jnp.int32), _widest_float()))

  def update_fn(updates, state, params=None):
    _validate.check_state("schedules.scale_by_learning_rate", state, ScaleByLearningRateState)
    del params
    if flip_sign:
      _check_not_decayed(updates)
    step = _tree.per_dtype(lambda dtype: sign * lr_at(state.count, dtype))

    def scale(g):
      acc = _tree.real_dtype(jnp.result_type(g))
      return _tree.componentwise(lambda g: (g.astype(acc) * step(acc)).astype(g.dtype), g)

    return jax.tree.map(scale, updates), ScaleByLearningRateState(count=_tree.increment(state.count),
                                                                  learning_rate=lr_at(state.count, _widest_float()))

  return optax.GradientTransformation(init_fn, update_fn)


def _masked_map(fn, updates: Any, params: Any, mask: Any) -> Any:
  """``fn(u, p)`` on the leaves selected by ``mask``; the others pass through bitwise."""
  selected = _tree.resolve_mask(mask, params)

  def one(u, p, on):
    if on is False:
      return u
    out = fn(u, p)
    return out if on is True else jnp.where(on, out, u)

  return jax.tree.map(one, updates, params, selected)


class L2PenaltyState(NamedTuple):
  """Number of updates so far (the ``count`` at which a ``rate`` schedule is evaluated).

  Attributes:
    count: int32 number of updates applied so far (0 at ``init``).
  """
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count: see CONTRIBUTING


def l2_penalty(rate: ScalarOrSchedule, mask: _validate.Mask = None) -> optax.GradientTransformation:
  r"""Coupled L2 regularisation: adds :math:`\lambda_t\theta` to the gradient (place it first).

  .. math:: g \leftarrow g + \lambda_t\,\theta  \quad(\text{the gradient of } \tfrac{\lambda}{2}\|\theta\|^2)

  This is PyTorch's ``weight_decay`` of SGD, Adagrad, RMSprop and Adam, and the optimizers'
  ``weight_decay`` argument here is exactly this transform: with an adaptive optimizer the
  penalty is rescaled per coordinate, unlike :func:`decoupled_weight_decay`.

  Args:
    rate: :math:`\lambda \ge 0`, a float or a schedule of the update count.
    mask: which leaves are penalised: ``None`` (every leaf, as PyTorch), ``"auto"`` (kernels,
      ``ndim >= 2``), a pytree of bools or a callable ``params -> pytree of bools``.
      Unselected leaves pass through bitwise.

  Returns:
    An ``optax.GradientTransformation`` (needs ``params``); its state is :class:`L2PenaltyState`.

  Raises:
    ValueError: for a negative ``rate`` or a ``mask`` of another kind; at ``update`` without
      ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import regularization
    >>> tx = regularization.l2_penalty(0.5)
    >>> u, _ = tx.update(jnp.array([1.0]), tx.init(jnp.ones(1)), jnp.array([2.0]))
    >>> print(u)
    [2.]
  """
  _validate.check_number("rate", rate, low=0.0, allow_schedule=True)
  _validate.check_mask(mask)

  def init_fn(params):
    del params
    return L2PenaltyState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    _validate.check_state("regularization.l2_penalty", state, L2PenaltyState)
    _validate.need_params("l2_penalty", params)
    if _validate.is_zero(rate):  # a Python 0: PyTorch's `if weight_decay != 0`, the gradient untouched
      return updates, L2PenaltyState(count=_tree.increment(state.count))
    r = _tree.per_dtype(lambda dtype: _tree.as_scalar(rate, state.count, dtype))

    def add(g, p):
      acc = _tree.real_dtype(jnp.result_type(g))
      return _tree.componentwise(lambda g, p: (g.astype(acc) + r(acc) * p.astype(acc)).astype(g.dtype), g, p)

    return _masked_map(add, updates, params, mask), L2PenaltyState(count=_tree.increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


class DecoupledWeightDecayState(NamedTuple):
  """Number of updates so far (the ``count`` at which ``rate`` / ``learning_rate`` schedules are read).

  Attributes:
    count: int32 number of updates applied so far (0 at ``init``).
  """
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count: see CONTRIBUTING


def decoupled_weight_decay(
    rate: ScalarOrSchedule, mask: _validate.Mask = "auto", *, learning_rate: ScalarOrSchedule | None = None,
    inner: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
  r"""Decoupled weight decay (AdamW's): shrinks the params towards 0 by a factor per step.

  Place it *after* the learning-rate scaling, or give it the optimizer as ``inner``
  (``chain(inner, decay)``, which cannot be misplaced): its input is the final update
  :math:`u_t` (already ``-lr * ...``), and it returns

  .. math::
    u_t - d_t\,\theta_{t-1},\qquad d_t = \begin{cases}
      1 - \mathrm{fl}(1 - \eta_t\lambda_t) & \text{with a learning\_rate (it follows the lr)} \\
      \lambda_t & \text{without (lr-independent)}\end{cases}

  so that :math:`\theta_t = \theta_{t-1}(1 - d_t) + u_t`. With ``learning_rate`` this is
  PyTorch's / optax's AdamW decay, reproduced to the bit: PyTorch multiplies the params by
  ``1 - lr * wd`` rounded to float32 first, and over many steps that rounding is a systematic
  drift that parity needs reproduced. Without it, each step decays exactly
  :math:`\lambda_t\theta` whatever the learning rate (big_vision's convention; pass ``rate``
  as a schedule to follow the schedule's *shape*).

  Placed before ``schedules.scale_by_learning_rate`` (optax's slot for ``add_decayed_weights``)
  its :math:`-\lambda\theta` would be multiplied by :math:`-\eta` and the weights would grow:
  ``scale_by_learning_rate`` raises a ``ValueError`` at the first ``update`` instead, naming
  the fix. (A plain ``optax.scale(-lr)`` there cannot tell: use ``inner``.)

  Args:
    rate: :math:`\lambda \ge 0`, a float or a schedule of the update count.
    mask: which leaves decay: ``"auto"`` (kernels, ``ndim >= 2``: no decay on biases and norm
      scales), ``None`` (every leaf), a pytree of bools or a callable ``params -> pytree of
      bools``. Unselected leaves pass through bitwise.
    learning_rate: the learning rate (float or schedule) the decay follows, usually the
      optimizer's; ``None`` for lr-independent decay.
    inner: the optimizer (ending with its learning-rate scaling) whose updates are decayed.

  Returns:
    An ``optax.GradientTransformation`` (needs ``params``); its state is
    :class:`DecoupledWeightDecayState` (the last of a chain's tuple with ``inner``).

  Raises:
    ValueError: for a negative ``rate`` or ``learning_rate``, a ``mask`` of another kind or an
      ``inner`` that is not a ``GradientTransformation``; at ``update`` without ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import regularization
    >>> tx = regularization.decoupled_weight_decay(0.1)
    >>> p = {"kernel": jnp.ones((1, 2)), "bias": jnp.ones(2)}
    >>> u, _ = tx.update({"kernel": jnp.zeros((1, 2)), "bias": jnp.zeros(2)}, tx.init(p), p)
    >>> print(u["kernel"], u["bias"])
    [[-0.1 -0.1]] [0. 0.]

  References:
    Loshchilov & Hutter, Decoupled Weight Decay Regularization, 2019.
  """
  _validate.check_number("rate", rate, low=0.0, allow_schedule=True)
  _validate.check_mask(mask)
  if learning_rate is not None:
    _validate.check_number("learning_rate", learning_rate, low=0.0, allow_schedule=True)
  if inner is not None:
    _validate.check_transform("inner", inner)
    return optax.chain(inner, decoupled_weight_decay(rate, mask, learning_rate=learning_rate))

  def init_fn(params):
    del params
    return DecoupledWeightDecayState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    _validate.need_params("decoupled_weight_decay", params)
    _validate.check_state("regularization.decoupled_weight_decay", state, DecoupledWeightDecayState)
    def coef_in(dtype):
      coef = -_tree.as_scalar(rate, state.count, dtype)
      if learning_rate is not None:  # PyTorch's factor 1 - lr * wd, rounded (to float32) first
        coef = (1.0 + _tree.as_scalar(learning_rate, state.count, dtype) * coef) - 1.0
      return coef

    coef = _tree.per_dtype(coef_in)

    def shrink(u, p):
      acc = _tree.real_dtype(jnp.result_type(u))
      return _tree.componentwise(lambda u, p: (u.astype(acc) + coef(acc) * p.astype(acc)).astype(u.dtype), u, p)

    out = _masked_map(shrink, updates, params, mask)
    _mark_decayed(out, updates)
    return out, DecoupledWeightDecayState(count=_tree.increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def coupled_optimizer(core: list[optax.GradientTransformation], learning_rate: ScalarOrSchedule,
                      weight_decay: ScalarOrSchedule | None, mask: _validate.Mask = None,
                      lr_decay: float = 0.0) -> optax.GradientTransformation:
  """``chain([l2_penalty(weight_decay, mask)], *core, scale_by_learning_rate(learning_rate))``.

  PyTorch's coupled ``weight_decay`` (added to the gradient first), the core scaling, then
  ``-lr``: the shape of ``sgd``, ``adagrad``, ``rmsprop`` and ``adam``. ``weight_decay=None``
  adds no L2 step; any number (0 included) keeps one, so the state structure does not depend
  on the value.
  """
  _validate.check_number("learning_rate", learning_rate, low=0.0, allow_schedule=True)
  _validate.check_weight_decay(weight_decay)
  decay = [] if weight_decay is None else [l2_penalty(weight_decay, mask)]
  return optax.chain(*decay, *core, scale_by_learning_rate(learning_rate, lr_decay=lr_decay))
