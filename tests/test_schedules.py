"""Tests for ``jaxopt_practices.schedules``: closed form, PyTorch parity, properties, validation."""

from __future__ import annotations

import math

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import grad_stream
from jaxopt_practices import adaptive, momentum, schedules

torch = pytest.importorskip("torch")
lr_scheduler = torch.optim.lr_scheduler

INT32_MAX = 2**31 - 1


def values(sched, n, jit=True):
  """``sched(t)`` for ``t = 0..n-1``, through one compiled function (or eagerly per int)."""
  if jit:
    return np.asarray(jax.jit(jax.vmap(sched))(jnp.arange(n, dtype=jnp.int32)), np.float64)
  return np.asarray([float(sched(t)) for t in range(n)])


def torch_sequence(make, n, *, lr=1.0, optimizer="sgd"):
  """The lr (and momentum / beta1) PyTorch uses in each of ``n`` optimizer steps."""
  p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
  if optimizer == "sgd":
    opt = torch.optim.SGD([p], lr=lr, momentum=0.9)
  else:
    opt = torch.optim.Adam([p], lr=lr)
  sched = make(opt)
  lrs, moms = [], []
  for i in range(n):
    group = opt.param_groups[0]
    lrs.append(float(group["lr"]))
    moms.append(float(group["momentum"] if optimizer == "sgd" else group["betas"][0]))
    opt.step()
    if i < n - 1:  # the step after the last one is never used (and OneCycleLR may divide by 0)
      sched.step()
  return np.asarray(lrs), np.asarray(moms)


def assert_rel(ours, ref, rtol=1e-5, atol=1e-12):
  np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol)


