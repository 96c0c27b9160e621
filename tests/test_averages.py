"""regularization.ema(decay=schedule, every=k): torchvision's and timm's EMA loops, written out.

Also the placement checks (issue #22 item 3, #21 item 2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import donated_step_param_ops
from jaxopt_practices import adaptive, momentum, regularization

STEPS = 20


def _stream(num_steps=STEPS, seed=0):
  rng = np.random.default_rng(seed)
  p0 = {"w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal(2), jnp.float32)}
  grads = [jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), jnp.float32), p0) for _ in range(num_steps)]
  return p0, grads


def _train(tx, p0, grads):
  """Params after each update (theta_1 .. theta_T) and the EMA read after each update."""
  state, p, thetas, avgs = tx.init(p0), p0, [], []
  update = jax.jit(tx.update)
  for g in grads:
    u, state = update(g, state, p)
    p = optax.apply_updates(p, u)
    thetas.append(p)
    avgs.append(regularization.ema_params(state))
  return thetas, avgs


def test_torchvision_classification_reference_ema_every_k_with_warmup_copy():
  """torchvision references/classification/train.py, train_one_epoch (with utils.ExponentialMovingAverage):

      optimizer.step()
      if model_ema and i % args.model_ema_steps == 0:
          model_ema.update_parameters(model)
          if epoch < args.lr_warmup_epochs:
              model_ema.n_averaged.fill_(0)   # keep copying weights during warmup

  ExponentialMovingAverage is an AveragedModel with avg_fn = decay * avg + (1 - decay) * param;
  update_parameters copies when n_averaged == 0, else applies avg_fn; then n_averaged += 1.
  """
  torch = pytest.importorskip("torch")
  from torch.optim.swa_utils import AveragedModel

  steps_per_epoch, k, warmup_epochs, d = 6, 2, 1, 0.7
  p0, grads = _stream(4 * steps_per_epoch)
  warmup = warmup_epochs * steps_per_epoch
  # copies at the averaging steps of the warmup epochs and at the first one after them (n_averaged was 0)
  decay = lambda t: jnp.where(t <= warmup, 0.0, d)  # noqa: E731
  thetas, avgs = _train(optax.chain(momentum.sgd(0.1, momentum=0.9), regularization.ema(decay, debias=False, every=k)),
                        p0, grads)

  model = torch.nn.Linear(3, 2)  # weight (out, in) = w.T

  def load(p):
    with torch.no_grad():
      model.weight.copy_(torch.tensor(np.asarray(p["w"]).T))
      model.bias.copy_(torch.tensor(np.asarray(p["b"])))

  load(p0)
  ema_avg = lambda avg, param, num_averaged: d * avg + (1.0 - d) * param  # noqa: E731  (torchvision utils.py)
  model_ema = AveragedModel(model, avg_fn=ema_avg, use_buffers=True)
  t = 0
  for epoch in range(4):
    for i in range(steps_per_epoch):
      load(thetas[t])  # optimizer.step()
      if i % k == 0:
        model_ema.update_parameters(model)
        if epoch < warmup_epochs:
          model_ema.n_averaged.fill_(0)
      ref = model_ema.module
      np.testing.assert_allclose(np.asarray(avgs[t]["w"]), ref.weight.detach().numpy().T, rtol=1e-6, atol=1e-7)
      np.testing.assert_allclose(np.asarray(avgs[t]["b"]), ref.bias.detach().numpy(), rtol=1e-6, atol=1e-7)
      t += 1
  assert not np.allclose(np.asarray(avgs[-1]["w"]), np.asarray(thetas[-1]["w"]))  # it does average at the end


def test_torch_averaged_model_with_get_ema_multi_avg_fn_every_update():
  torch = pytest.importorskip("torch")
  from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

  p0, grads = _stream()
  thetas, avgs = _train(optax.chain(optax.sgd(0.1), regularization.ema(0.9, debias=False)), p0, grads)
  model = torch.nn.Linear(3, 2)
  with torch.no_grad():
    model.weight.copy_(torch.tensor(np.asarray(p0["w"]).T))
    model.bias.copy_(torch.tensor(np.asarray(p0["b"])))
  ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
  ema.n_averaged.fill_(1)  # the average starts at theta_0 (AveragedModel would copy theta_1 first)
  for theta, avg in zip(thetas, avgs):
    with torch.no_grad():
      model.weight.copy_(torch.tensor(np.asarray(theta["w"]).T))
      model.bias.copy_(torch.tensor(np.asarray(theta["b"])))
    ema.update_parameters(model)
    np.testing.assert_allclose(np.asarray(avg["w"]), ema.module.weight.detach().numpy().T, rtol=1e-5, atol=1e-6)


def _timm_v3_decay(step, decay=0.99, min_decay=0.0, update_after_step=0, use_warmup=True,
                   warmup_gamma=1.0, warmup_power=2 / 3):
  """timm/utils/model_ema.py ModelEmaV3.get_decay, written out (timm calls update(model, step=num_updates)
  after num_updates += 1, so step = our count + 1)."""
  step = max(0, step - update_after_step - 1)
  if step <= 0:
    return 0.0
  if use_warmup:
    d = 1 - (1 + step / warmup_gamma) ** -warmup_power
    return max(min(d, decay), min_decay)
  return decay


@pytest.mark.parametrize("name", ["timm_v3_warmup", "tf_num_updates"])
def test_decay_schedules_against_a_reference_loop(name):
  """The EMA with a decay schedule, step by step against a plain loop: ``avg = d_t avg + (1 - d_t) theta``
  with timm ModelEmaV3's warmup decay, and with the ``min(d, (1 + t) / (10 + t))`` warmup (TensorFlow's
  ExponentialMovingAverage(num_updates=t)) quoted for timm in API.md."""
  if name == "timm_v3_warmup":
    ref_decay = lambda t: _timm_v3_decay(t + 1)  # noqa: E731
    def decay(t):
      t = jnp.asarray(t, jnp.float32)
      return jnp.where(t <= 0, 0.0, jnp.clip(1 - (1 + t / 1.0) ** (-2 / 3), 0.0, 0.99))
  else:
    ref_decay = lambda t: min(0.99, (1 + t) / (10 + t))  # noqa: E731
    def decay(t):
      t = jnp.asarray(t, jnp.float32)
      return jnp.minimum(0.99, (1.0 + t) / (10.0 + t))
  p0, grads = _stream()
  thetas, avgs = _train(optax.chain(optax.sgd(0.1), regularization.ema(decay, debias=False, every=3)), p0, grads)
  avg = np.asarray(p0["w"], np.float64)
  for t, theta in enumerate(thetas):
    if t % 3 == 0:
      avg = ref_decay(t) * avg + (1 - ref_decay(t)) * np.asarray(theta["w"], np.float64)
    np.testing.assert_allclose(np.asarray(avgs[t]["w"]), avg, rtol=2e-6, atol=1e-6)


def test_every_and_constant_decay_closed_form_with_debias():
  """debias=True, every=2: the normalised weights over theta_0 and the thetas after updates 0, 2, 4, ..."""
  p0, grads = _stream(7)
  thetas, avgs = _train(optax.chain(optax.sgd(0.5), regularization.ema(0.5, every=2)), p0, grads)
  snaps = [p0["b"]] + [thetas[t]["b"] for t in (0, 2, 4, 6)]
  weights = [0.5 * 0.5 ** (len(snaps) - 1)] + [0.5 * 0.5 ** (len(snaps) - 1 - i) for i in range(1, len(snaps))]
  want = sum(w * np.asarray(s, np.float64) for w, s in zip(weights, snaps)) / sum(weights)
  np.testing.assert_allclose(np.asarray(avgs[6]["b"]), want, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(avgs[1]["b"]), np.asarray(avgs[0]["b"]))  # update 1 leaves it


def test_misplaced_ema_issue_example():
  """#21 item 2: chain(ema(0.5), sgd(1.0)) on ema's docstring example averages theta + g (-1.33, not +1.33)."""
  p = jnp.zeros(1)
  right = regularization.ema(0.5, inner=optax.sgd(1.0))   # the form that takes the optimizer
  u, state = right.update(jnp.array([-2.0]), right.init(p), p)
  np.testing.assert_allclose(np.asarray(regularization.ema_params(state)), [4 / 3], rtol=1e-6)

  wrong = optax.chain(regularization.ema(0.5), optax.sgd(1.0))
  state = wrong.init(p)
  u, state = wrong.update(jnp.array([-2.0]), state, p)
  p = optax.apply_updates(p, u)
  u, state = wrong.update(jnp.array([-2.0]), state, p)  # the second update sees params it did not average
  with pytest.raises(ValueError, match=r"ema is not the last transform.*inner=tx"):
    regularization.ema_params(state)


