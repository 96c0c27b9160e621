"""Practice 5 — adaptive methods: Adagrad, RMSprop, Adam, AdamW, AMSGrad, NAdam, RAdam, Adamax, Adadelta, Rprop.

The algorithms and defaults are PyTorch 2.x's (``torch.optim.Adagrad``, ``RMSprop``,
``Adam``, ``AdamW``); each docstring says where ``optax``'s version differs. The moments
are kept in float32 (or wider) whatever the gradient dtype, and updates come back in the
gradient's dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_practices import _base
from jaxopt_practices import _tree
from jaxopt_practices import _validate
from jaxopt_practices._adagrad import (ScaleByAdagradState as ScaleByAdagradState, adagrad as adagrad,
                                       scale_by_adagrad as scale_by_adagrad)  # torch.optim.Adagrad
from jaxopt_practices._adadelta_rprop import (ScaleByAdadeltaState as ScaleByAdadeltaState, adadelta as adadelta,
    ScaleByRpropState as ScaleByRpropState, rprop as rprop, scale_by_adadelta as scale_by_adadelta,
    scale_by_rprop as scale_by_rprop)  # torch.optim.Adadelta, Rprop
from jaxopt_practices._adafactor import (ScaleByAdafactorState as ScaleByAdafactorState, adafactor as adafactor,
                                         scale_by_adafactor as scale_by_adafactor)  # torch.optim.Adafactor
from jaxopt_practices._adam_variants import (ScaleByNadamState as ScaleByNadamState, nadam as nadam,
    ScaleByRadamState as ScaleByRadamState, radam as radam, scale_by_nadam as scale_by_nadam,
    scale_by_radam as scale_by_radam)
from jaxopt_practices._adamax import (ScaleByAdamaxState as ScaleByAdamaxState, adamax as adamax,
                                      scale_by_adamax as scale_by_adamax)
from jaxopt_practices._muon import (ScaleByMuonState as ScaleByMuonState, muon as muon,  # torch.optim.Muon
                                    orthogonalize as orthogonalize, scale_by_muon as scale_by_muon)

__all__ = [
    "ScaleByAdagradState", "scale_by_adagrad", "adagrad", "ScaleByRmspropState", "scale_by_rmsprop", "rmsprop",
    "ScaleByAdamState", "scale_by_adam", "adam", "adamw",
    "ScaleByNadamState", "scale_by_nadam", "nadam", "ScaleByRadamState", "scale_by_radam", "radam",
    "ScaleByAdamaxState", "scale_by_adamax", "adamax", "ScaleByAdadeltaState", "scale_by_adadelta", "adadelta",
    "ScaleByRpropState", "scale_by_rprop", "rprop",
    "ScaleByAdafactorState", "scale_by_adafactor", "adafactor", "ScaleByMuonState", "scale_by_muon", "muon",
    "orthogonalize",
]

ScalarOrSchedule = _base.ScalarOrSchedule


# ----------------------------------------------------------------------------- RMSprop
class ScaleByRmspropState(NamedTuple):
  """Updates applied so far, square average, gradient average (centered only) and momentum buffer.

  Attributes:
    count: int32 number of updates applied so far; a ``momentum`` schedule is read at it.
    square_avg: :math:`v_t`, the moving average of the squared gradients (float32 or wider).
    grad_avg: the moving average of the gradients with ``centered``, else ``()``.
    momentum_buffer: the momentum buffer with a ``momentum``, else ``()``.
  """
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count: see CONTRIBUTING
  square_avg: optax.Updates
  grad_avg: optax.Updates
  momentum_buffer: optax.Updates


def scale_by_rmsprop(
    alpha: float = 0.99, eps: float = 1e-8, momentum: ScalarOrSchedule | None = None, centered: bool = False
) -> optax.GradientTransformation:
  r"""RMSprop's scaling as in ``torch.optim.RMSprop``, without the learning rate.

  .. math::
    v_t = \alpha v_{t-1} + (1-\alpha) g_t^2,\quad
    \bar g_t = \alpha \bar g_{t-1} + (1-\alpha) g_t \ \text{(centered)},\quad
    d_t = \frac{g_t}{\sqrt{v_t - \bar g_t^2} + \epsilon},\quad
    b_t = \mu b_{t-1} + d_t,\ u_t = b_t \ \text{(momentum)} \ \text{else}\ u_t = d_t.

  The momentum buffer holds ``g / (sqrt(v) + eps)``, with the learning rate applied
  outside it, exactly like PyTorch, so it stays right under a learning-rate schedule.
  Differs from ``optax.scale_by_rms`` / ``scale_by_stddev``: eps outside the root, and the
  momentum buffer (optax's ``rmsprop`` traces the learning-rate-scaled update).
  The state is :class:`ScaleByRmspropState`; ``grad_avg`` / ``momentum_buffer`` are empty
  tuples when not used. A ``momentum`` schedule is evaluated at ``count``.

  Args:
    alpha: smoothing constant in [0, 1).
    eps: :math:`\epsilon \ge 0`, outside the root.
    momentum: :math:`\mu \in [0, 1)`, a float or a schedule; ``None`` (the default) keeps no
      buffer, any number keeps one (0 and injected arrays too; a Python 0 skips the arithmetic).
    centered: normalise by the estimated variance instead of the raw second moment.

  Returns:
    An ``optax.GradientTransformation`` (state :class:`ScaleByRmspropState`); scale by the
    learning rate afterwards.

  Raises:
    ValueError: for an ``alpha`` or ``momentum`` outside ``[0, 1)``, a negative ``eps`` or a
      non-bool ``centered``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.scale_by_rmsprop(alpha=0.75, eps=0.0)
    >>> u, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
    >>> print(u)
    [2.]
  """
  _validate.check_decay("alpha", alpha)
  _validate.check_number("eps", eps, low=0.0)
  _validate.check_decay("momentum", 0.0 if momentum is None else momentum, allow_schedule=True)
  _validate.check_bool("centered", centered)
  use_momentum = momentum is not None

  def init_fn(params):
    return ScaleByRmspropState(
        count=jnp.zeros([], jnp.int32),
        square_avg=_tree.zeros_acc(params),
        grad_avg=_tree.zeros_acc(params) if centered else (),
        momentum_buffer=_tree.zeros_acc(params) if use_momentum else (),
    )

  def update_fn(updates, state, params=None):
    _validate.check_state("adaptive.scale_by_rmsprop", state, ScaleByRmspropState)
    del params
    square_avg = _tree.moment(updates, state.square_avg, alpha, 2)
    if centered:
      grad_avg = _tree.moment(updates, state.grad_avg, alpha, 1)
      var = _tree.map_components(lambda v, m: v - jnp.square(m), square_avg, grad_avg)
    else:
      grad_avg, var = (), square_avg
    direction = _tree.map_components(lambda g, v: g.astype(v.dtype) / (jnp.sqrt(v) + eps), updates, var)
    buffer = state.momentum_buffer  # () without momentum; carried unchanged for a Python 0
    if not _validate.is_zero(momentum):
      mu = _tree.per_dtype(lambda dtype: _tree.as_scalar(momentum, state.count, dtype))
      direction = buffer = _tree.map_components(lambda d, b: mu(b.dtype) * b + d, direction, state.momentum_buffer)
    out = _tree.cast_like(direction, updates)
    return out, ScaleByRmspropState(count=_tree.increment(state.count), square_avg=square_avg, grad_avg=grad_avg,
                                    momentum_buffer=buffer)

  return optax.GradientTransformation(init_fn, update_fn)


def rmsprop(
    learning_rate: ScalarOrSchedule = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule | None = None,
    momentum: ScalarOrSchedule | None = None,
    centered: bool = False,
    mask: _validate.Mask = None,
) -> optax.GradientTransformation:
  r"""RMSprop ≙ ``torch.optim.RMSprop`` (``scale_by_rmsprop`` then ``-learning_rate``).

  .. math:: g_t \leftarrow g_t + \lambda\theta_{t-1},\quad \theta_t = \theta_{t-1} - \eta_t u_t

  with :math:`u_t` from :func:`scale_by_rmsprop`. Differs from ``optax.rmsprop``: eps
  outside the root, PyTorch's momentum buffer, coupled ``weight_decay``.

  Args:
    learning_rate: :math:`\eta \ge 0`, a float or a schedule.
    alpha: smoothing constant in [0, 1).
    eps: :math:`\epsilon \ge 0`.
    weight_decay: :math:`\lambda \ge 0`, coupled L2, a float or a schedule; ``None`` (the default) adds no step.
    momentum: :math:`\mu \in [0, 1)`, a float or a schedule; ``None``: no buffer (:func:`scale_by_rmsprop`).
    centered: centered RMSprop.
    mask: leaves the coupled ``weight_decay`` applies to (``None``: all, as PyTorch), e.g. ``groups.match(...)``.

  Returns:
    ``chain([l2_penalty], scale_by_rmsprop(...), scale_by_learning_rate(learning_rate))``, an
    ``optax.GradientTransformation``; add its updates to the params.

  Raises:
    ValueError: for a negative ``learning_rate`` or ``weight_decay``, or the arguments
      :func:`scale_by_rmsprop` rejects.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.rmsprop(0.01, alpha=0.75, eps=0.0, momentum=0.5)
    >>> u, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
    >>> print(u)
    [-0.02]

  References:
    Hinton, Neural Networks for Machine Learning, Lecture 6e, 2012;
    Graves, Generating Sequences With Recurrent Neural Networks, 2013 (centered).
  """
  return _base.coupled_optimizer([scale_by_rmsprop(alpha, eps, momentum, centered)], learning_rate, weight_decay, mask)


# ----------------------------------------------------------------------------- Adam
class ScaleByAdamState(NamedTuple):
  r"""Updates applied so far, first and second moments, and (AMSGrad only) the running max of the second.

  Attributes:
    count: int32 number of updates applied so far: :math:`t - 1` of the bias corrections.
    mu: :math:`m_t`, the first moment (torch's ``exp_avg``), float32 or wider.
    nu: :math:`v_t`, the second moment (torch's ``exp_avg_sq``), float32 or wider.
    nu_max: :math:`\hat v_t` with ``amsgrad`` (torch's ``max_exp_avg_sq``), else ``()``.
  """
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count: see CONTRIBUTING
  mu: optax.Updates
  nu: optax.Updates
  nu_max: optax.Updates


def scale_by_adam(
    b1: ScalarOrSchedule = 0.9, b2: float = 0.999, eps: float = 1e-8, amsgrad: bool = False
) -> optax.GradientTransformation:
  r"""Adam's (or AMSGrad's) scaling, as in ``torch.optim.Adam``, without the learning rate.

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,

    \hat v_t = \max(\hat v_{t-1}, v_t)\ \text{(AMSGrad)}\ \text{else}\ v_t,\quad
    u_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{\hat v_t / (1-\beta_2^t)} + \epsilon}

  AMSGrad takes the max over the raw second moment, then bias-corrects, as PyTorch does
  (``optax.scale_by_amsgrad`` takes it over the bias-corrected moment). With a scheduled
  ``b1`` the bias correction uses the current :math:`\beta_1`, as PyTorch does.

  Args:
    b1: :math:`\beta_1 \in [0, 1)`, a float or a schedule (e.g. one-cycle momentum).
    b2: :math:`\beta_2 \in [0, 1)`.
    eps: :math:`\epsilon \ge 0`, outside the root.
    amsgrad: keep the running max of :math:`v_t`.

  Returns:
    An ``optax.GradientTransformation`` (state :class:`ScaleByAdamState`); scale by the
    learning rate afterwards.

  Raises:
    ValueError: for a ``b1`` or ``b2`` outside ``[0, 1)``, a negative ``eps`` or a non-bool
      ``amsgrad``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.scale_by_adam(eps=0.0)
    >>> u, _ = tx.update(jnp.array([-3.0]), tx.init(jnp.zeros(1)))
    >>> print(u)
    [-1.]

  References:
    Kingma & Ba, Adam: A Method for Stochastic Optimization, 2015;
    Reddi et al, On the Convergence of Adam and Beyond, 2018.
  """
  _validate.check_decay("b1", b1, allow_schedule=True)
  _validate.check_decay("b2", b2)
  _validate.check_number("eps", eps, low=0.0)
  _validate.check_bool("amsgrad", amsgrad)

  def init_fn(params):
    return ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=_tree.zeros_acc(params), nu=_tree.zeros_acc(params),
                            nu_max=_tree.zeros_acc(params) if amsgrad else ())

  def update_fn(updates, state, params=None):
    _validate.check_state("adaptive.scale_by_adam", state, ScaleByAdamState)
    del params
    beta1 = jnp.asarray(b1(state.count)) if callable(b1) else b1
    mu = _tree.moment(updates, state.mu, beta1, 1)
    nu = _tree.moment(updates, state.nu, b2, 2)
    nu_hat = _tree.map_components(jnp.maximum, state.nu_max, nu) if amsgrad else nu
    bc = _tree.bias_corrections(beta1, b2, state.count)  # (1 - b1^t, sqrt(1 - b2^t)) per real dtype
    out = _tree.map_components(lambda m, v: (m / bc(m.dtype)[0]) / (jnp.sqrt(v) / bc(m.dtype)[1] + eps), mu, nu_hat)
    out = _tree.cast_like(out, updates)
    return out, ScaleByAdamState(count=_tree.increment(state.count), mu=mu, nu=nu, nu_max=nu_hat if amsgrad else ())

  return optax.GradientTransformation(init_fn, update_fn)


def adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: ScalarOrSchedule = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule | None = None,
    amsgrad: bool = False,
    mask: _validate.Mask = None,
) -> optax.GradientTransformation:
  r"""Adam ≙ ``torch.optim.Adam`` (coupled L2 ``weight_decay``, optional AMSGrad).

  .. math:: g_t \leftarrow g_t + \lambda\theta_{t-1},\quad \theta_t = \theta_{t-1} - \eta_t u_t

  with :math:`u_t` from :func:`scale_by_adam`. Differs from ``optax.adam`` only in having
  ``weight_decay`` (coupled) and PyTorch's AMSGrad.

  Args:
    learning_rate: :math:`\eta \ge 0`, a float or a schedule.
    b1: :math:`\beta_1 \in [0, 1)`, a float or a schedule.
    b2: :math:`\beta_2 \in [0, 1)`.
    eps: :math:`\epsilon \ge 0`.
    weight_decay: :math:`\lambda \ge 0`, coupled L2 (not AdamW), a float or a schedule; ``None`` (the default)
      adds no step.
    amsgrad: AMSGrad variant.
    mask: leaves the coupled ``weight_decay`` applies to (``None``: all, as PyTorch), e.g. ``groups.match(...)``.

  Returns:
    ``chain([l2_penalty], scale_by_adam(...), scale_by_learning_rate(learning_rate))``, an
    ``optax.GradientTransformation``; add its updates to the params.

  Raises:
    ValueError: for a negative ``learning_rate`` or ``weight_decay``, or the arguments
      :func:`scale_by_adam` rejects.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.adam(0.1)
    >>> u, _ = tx.update(jnp.array([5.0]), tx.init(jnp.zeros(1)))
    >>> print(u.round(6))
    [-0.1]

  References:
    Kingma & Ba, Adam: A Method for Stochastic Optimization, 2015.
  """
  return _base.coupled_optimizer([scale_by_adam(b1, b2, eps, amsgrad)], learning_rate, weight_decay, mask)


def adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: ScalarOrSchedule = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule | None = 1e-2,
    amsgrad: bool = False,
    mask: _validate.Mask = None,
) -> optax.GradientTransformation:
  r"""AdamW ≙ ``torch.optim.AdamW``: Adam with decoupled weight decay.

  .. math:: \theta_t = \theta_{t-1} - \eta_t (u_t + \lambda \theta_{t-1})

  applied as PyTorch does, ``θ ← θ·(1 - ηλ)`` with the factor rounded to float32, then the
  Adam step. The decay follows the learning rate (schedule included). It is this chain of
  public pieces, which you can build (and rearrange) yourself::

    optax.chain(adaptive.scale_by_adam(b1, b2, eps, amsgrad),
                schedules.scale_by_learning_rate(learning_rate),
                regularization.decoupled_weight_decay(weight_decay, mask, learning_rate=learning_rate))

  Differs from ``optax.adamw``: the default ``weight_decay`` is PyTorch's 1e-2 (optax: 1e-4),
  the float32-rounded decay factor, and PyTorch's AMSGrad.

  Args:
    learning_rate: :math:`\eta \ge 0`, a float or a schedule.
    b1: :math:`\beta_1 \in [0, 1)`, a float or a schedule.
    b2: :math:`\beta_2 \in [0, 1)`.
    eps: :math:`\epsilon \ge 0`.
    weight_decay: :math:`\lambda \ge 0`, a float or a schedule; ``None`` adds no decay step.
    amsgrad: AMSGrad variant.
    mask: which leaves decay: ``None`` (all, as PyTorch), ``"auto"`` (``ndim >= 2``), a
      pytree of bools, or a callable ``params -> pytree of bools``.

  Returns:
    An ``optax.GradientTransformation`` whose updates are added to the params; the decay is
    :func:`~jaxopt_practices.regularization.decoupled_weight_decay` after the learning-rate scaling.

  Raises:
    ValueError: for a negative ``learning_rate`` or ``weight_decay``, a ``mask`` of another
      kind, or the arguments :func:`scale_by_adam` rejects.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.adamw(0.1, weight_decay=0.5)
    >>> p = jnp.array([2.0])
    >>> u, _ = tx.update(jnp.array([5.0]), tx.init(p), p)
    >>> print(u.round(6))
    [-0.2]

  References:
    Loshchilov & Hutter, Decoupled Weight Decay Regularization, 2019.
  """
  _validate.check_weight_decay(weight_decay)
  decay = [] if weight_decay is None else [
      _base.decoupled_weight_decay(weight_decay, mask, learning_rate=learning_rate)]
  return optax.chain(  # learning_rate is checked by scale_by_learning_rate
      scale_by_adam(b1, b2, eps, amsgrad), _base.scale_by_learning_rate(learning_rate), *decay)
