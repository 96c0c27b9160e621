"""Muon ≙ torch.optim.Muon (issue #23), and routing a Flax model's matrices to it with groups.labels.

Torch always runs Newton–Schulz in bfloat16: ours runs the same iteration (bit for bit on CPU,
checked to one bfloat16 ulp here) and the optimizer follows torch to float32 round-off. With
``ns_dtype=float64`` it follows, to 1e-12 after 100 steps, a float64 NumPy transcription of
torch's ``_zeropower_via_newtonschulz`` and ``_single_tensor_muon`` (torch/optim/_muon.py, 2.13).
Params are Flax kernels ``(in, out)``: torch and the transcription get the ``(out, in)`` transposes.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_practices import adaptive, flat, groups
from helpers import run_scan

torch = pytest.importorskip("torch")
from torch.optim._muon import _zeropower_via_newtonschulz  # noqa: E402

SHAPES = [(4, 3), (3, 5), (6, 6)]  # Flax (in, out): torch weights (3, 4) wide, (5, 3) tall, square
COEFFS = (3.4445, -4.775, 2.0315)


def _np_ns(g, coeffs, steps, eps):
  """torch's _zeropower_via_newtonschulz in float64 NumPy (torch orientation, (out, in))."""
  a, b, c = coeffs
  tall = g.shape[0] > g.shape[1]
  x = g.T if tall else g
  x = x / max(np.linalg.norm(x), eps)
  for _ in range(steps):
    gram = x @ x.T
    x = a * x + (b * gram + c * gram @ gram) @ x
  return x.T if tall else x


def _np_lerp(a, b, w):
  return a + w * (b - a) if w < 0.5 else b - (b - a) * (1.0 - w)


def _np_muon(w0, grads, lr, weight_decay=0.1, momentum=0.95, nesterov=True, ns_coefficients=COEFFS, eps=1e-7,
             ns_steps=5, adjust_lr_fn=None):
  """torch's _single_tensor_muon in float64 NumPy, on (out, in) weights."""
  ws, bufs = [w.copy() for w in w0], [np.zeros_like(w) for w in w0]
  for gs in grads:
    for i, g in enumerate(gs):
      bufs[i] = _np_lerp(bufs[i], g, 1 - momentum)
      update = _np_lerp(g, bufs[i], momentum) if nesterov else bufs[i]
      o = _np_ns(update, ns_coefficients, ns_steps, eps)
      rows, cols = ws[i].shape
      ratio = 0.2 * math.sqrt(max(rows, cols)) if adjust_lr_fn == "match_rms_adamw" else math.sqrt(max(1, rows / cols))
      ws[i] = ws[i] * (1 - lr * weight_decay) - lr * ratio * o
  return ws


def _stream(seed, dtype, steps):
  rng = np.random.default_rng(seed)
  p0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
  return p0, [[(rng.standard_normal(s) * rng.uniform(0.1, 3.0)).astype(dtype) for s in SHAPES] for _ in range(steps)]