def test_misplacement_is_caught_inside_jit_and_a_correct_loop_never_trips():
  p0, grads = _stream()
  wrong = optax.chain(regularization.ema(0.9), adaptive.adam(1e-2))
  state, p = wrong.init(p0), p0
  step = jax.jit(wrong.update)
  for g in grads[:3]:
    u, state = step(g, state, p)
    p = optax.apply_updates(p, u)
  with pytest.raises(ValueError, match="not the last transform"):
    regularization.ema_params(state)
  # right placement, jitted step that fuses apply_updates, bfloat16 params: no false alarm
  right = regularization.ema(0.9, every=2, inner=adaptive.adam(1e-2))
  pb = jax.tree.map(lambda x: x.astype(jnp.bfloat16), p0)

  @jax.jit
  def train_step(p, s, g):
    u, s = right.update(jax.tree.map(lambda x: x.astype(jnp.bfloat16), g), s, p)
    return optax.apply_updates(p, u), s

  s = right.init(pb)
  for g in grads:
    pb, s = train_step(pb, s, g)
  regularization.ema_params(s)


def test_misplacement_is_caught_on_a_many_leaf_tree():
  """The placement check samples 8 of these 81 leaves: a misplaced ema is still caught, jitted
  and donated, and the right placement never trips it."""
  params = {f"layer{i:02d}": {"kernel": jnp.full((4, 3), 0.1 * (i + 1)), "bias": jnp.zeros(3)} for i in range(40)}
  params["scale"] = jnp.ones([])
  grads = jax.tree.map(lambda x: jnp.ones_like(x) * 0.5, params)
  for tx, misplaced in ((optax.chain(regularization.ema(0.9), optax.scale(-0.1)), True),
                        (regularization.ema(0.9, inner=optax.scale(-0.1)), False)):
    step = jax.jit(lambda p, s, tx=tx: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(grads, s, p)),
                   donate_argnums=(0, 1))
    p, s = jax.tree.map(jnp.copy, params), tx.init(params)
    for _ in range(3):
      p, s = step(p, s)
    if misplaced:
      with pytest.raises(ValueError, match="not the last transform"):
        regularization.ema_params(s)
    else:
      np.testing.assert_allclose(np.asarray(p["layer05"]["kernel"]), 0.6 - 3 * 0.05, rtol=1e-6)
      regularization.ema_params(s)


