"""torch.optim.Adafactor, ASGD and Muon (issue #23): PyTorch 2.13 parity fed the same gradient stream.

Adafactor and ASGD follow torch float64 to 1e-12 (relative) after 100 steps, and float32 to
1e-5; Muon follows torch's own bfloat16 Newton–Schulz (the iteration bit for bit on CPU, the
optimizer to float32 round-off), and with ``ns_dtype=float64`` a float64 NumPy transcription
of torch's ``_single_tensor_muon`` / ``_zeropower_via_newtonschulz`` (torch/optim/_muon.py) to
1e-12, since torch itself always iterates in bfloat16. Muon's params are Flax kernels
``(in, out)``; torch gets the transposed ``(out, in)`` weights and gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_practices import adaptive, flat, momentum
from helpers import scan_steps

torch = pytest.importorskip("torch")

STEPS = 100
SHAPES = [(4, 3), (5,), (), (2, 3, 4)]


def _stream(seed, dtype, shapes=SHAPES, steps=STEPS):
  rng = np.random.default_rng(seed)
  cplx = np.dtype(dtype).kind == "c"
  draw = lambda s, scale=1.0: scale * (rng.standard_normal(s) + (1j * rng.standard_normal(s) if cplx else 0))  # noqa: E731
  p0 = [np.asarray(draw(s), dtype) for s in shapes]
  return p0, [[np.asarray(draw(s, rng.uniform(0.1, 3.0)), dtype) for s in shapes] for _ in range(steps)]


def _torch(cls, kwargs, p0, grads, lr_lambda=None, transpose=False):
  t = (lambda x: x.T.copy()) if transpose else (lambda x: x.copy())  # noqa: E731
  params = [torch.nn.Parameter(torch.tensor(t(p))) for p in p0]
  opt = cls(params, **kwargs)
  sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda) if lr_lambda else None
  for g in grads:
    for p, gi in zip(params, g):
      p.grad = torch.tensor(t(gi))
    opt.step()
    if sched:
      sched.step()
  back = (lambda x: x.T) if transpose else (lambda x: x)  # noqa: E731
  return [back(p.detach().numpy()) for p in params], opt


def _rel_err(ours, theirs):
  return max(np.linalg.norm(np.asarray(a) - b) / max(np.linalg.norm(b), 1e-30) for a, b in zip(ours, theirs))


def _lambda(t):
  return 1.0 / (1.0 + 0.05 * t)


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _float64_run(ours, theirs, cfg, scheduled, seed):
  """``(params, state, torch params, torch optimizer)`` of ours and torch's optimizer (``lr`` in
  ``cfg``, the rest torch's keyword arguments), float64, on one gradient stream, with a constant
  lr or ``_lambda`` applied to it (torch's ``LambdaLR``)."""
  kw = dict(cfg)
  lr = kw.pop("lr")
  p0, grads = _stream(seed, np.float64)
  our_lr = (lambda c: lr * _lambda(jnp.asarray(c, jnp.float64))) if scheduled else lr
  params, state = scan_steps(ours(our_lr, **kw), p0, grads)
  return (params, state, *_torch(theirs, dict(lr=lr, **kw), p0, grads, _lambda if scheduled else None))


# ----------------------------------------------------------------------------- Adafactor
ADAFACTOR = [dict(lr=1e-2), dict(lr=0.5),  # 0.5 > 1/sqrt(t) from step 5: the relative step takes over
             dict(lr=0.05, beta2_decay=-0.5, eps=(1e-20, 1e-2), d=2.0, weight_decay=0.1),
             dict(lr=0.02, eps=(1e-3, 0.0), d=1.5, weight_decay=0.5)]


@pytest.mark.parametrize("cfg", ADAFACTOR, ids=str)
@pytest.mark.parametrize("scheduled", [False, True], ids=["constant", "schedule"])
def test_adafactor_float64_matches_torch(x64, cfg, scheduled):
  ours, _, theirs, _ = _float64_run(adaptive.adafactor, torch.optim.Adafactor, cfg, scheduled, seed=0)
  assert all(o.dtype == np.float64 for o in ours)
  assert _rel_err(ours, theirs) <= 1e-12


def test_adafactor_float32_matches_torch_to_round_off():
  p0, grads = _stream(1, np.float32, steps=300)
  ours, _ = scan_steps(adaptive.adafactor(), p0, grads)
  assert _rel_err(ours, _torch(torch.optim.Adafactor, {}, p0, grads)[0]) <= 1e-5


def test_adafactor_rejects_complex_as_torch():
  p = jnp.ones(3, jnp.complex64)
  tx = adaptive.adafactor()
  with pytest.raises(ValueError, match="complex"):
    tx.update(p, tx.init(p), p)


def test_adafactor_on_a_flat_buffer_is_one_unfactored_vector():
  """On ``flat.flatten``'s buffer Adafactor is torch's Adafactor of *one* 1-D param (as documented),
  not the per-tensor optimizer: its RMS scale and clipping are taken over the whole buffer."""
  p0, grads = _stream(2, np.float32, shapes=[(4, 3), (5,)], steps=5)
  tree = {"w": jnp.asarray(p0[0]), "b": jnp.asarray(p0[1])}
  buf, layout = flat.flatten(tree)
  flat_grads = [[np.asarray(flat.flatten({"w": jnp.asarray(g[0]), "b": jnp.asarray(g[1])})[0])] for g in grads]
  on_buffer, _ = scan_steps(adaptive.adafactor(0.1), [np.asarray(buf)], flat_grads)
  one_vector, _ = _torch(torch.optim.Adafactor, dict(lr=0.1), [np.asarray(buf)], flat_grads)
  assert _rel_err(on_buffer, one_vector) <= 1e-5
  per_leaf, _ = scan_steps(adaptive.adafactor(0.1), p0, grads)
  unravelled = layout.unravel(on_buffer[0])
  assert _rel_err([unravelled["w"]], [per_leaf[0]]) > 1e-3  # a different optimizer, hence the docs


# ----------------------------------------------------------------------------- ASGD
ASGD = [dict(lr=0.05), dict(lr=0.05, lambd=1e-2, alpha=0.5, t0=10.0, weight_decay=0.1),
        dict(lr=0.1, lambd=0.5, alpha=1.0, t0=0.0)]


@pytest.mark.parametrize("cfg", ASGD, ids=str)
@pytest.mark.parametrize("scheduled", [False, True], ids=["constant", "schedule"])
def test_asgd_float64_matches_torch_params_and_ax(x64, cfg, scheduled):
  ours, state, theirs, opt = _float64_run(momentum.asgd, torch.optim.ASGD, cfg, scheduled, seed=3)
  assert _rel_err(ours, theirs) <= 1e-12
  assert _rel_err(momentum.asgd_params(state), _torch_ax(opt)) <= 1e-12


def _asgd_both(lr, kw, p0, grads):
  """``(params, state, torch params, torch optimizer)`` of ``momentum.asgd`` and ``torch.optim.ASGD``."""
  return (*scan_steps(momentum.asgd(lr, **kw), p0, grads), *_torch(torch.optim.ASGD, dict(lr=lr, **kw), p0, grads))


def _torch_ax(opt):
  """torch ASGD's average ``ax`` of each param."""
  return [opt.state[p]["ax"].numpy() for p in opt.param_groups[0]["params"]]


def test_asgd_complex128_matches_torch(x64):
  p0, grads = _stream(4, np.complex128)
  ours, state, theirs, opt = _asgd_both(0.05, dict(lambd=1e-2, alpha=0.5, t0=20.0, weight_decay=0.05), p0, grads)
  assert _rel_err(ours, theirs) <= 1e-12
  assert _rel_err(momentum.asgd_params(state), _torch_ax(opt)) <= 1e-12


def test_asgd_float32_matches_torch_to_round_off():
  p0, grads = _stream(5, np.float32, steps=300)
  ours, state, theirs, opt = _asgd_both(0.02, dict(lambd=1e-3, t0=100.0, weight_decay=0.01), p0, grads)
  assert _rel_err(ours, theirs) <= 1e-5
  assert _rel_err(momentum.asgd_params(state), _torch_ax(opt)) <= 1e-5


def test_asgd_on_a_flat_buffer_equals_the_tree():
  """ASGD is elementwise: the flat path gives the per-leaf result (and the same average)."""
  p0, grads = _stream(6, np.float32, shapes=[(4, 3), (5,)], steps=20)
  tx = momentum.asgd(0.05, lambd=0.1, t0=5.0, weight_decay=0.01)
  per_leaf, s_tree = scan_steps(tx, p0, grads)
  buf, layout = flat.flatten({"a": jnp.asarray(p0[0]), "b": jnp.asarray(p0[1])})
  ravel = lambda g: np.asarray(flat.flatten({"a": jnp.asarray(g[0]), "b": jnp.asarray(g[1])})[0])  # noqa: E731
  on_buffer, s_flat = scan_steps(tx, [np.asarray(buf)], [[ravel(g)] for g in grads])
  back = layout.unravel(on_buffer[0])
  np.testing.assert_allclose(back["a"], per_leaf[0], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(back["b"], per_leaf[1], rtol=1e-6, atol=1e-7)
  ax = layout.unravel(momentum.asgd_params(s_flat)[0])
  np.testing.assert_allclose(ax["a"], momentum.asgd_params(s_tree)[0], rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- recipe, parallel
@pytest.mark.parametrize("name, extra, factory", [
    ("adafactor", {"eps": [None, 1e-2], "d": 2.0, "weight_decay": 0.1}, lambda kw: adaptive.adafactor(**kw)),
    ("asgd", {"lambd": 1e-3, "t0": 2.0}, lambda kw: momentum.asgd(**kw)),
    ("muon", {"adjust_lr_fn": "match_rms_adamw", "ns_coefficients": [3.0, -4.0, 2.0], "ns_dtype": "float32"},
     lambda kw: adaptive.muon(**kw))])
def test_recipe_builds_the_new_optimizers_by_name(name, extra, factory):
  from jaxopt_practices import recipe
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "v": jnp.ones((3, 3))}
  tx = recipe.build({"optimizer": {"name": name, "learning_rate": 0.05, **extra}})
  ref = factory({"learning_rate": 0.05, **extra})
  g = jax.tree.map(lambda x: 0.3 * x + 0.1, params)
  for _ in range(2):
    u, _ = tx.update(g, tx.init(params), params)
    want, _ = ref.update(g, ref.init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), u, want)


def test_parallel_train_step_with_the_new_optimizers():
  """parallel.make_train_step (jit + NamedSharding, state sharded like the params) runs each, as one device."""
  from jaxopt_practices import parallel
  mesh = parallel.make_mesh(("data",))
  params = {"w": jnp.linspace(-1.0, 1.0, 8 * 4).reshape(8, 4)}
  x = jax.random.normal(jax.random.key(0), (16, 8))
  loss_fn = lambda p, batch: jnp.mean((batch @ p["w"]) ** 2)  # noqa: E731
  for tx in (adaptive.adafactor(0.05), momentum.asgd(0.05, t0=1.0), adaptive.muon(0.05, ns_dtype="float32")):
    single_p, single_s = params, tx.init(params)
    for _ in range(3):
      u, single_s = tx.update(jax.grad(loss_fn)(single_p, x), single_s, single_p)
      single_p = optax.apply_updates(single_p, u)
    p_sh = parallel.fsdp_shardings(params, mesh)
    step = parallel.make_train_step(loss_fn, tx, mesh, p_sh)
    p, s = jax.device_put(params, p_sh), tx.init(params)
    for _ in range(3):
      p, s, _ = step(p, s, x)
    # The sharded program sums in another order; Newton-Schulz amplifies that round-off (~1e-4 of a step).
    np.testing.assert_allclose(np.asarray(p["w"]), np.asarray(single_p["w"]), rtol=1e-5, atol=2e-5)
