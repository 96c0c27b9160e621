"""Numerics at the edges (issue #14): complex params, odd leaves, float64, eager compiles, rounding.

- complex params are optimized as PyTorch does, as if viewed as real pairs (``torch.view_as_real``);
- any leaf ``jnp.asarray`` accepts (Python floats, 0-d, zero-size, ``None``) works in every transform;
- under x64, float64 params follow torch float64 to ~1e-12 (scalars applied in float64);
- eager ``clip_by_global_norm`` compiles nothing after its first call;
- AGC's bound holds after bfloat16 rounding, ``polynomial_decay`` is exact at 0 under ``jit``,
  and a skipped step leaves a ``-0.0`` param bitwise.
"""

from __future__ import annotations

import importlib
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_practices import adaptive, clipping, initializers, momentum, regularization, schedules

torch = pytest.importorskip("torch")

SHAPES = [(4, 3), (5,), ()]

SGD = [dict(lr=0.05), dict(lr=0.05, momentum=0.9, dampening=0.3), dict(lr=0.05, momentum=0.9, nesterov=True),
       dict(lr=0.05, momentum=0.5, weight_decay=0.1)]
ADAGRAD = [dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.5)]
RMSPROP = [dict(lr=0.01), dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01)]
ADAM = [dict(lr=0.01, betas=(0.8, 0.99)), dict(lr=0.01, amsgrad=True, weight_decay=0.1)]
ADAMW = [dict(lr=0.01, weight_decay=0.1), dict(lr=0.01, weight_decay=0.1, amsgrad=True)]
CONFIGS = ([("sgd", c) for c in SGD] + [("adagrad", c) for c in ADAGRAD] + [("rmsprop", c) for c in RMSPROP]
           + [("adam", c) for c in ADAM] + [("adamw", c) for c in ADAMW])
TORCH = {"sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW"}


def _make(name, cfg, lr=None, clip=None):
  kw = dict(cfg)
  lr = kw.pop("lr") if lr is None else lr
  kw.pop("lr", None)
  if "betas" in kw:
    kw["b1"], kw["b2"] = kw.pop("betas")
  tx = momentum.sgd(lr, **kw) if name == "sgd" else getattr(adaptive, name)(lr, **kw)
  return tx if clip is None else optax.chain(clipping.clip_by_global_norm(clip), tx)


def _stream(seed, dtype, steps):
  rng = np.random.default_rng(seed)
  draw = lambda s, scale=1.0: scale * (rng.standard_normal(s) + (1j * rng.standard_normal(s)
                                                                    if np.dtype(dtype).kind == "c" else 0))
  p0 = [np.asarray(draw(s), dtype) for s in SHAPES]
  grads = [[np.asarray(draw(s, rng.uniform(0.1, 3.0)), dtype) for s in SHAPES] for _ in range(steps)]
  return p0, grads


def _ours(tx, p0, grads):
  params = [jnp.asarray(p) for p in p0]
  stacked = [jnp.asarray(np.stack([g[i] for g in grads])) for i in range(len(p0))]

  @jax.jit
  def train(params, stacked):
    def body(carry, g):
      p, s = carry
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    return jax.lax.scan(body, (params, tx.init(params)), stacked)[0][0]

  return [np.asarray(p) for p in train(params, stacked)]


def _torch(name, cfg, p0, grads, lr_lambda=None, clip=None):
  params = [torch.nn.Parameter(torch.tensor(p.copy())) for p in p0]
  opt = getattr(torch.optim, TORCH[name])(params, **cfg)
  sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda) if lr_lambda else None
  for g in grads:
    for p, gi in zip(params, g):
      p.grad = torch.tensor(gi)
    if clip is not None:
      torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    if sched:
      sched.step()
  return [p.detach().numpy() for p in params]


def _update(tx, grads, params=None):
  return tx.update(grads, tx.init(grads if params is None else params), params)


def _rel_err(ours, theirs):
  return max(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30) for a, b in zip(ours, theirs))


