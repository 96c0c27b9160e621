"""Issue #21 item 1: decoupled decay in optax's slot (before the lr scaling) is refused.

Also the forms that take the optimizer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_practices import adaptive, groups, recipe, regularization, schedules


def _zero_grad_steps(tx, steps=100, jit=False):
  p = {"w": jnp.ones((2, 2))}
  state = tx.init(p)
  update = jax.jit(tx.update) if jit else tx.update
  for _ in range(steps):
    u, state = update(jax.tree.map(jnp.zeros_like, p), state, p)
    p = optax.apply_updates(p, u)
  return float(p["w"][0, 0])


@pytest.mark.parametrize("jit", [False, True])
def test_the_issue_example_raises_at_the_first_update_naming_the_fix(jit):
  tx = optax.chain(adaptive.scale_by_adam(), regularization.decoupled_weight_decay(0.01),
                   schedules.scale_by_learning_rate(0.1))
  with pytest.raises(ValueError, match=r"before the learning-rate scaling.*weights grow.*inner=optimizer"):
    _zero_grad_steps(tx, jit=jit)
  # masks, groups and every mask form: the decayed leaves are still recognised
  tx = optax.chain(adaptive.scale_by_adam(), groups.weight_decay(0.01, None, wd_mults=[("w", 2.0)]),
                   schedules.scale_by_learning_rate(0.1))
  with pytest.raises(ValueError, match="before the learning-rate scaling"):
    _zero_grad_steps(tx, jit=jit)


def test_the_forms_that_take_the_optimizer_decay_as_meant():
  core = lambda: optax.chain(adaptive.scale_by_adam(), schedules.scale_by_learning_rate(0.1))  # noqa: E731
  # optax's AdamW (add_decayed_weights in its slot): 1 -> (1 - 0.1 * 0.01)^100 = 0.905
  optax_adamw = _zero_grad_steps(optax.chain(adaptive.scale_by_adam(), optax.add_decayed_weights(0.01),
                                             schedules.scale_by_learning_rate(0.1)))
  np.testing.assert_allclose(optax_adamw, (1 - 1e-3) ** 100, rtol=1e-5)
  following = _zero_grad_steps(regularization.decoupled_weight_decay(0.01, None, learning_rate=0.1, inner=core()))
  np.testing.assert_allclose(following, optax_adamw, rtol=1e-5)  # torch rounds 1 - lr*wd first
  independent = _zero_grad_steps(regularization.decoupled_weight_decay(0.01, None, inner=core()))
  np.testing.assert_allclose(independent, 0.99 ** 100, rtol=1e-5)
  # the old call, placed after the lr scaling, is unchanged
  old = _zero_grad_steps(optax.chain(core(), regularization.decoupled_weight_decay(0.01, None, learning_rate=0.1)))
  assert old == following


def test_correct_placements_never_trip_the_check():
  """adamw, groups.weight_decay chains, the recipe and a scale_by_learning_rate in a *later* step."""
  p = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
  g = jax.tree.map(jnp.ones_like, p)
  for tx in (adaptive.adamw(0.1), recipe.build(recipe.preset("fastai-one-cycle", total_steps=10)),
             groups.weight_decay(0.01, None, learning_rate=0.1, lr_mults=[("w", 2.0)], wd_mults=[("b", 0.5)]),
             optax.chain(schedules.scale_by_learning_rate(0.1), regularization.decoupled_weight_decay(0.1),
                         schedules.scale_by_learning_rate(1.0, flip_sign=False))):
    state = tx.init(p)
    for _ in range(2):
      u, state = tx.update(g, state, p)
      p = optax.apply_updates(p, u)
  # the updates a decay returned, fed to a scaling in the next step by hand, are a different step's
  decay, scale = regularization.decoupled_weight_decay(0.1, None), schedules.scale_by_learning_rate(0.1)
  u, _ = decay.update(g, decay.init(p), p)
  with pytest.raises(ValueError, match="before the learning-rate scaling"):
    scale.update(u, scale.init(p))
  del u
  u2, _ = scale.update(jax.tree.map(lambda x: x + 0.0, g), scale.init(p))
  assert jax.tree.structure(u2) == jax.tree.structure(g)


def test_inner_bad_argument():
  with pytest.raises(ValueError, match="inner"):
    regularization.decoupled_weight_decay(0.1, inner=optax.sgd)
