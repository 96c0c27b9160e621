"""The sweep of the LR range test (practice 2 internals): the batch stream, the lrs, the compiled step.

``lr_finder.lr_range_test`` validates its arguments and reads the suggestions; this module runs
the sweep. An ``nnx.Module`` is swept through ``nnx.split`` / ``nnx.merge`` inside the compiled
step, so everything the forward pass mutates (batch statistics, the RNG counters of a Dropout
that owns its ``Rngs``, and a call-time ``nnx.Rngs`` passed as ``rngs=``) is part of the traced
state, never a Python object mutated from inside the trace.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import flax.errors
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxopt_practices import _progress
from jaxopt_practices import _step

__all__ = ["Cycle", "sweep", "sweep_lrs", "sweep_step"]


class Cycle:
  """Batches forever: restarts a re-iterable; remembers a one-shot iterator's batches to replay them."""

  def __init__(self, batches: Iterable[Any]):
    try:
      self._it = iter(batches)
    except TypeError as e:
      raise ValueError(f"batches must be an iterable of batches, got batches = {batches!r}.") from e
    self._source = None if self._it is batches else batches
    self._seen: list[Any] = []
    self._replay = False

  def __next__(self) -> Any:
    try:
      batch = next(self._it)
    except StopIteration:
      if self._source is not None:
        self._it = iter(self._source)
      elif self._seen:
        self._it, self._replay = iter(list(self._seen)), True
      else:
        raise ValueError("batches is empty.") from None
      try:
        batch = next(self._it)
      except StopIteration:
        raise ValueError("batches is empty.") from None
    if self._source is None and not self._replay:
      self._seen.append(batch)
    return batch


def sweep_lrs(start_lr: float, end_lr: float, num_steps: int, mode: str) -> np.ndarray:
  """The learning rate of each step (float64), ending exactly at ``end_lr``."""
  i = np.arange(num_steps, dtype=np.float64) / (num_steps - 1)
  if mode == "exp":
    lrs = start_lr * np.exp(i * math.log(end_lr / start_lr))
  else:
    lrs = start_lr + (end_lr - start_lr) * i
  lrs[-1] = end_lr
  return lrs


def _copy(tree: Any) -> Any:
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def sweep_step(loss_fn: Callable[..., jax.Array], make_optimizer: Callable[[Any], optax.GradientTransformation],
               params: Any, wrt: Any, rngs: Any = None) -> tuple[Callable[..., Any], Any, Any]:
  """The one train step, compiled once with the lr as a traced input; its starting carry; the swept params.

  ``step(carry, opt_state, batch, lr) -> (carry, opt_state, loss)``. For a pytree the carry
  is a copy of ``params``. For an ``nnx.Module`` it is a copy of its ``wrt`` state (swept)
  and of the rest (batch statistics, RNG counters, ... and the state of ``rngs`` when given):
  each step merges them into a model (and an ``nnx.Rngs``, passed as ``loss_fn(model, batch,
  rngs)``) inside the compiled step, so the forward pass updates the rest as in training, and
  only the ``wrt`` state gets gradients and optimizer updates. The caller's model and rngs are
  never touched.
  """
  donate = (0, 1) if jax.default_backend() != "cpu" else ()  # our own copies; CPU cannot donate
  if not isinstance(params, nnx.Module):
    def step(p, opt_state, batch, lr):
      return _step.train_step(loss_fn, make_optimizer(lr))(p, opt_state, batch, {})

    carry = _copy(params)
    return jax.jit(step, donate_argnums=donate), carry, carry

  wrt = nnx.Param if wrt is None else wrt
  node: Any = params if rngs is None else (params, rngs)  # the model, or (model, rngs)
  graphdef, swept, *others = nnx.split(node, wrt, ...)
  (rest,) = others

  def model_loss(p, batch_and_rest):
    batch, rest = batch_and_rest
    node = nnx.merge(graphdef, p, rest)
    loss = loss_fn(node, batch) if rngs is None else loss_fn(node[0], batch, node[1])
    return loss, nnx.as_pure(nnx.split(node, wrt, ...)[-1])

  def nnx_step(carry, opt_state, batch, lr):
    p, rest = carry
    step = _step.train_step(model_loss, make_optimizer(lr), has_aux=True)
    p, opt_state, (loss, rest) = step(p, opt_state, (batch, rest), {})
    return (p, rest), opt_state, loss

  carry = (_copy(nnx.as_pure(swept)), _copy(nnx.as_pure(rest)))
  return jax.jit(nnx_step, donate_argnums=donate), carry, carry[0]


_OUTSIDE_STATE = (
    "loss_fn mutates an NNX object that is not part of the model, from inside the compiled sweep step "
    "(flax: {error}). Typically an nnx.Rngs the loss closes over, as in the Flax tutorial's "
    "`model(x, rngs=rngs)`: pass it to the sweep instead, lr_range_test(loss_fn, model, ..., rngs=rngs) "
    "with loss_fn(model, batch, rngs), or give the Dropout its own Rngs (nnx.Dropout(rate, rngs=rngs)).")


def sweep(step: Callable[..., Any], p: Any, opt_state: Any, stream: Cycle, lrs: np.ndarray,
          smoothing: float, diverge_threshold: float, progress: bool) -> tuple[list, list, bool]:
  """Runs the sweep until divergence or the last lr; returns ``(losses, smoothed, stopped_early)``.

  Raises:
    ValueError: when ``loss_fn`` mutates an NNX object from outside the traced state (flax's
      ``TraceContextError``), naming the fix.
  """
  num_steps = len(lrs)
  losses: list[float] = []
  smoothed: list[float] = []
  best, stopped = math.inf, False
  with _progress.bar(progress, total=num_steps, desc="LR range test") as bar:
    for k in range(num_steps):
      try:
        p, opt_state, loss = step(p, opt_state, next(stream), jnp.float32(lrs[k]))
      except flax.errors.TraceContextError as e:
        raise ValueError(_OUTSIDE_STATE.format(error=str(e).split(" (https")[0])) from e
      loss = float(loss)
      s = loss if k == 0 else smoothing * loss + (1.0 - smoothing) * smoothed[-1]
      losses.append(loss)
      smoothed.append(s)
      bar.update(1)
      bar.set_postfix(lr=f"{lrs[k]:.2e}", loss=f"{s:.4g}")
      if not math.isfinite(s) or (k > 0 and s > best + (diverge_threshold - 1.0) * abs(best)):
        stopped = k < num_steps - 1
        break
      best = min(best, s)
  return losses, smoothed, stopped
