"""Practice 6 — gradient clipping: PyTorch parity, precision, AGC bound, fault injection, bad args."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import grad_stream, nested_params
from jaxopt_practices import adaptive, clipping

JIT = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])


def _update(tx, grads, params=None, jit=False):
  state = tx.init(grads if params is None else params)
  fn = jax.jit(tx.update) if jit else tx.update
  return fn(grads, state, params)


def _random_tree(seed, scales=(1.0, 30.0, 0.01, 5.0)):
  rng = np.random.default_rng(seed)
  shapes = [(7, 5), (5,), (3, 3, 2, 4), ()]
  return {f"p{i}": (s * rng.standard_normal(shape)).astype(np.float32)
          for i, (shape, s) in enumerate(zip(shapes, scales))}


# ----------------------------------------------------------------------------- PyTorch parity
@JIT
@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.0, 3.0, 0.5])
@pytest.mark.parametrize("max_norm", [0.1, 1.0, 1e4])
def test_clip_by_global_norm_matches_torch(norm_type, max_norm, jit):
  torch = pytest.importorskip("torch")
  for seed in range(3):
    tree = _random_tree(seed)
    tensors = [torch.tensor(x.copy(), requires_grad=True) for x in tree.values()]
    for t, x in zip(tensors, tree.values()):
      t.grad = torch.tensor(x.copy())
    total = torch.nn.utils.clip_grad_norm_(tensors, max_norm, norm_type=norm_type)
    out, state = _update(clipping.clip_by_global_norm(max_norm, norm_type), jax.tree.map(jnp.asarray, tree), jit=jit)
    np.testing.assert_allclose(float(state.norm), float(total), rtol=2e-6)
    for t, (k, x) in zip(tensors, tree.items()):
      np.testing.assert_allclose(np.asarray(out[k]), t.grad.numpy(), rtol=2e-6, atol=1e-12)
      if max_norm == 1e4:  # no clipping: bitwise untouched
        np.testing.assert_array_equal(np.asarray(out[k]), x)


@JIT
def test_clip_by_value_matches_torch(jit):
  torch = pytest.importorskip("torch")
  tree = _random_tree(0)
  tree["p1"][0] = np.nan
  tensors = [torch.zeros(x.shape, requires_grad=True) for x in tree.values()]
  for t, x in zip(tensors, tree.values()):
    t.grad = torch.tensor(x.copy())
  torch.nn.utils.clip_grad_value_(tensors, 0.7)
  out, _ = _update(clipping.clip_by_value(0.7), jax.tree.map(jnp.asarray, tree), jit=jit)
  for t, k in zip(tensors, tree):
    np.testing.assert_array_equal(np.asarray(out[k]), t.grad.numpy())


def test_clip_by_global_norm_sgd_run_matches_torch():
  """Clip + SGD over 300 steps of a quadratic, gradients computed from the params in each framework."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  a = rng.standard_normal((6, 6)).astype(np.float32)
  target = (5.0 * rng.standard_normal(6)).astype(np.float32)
  w0 = np.zeros(6, np.float32)

  w_t = torch.tensor(w0.copy(), requires_grad=True)
  opt = torch.optim.SGD([w_t], lr=0.05, momentum=0.9)
  a_t, y_t = torch.tensor(a), torch.tensor(target)
  for _ in range(300):
    opt.zero_grad()
    ((a_t @ w_t - y_t) ** 2).sum().backward()
    torch.nn.utils.clip_grad_norm_([w_t], 1.0, norm_type=3.0)
    opt.step()

  tx = optax.chain(clipping.clip_by_global_norm(1.0, 3.0), optax.sgd(0.05, momentum=0.9))
  loss = lambda w: jnp.sum((jnp.asarray(a) @ w - jnp.asarray(target)) ** 2)

  @jax.jit
  def step(w, s):
    u, s = tx.update(jax.grad(loss)(w), s, w)
    return optax.apply_updates(w, u), s

  w, s = jnp.asarray(w0), tx.init(jnp.asarray(w0))
  for _ in range(300):
    w, s = step(w, s)
  np.testing.assert_allclose(np.asarray(w), w_t.detach().numpy(), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- precision
def test_bf16_global_norm_over_1000_leaves():
  """Eager (1,000 leaves would make a slow compile); the jitted path is the same code, checked below."""
  rng = np.random.default_rng(0)
  shapes = [(7,), (16,), (4, 8), (3, 3, 2)]
  leaves64 = [rng.standard_normal(shapes[i % 4]) * 10.0 ** rng.uniform(-2, 2) for i in range(1000)]
  grads = [jnp.asarray(x, jnp.bfloat16) for x in leaves64]
  as64 = lambda tree: np.concatenate([np.asarray(x, np.float64).ravel() for x in tree])
  exact = np.linalg.norm(as64(grads))
  # bfloat16 accumulation (what a naive global norm in the gradient dtype does) is far off:
  naive = jnp.zeros([], jnp.bfloat16)
  for g in grads:
    naive = naive + jnp.sum(jnp.square(g))
  assert abs(float(jnp.sqrt(naive)) - exact) > 0.01 * exact
  for max_norm in (exact / 10, exact / 1.001):
    out, state = _update(clipping.clip_by_global_norm(max_norm), grads)
    assert state.norm.dtype == jnp.float32
    assert abs(float(state.norm) - exact) <= 0.01 * exact
    assert all(o.dtype == jnp.bfloat16 for o in out)
    clipped = np.linalg.norm(as64(out))
    assert clipped <= max_norm, (clipped, max_norm)
    assert clipped >= 0.99 * max_norm


@JIT
def test_bf16_clipped_norm_never_above_max_norm(jit):
  for seed in range(6):
    rng = np.random.default_rng(seed)
    grads = {"a": jnp.asarray(rng.standard_normal((64, 32)) * 3, jnp.bfloat16),
             "b": jnp.asarray(rng.standard_normal(100), jnp.bfloat16)}
    max_norm = float(rng.uniform(0.1, 10))
    out, state = _update(clipping.clip_by_global_norm(max_norm), grads, jit=jit)
    flat = np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(out)])
    assert np.linalg.norm(flat) <= max_norm
    ref = np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(grads)])
    np.testing.assert_allclose(float(state.norm), np.linalg.norm(ref), rtol=1e-5)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("magnitude", [1e20, 3e38])
