"""recipe.build: one transform from a JSON config, in the documented order."""

from __future__ import annotations

import json
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_practices import momentum, recipe, regularization, schedules

PARAMS = {"kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "bias": jnp.array([0.3, -0.4])}
GRADS = [{"kernel": jnp.array([[3.0, 4.0], [0.0, 0.0]]), "bias": jnp.array([1.0, 0.0])},
         {"kernel": jnp.array([[-1.0, 0.5], [2.0, 1.0]]), "bias": jnp.array([0.0, 2.0])}]


def _run(tx, steps=2, values=None):
  params, state, out = PARAMS, tx.init(PARAMS), []
  for t, g in enumerate(GRADS[:steps]):
    extra = {"value": values[t]} if values else {}
    u, state = tx.update(g, state, params, **extra)
    params = optax.apply_updates(params, u)
    out.append(params)
  return out, state


def test_order_matches_closed_form_big_vision_style():
  """clip -> l2 -> sgd(warmup schedule) -> lr-following decoupled decay, checked by hand."""
  lr, wd, l2, max_norm = 0.1, 0.01, 0.001, 1.0
  sched = schedules.warmup(lr, 2, start_value=0.0)
  tx = recipe.build({"optimizer": {"name": "sgd", "learning_rate": lr},
                     "warmup": {"steps": 2},
                     "clip": {"name": "global_norm", "max_norm": max_norm},
                     "l2": {"rate": l2},
                     "weight_decay": {"rate": wd, "mask": "auto"}})
  got, _ = _run(tx)
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), PARAMS)
  for t, g in enumerate(GRADS):
    g = jax.tree.map(lambda x: np.asarray(x, np.float64), g)
    norm = np.sqrt(sum(np.sum(x ** 2) for x in jax.tree.leaves(g)))
    g = jax.tree.map(lambda x: x * min(1.0, max_norm / (norm + 1e-6)), g)
    eta = float(sched(t))
    new = {"kernel": p["kernel"] - eta * (g["kernel"] + l2 * p["kernel"]) - eta * wd * p["kernel"],
           "bias": p["bias"] - eta * (g["bias"] + l2 * p["bias"])}
    chex.assert_trees_all_close(got[t], jax.tree.map(np.float32, new), rtol=1e-5)
    p = new


def test_lr_independent_decay_ignores_the_learning_rate():
  cfg = {"optimizer": {"name": "sgd", "learning_rate": 0.0}, "weight_decay": {"rate": 0.1, "learning_rate": None}}
  got, _ = _run(recipe.build(cfg), steps=1)
  np.testing.assert_allclose(np.asarray(got[0]["kernel"]), 0.9 * np.asarray(PARAMS["kernel"]), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(got[0]["bias"]), np.asarray(PARAMS["bias"]))
  cfg["weight_decay"]["learning_rate"] = "optimizer"
  got, _ = _run(recipe.build(cfg), steps=1)
  np.testing.assert_array_equal(np.asarray(got[0]["kernel"]), np.asarray(PARAMS["kernel"]))


def test_same_as_hand_chained_practices():
  cfg = recipe.preset("tour", total_steps=40)
  sched = schedules.warmup(schedules.cosine_annealing(0.1, t_max=38), 2)
  from jaxopt_practices import clipping
  hand = clipping.skip_nonfinite(optax.chain(
      clipping.clip_by_global_norm(1.0), momentum.sgd(sched, momentum=0.9, nesterov=True),
      regularization.decoupled_weight_decay(1e-3, "auto", learning_rate=sched),
      regularization.ema(0.99)), max_consecutive=10)
  a, sa = _run(recipe.build(cfg))
  b, sb = _run(hand)
  chex.assert_trees_all_close(a, b, rtol=1e-6)
  chex.assert_trees_all_close(regularization.ema_params(sa), regularization.ema_params(sb), rtol=1e-6)


def test_plateau_receives_the_loss():
  cfg = {"optimizer": {"name": "sgd", "learning_rate": 1.0}, "plateau": {"factor": 0.5, "patience": 0}}
  tx = recipe.build(cfg)
  params, state = jnp.zeros(1), tx.init(jnp.zeros(1))
  steps = []
  for value in [1.0, 1.0, 1.0]:
    u, state = tx.update(jnp.ones(1), state, params, value=jnp.float32(value))
    steps.append(-float(u[0]))
  assert steps[0] == 1.0 and steps[-1] < steps[0], steps


