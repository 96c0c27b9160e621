"""ASGD ≙ ``torch.optim.ASGD``: SGD with a decaying step size and a Polyak average of the iterates.

The public half lives in ``momentum`` (``asgd``, ``scale_by_asgd``, ``asgd_learning_rate``,
``asgd_params``, ``ScaleByAsgdState``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_practices import _base
from jaxopt_practices import _tree
from jaxopt_practices import _validate

ScalarOrSchedule = _base.ScalarOrSchedule


def _wide() -> Any:
  return jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32


def asgd_learning_rate(learning_rate: ScalarOrSchedule = 1e-2, lambd: float = 1e-4,
                       alpha: float = 0.75) -> optax.Schedule:
  r"""ASGD's step size :math:`\eta_t` (torch's state ``eta``) as a schedule of the update count.

  .. math:: \eta_t = \frac{L}{(1 + \lambda L t)^{\alpha}}, \qquad L = \text{lr}(\max(t - 1, 0))

  PyTorch computes ``eta`` for the next step from the lr of the step just taken, so with a
  learning-rate schedule :math:`L` lags one update (``eta`` of the first step is ``lr(0)``);
  with a constant lr, :math:`L` is the lr (under ``optax.inject_hyperparams`` a scheduled lr
  arrives as this step's value and the lag is lost). As PyTorch stores ``eta`` in its default scalar
  dtype, the value is rounded to float32 (computed in float64 under x64, then rounded).

  Args:
    learning_rate: the lr :math:`\ge 0`, a float or a schedule.
    lambd: decay term :math:`\lambda \ge 0`.
    alpha: power :math:`\alpha \ge 0` of the step-size decay.

  Returns:
    An ``optax.Schedule`` returning float32.

  Raises:
    ValueError: for a bad argument, naming it.

  Example:
    >>> from jaxopt_practices import momentum
    >>> eta = momentum.asgd_learning_rate(0.1, lambd=1.0, alpha=1.0)
    >>> print(eta(0), eta(1), eta(3))
    0.1 0.09090909 0.07692308
  """
  _validate.check_number("learning_rate", learning_rate, low=0.0, allow_schedule=True)
  _validate.check_number("lambd", lambd, low=0.0)
  _validate.check_number("alpha", alpha, low=0.0)

  def schedule(count):
    dt = _wide()
    t = jnp.asarray(count).astype(dt)
    lr = _tree.as_scalar(learning_rate, jnp.maximum(jnp.asarray(count) - 1, 0), dt)
    return (lr / (1.0 + jnp.asarray(lambd, dt) * lr * t) ** jnp.asarray(alpha, dt)).astype(jnp.float32)

  return schedule


class ScaleByAsgdState(NamedTuple):
  """Updates applied so far and torch's ``ax``, the average of the iterates (float32 or wider).

  Attributes:
    count: int32 number of updates applied so far (0 at ``init``); torch's ``step`` minus one.
    ax: the average of the iterates from step ``t0`` on, shaped like the params, in float32 or
      wider (zeros at ``init``, then the iterate itself until that step); read it with
      :func:`asgd_params`.
  """
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count: see CONTRIBUTING
  ax: optax.Params


def scale_by_asgd(t0: float = 1e6) -> optax.GradientTransformation:
  r"""ASGD's averaging (torch's ``ax`` and ``mu``); the updates pass through unchanged.

  Place it last: it reads the new params :math:`\theta_t = \theta_{t-1} + u_t` and keeps

  .. math::
    \mu_t = 1 / \max(1, t - 1 - t_0), \qquad
    a_t = \begin{cases} \theta_t & \mu_t = 1 \\ a_{t-1} + \mu_t(\theta_t - a_{t-1}) & \text{else}\end{cases}

  (:math:`t` counts updates from 1; ``mu`` is rounded to float32 as PyTorch stores it). The
  average is the iterate itself until step :math:`t_0 + 2`, then a running mean of the
  iterates from there. Read it with :func:`asgd_params`. The step itself is SGD with
  :func:`asgd_learning_rate` and a decoupled shrink, see :func:`asgd`.

  Args:
    t0: the step after which averaging starts, ``>= 0``.

  Returns:
    An ``optax.GradientTransformation`` that needs ``params``; its state is :class:`ScaleByAsgdState`.

  Raises:
    ValueError: for a bad ``t0``; at ``update`` without ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import momentum
    >>> tx = momentum.scale_by_asgd(t0=0)
    >>> p, state = jnp.zeros(1), tx.init(jnp.zeros(1))
    >>> for g in (1.0, 2.0, 3.0):
    ...   u, state = tx.update(jnp.array([g]), state, p)
    ...   p = p + u
    >>> print(p, momentum.asgd_params(state))   # iterates 1, 3, 6: ax = 1, then 3, then 3 + (6 - 3) / 2
    [6.] [4.5]

  References:
    Polyak & Juditsky, Acceleration of Stochastic Approximation by Averaging, 1992.
  """
  _validate.check_number("t0", t0, low=0.0)

  def init_fn(params):
    return ScaleByAsgdState(count=jnp.zeros([], jnp.int32), ax=_tree.zeros_acc(params))

  def update_fn(updates, state, params=None):
    _validate.check_state("momentum.scale_by_asgd", state, ScaleByAsgdState)
    _validate.need_params("scale_by_asgd", params)
    dt = _wide()
    mu = (1.0 / jnp.maximum(1.0, state.count.astype(dt) - jnp.asarray(t0, dt))).astype(jnp.float32)

    def average(u, p, a):
      new = p.astype(a.dtype) + u.astype(a.dtype)
      return jnp.where(mu == 1.0, new, a + (new - a) * mu.astype(a.dtype))

    ax = _tree.map_components(average, updates, params, state.ax)
    return updates, ScaleByAsgdState(count=_tree.increment(state.count), ax=ax)

  return optax.GradientTransformation(init_fn, update_fn)


def asgd(
    learning_rate: ScalarOrSchedule = 1e-2,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    t0: float = 1e6,
    weight_decay: ScalarOrSchedule | None = 0.0,
    mask: _validate.Mask = None,
) -> optax.GradientTransformation:
  r"""Averaged SGD ≙ ``torch.optim.ASGD``.

  .. math::
    g_t \leftarrow g_t + w\,\theta_{t-1}, \quad
    \theta_t = \theta_{t-1}(1 - \lambda\eta_t) - \eta_t g_t, \quad a_t \text{ as in } \texttt{scale\_by\_asgd}

  with :math:`\eta_t` from :func:`asgd_learning_rate`. The optimizer's params are the raw
  iterates :math:`\theta_t`, as PyTorch's; the average (torch's ``ax``, what ASGD's theory is
  about) is read with :func:`asgd_params`. It is this chain of public pieces::

    eta = momentum.asgd_learning_rate(learning_rate, lambd, alpha)
    optax.chain(regularization.l2_penalty(weight_decay, mask), schedules.scale_by_learning_rate(eta),
                regularization.decoupled_weight_decay(lambd, None, learning_rate=eta),
                momentum.scale_by_asgd(t0))

  The shrink :math:`\theta(1 - \lambda\eta_t)` is AdamW's decoupled decay with rate
  :math:`\lambda` following :math:`\eta_t`, rounded as PyTorch rounds it. optax has no ASGD.

  Args:
    learning_rate: :math:`\text{lr} \ge 0`, a float or a schedule.
    lambd: decay term :math:`\lambda \ge 0`.
    alpha: power :math:`\alpha \ge 0` for the step-size update.
    t0: the step at which averaging starts, ``>= 0``.
    weight_decay: :math:`w \ge 0`, coupled L2 (PyTorch's), a float or a schedule; ``None`` adds no step.
    mask: leaves the coupled ``weight_decay`` applies to (``None``: all, as PyTorch).

  Returns:
    An ``optax.GradientTransformation`` (needs ``params``).

  Raises:
    ValueError: for a bad argument, naming it.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import momentum
    >>> tx = momentum.asgd(0.1, lambd=0.5)
    >>> p = jnp.array([2.0])
    >>> u, state = tx.update(jnp.array([1.0]), tx.init(p), p)   # -0.1 * 1 - 0.1 * 0.5 * 2
    >>> print(u.round(6), momentum.asgd_params(state))
    [-0.2] [1.8]

  References:
    Polyak & Juditsky, Acceleration of Stochastic Approximation by Averaging, 1992;
    Bottou, Stochastic Gradient Descent Tricks, 2012.
  """
  eta = asgd_learning_rate(learning_rate, lambd, alpha)
  _validate.check_weight_decay(weight_decay)
  decay = [] if weight_decay is None else [_base.l2_penalty(weight_decay, mask)]
  return optax.chain(*decay, _base.scale_by_learning_rate(eta),
                     _base.decoupled_weight_decay(lambd, None, learning_rate=eta), scale_by_asgd(t0))


def asgd_params(opt_state: Any) -> Any:
  """The averaged params, torch's ``ax``, found anywhere inside an optimizer state.

  Args:
    opt_state: an optimizer state, a linen ``TrainState``, an ``nnx.Optimizer`` or its
      ``opt_state``, holding exactly one :class:`ScaleByAsgdState`.

  Returns:
    The average, shaped like the params, in the accumulator dtype (float32 for bfloat16
    params; the params' own dtype otherwise).

  Raises:
    ValueError: when ``opt_state`` holds no ``ScaleByAsgdState`` or more than one.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import momentum
    >>> tx = momentum.asgd(1.0, lambd=0.0, t0=0.0)
    >>> p = {"w": jnp.zeros(1)}
    >>> state = tx.init(p)
    >>> for g in (-1.0, -1.0, -1.0):
    ...   u, state = tx.update({"w": jnp.array([g])}, state, p)
    ...   p = {"w": p["w"] + u["w"]}
    >>> print(p["w"], momentum.asgd_params(state)["w"])   # iterates 1, 2, 3; mean of 2 and 3
    [3.] [2.5]
  """
  state = _tree.find_state(opt_state, ScaleByAsgdState, "asgd_params", "use momentum.asgd or momentum.scale_by_asgd.")
  return state.ax
