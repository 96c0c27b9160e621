"""Per-layer activation statistics of an initialized model (practice 3 diagnostics)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from flax import nnx

from jaxopt_practices import _layers


@dataclasses.dataclass(frozen=True)
class LayerStats:
  """Statistics of one layer's output over a batch.

  Attributes:
    name: the layer's module path.
    shape: the output's shape.
    mean: the mean over every element.
    std: the standard deviation over every element.
    dead_fraction: the fraction of output units (last axis) that are ``<= 0`` for every
      example and position of the batch, i.e. that a following ReLU silences for the
      whole batch ("dead units").
  """
  name: str
  shape: tuple[int, ...]
  mean: float
  std: float
  dead_fraction: float


@dataclasses.dataclass(frozen=True)
class InitReport(_layers.LayerRecords):
  """Per-layer statistics in forward order; ``str()`` is a table, :meth:`plot` a figure.

  It reads as a sequence of :class:`LayerStats`: ``report[i]``, ``len(report)``, iteration.

  Attributes:
    layers: one :class:`LayerStats` per kernel layer the forward pass ran, in forward order.

  Example:
    >>> import jax
    >>> from flax import nnx
    >>> from jaxopt_practices import initializers
    >>> model = nnx.Sequential(nnx.Linear(8, 16, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(16, 4, rngs=nnx.Rngs(1)))
    >>> report = initializers.init_report(None, model, jax.random.normal(jax.random.key(0), (64, 8)))
    >>> [r.name for r in report], len(report.stds)
    (['layers/0', 'layers/2'], 2)
    >>> print(str(report).splitlines()[0])
    depth  layer           mean         std    dead
  """
  layers: tuple[LayerStats, ...]

  @property
  def stds(self) -> list[float]:
    """The output std of every layer, in forward order."""
    return [r.std for r in self.layers]

  def __str__(self) -> str:
    width = _layers.name_width(self)
    lines = [f"{'depth':>5}  {'layer':<{width}}  {'mean':>10}  {'std':>10}  {'dead':>6}"]
    for i, r in enumerate(self.layers):
      lines.append(f"{i:>5d}  {r.name:<{width}}  {r.mean:>10.4g}  {r.std:>10.4g}  {r.dead_fraction:>6.1%}")
    return "\n".join(lines)

  def plot(self, ax=None, label: str | None = None, log: bool = True):
    """Plots the output std through depth; returns the matplotlib figure.

    Args:
      ax: an existing axis to draw on (e.g. to compare several inits); a new figure otherwise.
      label: the legend label of the curve.
      log: use a logarithmic std axis (vanishing / exploding signals are geometric).
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415 - optional, imported on use

    if ax is None:
      _, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(len(self.layers)), self.stds, marker="o", markersize=3, label=label)
    if log:
      ax.set_yscale("log")
    ax.set_xlabel("layer (forward order)")
    ax.set_ylabel("output std over the batch")
    if label is not None:
      ax.legend()
    return ax.figure


def report_from(calls: list, stats: list) -> InitReport:
  """The :class:`InitReport` of recorded layer calls and their ``_layers.layer_stats``."""
  return InitReport(
      tuple(
          LayerStats(
              _layers.path_name(c.path), tuple(c.output.shape), float(s["mean"]), float(s["std"]), float(s["dead"])
          )
          for c, s in zip(calls, stats)
      )
  )


