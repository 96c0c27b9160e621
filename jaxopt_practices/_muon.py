"""Muon ≙ ``torch.optim.Muon``: momentum orthogonalized by a Newton–Schulz iteration, for matrices.

The public half lives in ``adaptive`` (``muon``, ``scale_by_muon``, ``ScaleByMuonState``,
``orthogonalize``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_practices import _base
from jaxopt_practices import _tree
from jaxopt_practices import _validate
from jaxopt_practices._adafactor import lerp

ScalarOrSchedule = _base.ScalarOrSchedule
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


def orthogonalize(x: jax.Array, ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315),
                  ns_steps: int = 5, eps: float = 1e-7, ns_dtype: Any = jnp.dtype(jnp.bfloat16)) -> jax.Array:
  r"""Newton–Schulz orthogonalization of a matrix, PyTorch's ``_zeropower_via_newtonschulz``.

  On :math:`X` (the matrix, transposed if it has more rows than columns) in ``ns_dtype``:

  .. math::
    X \leftarrow X / \max(\|X\|_F, \epsilon), \qquad
    A = X X^\top,\ B = bA + cA^2,\ X \leftarrow aX + BX \quad (\text{ns\_steps times})

  Each line is one rounding to ``ns_dtype`` after a float32 (float64 for float64) accumulation,
  as torch's ``addmm``. The result (in ``ns_dtype``, shaped like ``x``) is close to
  :math:`UV^\top` for :math:`x = USV^\top`, with singular values in about (0.5, 1.5).

  Args:
    x: a 2-D array, in torch's orientation (``(out, in)``); transpose a Flax kernel first.
    ns_coefficients: :math:`(a, b, c)`.
    ns_steps: iterations, an integer in [0, 99].
    eps: :math:`\epsilon \ge 0`.
    ns_dtype: the dtype of the iteration (torch: bfloat16).

  Returns:
    The orthogonalized matrix, shaped like ``x``, in ``ns_dtype``.

  Raises:
    ValueError: when ``x`` is not 2-D or an argument is out of range.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> o = adaptive.orthogonalize(jnp.diag(jnp.array([4.0, 1.0])), ns_dtype=jnp.float32)
    >>> print(jnp.diag(o).round(2))   # both singular values pushed towards 1
    [0.74 0.74]
  """
  if jnp.ndim(x) != 2:
    raise ValueError(f"x must be a 2-D matrix, got x of shape {jnp.shape(x)}.")
  ns_steps = _check_muon(0.0, False, ns_coefficients, eps, ns_steps, None, ns_dtype)
  a, b, c = ns_coefficients
  dtype = jnp.dtype(ns_dtype)
  acc = jnp.dtype(jnp.float64) if dtype == jnp.float64 else jnp.dtype(jnp.float32)
  tall = x.shape[0] > x.shape[1]
  x = (x.T if tall else x).astype(dtype)
  dot = lambda u, v: jnp.matmul(u, v, preferred_element_type=acc)
  norm = jnp.linalg.norm(x.astype(acc)).astype(dtype)
  x = x / jnp.maximum(norm, jnp.asarray(eps, dtype))

  def body(_, x):
    gram = dot(x, x.T).astype(dtype)
    update = (b * gram.astype(acc) + c * dot(gram, gram)).astype(dtype)
    return (a * x.astype(acc) + dot(update, x)).astype(dtype)

  x = jax.lax.fori_loop(0, ns_steps if isinstance(ns_steps, int) else jnp.asarray(ns_steps, jnp.int32), body, x)
  return x.T if tall else x


def _ratio(shape: tuple[int, ...], adjust_lr_fn: str | None) -> float:
  """torch's ``_adjust_lr`` ratio for a Flax kernel ``(in, out)``: torch's ``(A, B)`` is ``(out, in)``."""
  fan_in, fan_out = shape
  if adjust_lr_fn == "match_rms_adamw":
    return 0.2 * math.sqrt(max(fan_out, fan_in))
  return math.sqrt(max(1.0, fan_out / fan_in)) if fan_in else 1.0


def _check_matrices(tree: Any, owner: str) -> None:
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    if jnp.ndim(leaf) != 2:
      name = "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)  # as groups
      name = repr(name) if name else "(the root)"
      raise ValueError(
          f"{owner} takes only 2-D leaves (matrices), as torch.optim.Muon; leaf {name} has shape {jnp.shape(leaf)}. "
          "Give the other leaves (biases, norms, embeddings, convs) another optimizer: optax.multi_transform("
          "{'muon': adaptive.muon(...), 'adamw': adaptive.adamw(...)}, groups.labels([('.*kernel', 'muon')], "
          "default='adamw')). A flat.flatten buffer is 1-D: Muon needs the pytree.")
    if jnp.iscomplexobj(leaf):
      raise ValueError(f"{owner} does not support complex params (neither does torch.optim.Muon).")


def _check_muon(momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn, ns_dtype) -> Any:
  """Checks the arguments; returns ``ns_steps`` as an int (traced under ``inject_hyperparams``)."""
  _validate.check_number("momentum", momentum, low=0.0, high=1.0)
  _validate.check_bool("nesterov", nesterov)
  if not isinstance(ns_coefficients, (tuple, list)) or len(ns_coefficients) != 3:
    raise ValueError(f"ns_coefficients must be three numbers (a, b, c), got ns_coefficients = {ns_coefficients!r}.")
  for i, v in enumerate(ns_coefficients):
    _validate.check_number(f"ns_coefficients[{i}]", v)
  _validate.check_number("eps", eps, low=0.0)
  ns_steps = _validate.check_steps("ns_steps", ns_steps, low=0, high=99, allow_traced=True)
  _validate.check_choice("adjust_lr_fn", adjust_lr_fn, ADJUST_LR_FNS)
  try:
    floating = jnp.issubdtype(jnp.dtype(ns_dtype), jnp.floating)
  except TypeError:
    floating = False
  if not floating:
    raise ValueError(f"ns_dtype must be a floating dtype (jnp.bfloat16, jnp.float32, ...), "
                     f"got ns_dtype = {ns_dtype!r}.")
  return ns_steps


class ScaleByMuonState(NamedTuple):
  """Updates applied so far and the momentum buffer (float32 or wider; torch's ``momentum_buffer``).

  Attributes:
    count: int32 number of updates applied so far.
    momentum_buffer: the momentum buffer, shaped like the params (torch's ``momentum_buffer``),
      float32 or wider.
  """
  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count: see CONTRIBUTING
  momentum_buffer: optax.Updates


def scale_by_muon(
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315),
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    ns_dtype: Any = jnp.dtype(jnp.bfloat16),
) -> optax.GradientTransformation:
  r"""Muon's scaling as in ``torch.optim.Muon``, without the learning rate: 2-D leaves only.

  .. math::
    B_t = \mathrm{lerp}(B_{t-1}, g_t, 1 - \mu),\quad
    \tilde B_t = \mathrm{lerp}(g_t, B_t, \mu)\ \text{(nesterov) else}\ B_t,\quad
    u_t = r\,\big(\mathrm{NS}(\tilde B_t^\top)\big)^\top

  (torch's code: its buffer is an average, :math:`B_t = \mu B_{t-1} + (1-\mu) g_t`, not the sum
  of its docs' formula). **Layout:** a Flax kernel is ``(in, out)`` and torch's weight
  ``(out, in)``, so the kernel is transposed, orthogonalized by :func:`orthogonalize` as torch
  does (same orientation, same rounding) and transposed back, and the ratio :math:`r` is
  torch's ``adjust_lr`` for the ``(out, in)`` weight: ``None`` / ``"original"``
  :math:`\sqrt{\max(1, \text{out}/\text{in})}`, ``"match_rms_adamw"``
  :math:`0.2\sqrt{\max(\text{out}, \text{in})}`. A leaf that is not 2-D (or complex) raises
  ``ValueError``: route it elsewhere with ``groups.labels`` + ``optax.multi_transform``.

  Args:
    momentum: :math:`\mu \in [0, 1]`.
    nesterov: Nesterov momentum.
    ns_coefficients: :math:`(a, b, c)` of the Newton–Schulz polynomial.
    eps: :math:`\epsilon \ge 0` in the normalization.
    ns_steps: Newton–Schulz iterations, an integer in [0, 99].
    adjust_lr_fn: ``None`` (= ``"original"``) or ``"match_rms_adamw"``.
    ns_dtype: dtype of the Newton–Schulz iteration (bfloat16 as torch; ``jnp.float32`` or
      ``jnp.float64`` for a more exact one). Under ``optax.inject_hyperparams`` give its name
      (``"float32"``): a dtype class such as ``jnp.float32`` is callable and would be taken for
      a schedule.

  Returns:
    An ``optax.GradientTransformation``; state :class:`ScaleByMuonState`.

  Raises:
    ValueError: for a bad argument (at construction), and at ``init`` / ``update`` for a leaf
      that is not 2-D or is complex, naming it.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.scale_by_muon(ns_dtype=jnp.float32, ns_steps=20)
    >>> g = jnp.array([[3.0, 0.0], [0.0, 0.5]])
    >>> u, _ = tx.update(g, tx.init(g))
    >>> print(jnp.abs(u).max() < 1.5, jnp.abs(u[0, 1]) < 1e-6)
    True True

  References:
    Jordan et al, Muon: An optimizer for hidden layers in neural networks, 2024;
    Liu et al, Muon is Scalable for LLM Training, 2025.
  """
  ns_steps = _check_muon(momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn, ns_dtype)

  def init_fn(params):
    _check_matrices(params, "adaptive.scale_by_muon")
    return ScaleByMuonState(count=jnp.zeros([], jnp.int32), momentum_buffer=_tree.zeros_acc(params))

  def update_fn(updates, state, params=None):
    _validate.check_state("adaptive.scale_by_muon", state, ScaleByMuonState)
    _check_matrices(updates, "adaptive.scale_by_muon")
    del params
    keep = _tree.per_dtype(lambda dt: (jnp.asarray(momentum, dt), jnp.asarray(1.0 - momentum, dt)))

    def one(g, buf):
      mu, take = keep(buf.dtype)
      g = g.astype(buf.dtype)
      buf = lerp(buf, g, take)
      direction = lerp(g, buf, mu) if nesterov else buf
      o = orthogonalize(direction.T, ns_coefficients, ns_steps, eps, ns_dtype).T
      return o.astype(buf.dtype) * _ratio(g.shape, adjust_lr_fn), buf

    out = jax.tree.map(one, updates, state.momentum_buffer)
    u = _tree.cast_like(jax.tree.map(lambda _, pair: pair[0], updates, out), updates)
    momentum_buffer = jax.tree.map(lambda _, pair: pair[1], updates, out)
    return u, ScaleByMuonState(count=_tree.increment(state.count), momentum_buffer=momentum_buffer)

  return optax.GradientTransformation(init_fn, update_fn)


def muon(learning_rate: ScalarOrSchedule = 1e-3, weight_decay: ScalarOrSchedule | None = 0.1, momentum: float = 0.95,
         nesterov: bool = True, ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315),
         eps: float = 1e-7, ns_steps: int = 5, adjust_lr_fn: str | None = None,
         ns_dtype: Any = jnp.dtype(jnp.bfloat16),
) -> optax.GradientTransformation:
  r"""Muon ≙ ``torch.optim.Muon``, for 2-D leaves (Flax ``(in, out)`` kernels).

  .. math:: \theta_t = \theta_{t-1}(1 - \eta_t\lambda) - \eta_t\, u_t

  with :math:`u_t` from :func:`scale_by_muon` (the lr adjustment included). It is this chain of
  public pieces::

    optax.chain(adaptive.scale_by_muon(momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn, ns_dtype),
                schedules.scale_by_learning_rate(learning_rate),
                regularization.decoupled_weight_decay(weight_decay, None, learning_rate=learning_rate))

  Every leaf must be a matrix: train the rest with another optimizer, as torch's docs do::

    optax.multi_transform({"muon": adaptive.muon(0.02), "adamw": adaptive.adamw(3e-4)},
                          groups.labels([(".*kernel", "muon")], default="adamw"))

  (a Dense kernel is 2-D; a Conv kernel is not). ``optax.contrib.muon`` differs: it falls
  back to Adam for non-2-D leaves, uses another lr adjustment and runs Newton–Schulz in the
  gradient's dtype.

  Args:
    learning_rate: :math:`\eta \ge 0`, a float or a schedule.
    weight_decay: :math:`\lambda \ge 0`, decoupled, following the lr (torch's), a float or a schedule;
      ``None`` adds no decay step.
    momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn, ns_dtype: see :func:`scale_by_muon`.

  Returns:
    An ``optax.GradientTransformation`` (needs ``params``).

  Raises:
    ValueError: as :func:`scale_by_muon`, and for a bad ``learning_rate`` / ``weight_decay``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import adaptive
    >>> tx = adaptive.muon(0.1, weight_decay=0.0, ns_dtype=jnp.float32)
    >>> p = jnp.zeros((2, 2))
    >>> u, _ = tx.update(jnp.eye(2), tx.init(p), p)
    >>> print(u.round(2))
    [[-0.11  0.  ]
     [ 0.   -0.11]]

  References:
    Jordan et al, Muon: An optimizer for hidden layers in neural networks, 2024.
  """
  _validate.check_weight_decay(weight_decay)
  decay = [] if weight_decay is None else [
      _base.decoupled_weight_decay(weight_decay, None, learning_rate=learning_rate)]
  return optax.chain(scale_by_muon(momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn, ns_dtype),
                     _base.scale_by_learning_rate(learning_rate), *decay)
