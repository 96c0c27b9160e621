"""Flax linen / NNX training loops and Orbax save-restore of a full recipe's state."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import _orbax_resume as worker
from jaxopt_practices import (adaptive, cli, flat, initializers, lr_finder, monitor, parallel, plateau, recipe,
                              regularization, tour)


def _digits(n=256):
  from sklearn.datasets import load_digits
  d = load_digits()
  x = (d.data[:n] / 16.0).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(d.target[:n].astype(np.int32))


class LinenMLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(32, kernel_init=initializers.he_normal())(x))
    return nn.Dense(10, kernel_init=initializers.xavier_uniform())(x)


def test_linen_train_state_loop_with_recipe_and_monitor():
  x, y = _digits()
  model = LinenMLP()
  tx = monitor.track(recipe.build(recipe.preset("transformer-adamw", total_steps=60, learning_rate=1e-2)))
  state = train_state.TrainState.create(apply_fn=model.apply,
                                        params=model.init(jax.random.PRNGKey(0), x[:1])["params"], tx=tx)

  @jax.jit
  def step(state):
    def loss_fn(p):
      logits = state.apply_fn({"params": p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  losses = []
  for _ in range(60):
    state, loss = step(state)
    losses.append(float(loss))
  assert losses[-1] < 0.3 * losses[0]
  assert int(monitor.stats(state.opt_state)["step"]) == 60


def test_linen_train_state_with_plateau_value():
  """``TrainState.apply_gradients`` does not forward ``value``: call ``tx.update`` directly."""
  x, y = _digits()
  model = LinenMLP()
  tx = optax.chain(adaptive.adam(1e-2), plateau.reduce_on_plateau(factor=0.5, patience=2))
  state = train_state.TrainState.create(apply_fn=model.apply,
                                        params=model.init(jax.random.PRNGKey(0), x[:1])["params"], tx=tx)

  @jax.jit
  def step(state):
    loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(state.apply_fn({"params": p}, x), y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params, value=loss)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), loss

  for _ in range(40):
    state, loss = step(state)
  assert float(loss) < 1.0
  assert 0.0 < float(plateau.scale(state.opt_state[1])) <= 1.0


class NnxMLP(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.l1 = nnx.Linear(64, 32, kernel_init=initializers.he_normal(), rngs=rngs)
    self.l2 = nnx.Linear(32, 10, kernel_init=initializers.xavier_uniform(), rngs=rngs)

  def __call__(self, x):
    return self.l2(nnx.relu(self.l1(x)))


def test_nnx_optimizer_forwards_value_to_the_plateau_scheduler():
  x, y = _digits()
  model = NnxMLP(nnx.Rngs(0))
  tx = recipe.build({"optimizer": {"name": "adamw", "learning_rate": 1e-2, "mask": "auto"},
                     "plateau": {"factor": 0.5, "patience": 0, "threshold": 0.5}})
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer):
    loss_fn = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads, value=loss)
    return loss

  losses = [float(step(model, optimizer)) for _ in range(30)]
  assert losses[-1] < losses[0]
  # The loss keeps falling, but not by the 50% the threshold asks for: every step is "bad".
  assert float(plateau.scale(optimizer.opt_state)) < 1.0


def test_orbax_resume_in_fresh_process_is_bitwise(tmp_path):
  params, tx, opt_state = worker.init()
  full_params, full_state = worker.train(params, tx, opt_state, 0, 12)
  mid_params, mid_state = worker.train(params, tx, opt_state, 0, 5)
  ckpt = tmp_path / "ckpt"
  worker.save(ckpt, mid_params, mid_state)
  out = tmp_path / "resumed.npz"
  here = pathlib.Path(__file__).parent
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.run([sys.executable, str(here / "_orbax_resume.py"), str(ckpt), "5", "7", str(out)],
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  resumed = np.load(out)
  expected = jax.tree.leaves({"params": full_params, "opt_state": full_state})
  assert len(resumed.files) == len(expected)
  for i, want in enumerate(expected):
    np.testing.assert_array_equal(resumed[f"arr_{i}"], np.asarray(want), err_msg=f"leaf {i} differs")
  ema = regularization.ema_params(full_state)
  chex.assert_trees_all_equal_shapes(ema, full_params)


def test_orbax_restore_into_mismatched_structure_fails_clearly(tmp_path):
  params, tx, opt_state = worker.init()
  worker.save(tmp_path / "ckpt", params, opt_state)
  other_tx = adaptive.adam(1e-3)
  wrong = {"params": params, "opt_state": other_tx.init(params)}
  with pytest.raises(ValueError, match="tree structures do not match"):
    worker.restore(tmp_path / "ckpt", wrong)


@pytest.mark.parametrize("module", [cli, flat, lr_finder, monitor, parallel, tour], ids=lambda m: m.__name__)
def test_all_is_complete_and_true(module):
  """Every name in ``__all__`` exists, and every public function or class of the package is listed."""
  assert all(hasattr(module, name) for name in module.__all__)
  assert len(set(module.__all__)) == len(module.__all__)
  public = {name for name, value in vars(module).items()
            if not name.startswith("_") and callable(value)
            and getattr(value, "__module__", "").startswith("jaxopt_practices")}
  assert public <= set(module.__all__), sorted(public - set(module.__all__))
