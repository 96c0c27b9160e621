"""``regularization.update_bn``: BatchNorm statistics recomputed for averaged weights (swa_utils.update_bn)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["update_bn"]


def update_bn(apply_fn: Callable[[Any, Any], Any], variables: Any, batches: Iterable[Any]) -> Any:
  r"""The ``batch_stats`` recomputed over ``batches`` as a cumulative average (torch ``update_bn``).

  ≙ ``torch.optim.swa_utils.update_bn(loader, model)``: every running statistic restarts and
  becomes the equal-weight mean of its per-batch values,
  :math:`s = \frac1K\sum_{k=1}^{K} b_k` (PyTorch's BatchNorm with ``momentum=None``), so an
  averaged model (:func:`swa_params`, :func:`ema_params`) gets statistics that match its
  weights. Works for any statistic a layer updates as ``momentum * old + (1 - momentum) * b``
  (linen ``BatchNorm``'s ``mean`` and ``var``): the momentum is read off one extra pass over
  the first batch (to float32 round-off: about 1e-7 relative for momentum 0.9, 1e-6 for
  0.99), then each batch costs one jitted forward pass.

  One difference from torch, which follows flax: linen ``BatchNorm`` stores the *biased*
  batch variance (divided by :math:`n`, the number of reduced elements) where torch stores the
  unbiased one (:math:`n - 1`), so ``var`` here is torch's ``running_var`` times
  :math:`(n-1)/n` for batches of equal size; ``mean`` is torch's ``running_mean``.

  To *average* the statistics alongside the params instead (torchvision's
  ``AveragedModel(use_buffers=True)``: the buffers get the same EMA at the same steps), keep a
  second :func:`ema` with the same settings over the ``batch_stats``, fed their change at each
  step; read both with :func:`ema_params`::

      bn_ema = regularization.ema(decay, every=k)                 # the params' ema settings
      bn_state = bn_ema.init(stats)                               # linen variables["batch_stats"]
      # in the step, after apply(..., mutable=["batch_stats"]) returned new_stats:
      _, bn_state = bn_ema.update(jax.tree.map(jnp.subtract, new_stats, stats), bn_state, stats)
      eval_vars = {"params": ema_params(opt_state), "batch_stats": ema_params(bn_state)}

  In NNX take ``stats = jax.tree.map(jnp.copy, nnx.state(model, nnx.BatchStat))`` before and
  after the step (``nnx.state`` is live: it changes with the model) and load both averages
  with ``nnx.update(eval_model, ema_params(optimizer), ema_params(bn_state))``.

  Args:
    apply_fn: ``apply_fn(variables, batch) -> (out, {"batch_stats": ...})`` running the model in
      training mode, e.g. ``lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])``.
    variables: the linen variables (``{"params": averaged params, "batch_stats": ...}``).
    batches: an iterable of batches (e.g. the training set once, as torch's ``loader``).

  Returns:
    The new ``batch_stats`` (a tree shaped like ``variables["batch_stats"]``, float32 or wider).

  Raises:
    ValueError: when ``apply_fn`` is not callable, ``variables`` has no ``"batch_stats"``, or
      ``batches`` is empty.

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> from jaxopt_practices import regularization
    >>> model = nn.BatchNorm(use_running_average=False, momentum=0.9)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((2, 1)))
    >>> batches = [jnp.array([[0.0], [2.0]]), jnp.array([[4.0], [6.0]])]
    >>> stats = regularization.update_bn(lambda v, x: model.apply(v, x, mutable=["batch_stats"]), variables, batches)
    >>> print(stats["mean"].round(5), stats["var"].round(5))   # means 1 and 5; biased variances 1 and 1
    [3.] [1.]

  References:
    Izmailov et al, Averaging Weights Leads to Wider Optima and Better Generalization, 2018.
  """
  if not callable(apply_fn):
    raise ValueError(f"apply_fn must be a callable (variables, batch) -> (out, mutated), got apply_fn = {apply_fn!r}.")
  if not hasattr(variables, "keys") or "batch_stats" not in variables:
    raise ValueError("variables must be linen variables holding a 'batch_stats' collection; got variables with "
                     f"keys {list(variables.keys()) if hasattr(variables, 'keys') else type(variables).__name__}.")
  stats = jax.tree.map(lambda s: jnp.asarray(s, jnp.promote_types(jnp.result_type(s), jnp.float32)),
                       variables["batch_stats"])

  run = jax.jit(lambda v, batch: apply_fn(v, batch)[1]["batch_stats"])  # the params are an argument, not constants

  def forward(stats, batch):
    return run({**variables, "batch_stats": stats}, batch)

  average, keep = None, None
  for count, batch in enumerate(batches):
    if average is None:  # new = m * old + (1 - m) * b: two passes give m (the kept fraction) and b
      zeros = forward(jax.tree.map(jnp.zeros_like, stats), batch)
      ones = forward(jax.tree.map(jnp.ones_like, stats), batch)
      keep = jax.tree.map(lambda o, z: jnp.mean(o - z), ones, zeros)  # one momentum per leaf: averaged round-off
      average = jax.tree.map(lambda z, m: z / (1 - m), zeros, keep)
      continue
    out = forward(average, batch)
    b = jax.tree.map(lambda o, a, m: (o - m * a) / (1 - m), out, average, keep)
    average = jax.tree.map(lambda a, b, w=1.0 / (count + 1): a + (b - a) * w, average, b)
  if average is None:
    raise ValueError("batches must hold at least one batch, got an empty iterable.")
  return average
