"""Finding a Flax model's layers in forward order, from the model itself (practice 3 internals).

linen: ``nn.intercept_methods`` around any ``apply`` records every module ``__call__``
whose module owns a ``kernel`` parameter (Dense, Conv, DenseGeneral, ConvTranspose,
Einsum, user modules with a ``kernel``), or every ``nn.WeightNorm`` call, with its
module path and its output, in the order the calls *finish* (so a layer's inputs are
always recorded before it). The first call of a module is the one recorded.

NNX: flax (0.12) has no public hook that hands over submodule outputs in call order:
``nnx.capture(..., method_outputs=...)`` rewrites the methods of the module *classes*
(every instance, for the duration of the call) and returns the outputs keyed by module
path, so the order of the calls is lost. :func:`capture_nnx` therefore changes the
watched *instances* only (those ``select`` picks among ``nnx.iter_modules(model)``), for
the duration of one forward pass: each one's ``__class__`` is swapped for a recording
subclass of its class, whose ``__call__`` passes the output to the recorder that the
instance carries in its ``__dict__`` (under ``RECORDER``). Both are undone in a
``finally``, so also when the forward pass raises. A forward pass that runs a view of the
model (``nnx.view(model, deterministic=True)``: new module objects, copied with the swapped
class and the recorder, sharing the model's Variables) is recorded too: a call is matched to
the watched layer by the layer's Variables, not by the module object. No class, function or module
attribute is patched; the one module-level object is the cache of recording
subclasses (one per layer class, created on first use and kept, because flax registers
every ``nnx.Module`` subclass for good in its graph and JAX pytree registries).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxopt_practices import _validate


@dataclasses.dataclass
class Call:
  """One recorded layer call."""
  path: tuple
  output: Any
  module: Any = None  # NNX: the module instance.
  inner: tuple = ()  # linen WeightNorm: the paths of the kernel layers called inside it.


@dataclasses.dataclass(frozen=True)
class LayerRecords:
  """Per-layer records in forward order, used like a tuple (iterable, sized, indexable).

  The base of the reports ``InitReport`` and ``LSUVReport``; every record has a ``name``.
  """
  layers: tuple

  def __iter__(self):
    return iter(self.layers)

  def __len__(self) -> int:
    return len(self.layers)

  def __getitem__(self, i):
    return self.layers[i]


def name_width(records: LayerRecords) -> int:
  """The width of a table's layer-name column: the longest name, at least 5 (``"layer"``)."""
  return max([5] + [len(r.name) for r in records])


def path_name(path: tuple) -> str:
  """A module path as ``"Block_0/Dense_1"`` (``"<root>"`` for the model itself)."""
  return "/".join(str(p) for p in path) or "<root>"


def _linen_has_kernel(mod: nn.Module) -> bool:
  try:
    ps = mod.variables.get("params", {})
  except Exception:  # noqa: BLE001 - an unbound module has no variables
    return False
  return "kernel" in ps and hasattr(ps["kernel"], "shape")


def _is_array_output(out: Any) -> bool:
  return isinstance(out, jax.Array) and out.ndim >= 1


_JITTED = ("apply_fn must be the un-jitted function (e.g. lambda p, x: model.apply({{'params': p}}, x)), not "
           "{what}: the layers are found by intercepting the module calls while it is traced, and a jitted "
           "function hides them (it is traced on its own, or not at all once compiled). Pass the function "
           "you gave to jax.jit; it is jitted here with the interceptor. Got apply_fn = {apply_fn!r}.")


def check_apply_fn(apply_fn: Any) -> Callable[..., Any]:
  """``apply_fn``; raises ``ValueError`` unless it is callable and not already jitted (``jax.jit`` / ``nnx.jit``)."""
  _validate.check_callable("apply_fn", apply_fn)
  if isinstance(apply_fn, jax.stages.Wrapped) or callable(getattr(apply_fn, "lower", None)):
    raise ValueError(_JITTED.format(what="a jitted one", apply_fn=apply_fn))
  return apply_fn


def capture_linen(apply_fn: Callable, params: Any, batch: Any, weight_norm: bool = False) -> list[Call]:
  """Runs ``apply_fn(params, batch)`` and returns the kernel (or WeightNorm) layer calls."""
  calls: list[Call] = []
  seen: set = set()
  stack: list[list] = []

  def interceptor(next_fun, args, kwargs, ctx):
    if ctx.method_name != "__call__":
      return next_fun(*args, **kwargs)
    mod = ctx.module
    is_wn = isinstance(mod, nn.WeightNorm)
    if is_wn:
      stack.append([])
    try:
      out = next_fun(*args, **kwargs)
    finally:
      inner = tuple(stack.pop()) if is_wn else ()
    has_kernel = not is_wn and _linen_has_kernel(mod)
    if has_kernel and stack:
      stack[-1].append(tuple(mod.path))
    wanted = is_wn if weight_norm else has_kernel
    path = tuple(mod.path)
    if wanted and path not in seen and _is_array_output(out):
      seen.add(path)
      calls.append(Call(path, out, None, inner))
    return out

  with nn.intercept_methods(interceptor):
    apply_fn(params, batch)
  return calls


