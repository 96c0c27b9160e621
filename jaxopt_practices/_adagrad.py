"""Adagrad, as ``torch.optim.Adagrad``.

Public through ``jaxopt_practices.adaptive``; the conventions of that module hold here.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import optax

from jaxopt_practices import _base
from jaxopt_practices import _tree
from jaxopt_practices import _validate

__all__ = ["ScaleByAdagradState", "scale_by_adagrad", "adagrad"]

ScalarOrSchedule = _base.ScalarOrSchedule


class ScaleByAdagradState(NamedTuple):
  """Running sum of squared gradients.

  Attributes:
    sum_of_squares: :math:`s_t`, the sum of the squared gradients so far plus
      ``initial_accumulator_value``, shaped like the params, in float32 or wider (torch's ``sum``).
  """
  sum_of_squares: optax.Updates


def scale_by_adagrad(initial_accumulator_value: float = 0.0, eps: float = 1e-10) -> optax.GradientTransformation:
  r"""Adagrad's scaling, ``g / (sqrt(sum g^2) + eps)`` with eps outside the root.

  .. math:: s_t = s_{t-1} + g_t^2, \qquad u_t = g_t / (\sqrt{s_t} + \epsilon), \quad s_0 = s_{\text{init}}

  Differs from ``optax.scale_by_rss``: optax puts eps inside the root and starts at 0.1.

  Args:
    initial_accumulator_value: :math:`s_{\text{init}} \ge 0`.
    eps: :math:`\epsilon \ge 0`.

  Returns:
    An ``optax.GradientTransformation`` (state :class:`ScaleByAdagradState`); scale by the
    learning rate afterwards.

  Raises:
    ValueError: for a negative or non-finite ``initial_accumulator_value`` or ``eps``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.scale_by_adagrad()
    >>> u, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
    >>> print(u)
    [1.]
  """
  _validate.check_number("initial_accumulator_value", initial_accumulator_value, low=0.0)
  _validate.check_number("eps", eps, low=0.0)

  def init_fn(params):
    return ScaleByAdagradState(sum_of_squares=_tree.full_acc(params, initial_accumulator_value))

  def update_fn(updates, state, params=None):
    _validate.check_state("adaptive.scale_by_adagrad", state, ScaleByAdagradState)
    del params
    sums = _tree.map_components(lambda g, s: s + jnp.square(g.astype(s.dtype)), updates, state.sum_of_squares)
    out = _tree.map_components(lambda g, s: (g.astype(s.dtype) / (jnp.sqrt(s) + eps)).astype(g.dtype), updates, sums)
    return out, ScaleByAdagradState(sum_of_squares=sums)

  return optax.GradientTransformation(init_fn, update_fn)


def adagrad(
    learning_rate: ScalarOrSchedule = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: ScalarOrSchedule | None = None,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    mask: _validate.Mask = None,
) -> optax.GradientTransformation:
  r"""Adagrad ≙ ``torch.optim.Adagrad``.

  .. math::
    g_t \leftarrow g_t + \lambda\theta_{t-1},\quad s_t = s_{t-1} + g_t^2,\quad
    \theta_t = \theta_{t-1} - \frac{\eta_t}{1 + (t-1)\,\text{lr\_decay}}\,\frac{g_t}{\sqrt{s_t} + \epsilon}

  Differs from ``optax.adagrad`` (eps inside the root, initial accumulator 0.1, no
  ``lr_decay`` or ``weight_decay``).

  Args:
    learning_rate: :math:`\eta \ge 0`, a float or a schedule.
    lr_decay: non-negative learning-rate decay.
    weight_decay: :math:`\lambda \ge 0`, coupled L2, a float or a schedule; ``None`` (the default) adds no step.
    initial_accumulator_value: starting value of :math:`s`, ``>= 0``.
    eps: :math:`\epsilon \ge 0`, outside the root.
    mask: leaves the coupled ``weight_decay`` applies to (``None``: all, as PyTorch), e.g. ``groups.match(...)``.

  Returns:
    ``chain([l2_penalty], scale_by_adagrad(...), scale_by_learning_rate(learning_rate, lr_decay))``;
    add its updates to the params.

  Raises:
    ValueError: for a negative ``learning_rate``, ``lr_decay`` or ``weight_decay``, or the
      arguments :func:`scale_by_adagrad` rejects.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.adagrad(0.5)
    >>> u, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
    >>> print(u)
    [-0.5]

  References:
    Duchi et al, Adaptive Subgradient Methods for Online Learning and Stochastic Optimization, 2011.
  """
  return _base.coupled_optimizer([scale_by_adagrad(initial_accumulator_value, eps)], learning_rate, weight_decay, mask,
                                 lr_decay)
