"""NAdam and RAdam as in ``torch.optim`` 2.x (re-exported by ``adaptive``; Adamax is in ``_adamax``).

Each is a ``scale_by_*`` block (its state right above it) and the full optimizer, an
``optax.chain`` of public pieces: ``regularization.l2_penalty``, the scaling and
``schedules.scale_by_learning_rate``, or with ``decoupled_weight_decay=True`` AdamW's
``regularization.decoupled_weight_decay(..., learning_rate=lr)`` last instead of the L2 step.
Moments are float32 (or wider); complex leaves are optimized as real pairs, as torch does.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_practices import _base
from jaxopt_practices import _tree
from jaxopt_practices import _validate

__all__ = ["ScaleByNadamState", "scale_by_nadam", "nadam", "ScaleByRadamState", "scale_by_radam", "radam"]

ScalarOrSchedule = _base.ScalarOrSchedule


def _check_betas(b1: float, b2: float, eps: float) -> None:
  _validate.check_decay("b1", b1)
  _validate.check_decay("b2", b2)
  _validate.check_number("eps", eps, low=0.0)


def _with_decay(core: optax.GradientTransformation, learning_rate: ScalarOrSchedule,
                weight_decay: ScalarOrSchedule | None, decoupled: bool,
                mask: _validate.Mask) -> optax.GradientTransformation:
  """``chain(l2_penalty, core, -lr)``, or with ``decoupled`` ``chain(core, -lr, decoupled_weight_decay)``."""
  _validate.check_bool("decoupled_weight_decay", decoupled)
  _validate.check_weight_decay(weight_decay)
  if not decoupled:
    return _base.coupled_optimizer([core], learning_rate, weight_decay, mask)
  _validate.check_number("learning_rate", learning_rate, low=0.0, allow_schedule=True)
  if weight_decay is None:
    return optax.chain(core, _base.scale_by_learning_rate(learning_rate))
  return optax.chain(core, _base.scale_by_learning_rate(learning_rate),
                     _base.decoupled_weight_decay(weight_decay, mask, learning_rate=learning_rate))


# ----------------------------------------------------------------------------- NAdam
class ScaleByNadamState(NamedTuple):
  """Updates applied so far, the product of the momentum coefficients, and the first and second moments.

  Attributes:
    count: int32 number of updates applied so far (torch's ``step`` minus one).
    mu_product: torch's ``mu_product``, the product of the momentum coefficients so far, a
      float32 scalar as torch keeps it.
    mu: the first moment (torch's ``exp_avg``), float32 or wider.
    nu: the second moment (torch's ``exp_avg_sq``), float32 or wider.
  """
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count: see CONTRIBUTING
  mu_product: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def scale_by_nadam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   momentum_decay: float = 4e-3) -> optax.GradientTransformation:
  r"""NAdam's scaling, as in ``torch.optim.NAdam``, without the learning rate.

  .. math::
    \mu_t = \beta_1 (1 - \tfrac12 0.96^{t\psi}),\quad \Pi_t = \prod_{i \le t} \mu_i,\quad
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,

    u_t = \frac{1-\mu_t}{1-\Pi_t}\,\frac{g_t}{d_t} + \frac{\mu_{t+1}}{1-\Pi_t\mu_{t+1}}\,\frac{m_t}{d_t},
    \quad d_t = \sqrt{v_t / (1-\beta_2^t)} + \epsilon

  with :math:`\psi` the ``momentum_decay``. :math:`\Pi_t` is kept in float32, as torch keeps
  its ``mu_product`` (so float64 params follow torch's float64 run to round-off). Differs from
  ``optax.nadam`` (Adam with Dozat's Nesterov term: no :math:`\mu_t` schedule, no :math:`\Pi_t`).

  Args:
    b1: :math:`\beta_1 \in [0, 1)`.
    b2: :math:`\beta_2 \in [0, 1)`.
    eps: :math:`\epsilon \ge 0`, outside the root.
    momentum_decay: :math:`\psi \ge 0`.

  Returns:
    An ``optax.GradientTransformation`` whose state is :class:`ScaleByNadamState`.

  Raises:
    ValueError: if a beta is outside [0, 1), or ``eps`` or ``momentum_decay`` is negative.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.scale_by_nadam(eps=0.0)
    >>> u, _ = tx.update(jnp.array([-2.0]), tx.init(jnp.zeros(1)))
    >>> print(u.round(4))  # (1 - mu_1) / (1 - mu_1) + mu_2 (1 - b1) / (1 - mu_1 mu_2), times sign(g)
    [-1.0565]

  References:
    Dozat, Incorporating Nesterov Momentum into Adam, 2016.
  """
  _check_betas(b1, b2, eps)
  _validate.check_number("momentum_decay", momentum_decay, low=0.0)
  wide = jax.dtypes.canonicalize_dtype(jnp.float64)  # torch's Python doubles (float32 without x64)

  def mu_at(t, dtype):
    return jnp.asarray(b1, dtype) * (1.0 - 0.5 * jnp.asarray(0.96, dtype) ** (t * jnp.asarray(momentum_decay, dtype)))

  def init_fn(params):
    return ScaleByNadamState(count=jnp.zeros([], jnp.int32), mu_product=jnp.ones([], jnp.float32),
                             mu=_tree.zeros_acc(params), nu=_tree.zeros_acc(params))

  def update_fn(updates, state, params=None):
    _validate.check_state("adaptive.scale_by_nadam", state, ScaleByNadamState)
    del params
    mu_product = state.mu_product * mu_at(state.count.astype(wide) + 1.0, wide).astype(jnp.float32)
    mu = _tree.moment(updates, state.mu, b1, 1)
    nu = _tree.moment(updates, state.nu, b2, 2)

    def make(dtype):
      t, prod = state.count.astype(dtype) + 1.0, mu_product.astype(dtype)
      mu_t, mu_next = mu_at(t, dtype), mu_at(t + 1.0, dtype)
      return (1.0 - mu_t) / (1.0 - prod), mu_next / (1.0 - prod * mu_next), _tree.bias_correction(b2, t, dtype)

    coefs = _tree.per_dtype(make)

    def one(g, m, v):
      c_grad, c_mom, bc2 = coefs(m.dtype)
      denom = jnp.sqrt(v / bc2) + eps
      return c_grad * g.astype(m.dtype) / denom + c_mom * m / denom

    out = _tree.cast_like(_tree.map_components(one, updates, mu, nu), updates)
    return out, ScaleByNadamState(count=_tree.increment(state.count), mu_product=mu_product, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def nadam(learning_rate: ScalarOrSchedule = 2e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
          weight_decay: ScalarOrSchedule | None = None, momentum_decay: float = 4e-3,
          decoupled_weight_decay: bool = False, mask: _validate.Mask = None) -> optax.GradientTransformation:
  r"""NAdam ≙ ``torch.optim.NAdam`` (coupled L2, or AdamW's decay with ``decoupled_weight_decay``).

  .. math:: \theta_t = \theta_{t-1} - \eta_t u_t

  with :math:`u_t` from :func:`scale_by_nadam` of :math:`g_t + \lambda\theta_{t-1}`: the chain
  ``[l2_penalty(weight_decay, mask)], scale_by_nadam(...), scale_by_learning_rate(learning_rate)``;
  decoupled (:func:`adamw`'s :math:`\theta \leftarrow \theta(1 - \eta_t\lambda)`): ``scale_by_nadam(...),
  scale_by_learning_rate(lr), decoupled_weight_decay(weight_decay, mask, learning_rate=lr)``.

  Args:
    learning_rate: :math:`\eta \ge 0`, a float or a schedule.
    b1, b2, eps, momentum_decay: as in :func:`scale_by_nadam` (torch's ``betas=(b1, b2)``).
    weight_decay: :math:`\lambda \ge 0`, a float or a schedule; ``None`` (the default, torch's 0) adds no step.
    decoupled_weight_decay: decay the params as AdamW (NAdamW) instead of coupled L2.
    mask: leaves the weight decay applies to (``None``: all, as PyTorch), e.g. ``groups.match(...)``.

  Returns:
    The ``optax.chain`` described above.

  Raises:
    ValueError: for a negative ``learning_rate`` / ``weight_decay``, a non-bool
      ``decoupled_weight_decay``, or a bad :func:`scale_by_nadam` argument.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.nadam(0.1, eps=0.0)
    >>> u, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
    >>> print(u.round(5))
    [-0.10565]

  References:
    Dozat, Incorporating Nesterov Momentum into Adam, 2016;
    Loshchilov & Hutter, Decoupled Weight Decay Regularization, 2019.
  """
  core = scale_by_nadam(b1, b2, eps, momentum_decay)
  return _with_decay(core, learning_rate, weight_decay, decoupled_weight_decay, mask)


# ----------------------------------------------------------------------------- RAdam
class ScaleByRadamState(NamedTuple):
  """Updates applied so far and the first and second moments.

  Attributes:
    count: int32 number of updates applied so far (torch's ``step`` minus one).
    mu: the first moment (torch's ``exp_avg``), float32 or wider.
    nu: the second moment (torch's ``exp_avg_sq``), float32 or wider.
  """
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count: see CONTRIBUTING
  mu: optax.Updates
  nu: optax.Updates


def _sma_lengths(b2: float, t: jax.Array, bc2: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
  r"""RAdam's :math:`\rho_\infty, \rho_t` without the cancellation of :math:`\rho_\infty - 2t\beta_2^t/(1-\beta_2^t)`.

  :math:`\rho_t = (\rho_\infty - 2/L) + (2/L)(1 - y/\mathrm{expm1}(y))`, :math:`L = -\log\beta_2`,
  :math:`y = tL` (a Taylor series below 0.1), constants in double precision as torch's floats: float32
  leaves get torch's :math:`\rho_t` to round-off (the direct formula loses 1e-4 near the threshold).
  """
  if not (isinstance(b2, (int, float)) and 0.0 < b2 < 1.0):  # an injected array (or 0): the direct formula
    rho_inf_array = 2.0 / (1.0 - jnp.asarray(b2, dtype)) - 1.0
    return rho_inf_array, rho_inf_array - 2.0 * t * (1.0 - bc2) / bc2
  rho_inf, two_over_log = 2.0 / (1.0 - b2) - 1.0, -2.0 / math.log(b2)
  y = t * jnp.asarray(-math.log(b2), dtype)
  series = y / 2.0 - y**2 / 12.0 + y**4 / 720.0 - y**6 / 30240.0 + y**8 / 1209600.0
  h = jnp.where(y < 0.1, series, 1.0 - y / jnp.expm1(y))
  return jnp.asarray(rho_inf, dtype), jnp.asarray(rho_inf - two_over_log, dtype) + jnp.asarray(two_over_log, dtype) * h


def scale_by_radam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
  r"""RAdam's rectified scaling, as in ``torch.optim.RAdam``, without the learning rate.

  .. math::
    \rho_\infty = \frac{2}{1-\beta_2} - 1,\quad \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t},\quad
    \hat m_t = \frac{m_t}{1-\beta_1^t},

    u_t = \begin{cases} \hat m_t\, r_t \frac{\sqrt{1-\beta_2^t}}{\sqrt{v_t} + \epsilon} & \rho_t > 5 \\
      \hat m_t & \text{otherwise}\end{cases},\quad
    r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}

  with Adam's moments :math:`m_t, v_t`. Differs from ``optax.radam``: eps is added to
  :math:`\sqrt{v_t}` before the bias correction (optax: to :math:`\sqrt{\hat v_t}`) and the
  threshold is strict (:math:`\rho_t > 5`; optax ``>=``).

  Args:
    b1: :math:`\beta_1 \in [0, 1)`.
    b2: :math:`\beta_2 \in [0, 1)`.
    eps: :math:`\epsilon \ge 0`.

  Returns:
    A transform with state :class:`ScaleByRadamState` (``count``, ``mu``, ``nu``).

  Raises:
    ValueError: when ``b1`` or ``b2`` is not in [0, 1), or ``eps < 0``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.scale_by_radam()
    >>> u, _ = tx.update(jnp.array([-3.0]), tx.init(jnp.zeros(1)))
    >>> print(u.round(5))  # rho_1 = 1: the bias-corrected momentum, not rectified
    [-3.]

  References:
    Liu et al, On the Variance of the Adaptive Learning Rate and Beyond, 2020.
  """
  _check_betas(b1, b2, eps)

  def init_fn(params):
    return ScaleByRadamState(count=jnp.zeros([], jnp.int32), mu=_tree.zeros_acc(params), nu=_tree.zeros_acc(params))

  def make(count, dtype):
    t = count.astype(dtype) + 1.0
    bc1, bc2 = _tree.bias_correction(b1, t, dtype), _tree.bias_correction(b2, t, dtype)
    rho_inf, rho = _sma_lengths(b2, t, bc2, dtype)
    rect = jnp.sqrt(jnp.maximum((rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho), 0.0))
    return bc1, jnp.sqrt(bc2), rect, rho > 5.0

  def update_fn(updates, state, params=None):
    _validate.check_state("adaptive.scale_by_radam", state, ScaleByRadamState)
    del params
    mu = _tree.moment(updates, state.mu, b1, 1)
    nu = _tree.moment(updates, state.nu, b2, 2)
    coefs = _tree.per_dtype(lambda dtype: make(state.count, dtype))

    def one(m, v):
      bc1, sqrt_bc2, rect, rectify = coefs(m.dtype)
      m_hat = m / bc1
      return jnp.where(rectify, m_hat * (sqrt_bc2 / (jnp.sqrt(v) + eps)) * rect, m_hat)

    out = _tree.cast_like(_tree.map_components(one, mu, nu), updates)
    return out, ScaleByRadamState(count=_tree.increment(state.count), mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def radam(learning_rate: ScalarOrSchedule = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
          weight_decay: ScalarOrSchedule | None = None, decoupled_weight_decay: bool = False,
          mask: _validate.Mask = None) -> optax.GradientTransformation:
  r"""RAdam ≙ ``torch.optim.RAdam`` (coupled L2, or AdamW's decay with ``decoupled_weight_decay``).

  .. math:: \theta_t = \theta_{t-1} - \eta_t u_t

  with :math:`u_t` from :func:`scale_by_radam`; the chain is built as :func:`nadam`'s.

  Args:
    learning_rate: :math:`\eta \ge 0`, a float or a schedule.
    b1, b2, eps: :math:`\beta_1, \beta_2 \in [0, 1)`, :math:`\epsilon \ge 0` of :func:`scale_by_radam`.
    weight_decay: :math:`\lambda \ge 0`, a float or a schedule; ``None`` (the default, torch's 0) adds no step.
    decoupled_weight_decay: decay the params as AdamW instead of coupled L2.
    mask: leaves the weight decay applies to (``None``: all, as PyTorch), e.g. ``groups.match(...)``.

  Returns:
    ``optax.chain`` of public pieces, built as :func:`nadam`'s.

  Raises:
    ValueError: as :func:`nadam` does (the scaling's arguments: :func:`scale_by_radam`).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.radam(0.1, weight_decay=0.5, decoupled_weight_decay=True)
    >>> p = jnp.array([2.0])
    >>> u, _ = tx.update(jnp.array([5.0]), tx.init(p), p)
    >>> print(u.round(6))  # -0.1 * 5 - 0.1 * 0.5 * 2
    [-0.6]

  References:
    Liu et al, On the Variance of the Adaptive Learning Rate and Beyond, 2020.
  """
  return _with_decay(scale_by_radam(b1, b2, eps), learning_rate, weight_decay, decoupled_weight_decay, mask)