@pytest.mark.parametrize("name,lr", [("resnet-sgd", 0.1), ("transformer-adamw", 0.05), ("fastai-one-cycle", 0.05),
                                     ("tour", 0.1)])
def test_presets_are_json_and_train(name, lr):
  cfg = recipe.preset(name, total_steps=100, learning_rate=lr)
  assert json.loads(json.dumps(cfg)) == cfg
  r = recipe.Recipe.from_dict(cfg)
  assert recipe.Recipe.from_dict(r.to_dict()) == r
  tx = recipe.build(r)
  loss = lambda p: jnp.sum((p["kernel"] - 1.0) ** 2) + jnp.sum(p["bias"] ** 2)
  params, state = PARAMS, tx.init(PARAMS)
  step = jax.jit(lambda p, s: tx.update(jax.grad(loss)(p), s, p))
  for _ in range(100):
    u, state = step(params, state)
    params = optax.apply_updates(params, u)
  assert float(loss(params)) < 0.5 * float(loss(PARAMS))


SGD = {"name": "sgd", "learning_rate": 0.1}
MISSING = [  # (config, section.key, what the section needs)
    ({"optimizer": {"name": "adam"}}, "optimizer.learning_rate", "optimizer (adam) needs 'learning_rate'"),
    ({"optimizer": {"name": "sgd", "learning_rate": None}}, "optimizer.learning_rate",
     "optimizer (sgd) needs 'learning_rate'"),
    ({"optimizer": SGD, "warmup": {"start_value": 0.1}}, "warmup.steps", "warmup needs 'steps'"),
    ({"optimizer": SGD, "schedule": {"name": "cosine_annealing"}}, "schedule.t_max",
     "schedule (cosine_annealing) needs 't_max'"),
    ({"optimizer": SGD, "schedule": {"name": "cyclical"}}, "schedule.base_lr", "schedule (cyclical) needs 'base_lr'"),
    ({"optimizer": SGD, "momentum_schedule": {"name": "one_cycle_momentum"}}, "momentum_schedule.total_steps",
     "momentum_schedule (one_cycle_momentum) needs 'total_steps'"),
    ({"optimizer": SGD, "weight_decay": {"mask": None}}, "weight_decay.rate", "weight_decay needs 'rate'"),
    ({"optimizer": SGD, "l2": {}}, "l2.rate", "l2 needs 'rate'"),
    ({"optimizer": SGD, "clip": {"name": "value"}}, "clip.max_abs", "clip (value) needs 'max_abs'"),
    ({"optimizer": SGD, "averaging": {"name": "swa"}}, "averaging.start_step", "averaging (swa) needs 'start_step'"),
]


@pytest.mark.parametrize("config,key,needs", MISSING, ids=[m[1] for m in MISSING])
def test_missing_required_key_names_section_key_and_what_is_required(config, key, needs):
  with pytest.raises(ValueError, match=re.escape(f"{key} is required: {needs}")):
    recipe.build(config)


UNKNOWN = [  # sections written out by hand list their keys too
    ({"optimizer": SGD, "warmup": {"steps": 3, "start": 0.0}},
     "unknown argument(s) ['start'] for warmup; valid arguments are ['steps', 'start_value']"),
    ({"optimizer": SGD, "weight_decay": {"rate": 0.1, "follows_lr": True}},
     "unknown argument(s) ['follows_lr'] for weight_decay; valid arguments are ['rate', 'mask', 'learning_rate']"),
    ({"optimizer": SGD, "skip_nonfinite": {"inner": None}},
     "unknown argument(s) ['inner'] for skip_nonfinite; valid arguments are ['max_consecutive', 'on_failure']"),
]


@pytest.mark.parametrize("config,match", UNKNOWN, ids=["warmup", "weight_decay", "skip_nonfinite"])
def test_unknown_key_lists_the_valid_ones(config, match):
  with pytest.raises(ValueError, match=re.escape(match)):
    recipe.build(config)


def test_section_of_a_factory_reads_its_signature():
  section = recipe.Section.of(schedules.cosine_annealing)
  assert section == recipe.Section(required=("init_value", "t_max"), optional={"eta_min": 0.0})
  peak = recipe.Section.of(schedules.cosine_annealing, defaults={"init_value": 0.5})
  assert peak.check("schedule", {"t_max": 10}) == {"init_value": 0.5, "eta_min": 0.0, "t_max": 10}
  opt = recipe.Section.of(momentum.sgd, required=("learning_rate",), skip=("weight_decay",))
  assert opt.required == ("learning_rate",) and "weight_decay" not in opt.optional


