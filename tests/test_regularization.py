"""Practice 7 — regularization: weight decay, L2, gradient noise, EMA and SWA."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import grad_stream, nested_params, run
from jaxopt_practices import adaptive, clipping, momentum, regularization, schedules

JIT = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])


def _upd(tx, updates, params, jit=False, state=None):
  state = tx.init(params) if state is None else state
  return (jax.jit(tx.update) if jit else tx.update)(updates, state, params)


# ----------------------------------------------------------------------------- weight decay / L2
@JIT
@pytest.mark.parametrize("learning_rate", [None, 0.5])
def test_decoupled_weight_decay_closed_form_and_auto_mask(jit, learning_rate):
  params = nested_params(jnp.float32)
  grads = grad_stream(params, 1)[0]
  out, _ = _upd(regularization.decoupled_weight_decay(0.3, learning_rate=learning_rate), grads, params, jit)
  decay = np.float32(0.3) * np.float32(1.0 if learning_rate is None else learning_rate)
  for g, p, o in zip(jax.tree.leaves(grads), jax.tree.leaves(params), jax.tree.leaves(out)):
    if p.ndim >= 2:
      np.testing.assert_allclose(np.asarray(o), np.asarray(g) - decay * np.asarray(p), rtol=1e-6, atol=1e-7)
    else:  # biases, scalars: bitwise untouched
      assert o.dtype == g.dtype
      np.testing.assert_array_equal(np.asarray(o).view(np.uint32), np.asarray(g).view(np.uint32))


@pytest.mark.parametrize("learning_rate", [None, 0.5])
def test_auto_mask_leaves_1d_bf16_bitwise(learning_rate):
  params = nested_params(jnp.bfloat16)
  grads = grad_stream(params, 1)[0]
  grads["dense"]["bias"] = grads["dense"]["bias"].at[0].set(jnp.nan)  # NaN payloads survive too
  out, _ = _upd(regularization.decoupled_weight_decay(0.1, learning_rate=learning_rate), grads, params, True)
  for o, g in [(out["dense"]["bias"], grads["dense"]["bias"]), (out["conv"][1][0], grads["conv"][1][0]),
               (out["scalar"], grads["scalar"])]:
    np.testing.assert_array_equal(np.asarray(o).view(np.uint16), np.asarray(g).view(np.uint16))


def test_weight_decay_masks():
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
  zeros = jax.tree.map(jnp.zeros_like, params)
  cases = {
      None: (0.5, 0.5),
      "auto": (0.5, 0.0),
      "tree": (0.0, 0.5),
      "callable": (0.0, 0.5),
  }
  masks = {None: None, "auto": "auto", "tree": {"kernel": False, "bias": True},
           "callable": lambda p: jax.tree.map(lambda x: x.ndim == 1, p)}
  for key, (k, b) in cases.items():
    for tx, sign in ((regularization.decoupled_weight_decay(0.5, masks[key]), -1.0),
                     (regularization.l2_penalty(0.5, masks[key]), 1.0)):
      out, _ = _upd(tx, zeros, params)
      np.testing.assert_allclose(np.asarray(out["kernel"]), sign * k)
      np.testing.assert_allclose(np.asarray(out["bias"]), sign * b)


def test_weight_decay_array_mask_leaves():
  params = {"w": jnp.ones(3)}
  tx = regularization.decoupled_weight_decay(1.0, {"w": jnp.array(True)})
  out, _ = _upd(tx, {"w": jnp.zeros(3)}, params, jit=True)
  np.testing.assert_allclose(np.asarray(out["w"]), -1.0)


@pytest.mark.parametrize("learning_rate", [1e-2, optax.linear_schedule(1e-2, 1e-3, 10)], ids=["float", "schedule"])
def test_adamw_is_the_documented_chain_of_public_pieces(learning_rate):
  """``adamw`` == chain(scale_by_adam, scale_by_learning_rate, decoupled_weight_decay), to the bit."""
  params = nested_params()
  grads = grad_stream(params, 20)
  mine = optax.chain(adaptive.scale_by_adam(), schedules.scale_by_learning_rate(learning_rate),
                     regularization.decoupled_weight_decay(0.1, mask="auto", learning_rate=learning_rate))
  ref = adaptive.adamw(learning_rate, weight_decay=0.1, mask="auto")
  p1, _, _ = run(mine, params, grads, jit=True)
  p2, _, _ = run(ref, params, grads, jit=True)
  chex.assert_trees_all_equal(p1, p2)


def test_decay_follows_the_learning_rate_only_when_given_one():
  """big_vision (learning_rate=None): ``-lr * u - wd * p``, the same decay for every base lr;
  AdamW (learning_rate=lr): ``-lr * u - lr * wd * p``."""
  params = {"kernel": jnp.full((2, 2), 2.0)}
  for lr in (1e-3, 1.0):
    tx = optax.chain(optax.scale(-lr), regularization.decoupled_weight_decay(0.01))
    out, _ = _upd(tx, {"kernel": jnp.zeros((2, 2))}, params)
    np.testing.assert_allclose(np.asarray(out["kernel"]), -0.02, rtol=1e-6)
    tx = optax.chain(optax.scale(-lr), regularization.decoupled_weight_decay(0.01, learning_rate=lr))
    out, _ = _upd(tx, {"kernel": jnp.zeros((2, 2))}, params)
    factor = np.float32(1.0) - np.float32(lr) * np.float32(0.01)  # PyTorch rounds 1 - lr * wd to float32
    np.testing.assert_allclose(np.asarray(out["kernel"]), (factor - np.float32(1.0)) * np.float32(2.0), rtol=1e-6)


def test_decay_rate_schedule():
  sched = optax.linear_schedule(1.0, 0.0, 4)
  params = {"k": jnp.ones((1, 1))}
  tx = regularization.decoupled_weight_decay(sched)
  s, got = tx.init(params), []
  for _ in range(4):  # params held fixed: u_t = -rate(t) * 1
    u, s = jax.jit(tx.update)({"k": jnp.zeros((1, 1))}, s, params)
    got.append(float(u["k"][0, 0]))
  np.testing.assert_allclose(got, [-1.0, -0.75, -0.5, -0.25], rtol=1e-6)


def test_l2_penalty_plus_sgd_equals_sgd_weight_decay():
  params = nested_params()
  grads = grad_stream(params, 15)
  mine = optax.chain(regularization.l2_penalty(1e-2), momentum.sgd(0.1, momentum=0.9))
  ref = momentum.sgd(0.1, momentum=0.9, weight_decay=1e-2)
  chex.assert_trees_all_close(run(mine, params, grads)[0], run(ref, params, grads)[0], rtol=1e-6, atol=1e-7)


def test_decay_needs_params():
  for tx in (regularization.decoupled_weight_decay(0.1), regularization.l2_penalty(0.1),
             regularization.ema(), regularization.swa(1, 1)):
    with pytest.raises(ValueError, match="params"):
      tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


# ----------------------------------------------------------------------------- gradient noise
def test_gradient_noise_variance_closed_form():
  """Sample variance of the noise at steps t matches eta / (1 + t)**gamma (200k draws each)."""
  eta, gamma = 0.3, 0.55
  tx = regularization.gradient_noise(eta, gamma, seed=7)
  zeros = {"a": jnp.zeros((400, 250), jnp.float32), "b": jnp.zeros((100_000,), jnp.bfloat16)}
  update = jax.jit(tx.update)
  s = tx.init(zeros)
  prev = None
  for t in range(12):
    u, s = update(zeros, s)
    if t in (0, 1, 10, 11):
      x = np.asarray(u["a"], np.float64).ravel()
      var = eta / (1.0 + t) ** gamma
      n = x.size
      # sample variance: relative std sqrt(2/n) ~ 0.3%; allow 5 sigma
      assert abs(x.var() / var - 1) < 5 * np.sqrt(2 / n), (t, x.var(), var)
      assert abs(x.mean()) < 5 * np.sqrt(var / n)
      xb = np.asarray(u["b"], np.float64)
      assert abs(xb.var() / var - 1) < 0.02
      if t == 11:  # fresh noise every step
        assert abs(np.corrcoef(x, prev)[0, 1]) < 5 / np.sqrt(n)
      prev = x
    assert u["b"].dtype == jnp.bfloat16
  assert s.key.dtype == jnp.uint32 and not jax.dtypes.issubdtype(s.key.dtype, jax.dtypes.prng_key)
  assert int(s.count) == 12


def test_gradient_noise_leaves_are_independent():
  tx = regularization.gradient_noise(1.0, 0.0)
  g = {"a": jnp.zeros(50_000), "b": jnp.zeros(50_000)}
  u, _ = tx.update(g, tx.init(g))
  assert abs(np.corrcoef(np.asarray(u["a"]), np.asarray(u["b"]))[0, 1]) < 5 / np.sqrt(50_000)


@pytest.mark.parametrize("axis_name", [None, "i"])
def test_gradient_noise_identical_across_replicas(axis_name):
  n = jax.local_device_count()
  tx = regularization.gradient_noise(0.1, seed=3, axis_name=axis_name)
  single = regularization.gradient_noise(0.1, seed=3)
  g = {"w": jnp.zeros((n, 64, 8)), "b": jnp.zeros((n, 8))}
  s = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), tx.init(jax.tree.map(lambda x: x[0], g)))
  step = jax.pmap(tx.update, axis_name="i")
  s1 = single.init(None)
  for _ in range(3):
    u, s = step(g, s)
    u1, s1 = jax.jit(single.update)(jax.tree.map(lambda x: x[0], g), s1)
    for leaf, ref in zip(jax.tree.leaves(u), jax.tree.leaves(u1)):
      for d in range(1, n):  # replicas bitwise identical
        np.testing.assert_array_equal(np.asarray(leaf[d]), np.asarray(leaf[0]))
      # and the same draw as one device (up to XLA fusion round-off)
      np.testing.assert_allclose(np.asarray(leaf[0]), np.asarray(ref), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(s.key[0]), np.asarray(s1.key))


def test_gradient_noise_axis_name_uses_replica_zero_key():
  """With axis_name, replicas whose states were seeded differently still add the same noise."""
  n = jax.local_device_count()
  tx = regularization.gradient_noise(0.1, axis_name="i")
  states = [regularization.gradient_noise(0.1, seed=d).init(None) for d in range(n)]
  s = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
  u, s = jax.pmap(tx.update, axis_name="i")(jnp.zeros((n, 100)), s)
  for d in range(1, n):
    np.testing.assert_array_equal(np.asarray(u[d]), np.asarray(u[0]))
    np.testing.assert_array_equal(np.asarray(s.key[d]), np.asarray(s.key[0]))


# ----------------------------------------------------------------------------- EMA
def _ema_reference(thetas, decay, debias):
  """float64 closed form over theta_0..theta_t."""
  t = len(thetas) - 1
  w = np.array([decay ** (t - i) for i in range(t + 1)])
  if not debias:
    w[0] = decay ** t  # theta_0 carries the whole initial weight
    w[1:] *= 1 - decay
    return np.tensordot(w, np.stack(thetas), axes=1)
  return np.tensordot(w, np.stack(thetas), axes=1) / w.sum()


@JIT
@pytest.mark.parametrize("debias", [True, False])
def test_ema_closed_form(debias, jit):
  params = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((3, 2)), jnp.float32)}
  grads = grad_stream(params, 30)
  tx = optax.chain(optax.sgd(0.1), regularization.ema(0.8, debias=debias))
  update = jax.jit(tx.update) if jit else tx.update
  p, s = params, tx.init(params)
  thetas = [np.asarray(p["w"], np.float64)]
  for g in grads:
    u, s = update(g, s, p)
    p = optax.apply_updates(p, u)
    thetas.append(np.asarray(p["w"], np.float64))
    np.testing.assert_allclose(np.asarray(regularization.ema_params(s)["w"]),
                               _ema_reference(thetas, np.float64(np.float32(0.8)), debias), rtol=1e-5, atol=1e-6)


def test_ema_passes_updates_through():
  params = nested_params()
  g = grad_stream(params, 1)[0]
  u, _ = _upd(regularization.ema(), g, params)
  chex.assert_trees_all_equal(u, g)


def test_debiased_ema_of_constant_bf16_params_over_5000_steps():
  params = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((16, 16)) * 3, jnp.bfloat16),
            "b": jnp.full((7,), 0.1234, jnp.bfloat16)}
  tx = regularization.ema(0.999)
  zeros = jax.tree.map(jnp.zeros_like, params)

  @jax.jit
  def scan(s):
    def body(s, _):
      _, s = tx.update(zeros, s, params)
      e = regularization.ema_params(s)
      err = jnp.max(jnp.stack([jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))
                               for a, b in zip(jax.tree.leaves(e), jax.tree.leaves(params))]))
      return s, err
    return jax.lax.scan(body, s, None, length=5000)

  s, errs = scan(tx.init(params))
  assert float(jnp.max(errs)) <= 1e-2
  e = regularization.ema_params(s)
  assert e["w"].dtype == jnp.bfloat16 and s.weighted_sum["w"].dtype == jnp.float32
  assert float(jnp.max(jnp.abs(e["w"].astype(jnp.float32) - params["w"].astype(jnp.float32)))) <= 1e-2


def test_ema_params_found_anywhere():
  params = nested_params()
  g = grad_stream(params, 1)[0]
  plain = optax.chain(optax.sgd(0.1), regularization.ema(0.5))
  ref = regularization.ema_params(_upd(plain, g, params)[1])
  nested = [
      optax.chain(optax.identity(), optax.chain(optax.sgd(0.1), regularization.ema(0.5))),
      optax.inject_hyperparams(lambda learning_rate: optax.chain(optax.sgd(learning_rate),
                                                                 regularization.ema(0.5)))(0.1),
      clipping.skip_nonfinite(optax.chain(optax.sgd(0.1), regularization.ema(0.5))),
      optax.chain(optax.sgd(0.1), optax.inject_hyperparams(regularization.ema)(decay=0.5)),
  ]
  for tx in nested:
    chex.assert_trees_all_close(regularization.ema_params(_upd(tx, g, params, jit=True)[1]), ref, rtol=1e-6)
  with pytest.raises(ValueError, match="EmaState"):
    regularization.ema_params(optax.sgd(0.1).init(params))
  two = optax.chain(regularization.ema(), regularization.ema())
  with pytest.raises(ValueError, match="found 2"):
    regularization.ema_params(two.init(params))


def test_ema_params_inside_optax_masked():
  p = {"a": jnp.ones(2), "b": jnp.ones((2, 2), jnp.bfloat16)}
  tx = optax.chain(optax.sgd(0.1), optax.masked(regularization.ema(0.5), {"a": False, "b": True}))
  _, s = _upd(tx, jax.tree.map(jnp.ones_like, p), p)
  e = regularization.ema_params(s)
  assert isinstance(e["a"], optax.MaskedNode) and e["b"].dtype == jnp.bfloat16
  # theta_0 = 1, theta_1 = 0.9: (0.5 * 1 + 1 * 0.9) / 1.5
  np.testing.assert_allclose(np.asarray(e["b"], np.float32), 1.4 / 1.5, rtol=4e-3)


def test_ema_params_on_replicated_state():
  n = jax.local_device_count()
  params = {"w": jnp.ones((3,), jnp.bfloat16)}
  tx = regularization.ema(0.9)
  s = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), tx.init(params))
  p = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), params)
  _, s = jax.pmap(tx.update)(jax.tree.map(jnp.ones_like, p), s, p)
  e = regularization.ema_params(s)
  assert e["w"].shape == (n, 3) and e["w"].dtype == jnp.bfloat16
  # theta_0 = 1, theta_1 = 2: (0.9 * 1 + 1 * 2) / 1.9
  np.testing.assert_allclose(np.asarray(e["w"], np.float32), 2.9 / 1.9, rtol=1e-2)


# ----------------------------------------------------------------------------- SWA
def _swa_run(start, every, steps, jit=True, dtype=jnp.float32):
  params = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((4, 3)), dtype)}
  tx = optax.chain(optax.sgd(0.1, momentum=0.5), regularization.swa(start, every))
  update = jax.jit(tx.update) if jit else tx.update
  p, s = params, tx.init(params)
  thetas, avgs = [np.asarray(p["w"], np.float64)], [regularization.swa_params(s)]
  for g in grad_stream(params, steps):
    u, s = update(g, s, p)
    p = optax.apply_updates(p, u)
    thetas.append(np.asarray(p["w"], np.float64))
    avgs.append(regularization.swa_params(s))
  return thetas, avgs, s


@JIT
@pytest.mark.parametrize("start,every", [(0, 1), (0, 3), (5, 1), (5, 4), (1, 2)])
def test_swa_closed_form(start, every, jit):
  thetas, avgs, s = _swa_run(start, every, 20, jit)
  for t, avg in enumerate(avgs):
    snaps = [k for k in range(start, t + 1, every)]
    expected = np.mean([thetas[k] for k in snaps], axis=0) if snaps else thetas[t]
    np.testing.assert_allclose(np.asarray(avg["w"]), expected, rtol=1e-5, atol=1e-6)
  assert int(s[1].n_averaged) == len(range(start, 21, every))


def test_swa_matches_torch_averaged_model():
  torch = pytest.importorskip("torch")
  from torch.optim.swa_utils import AveragedModel

  start, every = 3, 2
  thetas, avgs, _ = _swa_run(start, every, 15)
  model = torch.nn.Linear(4, 3, bias=False)  # weight (3, 4) = theta.T
  with torch.no_grad():
    model.weight.copy_(torch.tensor(thetas[0].T, dtype=torch.float32))
  swa_model = AveragedModel(model)
  for t in range(1, 16):
    with torch.no_grad():
      model.weight.copy_(torch.tensor(np.float32(thetas[t]).T))
    if t >= start and (t - start) % every == 0:
      swa_model.update_parameters(model)
  torch_avg = swa_model.module.weight.detach().numpy().T
  np.testing.assert_allclose(np.asarray(avgs[-1]["w"]), torch_avg, rtol=1e-6, atol=1e-7)


def test_swa_bf16_params_average_in_float32():
  _, avgs, s = _swa_run(2, 1, 10, dtype=jnp.bfloat16)
  assert avgs[-1]["w"].dtype == jnp.bfloat16
  assert s[1].average["w"].dtype == jnp.float32


def test_states_checkpoint_with_orbax(tmp_path):
  """EMA / SWA / noise states (static dtype node, raw uint32 key) round-trip through Orbax."""
  ocp = pytest.importorskip("orbax.checkpoint")
  p = {"a": jnp.ones(2), "b": jnp.ones((2, 2), jnp.bfloat16)}
  tx = optax.chain(regularization.gradient_noise(), optax.sgd(0.1), regularization.ema(0.5), regularization.swa(1, 1))
  _, s = _upd(tx, jax.tree.map(jnp.ones_like, p), p)
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(tmp_path / "state", s)
  ckpt.wait_until_finished()
  restored = ckpt.restore(tmp_path / "state", jax.tree.map(ocp.utils.to_shape_dtype_struct, tx.init(p)))
  assert jax.tree.structure(restored) == jax.tree.structure(s)
  chex.assert_trees_all_equal(restored, s)
  chex.assert_trees_all_equal(regularization.ema_params(restored), regularization.ema_params(s))
  chex.assert_trees_all_equal(regularization.swa_params(restored), regularization.swa_params(s))
