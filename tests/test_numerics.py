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

from helpers import grad_stream, run_scan, state_signature
from jaxopt_practices import adaptive, clipping, initializers, momentum, monitor, regularization, schedules

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


# ----------------------------------------------------------------------------- 1. complex params
def test_complex_sgd_keeps_the_imaginary_part():
  p = jnp.zeros(1, jnp.complex64)
  tx = momentum.sgd(0.1)
  u, _ = tx.update(jnp.array([1j], jnp.complex64), tx.init(p), p)
  assert u.dtype == jnp.complex64
  np.testing.assert_array_equal(np.asarray(u), np.array([-0.1j], np.complex64))


@pytest.mark.parametrize("name,cfg", CONFIGS, ids=[f"{n}-{c}" for n, c in CONFIGS])
def test_complex_params_match_torch(name, cfg):
  p0, grads = _stream(7, np.complex64, 200)
  ours = run_scan(_make(name, cfg), p0, grads)
  assert all(o.dtype == np.complex64 for o in ours)
  assert _rel_err(ours, _torch(name, cfg, p0, grads)) <= 1e-5


def test_complex_clip_by_global_norm_matches_torch():
  p0, grads = _stream(3, np.complex64, 1)
  g = [x * 10 for x in grads[0]]
  tensors = [torch.zeros(x.shape, dtype=torch.complex64, requires_grad=True) for x in g]
  for t, x in zip(tensors, g):
    t.grad = torch.tensor(x.copy())
  total = torch.nn.utils.clip_grad_norm_(tensors, 1.0)
  g = [jnp.asarray(x) for x in g]
  tx = clipping.clip_by_global_norm(1.0)
  out, state = tx.update(g, tx.init(g))
  np.testing.assert_allclose(float(state.norm), float(total), rtol=1e-6)
  np.testing.assert_allclose(float(clipping.global_norm(g)), float(total), rtol=1e-6)
  for o, t in zip(out, tensors):
    np.testing.assert_allclose(np.asarray(o), t.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_complex_clip_by_value_and_agc_act_on_real_pairs():
  g = jnp.array([[3.0 - 0.5j, -0.2 + 2.0j], [0.1 + 0.1j, 4.0 + 3.0j]], jnp.complex64)
  u, _ = _update(clipping.clip_by_value(1.0), g)
  np.testing.assert_array_equal(np.asarray(u), np.array([[1 - 0.5j, -0.2 + 1j], [0.1 + 0.1j, 1 + 1j]], np.complex64))
  p = jnp.array([[1.0 + 1.0j, 0.0], [0.0, 1.0j]], jnp.complex64)
  u, _ = _update(clipping.adaptive_grad_clip(0.5, eps=1e-3), g, p)
  g_norm = np.sqrt(np.sum(np.abs(np.asarray(g)) ** 2, axis=0))  # one unit per column, |z|^2 summed
  bound = 0.5 * np.sqrt(np.sum(np.abs(np.asarray(p)) ** 2, axis=0))
  np.testing.assert_allclose(np.asarray(u), np.asarray(g) * np.minimum(1.0, bound / g_norm), rtol=1e-6)


def test_complex_decay_l2_ema_and_swa():
  p = jnp.array([1.0 - 2.0j, 0.5j], jnp.complex64)
  zero = jnp.zeros(2, jnp.complex64)
  u, _ = _update(regularization.decoupled_weight_decay(0.1, mask=None), zero, p)
  np.testing.assert_allclose(np.asarray(u), -0.1 * np.asarray(p), rtol=1e-7)
  u, _ = _update(regularization.l2_penalty(0.1), zero, p)
  np.testing.assert_allclose(np.asarray(u), 0.1 * np.asarray(p), rtol=1e-7)
  for tx, read in ((regularization.ema(0.5, debias=False), regularization.ema_params),
                   (regularization.swa(0), regularization.swa_params)):
    tx = optax.chain(optax.sgd(1.0), tx)
    state = tx.init(p)
    _, state = tx.update(-jnp.array([2.0 + 2.0j, 1.0], jnp.complex64), state, p)  # theta_1 = p + (2+2j, 1)
    avg = read(state)
    assert avg.dtype == jnp.complex64
    np.testing.assert_allclose(np.asarray(avg), np.asarray(p) + np.array([1.0 + 1.0j, 0.5]), rtol=1e-7)


# ----------------------------------------------------------------------------- 2. any leaf jnp.asarray accepts
def _contract_cases():
  cases = []
  for path in sorted(pathlib.Path(__file__).parent.glob("cases_*.py")):
    cases.extend(importlib.import_module(path.stem).CASES)
  return cases


CASES = _contract_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_python_scalar_zero_size_and_none_leaves(case):
  """Python float, NumPy 0-d, zero-size and ``None`` param leaves behave as their ``jnp.asarray``.

  The gradients are arrays, as ``jax.grad`` returns them (optax adds a Python float update to a
  Python float param in double precision, which no transform can change).
  """
  if case.params is not None:
    pytest.skip(f"{case.name} takes matrices only (its ValueError is tested with it)")
  params = {"f": 0.5, "list": [0.25, -1.5], "zero_d": np.float32(2.0), "empty": jnp.zeros((0, 3)), "none": None,
            "kernel": jnp.full((2, 3), 0.3)}
  grads = [jax.tree.map(lambda x: jnp.asarray(x) * s, {"f": 0.1, "list": [-0.2, 0.3], "zero_d": -1.0,
                                                       "empty": jnp.zeros((0, 3)), "none": None,
                                                       "kernel": jnp.full((2, 3), 0.2)})
           for s in (1.0, -2.0)]

  def run(params, grads):
    tx = case.build()
    state = tx.init(params)
    for i, g in enumerate(grads):
      u, state = tx.update(g, state, params, **case.extra_args(i))
      params = optax.apply_updates(params, u)
    return params

  as_arrays = lambda t: jax.tree.map(jnp.asarray, t)
  ours = run(params, grads)
  ref = run(as_arrays(params), [as_arrays(g) for g in grads])
  assert jax.tree.structure(ours) == jax.tree.structure(ref)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("make", [lambda: regularization.decoupled_weight_decay(0.1, mask=None),
                                  lambda: regularization.l2_penalty(0.1), lambda: clipping.adaptive_grad_clip(0.1),
                                  lambda: adaptive.adamw(0.1), lambda: momentum.sgd(0.1, weight_decay=0.1)],
                         ids=["decoupled_weight_decay", "l2_penalty", "adaptive_grad_clip", "adamw", "sgd"])
def test_python_float_params_and_grads(make):
  """The issue's example, ``params = [0.5]``, with Python float gradients too, as optax accepts."""
  tx = make()
  u, _ = tx.update([0.3], tx.init([0.5]), [0.5])
  ref, _ = tx.update([jnp.asarray(0.3)], tx.init([jnp.asarray(0.5)]), [jnp.asarray(0.5)])
  assert np.asarray(u[0]).tobytes() == np.asarray(ref[0]).tobytes()


@pytest.mark.parametrize("kind", ["complex64", "float64"])
def test_every_contract_case_takes_complex_and_float64_params(kind):
  """Every public transform keeps complex64 / float64 (under x64) updates and state dtypes."""
  with jax.enable_x64(kind == "float64"):
    if kind == "complex64":
      cast = lambda t: jax.tree.map(lambda x: jax.lax.complex(x, -0.5 * x), t)
    else:
      cast = lambda t: jax.tree.map(lambda x: x.astype(jnp.float64), t)
    for case in CASES:
      if kind == "complex64" and not case.complex_ok:
        continue  # torch.optim.Adafactor / Muon reject complex params; so do ours (tested with them)
      tx = case.build()
      params = cast(case.tree())
      state = tx.init(params)
      before = state_signature(state)
      p = params
      for i, g in enumerate(grad_stream(case.tree(), 3)):
        u, state = jax.jit(tx.update)(cast(g), state, p, **case.extra_args(i))
        p = optax.apply_updates(p, u)
        assert all(a.dtype == kind for a in jax.tree.leaves(u)), case.name
      assert state_signature(state) == before, case.name
      assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(p)), case.name


