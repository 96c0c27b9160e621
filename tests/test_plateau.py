"""Tests for ``jaxopt_practices.plateau``: PyTorch parity, timing, NaN, pmap, Flax integration."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_practices import plateau

torch = pytest.importorskip("torch")

NUM_DEVICES = 8


def _grid(x):
  """Values on a 1/64 grid: exact in float32 and float64, so comparisons never hinge on round-off."""
  return np.round(np.asarray(x, np.float64) * 64.0) / 64.0


def _streams():
  rng = np.random.default_rng(0)
  n = 120
  t = np.arange(n)
  decreasing = _grid(2.0 * np.exp(-t / 15) + 0.3 + 0.05 * rng.standard_normal(n))
  negative = _grid(-1.0 - 2.0 * (1 - np.exp(-t / 20)) + 0.05 * rng.standard_normal(n))
  walk = _grid(5.0 + np.cumsum(0.1 * rng.standard_normal(n)))
  with_nan = decreasing.copy()
  with_nan[[5, 6, 40, 41, 42, 90]] = np.nan
  with_inf = walk.copy()
  with_inf[[3, 20, 21, 50, 70]] = np.inf  # the "worse" infinity; flipped for mode="max" below
  accuracy = _grid(np.minimum(0.95, 0.5 + 0.4 * (1 - np.exp(-t / 25))) + 0.02 * rng.standard_normal(n))
  flat = np.ones(n)
  return {"decreasing": decreasing, "negative": negative, "walk": walk, "nan": with_nan, "inf": with_inf,
          "accuracy": accuracy, "flat": flat}


STREAMS = _streams()

CONFIGS = [
    dict(),
    dict(factor=0.5, patience=2),
    dict(factor=0.5, patience=0, threshold=0.0),
    dict(factor=0.3, patience=3, cooldown=4),
    dict(factor=0.5, patience=1, threshold=0.05, threshold_mode="abs", cooldown=2),
    dict(factor=0.5, patience=1, min_scale=0.05),
    dict(factor=0.1, patience=0, min_scale=0.0),  # hits PyTorch's eps rule at 1e-8
    dict(factor=0.0, patience=4, min_scale=0.01),
    dict(factor=0.5, patience=2, threshold=0.01, mode="max"),
    dict(factor=0.5, patience=1, threshold=0.02, threshold_mode="abs", mode="max", cooldown=1),
    dict(factor=0.7, patience=1, accumulation_size=3),
    dict(factor=0.5, patience=0, accumulation_size=4, mode="max", threshold_mode="abs", threshold=0.0),
]


def torch_lrs(stream, config, base_lr=1.0):
  """The lr PyTorch uses in each optimizer step, stepping the scheduler after each window."""
  config = dict(config)
  k = config.pop("accumulation_size", 1)
  if "min_scale" in config:
    config["min_lr"] = config.pop("min_scale") * base_lr
  p = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.SGD([p], lr=base_lr)
  sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **config)
  lrs, window = [], []
  for v in stream:
    lrs.append(opt.param_groups[0]["lr"])
    opt.step()
    window.append(float(v))
    if len(window) == k:
      sched.step(float(np.mean(window)))
      window = []
  return np.asarray(lrs) / base_lr


@functools.cache
def _scan(items):
  """One compiled ``lax.scan`` over a whole stream per configuration."""
  tx = plateau.reduce_on_plateau(**dict(items))

  def body(state, v):
    u, state = tx.update(jnp.ones(1), state, value=v)
    return state, u[0]

  return tx, jax.jit(lambda stream: jax.lax.scan(body, tx.init(jnp.zeros(1)), stream)[::-1])


def our_scales(stream, config, jit=True, **kwargs):
  if jit:
    _, run = _scan(tuple(sorted({**config, **kwargs}.items())))
    out, state = run(jnp.asarray(stream, jnp.float32))
    return np.asarray(out, np.float64), state
  tx = plateau.reduce_on_plateau(**config, **kwargs)
  state = tx.init(jnp.zeros(1))
  out = []
  for v in stream:
    u, state = tx.update(jnp.ones(1), state, value=jnp.float32(v))
    out.append(float(u[0]))
  return np.asarray(out), state


@pytest.mark.parametrize("stream_name", list(STREAMS))
@pytest.mark.parametrize("config", CONFIGS, ids=[f"cfg{i}" for i in range(len(CONFIGS))])
def test_torch_parity(stream_name, config):
  stream = STREAMS[stream_name]
  if stream_name == "inf" and config.get("mode") == "max":
    stream = np.where(np.isinf(stream), -np.inf, stream)
  # Only the "better" infinity differs from PyTorch, which adopts it as the best (see
  # test_nonfinite_is_a_bad_evaluation_and_never_best); NaN and the worse infinity match.
  ref = torch_lrs(stream, config)
  ours, state = our_scales(stream, config)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=0.0)
  assert np.isfinite(float(state.best)) or not np.any(np.isfinite(stream))


def test_torch_parity_other_base_lr_and_eager():
  """With base lr 0.5, PyTorch's eps (in lr units) is eps / base_lr on our scale."""
  stream, config = STREAMS["flat"][:40], dict(factor=0.1, patience=0)
  ref = torch_lrs(stream, config, base_lr=0.5)
  ours, _ = our_scales(stream, config, jit=False, eps=1e-8 / 0.5)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=0.0)
  # lr 5e-9: the next reduction (to 5e-10) changes the lr by less than eps = 1e-8, so it stops.
  assert ours[-1] == pytest.approx(1e-8, rel=1e-5)