def init_report(apply_fn: Callable[[Any, Any], Any] | None, params: Any, batch: Any = None, *,
                forward: Callable[[nnx.Module, Any], Any] | None = None) -> InitReport:
  """Per-layer output mean, std and dead-unit fraction of a linen or NNX model over a batch.

  The layers are those with a ``kernel`` (Dense, Conv, ...), found by intercepting the
  forward pass, in forward order; the statistics are of their outputs (the
  pre-activations), in float32. Flax NNX, as everywhere in the package: the model goes where
  the params go and the function receives it, ``init_report(forward, model, batch)`` with
  ``forward(model, batch)`` (``None``: ``model(batch)``), e.g.
  ``lambda m, x: nnx.view(m, deterministic=True)(x)``; the model's batch statistics and RNG
  counters are restored afterwards. The model-first form ``init_report(model, batch,
  forward=f)`` is deprecated (``DeprecationWarning``).

  Args:
    apply_fn: linen: ``apply_fn(params, batch)``, e.g. ``lambda p, x: model.apply({"params": p}, x)``,
      not jitted. NNX: ``forward(model, batch)`` or ``None``.
    params: the ``"params"`` collection, or an ``nnx.Module``.
    batch: an input batch.
    forward: only in the deprecated form ``init_report(model, batch, forward=f)``.

  Returns:
    An :class:`InitReport`: ``print(report)`` for a table, ``report.plot()`` for the
    std through depth.

  Raises:
    ValueError: for a bad argument (naming it), or when the forward pass calls no layer with a
      kernel (an empty report would say nothing).

  Example:
    >>> import jax, flax.linen as nn
    >>> from jaxopt_practices import initializers
    >>> model = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(16)])
    >>> x = jax.random.normal(jax.random.key(0), (64, 8))
    >>> params = model.init(jax.random.key(1), x)["params"]
    >>> report = initializers.init_report(lambda p, x: model.apply({"params": p}, x), params, x)
    >>> [r.name for r in report]
    ['layers_0', 'layers_2']

    An NNX model with Dropout, in its evaluation view:

    >>> from flax import nnx
    >>> rngs = nnx.Rngs(0)
    >>> net = nnx.Sequential(nnx.Linear(8, 16, rngs=rngs), nnx.Dropout(0.5, rngs=rngs), nnx.Linear(16, 4, rngs=rngs))
    >>> [r.name for r in initializers.init_report(lambda m, x: nnx.view(m, deterministic=True)(x), net, x)]
    ['layers/0', 'layers/2']
  """
  if isinstance(apply_fn, nnx.Module):  # the deprecated model-first form
    _layers.check_nnx(apply_fn, forward)
    _layers.deprecated("init_report(model, batch, forward=f)", "init_report(f, model, batch)")
    return _nnx_report(apply_fn, params if batch is None else batch, forward, "forward")
  if isinstance(params, nnx.Module):
    if forward is not None:
      raise ValueError(f"forward is only for the deprecated init_report(model, batch, forward=f); with the model "
                       f"as params, pass the function first: init_report(f, model, batch). Got forward = {forward!r}.")
    return _nnx_report(params, batch, apply_fn, "apply_fn")
  if forward is not None:
    raise ValueError(f"forward applies to an nnx.Module (linen models run through apply_fn), got forward = "
                     f"{forward!r}.")
  apply_fn = _layers.check_apply_fn(apply_fn)
  params, _ = _layers.unfreeze(params)
  probe, meta = _layers.linen_probe(apply_fn)
  stats = probe(params, batch)
  calls = meta(params, batch)
  if not calls:
    raise ValueError("init_report found no layer with a 'kernel' parameter (Dense, Conv, ...) in the forward pass "
                     "of apply_fn; it must run model.apply un-jitted (init_report compiles it itself).")
  return report_from(calls, stats)


def _nnx_report(model: nnx.Module, batch: Any, forward: Callable | None, forward_name: str) -> InitReport:
  """The report of an NNX model (batch statistics and RNG counters restored); ValueError when empty."""
  _layers.check_nnx(model, forward, forward_name)
  with _layers.nnx_state_kept(model):
    calls, stats = _layers.nnx_probe(model, batch, _layers.nnx_has_kernel, forward)
  if not calls:
    raise ValueError(f"init_report: {_layers.NO_NNX_LAYER}")
  return report_from(calls, stats)


def init_report_nnx(model: nnx.Module, batch: Any, forward: Callable | None = None) -> InitReport:
  """Deprecated (v0.3): ``init_report(forward, model, batch)``, the package's one NNX spelling.

  Warns with a ``DeprecationWarning``; kept for one release.

  Args:
    model: the NNX module.
    batch: an input batch.
    forward: ``forward(model, batch)`` (default ``model(batch)``).

  Returns:
    An :class:`InitReport`.

  Raises:
    ValueError: as :func:`init_report`.

  Example:
    >>> import jax, warnings
    >>> from flax import nnx
    >>> from jaxopt_practices import initializers
    >>> model = nnx.Sequential(nnx.Linear(8, 16, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(16, 4, rngs=nnx.Rngs(1)))
    >>> with warnings.catch_warnings(record=True) as caught:
    ...   warnings.simplefilter("always")
    ...   n = len(initializers.init_report_nnx(model, jax.random.normal(jax.random.key(0), (64, 8))))
    >>> n, caught[0].category.__name__
    (2, 'DeprecationWarning')
  """
  _layers.check_nnx(model, forward)
  _layers.deprecated("init_report_nnx(model, batch, forward)", "init_report(forward, model, batch)")
  return _nnx_report(model, batch, forward, "forward")
