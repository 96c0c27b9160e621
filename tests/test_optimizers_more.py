"""NAdam, RAdam, Adamax, Adadelta and Rprop (issue 23) against torch 2.13, and their edges.

Each optimizer and its torch class are fed the same gradient stream (the raw loss gradient;
both add weight decay themselves) from the same params: float64 and complex128 agree to 1e-12
relative after 100 steps with every option, float32 with the defaults to float32 round-off.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import run_scan
from jaxopt_practices import adaptive
from test_numerics import _stream
from test_optimizer_parity import _torch

torch = pytest.importorskip("torch")

TORCH = {"nadam": "NAdam", "radam": "RAdam", "adamax": "Adamax", "adadelta": "Adadelta", "rprop": "Rprop"}
CONFIGS = [
    ("nadam", dict(lr=0.01)),
    ("nadam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-4, weight_decay=0.1, momentum_decay=0.02)),
    ("nadam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, momentum_decay=0.0)),
    ("radam", dict(lr=0.01)),
    ("radam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-4, weight_decay=0.1)),
    ("radam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("adamax", dict(lr=0.01)),
    ("adamax", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1)),
    ("adadelta", dict(lr=1.0)),
    ("adadelta", dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.1)),
    ("rprop", dict(lr=0.01)),
    ("rprop", dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.1))),
]
IDS = [f"{name}-{cfg}" for name, cfg in CONFIGS]


def _make(name, cfg, lr=None):
  kw = dict(cfg)
  lr = kw.pop("lr") if lr is None else lr
  kw.pop("lr", None)
  if "betas" in kw:
    kw["b1"], kw["b2"] = kw.pop("betas")
  return getattr(adaptive, name)(lr, **kw)


def _rel_err(ours, theirs):
  return max(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30) for a, b in zip(ours, theirs))


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


@pytest.mark.parametrize("name,cfg", CONFIGS, ids=IDS)
def test_float64_matches_torch_float64(x64, name, cfg):
  p0, grads = _stream(11, np.float64, 100)
  ours = run_scan(_make(name, cfg), p0, grads)
  assert all(o.dtype == np.float64 for o in ours)
  assert _rel_err(ours, _torch(getattr(torch.optim, TORCH[name]), cfg, p0, grads)) <= 1e-12


@pytest.mark.parametrize("name", ["nadam", "radam", "adadelta"])
def test_float64_learning_rate_schedule_matches_torch_lambda_lr(x64, name):
  """NAdam's mu_product and RAdam's rectification do not depend on the lr: a schedule scales the step."""
  lam = lambda t: 1.0 / (1.0 + 0.05 * t)  # noqa: E731
  cfg = dict(CONFIGS[[n for n, _ in CONFIGS].index(name)][1])
  p0, grads = _stream(12, np.float64, 100)
  ours = run_scan(_make(name, cfg, lr=lambda c: cfg["lr"] * lam(jnp.asarray(c, jnp.float64))), p0, grads)
  assert _rel_err(ours, _torch(getattr(torch.optim, TORCH[name]), cfg, p0, grads, lr_lambda=lam)) <= 1e-12


def test_complex128_matches_torch(x64):
  """torch optimizes complex params of all five as real pairs (``view_as_real``), as here."""
  p0, grads = _stream(13, np.complex128, 100)
  for name, cfg in CONFIGS[1::2] + [CONFIGS[0]]:
    ours = run_scan(_make(name, cfg), p0, grads)
    assert all(o.dtype == np.complex128 for o in ours)
    assert _rel_err(ours, _torch(getattr(torch.optim, TORCH[name]), cfg, p0, grads)) <= 1e-12, (name, cfg)


@pytest.mark.parametrize("name", sorted(TORCH))
def test_defaults_are_torchs_in_float32(name):
  p0, grads = _stream(6, np.float32, 200)
  ours = run_scan(getattr(adaptive, name)(), p0, grads)
  assert _rel_err(ours, _torch(getattr(torch.optim, TORCH[name]), {}, p0, grads)) <= 1e-5


def test_nadam_mu_product_is_torchs_float32_product(x64):
  """torch keeps ``mu_product`` as a float32 tensor even for float64 params; so does the state, bitwise."""
  tx = adaptive.scale_by_nadam(b1=0.8, momentum_decay=0.05)
  state = tx.init(jnp.zeros(2))
  param = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
  opt = torch.optim.NAdam([param], betas=(0.8, 0.999), momentum_decay=0.05)
  for _ in range(20):
    _, state = tx.update(jnp.ones(2), state)
    param.grad = torch.ones(2, dtype=torch.float64)
    opt.step()
    theirs = opt.state[param]["mu_product"]
    assert state.mu_product.dtype == jnp.float32 and theirs.dtype == torch.float32
    assert float(state.mu_product) == float(theirs)


def test_radam_rectifies_from_step_6_with_torchs_betas():
  """rho_t = 1999 - 2t 0.999^t / (1 - 0.999^t) passes 5 at t = 6: until then the step is the
  bias-corrected momentum (here the gradient itself: a constant gradient), then Adam's times r_t."""
  tx = adaptive.scale_by_radam()
  state, g = tx.init(jnp.zeros(1)), jnp.full(1, 0.5)
  out = []
  for _ in range(7):
    u, state = tx.update(g, state)
    out.append(float(u[0]))
  np.testing.assert_allclose(out[:5], 0.5, rtol=1e-6)
  for t in (6, 7):
    rho = 1999.0 - 2 * t * 0.999**t / (1 - 0.999**t)
    rect = np.sqrt((rho - 4) * (rho - 2) * 1999.0 / (1995.0 * 1997.0 * rho))
    sqrt_v = 0.5 * np.sqrt(1 - 0.999**t)  # sqrt(v_t) of a constant gradient, before bias correction
    np.testing.assert_allclose(out[t - 1], rect * sqrt_v / (sqrt_v + 1e-8), rtol=2e-6)  # float32: rho_t to round-off