def test_reduction_applies_from_the_next_update():
  tx = plateau.reduce_on_plateau(factor=0.5, patience=0)
  state = tx.init({"w": jnp.zeros(2)})
  scales = []
  for v in [1.0, 2.0, 0.5, 0.6]:
    u, state = tx.update({"w": jnp.ones(2)}, state, value=v)
    scales.append(float(u["w"][0]))
  # 1.0 best; 2.0 bad -> reduce, seen at the 3rd update; 0.5 best; 0.6 bad -> reduce, seen next.
  assert scales == [1.0, 1.0, 0.5, 0.5]
  assert float(plateau.scale(state)) == 0.25


def test_accumulation_uses_the_window_mean():
  tx = plateau.reduce_on_plateau(factor=0.5, patience=0, threshold=0.0, accumulation_size=2)
  state = tx.init(jnp.zeros(1))
  seen = []
  for v in [1.0, 1.0, 0.0, 1.8, 0.0, 2.2]:  # means: 1.0 (best), 0.9 (better), 1.1 (bad)
    u, state = tx.update(jnp.ones(1), state, value=v)
    seen.append(float(u[0]))
  assert seen == [1.0] * 6
  assert float(state.best) == pytest.approx(0.9)
  assert float(plateau.scale(state)) == 0.5
  assert int(state.window_count) == 0 and float(state.window_sum) == 0.0


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_nonfinite_is_a_bad_evaluation_and_never_best(bad_value):
  tx = plateau.reduce_on_plateau(factor=0.5, patience=1)
  state = tx.init(jnp.zeros(1))
  for v in [1.0, bad_value, bad_value]:
    _, state = tx.update(jnp.ones(1), state, value=v)
  assert float(state.best) == 1.0
  assert float(plateau.scale(state)) == 0.5  # two bad evaluations > patience 1


