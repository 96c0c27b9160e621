"""PyTorch parity of practices 4 and 5: 1,000 steps on random gradient streams.

Each of our optimizers and the torch optimizer with the same hyperparameters are fed the
same gradient stream (the raw loss gradient; both add weight decay themselves) from the
same starting params; the final params agree to float32 round-off.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from helpers import run_scan
from jaxopt_practices import adaptive, momentum

torch = pytest.importorskip("torch")

STEPS = 1000
SHAPES = [(7, 5), (5,), (3, 3, 2, 4), ()]


def _decay(t):
  return 1.0 / (1.0 + 0.01 * t) * (0.5 + 0.5 * math.cos(math.pi * min(t, 800) / 800.0))


def _schedule(lr0):
  def schedule(count):
    t = jnp.asarray(count, jnp.float32)
    return lr0 / (1.0 + 0.01 * t) * (0.5 + 0.5 * jnp.cos(jnp.pi * jnp.minimum(t, 800.0) / 800.0))
  return schedule


def _stream(seed: int, steps: int = STEPS):
  rng = np.random.default_rng(seed)
  p0 = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
  grads = [[(rng.standard_normal(s) * rng.uniform(0.1, 3.0)).astype(np.float32) for s in SHAPES]
           for _ in range(steps)]
  return p0, grads


def _torch(opt_cls, kwargs, p0, grads, lr_lambda=None):
  params = [torch.nn.Parameter(torch.tensor(p.copy())) for p in p0]
  opt = opt_cls(params, **kwargs)
  sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda) if lr_lambda else None
  for g in grads:
    for p, gi in zip(params, g):
      p.grad = torch.tensor(gi)
    opt.step()
    if sched:
      sched.step()
  return [p.detach().numpy() for p in params]


def _assert_parity(ours, theirs):
  for a, b in zip(ours, theirs):
    scale = max(float(np.max(np.abs(b))), 1e-3)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * scale)
    err = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)
    assert err <= 1e-5, f"relative error {err:.2e} > 1e-5"


SGD = [
    dict(lr=0.01),
    dict(lr=0.01, momentum=0.9),
    dict(lr=0.01, momentum=0.9, dampening=0.5),
    dict(lr=0.01, momentum=0.9, nesterov=True),
    dict(lr=0.01, momentum=0.5, weight_decay=0.1),
    dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.05, schedule=True),
]
ADAGRAD = [
    dict(lr=0.1),
    dict(lr=0.1, lr_decay=0.01),
    dict(lr=0.05, weight_decay=0.01, initial_accumulator_value=0.5, eps=1e-6),
    dict(lr=0.1, lr_decay=0.001, schedule=True),
]
RMSPROP = [
    dict(lr=0.001),
    dict(lr=0.001, alpha=0.9, centered=True),
    dict(lr=0.001, momentum=0.9),
    dict(lr=0.001, momentum=0.9, centered=True, weight_decay=0.01),
    dict(lr=0.001, momentum=0.5, centered=True, eps=1e-4, schedule=True),
]
ADAM = [
    dict(lr=0.001),
    dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.001, amsgrad=True),
    dict(lr=0.001, weight_decay=0.1),
    dict(lr=0.003, amsgrad=True, weight_decay=0.01, schedule=True),
]
ADAMW = [
    dict(lr=0.001),
    dict(lr=0.003, weight_decay=0.1, betas=(0.85, 0.98)),
    dict(lr=0.001, weight_decay=0.05, amsgrad=True),
    dict(lr=0.003, weight_decay=0.1, schedule=True),
]


def _split(cfg):
  cfg = dict(cfg)
  scheduled = cfg.pop("schedule", False)
  lr = cfg.pop("lr")
  return cfg, lr, scheduled


def _check(make_ours, opt_cls, cfg, seed):
  torch_kwargs, lr, scheduled = _split(cfg)
  p0, grads = _stream(seed)
  ours = run_scan(make_ours(_schedule(lr) if scheduled else lr, torch_kwargs), p0, grads)
  theirs = _torch(opt_cls, dict(lr=lr, **torch_kwargs), p0, grads, _decay if scheduled else None)
  _assert_parity(ours, theirs)


@pytest.mark.parametrize("cfg", SGD, ids=str)
def test_sgd_matches_torch(cfg):
  _check(lambda lr, kw: momentum.sgd(lr, **kw), torch.optim.SGD, cfg, seed=0)


@pytest.mark.parametrize("cfg", ADAGRAD, ids=str)
def test_adagrad_matches_torch(cfg):
  _check(lambda lr, kw: adaptive.adagrad(lr, **kw), torch.optim.Adagrad, cfg, seed=1)


@pytest.mark.parametrize("cfg", RMSPROP, ids=str)
def test_rmsprop_matches_torch(cfg):
  _check(lambda lr, kw: adaptive.rmsprop(lr, **kw), torch.optim.RMSprop, cfg, seed=2)


def _adam_kwargs(kw):
  kw = dict(kw)
  if "betas" in kw:
    kw["b1"], kw["b2"] = kw.pop("betas")
  return kw


@pytest.mark.parametrize("cfg", ADAM, ids=str)
def test_adam_matches_torch(cfg):
  _check(lambda lr, kw: adaptive.adam(lr, **_adam_kwargs(kw)), torch.optim.Adam, cfg, seed=3)


@pytest.mark.parametrize("cfg", ADAMW, ids=str)
def test_adamw_matches_torch(cfg):
  _check(lambda lr, kw: adaptive.adamw(lr, **_adam_kwargs(kw)), torch.optim.AdamW, cfg, seed=4)


def test_adamw_default_weight_decay_is_torchs():
  p0, grads = _stream(5, steps=200)
  _assert_parity(run_scan(adaptive.adamw(), p0, grads), _torch(torch.optim.AdamW, {}, p0, grads))


@pytest.mark.parametrize("name", ["adagrad", "rmsprop", "adam"])
def test_defaults_are_torchs(name):
  p0, grads = _stream(6, steps=200)
  ours = run_scan(getattr(adaptive, name)(), p0, grads)
  theirs = _torch({"adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop,
                   "adam": torch.optim.Adam}[name], {}, p0, grads)
  _assert_parity(ours, theirs)
