"""Flax linen training state whose ``apply_gradients`` forwards extra arguments to the optimizer.

``flax.training.train_state.TrainState.apply_gradients(grads=g, **kwargs)`` treats every
keyword argument as a field to ``.replace()``, so an optimizer that needs one at update time
(``plateau.reduce_on_plateau``'s ``value=loss``, ``optax.scale_by_backtracking_linesearch``'s
``value`` / ``grad`` / ``value_fn``) cannot get it: the call fails with
``TypeError: ... missing 1 required keyword-only argument: 'value'`` (or with an unknown
field). :class:`TrainState` is the same dataclass with that one difference; everything else
(``create``, ``replace``, subclasses with extra fields such as ``batch_stats``, checkpoints)
is flax's.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import optax
from flax.training import train_state

from jaxopt_practices import _restore

__all__ = ["TrainState", "restore"]


class TrainState(train_state.TrainState):
  """A ``flax.training.train_state.TrainState`` whose ``apply_gradients`` forwards extra arguments to ``tx.update``.

  ``state.apply_gradients(grads=g, value=loss)`` calls
  ``tx.update(g, opt_state, params, value=loss)``. Keyword arguments that name a field of
  the state (e.g. ``batch_stats`` in a subclass) are ``.replace()``-d as flax does; the names
  in :attr:`extra_args` (``value``, ``grad``, ``value_fn``, and any a subclass declares) go to
  ``tx.update`` (transforms that take no extra arguments ignore them, as in ``optax.chain``);
  any other name is a ``ValueError`` (a typo must not be dropped silently). ``create``,
  ``replace`` and the pytree layout are flax's, so the state
  works under ``jax.jit`` / ``pmap``, with Orbax, and with every reader of this package
  (``monitor.stats(state)``, ``plateau.scale(state)``, ``plateau.step(state, val_loss)``,
  ``regularization.ema_params(state)``).

  Attributes:
    step: the number of ``apply_gradients`` calls so far (flax's).
    apply_fn: the model's apply function, e.g. ``model.apply`` (not a pytree leaf).
    params: the parameters.
    tx: the optimizer, an ``optax.GradientTransformation`` (not a pytree leaf).
    opt_state: its state.

  Example:
    >>> import jax, jax.numpy as jnp, optax, flax.linen as nn
    >>> from jaxopt_practices import plateau, training
    >>> model = nn.Dense(1)
    >>> params = model.init(jax.random.key(0), jnp.ones((1, 3)))["params"]
    >>> tx = optax.chain(optax.sgd(0.1), plateau.reduce_on_plateau(factor=0.5, patience=0))
    >>> state = training.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    >>> @jax.jit
    ... def train_step(state, x, y):
    ...   def loss_fn(p):
    ...     return jnp.mean((state.apply_fn({"params": p}, x) - y) ** 2)
    ...   loss, grads = jax.value_and_grad(loss_fn)(state.params)
    ...   return state.apply_gradients(grads=grads, value=loss), loss
    >>> x, y = jnp.ones((4, 3)), jnp.zeros((4, 1))
    >>> for shift in [0.0, 10.0, 20.0]:       # the targets move away: the loss rises
    ...   state, loss = train_step(state, x, y - shift)
    >>> print(int(state.step), plateau.scale(state))
    3 0.25
  """

  #: The extra arguments ``apply_gradients`` forwards to ``tx.update``: those the transforms of this
  #: package and optax consume (``value`` for ``plateau.reduce_on_plateau``, optax's
  #: ``contrib.reduce_on_plateau`` and ``scale_by_polyak``; ``grad`` / ``value_fn`` for optax's line
  #: searches). A transform of your own that takes another one: declare it in a subclass,
  #: ``extra_args = training.TrainState.extra_args | {"my_arg"}``.
  extra_args = frozenset({"value", "grad", "value_fn"})

  def apply_gradients(self, *, grads: Any, **kwargs: Any) -> TrainState:
    """``step + 1``, params and ``opt_state`` updated by ``tx.update(grads, ..., **extra)``.

    Args:
      grads: gradients shaped like ``params``.
      **kwargs: fields of the state to ``.replace()`` (as flax's), and extra arguments
        for ``tx.update`` (the names in :attr:`extra_args`, e.g. ``value=loss``).

    Returns:
      The updated state.

    Raises:
      ValueError: for a keyword that is neither a field nor in :attr:`extra_args` (a typo such
        as ``vale=loss`` would otherwise reach no transform, and the plateau would never move).
    """
    names = {f.name for f in dataclasses.fields(self)}
    fields = {k: v for k, v in kwargs.items() if k in names}
    extra = {k: v for k, v in kwargs.items() if k not in names}
    unknown = sorted(set(extra) - set(self.extra_args))
    if unknown:
      close = difflib.get_close_matches(unknown[0], sorted(set(self.extra_args) | names), n=1)
      raise ValueError(
          f"{type(self).__name__}.apply_gradients got the unknown argument {unknown[0]!r}"
          f"{f' (did you mean {close[0]!r}?)' if close else ''}: it is neither a field of the state "
          f"({', '.join(sorted(names))}) nor an extra argument a transform consumes "
          f"({', '.join(sorted(self.extra_args))}). To forward another name to tx.update, declare it: "
          f"class MyState(training.TrainState): extra_args = training.TrainState.extra_args | {{{unknown[0]!r}}}.")
    if not extra:
      return super().apply_gradients(grads=grads, **fields)
    tx = optax.with_extra_args_support(self.tx)
    bound = optax.GradientTransformation(tx.init, lambda u, s, p=None: tx.update(u, s, p, **extra))
    # flax's own apply_gradients (params / OVERWRITE_WITH_GRADIENT handling) with the arguments bound.
    new = train_state.TrainState.apply_gradients(self.replace(tx=bound), grads=grads, **fields)
    return new.replace(tx=self.tx)


def restore(target: Any, restored: Any) -> Any:
  """Puts a checkpoint that Orbax restored *without a target* into ``target``'s structure.

  ``ocp.StandardCheckpointer().restore(path)`` without a target gives dicts and lists: the
  optimizer's NamedTuple states become dicts, tuple positions the keys ``"0"``, ``"1"``, ...,
  and the Variables of an ``nnx.state(...)`` checkpoint ``{"value": array}``. Then
  ``nnx.update(optimizer, restored)`` fails inside flax (``Cannot set key '0' on immutable node
  of type tuple``) and a linen update on a dict fails in the first transform. This reads
  ``restored`` by the target's own paths (any optimizer, any model) and checks every shape.
  Restoring *with* a target (``ckptr.restore(path, nnx.state(abstract_optimizer))`` or
  ``jax.eval_shape(tx.init, params)``) needs none of this.

  Args:
    target: an ``nnx.Optimizer`` / ``nnx.Module`` (updated in place), or a linen
      :class:`TrainState`, an optax state or any pytree of arrays (a new one is returned), made
      as for the run that wrote the checkpoint.
    restored: what the checkpointer returned without a target (or an ``nnx.State``, or a tree
      already in ``target``'s structure).

  Returns:
    ``target`` with the checkpoint's values (NNX: the same object, updated in place).

  Raises:
    ValueError: when the checkpoint does not fit ``target`` (an entry missing, another shape,
      extra arrays): it was written by another optimizer or model.

  Example:
    >>> import numpy as np, jax.numpy as jnp, optax
    >>> from jaxopt_practices import training
    >>> tx = optax.adam(1e-3)
    >>> target = tx.init({"w": jnp.zeros(2)})
    >>> restored = {"0": {"count": np.array(3), "mu": {"w": np.array([0.5, 0.25])},  # as Orbax gives it
    ...                   "nu": {"w": np.array([1.0, 2.0])}}, "1": {}}
    >>> state = training.restore(target, restored)
    >>> type(state[0]).__name__, int(state[0].count), state[0].mu["w"].tolist()
    ('ScaleByAdamState', 3, [0.5, 0.25])
  """
  return _restore.into(target, restored)