def test_pmap_replicas_identical_with_different_losses():
  tx = plateau.reduce_on_plateau(factor=0.5, patience=0, axis_name="i")
  params = jnp.zeros(3)
  losses = np.asarray([[1.0 + 0.3 * d + 0.5 * s for d in range(NUM_DEVICES)] for s in range(4)], np.float32)

  def step(g, state, loss):
    return tx.update(g, state, value=loss)

  pstep = jax.pmap(step, axis_name="i")
  state = jax.tree.map(lambda x: jnp.broadcast_to(x, (NUM_DEVICES,) + x.shape), tx.init(params))
  g = jnp.ones((NUM_DEVICES, 3))
  for s in range(4):
    u, state = pstep(g, state, jnp.asarray(losses[s]))
  for leaf in jax.tree.leaves((u, state)):
    leaf = np.asarray(leaf)
    for d in range(1, NUM_DEVICES):
      np.testing.assert_array_equal(leaf[d], leaf[0])
  _, ref_state = our_scales(losses.mean(axis=1), dict(factor=0.5, patience=0), jit=False)
  np.testing.assert_allclose(np.asarray(state.scale[0]), np.asarray(ref_state.scale), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(state.best[0]), np.asarray(ref_state.best), rtol=1e-6)
  assert float(state.scale[0]) == 0.125  # rising mean loss: reductions after the 2nd, 3rd, 4th value


def test_in_chain_with_inject_hyperparams_and_scale_lookup():
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.inject_hyperparams(optax.sgd)(learning_rate=0.1),
                   optax.inject_hyperparams(plateau.reduce_on_plateau)(factor=0.5, patience=1))
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  for v in [1.0, 1.0, 1.0, 1.0]:
    u, state = update({"w": jnp.full(3, 0.1)}, state, params, value=v)
  assert float(plateau.scale(state)) == 0.5
  chex.assert_trees_all_close(u["w"], jnp.full(3, -0.1 * 0.1 * 0.5), rtol=1e-6)
  with pytest.raises(ValueError, match="found no ReduceOnPlateauState"):
    plateau.scale(optax.sgd(0.1).init(params))


def test_flax_nnx_optimizer_update_with_value():
  nnx = pytest.importorskip("flax.nnx")
  model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
  tx = optax.chain(optax.sgd(0.1), plateau.reduce_on_plateau(factor=0.5, patience=0))
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x, y = jnp.ones((4, 3)), jnp.zeros((4, 1))

  @nnx.jit
  def train_step(model, opt, x, y, shift):
    def loss_fn(m):
      return jnp.mean((m(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads, value=loss + shift)
    return loss

  for shift in [0.0, 100.0, 200.0]:  # rising reported loss -> reductions
    train_step(model, opt, x, y, jnp.float32(shift))
  assert float(plateau.scale(opt.opt_state)) == 0.25


def test_flax_linen_train_state_pattern():
  from flax import linen as nn
  from flax.training import train_state

  model = nn.Dense(1)
  params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 3)))["params"]
  tx = optax.chain(optax.sgd(0.1), plateau.reduce_on_plateau(factor=0.5, patience=0))
  state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  grads = jax.tree.map(jnp.ones_like, params)
  # flax's apply_gradients does not forward extra kwargs to tx.update (they are dataclass fields);
  # training.TrainState does (tests/test_training.py).
  with pytest.raises(TypeError):
    state.apply_gradients(grads=grads, value=1.0)

  @jax.jit
  def step(state, grads, loss):  # the working pattern
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params, value=loss)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state)

  for loss in [1.0, 2.0, 3.0]:
    state = step(state, grads, jnp.float32(loss))
  assert float(plateau.scale(state.opt_state)) == 0.25
  assert int(state.step) == 3


def test_value_must_be_scalar():
  tx = plateau.reduce_on_plateau()
  with pytest.raises(ValueError, match="scalar"):
    tx.update(jnp.ones(2), tx.init(jnp.zeros(2)), value=jnp.ones(2))


# ----------------------------------------------------------------------------- once per epoch: plateau.step
EPOCH_CONFIGS = [c for c in CONFIGS if "accumulation_size" not in c]
UPDATES_PER_EPOCH = 3


def torch_lrs_per_epoch(stream, config, base_lr=1.0):
  """The lr of each optimizer step when ``scheduler.step(v)`` is called after every epoch."""
  config = dict(config)
  if "min_scale" in config:
    config["min_lr"] = config.pop("min_scale") * base_lr
  p = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.SGD([p], lr=base_lr)
  sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **config)
  lrs = []
  for v in stream:
    for _ in range(UPDATES_PER_EPOCH):
      lrs.append(opt.param_groups[0]["lr"])
      opt.step()
    sched.step(float(v))
  return np.asarray(lrs) / base_lr


