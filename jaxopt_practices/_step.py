"""The one train step behind ``parallel``, ``flat``, ``lr_finder`` and ``tour``.

:func:`train_step` is the pure function they all compile: value and gradient of the loss,
an optional ``pmean`` over a ``pmap`` axis, the extra arguments for ``tx.update`` (the loss
as ``value=`` for a plateau scheduler), one optimizer update and ``apply_updates``. The
callers differ only in how they compile it (``jax.jit``, ``jax.pmap``, shardings) and which
buffers they donate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

Step = Callable[[Any, Any, Any, dict], tuple[Any, Any, Any]]


def train_step(
    loss_fn: Callable[[Any, Any], Any],
    tx: optax.GradientTransformation,
    *,
    has_aux: bool = False,
    value_from_loss: bool = False,
    axis_name: str | None = None,
    unravel: Callable[[Any], Any] | None = None,
) -> Step:
  r"""``step(params, opt_state, batch, extra_args) -> (params, opt_state, out)``, not compiled.

  .. math:: (\ell, g) = \mathrm{value\_and\_grad}(L)(\theta; B),\quad
            (u, s) = \mathrm{tx.update}(g, s, \theta, **\text{extra}),\quad \theta \leftarrow \theta + u

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar`` (``-> (scalar, aux)`` with ``has_aux``).
    tx: the optimizer (extra arguments are forwarded to its ``update``).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    value_from_loss: pass the loss as ``value=`` to ``tx.update`` (for ``reduce_on_plateau``).
    axis_name: a ``pmap`` axis: the gradients, the loss and ``aux`` are ``pmean``-ed over it,
      so every replica applies the same update and returns the same values.
    unravel: the loss sees ``unravel(params)`` (the flat-buffer path: the gradient then comes
      out as one buffer).

  Returns:
    The step; ``out`` is the loss, or ``(loss, aux)`` with ``has_aux``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import _step
    >>> tx = optax.sgd(0.5)
    >>> step = _step.train_step(lambda p, x: jnp.mean((x - p) ** 2), tx)
    >>> params, state, loss = step(jnp.zeros([]), tx.init(jnp.zeros([])), jnp.ones(4), {})
    >>> print(params, loss)
    1.0 1.0
  """
  tx = optax.with_extra_args_support(tx)
  model_loss = loss_fn if unravel is None else (lambda p, b: loss_fn(unravel(p), b))
  grad_fn = jax.value_and_grad(model_loss, has_aux=has_aux)

  def step(params, opt_state, batch, extra_args):
    out, grads = grad_fn(params, batch)
    if axis_name is not None:
      grads, out = jax.lax.pmean((grads, out), axis_name)
    loss = out[0] if has_aux else out
    if value_from_loss:
      extra_args = {**extra_args, "value": loss}
    updates, opt_state = tx.update(grads, opt_state, params, **extra_args)
    return optax.apply_updates(params, updates), opt_state, out

  return step