# ------------------------------------------------------------------ PyTorch parity
PARITY = [
    ("constant", lambda: schedules.constant(0.3),
     lambda o: lr_scheduler.ConstantLR(o, factor=1.0, total_iters=5), 0.3, 50),
    ("step", lambda: schedules.step_decay(0.5, 7, 0.5),
     lambda o: lr_scheduler.StepLR(o, 7, 0.5), 0.5, 300),
    ("step_gamma0", lambda: schedules.step_decay(0.5, 3, 0.0),
     lambda o: lr_scheduler.StepLR(o, 3, 0.0), 0.5, 20),
    ("multistep", lambda: schedules.multistep_decay(1.0, [30, 10, 10, 80], 0.3),
     lambda o: lr_scheduler.MultiStepLR(o, [30, 10, 10, 80], 0.3), 1.0, 200),
    ("exponential", lambda: schedules.exponential_decay(0.1, 0.99),
     lambda o: lr_scheduler.ExponentialLR(o, 0.99), 0.1, 1000),
    ("exponential_fast", lambda: schedules.exponential_decay(2.0, 0.9),
     lambda o: lr_scheduler.ExponentialLR(o, 0.9), 2.0, 500),
    ("polynomial", lambda: schedules.polynomial_decay(0.1, 100, 1.0),
     lambda o: lr_scheduler.PolynomialLR(o, 100, 1.0), 0.1, 150),
    ("polynomial_p2", lambda: schedules.polynomial_decay(1.0, 333, 2.5),
     lambda o: lr_scheduler.PolynomialLR(o, 333, 2.5), 1.0, 400),
    ("cosine", lambda: schedules.cosine_annealing(0.1, 1000),
     lambda o: lr_scheduler.CosineAnnealingLR(o, 1000), 0.1, 1001),
    ("cosine_eta_min", lambda: schedules.cosine_annealing(1.0, 77, 1e-3),
     lambda o: lr_scheduler.CosineAnnealingLR(o, 77, 1e-3), 1.0, 78),
    ("sgdr", lambda: schedules.cosine_warm_restarts(0.1, 10),
     lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 10), 0.1, 1000),
    ("sgdr_mult2", lambda: schedules.cosine_warm_restarts(0.1, 5, 2, 1e-4),
     lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 5, 2, 1e-4), 0.1, 1000),
    ("sgdr_mult3", lambda: schedules.cosine_warm_restarts(1.0, 1, 3),
     lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 1, 3), 1.0, 1000),
    ("cyclic_triangular", lambda: schedules.cyclical(0.01, 0.1, 20),
     lambda o: lr_scheduler.CyclicLR(o, 0.01, 0.1, 20), 0.01, 1000),
    ("cyclic_asym_tri2", lambda: schedules.cyclical(0.001, 0.1, 13, 7, "triangular2"),
     lambda o: lr_scheduler.CyclicLR(o, 0.001, 0.1, 13, 7, "triangular2"), 0.001, 150),
    ("cyclic_exp_range", lambda: schedules.cyclical(0.0, 1.0, 9, 31, "exp_range", 0.995),
     lambda o: lr_scheduler.CyclicLR(o, 0.0, 1.0, 9, 31, "exp_range", 0.995), 0.0, 1000),
    ("cyclic_sawtooth", lambda: schedules.cyclical(0.1, 0.5, 4, 0),
     lambda o: lr_scheduler.CyclicLR(o, 0.1, 0.5, 4, 0), 0.1, 100),
    ("one_cycle", lambda: schedules.one_cycle(0.1, 1000),
     lambda o: lr_scheduler.OneCycleLR(o, 0.1, 1000), 0.1, 1000),
    ("one_cycle_linear", lambda: schedules.one_cycle(1.0, 97, 0.25, "linear", 10.0, 100.0),
     lambda o: lr_scheduler.OneCycleLR(o, 1.0, 97, pct_start=0.25, anneal_strategy="linear",
                                       div_factor=10.0, final_div_factor=100.0), 1.0, 97),
    ("one_cycle_three_phase", lambda: schedules.one_cycle(0.5, 333, 0.3, "cos", three_phase=True),
     lambda o: lr_scheduler.OneCycleLR(o, 0.5, 333, pct_start=0.3, three_phase=True), 0.5, 333),
    ("one_cycle_three_phase_linear", lambda: schedules.one_cycle(0.5, 100, 0.45, "linear", three_phase=True),
     lambda o: lr_scheduler.OneCycleLR(o, 0.5, 100, pct_start=0.45, anneal_strategy="linear",
                                       three_phase=True), 0.5, 100),
    ("one_cycle_pct0", lambda: schedules.one_cycle(0.2, 50, 0.0),
     lambda o: lr_scheduler.OneCycleLR(o, 0.2, 50, pct_start=0.0), 0.2, 50),
    ("one_cycle_pct1", lambda: schedules.one_cycle(0.2, 50, 1.0),
     lambda o: lr_scheduler.OneCycleLR(o, 0.2, 50, pct_start=1.0), 0.2, 50),
    ("warmup_exponential", lambda: schedules.warmup(schedules.exponential_decay(0.1, 0.99), 10, 0.01),
     lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.1, 1.0, 10),
                                             lr_scheduler.ExponentialLR(o, 0.99)], [10]), 0.1, 300),
    ("warmup_cosine", lambda: schedules.warmup(schedules.cosine_annealing(0.1, 90), 10, 0.05),
     lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.5, 1.0, 10),
                                             lr_scheduler.CosineAnnealingLR(o, 90)], [10]), 0.1, 101),
    # v0.2: ConstantLR, growth (gamma > 1), gamma = 0, OneCycleLR(epochs, steps_per_epoch), SequentialLR
    ("constant_factor", lambda: schedules.constant(0.3, 0.25, 7),
     lambda o: lr_scheduler.ConstantLR(o, factor=0.25, total_iters=7), 0.3, 50),
    ("constant_torch_defaults", lambda: schedules.constant(0.1, 1 / 3, 5),
     lambda o: lr_scheduler.ConstantLR(o), 0.1, 20),
    ("step_growth", lambda: schedules.step_decay(1e-3, 7, 1.5),
     lambda o: lr_scheduler.StepLR(o, 7, 1.5), 1e-3, 300),
    ("multistep_growth", lambda: schedules.multistep_decay(0.01, [30, 10, 10, 80], 2.0),
     lambda o: lr_scheduler.MultiStepLR(o, [30, 10, 10, 80], 2.0), 0.01, 200),
    ("exponential_growth", lambda: schedules.exponential_decay(1e-4, 1.01),
     lambda o: lr_scheduler.ExponentialLR(o, 1.01), 1e-4, 1000),
    ("exponential_gamma0", lambda: schedules.exponential_decay(0.5, 0.0),
     lambda o: lr_scheduler.ExponentialLR(o, 0.0), 0.5, 10),
    ("one_cycle_epochs", lambda: schedules.one_cycle(0.1, epochs=7, steps_per_epoch=13),
     lambda o: lr_scheduler.OneCycleLR(o, 0.1, epochs=7, steps_per_epoch=13), 0.1, 91),
    ("one_cycle_epochs_float", lambda: schedules.one_cycle(0.1, epochs=7.0, steps_per_epoch=13.0, three_phase=True),
     lambda o: lr_scheduler.OneCycleLR(o, 0.1, epochs=7, steps_per_epoch=13, three_phase=True), 0.1, 91),
    ("sequential_linear_cosine",
     lambda: schedules.sequential([optax.linear_schedule(0.01, 0.1, 10), schedules.cosine_annealing(0.1, 90)], [10]),
     lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.1, 1.0, 10),
                                             lr_scheduler.CosineAnnealingLR(o, 90)], [10]), 0.1, 101),
    ("sequential_constant_cosine",
     lambda: schedules.sequential([schedules.constant(0.1, 0.1, 20), schedules.cosine_annealing(0.1, 500, 1e-3)],
                                  [20]),
     lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.ConstantLR(o, 0.1, 20),
                                             lr_scheduler.CosineAnnealingLR(o, 500, 1e-3)], [20]), 0.1, 521),
    ("sequential_three",
     lambda: schedules.sequential([optax.linear_schedule(0.01, 0.1, 5), schedules.constant(0.1, 0.5, 20),
                                   schedules.cosine_annealing(0.1, 70, 1e-3)], [5, 30.0]),
     lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.1, 1.0, 5),
                                             lr_scheduler.ConstantLR(o, 0.5, 20),
                                             lr_scheduler.CosineAnnealingLR(o, 70, 1e-3)], [5, 30]), 0.1, 101),
    ("sequential_exponential_step",
     lambda: schedules.sequential([schedules.exponential_decay(0.2, 0.95), schedules.step_decay(0.2, 30, 0.5)],
                                  [40]),
     lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.ExponentialLR(o, 0.95),
                                             lr_scheduler.StepLR(o, 30, 0.5)], [40]), 0.2, 300),
]


