"""Adamax as in ``torch.optim`` 2.x (re-exported by ``adaptive``).

A ``scale_by_adamax`` block (its state right above it) and the full optimizer, an
``optax.chain`` of public pieces: ``regularization.l2_penalty``, the scaling and
``schedules.scale_by_learning_rate``. Moments are float32 (or wider); complex leaves are
optimized as real pairs, as torch does.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_practices import _base
from jaxopt_practices import _tree
from jaxopt_practices import _validate

__all__ = ["ScaleByAdamaxState", "scale_by_adamax", "adamax"]

ScalarOrSchedule = _base.ScalarOrSchedule


class ScaleByAdamaxState(NamedTuple):
  """Updates applied so far, the first moment and the exponentially weighted infinity norm.

  Attributes:
    count: int32 number of updates applied so far (torch's ``step`` minus one).
    mu: the first moment (torch's ``exp_avg``), float32 or wider.
    exp_inf: the exponentially weighted infinity norm (torch's ``exp_inf``), float32 or wider.
  """
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count: see CONTRIBUTING
  mu: optax.Updates
  exp_inf: optax.Updates


def scale_by_adamax(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
  r"""Adamax's scaling, as in ``torch.optim.Adamax``, without the learning rate.

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad u^\infty_t = \max(\beta_2 u^\infty_{t-1}, |g_t| + \epsilon),
    \quad u_t = \frac{m_t}{(1-\beta_1^t)\, u^\infty_t}

  As ``optax.scale_by_adamax`` (eps inside the max), except for complex leaves: torch and
  this take :math:`|\cdot|` per real component, optax the modulus.

  Args:
    b1: :math:`\beta_1 \in [0, 1)`.
    b2: :math:`\beta_2 \in [0, 1)`.
    eps: :math:`\epsilon \ge 0`.

  Returns:
    Adamax's scaling; the state is :class:`ScaleByAdamaxState`.

  Raises:
    ValueError: naming ``b1``, ``b2`` or ``eps`` when one is out of range.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.scale_by_adamax(eps=0.0)
    >>> u, _ = tx.update(jnp.array([-4.0]), tx.init(jnp.zeros(1)))
    >>> print(u.round(6))
    [-1.]

  References:
    Kingma & Ba, Adam: A Method for Stochastic Optimization, 2015 (section 7.1).
  """
  _validate.check_decay("b1", b1)
  _validate.check_decay("b2", b2)
  _validate.check_number("eps", eps, low=0.0)

  def init_fn(params):
    return ScaleByAdamaxState(count=jnp.zeros([], jnp.int32), mu=_tree.zeros_acc(params),
                              exp_inf=_tree.zeros_acc(params))

  def update_fn(updates, state, params=None):
    _validate.check_state("adaptive.scale_by_adamax", state, ScaleByAdamaxState)
    del params
    mu = _tree.moment(updates, state.mu, b1, 1)
    decay = _tree.per_dtype(lambda dtype: jnp.asarray(b2, dtype))
    exp_inf = _tree.map_components(lambda g, u: jnp.maximum(decay(u.dtype) * u, jnp.abs(g.astype(u.dtype)) + eps),
                                   updates, state.exp_inf)
    bc1 = _tree.per_dtype(lambda dtype: _tree.bias_correction(b1, state.count.astype(dtype) + 1.0, dtype))
    out = _tree.map_components(lambda m, u: m / u / bc1(m.dtype), mu, exp_inf)
    return _tree.cast_like(out, updates), ScaleByAdamaxState(count=_tree.increment(state.count), mu=mu, exp_inf=exp_inf)

  return optax.GradientTransformation(init_fn, update_fn)


def adamax(learning_rate: ScalarOrSchedule = 2e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
           weight_decay: ScalarOrSchedule | None = None, mask: _validate.Mask = None) -> optax.GradientTransformation:
  r"""Adamax ≙ ``torch.optim.Adamax`` (coupled L2 ``weight_decay``).

  .. math:: g_t \leftarrow g_t + \lambda\theta_{t-1},\quad \theta_t = \theta_{t-1} - \eta_t u_t

  with :math:`u_t` from :func:`scale_by_adamax`: ``chain([l2_penalty(weight_decay, mask)],
  scale_by_adamax(...), scale_by_learning_rate(learning_rate))``. ``optax.adamax`` has no
  ``weight_decay`` (``optax.adamaxw``'s is decoupled).

  Args:
    learning_rate: :math:`\eta \ge 0`, a float or a schedule.
    b1, b2, eps: see :func:`scale_by_adamax`.
    weight_decay: :math:`\lambda \ge 0`, coupled L2; ``None`` (the default, torch's 0) adds no step.
    mask: leaves the coupled ``weight_decay`` applies to (``None``: all, as PyTorch).

  Returns:
    The chain ``[l2_penalty], scale_by_adamax, scale_by_learning_rate``.

  Raises:
    ValueError: for ``learning_rate < 0``, ``weight_decay < 0`` or a bad :func:`scale_by_adamax` argument.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.adamax(0.1, weight_decay=1.0)
    >>> p = jnp.array([-1.0, 1.0])
    >>> u, _ = tx.update(jnp.array([5.0, 5.0]), tx.init(p), p)  # gradients 4 and 6 after the L2 step
    >>> print(u.round(6))
    [-0.1 -0.1]

  References:
    Kingma & Ba, Adam: A Method for Stochastic Optimization, 2015 (section 7.1).
  """
  return _base.coupled_optimizer([scale_by_adamax(b1, b2, eps)], learning_rate, weight_decay, mask)
