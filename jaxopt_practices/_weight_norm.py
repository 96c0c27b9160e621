"""Data-dependent initialization of weight-normalized layers (Salimans & Kingma 2016)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxopt_practices import _init_report
from jaxopt_practices import _layers
from jaxopt_practices import _validate
from jaxopt_practices._init_report import InitReport


def _scale_and_shift(name: str, stats: dict, what: str) -> tuple[np.ndarray, np.ndarray]:
  """``(g, b)`` that map the unit-norm pre-activation ``t`` to ``(t - mean) / std`` per unit."""
  mu = np.asarray(stats["unit_mean"], np.float64)
  sd = np.asarray(stats["unit_std"], np.float64)
  dead = ~(np.isfinite(sd) & (sd > 0)) | ~np.isfinite(mu)
  if dead.any():
    warnings.warn(
        f"{what}: {int(dead.sum())} unit(s) of layer {name} have a constant or non-finite pre-activation "
        "over the batch; their scale is left at 1 (and their mean removed where finite).",
        _validate.PracticeWarning,
        stacklevel=4,
    )
  sd_safe = np.where(dead, 1.0, sd)
  mu_safe = np.where(np.isfinite(mu), mu, 0.0)
  return 1.0 / sd_safe, -mu_safe / sd_safe


def _linen_slot(params: dict, call: _layers.Call) -> tuple:
  """``(name, wn, kernel_scale_key, bias_scale_key | None, layer)`` of one linen WeightNorm; checks it."""
  name = _layers.path_name(call.path)
  if len(call.inner) != 1:
    raise ValueError(
        f"weight_norm_init: WeightNorm {name} wraps {len(call.inner)} layers with a kernel; it supports a "
        "WeightNorm around a single Dense/Conv layer."
    )
  wn = _layers.node(params, call.path, "WeightNorm scales")
  layer = _layers.node(params, call.inner[0], "kernel and bias")
  kscale = [k for k in wn if k.endswith("kernel/scale")]
  bscale = [k for k in wn if k.endswith("bias/scale")]
  out = layer["kernel"].shape[-1]
  if len(kscale) != 1 or wn[kscale[0]].shape != (out,):
    raise ValueError(
        f"weight_norm_init: WeightNorm {name} needs use_scale=True and feature_axes=-1 (one kernel scale "
        f"of shape ({out},)), found scales {sorted(wn)}."
    )
  if "bias" not in layer:
    raise ValueError(f"weight_norm_init: the layer in WeightNorm {name} has no bias (use_bias=False) to centre.")
  return name, wn, kscale[0], bscale[0] if bscale else None, layer


def _nnx_slot(call: _layers.Call) -> tuple:
  """``(name, wn)`` of one ``nnx.WeightNorm``; checks that it is one this init supports."""
  wn, name = call.module, _layers.path_name(call.path)
  layer = wn.layer_instance
  if not _layers.nnx_has_kernel(layer) or not isinstance(getattr(layer, "bias", None), nnx.Param):
    raise ValueError(
        f"weight_norm_init: WeightNorm {name} must wrap a layer with a kernel and a bias (use_bias=True)."
    )
  out = layer.kernel.get_value().shape[-1]
  scales = wn.scales or {}
  if ("kernel",) not in scales or scales[("kernel",)].shape != (out,):
    raise ValueError(
        f"weight_norm_init: WeightNorm {name} needs use_scale=True and feature_axes=-1 (a kernel scale "
        f"of shape ({out},)), found scales {list(scales)}."
    )
  if any(k != ("kernel",) for k in scales):
    raise ValueError(
        f"weight_norm_init: WeightNorm {name} normalizes more than the kernel (scales {list(scales)}); "
        "use the default variable_filter=nnx.PathContains('kernel')."
    )
  return name, wn


def _as(value, like) -> jax.Array:
  return jnp.asarray(np.broadcast_to(value, like.shape), like.dtype)


def weight_norm_init(
    apply_fn: Callable[[Any, Any], Any] | None, params: Any, batch: Any = None
) -> tuple[Any, InitReport]:
  r"""Data-dependent initialization of ``WeightNorm`` layers, linen or NNX (Salimans & Kingma 2016).

  A weight-normalized layer computes :math:`y = g \odot t + b` with
  :math:`t = x \cdot v / \lVert v \rVert` per output unit. Visiting every
  ``nn.WeightNorm`` in forward order (found by intercepting the forward pass), this
  sets :math:`g = 1, b = 0`, measures the mean :math:`\mu` and std :math:`\sigma` of
  :math:`t` per output unit over the batch (and spatial positions for Conv), then sets

  .. math::
    g \leftarrow 1 / \sigma, \qquad b \leftarrow -\mu / \sigma,

  so that every unit's pre-activation has mean 0 and std 1 over the batch. The
  directions :math:`v` are kept. A unit whose :math:`t` is constant keeps
  :math:`g = 1` (with a ``PracticeWarning``).

  Each ``WeightNorm`` must wrap a single layer with a ``kernel`` and a ``bias``
  (``nn.Dense``, ``nn.Conv``, ...) with ``use_scale=True`` and the default
  ``feature_axes=-1``. The scale is the WeightNorm's ``"<layer>/kernel/scale"``
  parameter and the shift is the wrapped layer's ``bias``; if the ``variable_filter``
  also normalizes the bias, the raw bias is set to 1 and its ``"bias/scale"`` carries
  the shift.

  Flax NNX (the package's one convention: the model goes where the params go):
  ``model, report = weight_norm_init(forward, model, batch)`` with ``forward(model, batch)``
  (``None``: ``model(batch)``). Each ``nnx.WeightNorm`` (in forward order) gets its
  ``scales[("kernel",)]`` set to :math:`1/\sigma` and its ``layer_instance.bias`` to
  :math:`-\mu/\sigma`, in place; the same requirements hold (``nnx.WeightNorm`` writes the
  normalized kernel back into the wrapped layer on every call; its direction is kept).

  Args:
    apply_fn: linen: ``apply_fn(params, batch)``, e.g. ``lambda p, x: model.apply({"params": p}, x)``,
      not jitted. NNX: ``forward(model, batch)`` or ``None``.
    params: the ``"params"`` collection (dict or FrozenDict; the same type is returned), or an
      ``nnx.Module``.
    batch: a representative input batch.

  Returns:
    ``(params, report)`` in both cases: the new params (NNX: the same model, updated in place)
    and an :class:`InitReport` of the WeightNorm layers' outputs after initialization.

  Raises:
    ValueError: for a bad argument, a WeightNorm this init does not support, no WeightNorm in
      the forward pass, or the model passed first (the pre-v0.3 form; write
      ``weight_norm_init(None, model, batch)``).

  Example:
    >>> import jax, flax.linen as nn
    >>> from jaxopt_practices import initializers
    >>> model = nn.Sequential([nn.WeightNorm(nn.Dense(16)), nn.relu, nn.WeightNorm(nn.Dense(4))])
    >>> x = 3.0 + jax.random.normal(jax.random.key(0), (256, 8))
    >>> params = model.init(jax.random.key(1), x)["params"]
    >>> params, report = initializers.weight_norm_init(lambda p, x: model.apply({"params": p}, x), params, x)
    >>> [round(r.std, 3) for r in report]
    [1.0, 1.0]

  References:
    Salimans & Kingma, Weight normalization: a simple reparameterization to accelerate
    training of deep neural networks, 2016.
  """
  if isinstance(apply_fn, nnx.Module):
    raise ValueError("weight_norm_init takes an NNX model where the params go and returns (model, report): write "
                     "model, report = weight_norm_init(None, model, batch) (or a forward(model, batch) first), not "
                     "weight_norm_init(model, batch).")
  if isinstance(params, nnx.Module):
    return params, _init_nnx(params, batch, apply_fn)
  apply_fn = _layers.check_apply_fn(apply_fn)
  params, frozen = _layers.unfreeze(params)
  probe, meta_fn = _layers.linen_probe(apply_fn, weight_norm=True)
  meta = meta_fn(params, batch)
  if not meta:
    raise ValueError("weight_norm_init found no flax.linen.WeightNorm layer in the forward pass of apply_fn.")
  slots = [_linen_slot(params, c) for c in meta]

  def set_gb(slot, g, b):
    _, wn, kkey, bkey, layer = slot
    wn[kkey] = _as(g, wn[kkey])
    if bkey is None:
      layer["bias"] = _as(b, layer["bias"])
    else:
      layer["bias"] = _as(1.0, layer["bias"])
      wn[bkey] = _as(b, wn[bkey])

  for i, slot in enumerate(slots):
    set_gb(slot, 1.0, 0.0)
    stats = probe(params, batch)[i]
    set_gb(slot, *_scale_and_shift(slot[0], stats, "weight_norm_init"))
  stats = probe(params, batch)
  report = _init_report.report_from(meta, stats)
  return _layers.refreeze(params, frozen), report


def weight_norm_init_nnx(model: nnx.Module, batch: Any, forward: Callable | None = None) -> InitReport:
  """Deprecated (v0.3): ``weight_norm_init(forward, model, batch)[1]``, the package's one NNX spelling.

  Warns with a ``DeprecationWarning``; kept for one release.

  Args:
    model: the NNX module, updated in place.
    batch: a representative input batch.
    forward: ``forward(model, batch)`` to run the model (default ``model(batch)``).

  Returns:
    An :class:`InitReport` of the WeightNorm layers' outputs after initialization.

  Raises:
    ValueError: as :func:`weight_norm_init`.

  Example:
    >>> import jax, warnings
    >>> from flax import nnx
    >>> from jaxopt_practices import initializers
    >>> rngs = nnx.Rngs(0)
    >>> model = nnx.Sequential(nnx.WeightNorm(nnx.Linear(8, 16, rngs=rngs), rngs=rngs), nnx.relu)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...   warnings.simplefilter("always")
    ...   report = initializers.weight_norm_init_nnx(model, 3.0 + jax.random.normal(jax.random.key(0), (256, 8)))
    >>> round(report[0].std, 3), caught[0].category.__name__
    (1.0, 'DeprecationWarning')
  """
  _layers.check_nnx(model, forward)
  _layers.deprecated("weight_norm_init_nnx(model, batch, forward)", "weight_norm_init(forward, model, batch)[1]")
  return _init_nnx(model, batch, forward)


def _init_nnx(model: nnx.Module, batch: Any, forward: Callable | None) -> InitReport:
  """The NNX half of :func:`weight_norm_init`, in place; returns the report."""
  _layers.check_nnx(model, forward, "apply_fn")
  is_wn = lambda m: isinstance(m, nnx.WeightNorm)  # noqa: E731
  with _layers.nnx_state_kept(model):
    calls, _ = _layers.nnx_probe(model, batch, is_wn, forward)
    if not calls:
      raise ValueError("weight_norm_init found no flax.nnx.WeightNorm layer of this model in the forward pass; "
                       "forward(model, batch) must run the model it is given, or an nnx.view of it.")
    slots = [_nnx_slot(c) for c in calls]

    def set_gb(wn, g, b):
      wn.scales[("kernel",)] = _as(g, wn.scales[("kernel",)])
      wn.layer_instance.bias.set_value(_as(b, wn.layer_instance.bias.get_value()))

    for i, (name, wn) in enumerate(slots):
      set_gb(wn, 1.0, 0.0)
      _, stats = _layers.nnx_probe(model, batch, is_wn, forward)
      set_gb(wn, *_scale_and_shift(name, stats[i], "weight_norm_init"))
    calls, stats = _layers.nnx_probe(model, batch, is_wn, forward)
  return _init_report.report_from(calls, stats)