RECORDER = "_capture_nnx_recorder"
_RECORDING_CLASSES: dict[type, type] = {}


def _recording_class(cls: type) -> type:
  """The subclass of ``cls`` whose ``__call__`` also hands its output to the instance's recorder."""
  if cls not in _RECORDING_CLASSES:  # a recording class maps to itself: a nested capture reuses it

    def __call__(self, *args, **kwargs):
      out = cls.__call__(self, *args, **kwargs)
      record = vars(self).get(RECORDER)
      if record is not None:
        record(self, out)
      return out

    recording = type(cls)(f"_Recording{cls.__name__}", (cls,), {"__call__": __call__, "__module__": __name__})
    _RECORDING_CLASSES[cls] = _RECORDING_CLASSES[recording] = recording
  return _RECORDING_CLASSES[cls]


@contextlib.contextmanager
def _recording(modules: list, record: Callable[[Any, Any], None]):
  """Swaps each module's class for its recording subclass and gives it ``record``; undone on exit."""
  swapped = []
  try:
    for m in modules:
      swapped.append((m, type(m), vars(m).get(RECORDER)))
      object.__setattr__(m, "__class__", _recording_class(type(m)))
      object.__setattr__(m, RECORDER, record)
    yield
  finally:
    for m, cls, previous in reversed(swapped):
      object.__setattr__(m, "__class__", cls)
      if previous is None:
        vars(m).pop(RECORDER, None)
      else:
        object.__setattr__(m, RECORDER, previous)


def nnx_has_kernel(mod: nnx.Module) -> bool:
  """Whether an NNX module owns a ``kernel`` ``nnx.Param`` (Linear, Conv, ...)."""
  return isinstance(getattr(mod, "kernel", None), nnx.Param)


def _identity(mod: nnx.Module) -> Any:
  """What identifies a layer across views of the model: its Variables (``nnx.view(model, ...)`` makes new
  module objects that share them), or the module itself if it has none."""
  own = frozenset(id(v) for _, v in nnx.iter_graph(mod) if isinstance(v, nnx.Variable))
  return own or id(mod)


def capture_nnx(
    model: nnx.Module, batch: Any, select: Callable[[nnx.Module], bool], forward: Callable | None = None
) -> list[Call]:
  """Calls ``forward(model, batch)`` (default ``model(batch)``) and records the selected modules.

  The submodules ``select`` picks are watched for this one call as the module docstring
  says (class swapped, recorder attached, both restored even on error); the first call
  of each, with an array output, is recorded, in the order the calls finish.
  """
  targets = {_identity(m): (tuple(p), m) for p, m in nnx.iter_modules(model) if select(m)}
  calls: list[Call] = []
  seen: set = set()

  def record(mod, out):
    key = _identity(mod)
    if key in targets and key not in seen and _is_array_output(out):
      seen.add(key)
      calls.append(Call(targets[key][0], out, targets[key][1]))

  with _recording([m for _, m in targets.values()], record):
    if forward is None:
      model(batch)
    else:
      forward(model, batch)
  return calls


def check_nnx(model: Any, forward: Any = None, forward_name: str = "forward") -> None:
  """ValueError unless ``model`` is an ``nnx.Module`` and ``forward`` is None or callable."""
  if not isinstance(model, nnx.Module):
    raise ValueError(f"model must be a flax.nnx.Module, got model of type {type(model).__name__}.")
  if forward is not None:
    _validate.check_callable(forward_name, forward)


def deprecated(old: str, new: str) -> None:
  """The ``DeprecationWarning`` of an old NNX spelling, pointing at the caller of the public function."""
  warnings.warn(f"{old} is deprecated since v0.3 and will be removed in the next release; write {new} (one NNX "
                "convention: the model goes where the params go, the function that runs it comes first).",
                DeprecationWarning, stacklevel=3)


NO_NNX_LAYER = ("the forward pass called no layer with a kernel that belongs to this model. forward(model, batch) "
                "must run the model it is given, or a view sharing its Variables (nnx.view(model, "
                "deterministic=True), model.eval()); a model it rebuilds (nnx.clone, nnx.merge of another state) is "
                "not this model.")


@contextlib.contextmanager
def nnx_state_kept(model: nnx.Module):
  """Restores the model's batch statistics and RNG counters on exit (forward passes change them)."""
  saved = jax.tree_util.tree_map(lambda a: a, nnx.state(model, (nnx.BatchStat, nnx.RngState)))
  try:
    yield
  finally:
    nnx.update(model, saved)


