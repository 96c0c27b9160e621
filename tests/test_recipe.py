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

from jaxopt_practices import groups, momentum, recipe, regularization, schedules

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
     "unknown argument(s) ['start'] for warmup; valid arguments are ['steps', 'start_value', 'shift']"),
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
  assert section == recipe.Section(required=("init_value", "t_max"), optional={"eta_min": 0.0, "k_decay": 1.0})
  peak = recipe.Section.of(schedules.cosine_annealing, defaults={"init_value": 0.5})
  assert peak.check("schedule", {"t_max": 10}) == {"init_value": 0.5, "eta_min": 0.0, "k_decay": 1.0,
                                                     "t_max": 10}
  opt = recipe.Section.of(momentum.sgd, required=("learning_rate",), skip=("weight_decay",))
  assert opt.required == ("learning_rate",) and "weight_decay" not in opt.optional


def test_one_cycle_needs_total_steps_or_epochs():
  with pytest.raises(ValueError, match="total_steps is required unless epochs and steps_per_epoch are given"):
    recipe.build({"optimizer": SGD, "momentum_schedule": {"name": "one_cycle_momentum"}})
  cfg = {"optimizer": {"name": "sgd", "learning_rate": 0.1},
         "schedule": {"name": "one_cycle", "epochs": 3, "steps_per_epoch": 10.0},
         "momentum_schedule": {"name": "one_cycle_momentum", "epochs": 3, "steps_per_epoch": 10}}
  a, _ = _run(recipe.build(cfg))
  b, _ = _run(momentum.sgd(schedules.one_cycle(0.1, 30), momentum=schedules.one_cycle_momentum(30)))
  chex.assert_trees_all_close(a, b, rtol=1e-6)


def test_inverse_sqrt_peak_is_the_learning_rate():
  tx = recipe.build({"optimizer": {"name": "sgd", "learning_rate": 0.5}, "schedule": {"name": "inverse_sqrt",
                                                                                     "warmup_steps": 1}})
  ones = jax.tree.map(jnp.ones_like, PARAMS)
  state = tx.init(PARAMS)
  steps = []
  for _ in range(5):
    u, state = tx.update(ones, state, PARAMS)
    steps.append(-float(u["bias"][0]))
  np.testing.assert_allclose(steps, [0.0, 0.5, 0.5 / np.sqrt(2), 0.5 / np.sqrt(3), 0.25], rtol=1e-6)


# ------------------------------------------------------------------ parameter groups
GROUP_PARAMS = {"body": {"kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "bias": jnp.array([0.3, -0.4])},
                "head": {"kernel": jnp.array([[0.7, 0.2], [-1.5, 0.4]]), "bias": jnp.array([0.1, 0.9])}}


def _group_grads(steps, seed=3):
  rng = np.random.default_rng(seed)
  return [jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), jnp.float32), GROUP_PARAMS)
          for _ in range(steps)]


