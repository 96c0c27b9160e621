"""Tests for ``jaxopt_practices.training.TrainState``: extra arguments reach ``tx.update``."""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state as flax_train_state

from jaxopt_practices import adaptive, momentum, monitor, plateau, training


def _setup(tx):
  model = nn.Dense(2)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 3)), jnp.float32)
  params = model.init(jax.random.key(0), x)["params"]
  return model, params, x


def _loss(apply_fn, params, x, target):
  return jnp.mean(jnp.square(apply_fn({"params": params}, x) - target))


def test_value_reaches_the_plateau_under_jit_and_matches_the_manual_loop():
  tx = monitor.track(optax.chain(momentum.sgd(0.1, momentum=0.9), plateau.reduce_on_plateau(factor=0.5, patience=0)))
  model, params, x = _setup(tx)
  state = training.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  @jax.jit
  def train_step(state, target):
    loss, grads = jax.value_and_grad(lambda p: _loss(state.apply_fn, p, x, target))(state.params)
    return state.apply_gradients(grads=grads, value=loss)

  @jax.jit
  def manual_step(params, opt_state, target):  # the pattern users had to write by hand
    loss, grads = jax.value_and_grad(lambda p: _loss(model.apply, p, x, target))(params)
    updates, opt_state = tx.update(grads, opt_state, params, value=loss)
    return optax.apply_updates(params, updates), opt_state

  p, s = params, tx.init(params)
  for shift in [0.0, 5.0, 10.0, 15.0]:  # the targets move away: the loss rises, the plateau reduces
    state = train_step(state, jnp.full((8, 2), shift))
    p, s = manual_step(p, s, jnp.full((8, 2), shift))
  assert type(state) is training.TrainState
  assert int(state.step) == 4 and state.tx is tx
  assert float(plateau.scale(state)) == 0.125
  chex.assert_trees_all_close(state.params, p, rtol=1e-6)
  chex.assert_trees_all_close(state.opt_state, s, rtol=1e-6)
  assert int(monitor.stats(state)["step"]) == 4


def test_flax_train_state_drops_value_ours_forwards_it():
  tx = optax.chain(optax.sgd(0.1), plateau.reduce_on_plateau(factor=0.5, patience=0))
  model, params, _ = _setup(tx)
  grads = jax.tree.map(jnp.ones_like, params)
  with pytest.raises(TypeError):
    flax_train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx).apply_gradients(
        grads=grads, value=1.0)
  state = training.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  for v in [1.0, 2.0]:
    state = state.apply_gradients(grads=grads, value=v)
  assert float(plateau.scale(state)) == 0.5


def test_without_extra_arguments_it_is_flax_train_state():
  tx = adaptive.adam(1e-2)
  model, params, x = _setup(tx)
  ours = training.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  theirs = flax_train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  grads = jax.grad(lambda p: _loss(model.apply, p, x, 1.0))(params)
  for _ in range(2):
    ours, theirs = ours.apply_gradients(grads=grads), theirs.apply_gradients(grads=grads)
  chex.assert_trees_all_equal(ours.params, theirs.params)
  chex.assert_trees_all_equal(ours.opt_state, theirs.opt_state)
  assert isinstance(ours, flax_train_state.TrainState)


class _BatchNormState(training.TrainState):
  """The flax ImageNet example's pattern: a subclass with an extra field."""
  batch_stats: Any = None


def test_fields_of_a_subclass_are_replaced_and_the_rest_forwarded():
  tx = optax.chain(optax.sgd(0.1), plateau.reduce_on_plateau(factor=0.5, patience=0))
  model, params, _ = _setup(tx)
  state = _BatchNormState.create(apply_fn=model.apply, params=params, tx=tx, batch_stats={"mean": jnp.zeros(2)})
  grads = jax.tree.map(jnp.ones_like, params)
  step = jax.jit(lambda s, v, bs: s.apply_gradients(grads=grads, value=v, batch_stats=bs))
  state = step(state, 1.0, {"mean": jnp.ones(2)})
  state = step(state, 2.0, {"mean": jnp.full(2, 2.0)})
  assert type(state) is _BatchNormState
  np.testing.assert_array_equal(state.batch_stats["mean"], [2.0, 2.0])
  assert float(plateau.scale(state)) == 0.5 and int(state.step) == 2