def layer_stats(out: jax.Array) -> dict[str, jax.Array]:
  """Statistics of one layer's output, in float32.

  ``mean`` / ``std`` over every element; ``unit_mean`` / ``unit_std`` per output unit (last
  axis) over the batch and any spatial axes; ``dead`` the fraction of units that are
  ``<= 0`` for every example (and position), i.e. that a following ReLU silences.
  """
  x = out.astype(jnp.float32)
  flat = x.reshape(-1, x.shape[-1])
  return {
      "mean": jnp.mean(x),
      "std": jnp.std(x),
      "unit_mean": jnp.mean(flat, axis=0),
      "unit_std": jnp.std(flat, axis=0),
      "dead": jnp.mean(jnp.all(flat <= 0, axis=0).astype(jnp.float32)),
  }


layer_stats_jit = jax.jit(layer_stats)


_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(params: Any, batch: Any) -> tuple:
  leaves, tree = jax.tree_util.tree_flatten((params, batch))
  return tree, tuple((tuple(jnp.shape(x)), str(jnp.result_type(x))) for x in leaves)


def _explained(fn: Callable, apply_fn: Callable) -> Callable:
  """``fn``, turning the tracer leak of an ``apply_fn`` that jits inside into the ``apply_fn`` ValueError."""
  def call(*args):
    try:
      return fn(*args)
    except jax.errors.UnexpectedTracerError as e:
      raise ValueError(_JITTED.format(what="one that calls a jitted function", apply_fn=apply_fn)) from e
  return call


def linen_probe(apply_fn: Callable, weight_norm: bool = False):
  """A jitted ``probe(params, batch) -> [layer_stats, ...]`` and ``meta(params, batch) -> [Call, ...]``.

  The compiled probe is cached per ``apply_fn`` (weakly), so repeated reports and LSUV runs
  on the same model compile once; ``meta`` gives the layer calls (paths, output shapes)
  recorded when the probe was traced for arguments of that structure.
  """
  try:
    cached = _PROBES.setdefault(apply_fn, {})
  except TypeError:  # not weak-referenceable: no cache
    cached = {}
  if weight_norm not in cached:
    metas: dict[tuple, list[Call]] = {}

    def probe(params, batch):
      calls = capture_linen(apply_fn, params, batch, weight_norm)
      metas[_signature(params, batch)] = [
          Call(c.path, jax.ShapeDtypeStruct(c.output.shape, c.output.dtype), None, c.inner) for c in calls
      ]
      return [layer_stats(c.output) for c in calls]

    jitted = _explained(jax.jit(probe), apply_fn)

    def meta(params, batch):
      sig = _signature(params, batch)
      if sig not in metas:
        _explained(functools.partial(jax.eval_shape, jitted), apply_fn)(params, batch)
      return metas[sig]

    cached[weight_norm] = (jitted, meta)
  return cached[weight_norm]


def nnx_probe(model: nnx.Module, batch: Any, select: Callable, forward: Callable | None = None):
  """Eager forward pass: ``(calls, [layer_stats, ...])``."""
  calls = capture_nnx(model, batch, select, forward)
  return calls, [layer_stats_jit(c.output) for c in calls]


def unfreeze(params: Any) -> tuple[dict, bool]:
  """A mutable nested-dict copy of a params tree and whether it was a FrozenDict."""
  if not isinstance(params, (dict, flax.core.FrozenDict)):
    raise ValueError(
        f"params must be the 'params' collection (a dict of module names), got params of type {type(params).__name__}."
    )
  return flax.core.unfreeze(params), isinstance(params, flax.core.FrozenDict)


def refreeze(params: dict, frozen: bool) -> Any:
  return flax.core.freeze(params) if frozen else params


def node(params: dict, path: tuple, what: str) -> dict:
  """The sub-dict of ``params`` at a module path; ValueError when the path is not there."""
  cur = params
  for p in path:
    if not isinstance(cur, dict) or p not in cur:
      raise ValueError(
          f"layer {path_name(path)} ran in apply_fn but params has no entry {path_name(path)} holding its {what}. "
          "params must be the 'params' collection that apply_fn passes as model.apply({'params': params}, x); "
          "layers inside nn.scan / nn.vmap are not supported."
      )
    cur = cur[p]
  return cur


def scaled(x: jax.Array, factor: Any) -> jax.Array:
  """``x * factor`` computed in float32 and cast back to ``x``'s dtype."""
  f = jnp.asarray(factor, jnp.float32)
  f = f.reshape((1,) * (x.ndim - f.ndim) + f.shape)
  return (x.astype(jnp.float32) * f).astype(x.dtype)
