"""monitor.track / monitor.stats: the live learning rate and gradient health."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import grad_stream, nested_params
from jaxopt_practices import adaptive, clipping, momentum, monitor, plateau, schedules


def _flat_norm(tree):
  return float(np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(tree))))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_norms_match_numpy(jit):
  params = nested_params()
  tx = monitor.track(adaptive.adamw(1e-2, weight_decay=0.1))
  update = jax.jit(tx.update) if jit else tx.update
  state = tx.init(params)
  for g in grad_stream(params, 3):
    updates, state = update(g, state, params)
    s = monitor.stats(state)
    np.testing.assert_allclose(float(s["grad_norm"]), _flat_norm(g), rtol=1e-5)
    np.testing.assert_allclose(float(s["update_norm"]), _flat_norm(updates), rtol=1e-5)
    np.testing.assert_allclose(float(s["param_norm"]), _flat_norm(params), rtol=1e-5)
    np.testing.assert_allclose(float(s["update_param_ratio"]), _flat_norm(updates) / _flat_norm(params), rtol=1e-5)
    params = optax.apply_updates(params, updates)
  assert int(s["step"]) == 3 and int(s["nonfinite_count"]) == 0


def test_learning_rate_is_schedule_times_plateau_scale():
  sched = schedules.warmup(schedules.cosine_annealing(0.1, t_max=20), 5)
  tx = monitor.track(optax.chain(momentum.sgd(sched, momentum=0.9),
                                 plateau.reduce_on_plateau(factor=0.5, patience=0)))
  params = jnp.ones(4)
  state = tx.init(params)
  update = jax.jit(tx.update)
  seen_reduction = False
  for t in range(12):
    # A loss that stops improving after step 3 so the plateau scheduler reduces.
    _, state = update(jnp.ones(4), state, params, value=jnp.float32(max(5 - t, 1)))
    s = monitor.stats(state)
    inner_plateau = [x for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, plateau.ReduceOnPlateauState))
                     if isinstance(x, plateau.ReduceOnPlateauState)][0]
    scale = float(plateau.scale(inner_plateau))
    seen_reduction |= scale < 1.0
    np.testing.assert_allclose(float(s["learning_rate"]), float(sched(t)) * scale, rtol=1e-6)
  assert seen_reduction, "the loss stream should have triggered a plateau reduction"


def test_learning_rate_of_injected_optax_optimizer_and_adagrad_decay():
  tx = monitor.track(optax.inject_hyperparams(optax.adam)(learning_rate=3e-3))
  with jax.numpy_dtype_promotion("standard"):  # optax's own Adam mixes int32 and float32
    _, state = tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2))
  np.testing.assert_allclose(float(monitor.stats(state)["learning_rate"]), 3e-3, rtol=1e-6)
  tx = monitor.track(adaptive.adagrad(0.1, lr_decay=0.5))
  state = tx.init(jnp.ones(2))
  for t in range(3):
    _, state = tx.update(jnp.ones(2), state, jnp.ones(2))
    np.testing.assert_allclose(float(monitor.stats(state)["learning_rate"]), 0.1 / (1 + 0.5 * t), rtol=1e-6)


def test_learning_rate_is_nan_when_not_observable():
  tx = monitor.track(optax.adam(1e-3))
  with jax.numpy_dtype_promotion("standard"):
    _, state = tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2))
  assert np.isnan(float(monitor.stats(state)["learning_rate"]))


def test_nonfinite_count_and_stats_inside_jit_without_extra_compilation():
  chex.clear_trace_counter()
  tx = monitor.track(clipping.skip_nonfinite(momentum.sgd(0.1)))
  params = jnp.ones(3)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(params, state, g):
    updates, state = tx.update(g, state, params)
    return optax.apply_updates(params, updates), state, monitor.stats(state)

  state = tx.init(params)
  bad = {1, 4, 5}
  for t in range(7):
    g = jnp.full(3, jnp.nan, jnp.float32) if t in bad else jnp.ones(3, jnp.float32)
    params, state, s = step(params, state, g)
  assert int(s["nonfinite_count"]) == len(bad)
  assert int(s["step"]) == 7
  np.testing.assert_allclose(np.asarray(params), 1.0 - 0.1 * (7 - len(bad)), rtol=1e-6)


def test_stats_finds_track_inside_a_chain_and_raises_without_it():
  tx = optax.chain(optax.identity(), monitor.track(momentum.sgd(0.5)))
  _, state = tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2))
  assert float(monitor.stats(state)["learning_rate"]) == 0.5
  with pytest.raises(ValueError, match="monitor.track"):
    monitor.stats(momentum.sgd(0.1).init(jnp.ones(2)))


def test_every_k_measures_on_every_kth_step_only():
  tx = monitor.track(momentum.sgd(0.1), every=3)
  params, state = jnp.ones(2), None
  state = tx.init(params)
  update = jax.jit(tx.update)
  seen = []
  for t in range(7):
    g = jnp.full(2, float(t + 1), jnp.float32)
    if t == 4:
      g = jnp.full(2, jnp.nan, jnp.float32)
    _, state = update(g, state, params)
    seen.append(float(monitor.stats(state)["grad_norm"]))
  # Measured at t = 0, 3, 6: |g| = sqrt(2) * (t + 1); the NaN at t = 4 is not measured.
  expected = [1, 1, 1, 4, 4, 4, 7]
  np.testing.assert_allclose(seen, np.sqrt(2.0) * np.array(expected), rtol=1e-6)
  assert int(monitor.stats(state)["step"]) == 7 and int(monitor.stats(state)["nonfinite_count"]) == 0
  with pytest.raises(ValueError, match="every"):
    monitor.track(momentum.sgd(0.1), every=0)


def test_huge_finite_gradients_are_not_counted_as_nonfinite():
  tx = monitor.track(momentum.sgd(0.1))
  _, state = tx.update(jnp.full(3, 1e30, jnp.float32), tx.init(jnp.ones(3)), jnp.ones(3))
  assert int(monitor.stats(state)["nonfinite_count"]) == 0


@pytest.mark.parametrize("every", [1, 2])
def test_norms_stay_finite_near_the_float32_max(every):
  """Like clip_by_global_norm's, the norms come from the overflow-safe kernel: no inf for finite inputs."""
  g = jnp.full(3, 1e38, jnp.float32)  # squares overflow float32; |g| = 1.73e38 does not
  params = jnp.full(3, 1.5e38, jnp.float32)
  tx = monitor.track(momentum.sgd(1.0), every=every)
  _, state = jax.jit(tx.update)(g, tx.init(params), params)
  s = monitor.stats(state)
  np.testing.assert_allclose(float(s["grad_norm"]), np.sqrt(3.0) * 1e38, rtol=1e-6)
  np.testing.assert_allclose(float(s["update_norm"]), np.sqrt(3.0) * 1e38, rtol=1e-6)
  np.testing.assert_allclose(float(s["param_norm"]), np.sqrt(3.0) * 1.5e38, rtol=1e-6)
  assert int(s["nonfinite_count"]) == 0


def test_count_is_the_update_counter_and_inner_must_be_a_transform():
  tx = monitor.track(momentum.sgd(0.1))
  state = tx.init(jnp.ones(2))
  for _ in range(2):
    _, state = tx.update(jnp.ones(2), state, jnp.ones(2))
  assert isinstance(state, monitor.TrackState) and int(state.count) == 2
  assert int(monitor.stats(state)["step"]) == 2
  with pytest.raises(ValueError, match="inner"):
    monitor.track("x")


def test_state_can_be_donated():
  tx = monitor.track(adaptive.adamw(1e-3))
  params = jnp.ones(4)
  step = jax.jit(lambda p, s: tx.update(jnp.ones(4), s, p), donate_argnums=(1,))
  state = tx.init(params)
  for _ in range(2):
    _, state = step(params, state)
  assert int(monitor.stats(state)["step"]) == 2
