"""Layer-sequential unit-variance initialization (Mishkin & Matas 2016), linen and NNX."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxopt_practices import _fans
from jaxopt_practices import _layers
from jaxopt_practices import _validate


@dataclasses.dataclass(frozen=True)
class LayerScaling:
  """What LSUV did to one layer.

  Attributes:
    name: the layer's module path, e.g. ``"Block_0/Dense_1"`` or ``"layers/3"``.
    std_before: the std of the layer's output over the batch with the parameters LSUV
      was given (after the optional orthogonal pre-initialization).
    std_after: the same std with the returned parameters.
    scale: the total factor applied to the kernel (and bias).
    iterations: how many rescalings were made.
    status: ``"ok"`` (within ``tol``), ``"dead"`` (output std 0 or not finite: left
      as it was) or ``"not converged"`` (``max_iters`` reached).
  """
  name: str
  std_before: float
  std_after: float
  scale: float
  iterations: int
  status: str


@dataclasses.dataclass(frozen=True)
class LSUVReport(_layers.LayerRecords):
  """Per-layer record of an LSUV run, in forward order; ``str(report)`` is a table.

  A sequence of :class:`LayerScaling` (``report[i]``, ``len(report)``, ``for r in report``).

  Attributes:
    layers: one :class:`LayerScaling` per layer LSUV rescaled, in forward order.
    target_std: the output std LSUV aimed at (its ``target_std`` argument).
    tol: the tolerance it accepted (its ``tol`` argument); ``converged`` reads both.

  Example:
    >>> import jax
    >>> from flax import nnx
    >>> from jaxopt_practices import initializers
    >>> model = nnx.Sequential(nnx.Linear(8, 32, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(32, 4, rngs=nnx.Rngs(1)))
    >>> _, report = initializers.lsuv(None, model, jax.random.normal(jax.random.key(0), (128, 8)), tol=0.01)
    >>> report.converged, [r.name for r in report], abs(report[-1].std_after - 1.0) <= 0.01
    (True, ['layers/0', 'layers/2'], True)
    >>> print(str(report).splitlines()[0])
    LSUV: target std 1, tol 0.01, 2 layers
  """
  layers: tuple[LayerScaling, ...]
  target_std: float
  tol: float

  @property
  def converged(self) -> bool:
    """Whether every layer ended within ``tol`` of ``target_std``."""
    return all(r.status == "ok" for r in self.layers)

  def __str__(self) -> str:
    width = _layers.name_width(self)
    lines = [
        f"LSUV: target std {self.target_std:g}, tol {self.tol:g}, {len(self.layers)} layers",
        f"{'layer':<{width}}  {'std before':>11}  {'std after':>10}  {'scale':>10}  {'iters':>5}  status",
    ]
    for r in self.layers:
      lines.append(
          f"{r.name:<{width}}  {r.std_before:>11.4g}  {r.std_after:>10.4g}  {r.scale:>10.4g}  "
          f"{r.iterations:>5d}  {r.status}"
      )
    return "\n".join(lines)


def _check_args(target_std, tol, max_iters, orthogonal_init, key) -> int:
  """The argument checks of :func:`lsuv`; returns ``max_iters`` as an int."""
  _validate.check_number("target_std", target_std, low=0.0, low_open=True)
  _validate.check_number("tol", tol, low=0.0, low_open=True)
  max_iters = _validate.check_steps("max_iters", max_iters, low=1)
  _validate.check_bool("orthogonal_init", orthogonal_init)
  if orthogonal_init and key is None:
    raise ValueError("key must be a jax.random key when orthogonal_init=True, got key = None.")
  is_key = isinstance(key, jax.Array) and (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
                                           or (key.dtype == jnp.uint32 and key.shape == (2,)))
  if key is not None and not is_key:
    raise ValueError(f"key must be a jax.random key (e.g. jax.random.key(0)) or None, got key = {key!r}.")
  return max_iters


class _LinenLayers:
  """The kernel layers of a linen model, read and written in a mutable params dict."""

  def __init__(self, apply_fn, params, batch):
    self.params, self.frozen = _layers.unfreeze(params)
    self.batch = batch
    self.probe_fn, meta_fn = _layers.linen_probe(apply_fn)
    self.meta = meta_fn(self.params, batch)

  def probe(self):
    stats = self.probe_fn(self.params, self.batch)
    self.names = [_layers.path_name(c.path) for c in self.meta]
    for c in self.meta:
      _layers.node(self.params, c.path, "kernel")
    return np.asarray([s["std"] for s in stats], np.float64) if stats else np.zeros(0)

  def get(self, i):
    n = _layers.node(self.params, self.meta[i].path, "kernel")
    return n["kernel"], n.get("bias")

  def set(self, i, kernel, bias):
    n = _layers.node(self.params, self.meta[i].path, "kernel")
    n["kernel"] = kernel
    if bias is not None:
      n["bias"] = bias

  def result(self):
    return _layers.refreeze(self.params, self.frozen)


class _NNXLayers:
  """The kernel layers of an NNX model, updated in place."""

  def __init__(self, model, batch, forward):
    self.model, self.batch, self.forward = model, batch, forward

  def probe(self):
    calls, stats = _layers.nnx_probe(self.model, self.batch, _layers.nnx_has_kernel, self.forward)
    self.modules = [c.module for c in calls]
    self.names = [_layers.path_name(c.path) for c in calls]
    return np.asarray([s["std"] for s in stats], np.float64) if stats else np.zeros(0)

  def get(self, i):
    m = self.modules[i]
    bias = getattr(m, "bias", None)
    return m.kernel.get_value(), (bias.get_value() if isinstance(bias, nnx.Param) else None)

  def set(self, i, kernel, bias):
    m = self.modules[i]
    m.kernel.set_value(kernel)
    if bias is not None:
      m.bias.set_value(bias)


def _finite(x) -> bool:
  return x is None or bool(jnp.all(jnp.isfinite(x.astype(jnp.float32))))


def _orthogonalize(layers, key) -> None:
  """Replaces every kernel by an orthogonal one (gain 1), one key per layer; biases are kept."""
  for i, k in enumerate(jax.random.split(key, len(layers.names))):
    kernel, bias = layers.get(i)
    layers.set(i, _fans.orthogonal_kernel(k, kernel.shape, kernel.dtype, 1.0), bias)


def _fit_layer(layers, i: int, stds: np.ndarray, target: float, tol: float, max_iters: int):
  """Rescales layer ``i`` until its output std is within ``tol`` of ``target``.

  Returns ``(stds, std, scale, iterations, status)``: the stds of every layer after the
  last probe, layer ``i``'s last std, the total factor applied, the number of rescalings
  and ``"ok"``, ``"dead"`` or ``"not converged"``.
  """
  iters, total = 0, 1.0
  while True:
    s = float(stds[i])
    if not np.isfinite(s) or s == 0.0:
      return stds, s, total, iters, "dead"
    if abs(s - target) <= tol:
      return stds, s, total, iters, "ok"
    if iters >= max_iters:
      return stds, s, total, iters, "not converged"
    factor = target / s
    kernel, bias = layers.get(i)
    kernel, bias = _layers.scaled(kernel, factor), (None if bias is None else _layers.scaled(bias, factor))
    if not (_finite(kernel) and _finite(bias)):
      return stds, s, total, iters, "dead"
    layers.set(i, kernel, bias)
    total *= factor
    iters += 1
    stds = layers.probe()


def _warn(what: str, name: str, s: float, status: str, target: float, tol: float, max_iters: int) -> None:
  """The PracticeWarning for a dead or not converged layer, pointing at the caller of lsuv / lsuv_nnx."""
  if status == "dead":
    message = (f"{what}: layer {name} has output std {s:g} over the batch (a dead layer or dead input); "
               "it was left unchanged.")
  else:
    message = (f"{what}: layer {name} output std {s:g} is still not within tol={tol:g} of target_std={target:g} "
               f"after max_iters={max_iters} rescalings.")
  warnings.warn(message, _validate.PracticeWarning, stacklevel=4)  # _warn < _run < lsuv(_nnx) < caller


def _run(layers, target_std, tol, max_iters, orthogonal_init, key, what) -> LSUVReport:
  """LSUV over ``layers`` (``_LinenLayers`` or ``_NNXLayers``): every layer in forward order."""
  stds = layers.probe()
  if not layers.names:
    if isinstance(layers, _NNXLayers):
      raise ValueError(f"{what}: {_layers.NO_NNX_LAYER}")
    raise ValueError(
        f"{what} found no layer with a 'kernel' parameter (Dense, Conv, ...) in the forward pass. "
        "For linen, apply_fn must run model.apply un-jitted (lsuv compiles it itself)."
    )
  if orthogonal_init:
    _orthogonalize(layers, key)
    stds = layers.probe()
  before = stds.copy()
  target, tol = float(target_std), float(tol)
  done = []
  for i, name in enumerate(layers.names):
    stds, s, total, iters, status = _fit_layer(layers, i, stds, target, tol, max_iters)
    if status != "ok":
      _warn(what, name, s, status, target, tol, max_iters)
    done.append((name, float(before[i]), total, iters, status))
  records = tuple(
      LayerScaling(name, b, float(stds[i]), t, it, st) for i, (name, b, t, it, st) in enumerate(done)
  )
  return LSUVReport(records, target, tol)


def lsuv(
    apply_fn: Callable[[Any, Any], Any] | None,
    params: Any,
    batch: Any,
    *,
    target_std: float = 1.0,
    tol: float = 0.1,
    max_iters: int = 10,
    orthogonal_init: bool = False,
    key: jax.Array | None = None,
) -> tuple[Any, LSUVReport]:
  r"""Layer-sequential unit-variance (LSUV) initialization of a Flax linen or NNX model.

  Every layer with a ``kernel`` (Dense, Conv, ... at any nesting depth, found by
  intercepting the forward pass, never from a list of names) is visited in forward order;
  while its output's standard deviation :math:`s` over the batch (all elements) is farther
  than ``tol`` from ``target_std``, its kernel *and bias* are multiplied by ``target_std / s``:

  .. math::
    W \leftarrow W \cdot \frac{\sigma^\ast}{s}, \quad b \leftarrow b \cdot \frac{\sigma^\ast}{s}
    \quad\text{until}\quad |s - \sigma^\ast| \le \text{tol}.

  Scaling the bias along with the kernel scales the layer's output exactly, so one
  rescaling usually suffices (the paper's networks had zero biases). A layer whose
  output std is 0 or not finite (dead) is left unchanged with a ``PracticeWarning``; so
  is one that misses ``tol`` after ``max_iters`` rescalings.

  Flax NNX (the package's convention: the model goes where the params go, and the function
  that runs it receives the model): ``model, report = lsuv(forward, model, batch)`` with
  ``forward(model, batch)`` (``None``: ``model(batch)``), e.g.
  ``lambda m, x: nnx.view(m, deterministic=True)(x)`` for a model with Dropout. The layers are
  the submodules with a ``kernel`` ``nnx.Param``, ordered by their calls; a ``forward`` that
  runs a view or copy sharing the model's Variables (``nnx.view``) is followed to them. The
  model is updated in place (and returned); its batch statistics and RNG counters are
  restored after the forward passes.

  Args:
    apply_fn: linen: ``apply_fn(params, batch)`` runs the model, e.g.
      ``lambda p, x: model.apply({"params": p}, x)``. Not jitted: ``lsuv`` jits it
      with its interceptor (a jitted function would hide the layer calls). NNX:
      ``forward(model, batch)`` or ``None``.
    params: the ``"params"`` collection (a dict or FrozenDict; the same type is returned),
      or an ``nnx.Module``.
    batch: a representative input batch (any pytree ``apply_fn`` accepts).
    target_std: the wanted output std, :math:`> 0`.
    tol: the absolute tolerance on the std, :math:`> 0`.
    max_iters: the most rescalings per layer, :math:`\ge 1`.
    orthogonal_init: first replace every kernel by :func:`orthogonal` (gain 1), as
      the paper does (biases are kept). Off by default: the given init's directions
      are kept and only rescaled.
    key: a ``jax.random`` key, needed when ``orthogonal_init`` is True.

  Returns:
    ``(params, report)``: the new params (NNX: the same model, updated in place) and an
    :class:`LSUVReport` (std before/after, scale, iterations and status per layer;
    ``print(report)`` shows a table).

  Raises:
    ValueError: for a bad argument (naming it), or when the forward pass calls no layer
      with a kernel.

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> from jaxopt_practices import initializers
    >>> model = nn.Sequential([nn.Dense(32), nn.relu, nn.Dense(32), nn.relu, nn.Dense(4)])
    >>> x = jax.random.normal(jax.random.key(0), (128, 8))
    >>> params = model.init(jax.random.key(1), x)["params"]
    >>> params, report = initializers.lsuv(lambda p, x: model.apply({"params": p}, x), params, x)
    >>> [r.status for r in report]
    ['ok', 'ok', 'ok']

    The same on an NNX model with Dropout, run in its evaluation view:

    >>> from flax import nnx
    >>> rngs = nnx.Rngs(0)
    >>> net = nnx.Sequential(nnx.Linear(8, 32, rngs=rngs), nnx.relu, nnx.Dropout(0.5, rngs=rngs),
    ...                      nnx.Linear(32, 4, rngs=rngs))
    >>> net, report = initializers.lsuv(lambda m, x: nnx.view(m, deterministic=True)(x), net, x)
    >>> report.converged, [r.name for r in report]
    (True, ['layers/0', 'layers/3'])

  References:
    Mishkin & Matas, All you need is a good init, 2016.
  """
  if isinstance(apply_fn, nnx.Module):
    raise ValueError("lsuv takes an NNX model where the params go: write model, report = lsuv(None, model, batch) "
                     "(or a forward(model, batch) first), not lsuv(model, ...).")
  if isinstance(params, nnx.Module):
    _layers.check_nnx(params, apply_fn, "apply_fn")
    max_iters = _check_args(target_std, tol, max_iters, orthogonal_init, key)
    with _layers.nnx_state_kept(params):
      report = _run(_NNXLayers(params, batch, apply_fn), target_std, tol, max_iters, orthogonal_init, key, "lsuv")
    return params, report
  _layers.check_apply_fn(apply_fn)
  max_iters = _check_args(target_std, tol, max_iters, orthogonal_init, key)
  layers = _LinenLayers(apply_fn, params, batch)
  report = _run(layers, target_std, tol, max_iters, orthogonal_init, key, "lsuv")
  return layers.result(), report


def lsuv_nnx(
    model: nnx.Module,
    batch: Any,
    *,
    target_std: float = 1.0,
    tol: float = 0.1,
    max_iters: int = 10,
    orthogonal_init: bool = False,
    key: jax.Array | None = None,
    forward: Callable[[nnx.Module, Any], Any] | None = None,
) -> LSUVReport:
  """Deprecated (v0.3): ``lsuv(forward, model, batch, ...)[1]``, the package's one NNX spelling.

  Warns with a ``DeprecationWarning``; kept for one release because API v0.1 named it.

  Args:
    model: the NNX module, updated in place.
    batch: a representative input batch.
    target_std, tol, max_iters, orthogonal_init, key: as in :func:`lsuv`.
    forward: ``forward(model, batch)`` to run the model (default ``model(batch)``).

  Returns:
    The :class:`LSUVReport` (the model is updated in place).

  Raises:
    ValueError: as :func:`lsuv`.

  Example:
    >>> import jax, warnings
    >>> from flax import nnx
    >>> from jaxopt_practices import initializers
    >>> model = nnx.Sequential(nnx.Linear(8, 32, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(32, 4, rngs=nnx.Rngs(1)))
    >>> with warnings.catch_warnings(record=True) as caught:
    ...   warnings.simplefilter("always")
    ...   report = initializers.lsuv_nnx(model, jax.random.normal(jax.random.key(0), (128, 8)))
    >>> report.converged, caught[0].category.__name__
    (True, 'DeprecationWarning')
  """
  _layers.check_nnx(model, forward)  # bad arguments are ValueErrors first, as in lsuv
  max_iters = _check_args(target_std, tol, max_iters, orthogonal_init, key)
  _layers.deprecated("lsuv_nnx(model, batch, forward=f)", "lsuv(f, model, batch)[1]")
  return lsuv(forward, model, batch, target_std=target_std, tol=tol, max_iters=max_iters,
              orthogonal_init=orthogonal_init, key=key)[1]
