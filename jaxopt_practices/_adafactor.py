"""Adafactor ≙ ``torch.optim.Adafactor`` (PyTorch's algorithm, not ``optax.adafactor``'s).

The public half lives in ``adaptive`` (``adafactor``, ``scale_by_adafactor``,
``ScaleByAdafactorState``).
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


def lerp(a: jax.Array, b: jax.Array, w: Any) -> jax.Array:
  """PyTorch's ``a.lerp(b, w)``, with its two formulas (exact at ``w = 0`` and ``w = 1``)."""
  return jnp.where(w < 0.5, a + w * (b - a), b - (b - a) * (1.0 - w))


def _rms(x: jax.Array) -> jax.Array:
  return jnp.linalg.norm(x.ravel()) / jnp.sqrt(jnp.asarray(x.size, x.dtype))


def _check_eps(eps: Any) -> tuple[float | None, float]:
  if not isinstance(eps, (tuple, list)) or len(eps) != 2:
    raise ValueError(f"eps must be a pair (eps1, eps2) with eps1 None or >= 0 and eps2 >= 0, got eps = {eps!r}.")
  if eps[0] is not None:
    _validate.check_number("eps[0]", eps[0], low=0.0)
  _validate.check_number("eps[1]", eps[1], low=0.0)
  return eps[0], eps[1]


class ScaleByAdafactorState(NamedTuple):
  """Updates applied so far and the factored second moment, per param leaf.

  Each moment field is a tuple with one entry per param leaf, in ``jax.tree.leaves`` order (not
  shaped like the params, so ``optax.tree.map_params`` leaves them alone); a leaf's unused
  fields hold a 0-d zero (float32 or wider).

  Attributes:
    count: int32 number of updates applied so far (torch's ``step`` minus one).
    row_var: per leaf with ``ndim >= 2``, the row means of :math:`g^2`, ``(..., n, 1)``.
    col_var: per leaf with ``ndim >= 2``, the column means of :math:`g^2`, ``(..., 1, m)``.
    variance: per other leaf, the full second moment.
  """
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count: see CONTRIBUTING
  row_var: tuple
  col_var: tuple
  variance: tuple


def scale_by_adafactor(beta2_decay: float = -0.8, eps: tuple[float | None, float] = (None, 1e-3),
                       d: float = 1.0) -> optax.GradientTransformation:
  r"""Adafactor's scaling as in ``torch.optim.Adafactor``, without the relative step size.

  At step :math:`t` (from 1), with :math:`\beta_t = t^{\text{beta2\_decay}}` and, for a leaf
  with ``ndim >= 2``, rows over the last axis and columns over the one before:

  .. math::
    R_t = \mathrm{lerp}(R_{t-1}, \overline{g^2}^{\,\text{row}}, \beta_t),\quad
    C_t = \mathrm{lerp}(C_{t-1}, \overline{g^2}^{\,\text{col}}, \beta_t),\quad
    \hat v_t = \frac{R_t C_t}{\max(\overline{R_t}, \epsilon_1)}

    \hat u_t = \frac{g_t}{\sqrt{\max(\hat v_t, \epsilon_1^2)}},\quad
    u_t = \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\,\frac{\hat u_t}{\max(1, \mathrm{RMS}(\hat u_t)/d)}

  and :math:`\hat v_t = v_t = \mathrm{lerp}(v_{t-1}, g_t^2, \beta_t)` unfactored for other
  leaves. :math:`\epsilon_1` = ``eps[0]``, ``None`` meaning the param dtype's machine epsilon
  (as torch). Multiply by :math:`-\min(\text{lr}, 1/\sqrt t)` afterwards (:func:`adafactor`).
  Kernels are factored over their last two axes: for a Flax Dense kernel ``(in, out)`` that is
  torch's factoring of the ``(out, in)`` weight with rows and columns swapped. Complex leaves
  raise, as in torch. On a ``flat`` buffer (one 1-D leaf) Adafactor is unfactored and its RMS
  scale and clipping are taken over the whole buffer: a different optimizer than per-tensor
  Adafactor, so use it on the pytree.

  Args:
    beta2_decay: decay rate :math:`\le 0` of :math:`1 - \beta_2`.
    eps: :math:`(\epsilon_1, \epsilon_2)`: :math:`\epsilon_1 \ge 0` or ``None``, :math:`\epsilon_2 \ge 0`.
    d: clipping threshold :math:`d \ge 1` of the update's RMS.

  Returns:
    An ``optax.GradientTransformation`` that needs ``params``; state :class:`ScaleByAdafactorState`.

  Raises:
    ValueError: for a bad argument (at construction); at ``update`` for complex params.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.scale_by_adafactor()
    >>> p = jnp.full(4, 2.0)
    >>> u, _ = tx.update(jnp.array([3.0, -3.0, 1.0, 1.0]), tx.init(p), p)   # RMS(p) * sign(g)
    >>> print(u)
    [ 2. -2.  2.  2.]

  References:
    Shazeer & Stern, Adafactor: Adaptive Learning Rates with Sublinear Memory Cost, 2018.
  """
  _validate.check_number("beta2_decay", beta2_decay, high=0.0)
  eps1, eps2 = _check_eps(eps)
  _validate.check_number("d", d, low=1.0)

  def init_fn(params):
    def parts(x):
      shape, dtype = jnp.shape(x), _tree.acc_dtype(jnp.result_type(x))
      zero = jnp.zeros([], dtype)
      if len(shape) < 2:
        return zero, zero, jnp.zeros(shape, dtype)
      return jnp.zeros(shape[:-1] + (1,), dtype), jnp.zeros(shape[:-2] + (1, shape[-1]), dtype), zero

    rows, cols, var = (tuple(parts(x)[i] for x in jax.tree.leaves(params)) for i in range(3))
    return ScaleByAdafactorState(count=jnp.zeros([], jnp.int32), row_var=rows, col_var=cols, variance=var)

  def update_fn(updates, state, params=None):
    _validate.check_state("adaptive.scale_by_adafactor", state, ScaleByAdafactorState)
    _validate.need_params("scale_by_adafactor", params)

    def one(g, p, r, c, v):
      if jnp.iscomplexobj(g) or jnp.iscomplexobj(p):
        raise ValueError("adaptive.adafactor does not support complex params (neither does torch.optim.Adafactor).")
      acc = _tree.acc_dtype(jnp.result_type(g))
      if jnp.size(g) == 0:
        return jnp.zeros_like(g), r, c, v
      beta = (state.count.astype(acc) + 1.0) ** jnp.asarray(beta2_decay, acc)
      e1 = float(jnp.finfo(jnp.result_type(p)).eps) if eps1 is None else eps1
      g32 = jnp.asarray(g).astype(acc)
      if jnp.ndim(g) >= 2:
        r = lerp(r, jnp.mean(jnp.square(g32), axis=-1, keepdims=True), beta)
        c = lerp(c, jnp.mean(jnp.square(g32), axis=-2, keepdims=True), beta)
        var = r * c / jnp.maximum(jnp.mean(r, axis=-2, keepdims=True), e1)
      else:
        v = var = lerp(v, jnp.square(g32), beta)
      u = jax.lax.rsqrt(jnp.maximum(var, jnp.asarray(e1, acc) ** 2)) * g32
      denom = jnp.maximum(1.0, _rms(u) / jnp.asarray(d, acc))
      scale = jnp.maximum(jnp.asarray(eps2, acc), _rms(jnp.asarray(p).astype(acc)))
      return (u * (scale / denom)).astype(jnp.result_type(g)), r, c, v

    leaves, treedef = jax.tree.flatten(updates)
    out = [one(*xs) for xs in zip(leaves, _tree.flatten_up_to(updates, params), state.row_var, state.col_var,
                                  state.variance, strict=True)]
    u = jax.tree.unflatten(treedef, [x[0] for x in out])
    r, c, v = (tuple(x[i] for x in out) for i in (1, 2, 3))
    return u, ScaleByAdafactorState(count=_tree.increment(state.count), row_var=r, col_var=c, variance=v)

  return optax.GradientTransformation(init_fn, update_fn)