def test_huge_finite_float32_gradients_clip_to_max_norm(norm_type, magnitude):
  rng = np.random.default_rng(1)
  grads = {"a": jnp.asarray(rng.uniform(0.5, 1.0, (50, 4)) * magnitude, jnp.float32),
           "b": jnp.asarray(-rng.uniform(0.5, 1.0, 7) * magnitude, jnp.float32)}
  for jit in (False, True):
    out, state = _update(clipping.clip_by_global_norm(2.0, norm_type), grads, jit=jit)
    chex.assert_tree_all_finite(out)
    flat = np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(out)])
    got = np.max(np.abs(flat)) if norm_type == math.inf else np.sum(np.abs(flat) ** norm_type) ** (1 / norm_type)
    np.testing.assert_allclose(got, 2.0, rtol=1e-5)
    # direction kept
    np.testing.assert_allclose(np.asarray(out["a"]) / np.asarray(out["b"])[0],
                               np.asarray(grads["a"], np.float64) / float(grads["b"][0]), rtol=1e-5)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_global_norm_returns_the_norm_clip_by_global_norm_records(norm_type):
  tree = {**_random_tree(4), "half": jnp.asarray(np.linspace(-3, 3, 9), jnp.bfloat16)}
  got = clipping.global_norm(tree, norm_type)
  assert isinstance(got, jax.Array) and got.shape == () and got.dtype == jnp.float32
  flat = np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])
  want = np.max(np.abs(flat)) if norm_type == math.inf else np.sum(np.abs(flat) ** norm_type) ** (1 / norm_type)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  _, state = _update(clipping.clip_by_global_norm(1.0, norm_type), tree)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(state.norm))
  huge = clipping.global_norm({"a": jnp.full((3,), 3e37), "b": jnp.full((4,), -3e37)}, norm_type)
  np.testing.assert_allclose(float(huge), 3e37 * (1.0 if norm_type == math.inf else 7.0 ** (1 / norm_type)), rtol=1e-5)
  with pytest.raises(ValueError, match="norm_type"):
    clipping.global_norm(tree, -norm_type)


def test_nonfinite_gradients_behave_like_torch():
  torch = pytest.importorskip("torch")
  for bad in (np.nan, np.inf):
    g = np.array([1.0, bad, -2.0], np.float32)
    t = torch.zeros(3, requires_grad=True)
    t.grad = torch.tensor(g)
    total = torch.nn.utils.clip_grad_norm_([t], 1.0)
    out, state = _update(clipping.clip_by_global_norm(1.0), jnp.asarray(g))
    np.testing.assert_array_equal(np.asarray(out), t.grad.numpy())
    np.testing.assert_array_equal(np.asarray(state.norm), total.numpy())


