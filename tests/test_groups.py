"""groups: paths, match as any mask, scale_by_group, per-group decay; parity with torch param groups."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxopt_practices import adaptive, groups, momentum, regularization, schedules

SHAPES = {"embed": {"embedding": (10, 4)}, "layers_0": {"kernel": (4, 4), "bias": (4,)},
          "layers_1": {"kernel": (4, 4), "bias": (4,)}, "norm": {"scale": (4,)},
          "head": {"kernel": (4, 3), "bias": (3,)}}


def _params(seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s), jnp.float32), SHAPES,
                      is_leaf=lambda x: isinstance(x, tuple))


# ------------------------------------------------------------------ paths and match
class Pair(NamedTuple):
  first: jax.Array
  second: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Box:
  weight: jax.Array


def test_paths_of_dicts_sequences_namedtuples_and_dataclasses():
  tree = {"a": [jnp.ones(1), (jnp.ones(1),)], "b": Pair(jnp.ones(1), jnp.ones(1)), "c": Box(jnp.ones(1))}
  assert jax.tree.leaves(groups.paths(tree)) == ["a/0", "a/1/0", "b/first", "b/second", "c/weight"]


def test_paths_of_nnx_state_have_no_value_suffix():
  class Net(nnx.Module):
    def __init__(self, rngs):
      self.dense = nnx.Linear(2, 3, rngs=rngs)
      self.norm = nnx.LayerNorm(3, rngs=rngs)

  state = nnx.state(Net(nnx.Rngs(0)), nnx.Param)
  assert sorted(jax.tree.leaves(groups.paths(state))) == ["dense/bias", "dense/kernel", "norm/bias", "norm/scale"]
  mask = groups.match(".*kernel")(state)
  assert jax.tree.structure(mask) == jax.tree.structure(state)
  # as the mask of an optimizer driving an nnx.Optimizer
  model = Net(nnx.Rngs(0))
  tx = regularization.decoupled_weight_decay(0.5, groups.match(".*kernel"))
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  kernel, bias = np.asarray(model.dense.kernel[...]), np.asarray(model.dense.bias[...])
  opt.update(model, jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param)))
  np.testing.assert_allclose(np.asarray(model.dense.kernel[...]), 0.5 * kernel, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(model.dense.bias[...]), bias)


def test_match_is_a_full_match_over_any_of_the_patterns():
  params = _params()
  got = groups.match([r".*/bias", "norm/.*"])(params)
  assert got["layers_0"] == {"kernel": False, "bias": True}
  assert got["norm"]["scale"] and not got["embed"]["embedding"]
  # fullmatch: "bias" is not "layers_0/bias", so it matches nothing: an error, unless allowed
  assert not any(jax.tree.leaves(groups.match("bias", allow_unmatched=True)(params)))
  with pytest.raises(ValueError, match=r"\['bias'\] match no leaf.*'layers_0/bias'"):
    groups.match("bias")(params)
  assert groups.match("head/kernel")(params)["head"] == {"kernel": True, "bias": False}


MASK_USERS = [  # (name, transform with mask=groups.match(".*kernel"), same with the equivalent bool tree)
    ("decoupled_weight_decay", lambda m: regularization.decoupled_weight_decay(0.1, m, learning_rate=0.5)),
    ("l2_penalty", lambda m: regularization.l2_penalty(0.1, m)),
    ("sgd", lambda m: momentum.sgd(0.1, momentum=0.9, weight_decay=0.1, mask=m)),
    ("adagrad", lambda m: adaptive.adagrad(0.1, weight_decay=0.1, mask=m)),
    ("rmsprop", lambda m: adaptive.rmsprop(0.1, weight_decay=0.1, mask=m)),
    ("adam", lambda m: adaptive.adam(0.1, weight_decay=0.1, mask=m)),
    ("adamw", lambda m: adaptive.adamw(0.1, weight_decay=0.1, mask=m)),
    ("optax.masked", lambda m: optax.masked(optax.add_decayed_weights(0.1), m)),
]


@pytest.mark.parametrize("name,make", MASK_USERS, ids=[m[0] for m in MASK_USERS])
def test_match_works_as_every_mask(name, make):
  params = _params()
  bools = jax.tree.map(lambda s: s.endswith("kernel"), groups.paths(params))
  grads = [_params(seed) for seed in (1, 2, 3)]
  results = []
  for tx in (make(groups.match(".*kernel")), make(bools), make(jax.tree.map(lambda _: False, params))):
    p, s = params, tx.init(params)
    for g in grads:
      u, s = jax.jit(tx.update)(g, s, p)
      p = optax.apply_updates(p, u)
    results.append(p)
  chex.assert_trees_all_equal(results[0], results[1])
  assert not np.allclose(results[0]["head"]["kernel"], results[2]["head"]["kernel"])  # kernels decay
  chex.assert_trees_all_equal(results[0]["head"]["bias"], results[2]["head"]["bias"])  # biases do not


def test_optimizers_coupled_weight_decay_mask_none_is_every_leaf():
  params, grads = _params(), _params(1)
  for opt in (momentum.sgd, adaptive.adagrad, adaptive.rmsprop, adaptive.adam):
    make = lambda **kw: opt(0.1, weight_decay=0.1, **kw)  # noqa: E731, B023
    a, _ = make().update(grads, make().init(params), params)
    b, _ = make(mask=None).update(grads, make(mask=None).init(params), params)
    chex.assert_trees_all_equal(a, b)


# ------------------------------------------------------------------ scale_by_group
def test_scale_by_group_first_match_wins_default_and_dtype():
  tx = groups.scale_by_group([("head/.*", 10.0), (".*/kernel", 0.5), ("head/bias", 3.0)], default=2.0)
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _params())
  out, state = jax.jit(tx.update)(params, tx.init(params))
  assert state == optax.EmptyState()
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(out))
  expect = {"head/kernel": 10.0, "head/bias": 10.0, "layers_0/kernel": 0.5, "layers_0/bias": 2.0, "norm/scale": 2.0,
            "embed/embedding": 2.0}
  flat = dict(zip(jax.tree.leaves(groups.paths(params)), zip(jax.tree.leaves(out), jax.tree.leaves(params))))
  for path, mult in expect.items():
    got, x = flat[path]
    ref = (x.astype(jnp.float32) * mult).astype(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(ref, np.float32))
  same = groups.scale_by_group({"nothing": 3.0})
  out, _ = same.update(params, same.init(params))
  assert all(a is b for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(params)))  # multiplier 1: untouched


def test_scale_by_group_in_a_chain_compiles_once():
  tx = optax.chain(momentum.sgd(0.1, momentum=0.9), groups.scale_by_group([("head/.*", 10.0)]))
  base = momentum.sgd(0.1, momentum=0.9)
  params = _params()
  chex.clear_trace_counter()
  update = jax.jit(chex.assert_max_traces(n=1)(tx.update))
  state, base_state = tx.init(params), base.init(params)
  for seed in range(3):
    u, state = update(_params(seed + 1), state, params)
    b, base_state = base.update(_params(seed + 1), base_state, params)
  np.testing.assert_allclose(np.asarray(u["head"]["kernel"]), 10 * np.asarray(b["head"]["kernel"]), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(u["layers_0"]["kernel"]), np.asarray(b["layers_0"]["kernel"]), rtol=1e-6)


# ------------------------------------------------------------------ per-group decay
def test_weight_decay_without_multipliers_is_decoupled_weight_decay():
  params, grads = _params(), _params(1)
  a = groups.weight_decay(0.1, "auto", learning_rate=0.5)
  b = regularization.decoupled_weight_decay(0.1, "auto", learning_rate=0.5)
  assert jax.tree.structure(a.init(params)) == jax.tree.structure(b.init(params))
  chex.assert_trees_all_equal(a.update(grads, a.init(params), params)[0], b.update(grads, b.init(params), params)[0])


def test_weight_decay_scheduled_group_rate_is_float64_under_x64():
  # big_vision's decay (rate x schedule shape, lr-independent) with a wd_mults group: the group's
  # scheduled rate keeps the schedule's float64 under x64 (it was rounded to float32)
  with jax.enable_x64(True):
    sched = schedules.inverse_sqrt(1.0, 10, timescale=25)
    rate = lambda t: 1e-4 * sched(t)  # noqa: E731
    tx = groups.weight_decay(rate, None, wd_mults=[("b", 0.5)])
    p = {"a": jnp.ones(2, jnp.float64), "b": jnp.ones(2, jnp.float64)}
    state = tx.init(p)
    for _ in range(4):
      u, state = tx.update(jax.tree.map(jnp.zeros_like, p), state, p)
    assert u["b"].dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(u["b"]), -0.5e-4 * 3 / 10, rtol=1e-15)
    np.testing.assert_allclose(np.asarray(u["a"]), -1e-4 * 3 / 10, rtol=1e-15)


def test_weight_decay_per_group_closed_form():
  lr, wd = 0.1, 0.2
  sched = schedules.step_decay(lr, 1, 0.5)
  tx = groups.weight_decay(wd, groups.match(".*kernel|.*embedding"), learning_rate=sched,
                           lr_mults=[("head/.*", 10.0)], wd_mults=[("embed/.*", 0.0), ("layers_1/.*", 0.5)])
  params = _params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  state = tx.init(params)
  for t in range(3):
    u, state = tx.update(zeros, state, params)
    eta = lr * 0.5**t
    rate = {"head/kernel": eta * 10 * wd, "layers_0/kernel": eta * wd, "layers_1/kernel": eta * wd * 0.5}
    for path, got, p in zip(jax.tree.leaves(groups.paths(params)), jax.tree.leaves(u), jax.tree.leaves(params)):
      np.testing.assert_allclose(np.asarray(got), -rate.get(path, 0.0) * np.asarray(p), rtol=1e-5, atol=1e-9)
  free = groups.weight_decay(wd, None, wd_mults=[("head/.*", 0.5)])  # lr-independent
  u, _ = free.update(zeros, free.init(params), params)
  np.testing.assert_allclose(np.asarray(u["head"]["bias"]), -0.5 * wd * np.asarray(params["head"]["bias"]), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(u["norm"]["scale"]), -wd * np.asarray(params["norm"]["scale"]), rtol=1e-6)


# ------------------------------------------------------------------ parity with torch param groups
def _torch_run(make_opt, params, grads, make_sched=None):
  """Runs torch on float32 copies; returns the params after every step, as trees like ``params``."""
  torch = pytest.importorskip("torch")
  leaves, treedef = jax.tree.flatten(params)
  names = jax.tree.leaves(groups.paths(params))
  tensors = [torch.nn.Parameter(torch.tensor(np.asarray(x).copy())) for x in leaves]
  opt = make_opt(dict(zip(names, tensors)))
  sched = make_sched(opt) if make_sched else None
  history = []
  for g in grads:
    for t, gi in zip(tensors, jax.tree.leaves(g)):
      t.grad = torch.tensor(np.asarray(gi).copy())
    opt.step()
    if sched:
      sched.step()
    history.append(jax.tree.unflatten(treedef, [t.detach().numpy().copy() for t in tensors]))
  return history


def _ours_run(tx, params, grads):
  update = jax.jit(tx.update)
  state, history = tx.init(params), []
  for g in grads:
    u, state = update(g, state, params)
    params = optax.apply_updates(params, u)
    history.append(jax.tree.map(np.asarray, params))
  return history


def _assert_step_by_step(ours, theirs):
  for step, (a, b) in enumerate(zip(ours, theirs)):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      scale = max(float(np.max(np.abs(y))), 1e-3)
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5 * scale, err_msg=f"step {step}")


def _grads(params, steps, seed=7):
  rng = np.random.default_rng(seed)
  return [jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape) * rng.uniform(0.1, 2.0), jnp.float32), params)
          for _ in range(steps)]


def _split(named, test):
  return [p for n, p in named.items() if test(n)], [p for n, p in named.items() if not test(n)]


def test_sgd_no_decay_on_biases_and_norms_and_2x_bias_lr_like_torch():
  """Caffe's convention in torch: kernels decay, biases and norm scales do not and take 2x the lr; cosine lr."""
  torch = pytest.importorskip("torch")
  lr, wd, steps = 0.05, 5e-3, 300
  params = _params()
  decays = lambda n: n.endswith("kernel") or n.endswith("embedding")

  def make_opt(named):
    decay, no_decay = _split(named, decays)
    return torch.optim.SGD([{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "lr": 2 * lr}],
                           lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)

  theirs = _torch_run(make_opt, params, _grads(params, steps),
                      lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, steps))
  tx = optax.chain(momentum.sgd(schedules.cosine_annealing(lr, steps), momentum=0.9, nesterov=True, weight_decay=wd,
                                mask=groups.match([".*kernel", ".*embedding"])),
                   groups.scale_by_group([(".*bias", 2.0), ("norm/.*", 2.0)]))
  _assert_step_by_step(_ours_run(tx, params, _grads(params, steps)), theirs)