def test_lr_mults_wd_mults_are_torch_adamw_param_groups():
  """10x lr on the head, no decay on biases: four torch groups, one recipe; equal step by step."""
  torch = pytest.importorskip("torch")
  lr, wd, steps = 1e-2, 0.1, 200
  cfg = {"optimizer": {"name": "adam", "learning_rate": lr},
         "schedule": {"name": "cosine_annealing", "t_max": steps},
         "weight_decay": {"rate": wd, "mask": None},
         "lr_mults": [["head/.*", 10.0]], "wd_mults": [[".*/bias", 0.0]]}
  assert json.loads(json.dumps(cfg)) == cfg
  tx = recipe.build(cfg)
  names = ["body/bias", "body/kernel", "head/bias", "head/kernel"]  # jax.tree.leaves order
  tensors = {n: torch.nn.Parameter(torch.tensor(np.asarray(x).copy()))
             for n, x in zip(names, jax.tree.leaves(GROUP_PARAMS))}
  opt = torch.optim.AdamW([{"params": [tensors[n]], "lr": lr * (10.0 if n.startswith("head") else 1.0),
                            "weight_decay": 0.0 if n.endswith("bias") else wd} for n in names], lr=lr)
  sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
  params, state = GROUP_PARAMS, tx.init(GROUP_PARAMS)
  update = jax.jit(tx.update)
  for g in _group_grads(steps):
    u, state = update(g, state, params)
    params = optax.apply_updates(params, u)
    for n, gi in zip(names, jax.tree.leaves(g)):
      tensors[n].grad = torch.tensor(np.asarray(gi).copy())
    opt.step()
    sched.step()
    for n, x in zip(names, jax.tree.leaves(params)):
      np.testing.assert_allclose(np.asarray(x), tensors[n].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_group_recipe_is_the_hand_chain():
  lr_mults, wd_mults = [["head/.*", 3.0]], [["body/kernel", 0.5]]
  cfg = {"optimizer": {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 1e-2,
                       "mask": [".*kernel"]},
         "weight_decay": {"rate": 0.05}, "lr_mults": lr_mults, "wd_mults": wd_mults}
  hand = optax.chain(momentum.sgd(0.1, momentum=0.9, weight_decay=1e-2, mask=groups.match(".*kernel")),
                     groups.scale_by_group(lr_mults),
                     groups.weight_decay(0.05, "auto", learning_rate=0.1, lr_mults=lr_mults, wd_mults=wd_mults))
  params, a_state, b_state = GROUP_PARAMS, None, None
  a_tx, b_tx = recipe.build(cfg), hand
  a_state, b_state = a_tx.init(params), b_tx.init(params)
  for g in _group_grads(3):
    a, a_state = a_tx.update(g, a_state, params)
    b, b_state = b_tx.update(g, b_state, params)
    chex.assert_trees_all_equal(a, b)
    params = optax.apply_updates(params, a)


def test_lr_independent_decay_ignores_lr_mults_big_vision():
  cfg = {"optimizer": {"name": "sgd", "learning_rate": 0.0}, "weight_decay": {"rate": 0.1, "learning_rate": None},
         "lr_mults": [["head/.*", 10.0]], "wd_mults": [["head/.*", 0.5]]}
  zeros = jax.tree.map(jnp.zeros_like, GROUP_PARAMS)
  tx = recipe.build(cfg)
  u, _ = tx.update(zeros, tx.init(GROUP_PARAMS), GROUP_PARAMS)
  np.testing.assert_allclose(np.asarray(u["head"]["kernel"]), -0.05 * np.asarray(GROUP_PARAMS["head"]["kernel"]),
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(u["body"]["kernel"]), -0.1 * np.asarray(GROUP_PARAMS["body"]["kernel"]),
                             rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(u["body"]["bias"]), 0.0)  # mask "auto": no decay on biases


GROUP_BAD = [
    ({"optimizer": SGD, "wd_mults": [[".*", 0.5]]}, "wd_mults scales the rate of the weight_decay section"),
    ({"optimizer": SGD, "lr_mults": [["(", 2.0]]}, "config['lr_mults']"),
    ({"optimizer": SGD, "lr_mults": [["head/.*", -2.0]]}, "config['lr_mults']"),
    ({"optimizer": SGD, "wd_mults": {"head": "x"}, "weight_decay": {"rate": 0.1}}, "config['wd_mults']"),
    ({"optimizer": SGD, "lr_mults": "head"}, "config['lr_mults']"),
]


@pytest.mark.parametrize("config,match", GROUP_BAD, ids=[f"g{i}" for i in range(len(GROUP_BAD))])
def test_bad_group_config_raises(config, match):
  with pytest.raises(ValueError, match=re.escape(match)):
    recipe.build(config)


def test_bad_preset_name():
  with pytest.raises(ValueError, match=r"preset name must be one of \['fastai-one-cycle'"):
    recipe.preset("bert")


NEW_OPTIMIZERS = [  # issue 23, JSON-style options (lists, not tuples)
    ("nadam", {"learning_rate": 0.01, "momentum_decay": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("radam", {"learning_rate": 0.01, "b2": 0.99, "weight_decay": 0.01}),
    ("adamax", {"learning_rate": 0.01, "eps": 1e-3}),
    ("adadelta", {"learning_rate": 0.5, "rho": 0.8}),
    ("rprop", {"learning_rate": 0.01, "etas": [0.4, 1.5], "step_sizes": [1e-4, 1.0]}),
]


@pytest.mark.parametrize("name,options", NEW_OPTIMIZERS, ids=[n for n, _ in NEW_OPTIMIZERS])
def test_new_optimizers_by_name_are_the_factories(name, options):
  from jaxopt_practices import adaptive
  config = {"optimizer": {"name": name, **options}}
  assert json.loads(json.dumps(config)) == config
  a, _ = _run(recipe.build(config))
  b, _ = _run(getattr(adaptive, name)(**options))
  chex.assert_trees_all_equal(a, b)
  assert not np.allclose(np.asarray(a[-1]["kernel"]), np.asarray(PARAMS["kernel"]))


def test_rprop_rejects_a_learning_rate_schedule():
  """Rprop's learning rate is its initial step size: a schedule section is an error, naming it."""
  with pytest.raises(ValueError, match="learning_rate must be a number"):
    recipe.build({"optimizer": {"name": "rprop", "learning_rate": 0.01},
                  "schedule": {"name": "cosine_annealing", "t_max": 10}})
