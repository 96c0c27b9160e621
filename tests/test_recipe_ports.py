"""recipe: big_vision's schedule-shaped decay, the EMA's period, fastai's fit_one_cycle preset.

Issue #22 items 3, 7, 8.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_practices import monitor, recipe, regularization, schedules


def _big_vision_step_fn(step, total_steps, warmup_steps):
  """big_vision/utils.py create_learning_rate_schedule(base=1.0, decay_type="cosine"), written out."""
  lr = 1.0
  progress = min(max((step - warmup_steps) / float(total_steps - warmup_steps), 0.0), 1.0)
  lr = lr * 0.5 * (1.0 + math.cos(math.pi * progress))
  if warmup_steps:
    lr = lr * min(1.0, step / warmup_steps)
  return lr


def test_weight_decay_follows_the_schedule_shape_as_big_vision():
  """big_vision/optax.py make(): chain(opt, scale(lr), add_decayed_weights(wd), scale_by_schedule(shape), scale(-1)),
  i.e. for SGD  p <- p - shape(t) * (lr * g + wd * p): exactly no change at step 0 with a warmup from 0."""
  lr, wd, total, warm = 0.1, 0.05, 30, 5
  tx = recipe.build({"optimizer": {"name": "sgd", "learning_rate": lr},
                     "schedule": {"name": "cosine_annealing", "t_max": total - warm}, "warmup": {"steps": warm},
                     "weight_decay": {"rate": wd, "mask": None, "learning_rate": "schedule"}})
  rng = np.random.default_rng(0)
  p = {"w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32),
       "b": jnp.asarray(rng.standard_normal(2), jnp.float32)}
  ref = jax.tree.map(lambda x: np.asarray(x, np.float64), p)
  state = tx.init(p)
  for t in range(total + 3):
    g = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), jnp.float32), p)
    u, state = tx.update(g, state, p)
    if t == 0:
      assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(u))
    p = optax.apply_updates(p, u)
    shape = _big_vision_step_fn(t, total, warm)
    ref = jax.tree.map(lambda r, g: r - shape * (lr * np.asarray(g, np.float64) + wd * r), ref, g)
  for k in p:
    np.testing.assert_allclose(np.asarray(p[k]), ref[k], rtol=2e-5, atol=1e-6)


def test_weight_decay_learning_rate_options_differ_as_documented():
  """'optimizer': -lr_t·wd·p; 'schedule': -wd·lr_t/peak·p; None: -wd·p (zero gradients, one step after warmup)."""
  p = {"w": jnp.ones((2, 2))}
  zero = {"w": jnp.zeros((2, 2))}
  got = {}
  for follow in ("optimizer", "schedule", None):
    tx = recipe.build({"optimizer": {"name": "sgd", "learning_rate": 0.5},
                       "schedule": {"name": "step_decay", "step_size": 1, "gamma": 0.5},
                       "weight_decay": {"rate": 0.1, "learning_rate": follow}})
    state = tx.init(p)
    for _ in range(2):  # lr at the 2nd update: 0.25
      u, state = tx.update(zero, state, p)
    got[follow] = float(u["w"][0, 0])
  np.testing.assert_allclose([got["optimizer"], got["schedule"], got[None]], [-0.025, -0.05, -0.1], rtol=1e-6)
  with pytest.raises(ValueError, match="'optimizer'.*'schedule'.*got 'shape'"):
    recipe.build({"optimizer": {"name": "sgd", "learning_rate": 0.5},
                  "weight_decay": {"rate": 0.1, "learning_rate": "shape"}})


def _same_averages(tx, hand, steps):
  """Runs both on the gradient stream 0, 1, 2, ...: their EMAs agree after every update."""
  p = q = jnp.ones(2)
  s, h = tx.init(p), hand.init(q)
  for i in range(steps):
    g = jnp.full(2, float(i))
    u, s = tx.update(g, s, p)
    v, h = hand.update(g, h, q)
    p, q = optax.apply_updates(p, u), optax.apply_updates(q, v)
    np.testing.assert_allclose(np.asarray(regularization.ema_params(s)), np.asarray(regularization.ema_params(h)),
                               rtol=1e-6)


def test_averaging_ema_takes_every():
  config = {"optimizer": {"name": "sgd", "learning_rate": 0.1}, "averaging": {"name": "ema", "decay": 0.5, "every": 3}}
  _same_averages(recipe.build(config), optax.chain(optax.sgd(0.1), regularization.ema(0.5, every=3)), 7)
  # a decay schedule section: torchvision's copy through the warmup (decay 0 for t <= 6), then 0.7
  warm = {"name": "ema", "decay": {"name": "constant", "value": 0.7, "factor": 0.0, "total_steps": 7},
          "debias": False, "every": 2}
  tx = recipe.build({**config, "averaging": warm})
  hand = optax.chain(optax.sgd(0.1), regularization.ema(lambda t: jnp.where(t <= 6, 0.0, 0.7), debias=False, every=2))
  _same_averages(tx, hand, 11)
  with pytest.raises(ValueError, match=r"averaging.decay.name must be one of"):
    recipe.build({**config, "averaging": {"name": "ema", "decay": {"name": "timm"}}})
  with pytest.raises(ValueError, match=r"unknown argument\(s\) \['inner'\]"):
    recipe.build({**config, "averaging": {"name": "ema", "inner": None}})


# fastai/callback/schedule.py, written out: SchedCos, combine_scheds / combined_cos, and fit_one_cycle's
# scheds = {'lr': combined_cos(pct_start, lr_max/div, lr_max, lr_max/div_final),
#           'mom': combined_cos(pct_start, *moms)}  with moms=(0.95, 0.85, 0.95); ParamScheduler sets
# batch i's value at pos = train_iter / n_iter = i / T.
def _sched_cos(start, end, pos):
  return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def _combined_cos(pct, start, middle, end):
  def f(pos):
    if pos >= 1.0:
      return _sched_cos(middle, end, 1.0)
    if pos < pct:
      return _sched_cos(start, middle, pos / pct)
    return _sched_cos(middle, end, (pos - pct) / (1 - pct))
  return f


@pytest.mark.parametrize("total_steps", [10, 97])
def test_fastai_one_cycle_preset_is_fit_one_cycle(total_steps):
  config = recipe.preset("fastai-one-cycle", total_steps=total_steps)
  opt = config["optimizer"]
  assert (opt["name"], opt["learning_rate"], opt["b2"], opt["eps"], opt["weight_decay"], opt["mask"]) == (
      "adamw", 1e-3, 0.99, 1e-5, 0.01, "auto")
  lr_max, pct = opt["learning_rate"], 0.25
  fastai_lr = _combined_cos(pct, lr_max / 25, lr_max, lr_max / 1e5)
  fastai_mom = _combined_cos(pct, 0.95, 0.85, 0.95)
  lr_sched = schedules.one_cycle(lr_max, **{k: v for k, v in config["schedule"].items() if k != "name"})
  mom_sched = schedules.one_cycle_momentum(**{k: v for k, v in config["momentum_schedule"].items() if k != "name"})
  for i in range(total_steps):
    np.testing.assert_allclose(float(lr_sched(i)), fastai_lr(i / total_steps), rtol=2e-5)
    np.testing.assert_allclose(float(mom_sched(i)), fastai_mom(i / total_steps), rtol=2e-6)
  # the built optimizer applies that lr, and decays kernels (following it) but not BatchNorm scales or biases
  tx = recipe.build(config)
  p = {"Conv_0": {"kernel": jnp.ones((3, 3, 1, 2)), "bias": jnp.ones(2)}, "BatchNorm_0": {"scale": jnp.ones(2)}}
  state = tx.init(p)
  for i in range(3):
    u, state = tx.update(jax.tree.map(jnp.zeros_like, p), state, p)
    np.testing.assert_allclose(float(monitor.current_learning_rate(state)), fastai_lr(i / total_steps), rtol=2e-5)
  # decoupled, following the applied lr as torch's AdamW: p * fl32(1 - lr*wd) (the factor rounded first)
  lr_applied = np.float32(monitor.current_learning_rate(state))
  want = (np.float32(1.0) - lr_applied * np.float32(0.01)) - np.float32(1.0)
  np.testing.assert_allclose(float(u["Conv_0"]["kernel"][0, 0, 0, 0]), float(want), rtol=1e-6)
  np.testing.assert_allclose(float(lr_applied), fastai_lr(2 / total_steps), rtol=2e-5)
  assert float(jnp.abs(u["Conv_0"]["bias"]).max()) == 0.0 and float(jnp.abs(u["BatchNorm_0"]["scale"]).max()) == 0.0