@pytest.mark.filterwarnings("ignore::UserWarning")  # SequentialLR's deprecation notices
@pytest.mark.parametrize("name,ours,theirs,lr,n", PARITY, ids=[p[0] for p in PARITY])
def test_torch_parity(name, ours, theirs, lr, n):
  ref, _ = torch_sequence(theirs, n, lr=lr)
  assert_rel(values(ours(), n), ref)
  if n <= 120:
    assert_rel(values(ours(), n, jit=False), ref)


MOMENTUM_PARITY = [
    ("one_cycle", lambda: schedules.one_cycle_momentum(200),
     lambda o: lr_scheduler.OneCycleLR(o, 0.1, 200), 200),
    ("one_cycle_linear", lambda: schedules.one_cycle_momentum(101, 0.4, "linear", 0.7, 0.99),
     lambda o: lr_scheduler.OneCycleLR(o, 0.1, 101, pct_start=0.4, anneal_strategy="linear",
                                       base_momentum=0.7, max_momentum=0.99), 101),
    ("one_cycle_three_phase", lambda: schedules.one_cycle_momentum(150, 0.25, three_phase=True),
     lambda o: lr_scheduler.OneCycleLR(o, 0.1, 150, pct_start=0.25, three_phase=True), 150),
    ("cyclic", lambda: schedules.cyclical_momentum(0.8, 0.9, 10, 5),
     lambda o: lr_scheduler.CyclicLR(o, 0.01, 0.1, 10, 5), 200),
    ("cyclic_tri2", lambda: schedules.cyclical_momentum(0.5, 0.95, 7, None, "triangular2"),
     lambda o: lr_scheduler.CyclicLR(o, 0.01, 0.1, 7, None, "triangular2", base_momentum=0.5,
                                     max_momentum=0.95), 100),
    ("cyclic_exp_range", lambda: schedules.cyclical_momentum(0.8, 0.9, 10, 20, "exp_range", 0.99),
     lambda o: lr_scheduler.CyclicLR(o, 0.01, 0.1, 10, 20, "exp_range", 0.99), 300),
    ("one_cycle_epochs", lambda: schedules.one_cycle_momentum(epochs=5, steps_per_epoch=21, pct_start=0.2),
     lambda o: lr_scheduler.OneCycleLR(o, 0.1, epochs=5, steps_per_epoch=21, pct_start=0.2), 105),
]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name,ours,theirs,n", MOMENTUM_PARITY, ids=[p[0] for p in MOMENTUM_PARITY])
def test_momentum_torch_parity(name, ours, theirs, n, optimizer):
  _, ref = torch_sequence(theirs, n, optimizer=optimizer)
  assert_rel(values(ours(), n), ref)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("anneal", [1, 5, 10])
@pytest.mark.parametrize("base", ["cosine", "exponential"])
def test_swa_lr_matches_torch_swa_utils_pattern(strategy, anneal, base):
  """The swa_utils loop: `if i > swa_start: swa_scheduler.step() else: scheduler.step()`, once per update."""
  n, lr, swa_start_torch = 300, 0.1, 160
  p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
  opt = torch.optim.SGD([p], lr=lr, momentum=0.9)
  if base == "cosine":
    scheduler, ours = lr_scheduler.CosineAnnealingLR(opt, T_max=300), schedules.cosine_annealing(lr, 300)
  else:
    scheduler, ours = lr_scheduler.ExponentialLR(opt, 0.99), schedules.exponential_decay(lr, 0.99)
  swa_scheduler = torch.optim.swa_utils.SWALR(opt, swa_lr=0.05, anneal_epochs=anneal, anneal_strategy=strategy)
  ref = []
  for i in range(n):
    ref.append(opt.param_groups[0]["lr"])
    opt.step()
    if i > swa_start_torch:
      swa_scheduler.step()
    else:
      scheduler.step()
  sched = schedules.swa_lr(ours, swa_lr=0.05, start_step=swa_start_torch + 1, anneal_steps=anneal,
                           anneal_strategy=strategy)
  assert_rel(values(sched, n), np.asarray(ref))
  assert_rel(values(sched, 200, jit=False), np.asarray(ref[:200]))