def _relative_step(learning_rate: ScalarOrSchedule) -> optax.Schedule:
  """:math:`\\rho_t = \\min(\\text{lr}_t, 1/\\sqrt{t})`, ``t = count + 1`` (torch's ``rho_t``)."""
  def schedule(count):
    dt = jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32
    t = jnp.asarray(count).astype(dt) + 1.0
    return jnp.minimum(_tree.as_scalar(learning_rate, count, dt), jax.lax.rsqrt(t))

  return schedule


def adafactor(
    learning_rate: ScalarOrSchedule = 1e-2,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: ScalarOrSchedule | None = 0.0,
) -> optax.GradientTransformation:
  r"""Adafactor ≙ ``torch.optim.Adafactor`` (PyTorch's variant, with its defaults).

  .. math::
    \theta_t = \theta_{t-1}(1 - \text{lr}\,\lambda) - \min(\text{lr}, 1/\sqrt t)\, u_t

  with :math:`u_t` from :func:`scale_by_adafactor` (computed from :math:`\theta_{t-1}`). It is
  this chain of public pieces (``rho`` is the schedule :math:`\min(\text{lr}_t, 1/\sqrt{t})`)::

    optax.chain(adaptive.scale_by_adafactor(beta2_decay, eps, d), schedules.scale_by_learning_rate(rho),
                regularization.decoupled_weight_decay(weight_decay, None, learning_rate=learning_rate))

  so ``monitor.stats`` reports :math:`\min(\text{lr}, 1/\sqrt t)`. Differs from
  ``optax.adafactor``, another algorithm: optax factors only when both trailing axes are
  at least 128, has momentum and a decay rate of its own, multiplies the lr by the param
  scale differently and clips before the lr; this is torch's. No complex params (as torch).

  Args:
    learning_rate: :math:`\text{lr} \ge 0`, a float or a schedule.
    beta2_decay: :math:`\le 0`.
    eps: :math:`(\epsilon_1, \epsilon_2)`, :math:`\epsilon_1` ``None`` (the dtype's epsilon) or ``>= 0``.
    d: clipping threshold ``>= 1``.
    weight_decay: :math:`\lambda \ge 0`, decoupled, following the lr (torch's), a float or a schedule;
      ``None`` adds no decay step.

  Returns:
    An ``optax.GradientTransformation`` (needs ``params``).

  Raises:
    ValueError: as :func:`scale_by_adafactor`, and for a bad ``learning_rate`` / ``weight_decay``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.adafactor(0.1)
    >>> p = jnp.full(4, 2.0)
    >>> u, _ = tx.update(jnp.array([3.0, -3.0, 1.0, 1.0]), tx.init(p), p)
    >>> print(u)
    [-0.2  0.2 -0.2 -0.2]

  References:
    Shazeer & Stern, Adafactor: Adaptive Learning Rates with Sublinear Memory Cost, 2018.
  """
  _validate.check_number("learning_rate", learning_rate, low=0.0, allow_schedule=True)
  _validate.check_weight_decay(weight_decay)
  decay = [] if weight_decay is None else [
      _base.decoupled_weight_decay(weight_decay, None, learning_rate=learning_rate)]
  return optax.chain(scale_by_adafactor(beta2_decay, eps, d),
                     _base.scale_by_learning_rate(_relative_step(learning_rate)), *decay)
