"""Adadelta and Rprop as in ``torch.optim`` 2.x (re-exported by ``adaptive``).

Adadelta's learning rate multiplies its step from outside (``schedules.scale_by_learning_rate``,
so a schedule works); Rprop's learning rate is only its *initial step size*, inside the
scaling (torch's schedulers do not change a running Rprop either). State is float32 (or wider)
whatever the gradient dtype; complex leaves are optimized as real pairs, as torch does.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_practices import _base
from jaxopt_practices import _tree
from jaxopt_practices import _validate

__all__ = ["ScaleByAdadeltaState", "scale_by_adadelta", "adadelta", "ScaleByRpropState", "scale_by_rprop", "rprop"]

ScalarOrSchedule = _base.ScalarOrSchedule


# ----------------------------------------------------------------------------- Adadelta
class ScaleByAdadeltaState(NamedTuple):
  """Running averages of the squared gradients and of the squared steps (torch's names).

  Attributes:
    square_avg: the running average of the squared gradients, float32 or wider.
    acc_delta: the running average of the squared steps, float32 or wider.
  """
  square_avg: optax.Updates
  acc_delta: optax.Updates


def scale_by_adadelta(rho: float = 0.9, eps: float = 1e-6) -> optax.GradientTransformation:
  r"""Adadelta's scaling, as in ``torch.optim.Adadelta``, without the learning rate.

  .. math::
    v_t = \rho v_{t-1} + (1-\rho) g_t^2,\quad u_t = \frac{\sqrt{a_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t,
    \quad a_t = \rho a_{t-1} + (1-\rho) u_t^2

  The same algorithm as ``optax.scale_by_adadelta``; here the state is float32 (or wider)
  under bfloat16 gradients and complex leaves are real pairs.

  Args:
    rho: :math:`\rho \in [0, 1]` (torch allows 1).
    eps: :math:`\epsilon \ge 0`, inside both roots.

  Returns:
    A ``GradientTransformation`` holding a :class:`ScaleByAdadeltaState`.

  Raises:
    ValueError: unless ``0 <= rho <= 1`` and ``eps >= 0``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.scale_by_adadelta(rho=0.0, eps=1.0)
    >>> u, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
    >>> print(u.round(6))  # sqrt(0 + 1) / sqrt(9 + 1) * 3
    [0.948683]

  References:
    Zeiler, ADADELTA: An Adaptive Learning Rate Method, 2012.
  """
  _validate.check_number("rho", rho, low=0.0, high=1.0)
  _validate.check_number("eps", eps, low=0.0)

  def init_fn(params):
    return ScaleByAdadeltaState(square_avg=_tree.zeros_acc(params), acc_delta=_tree.zeros_acc(params))

  def update_fn(updates, state, params=None):
    _validate.check_state("adaptive.scale_by_adadelta", state, ScaleByAdadeltaState)
    del params
    square_avg = _tree.moment(updates, state.square_avg, rho, 2)
    delta = _tree.map_components(lambda g, v, a: jnp.sqrt(a + eps) / jnp.sqrt(v + eps) * g.astype(v.dtype),
                                 updates, square_avg, state.acc_delta)
    acc_delta = _tree.moment(delta, state.acc_delta, rho, 2)
    return _tree.cast_like(delta, updates), ScaleByAdadeltaState(square_avg=square_avg, acc_delta=acc_delta)

  return optax.GradientTransformation(init_fn, update_fn)


def adadelta(learning_rate: ScalarOrSchedule = 1.0, rho: float = 0.9, eps: float = 1e-6,
             weight_decay: ScalarOrSchedule | None = None, mask: _validate.Mask = None) -> optax.GradientTransformation:
  r"""Adadelta ≙ ``torch.optim.Adadelta`` (coupled L2 ``weight_decay``).

  .. math:: g_t \leftarrow g_t + \lambda\theta_{t-1},\quad \theta_t = \theta_{t-1} - \eta_t u_t

  with :math:`u_t` from :func:`scale_by_adadelta` (the accumulated steps never see
  :math:`\eta`): ``chain([l2_penalty(weight_decay, mask)], scale_by_adadelta(rho, eps),
  scale_by_learning_rate(learning_rate))``. Differs from ``optax.adadelta`` in its default
  learning rate (torch's 1.0; optax requires one) and in the dtype handling.

  Args:
    learning_rate: :math:`\eta \ge 0`, a float or a schedule.
    rho: :math:`\rho \in [0, 1]`.
    eps: :math:`\epsilon \ge 0`.
    weight_decay: :math:`\lambda \ge 0`, coupled L2, a float or a schedule; ``None`` (the default, torch's 0)
      adds no step.
    mask: leaves the coupled ``weight_decay`` applies to (``None``: all, as PyTorch).

  Returns:
    ``chain([l2_penalty], scale_by_adadelta, scale_by_learning_rate)``.

  Raises:
    ValueError: if ``learning_rate`` or ``weight_decay`` is negative, or ``rho`` / ``eps`` out of range.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.adadelta(0.5, rho=0.0, eps=1.0)
    >>> u, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
    >>> print(u.round(6))
    [-0.474342]

  References:
    Zeiler, ADADELTA: An Adaptive Learning Rate Method, 2012.
  """
  return _base.coupled_optimizer([scale_by_adadelta(rho, eps)], learning_rate, weight_decay, mask)


# ----------------------------------------------------------------------------- Rprop
class ScaleByRpropState(NamedTuple):
  """The previous gradient (0 where its sign flipped) and the per-coordinate step size (torch's names).

  Attributes:
    prev: the previous gradient, 0 where its sign flipped, float32 or wider.
    step_size: the per-coordinate step size (``step_sizes`` bounds it), float32 or wider.
  """
  prev: optax.Updates
  step_size: optax.Updates


def _check_pair(name: str, value: Any, what: str) -> tuple[float, float]:
  if not isinstance(value, (tuple, list)) or len(value) != 2:
    raise ValueError(f"{name} must be a pair {what}, got {name} = {value!r}.")
  return value[0], value[1]


def scale_by_rprop(learning_rate: float = 1e-2, etas: tuple[float, float] = (0.5, 1.2),
                   step_sizes: tuple[float, float] = (1e-6, 50.0)) -> optax.GradientTransformation:
  r"""Rprop's step, as in ``torch.optim.Rprop`` (the sign is flipped by :func:`rprop`).

  Per coordinate, with :math:`s = \mathrm{sign}(g_t\, p_{t-1})` and step sizes starting at
  :math:`\delta_0 = \eta`:

  .. math::
    \delta_t = \mathrm{clip}(\delta_{t-1} \cdot \{\eta_+, \eta_-, 1\}_{s = 1, -1, 0},\ \delta_{\min}, \delta_{\max}),
    \quad p_t = \begin{cases} 0 & s = -1 \\ g_t & \text{otherwise}\end{cases},\quad
    u_t = \mathrm{sign}(p_t)\, \delta_t

  The learning rate only sets the initial step size (torch's ``lr``); it is not a schedule.
  Differs from ``optax.scale_by_rprop`` (0.2.8), which returns the *previous* step's
  :math:`u_{t-1}` (one step late: its first update is 0) and skips the clip when :math:`s = 0`.

  Args:
    learning_rate: the initial step size :math:`\eta \ge 0`.
    etas: :math:`(\eta_-, \eta_+)` with :math:`0 < \eta_- < 1 < \eta_+`.
    step_sizes: :math:`(\delta_{\min}, \delta_{\max})` with :math:`0 \le \delta_{\min} \le \delta_{\max}`.

  Returns:
    The sign-and-step transform; its state is :class:`ScaleByRpropState`.

  Raises:
    ValueError: if ``etas`` or ``step_sizes`` is not a pair in range, or ``learning_rate < 0``
      (a schedule included).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.scale_by_rprop(0.1)
    >>> state = tx.init(jnp.zeros(2))
    >>> u, state = tx.update(jnp.array([3.0, -1.0]), state)
    >>> u, state = tx.update(jnp.array([2.0, 4.0]), state)  # same sign: x 1.2; flipped: x 0.5, no step
    >>> print(u, state.step_size)
    [0.12 0.  ] [0.12 0.05]

  References:
    Riedmiller & Braun, A Direct Adaptive Method for Faster Backpropagation Learning: The RPROP Algorithm, 1993.
  """
  _validate.check_number("learning_rate", learning_rate, low=0.0)
  eta_minus, eta_plus = _check_pair("etas", etas, "(eta_minus, eta_plus) with 0 < eta_minus < 1 < eta_plus")
  _validate.check_number("etas[0]", eta_minus, low=0.0, high=1.0, low_open=True, high_open=True)
  _validate.check_number("etas[1]", eta_plus, low=1.0, low_open=True)
  step_min, step_max = _check_pair("step_sizes", step_sizes, "(min, max) with 0 <= min <= max")
  _validate.check_number("step_sizes[0]", step_min, low=0.0)
  _validate.check_number("step_sizes[1]", step_max, low=_validate.known_value(step_min) or 0.0)

  def init_fn(params):
    return ScaleByRpropState(prev=_tree.zeros_acc(params), step_size=_tree.full_acc(params, learning_rate))

  def one(g, prev, step):
    dtype = step.dtype
    g = g.astype(dtype)
    s = g * prev  # torch compares sign(g * prev); comparing the product is the same, NaN included, and cheaper
    factor = jnp.where(s > 0, jnp.asarray(eta_plus, dtype), jnp.where(s < 0, jnp.asarray(eta_minus, dtype),
                                                                       jnp.where(s == 0, jnp.ones([], dtype), s)))
    step = jnp.clip(step * factor, jnp.asarray(step_min, dtype), jnp.asarray(step_max, dtype))
    zero = jnp.zeros([], dtype)  # sign(where(.)) as where(sign(.)): the update reads no freshly written buffer
    return jnp.where(s < 0, zero, jnp.sign(g)) * step, jnp.where(s < 0, zero, g), step

  def update_fn(updates, state, params=None):
    _validate.check_state("adaptive.scale_by_rprop", state, ScaleByRpropState)
    del params
    triple = _tree.map_components(one, updates, state.prev, state.step_size)
    out, prev, step = (jax.tree.map(lambda _, t, i=i: t[i], updates, triple) for i in range(3))
    return _tree.cast_like(out, updates), ScaleByRpropState(prev=prev, step_size=step)

  return optax.GradientTransformation(init_fn, update_fn)


def rprop(learning_rate: float = 1e-2, etas: tuple[float, float] = (0.5, 1.2),
          step_sizes: tuple[float, float] = (1e-6, 50.0)) -> optax.GradientTransformation:
  r"""Rprop ≙ ``torch.optim.Rprop``: ``chain(scale_by_rprop(...), optax.scale(-1.0))``.

  .. math:: \theta_t = \theta_{t-1} - \mathrm{sign}(p_t)\,\delta_t

  with :math:`p_t, \delta_t` from :func:`scale_by_rprop` (the learning rate is the initial
  step size, inside the scaling). For full-batch training, as torch's.

  Args:
    learning_rate: the initial step size :math:`\eta \ge 0` (a number: torch's schedulers
      do not change a running Rprop either).
    etas: :math:`(\eta_-, \eta_+)` with :math:`0 < \eta_- < 1 < \eta_+`.
    step_sizes: :math:`(\delta_{\min}, \delta_{\max})`.

  Returns:
    ``optax.chain(scale_by_rprop(...), optax.scale(-1.0))``.

  Raises:
    ValueError: for the arguments :func:`scale_by_rprop` rejects.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.rprop(0.1)
    >>> u, _ = tx.update(jnp.array([3.0, -1.0]), tx.init(jnp.zeros(2)))
    >>> print(u)
    [-0.1  0.1]

  References:
    Riedmiller & Braun, A Direct Adaptive Method for Faster Backpropagation Learning: The RPROP Algorithm, 1993.
  """
  return optax.chain(scale_by_rprop(learning_rate, etas, step_sizes), optax.scale(-1.0))