def test_swa_lr_closed_form_and_zero_anneal():
  sched = schedules.swa_lr(schedules.exponential_decay(1.0, 0.5), 0.1, start_step=3, anneal_steps=4)
  t = np.arange(12)
  start = 0.5**3
  w = (1 + np.cos(np.pi * np.clip(t - 3, 0, 4) / 4)) / 2
  assert_rel(values(sched, 12), np.where(t <= 3, 0.5**t, 0.1 + (start - 0.1) * w), atol=1e-7)
  jump = schedules.swa_lr(0.2, 0.05, start_step=2, anneal_steps=0)  # acts as 1, as SWALR's formula
  assert_rel(values(jump, 5), [0.2, 0.2, 0.2, 0.05, 0.05])


def test_swa_lr_swa_start_is_a_deprecated_alias_of_start_step():
  """Issue #20: one name for the step where averaging / annealing starts, ``start_step`` (as ``swa``)."""
  new = schedules.swa_lr(0.2, 0.05, 3, anneal_steps=2)  # positional calls are unchanged
  with pytest.warns(DeprecationWarning, match=r"swa_lr\(swa_start=\) is deprecated.*start_step="):
    old = schedules.swa_lr(0.2, 0.05, swa_start=3, anneal_steps=2)
  assert_rel(values(old, 10), values(new, 10), rtol=0.0, atol=0.0)
  with pytest.raises(ValueError, match="not both"):
    schedules.swa_lr(0.2, 0.05, start_step=3, swa_start=3)
  with pytest.raises(ValueError, match="start_step = None"):
    schedules.swa_lr(0.2, 0.05)


def test_sequential_is_optax_join_schedules():
  parts = [optax.linear_schedule(0.0, 1.0, 7), schedules.cosine_warm_restarts(1.0, 5, 2), optax.constant_schedule(0.3),
           schedules.inverse_sqrt(0.5, 11)]
  ours = schedules.sequential(parts, [7, 40, 41])
  ref = optax.join_schedules(parts, [7, 40, 41])
  assert_rel(values(ours, 120), np.asarray(jax.vmap(ref)(jnp.arange(120))), rtol=1e-6)
  single = schedules.sequential([schedules.cosine_annealing(1.0, 10)], [])
  assert_rel(values(single, 20), values(schedules.cosine_annealing(1.0, 10), 20), rtol=0.0)
  floats = schedules.sequential([0.1, 0.2, 0.05], [2, 4])
  assert_rel(values(floats, 6), [0.1, 0.1, 0.2, 0.2, 0.05, 0.05], rtol=1e-7)


def test_inverse_sqrt_closed_forms():
  """lr = peak * min(t / W, sqrt(W / t)); the Transformer's formula with step = count; lm1b's join."""
  peak, w, n = 2e-3, 100, 2000
  t = np.arange(n, dtype=np.float64)
  ours = values(schedules.inverse_sqrt(peak, w), n)
  assert_rel(ours, peak * np.minimum(t / w, np.sqrt(w / np.maximum(t, 1))), atol=0.0)
  assert ours[0] == 0.0 and ours[w] == pytest.approx(peak, rel=1e-7)
  d_model = 512  # Vaswani et al.: lr = d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)
  vaswani = values(schedules.inverse_sqrt((d_model * w) ** -0.5, w), n)
  step = t[1:]
  assert_rel(vaswani[1:], d_model**-0.5 * np.minimum(step**-0.5, step * w**-1.5))
  # fairseq inverse_sqrt (warmup_init_lr=0): lr = num_updates * lr_step, then decay_factor * num_updates**-0.5
  lr_step, decay_factor = peak / w, peak * w**0.5
  assert_rel(ours, np.where(t < w, t * lr_step, decay_factor * np.maximum(t, 1) ** -0.5))
  lm1b = optax.join_schedules([optax.linear_schedule(0.0, peak, w),
                               lambda c: peak * (c.astype(jnp.float32) + w) ** -0.5 * w**0.5], [w])
  assert_rel(ours, np.asarray(jax.vmap(lm1b)(jnp.arange(n))))  # optax.linear_schedule rounds to ~4e-6