def _rel_err(ours, theirs):
  return max(np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("shape", [(3, 4), (5, 3), (6, 6), (16, 40), (40, 16)])
def test_bfloat16_newton_schulz_is_torchs(shape):
  x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
  theirs = _zeropower_via_newtonschulz(torch.tensor(x), COEFFS, 5, 1e-7).float().numpy()
  ours = np.asarray(adaptive.orthogonalize(jnp.asarray(x)).astype(jnp.float32))
  assert np.max(np.abs(ours - theirs)) <= 2.0**-8 * np.max(np.abs(theirs))  # one bfloat16 ulp at the top


MUON = [dict(lr=0.02), dict(lr=0.02, weight_decay=0.05, momentum=0.9, nesterov=False, adjust_lr_fn="match_rms_adamw"),
        dict(lr=0.01, weight_decay=0.0, ns_coefficients=(2.0, -1.5, 0.5), ns_steps=3, eps=1e-3,
             adjust_lr_fn="original")]


@pytest.mark.parametrize("cfg", MUON, ids=str)
def test_matches_torch_muon_with_bfloat16_newton_schulz(cfg):
  kw = dict(cfg)
  lr = kw.pop("lr")
  p0, grads = _stream(0, np.float32, 100)
  ours = run_scan(adaptive.muon(lr, **kw), p0, grads)
  tp = [torch.nn.Parameter(torch.tensor(p.T.copy())) for p in p0]
  opt = torch.optim.Muon(tp, lr=lr, **kw)
  for g in grads:
    for p, gi in zip(tp, g):
      p.grad = torch.tensor(gi.T.copy())
    opt.step()
  assert _rel_err(ours, [p.detach().numpy().T for p in tp]) <= 1e-5


@pytest.mark.parametrize("cfg", MUON, ids=str)
def test_float64_newton_schulz_matches_a_float64_transcription(cfg):
  kw = dict(cfg)
  lr = kw.pop("lr")
  with jax.enable_x64(True):
    p0, grads = _stream(1, np.float64, 100)
    ours = run_scan(adaptive.muon(lr, ns_dtype=jnp.float64, **kw), p0, grads)
  theirs = _np_muon([p.T for p in p0], [[g.T for g in gs] for gs in grads], lr, **kw)
  assert all(o.dtype == np.float64 for o in ours)
  assert _rel_err(ours, [w.T for w in theirs]) <= 1e-12


def test_orthogonalize_float64_every_option():
  rng = np.random.default_rng(2)
  with jax.enable_x64(True):
    for shape, coeffs, steps, eps in [((3, 7), COEFFS, 5, 1e-7), ((7, 3), (2.0, -1.5, 0.5), 10, 1e-7),
                                      ((4, 4), COEFFS, 0, 1e-7), ((2, 3), COEFFS, 5, 10.0)]:
      x = rng.standard_normal(shape)
      ours = np.asarray(adaptive.orthogonalize(jnp.asarray(x), coeffs, steps, eps, ns_dtype=jnp.float64))
      np.testing.assert_allclose(ours, _np_ns(x, coeffs, steps, eps), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("params", [{"w": jnp.ones((3, 2)), "b": jnp.ones(2)}, {"conv": jnp.ones((3, 3, 2, 4))},
                                    jnp.ones(3)], ids=["bias", "conv", "vector"])
def test_non_matrix_leaves_raise_naming_the_leaf_and_the_fix(params):
  tx = adaptive.muon()
  with pytest.raises(ValueError, match=r"2-D leaves.*shape.*multi_transform.*groups\.labels"):
    tx.init(params)
  with pytest.raises(ValueError, match="'b'" if isinstance(params, dict) and "b" in params else "2-D"):
    tx.update(params, adaptive.muon().init(jnp.ones((2, 2))), params)


def test_complex_and_flat_buffers_raise():
  p = jnp.ones((2, 2), jnp.complex64)
  with pytest.raises(ValueError, match="complex"):
    adaptive.muon().init(p)
  buf, _ = flat.flatten({"w": jnp.ones((3, 2)), "v": jnp.ones((2, 2))})
  with pytest.raises(ValueError, match="flat.flatten buffer is 1-D"):
    adaptive.muon().init(buf)


class _Net(nn.Module):
  """A small real model: a conv (4-D kernel), LayerNorm, two Dense layers (2-D kernels) and biases."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x)).reshape(x.shape[0], -1)
    x = nn.LayerNorm()(nn.Dense(16)(x))
    return nn.Dense(3)(nn.relu(x))


def test_labels_route_a_flax_models_matrices_to_muon_and_the_rest_to_adamw():
  model = _Net()
  x = jax.random.normal(jax.random.key(0), (8, 6, 6, 2))
  y = jax.random.normal(jax.random.key(1), (8, 3))
  params = model.init(jax.random.key(2), x)["params"]
  label_fn = groups.labels([("Dense_.*/kernel", "muon")], default="adamw")
  assert label_fn(params)["Dense_0"] == {"kernel": "muon", "bias": "adamw"}
  assert label_fn(params)["Conv_0"]["kernel"] == "adamw"
  muon, adamw = adaptive.muon(0.02), adaptive.adamw(3e-3)
  tx = optax.multi_transform({"muon": muon, "adamw": adamw}, label_fn)
  grads = jax.grad(lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2))(params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # Each group gets exactly what its optimizer alone gives it.
  dense = {k: params[k]["kernel"] for k in ("Dense_0", "Dense_1")}
  alone, _ = muon.update({k: grads[k]["kernel"] for k in dense}, muon.init(dense), dense)
  for k in dense:
    np.testing.assert_array_equal(updates[k]["kernel"], alone[k])
  rest = {"conv": params["Conv_0"]["kernel"], "bias": params["Dense_0"]["bias"]}
  alone, _ = adamw.update({"conv": grads["Conv_0"]["kernel"], "bias": grads["Dense_0"]["bias"]}, adamw.init(rest), rest)
  np.testing.assert_array_equal(updates["Conv_0"]["kernel"], alone["conv"])
  np.testing.assert_array_equal(updates["Dense_0"]["bias"], alone["bias"])
  # And training with it works: the loss falls.
  loss = lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2)  # noqa: E731

  @jax.jit
  def step(p, s):
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, u), s

  p, s = params, tx.init(params)
  for _ in range(30):
    p, s = step(p, s)
  assert float(loss(p)) < 0.5 * float(loss(params))