@pytest.mark.parametrize("config", EPOCH_CONFIGS, ids=[f"cfg{i}" for i in range(len(EPOCH_CONFIGS))])
def test_step_once_per_epoch_torch_parity(config):
  """``update`` without value during the epoch, ``plateau.step(state, v)`` after it: torch's lrs."""
  tx = optax.chain(optax.identity(), plateau.reduce_on_plateau(**config))

  def epoch(state, v):
    scales = []
    for _ in range(UPDATES_PER_EPOCH):
      u, state = tx.update(jnp.ones(1), state)
      scales.append(u[0])
    return plateau.step(state, v), jnp.stack(scales)

  run = jax.jit(lambda stream: jax.lax.scan(epoch, tx.init(jnp.zeros(1)), stream)[1].reshape(-1))
  for name, stream in STREAMS.items():
    stream = stream[:60]
    if name == "inf" and config.get("mode") == "max":
      stream = np.where(np.isinf(stream), -np.inf, stream)
    ref = torch_lrs_per_epoch(stream, config)
    np.testing.assert_allclose(np.asarray(run(jnp.asarray(stream, jnp.float32)), np.float64), ref, rtol=1e-5,
                               atol=0.0, err_msg=name)


def _regression_data():
  rng = np.random.default_rng(0)
  w = rng.standard_normal((4, 1))
  x = rng.standard_normal((64, 4)).astype(np.float32)
  y = (x @ w + 0.5 * rng.standard_normal((64, 1))).astype(np.float32)
  xv = rng.standard_normal((32, 4)).astype(np.float32)
  yv = (xv @ w + 0.5 * rng.standard_normal((32, 1))).astype(np.float32)
  return [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)], (xv, yv)


