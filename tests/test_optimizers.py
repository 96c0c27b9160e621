"""Practices 4 and 5: closed-form steps, convergence, bad input and bfloat16 behaviour."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_practices import adaptive, momentum

G = [np.array([1.0, -2.0], np.float32), np.array([0.5, 4.0], np.float32), np.array([-3.0, 1.0], np.float32)]
P0 = np.array([0.5, -1.0], np.float32)


def _steps(tx, jit):
  """Three updates of ``tx`` on the gradient stream ``G`` from ``P0`` (float64 expectations)."""
  update = jax.jit(tx.update) if jit else tx.update
  p, state, out = jnp.asarray(P0), tx.init(jnp.asarray(P0)), []
  for g in G:
    u, state = update(jnp.asarray(g), state, p)
    p = optax.apply_updates(p, u)
    out.append(np.asarray(u, np.float64))
  return out


def _check(tx, expected, jit, rtol=1e-6):
  for got, want in zip(_steps(tx, jit), expected):
    chex.assert_trees_all_close(got, np.asarray(want, np.float64), rtol=rtol, atol=1e-7)


def _sgd_reference(lr, mu=0.0, tau=0.0, nesterov=False, wd=0.0):
  p, b, out = P0.astype(np.float64), None, []
  for g in G:
    g = g + wd * p
    if mu:
      b = g if b is None else mu * b + (1 - tau) * g
      g = g + mu * b if nesterov else b
    out.append(-lr * g)
    p = p - lr * g
  return out


jit_param = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])


@jit_param
def test_sgd_closed_form(jit):
  # Hand-computed: b1 = g1; b2 = 0.9 b1 + g2; b3 = 0.9 b2 + g3.
  b1 = G[0]
  b2 = 0.9 * b1 + G[1]
  b3 = 0.9 * b2 + G[2]
  _check(momentum.sgd(0.1, momentum=0.9), [-0.1 * b1, -0.1 * b2, -0.1 * b3], jit)
  _check(momentum.sgd(0.1), [-0.1 * g for g in G], jit)


@jit_param
@pytest.mark.parametrize("kw", [dict(mu=0.9, tau=0.3), dict(mu=0.9, nesterov=True), dict(mu=0.5, wd=0.1),
                                dict(mu=0.8, nesterov=True, wd=0.01)], ids=str)
def test_sgd_variants_closed_form(kw, jit):
  tx = momentum.sgd(0.05, momentum=kw.get("mu", 0.0), dampening=kw.get("tau", 0.0),
                    nesterov=kw.get("nesterov", False), weight_decay=kw.get("wd", 0.0))
  _check(tx, _sgd_reference(0.05, **kw), jit)


@jit_param
def test_adagrad_closed_form(jit):
  lr, decay, s0, eps = 0.1, 0.5, 0.25, 1e-10
  s, want = s0, []
  for t, g in enumerate(G):
    s = s + g.astype(np.float64) ** 2
    want.append(-lr / (1 + t * decay) * g / (np.sqrt(s) + eps))
  _check(adaptive.adagrad(lr, lr_decay=decay, initial_accumulator_value=s0, eps=eps), want, jit)


@jit_param
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("mu", [0.0, 0.9])
def test_rmsprop_closed_form(centered, mu, jit):
  lr, alpha, eps = 0.01, 0.9, 1e-3
  v = m = b = np.zeros(2)
  want = []
  for g in G:
    g = g.astype(np.float64)
    v = alpha * v + (1 - alpha) * g * g
    m = alpha * m + (1 - alpha) * g
    d = g / (np.sqrt(v - m * m if centered else v) + eps)
    b = mu * b + d
    want.append(-lr * (b if mu else d))
  _check(adaptive.rmsprop(lr, alpha=alpha, eps=eps, momentum=mu, centered=centered), want, jit, rtol=1e-5)


def _adam_reference(lr, b1, b2, eps, amsgrad=False, wd=0.0, decoupled=False):
  m = v = vmax = np.zeros(2)
  p, want = P0.astype(np.float64), []
  for t, g in enumerate(G, start=1):
    g = g.astype(np.float64)
    if wd and not decoupled:
      g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    vmax = np.maximum(vmax, v)
    denom = np.sqrt(vmax if amsgrad else v) / math.sqrt(1 - b2 ** t) + eps
    u = -lr * (m / (1 - b1 ** t)) / denom - (lr * wd * p if decoupled else 0.0)
    want.append(u)
    p = p + u
  return want


@jit_param
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_closed_form(amsgrad, jit):
  _check(adaptive.adam(0.1, b1=0.8, b2=0.9, eps=1e-3, amsgrad=amsgrad),
         _adam_reference(0.1, 0.8, 0.9, 1e-3, amsgrad), jit, rtol=1e-5)
  _check(adaptive.adam(0.1, b1=0.8, b2=0.9, eps=1e-3, amsgrad=amsgrad, weight_decay=0.3),
         _adam_reference(0.1, 0.8, 0.9, 1e-3, amsgrad, wd=0.3), jit, rtol=1e-5)


@jit_param
def test_amsgrad_takes_max_over_raw_second_moment(jit):
  # A large then small gradient: v shrinks, vmax keeps the raw max, then it is bias-corrected.
  tx = adaptive.scale_by_adam(b1=0.0, b2=0.5, eps=0.0, amsgrad=True)
  update = jax.jit(tx.update) if jit else tx.update
  state = tx.init(jnp.zeros(1))
  _, state = update(jnp.array([4.0]), state)
  u, state = update(jnp.array([1.0]), state)
  v1, v2 = 0.5 * 16, 0.25 * 16 + 0.5 * 1   # raw moments 8.0, 4.5
  expected = 1.0 / (math.sqrt(max(v1, v2)) / math.sqrt(1 - 0.25))
  np.testing.assert_allclose(np.asarray(u), [expected], rtol=1e-6)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_scale_by_adam_has_one_state_type(amsgrad):
  """A search for ScaleByAdamState finds AMSGrad too; ``nu_max`` is () without amsgrad."""
  params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
  tx = adaptive.adamw(1e-2, amsgrad=amsgrad)
  _, state = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  found = [s for s in state if isinstance(s, adaptive.ScaleByAdamState)]
  assert len(found) == 1 and int(found[0].count) == 1
  if amsgrad:
    chex.assert_trees_all_equal_structs(found[0].nu_max, params)
  else:
    assert found[0].nu_max == ()


def test_rmsprop_state_counts_updates_and_names_its_buffers():
  tx = adaptive.scale_by_rmsprop(momentum=0.5)
  state = tx.init(jnp.zeros(2))
  for _ in range(2):
    _, state = tx.update(jnp.ones(2), state)
  assert isinstance(state, adaptive.ScaleByRmspropState) and int(state.count) == 2
  assert state.grad_avg == () and state.momentum_buffer.shape == (2,)
  plain = adaptive.scale_by_rmsprop().init(jnp.zeros(2))
  assert plain.grad_avg == () and plain.momentum_buffer == () and int(plain.count) == 0


@jit_param
def test_adamw_closed_form(jit):
  _check(adaptive.adamw(0.1, b1=0.8, b2=0.9, eps=1e-3, weight_decay=0.3),
         _adam_reference(0.1, 0.8, 0.9, 1e-3, wd=0.3, decoupled=True), jit, rtol=1e-5)


def test_adamw_mask_auto_skips_vectors():
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
  grads = jax.tree.map(jnp.zeros_like, params)
  tx = adaptive.adamw(0.1, weight_decay=0.5, mask="auto")
  u, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_array_equal(np.asarray(u["bias"]), 0.0)
  np.testing.assert_allclose(np.asarray(u["kernel"]), -0.05, rtol=1e-6)


def test_momentum_schedule_is_evaluated_per_step():
  mus = [0.0, 0.5, 0.9]
  tx = momentum.scale_by_momentum(lambda count: jnp.asarray(mus, jnp.float32)[count])
  state = tx.init(jnp.zeros(2))
  b = None
  for mu, g in zip(mus, G):
    u, state = tx.update(jnp.asarray(g), state)
    b = g.astype(np.float64) if b is None else mu * b + g
    want = g if mu == 0 else b
    np.testing.assert_allclose(np.asarray(u), want, rtol=1e-6)


# ---------------------------------------------------------------------------- convergence
OPTIMIZERS = {
    "sgd": lambda: momentum.sgd(0.05),
    "sgd_momentum": lambda: momentum.sgd(0.01, momentum=0.9),
    "nesterov": lambda: momentum.sgd(0.01, momentum=0.9, nesterov=True),
    "adagrad": lambda: adaptive.adagrad(0.5),
    "rmsprop": lambda: adaptive.rmsprop(0.01),
    "rmsprop_centered_momentum": lambda: adaptive.rmsprop(0.003, momentum=0.9, centered=True),
    "adam": lambda: adaptive.adam(0.05),
    "amsgrad": lambda: adaptive.adam(0.05, amsgrad=True),
    "adamw": lambda: adaptive.adamw(0.05, weight_decay=1e-4),
}


def _minimise(tx, loss, x0, steps):
  @jax.jit
  def train(x):
    def body(carry, _):
      x, s = carry
      u, s = tx.update(jax.grad(loss)(x), s, x)
      return (optax.apply_updates(x, u), s), None
    (x, _), _ = jax.lax.scan(body, (x, tx.init(x)), None, length=steps)
    return x
  return train(x0)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_converges_on_ill_conditioned_quadratic(name):
  scales = jnp.array([1.0, 10.0, 0.5])
  target = jnp.array([1.0, -2.0, 3.0])
  loss = lambda x: 0.5 * jnp.sum(scales * (x - target) ** 2)
  x = _minimise(OPTIMIZERS[name](), loss, jnp.zeros(3), 3000)
  np.testing.assert_allclose(np.asarray(x), np.asarray(target), atol=2e-2)


ROSENBROCK = {
    "sgd_momentum": (lambda: momentum.sgd(1e-3, momentum=0.9), 20000),
    "nesterov": (lambda: momentum.sgd(1e-3, momentum=0.9, nesterov=True), 20000),
    "adam": (lambda: adaptive.adam(1e-2), 20000),
    "amsgrad": (lambda: adaptive.adam(1e-2, amsgrad=True), 20000),
    "rmsprop_momentum": (lambda: adaptive.rmsprop(1e-3, momentum=0.9), 20000),
}


@pytest.mark.parametrize("name", sorted(ROSENBROCK))
def test_converges_on_rosenbrock(name):
  make, steps = ROSENBROCK[name]
  loss = lambda x: (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2
  x = _minimise(make(), loss, jnp.array([-1.5, 2.0]), steps)
  assert float(loss(x)) < 1e-3, f"{name} ended at {x} with loss {float(loss(x))}"
  np.testing.assert_allclose(np.asarray(x), [1.0, 1.0], atol=0.1)


@pytest.mark.parametrize("factory", [momentum.sgd, adaptive.adam, adaptive.rmsprop, adaptive.adagrad])
def test_error_message_gives_the_allowed_range(factory):
  kwargs = {"learning_rate": -1.0}
  with pytest.raises(ValueError, match=r"learning_rate must be in \[0, inf\), got learning_rate = -1.0"):
    factory(**kwargs)


# ---------------------------------------------------------------------------- bfloat16
def test_adam_bf16_params_move_by_lr_per_step_for_3000_steps():
  """bf16 params/grads with float32 state: each Adam step is lr (a bf16 state would stall)."""
  lr, steps = 1e-3, 3000
  params = jnp.full((16,), 0.5, jnp.bfloat16)
  tx = adaptive.adam(lr)

  @jax.jit
  def train(params):
    def body(state, _):
      u, state = tx.update(jnp.ones_like(params), state, params)
      return state, u.astype(jnp.float32)
    state, updates = jax.lax.scan(body, tx.init(params), None, length=steps)
    return state, updates

  state, updates = train(params)
  assert state[0].mu.dtype == jnp.float32 and state[0].nu.dtype == jnp.float32
  per_step = -np.asarray(updates)
  np.testing.assert_allclose(per_step, lr, rtol=1e-2)
  np.testing.assert_allclose(per_step.sum(axis=0), steps * lr, rtol=1e-2)


def test_int32_step_counter_saturates_instead_of_wrapping():
  tx = adaptive.adam(1e-3)
  params = jnp.ones(3)
  state = tx.init(params)
  big = jnp.asarray(np.iinfo(np.int32).max - 1, jnp.int32)
  state = jax.tree.map(lambda x: big if (hasattr(x, "dtype") and x.dtype == jnp.int32) else x, state)
  for _ in range(3):
    u, state = tx.update(jnp.ones(3), state, params)
    chex.assert_tree_all_finite(u)
  counts = [x for x in jax.tree.leaves(state) if x.dtype == jnp.int32]
  assert counts and all(int(c) == np.iinfo(np.int32).max for c in counts)
  # At a saturated count the bias corrections are 1: the moments from zero after 3 steps.
  m, v = 1 - 0.9 ** 3, 1 - 0.999 ** 3
  np.testing.assert_allclose(np.asarray(u), -1e-3 * m / (math.sqrt(v) + 1e-8) * np.ones(3), rtol=1e-5)
