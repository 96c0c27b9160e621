"""regularization.update_bn ≙ torch.optim.swa_utils.update_bn; BatchNorm statistics averaged alongside the params
(torchvision's AveragedModel(use_buffers=True)) for linen and NNX (issue #22 item 3)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxopt_practices import regularization


def _batches(k=5, b=8, c=3, seed=0):
  rng = np.random.default_rng(seed)
  return [np.asarray(rng.standard_normal((b, c)) * (1.0 + i) + 2.0 * i, np.float32) for i in range(k)]


@pytest.mark.parametrize("momentum", [0.9, 0.99])
def test_update_bn_matches_torch_update_bn(momentum):
  torch = pytest.importorskip("torch")
  from torch.optim.swa_utils import update_bn as torch_update_bn

  batches = _batches()
  model = nn.BatchNorm(use_running_average=False, momentum=momentum)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 3)))
  variables = {**variables, "batch_stats": jax.tree.map(lambda s: s + 7.0, variables["batch_stats"])}  # stale stats
  got = regularization.update_bn(lambda v, x: model.apply(v, x, mutable=["batch_stats"]),
                                 variables, [jnp.asarray(x) for x in batches])

  bn = torch.nn.BatchNorm1d(3)
  torch_update_bn([torch.tensor(x) for x in batches], bn)
  n = batches[0].shape[0]
  np.testing.assert_allclose(np.asarray(got["mean"]), bn.running_mean.numpy(), rtol=2e-5, atol=1e-6)
  # flax stores the biased batch variance, torch the unbiased one
  np.testing.assert_allclose(np.asarray(got["var"]), bn.running_var.numpy() * (n - 1) / n, rtol=2e-5)
  # closed form: the equal-weight mean over batches of each batch's mean / biased variance
  np.testing.assert_allclose(np.asarray(got["mean"]), np.mean([x.mean(0) for x in batches], 0), rtol=2e-5)
  np.testing.assert_allclose(np.asarray(got["var"]), np.mean([x.var(0) for x in batches], 0), rtol=2e-5)


def test_update_bn_bad_inputs():
  model = nn.BatchNorm(use_running_average=False)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 3)))
  fn = lambda v, x: model.apply(v, x, mutable=["batch_stats"])  # noqa: E731
  with pytest.raises(ValueError, match="at least one batch"):
    regularization.update_bn(fn, variables, [])
  with pytest.raises(ValueError, match="batch_stats"):
    regularization.update_bn(fn, {"params": {}}, [jnp.ones((2, 3))])
  with pytest.raises(ValueError, match="apply_fn"):
    regularization.update_bn("model", variables, [jnp.ones((2, 3))])


class LinenNet(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    return nn.Dense(1)(nn.BatchNorm(use_running_average=not train, momentum=0.8)(nn.Dense(4)(x)))


def _reference_ema(snapshots, d, every):
  """torchvision's AveragedModel(avg_fn=ema_avg, use_buffers=True).

  The buffers get the same avg_fn at the same steps.
  """
  avg = np.asarray(snapshots[0], np.float64)
  for t, x in enumerate(snapshots[1:]):
    if t % every == 0:
      avg = d * avg + (1 - d) * np.asarray(x, np.float64)
  return avg


def test_batch_stats_averaged_alongside_params_linen():
  """The documented way: one more ema, same settings, fed the batch_stats' change at each step."""
  d, every, model = 0.6, 2, LinenNet()
  x = jnp.asarray(_batches(k=1, b=16)[0])
  variables = model.init(jax.random.key(0), x, train=False)
  params, stats = variables["params"], variables["batch_stats"]
  tx = regularization.ema(d, debias=False, every=every, inner=optax.sgd(0.1))
  bn_ema = regularization.ema(d, debias=False, every=every)
  opt_state, bn_state = tx.init(params), bn_ema.init(stats)
  history = [stats]

  @jax.jit
  def step(params, stats, opt_state, bn_state):
    def loss(p):
      out, mutated = model.apply({"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
      return jnp.mean(out ** 2), mutated["batch_stats"]
    grads, new_stats = jax.grad(loss, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    _, bn_state = bn_ema.update(jax.tree.map(jnp.subtract, new_stats, stats), bn_state, stats)
    return optax.apply_updates(params, updates), new_stats, opt_state, bn_state

  for _ in range(7):
    params, stats, opt_state, bn_state = step(params, stats, opt_state, bn_state)
    history.append(stats)
  avg_stats = regularization.ema_params(bn_state)
  for key in ("mean", "var"):
    want = _reference_ema([h["BatchNorm_0"][key] for h in history], d, every)
    np.testing.assert_allclose(np.asarray(avg_stats["BatchNorm_0"][key]), want, rtol=1e-5, atol=1e-6)
  ema_vars = {"params": regularization.ema_params(opt_state), "batch_stats": avg_stats}
  assert model.apply(ema_vars, x, train=False).shape == (16, 1)


def test_batch_stats_averaged_alongside_params_nnx():
  d, every = 0.6, 2
  model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.BatchNorm(4, momentum=0.8, rngs=nnx.Rngs(1)),
                         nnx.Linear(4, 1, rngs=nnx.Rngs(2)))
  x = jnp.asarray(_batches(k=1, b=16)[0])
  tx = regularization.ema(d, debias=False, every=every, inner=optax.sgd(0.1))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  bn_ema = regularization.ema(d, debias=False, every=every)
  snapshot = lambda: jax.tree.map(jnp.copy, nnx.state(model, nnx.BatchStat))  # noqa: E731  (nnx.state is live)
  stats = snapshot()
  bn_state = bn_ema.init(stats)
  history = [stats]
  for _ in range(5):
    model.train()
    grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
    optimizer.update(model, grads)
    new_stats = snapshot()
    _, bn_state = bn_ema.update(jax.tree.map(jnp.subtract, new_stats, stats), bn_state, stats)
    stats = new_stats
    history.append(stats)
  avg = regularization.ema_params(bn_state)
  want = _reference_ema([jax.tree.leaves(h)[0] for h in history], d, every)
  np.testing.assert_allclose(np.asarray(jax.tree.leaves(avg)[0]), want, rtol=1e-5, atol=1e-6)
  eval_model = nnx.clone(model)
  nnx.update(eval_model, regularization.ema_params(optimizer), avg)
  eval_model.eval()
  np.testing.assert_allclose(np.asarray(eval_model.layers[1].mean[...]), np.asarray(jax.tree.leaves(avg)[0]), rtol=1e-6)
  assert eval_model(x).shape == (16, 1)