# ----------------------------------------------------------------------------- 5. float64
@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _lambda(t):
  return 1.0 / (1.0 + 0.05 * t)


@pytest.mark.parametrize("name,cfg", CONFIGS, ids=[f"{n}-{c}" for n, c in CONFIGS])
@pytest.mark.parametrize("variant", ["plain", "schedule_and_clip"])
def test_float64_matches_torch_float64(x64, name, cfg, variant):
  p0, grads = _stream(11, np.float64, 100)
  if variant == "plain":
    ours, theirs = run_scan(_make(name, cfg), p0, grads), _torch(name, cfg, p0, grads)
  else:
    lr0 = cfg["lr"]
    ours = run_scan(_make(name, cfg, lr=lambda count: lr0 * _lambda(jnp.asarray(count, jnp.float64)), clip=2.0),
                 p0, grads)
    theirs = _torch(name, cfg, p0, grads, lr_lambda=_lambda, clip=2.0)
  assert all(o.dtype == np.float64 for o in ours)
  assert _rel_err(ours, theirs) <= 1e-12


def test_complex128_matches_torch(x64):
  p0, grads = _stream(13, np.complex128, 100)
  for name, cfg in CONFIGS:
    assert _rel_err(run_scan(_make(name, cfg), p0, grads), _torch(name, cfg, p0, grads)) <= 1e-12, (name, cfg)