def test_plateau_driven_per_epoch_through_the_train_state():
  """Per update without ``value``, ``plateau.step`` once per epoch (the torch loop)."""
  tx = optax.chain(optax.sgd(1.0), plateau.reduce_on_plateau(factor=0.5, patience=0))
  model, params, _ = _setup(tx)
  state = training.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  grads = jax.tree.map(jnp.ones_like, params)
  update = jax.jit(lambda s: s.apply_gradients(grads=grads))
  epoch_end = jax.jit(plateau.step)
  deltas = []
  for val_loss in [1.0, 2.0, 3.0]:
    before = state.params["bias"][0]
    state = update(state)
    deltas.append(float(before - state.params["bias"][0]))
    state = epoch_end(state, val_loss)
    assert type(state) is training.TrainState
  assert deltas == [1.0, 1.0, 0.5]  # the reduction after epoch 2 applies from epoch 3's update
  assert float(plateau.scale(state)) == 0.25


# ------------------------------------------------------------------ misuse (issue #21 item 4)
def test_a_misspelled_extra_argument_is_a_value_error_naming_the_known_ones():
  """``apply_gradients(grads=g, vale=loss)`` used to reach no transform: the plateau never moved."""
  tx = optax.chain(optax.sgd(0.1), plateau.reduce_on_plateau(factor=0.5, patience=0))
  model, params, _ = _setup(tx)
  state = training.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  grads = jax.tree.map(jnp.ones_like, params)
  known = r"unknown argument 'vale' \(did you mean 'value'\?\).*grad, value, value_fn"
  with pytest.raises(ValueError, match=known):
    state.apply_gradients(grads=grads, vale=1.0)
  with pytest.raises(ValueError, match=known):  # inside jit too, while tracing
    jax.jit(lambda s, v: s.apply_gradients(grads=grads, vale=v))(state, 1.0)


def test_a_subclass_declares_the_extra_arguments_of_its_own_transforms():
  seen = []

  def by_temperature():
    def update(updates, state, params=None, *, temperature=None, **extra):
      del params, extra
      seen.append(temperature)
      return updates, state
    return optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)

  class TemperatureState(training.TrainState):
    extra_args = training.TrainState.extra_args | {"temperature"}

  model, params, _ = _setup(None)
  state = TemperatureState.create(apply_fn=model.apply, params=params,
                                  tx=optax.chain(optax.sgd(0.1), by_temperature()))
  state.apply_gradients(grads=jax.tree.map(jnp.ones_like, params), temperature=0.5)
  assert seen == [0.5]
  with pytest.raises(ValueError, match="'temperatur'.*did you mean 'temperature'"):
    state.apply_gradients(grads=jax.tree.map(jnp.ones_like, params), temperatur=0.5)


def test_value_on_every_step_and_plateau_step_per_epoch_is_an_error_at_the_first_conflict():
  """Both drivers count each evaluation twice: the first ``plateau.step`` after ``value=`` steps raises."""
  tx = optax.chain(optax.sgd(1.0), plateau.reduce_on_plateau(factor=0.5, patience=0))
  model, params, _ = _setup(tx)
  state = training.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  grads = jax.tree.map(jnp.ones_like, params)
  step = jax.jit(lambda s, v: s.apply_gradients(grads=grads, value=v))
  for loss in [1.0, 2.0]:
    state = step(state, loss)
  assert float(plateau.scale(state)) == 0.5  # value= alone works
  with pytest.raises(ValueError, match=r"driven twice.*drop value= from the update calls.*plateau.step"):
    state = plateau.step(state, 3.0)
  # The other order: plateau.step first, then an update with value (eager: raises at that update;
  # jitted: recorded in the state, raised by the next plateau.step).
  fresh = training.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  fresh = plateau.step(fresh, 1.0)
  with pytest.raises(ValueError, match="driven twice"):
    fresh.apply_gradients(grads=grads, value=1.0)
  fresh = step(fresh, 1.0)
  with pytest.raises(ValueError, match="driven twice"):
    fresh = plateau.step(fresh, 1.0)


def test_per_epoch_alone_and_per_update_alone_are_fine():
  tx = optax.chain(optax.sgd(1.0), plateau.reduce_on_plateau(factor=0.5, patience=0))
  model, params, _ = _setup(tx)
  grads = jax.tree.map(jnp.ones_like, params)
  state = training.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  for val_loss in [1.0, 2.0, 3.0]:
    state = plateau.step(state.apply_gradients(grads=grads), val_loss)
  assert float(plateau.scale(state)) == 0.25