def test_adamw_10x_lr_on_the_head_like_torch():
  torch = pytest.importorskip("torch")
  lr, wd, steps = 1e-3, 0.05, 300
  params = _params()

  def make_opt(named):
    head, body = _split(named, lambda n: n.startswith("head/"))
    return torch.optim.AdamW([{"params": body}, {"params": head, "lr": 10 * lr}], lr=lr, weight_decay=wd)

  theirs = _torch_run(make_opt, params, _grads(params, steps))
  mults = [("head/.*", 10.0)]
  tx = optax.chain(adaptive.scale_by_adam(), schedules.scale_by_learning_rate(lr), groups.scale_by_group(mults),
                   groups.weight_decay(wd, None, learning_rate=lr, lr_mults=mults))
  _assert_step_by_step(_ours_run(tx, params, _grads(params, steps)), theirs)


def test_layerwise_lr_decay_fine_tuning_like_torch():
  """BEiT/ELECTRA-style: lr * 0.5**depth_from_top per layer, no decay on biases and norms, warmup + cosine."""
  torch = pytest.importorskip("torch")
  lr, wd, steps, decay = 2e-3, 0.05, 200, 0.5
  params = _params()
  depth = {"head": 0, "norm": 0, "layers_1": 1, "layers_0": 2, "embed": 3}
  mults = [(f"{name}/.*", decay**d) for name, d in depth.items()]
  decays = lambda n: n.endswith("kernel") or n.endswith("embedding")

  def make_opt(named):
    param_groups = []
    for name, d in depth.items():
      for wants in (True, False):
        ps = [p for n, p in named.items() if n.startswith(name + "/") and decays(n) == wants]
        if ps:
          param_groups.append({"params": ps, "lr": lr * decay**d, "weight_decay": wd if wants else 0.0})
    return torch.optim.AdamW(param_groups, lr=lr)

  def make_sched(o):
    warm = torch.optim.lr_scheduler.LinearLR(o, 0.1, 1.0, 20)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(o, steps - 20)
    return torch.optim.lr_scheduler.SequentialLR(o, [warm, cos], [20])

  theirs = _torch_run(make_opt, params, _grads(params, steps), make_sched)
  sched = schedules.sequential([schedules.warmup(lr, 20, 0.1 * lr), schedules.cosine_annealing(lr, steps - 20)], [20])
  tx = optax.chain(adaptive.scale_by_adam(), schedules.scale_by_learning_rate(sched), groups.scale_by_group(mults),
                   groups.weight_decay(wd, groups.match([".*kernel", ".*embedding"]), learning_rate=sched,
                                       lr_mults=mults))
  _assert_step_by_step(_ours_run(tx, params, _grads(params, steps)), theirs)