@pytest.mark.parametrize("norm_type", [2.0, math.inf, 3.0])
def test_sharded_global_norm_under_pmap(norm_type):
  n = jax.local_device_count()
  rng = np.random.default_rng(2)
  shards = {"w": jnp.asarray(rng.standard_normal((n, 5, 3)) * np.arange(1, n + 1)[:, None, None], jnp.float32),
            "b": jnp.asarray(rng.standard_normal((n, 4)), jnp.float32)}
  tx_sharded = clipping.clip_by_global_norm(1.0, norm_type, axis_name="i")
  out, state = jax.pmap(lambda g: tx_sharded.update(g, tx_sharded.init(g)), axis_name="i")(shards)
  # Reference: one device, all shards concatenated.
  tx = clipping.clip_by_global_norm(1.0, norm_type)
  ref_out, ref_state = tx.update(shards, tx.init(shards))
  np.testing.assert_allclose(np.asarray(state.norm), np.full(n, float(ref_state.norm)), rtol=1e-6)
  assert len(set(np.asarray(state.norm).tolist())) == 1, "replicas disagree on the norm"
  chex.assert_trees_all_close(out, ref_out, rtol=1e-6)
  norms = jax.pmap(lambda g: clipping.global_norm(g, norm_type, axis_name="i"), axis_name="i")(shards)
  np.testing.assert_array_equal(np.asarray(norms), np.asarray(state.norm))


def test_traced_norm_type_via_inject_hyperparams():
  grads = _random_tree(3)
  for p in (1.0, 2.0, 3.0, math.inf):
    tx = optax.inject_hyperparams(clipping.clip_by_global_norm)(max_norm=0.5, norm_type=p)
    ref, ref_state = _update(clipping.clip_by_global_norm(0.5, p), grads)
    got, state = _update(tx, grads, jit=True)
    chex.assert_trees_all_close(got, ref, rtol=1e-5)
    np.testing.assert_allclose(float(state.inner_state.norm), float(ref_state.norm), rtol=1e-5)


# ----------------------------------------------------------------------------- AGC
def _unit_norms(x):
  x = np.asarray(x, np.float64)
  if x.ndim <= 1:
    return np.full(x.shape, np.linalg.norm(x.ravel()))
  return np.broadcast_to(np.sqrt(np.sum(x ** 2, axis=tuple(range(x.ndim - 1)), keepdims=True)), x.shape)


@given(seed=st.integers(0, 2 ** 31 - 1), clip=st.floats(1e-3, 1.0), zero_params=st.booleans(),
       grad_scale=st.floats(1e-4, 1e4), bf16=st.booleans())
def test_agc_bound_holds(seed, clip, zero_params, grad_scale, bf16):
  dtype = jnp.bfloat16 if bf16 else jnp.float32
  params = nested_params(dtype, seed=seed % 1000)
  if zero_params:
    params = jax.tree.map(jnp.zeros_like, params)
  grads = grad_stream(params, 1, seed=seed, scale=grad_scale)[0]
  eps = 1e-3
  out, _ = clipping.adaptive_grad_clip(clip, eps).update(grads, optax.EmptyState(), params)
  for g, o, p in zip(jax.tree.leaves(grads), jax.tree.leaves(out), jax.tree.leaves(params)):
    assert o.dtype == g.dtype and o.shape == g.shape
    bound = clip * np.maximum(_unit_norms(p), eps)
    slack = 1e-2 if bf16 else 1e-5
    assert np.all(_unit_norms(o) <= bound * (1 + slack) + 1e-30)
    unclipped = _unit_norms(g) <= bound
    np.testing.assert_array_equal(np.asarray(o)[unclipped], np.asarray(g)[unclipped])
    # clipped units keep their direction and land on the bound
    if not bf16 and np.any(~unclipped):
      np.testing.assert_allclose(_unit_norms(o)[~unclipped], bound[~unclipped], rtol=1e-5)


