"""Practice 4 — the momentum family: SGD, heavy-ball momentum with dampening, Nesterov; averaged SGD.

The semantics are PyTorch's ``torch.optim.SGD`` (2.x documentation), which differ from
``optax.sgd`` / ``optax.trace`` in two ways: the first step's buffer is the gradient
itself (optax starts from zeros, which is the same only without dampening), and
``dampening`` scales the new gradient's contribution to the buffer.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_practices import _base
from jaxopt_practices._asgd import ScaleByAsgdState as ScaleByAsgdState  # ASGD (torch.optim.ASGD)
from jaxopt_practices._asgd import asgd as asgd
from jaxopt_practices._asgd import asgd_learning_rate as asgd_learning_rate
from jaxopt_practices._asgd import asgd_params as asgd_params
from jaxopt_practices._asgd import scale_by_asgd as scale_by_asgd
from jaxopt_practices import _tree
from jaxopt_practices import _validate

__all__ = ["ScaleByMomentumState", "scale_by_momentum", "sgd",
           "ScaleByAsgdState", "scale_by_asgd", "asgd_learning_rate", "asgd", "asgd_params"]

ScalarOrSchedule = _base.ScalarOrSchedule


class ScaleByMomentumState(NamedTuple):
  """Updates applied so far and the momentum buffer (float32 or wider; PyTorch's ``momentum_buffer``).

  Attributes:
    count: int32 number of updates applied so far (0 at ``init``); a ``momentum`` schedule is read
      at it, and at 0 the buffer is set to the gradient (PyTorch's first step).
    momentum_buffer: :math:`b_t`, shaped like the params, in float32 or wider.
  """
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count: see CONTRIBUTING
  momentum_buffer: optax.Updates


def scale_by_momentum(
    momentum: ScalarOrSchedule, dampening: float = 0.0, nesterov: bool = False
) -> optax.GradientTransformation:
  r"""Heavy-ball or Nesterov momentum with dampening, as in ``torch.optim.SGD``.

  With :math:`\mu_t` the momentum and :math:`\tau` the dampening:

  .. math::
    b_1 = g_1, \qquad b_t = \mu_t b_{t-1} + (1 - \tau) g_t \quad (t > 1),

    u_t = g_t + \mu_t b_t \ \text{(Nesterov)} \quad\text{or}\quad u_t = b_t,

  and :math:`u_t = g_t` whenever :math:`\mu_t = 0` (PyTorch skips the buffer then).

  Args:
    momentum: :math:`\mu \in [0, 1)`, a float or a schedule (e.g.
      ``schedules.one_cycle_momentum``) evaluated at the number of updates so far.
    dampening: :math:`\tau \in [0, 1]`.
    nesterov: use Nesterov momentum (needs momentum > 0 and dampening = 0).

  Returns:
    An ``optax.GradientTransformation`` (state :class:`ScaleByMomentumState`); scale by the
    learning rate afterwards.

  Raises:
    ValueError: for a ``momentum`` outside ``[0, 1)``, a ``dampening`` outside ``[0, 1]``, a
      non-bool ``nesterov``, or ``nesterov=True`` with a zero momentum or non-zero dampening.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import momentum
    >>> tx = momentum.scale_by_momentum(0.9)
    >>> state = tx.init(jnp.zeros(2))
    >>> u, state = tx.update(jnp.ones(2), state)
    >>> u, state = tx.update(jnp.ones(2), state)
    >>> print(u)
    [1.9 1.9]

  References:
    Polyak, Some methods of speeding up the convergence of iteration methods, 1964;
    Sutskever et al, On the importance of initialization and momentum in deep learning, 2013.
  """
  _validate.check_number("momentum", momentum, low=0.0, high=1.0, high_open=True, allow_schedule=True)
  _validate.check_number("dampening", dampening, low=0.0, high=1.0)
  _validate.check_bool("nesterov", nesterov)
  mu, tau = _validate.known_value(momentum), _validate.known_value(dampening)
  if nesterov and (mu == 0.0 or (tau is not None and tau != 0.0)):
    raise ValueError(
        "nesterov=True requires momentum > 0 and dampening = 0, got "
        f"momentum = {momentum!r}, dampening = {dampening!r}."
    )

  def init_fn(params):
    return ScaleByMomentumState(count=jnp.zeros([], jnp.int32), momentum_buffer=_tree.zeros_acc(params))

  # A known non-zero momentum never takes PyTorch's "no buffer when momentum == 0" branch.
  may_be_zero = callable(momentum) or mu is None or mu == 0.0

  def update_fn(updates, state, params=None):
    _validate.check_state("momentum.scale_by_momentum", state, ScaleByMomentumState)
    del params
    if _validate.is_zero(momentum):  # a Python 0: PyTorch's plain step; the (unused) buffer is carried
      return updates, state._replace(count=_tree.increment(state.count))
    # The buffer starts at zero, so b_1 = mu * 0 + 1 * g_1 = g_1: a scalar coefficient, no select.
    # Both scalars are taken in each leaf's real dtype (float32, float64 for float64 leaves).
    mu_t = _tree.per_dtype(lambda dt: _tree.as_scalar(momentum, state.count, dt))
    coef = _tree.per_dtype(lambda dt: jnp.where(state.count == 0, 1.0, 1.0 - jnp.asarray(dampening, dt)))

    def damped(g, dtype):  # without dampening the coefficient is 1 at every step: no multiplication
      return g.astype(dtype) if tau == 0.0 else coef(dtype) * g.astype(dtype)

    buffer = _tree.map_components(lambda g, b: mu_t(b.dtype) * b + damped(g, b.dtype), updates, state.momentum_buffer)
    out = buffer
    if nesterov:
      out = _tree.map_components(lambda g, b: g.astype(b.dtype) + mu_t(b.dtype) * b, updates, buffer)
    if may_be_zero:
      out = _tree.map_components(lambda g, o: jnp.where(mu_t(o.dtype) == 0.0, g.astype(o.dtype), o), updates, out)
    new_state = ScaleByMomentumState(count=_tree.increment(state.count), momentum_buffer=buffer)
    return _tree.cast_like(out, updates), new_state

  return optax.GradientTransformation(init_fn, update_fn)


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: ScalarOrSchedule | None = None,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: ScalarOrSchedule | None = None,
    mask: _validate.Mask = None,
) -> optax.GradientTransformation:
  r"""Stochastic gradient descent ≙ ``torch.optim.SGD`` (momentum, dampening, Nesterov, L2).

  .. math::
    g_t \leftarrow g_t + \lambda \theta_{t-1}, \quad
    u_t = \text{momentum}(g_t), \quad \theta_t = \theta_{t-1} - \eta_t u_t

  ``weight_decay`` is coupled L2, as in PyTorch (added to the gradient before momentum).
  Differences from ``optax.sgd``: PyTorch's first-step buffer and ``dampening``; optax
  has no ``weight_decay`` argument.

  Args:
    learning_rate: :math:`\eta \ge 0`, a float or a schedule.
    momentum: :math:`\mu \in [0, 1)`, a float or a schedule; ``None`` (the default) keeps no
      buffer. Any number keeps one, 0 and arrays included (a Python 0 only skips the
      arithmetic), so ``optax.inject_hyperparams(sgd)(...)`` has the state structure of
      ``sgd(...)`` with the same arguments and their checkpoints restore into each other.
    dampening: :math:`\tau \in [0, 1]`.
    nesterov: Nesterov momentum (needs momentum > 0 and dampening = 0).
    weight_decay: :math:`\lambda \ge 0`, coupled L2, a float or a schedule; ``None`` (the default) adds no
      step, by the same rule.
    mask: leaves the coupled ``weight_decay`` applies to (``None``: all, as PyTorch), e.g. ``groups.match(...)``.

  Returns:
    An ``optax.GradientTransformation`` whose updates are added to the params.

  Raises:
    ValueError: for a negative ``learning_rate`` or ``weight_decay``, a ``mask`` of another kind,
      or ``momentum`` / ``dampening`` / ``nesterov`` that :func:`scale_by_momentum` rejects.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import momentum
    >>> tx = momentum.sgd(0.1, momentum=0.9, nesterov=True)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(2 * params, state, params)
    >>> print(optax.apply_updates(params, updates))
    [ 0.62 -1.24]

  References:
    Sutskever et al, On the importance of initialization and momentum in deep learning, 2013.
  """
  _validate.check_weight_decay(weight_decay)
  if momentum is not None or nesterov:
    core = [scale_by_momentum(0.0 if momentum is None else momentum, dampening, nesterov)]
  else:
    _validate.check_number("dampening", dampening, low=0.0, high=1.0)
    _validate.check_bool("nesterov", nesterov)
    core = []
  return _base.coupled_optimizer(core, learning_rate, weight_decay, mask)