def test_float64_ema_swa_and_decay_are_float64_accurate(x64):
  p = jnp.asarray(np.random.default_rng(0).standard_normal(6))
  step = -jnp.full(6, 1e-3, jnp.float64)
  tx = optax.chain(regularization.decoupled_weight_decay(1e-3, mask=None, learning_rate=0.1),
                   regularization.ema(0.999), regularization.swa(1))
  state, ref, ema_num, ema_den, thetas = tx.init(p), np.asarray(p), 0.001 * np.asarray(p), 0.001, []
  for _ in range(50):
    u, state = tx.update(step, state, p)
    p = optax.apply_updates(p, u)
    ref = ref * (1 - 0.1 * 1e-3) - 1e-3
    ema_num, ema_den = 0.999 * ema_num + 0.001 * ref, 0.999 * ema_den + 0.001
    thetas.append(ref)
  np.testing.assert_allclose(np.asarray(p), ref, rtol=1e-13)
  np.testing.assert_allclose(np.asarray(regularization.ema_params(state)), ema_num / ema_den, rtol=1e-13)
  np.testing.assert_allclose(np.asarray(regularization.swa_params(state)), np.mean(thetas, axis=0), rtol=1e-13)


def test_orthogonal_float64_is_orthogonal_to_double_precision(x64):
  for shape in [(64, 32), (32, 64), (3, 3, 8, 16)]:
    w = initializers.orthogonal()(jax.random.key(0), shape, jnp.float64)
    assert w.dtype == jnp.float64
    q = np.asarray(w).reshape(-1, shape[-1])
    gram = q.T @ q if q.shape[0] >= q.shape[1] else q @ q.T
    assert np.max(np.abs(gram - np.eye(len(gram)))) <= 1e-12


# ----------------------------------------------------------------------------- 6. eager compiles
@pytest.mark.parametrize("make", [lambda: clipping.clip_by_global_norm(1.0),
                                  lambda: clipping.skip_nonfinite(optax.sgd(0.1), max_consecutive=3),
                                  lambda: monitor.track(adaptive.adamw(1e-3)),
                                  lambda: monitor.track(momentum.sgd(0.1, momentum=0.9), every=2)],
                         ids=["clip_by_global_norm", "skip_nonfinite", "monitor_track", "monitor_track_every_2"])
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
  params = {"w": jnp.array([-0.0, 0.0, -1.5], jnp.float32), "b": jnp.array([-0.0], jnp.bfloat16),
            "c": jnp.array([-0.0 - 0.0j], jnp.complex64)}
  tx = clipping.skip_nonfinite(adaptive.adam(0.1))
  update = jax.jit(tx.update) if jit else tx.update
  grads = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), params)
  u, _ = update(grads, tx.init(params), params)
  new = optax.apply_updates(params, u)
  for k in params:
    assert np.asarray(new[k]).tobytes() == np.asarray(params[k]).tobytes(), k


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_monitor_norms_of_complex_leaves_count_the_imaginary_part(jit):
  """grad / update / param norms of complex leaves are the norms of their real pairs."""
  params = {"a": jnp.array([1.0 + 2.0j, -3.0j], jnp.complex64), "b": jnp.array([0.5, -1.5], jnp.float32)}
  grads = {"a": jnp.array([3.0 - 4.0j, 2.0 + 1.0j], jnp.complex64), "b": jnp.array([1.0, 2.0], jnp.float32)}
  tx = monitor.track(momentum.sgd(0.1))
  update = jax.jit(tx.update) if jit else tx.update
  updates, state = update(grads, tx.init(params), params)
  got = monitor.stats(state)

  def norm(tree):
    return math.sqrt(sum(float(np.sum(np.abs(np.asarray(x)) ** 2)) for x in jax.tree.leaves(tree)))

  np.testing.assert_allclose(float(got["grad_norm"]), norm(grads), rtol=1e-6)  # sqrt(25 + 5 + 5) = sqrt(35)
  np.testing.assert_allclose(float(got["update_norm"]), norm(updates), rtol=1e-6)
  np.testing.assert_allclose(float(got["param_norm"]), norm(params), rtol=1e-6)


def test_inject_hyperparams_on_bfloat16_params():
  """optax casts injected hyperparameters to the params' dtype: b2 = 0.999 becomes 1 in bfloat16,
  which would divide by zero in Adam's bias correction. That is a clear error naming the fix; with
  ``hyperparam_dtype=jnp.float32`` the injected Adam equals the plain one on bfloat16 params."""
  from jaxopt_practices import adaptive

  params = {"w": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.bfloat16)}
  grads = {"w": jnp.linspace(0.5, -0.5, 6, dtype=jnp.bfloat16)}
  with pytest.raises(ValueError, match=r"b2 must be in \[0, 1\).*hyperparam_dtype=jnp.float32"):
    optax.inject_hyperparams(adaptive.adam)(learning_rate=1e-2).init(params)
  injected = optax.inject_hyperparams(adaptive.adam, hyperparam_dtype=jnp.float32)(learning_rate=1e-2)
  plain = adaptive.adam(1e-2)
  s_i, s_p = injected.init(params), plain.init(params)
  for _ in range(3):
    u_i, s_i = jax.jit(injected.update)(grads, s_i, params)
    u_p, s_p = jax.jit(plain.update)(grads, s_p, params)
    assert u_i["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(u_i["w"], np.float32), np.asarray(u_p["w"], np.float32))
  sgd = optax.inject_hyperparams(momentum.sgd)(learning_rate=0.1, momentum=0.9)  # 0.9 survives bfloat16
  assert sgd.update(grads, sgd.init(params), params)[0]["w"].dtype == jnp.bfloat16