@pytest.mark.parametrize("shape", [(5,), (6, 4), (3, 3, 2, 4), (2, 3, 3, 2, 4), (1, 4), (3, 2, 4)])
def test_agc_against_optax(shape):
  rng = np.random.default_rng(0)
  p = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  g = jnp.asarray(5 * rng.standard_normal(shape), jnp.float32)
  ours, _ = clipping.adaptive_grad_clip(0.1).update(g, optax.EmptyState(), p)
  with jax.numpy_dtype_promotion("standard"):
    theirs, _ = optax.adaptive_grad_clip(0.1).update(g, optax.EmptyState(), p)
  if shape in [(1, 4), (3, 2, 4)]:  # documented differences: optax squeezes / reduces axis 0 only
    assert not np.allclose(np.asarray(ours), np.asarray(theirs))
    np.testing.assert_allclose(_unit_norms(ours), np.minimum(_unit_norms(g), 0.1 * _unit_norms(p)), rtol=1e-5)
  else:
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5)


def test_agc_needs_params():
  tx = clipping.adaptive_grad_clip()
  with pytest.raises(ValueError, match="params"):
    tx.update(jnp.ones((2, 2)), tx.init(jnp.ones((2, 2))))


# ----------------------------------------------------------------------------- skip non-finite
def _inject(grads, steps, rng):
  """Puts NaN / +Inf / -Inf into one random entry of one random leaf at each step in ``steps``."""
  out = []
  for i, g in enumerate(grads):
    if i in steps:
      leaves, treedef = jax.tree.flatten(g)
      candidates = [j for j, x in enumerate(leaves) if x.size]
      j = candidates[rng.integers(len(candidates))]
      x = np.array(leaves[j], np.float32)
      x.ravel()[rng.integers(x.size)] = [np.nan, np.inf, -np.inf][rng.integers(3)]
      leaves[j] = jnp.asarray(x).astype(leaves[j].dtype)
      g = jax.tree.unflatten(treedef, leaves)
    out.append(g)
  return out


@JIT
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_skip_nonfinite_fault_injection_is_bitwise_a_clean_run(jit, dtype):
  rng = np.random.default_rng(42)
  params0 = nested_params(dtype)
  clean = grad_stream(params0, 12, seed=5)
  bad_steps = set(rng.choice(20, size=8, replace=False).tolist())
  # 20 steps: the 12 clean gradients with 8 corrupted ones interleaved.
  it = iter(clean)
  corrupted_src = [next(it) if i not in bad_steps else grad_stream(params0, 1, seed=100 + i)[0] for i in range(20)]
  stream = _inject(corrupted_src, bad_steps, rng)

  def run(tx, grads):
    update = jax.jit(tx.update) if jit else tx.update
    p, s = params0, tx.init(params0)
    for g in grads:
      u, s = update(g, s, p)
      p = optax.apply_updates(p, u)
    return p, s

  inner = lambda: adaptive.adam(1e-2, weight_decay=1e-3)
  p_ref, s_ref = run(inner(), clean)
  p_skip, s_skip = run(clipping.skip_nonfinite(inner(), max_consecutive=None), stream)
  chex.assert_trees_all_equal(p_skip, p_ref)
  chex.assert_trees_all_equal(s_skip.inner_state, s_ref)
  assert int(s_skip.nonfinite_count) == len(bad_steps)
  trailing = 0
  for i in reversed(range(20)):
    if i not in bad_steps:
      break
    trailing += 1
  assert int(s_skip.consecutive_nonfinite) == trailing
  assert not bool(s_skip.failed)


def test_skip_nonfinite_counts_and_reset():
  tx = clipping.skip_nonfinite(optax.sgd(0.1), max_consecutive=5)
  p = jnp.zeros(2)
  s = tx.init(p)
  seq = [1, 0, 0, 1, 0, 1, 1]  # 1 = good
  expected_consecutive = [0, 1, 2, 0, 1, 0, 0]
  for good, c in zip(seq, expected_consecutive):
    g = jnp.ones(2) if good else jnp.array([1.0, jnp.inf])
    u, s = jax.jit(tx.update)(g, s, p)
    assert int(s.consecutive_nonfinite) == c
    if not good:
      chex.assert_trees_all_equal(u, jnp.zeros(2))
  assert int(s.nonfinite_count) == 3


def test_skip_nonfinite_total_nonfinite_is_a_deprecated_alias_of_nonfinite_count():
  tx = clipping.skip_nonfinite(optax.sgd(0.1))
  _, s = tx.update(jnp.array([jnp.nan, 1.0]), tx.init(jnp.zeros(2)))
  with pytest.warns(DeprecationWarning, match="nonfinite_count"):
    old = s.total_nonfinite
  assert int(old) == int(s.nonfinite_count) == 1
  assert "total_nonfinite" not in s._fields