@pytest.mark.parametrize("inner, loops", [(optax.sgd(0.1), 2), (adaptive.adamw(1e-3, weight_decay=0.01), 4)],
                         ids=["sgd", "adamw"])
def test_donated_ema_step_copies_no_parameter(inner, loops):
  """Load-independent cost check (issue 19): the placement check reads a few entries of the
  params the caller then overwrites in place; the compiled step must still copy none of them
  (before issue 19 it copied every leaf; without the ordering it copies the sampled ones), and its
  loops are the inner optimizer's (params write; AdamW's two moments) and the average. AdamW's
  updates read the params (weight decay): when the checksum read the sampled leaves' updates, XLA
  materialized those updates and copied those params (96 loops and copies instead of 80)."""
  leaves = 20
  tree = {f"l{i:02d}": jax.ShapeDtypeStruct((64, 32), jnp.float32) for i in range(leaves)}
  big = donated_step_param_ops(regularization.ema(0.999, inner=inner), tree)
  assert not [line for line in big if "copy(" in line], big
  assert len(big) == loops * leaves, big


def test_swa_inner_is_the_chain():
  p0, grads = _stream(6)
  a = regularization.swa(start_step=2, every=2, inner=momentum.sgd(0.1, momentum=0.9))
  b = optax.chain(momentum.sgd(0.1, momentum=0.9), regularization.swa(start_step=2, every=2))
  for tx in (a, b):
    state, p = tx.init(p0), p0
    for g in grads:
      u, state = tx.update(g, state, p)
      p = optax.apply_updates(p, u)
    if tx is a:
      got = regularization.swa_params(state)
  np.testing.assert_array_equal(np.asarray(got["w"]), np.asarray(regularization.swa_params(state)["w"]))