def test_rprop_step_sizes_grow_shrink_and_clip():
  tx = adaptive.scale_by_rprop(0.1, etas=(0.5, 2.0), step_sizes=(0.03, 0.3))
  state = tx.init(jnp.zeros(2))
  signs = [(1.0, 1.0), (1.0, -1.0), (1.0, 1.0), (1.0, -1.0), (1.0, -1.0)]
  sizes, steps = [], []
  for s in signs:
    u, state = tx.update(jnp.asarray(s), state)
    sizes.append(np.asarray(state.step_size).tolist())
    steps.append(np.asarray(u).tolist())
  # first column: always the same sign (x2, capped at 0.3); second: flips (x0.5, floored at 0.03), and the
  # step after a flip sees a zero previous gradient (x1)
  np.testing.assert_allclose(sizes, [[0.1, 0.1], [0.2, 0.05], [0.3, 0.05], [0.3, 0.03], [0.3, 0.03]], rtol=1e-6)
  # a coordinate whose sign flipped does not move on that step
  np.testing.assert_allclose(steps, [[0.1, 0.1], [0.2, 0.0], [0.3, 0.05], [0.3, 0.0], [0.3, -0.03]], rtol=1e-6)


def test_rprop_learning_rate_is_only_the_initial_step_size():
  p = {"w": jnp.zeros(3)}
  a, b = adaptive.rprop(0.1), optax.inject_hyperparams(adaptive.rprop)(learning_rate=0.1)
  sa, sb = a.init(p), b.init(p)
  sb.hyperparams["learning_rate"] = jnp.asarray(5.0)  # torch's schedulers do not reach a running Rprop either
  for g in ([1.0, -1.0, 0.0], [1.0, 1.0, 2.0]):
    ua, sa = a.update({"w": jnp.asarray(g)}, sa)
    ub, sb = b.update({"w": jnp.asarray(g)}, sb)
    np.testing.assert_array_equal(np.asarray(ua["w"]), np.asarray(ub["w"]))
  with pytest.raises(ValueError, match="learning_rate must be a number"):
    adaptive.rprop(optax.constant_schedule(0.1))


@pytest.mark.parametrize("name", ["nadam", "radam"])
def test_decoupled_weight_decay_is_adamws_decay_step(name):
  """With a zero gradient stream the moments stay 0: only the decay moves the params, by (1 - lr wd) a step."""
  tx = getattr(adaptive, name)(0.1, weight_decay=0.5, decoupled_weight_decay=True)
  p = jnp.array([1.0, -2.0])
  state = tx.init(p)
  for _ in range(3):
    u, state = tx.update(jnp.zeros(2), state, p)
    p = optax.apply_updates(p, u)
  np.testing.assert_allclose(np.asarray(p), np.array([1.0, -2.0]) * 0.95**3, rtol=1e-6)


def test_rprop_steps_at_once_unlike_optax():
  """optax.rprop (0.2.8) applies the previous step's update, one step late; torch and this step at once."""
  g = jnp.array([1.0, -2.0])
  ours, theirs = adaptive.rprop(0.1), optax.rprop(0.1)
  u_ours, _ = ours.update(g, ours.init(jnp.zeros(2)))
  u_theirs, _ = theirs.update(g, theirs.init(jnp.zeros(2)))
  np.testing.assert_allclose(np.asarray(u_ours), [-0.1, 0.1], rtol=1e-6)
  np.testing.assert_array_equal(np.abs(np.asarray(u_theirs)), [0.0, 0.0])