def test_skip_nonfinite_checks_inner_updates_too():
  tx = clipping.skip_nonfinite(optax.scale(1e38))
  u, s = tx.update(jnp.array([10.0, 1.0]), tx.init(jnp.zeros(2)))  # 1e39 overflows
  chex.assert_trees_all_equal(u, jnp.zeros(2))
  assert int(s.nonfinite_count) == 1


@JIT
def test_skip_nonfinite_fails_loudly_after_max_consecutive(jit):
  tx = clipping.skip_nonfinite(adaptive.adam(1e-2), max_consecutive=2)
  update = jax.jit(tx.update) if jit else tx.update
  p = {"w": jnp.ones((2, 2))}
  s = tx.init(p)
  bad = {"w": jnp.full((2, 2), jnp.nan)}
  for _ in range(2):  # tolerated
    u, s = update(bad, s, p)
    jax.block_until_ready(u)
    chex.assert_trees_all_equal(u, {"w": jnp.zeros((2, 2))})
  with pytest.raises(Exception, match="max_consecutive = 2"):
    u, s = update(bad, s, p)
    jax.block_until_ready((u, s))


@JIT
def test_skip_nonfinite_failure_gives_nan_updates_and_a_sticky_flag(jit):
  tx = clipping.skip_nonfinite(optax.sgd(0.1), max_consecutive=1, on_failure="nan")
  update = jax.jit(tx.update) if jit else tx.update
  s = tx.init(jnp.zeros(2))
  nan, ok = jnp.array([jnp.nan, 0.0]), jnp.ones(2)
  u, s = update(nan, s)
  chex.assert_trees_all_equal(u, jnp.zeros(2))
  assert not bool(s.failed)
  u, s = update(nan, s)  # second in a row > max_consecutive = 1
  assert bool(s.failed) and np.all(np.isnan(np.asarray(u)))
  u, s = update(ok, s)  # sticky: the run has diverged
  assert bool(s.failed) and np.all(np.isnan(np.asarray(u)))


def test_skip_nonfinite_raises_under_vmap():
  tx = clipping.skip_nonfinite(optax.sgd(0.1), max_consecutive=0)
  s = tx.init(jnp.zeros(1))
  good = jax.vmap(tx.update, in_axes=(0, None))(jnp.ones((2, 1)), s)
  assert not np.any(np.asarray(good[1].failed))
  with pytest.raises(Exception, match="skip_nonfinite"):
    jax.block_until_ready(jax.vmap(tx.update, in_axes=(0, None))(jnp.array([[1.0], [jnp.nan]]), s))


_PMAP_FAILURE = """
import jax, jax.numpy as jnp, numpy as np, optax
from jaxopt_practices import clipping
n = jax.local_device_count()
assert n == 4
tx = clipping.skip_nonfinite(optax.sgd(0.1), max_consecutive=0)
rep = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), tx.init(jnp.zeros(1)))
u, s = jax.pmap(tx.update)(jnp.ones((n, 1)), rep)
assert not np.any(np.asarray(s.failed))
try:
  jax.block_until_ready(jax.pmap(tx.update)(jnp.full((n, 1), jnp.nan), rep))
except Exception as e:
  print("RAISED", type(e).__name__, "skip_nonfinite" in str(e))
"""


def test_skip_nonfinite_raises_under_pmap():
  """In a subprocess: under pmap JAX keeps a failed callback's error in its runtime token for good."""
  import os
  import subprocess
  import sys
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", _PMAP_FAILURE], env=env, capture_output=True, text=True, timeout=120)
  assert "RAISED JaxRuntimeError True" in out.stdout, out.stdout + out.stderr[-2000:]


def test_skip_nonfinite_forwards_extra_args():
  inner = optax.contrib.reduce_on_plateau() if hasattr(optax, "contrib") else None
  if inner is None:
    pytest.skip("optax.contrib missing")
  tx = clipping.skip_nonfinite(optax.chain(optax.sgd(0.1), inner))
  s = tx.init(jnp.zeros(1))
  with jax.numpy_dtype_promotion("standard"):  # optax's reduce_on_plateau mixes int and float
    u, s = tx.update(jnp.ones(1), s, jnp.zeros(1), value=jnp.float32(1.0))
    chex.assert_trees_all_close(u, -0.1 * jnp.ones(1))
    u, s = tx.update(jnp.array([jnp.nan]), s, jnp.zeros(1), value=jnp.float32(1.0))
  chex.assert_trees_all_equal(u, jnp.zeros(1))