# ----------------------------------------------------------------------------- 5. float64
@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def test_orthogonal_float64_is_orthogonal_to_double_precision(x64):
  for shape in [(64, 32), (32, 64), (3, 3, 8, 16)]:
    w = initializers.orthogonal()(jax.random.key(0), shape, jnp.float64)
    assert w.dtype == jnp.float64
    q = np.asarray(w).reshape(-1, shape[-1])
    gram = q.T @ q if q.shape[0] >= q.shape[1] else q @ q.T
    assert np.max(np.abs(gram - np.eye(len(gram)))) <= 1e-12


# ----------------------------------------------------------------------------- 6. eager compiles
@pytest.mark.parametrize("make", [lambda: clipping.clip_by_global_norm(1.0),
                                  lambda: clipping.skip_nonfinite(optax.sgd(0.1), max_consecutive=3)],
                         ids=["clip_by_global_norm", "skip_nonfinite"])
def test_eager_updates_compile_nothing_after_the_first_call(make):
  tree = {f"w{i}": jnp.full((3, i % 4 + 1), 0.5 + i) for i in range(40)}
  huge = jax.tree.map(lambda x: x * 1e30, tree)  # the overflow-safe two-pass branch of the norm
  tiny = jax.tree.map(lambda x: x * 1e-30, tree)  # the underflow-safe branch
  other = jax.tree.map(lambda x: x * -2.0, tree)
  tx = make()
  state = tx.init(tree)
  for g in (tree, huge, tiny):  # first calls: compiling is allowed here
    _, state = tx.update(g, state, tree)
  compiles = []
  listener = lambda event, duration, **kw: compiles.append(event) if "backend_compile" in event else None
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    for g in (tiny, huge, tree, other):
      u, state = tx.update(g, state, tree)
      jax.block_until_ready(u)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert not compiles, f"{len(compiles)} compilations in eager calls after the first"


# ----------------------------------------------------------------------------- 7. rounding edges
def test_agc_bfloat16_never_exceeds_its_bound():
  rng = np.random.default_rng(0)
  worst = 0.0
  for _ in range(20):
    p = jnp.asarray(rng.standard_normal((64, 16)), jnp.bfloat16)
    g = jnp.asarray(rng.standard_normal((64, 16)) * 10, jnp.bfloat16)
    u, _ = _update(clipping.adaptive_grad_clip(0.01), g, p)
    assert u.dtype == jnp.bfloat16
    ratio = clipping.unitwise_norm(u.astype(jnp.float32)) / (0.01 * clipping.unitwise_norm(p.astype(jnp.float32)))
    worst = max(worst, float(jnp.max(ratio)))
  assert worst <= 1.0, f"clipped unit norm {worst:.5f} x the bound"


@pytest.mark.parametrize("total_steps", [1, 3, 7, 10, 100, 333])
@pytest.mark.parametrize("power", [1.0, 2.0, 0.5, 2.5])
def test_polynomial_decay_is_exact_at_zero_and_the_same_under_jit(total_steps, power):
  sched = schedules.polynomial_decay(0.1, total_steps, power)
  counts = jnp.arange(total_steps + 3, dtype=jnp.int32)
  eager = np.asarray([sched(int(c)) for c in counts])
  np.testing.assert_array_equal(np.asarray([jax.jit(sched)(c) for c in counts]), eager)
  batch = np.asarray(sched(counts))  # vectorised: compare eager and jit on the same shapes
  np.testing.assert_array_equal(np.asarray(jax.jit(sched)(counts)), batch)
  assert eager[0] == batch[0] == np.float32(0.1)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_skipped_step_keeps_negative_zero_params_bitwise(jit):
  params = {"w": jnp.array([-0.0, 0.0, -1.5], jnp.float32), "b": jnp.array([-0.0], jnp.bfloat16)}
  tx = clipping.skip_nonfinite(adaptive.adam(0.1))
  update = jax.jit(tx.update) if jit else tx.update
  grads = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), params)
  u, _ = update(grads, tx.init(params), params)
  new = optax.apply_updates(params, u)
  for k in params:
    assert np.asarray(new[k]).tobytes() == np.asarray(params[k]).tobytes(), k