def test_sgd_with_validation_loss_per_epoch_matches_torch_step_by_step():
  """torch SGD(momentum) + ReduceLROnPlateau.step(val_loss) per epoch: same params after every update.

  Twelve epochs of four updates; the validation loss plateaus, so the lr is halved three
  times (after epochs 4, 7 and 10), each followed by a cooldown epoch.
  """
  from jaxopt_practices import momentum

  batches, (xv, yv) = _regression_data()
  config = dict(factor=0.5, patience=1, cooldown=1, threshold=0.01)
  lin = torch.nn.Linear(4, 1)
  opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
  sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **config)

  def loss_fn(p, x, y):
    return jnp.mean(jnp.square(x @ p["w"] + p["b"][None, :] - y))

  tx = optax.chain(momentum.sgd(0.1, momentum=0.9), plateau.reduce_on_plateau(**config, eps=1e-8 / 0.1))
  params = {"w": jnp.asarray(lin.weight.detach().numpy().T), "b": jnp.asarray(lin.bias.detach().numpy())}
  state = tx.init(params)

  @jax.jit
  def train_step(params, state, x, y):
    updates, state = tx.update(jax.grad(loss_fn)(params, x, y), state, params)  # no value
    return optax.apply_updates(params, updates), state

  epoch_end = jax.jit(plateau.step)
  lrs = []
  for _ in range(12):
    for x, y in batches:
      opt.zero_grad()
      torch.mean((lin(torch.tensor(x)) - torch.tensor(y)) ** 2).backward()
      opt.step()
      params, state = train_step(params, state, x, y)
      np.testing.assert_allclose(params["w"], lin.weight.detach().numpy().T, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(params["b"], lin.bias.detach().numpy(), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
      torch_val = float(torch.mean((lin(torch.tensor(xv)) - torch.tensor(yv)) ** 2))
    val = loss_fn(params, xv, yv)
    np.testing.assert_allclose(float(val), torch_val, rtol=1e-5)
    sched.step(torch_val)
    state = epoch_end(state, val)
    lrs.append(opt.param_groups[0]["lr"])
    assert float(plateau.scale(state)) * 0.1 == pytest.approx(lrs[-1], rel=1e-6)
  assert lrs[-1] == pytest.approx(0.1 / 8) and len(set(lrs)) == 4  # three reductions


def test_step_on_a_replicated_state_inside_and_outside_pmap():
  tx = optax.chain(optax.identity(), plateau.reduce_on_plateau(factor=0.5, patience=0))
  rep = jax.tree.map(lambda x: jnp.broadcast_to(x, (NUM_DEVICES,) + x.shape), tx.init(jnp.zeros(2)))
  outside = plateau.step(plateau.step(rep, 1.0), 2.0)  # host-side value, the same for every replica
  pstep = jax.pmap(lambda s, v: plateau.step(s, v, axis_name="i"), axis_name="i")
  inside = rep
  for base in [1.0, 2.0]:  # per-replica values whose mean rises
    inside = pstep(inside, jnp.asarray(base + 0.1 * np.arange(NUM_DEVICES) - 0.35, jnp.float32))
  for state in (outside, inside):
    np.testing.assert_array_equal(plateau.scale(state), np.full(NUM_DEVICES, 0.5, np.float32))
    np.testing.assert_allclose(state[1].best, np.full(NUM_DEVICES, 1.0, np.float32), rtol=1e-6)


def test_update_without_value_only_scales_and_keeps_the_state():
  tx = plateau.reduce_on_plateau(factor=0.5, patience=0)
  state = plateau.step(plateau.step(tx.init(jnp.zeros(2)), 1.0), 2.0)
  u, new = jax.jit(tx.update)(jnp.ones(2), state)
  np.testing.assert_array_equal(u, [0.5, 0.5])
  chex.assert_trees_all_equal(new, state)


def test_rule_is_in_the_state_and_follows_inject_hyperparams():
  tx = optax.inject_hyperparams(plateau.reduce_on_plateau)(factor=0.5, patience=0, mode="max")
  state = tx.init(jnp.zeros(1))
  rule = state.inner_state.rule
  assert (float(rule.factor), int(rule.patience), rule.mode, rule.threshold_mode) == (0.5, 0, "max", "rel")
  state.hyperparams["factor"] = jnp.asarray(0.25, state.hyperparams["factor"].dtype)
  _, state = tx.update(jnp.ones(1), state)  # writes the injected factor into the rule
  state = plateau.step(plateau.step(state, 2.0), 1.0)  # mode="max": 1.0 is worse
  assert float(plateau.scale(state)) == 0.25


# ------------------------------------------------------------------ misuse (issue #21 item 5)
def test_a_discarded_step_on_an_immutable_state_is_an_error():
  """``plateau.step(state, v)`` without ``state = ...`` used to be a silent no-op on a raw optax state
  or a linen TrainState (the evaluation was lost); on an nnx.Optimizer it works in place."""
  tx = optax.chain(optax.sgd(1.0), plateau.reduce_on_plateau(factor=0.5, patience=0))
  state = tx.init(jnp.zeros(2))
  state = plateau.step(state, 1.0)
  with pytest.raises(ValueError, match=r"result was discarded.*state = plateau.step\(state, val_loss\)"):
    plateau.step(state, 2.0)  # the mistake: a worse epoch that should halve the scale
  assert float(plateau.scale(state)) == 1.0  # what the mistake would have silently left
  state = plateau.step(state, 2.0)
  assert float(plateau.scale(state)) == 0.5

  @jax.jit
  def epoch_end(state, v):
    plateau.step(state, v)  # the same mistake inside jit: caught while tracing
    return state

  with pytest.raises(ValueError, match="result was discarded"):
    epoch_end(state, 3.0)


def test_a_statement_step_on_an_nnx_optimizer_is_in_place_and_fine():
  nnx = pytest.importorskip("flax.nnx")
  opt = nnx.Optimizer(nnx.Linear(2, 1, rngs=nnx.Rngs(0)),
                      optax.chain(optax.sgd(1.0), plateau.reduce_on_plateau(factor=0.5, patience=0)), wrt=nnx.Param)
  plateau.step(opt, 1.0)
  plateau.step(opt, 2.0)
  assert float(plateau.scale(opt)) == 0.5