# ------------------------------------------------------------------ closed form
def _cos(a, b, x):  # (1 + cos(pi x)) / 2 from a to b
  return b + (a - b) * (1 + np.cos(np.pi * x)) / 2


CLOSED = [
    (schedules.constant(0.25), lambda t: 0.25 + 0 * t),
    (schedules.step_decay(1.0, 4, 0.5), lambda t: 0.5 ** (t // 4)),
    (schedules.multistep_decay(2.0, [5, 9], 0.1), lambda t: 2.0 * 0.1 ** ((t >= 5).astype(int) + (t >= 9).astype(int))),
    (schedules.exponential_decay(3.0, 0.97), lambda t: 3.0 * 0.97**t),
    (schedules.polynomial_decay(1.0, 20, 0.5), lambda t: np.sqrt(1 - np.minimum(t, 20) / 20)),
    (schedules.cosine_annealing(1.0, 30, 0.1), lambda t: _cos(1.0, 0.1, np.minimum(t, 30) / 30)),
    (schedules.cosine_warm_restarts(1.0, 3, 2),
     lambda t: _cos(1.0, 0.0, np.select([t < 3, t < 9, t < 21], [t / 3, (t - 3) / 6, (t - 9) / 12],
                                        (t - 21) / 24))),
    (schedules.cyclical(1.0, 3.0, 4, 6),
     lambda t: 1.0 + 2.0 * np.where(t % 10 <= 4, (t % 10) / 4, (10 - t % 10) / 6)),
    (schedules.one_cycle(1.0, 21, 0.5, "linear", 4.0, 2.0),  # up over [0, 9.5], down to step 20, then held
     lambda t: np.where(t <= 9.5, 0.25 + 0.75 * t / 9.5, 1.0 - 0.875 * (np.minimum(t, 20) - 9.5) / 10.5)),
    (schedules.warmup(0.5, 5, 0.1), lambda t: np.where(t < 5, 0.1 + 0.4 * t / 5, 0.5)),
    (schedules.constant(0.5, 0.2, 9), lambda t: np.where(t < 9, 0.1, 0.5)),
    (schedules.step_decay(0.01, 4, 3.0), lambda t: 0.01 * 3.0 ** (t // 4)),
    (schedules.exponential_decay(1e-3, 1.2), lambda t: 1e-3 * 1.2**t),
    (schedules.inverse_sqrt(0.3, 6), lambda t: 0.3 * np.minimum(t / 6, np.sqrt(6 / np.maximum(t, 1)))),
    (schedules.sequential([0.2, schedules.step_decay(1.0, 4, 0.5)], [10]),
     lambda t: np.where(t < 10, 0.2, 0.5 ** ((t - 10) // 4))),
    (schedules.swa_lr(schedules.cosine_annealing(1.0, 40), 0.2, 20, 5, "linear"),
     lambda t: np.where(t <= 20, _cos(1.0, 0.0, t / 40), 0.2 + (0.5 - 0.2) * (1 - np.clip(t - 20, 0, 5) / 5))),
]


@pytest.mark.parametrize("sched,formula", CLOSED, ids=[f"c{i}" for i in range(len(CLOSED))])
def test_closed_form(sched, formula):
  t = np.arange(45)
  assert_rel(values(sched, 45), formula(t.astype(np.float64)), atol=1e-7)
  assert_rel(values(sched, 45, jit=False), formula(t.astype(np.float64)), atol=1e-7)


def test_near_eta_min_keeps_relative_accuracy():
  """The last steps of a long cosine are tiny; float32 1 + cos(x) would lose them."""
  t_max = 100_000
  sched = schedules.cosine_annealing(1.0, t_max)
  t = np.arange(t_max - 20, t_max + 1)
  ref = np.sin(np.pi / 2 * (t_max - t) / t_max) ** 2
  assert_rel(np.asarray(jax.vmap(sched)(jnp.asarray(t, jnp.int32))), ref, atol=0.0)


@pytest.mark.parametrize("name", ["exponential", "constant_factor", "one_cycle_epochs", "inverse_sqrt", "sequential",
                                  "swa_lr", "swa_lr_late"])
def test_count_conventions(name):
  sched = ALL[name]
  with pytest.raises(ValueError, match="count"):
    sched(-1)
  with pytest.raises(ValueError, match="count"):
    sched(2**31)
  clamped = jax.jit(sched)(jnp.int32(-5))
  assert float(clamped) == float(sched(0))
  out = sched(jnp.arange(4))
  assert out.dtype == jnp.float32 and out.shape == (4,)
  assert sched(3).dtype == jnp.float32 and sched(3).shape == ()
  assert sched(jnp.zeros((2, 3), jnp.int32)).shape == (2, 3)


ALL = {
    "constant": schedules.constant(0.1),
    "step": schedules.step_decay(0.1, 3),
    "multistep": schedules.multistep_decay(0.1, [3, 2**31 - 1]),
    "exponential": schedules.exponential_decay(0.1, 0.999),
    "polynomial": schedules.polynomial_decay(0.1, 2**31 - 1),
    "cosine": schedules.cosine_annealing(0.1, 1000, 0.01),
    "sgdr": schedules.cosine_warm_restarts(0.1, 1),
    "sgdr_mult": schedules.cosine_warm_restarts(0.1, 3, 7, 0.01),
    "cyclical": schedules.cyclical(0.01, 0.1, 2**30 - 1, 2**30 - 1, "triangular2"),
    "cyclical_exp": schedules.cyclical(0.01, 0.1, 1, 0, "exp_range", 0.9),
    "one_cycle": schedules.one_cycle(0.1, 2**31 - 1, three_phase=True),
    "one_cycle_momentum": schedules.one_cycle_momentum(1000),
    "cyclical_momentum": schedules.cyclical_momentum(0.8, 0.9, 5),
    "warmup": schedules.warmup(schedules.cosine_warm_restarts(0.1, 10, 2), 2**30, 0.0),
    "constant_factor": schedules.constant(0.1, 0.5, 2**30),
    "one_cycle_epochs": schedules.one_cycle(0.1, epochs=2**15, steps_per_epoch=2**16 - 1),
    "inverse_sqrt": schedules.inverse_sqrt(0.1, 4000),
    "inverse_sqrt_long": schedules.inverse_sqrt(0.1, 2**31 - 1),
    "sequential": schedules.sequential([schedules.warmup(0.1, 1000), schedules.cosine_annealing(0.1, 2**30),
                                        0.01], [1000, 2**31 - 2]),
    "swa_lr": schedules.swa_lr(schedules.cosine_annealing(0.1, 2**30), 0.05, 2**30 - 5, 10),
    "swa_lr_late": schedules.swa_lr(0.1, 0.0, 2**31 - 3, 10, "linear"),
    # v0.3: timm's cosine options, per-epoch stepping, torch's factor schedulers, big_vision's options
    "cosine_k": schedules.cosine_annealing(0.1, 2**31 - 1, 0.0, k_decay=0.5),
    "sgdr_float_mult": schedules.cosine_warm_restarts(0.1, 3, 1.5, 0.01, k_decay=2.0, cycle_decay=0.9),
    "sgdr_limit": schedules.cosine_warm_restarts(0.1, 7, 2, cycle_limit=5),
    "per_epoch": schedules.per_epoch(schedules.cosine_annealing(0.1, 1000), 2**20),
    "linear": schedules.linear(0.1, 0.1, 1.0, 2**31 - 1),
    "multiplicative": schedules.multiplicative(0.1, lambda e: 0.99, 1000),
    "inverse_sqrt_timescale": schedules.inverse_sqrt(0.1, 2**30, timescale=2**31 - 1),
    "polynomial_end": schedules.polynomial_decay(0.1, 2**31 - 1, 0.5, end_value=0.01),
    "warmup_noshift": schedules.warmup(schedules.cosine_warm_restarts(0.1, 10, 2), 2**30, 0.0, shift=False),
}
BOUNDS = {"one_cycle_momentum": (0.85, 0.95), "cyclical_momentum": (0.8, 0.9)}


@pytest.mark.parametrize("name", list(ALL))
def test_no_recompile_no_overflow(name):
  sched = ALL[name]
  chex.clear_trace_counter()
  jitted = jax.jit(chex.assert_max_traces(n=1)(sched))
  lo, hi = BOUNDS.get(name, (0.0, 0.1))
  for t in [0, 1, 2, 3, 999, 1000, 2**24 + 1, 2**30, 2**31 - 2, 2**31 - 1]:
    traced = float(jitted(jnp.int32(t)))
    eager = float(sched(t))
    assert math.isfinite(traced) and lo * (1 - 1e-6) <= traced <= hi * (1 + 1e-6), (t, traced)
    assert traced == pytest.approx(eager, rel=1e-6, abs=1e-12)
  batched = jax.jit(jax.vmap(sched))(jnp.asarray([0, 5, INT32_MAX], jnp.int32))
  assert batched.dtype == jnp.float32
  assert_rel(np.asarray(batched), [float(sched(0)), float(sched(5)), float(sched(INT32_MAX))], rtol=1e-6)


# ------------------------------------------------------------------ properties
counts = st.integers(0, INT32_MAX)


@hypothesis.given(
    base=st.floats(0.0, 1.0), peak=st.floats(0.0, 1.0), up=st.integers(1, 50), down=st.integers(0, 50),
    mode=st.sampled_from(["triangular", "triangular2", "exp_range"]), gamma=st.floats(0.5, 1.0),
    t=st.integers(0, 10_000))
def test_cyclical_periodic_and_bounded(base, peak, up, down, mode, gamma, t):
  sched = schedules.cyclical(base, peak, up, down, mode, gamma)
  a, b = float(sched(t)), float(sched(t + up + down))
  lo, hi = min(base, peak), max(base, peak)
  for v in (a, b):
    assert lo - 1e-6 <= v <= hi + 1e-6
  if mode == "triangular":
    assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
  elif mode == "triangular2":
    assert b - base == pytest.approx((a - base) / 2, rel=1e-5, abs=1e-7)
  mom = schedules.cyclical_momentum(0.8, 0.9, up, down, mode, gamma)
  assert 0.8 - 1e-6 <= float(mom(t)) <= 0.9 + 1e-6


@hypothesis.given(
    max_lr=st.floats(1e-4, 10.0), total=st.integers(2, 400), pct=st.floats(0.0, 1.0),
    strategy=st.sampled_from(["cos", "linear"]), three=st.booleans(),
    div=st.floats(1.0, 100.0), final_div=st.floats(1.0, 1e4))
def test_one_cycle_continuous_finite_bounded(max_lr, total, pct, strategy, three, div, final_div):
  sched = schedules.one_cycle(max_lr, total, pct, strategy, div, final_div, three)
  grid = jnp.arange(403, dtype=jnp.int32)  # one shape for every example: no recompilation
  v = np.asarray(sched(grid), np.float64)[: total + 3]
  assert np.all(np.isfinite(v))
  assert np.all(v <= max_lr * (1 + 1e-6)) and np.all(v >= max_lr / div / final_div * (1 - 1e-5))
  # Continuity: within and across phase boundaries, one step moves at most the steepest slope.
  ends = [pct * total - 1] + ([2 * pct * total - 2] if three else []) + [total - 1]
  widths = np.diff([0.0] + ends)
  widths = widths[widths >= 1.0]
  if widths.size:
    slope = (math.pi / 2 if strategy == "cos" else 1.0) * max_lr / widths.min()
    assert np.max(np.abs(np.diff(v))) <= slope * (1 + 1e-4) + 1e-6
  mom = np.asarray(schedules.one_cycle_momentum(total, pct, strategy, 0.85, 0.95, three)(grid))
  assert np.all((mom >= 0.85 - 1e-6) & (mom <= 0.95 + 1e-6))


@hypothesis.settings(max_examples=12)
@hypothesis.given(t=counts, w=st.integers(1, 1000), start=st.floats(0.0, 1.0), t0=st.integers(1, 50),
                  mult=st.integers(1, 4))
def test_warmup_python_int_equals_jit_and_is_continuous(t, w, start, t0, mult):
  inner = schedules.cosine_warm_restarts(0.5, t0, mult, 0.01)
  sched = schedules.warmup(inner, w, start)
  jitted = jax.jit(sched)
  assert float(sched(t)) == pytest.approx(float(jitted(jnp.int32(t))), rel=1e-6, abs=1e-9)
  assert np.isfinite(float(sched(t)))
  ramp = (0.5 - start) / w
  assert float(sched(w)) - float(sched(w - 1)) == pytest.approx(ramp, rel=1e-4, abs=1e-6)
  assert float(sched(w)) == pytest.approx(0.5, rel=1e-6)


JITTED = {name: jax.jit(sched) for name, sched in ALL.items()}


@hypothesis.given(name=st.sampled_from(list(ALL)), t=counts)
def test_python_int_equals_jit_everywhere(name, t):
  sched = ALL[name]
  eager, traced = float(sched(t)), float(JITTED[name](jnp.int32(t)))
  assert math.isfinite(eager)
  assert eager == pytest.approx(traced, rel=1e-6, abs=1e-12)


# ------------------------------------------------------------------ with our optimizers
def _torch_train(opt_name, total, grads, params0):
  p = torch.nn.Parameter(torch.tensor(params0, dtype=torch.float64))
  opt = (torch.optim.SGD([p], lr=0.1, momentum=0.9) if opt_name == "sgd"
         else torch.optim.Adam([p], lr=0.1))
  sched = lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=total, pct_start=0.25,
                                  cycle_momentum=True, base_momentum=0.8, max_momentum=0.95)
  for g in grads:
    p.grad = torch.tensor(np.asarray(g), dtype=torch.float64)
    opt.step()
    sched.step()
  return p.detach().numpy()


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("jit", [False, True])
def test_schedules_drive_our_optimizers_like_torch_one_cycle(opt_name, jit):
  total = 100
  lr = schedules.one_cycle(0.1, total, pct_start=0.25)
  mom = schedules.one_cycle_momentum(total, pct_start=0.25, base_momentum=0.8, max_momentum=0.95)
  tx = momentum.sgd(lr, momentum=mom) if opt_name == "sgd" else adaptive.adam(lr, b1=mom)
  params = jnp.asarray(np.random.default_rng(0).uniform(1.0, 2.0, 16), jnp.float32)
  grads = grad_stream(params, total, seed=3)
  update = jax.jit(tx.update) if jit else tx.update
  state, p = tx.init(params), params
  for g in grads:
    u, state = update(g, state, p)
    p = optax.apply_updates(p, u)
  ref = _torch_train(opt_name, total, grads, np.asarray(params, np.float64))
  np.testing.assert_allclose(np.asarray(p), ref, rtol=1e-5, atol=1e-6)


STEP_ARGS = [  # (factory, kwargs, the step-count argument): 110.0 == 110, 110.5 raises naming it
    (schedules.constant, dict(value=0.1, factor=0.5), "total_steps"),
    (schedules.step_decay, dict(init_value=0.1), "step_size"),
    (schedules.polynomial_decay, dict(init_value=0.1), "total_steps"),
    (schedules.cosine_annealing, dict(init_value=0.1), "t_max"),
    (schedules.cosine_warm_restarts, dict(init_value=0.1), "t_0"),
    (schedules.cyclical, dict(base_lr=0.01, max_lr=0.1), "step_size_up"),
    (schedules.cyclical, dict(base_lr=0.01, max_lr=0.1, step_size_up=7), "step_size_down"),
    (schedules.cyclical_momentum, dict(), "step_size_up"),
    (schedules.one_cycle, dict(max_lr=0.1), "total_steps"),
    (schedules.one_cycle, dict(max_lr=0.1, steps_per_epoch=3), "epochs"),
    (schedules.one_cycle_momentum, dict(epochs=3), "steps_per_epoch"),
    (schedules.warmup, dict(schedule=0.1), "warmup_steps"),
    (schedules.inverse_sqrt, dict(peak_value=0.1), "warmup_steps"),
    (schedules.swa_lr, dict(schedule=0.1, swa_lr=0.05, start_step=50), "anneal_steps"),
    (schedules.swa_lr, dict(schedule=0.1, swa_lr=0.05), "start_step"),
    (schedules.swa_lr, dict(schedule=0.1, swa_lr=0.05), "swa_start"),  # the deprecated name checks the same
]


@pytest.mark.parametrize("factory,kwargs,arg", STEP_ARGS, ids=[f"{f.__name__}-{a}" for f, _, a in STEP_ARGS])
def test_step_counts_take_integral_floats(factory, kwargs, arg):
  if arg == "swa_start":  # swa_lr's deprecated name for start_step: the same check, then the warning
    with pytest.warns(DeprecationWarning, match="start_step"):
      as_int, as_float = factory(**kwargs, **{arg: 110}), factory(**kwargs, **{arg: 110.0})
    assert_rel(values(as_float, 400), values(as_int, 400), rtol=0.0, atol=0.0)
    with pytest.raises(ValueError, match=f"{arg} must be an integer.*got {arg} = 110.5"):
      factory(**kwargs, **{arg: 110.5})
    return
  as_int, as_float = factory(**kwargs, **{arg: 110}), factory(**kwargs, **{arg: 110.0})
  assert_rel(values(as_float, 400), values(as_int, 400), rtol=0.0, atol=0.0)
  with pytest.raises(ValueError, match=f"{arg} must be an integer.*got {arg} = 110.5"):
    factory(**kwargs, **{arg: 110.5})


def test_list_step_counts_take_integral_floats():
  multistep, sequential = schedules.multistep_decay, schedules.sequential
  assert_rel(values(multistep(1.0, [10.0, 30.0]), 50), values(multistep(1.0, [10, 30]), 50), rtol=0.0)
  assert_rel(values(sequential([0.1, 0.2], [7.0]), 20), values(sequential([0.1, 0.2], [7]), 20), rtol=0.0)
  for factory, kwargs in [(multistep, dict(init_value=1.0)), (sequential, dict(schedules=[0.1, 0.2]))]:
    with pytest.raises(ValueError, match="milestones must be an integer.*110.5"):
      factory(**kwargs, milestones=[110.5])


def test_plot_returns_figure():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig = schedules.plot(schedules.one_cycle(0.1, 100), 100, label="OneCycleLR")
  assert isinstance(fig, matplotlib.figure.Figure)
  line = fig.axes[0].lines[0]
  assert_rel(line.get_ydata(), values(schedules.one_cycle(0.1, 100), 100), rtol=1e-6)
  _, ax = plt.subplots()
  assert schedules.plot(optax.linear_schedule(0.0, 1.0, 10), 20, ax=ax, label="optax") is ax.figure
  plt.close("all")
