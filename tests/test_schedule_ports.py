"""The schedules of real recipes (issue #22, and #23's LinearLR / LambdaLR / MultiplicativeLR / ChainedScheduler).

- under ``jax_enable_x64`` every schedule is float64, and a float64 port with a schedule follows
  torch float64 to 1e-12 (float32 values are bit-identical to v0.2's);
- ``per_epoch`` and the recipe's ``schedule.steps_per_epoch`` against torch stepping once per epoch;
- timm's ``CosineLRScheduler._get_lr`` and big_vision's ``create_learning_rate_schedule``, written
  out below from their sources, against ``warmup(shift=...)``, ``cosine_*(k_decay, cycle_decay,
  cycle_limit, t_mult)``, ``inverse_sqrt(timescale)``, ``polynomial_decay(end_value)``, ``multiply``;
- ``linear``, ``lambda_lr``, ``multiplicative``, ``multiply`` against torch 2.13's schedulers.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import run_scan
from jaxopt_practices import momentum, recipe, schedules

torch = pytest.importorskip("torch")
lr_scheduler = torch.optim.lr_scheduler


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield
  assert jnp.result_type(float) == jnp.float32  # the config is restored


def values(sched, n):
  return np.asarray(jax.jit(jax.vmap(sched))(jnp.arange(n, dtype=jnp.int32)), np.float64)


def torch_lrs(make, n, lr, steps_per_epoch=1):
  """The lr torch uses in each of ``n`` optimizer steps, ``scheduler.step()`` after every ``steps_per_epoch``."""
  p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
  opt = torch.optim.SGD([p], lr=lr)
  sched, out = make(opt), []
  for i in range(n):
    out.append(opt.param_groups[0]["lr"])
    opt.step()
    if (i + 1) % steps_per_epoch == 0:
      sched.step()
  return np.asarray(out)


# ------------------------------------------------------------------ reference formulas, written out
def timm_cosine_lr(t, base, t_initial, lr_min=0.0, cycle_mul=1.0, cycle_decay=1.0, cycle_limit=1, warmup_t=0,
                   warmup_lr_init=0.0, warmup_prefix=False, k_decay=1.0):
  """timm ``timm/scheduler/cosine_lr.py`` ``CosineLRScheduler._get_lr(t)`` (huggingface/pytorch-image-models)."""
  if t < warmup_t:
    return warmup_lr_init + t * (base - warmup_lr_init) / warmup_t
  if warmup_prefix:
    t = t - warmup_t
  if cycle_mul != 1:
    i = math.floor(math.log(1 - t / t_initial * (1 - cycle_mul), cycle_mul))
    t_i = cycle_mul**i * t_initial
    t_curr = t - (1 - cycle_mul**i) / (1 - cycle_mul) * t_initial
  else:
    i = t // t_initial
    t_i = t_initial
    t_curr = t - (t_initial * i)
  lr_max = base * cycle_decay**i
  if i < cycle_limit:
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * t_curr**k_decay / t_i**k_decay))
  return lr_min


def big_vision_lr(step, total_steps, base, decay_type, warmup_steps=0, cooldown_steps=0, **kw):
  """big_vision ``big_vision/utils.py`` ``create_learning_rate_schedule``'s ``step_fn`` (google-research/big_vision)."""
  lr = base
  progress = min(max((step - warmup_steps) / float(total_steps - warmup_steps), 0.0), 1.0)
  if decay_type in ("linear", "polynomial"):
    zero = kw.get("end", kw.get("linear_end", 0))
    lr = zero + (lr - zero) * (1.0 - progress) ** kw.get("power", 1)
  elif decay_type == "cosine":
    lr = lr * 0.5 * (1.0 + math.cos(math.pi * progress))
  elif decay_type == "rsqrt":
    timescale = kw.get("timescale", 10_000)
    shift = timescale - warmup_steps
    lr = lr / math.sqrt((step + shift) / timescale) if warmup_steps < step else lr
  elif decay_type == "stair":
    i = int(np.searchsorted(np.array(kw.get("steps", [])), step + 1))
    lr = lr * ([1.0] + list(kw.get("mults", [])))[i]
  if warmup_steps:
    lr = lr * min(1.0, step / warmup_steps)
  if cooldown_steps:
    lr = lr * min(1.0, (total_steps - step) / cooldown_steps)
  return lr


# ------------------------------------------------------------------ float64 under x64, float32 unchanged
SCHEDULES = {
    "constant": lambda: schedules.constant(0.1, 0.5, 3),
    "step": lambda: schedules.step_decay(0.1, 3, 0.5),
    "multistep": lambda: schedules.multistep_decay(0.1, [3, 7]),
    "exponential": lambda: schedules.exponential_decay(0.1, 0.9),
    "polynomial_end": lambda: schedules.polynomial_decay(0.1, 20, 2.0, end_value=0.01),
    "cosine_k": lambda: schedules.cosine_annealing(0.1, 20, 0.001, k_decay=2.0),
    "sgdr_timm": lambda: schedules.cosine_warm_restarts(0.1, 5, 1.5, 0.001, 0.5, 0.7, 4),
    "sgdr_int": lambda: schedules.cosine_warm_restarts(0.1, 5, 2),
    "cyclical": lambda: schedules.cyclical(0.01, 0.1, 4, mode="exp_range", gamma=0.99),
    "cyclical_momentum": lambda: schedules.cyclical_momentum(0.8, 0.9, 4),
    "one_cycle": lambda: schedules.one_cycle(0.1, 30, three_phase=True),
    "one_cycle_momentum": lambda: schedules.one_cycle_momentum(30),
    "warmup_noshift": lambda: schedules.warmup(schedules.cosine_annealing(0.1, 20), 5, 0.01, shift=False),
    "sequential": lambda: schedules.sequential([0.01, schedules.cosine_annealing(0.1, 20)], [5]),
    "inverse_sqrt_timescale": lambda: schedules.inverse_sqrt(0.1, 5, timescale=7),
    "swa_lr": lambda: schedules.swa_lr(schedules.cosine_annealing(0.1, 20), 0.05, 10, 3),
    "per_epoch": lambda: schedules.per_epoch(schedules.cosine_annealing(0.1, 5), 4),
    "multiply": lambda: schedules.multiply(schedules.linear(0.1),
                                           lambda t: jnp.minimum(1.0, (30 - t).astype(float) / 10), 0.5),
    "linear": lambda: schedules.linear(0.1, 0.25, 1.0, 8),
    "lambda_lr": lambda: schedules.lambda_lr(0.1, lambda t: 0.95**t.astype(float)),
    "multiplicative": lambda: schedules.multiplicative(0.1, lambda e: 0.9, 10),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedules_are_float64_under_x64_and_float32_otherwise(name):
  sched = SCHEDULES[name]()
  with jax.enable_x64(True):
    assert sched(3).dtype == jnp.float64 and jax.jit(sched)(jnp.int32(3)).dtype == jnp.float64
    wide = values(sched, 40)
    assert jax.vmap(sched)(jnp.arange(4)).dtype == jnp.float64
  assert sched(3).dtype == jnp.float32 and jax.jit(sched)(jnp.int32(3)).dtype == jnp.float32
  narrow = values(sched, 40)
  np.testing.assert_allclose(narrow, wide, rtol=2e-6, atol=1e-9)  # the same function, rounded to float32


# v0.2's float32 values (commit 83a64cb), as bit patterns: the float32 path is unchanged.
V02_FLOAT32 = [
    (lambda: schedules.cosine_annealing(0.1, 1000), [1, 333, 999], [0x3dccccab, 0x3d99b15d, 0x348477ae]),
    (lambda: schedules.one_cycle(0.1, 1000), [0, 299, 700], [0x3b831270, 0x3dcccccd, 0x3d1e5546]),
    (lambda: schedules.warmup(schedules.cosine_annealing(0.1, 90), 10, 0.05), [3, 10, 57],
     [0x3d851eb9, 0x3dcccccd, 0x3d3e8390]),
    (lambda: schedules.cosine_warm_restarts(0.1, 5, 2, 1e-4), [7, 100, 999], [0x3db9434e, 0x3d9f55fd, 0x3d21287f]),
    (lambda: schedules.cosine_warm_restarts(0.1, 5, 2.0, 1e-4), [7, 100, 999], [0x3db9434e, 0x3d9f55fd, 0x3d21287f]),
    (lambda: schedules.polynomial_decay(1.0, 333, 2.5), [1, 200], [0x3f7e1519, 0x3dce774a]),
    (lambda: schedules.inverse_sqrt(0.1, 40), [3, 40, 1000], [0x3bf5c290, 0x3dcccccd, 0x3ca3d70a]),
    (lambda: schedules.exponential_decay(0.1, 0.99), [500], [0x3a2c3dc4]),
    (lambda: schedules.cyclical(0.001, 0.1, 13, 7, "triangular2"), [5, 50], [0x3d200f1f, 0x3ca427b3]),
]


@pytest.mark.parametrize("make,counts,bits", V02_FLOAT32)
def test_float32_values_are_bit_identical_to_v02(make, counts, bits):
  got = np.asarray(jax.jit(jax.vmap(make()))(jnp.asarray(counts, jnp.int32)))
  assert got.dtype == np.float32
  assert [int(b) for b in got.view(np.uint32)] == bits


def test_float64_values_are_float64_accurate(x64):
  t = np.arange(0, 1001, 37)
  cos = values(schedules.cosine_annealing(0.1, 1000, 1e-4), 1001)[t]
  np.testing.assert_allclose(cos, 1e-4 + (0.1 - 1e-4) * 0.5 * (1 + np.cos(np.pi * t / 1000)), rtol=1e-13, atol=0)
  inv = values(schedules.inverse_sqrt(0.1, 40), 1001)[t[2:]]
  np.testing.assert_allclose(inv, 0.1 * np.sqrt(40 / t[2:]), rtol=1e-15)


def _sgd_run(lr, mom, p0, grads):
  return run_scan(momentum.sgd(lr, momentum=mom), p0, grads)


def _torch_sgd(make, p0, grads, momentum_cycle=False):
  params = [torch.nn.Parameter(torch.tensor(p.copy())) for p in p0]
  opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
  sched = make(opt)
  for g in grads:
    for p, gi in zip(params, g):
      p.grad = torch.tensor(gi)
    opt.step()
    sched.step()
  return [p.detach().numpy() for p in params]


PORTS = {  # ours (lr, momentum) for a 120-step run, torch's scheduler
    "warmup_cosine": (lambda: (schedules.warmup(schedules.cosine_annealing(0.1, 110), 10, 0.01), 0.9),
                      lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.1, 1.0, 10),
                                                              lr_scheduler.CosineAnnealingLR(o, 110)], [10])),
    "one_cycle": (lambda: (schedules.one_cycle(0.1, 121), schedules.one_cycle_momentum(121)),
                  lambda o: lr_scheduler.OneCycleLR(o, 0.1, 121)),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # SequentialLR's deprecation notice
@pytest.mark.parametrize("name", list(PORTS))
def test_float64_port_with_a_schedule_follows_torch_float64(x64, name):
  rng = np.random.default_rng(5)
  p0 = [rng.standard_normal((4, 3)), rng.standard_normal(5)]
  grads = [[rng.standard_normal(p.shape) * rng.uniform(0.1, 2.0) for p in p0] for _ in range(120)]
  ours_fn, theirs = PORTS[name]
  lr, mom = ours_fn()
  ours, ref = _sgd_run(lr, mom, p0, grads), _torch_sgd(theirs, p0, grads)
  assert all(o.dtype == np.float64 for o in ours)
  err = max(np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in zip(ours, ref))
  assert err <= 1e-12
  # The check can fail: the same run with the lr rounded to float32 (v0.2's schedules) misses it.
  f32 = _sgd_run(lambda c: lr(c).astype(jnp.float32), mom, p0, grads)
  assert max(np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in zip(f32, ref)) > 1e-10


def test_scale_by_learning_rate_applies_the_float64_lr(x64):
  sched = schedules.cosine_annealing(0.1, 7)
  tx = schedules.scale_by_learning_rate(sched)
  state = tx.init(jnp.zeros(2))
  for t in range(3):
    u, state = tx.update({"f64": jnp.ones(2, jnp.float64), "f32": jnp.ones(2, jnp.float32)}, state)
    assert u["f64"].dtype == jnp.float64 and float(u["f64"][0]) == -float(sched(t))  # no float32 rounding
    assert u["f32"].dtype == jnp.float32 and float(u["f32"][0]) == float(np.float32(-float(sched(t))))
    assert float(sched(t)) != float(np.float32(sched(t)))  # so the float64 check above can fail


# ------------------------------------------------------------------ per epoch ≙ scheduler.step() once per epoch
PER_EPOCH = {  # ours, torch's scheduler, steps per epoch, epochs
    "cosine": (lambda: schedules.per_epoch(schedules.cosine_annealing(0.1, 6), 5),
               lambda o: lr_scheduler.CosineAnnealingLR(o, 6), 5, 7),
    "multistep": (lambda: schedules.per_epoch(schedules.multistep_decay(0.1, [2, 4], 0.1), 7.0),
                  lambda o: lr_scheduler.MultiStepLR(o, [2, 4], 0.1), 7, 6),
    "torchvision_warmup_cosine": (
        lambda: schedules.per_epoch(schedules.warmup(schedules.cosine_annealing(0.1, 8), 2, 0.001), 6),
        lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.01, 1.0, 2),
                                                lr_scheduler.CosineAnnealingLR(o, 8)], [2]), 6, 10),
}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("wide", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(PER_EPOCH))
def test_per_epoch_matches_torch_stepped_once_per_epoch(name, wide):
  ours, theirs, spe, epochs = PER_EPOCH[name]
  ref = torch_lrs(theirs, spe * epochs, 0.1, steps_per_epoch=spe)
  with jax.enable_x64(wide):
    np.testing.assert_allclose(values(ours(), spe * epochs), ref, rtol=1e-12 if wide else 1e-6, atol=1e-15)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_recipe_schedule_steps_per_epoch_is_torchvisions_loop(x64):
  """torchvision's references: SGD, LinearLR warmup + CosineAnnealingLR, scheduler.step() per epoch."""
  spe, epochs = 4, 9
  tx = recipe.build({"optimizer": {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9},
                     "schedule": {"name": "cosine_annealing", "t_max": 7, "steps_per_epoch": spe},
                     "warmup": {"steps": 2, "start_value": 0.001}})
  rng = np.random.default_rng(2)
  p0 = [rng.standard_normal((3, 2)), rng.standard_normal(4)]
  grads = [[rng.standard_normal(p.shape) for p in p0] for _ in range(spe * epochs)]
  ours = run_scan(tx, p0, grads)
  params = [torch.nn.Parameter(torch.tensor(p.copy())) for p in p0]
  opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
  sched = lr_scheduler.SequentialLR(opt, [lr_scheduler.LinearLR(opt, 0.01, 1.0, 2),
                                          lr_scheduler.CosineAnnealingLR(opt, 7)], [2])
  for epoch in range(epochs):
    for g in grads[epoch * spe:(epoch + 1) * spe]:
      for p, gi in zip(params, g):
        p.grad = torch.tensor(gi)
      opt.step()
    sched.step()
  for a, b in zip(ours, params):
    np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-12, atol=1e-14)
  with pytest.raises(ValueError, match="steps_per_epoch"):
    recipe.build({"schedule": {"name": "cosine_annealing", "t_max": 7, "steps_per_epoch": 0}})


# ------------------------------------------------------------------ timm's CosineLRScheduler
TIMM = {  # timm's kwargs (base lr 0.1), ours, counts
    "k_decay_warmup_no_prefix": (
        dict(t_initial=50, lr_min=1e-3, warmup_t=5, warmup_lr_init=1e-4, k_decay=2.0),
        lambda: schedules.warmup(schedules.cosine_annealing(0.1, 50, 1e-3, k_decay=2.0), 5, 1e-4, shift=False), 80),
    "cycle_mul_1.5_decay_limit_prefix": (
        dict(t_initial=10, lr_min=1e-3, cycle_mul=1.5, cycle_decay=0.5, cycle_limit=4, warmup_t=3, warmup_prefix=True),
        lambda: schedules.warmup(schedules.cosine_warm_restarts(0.1, 10, 1.5, 1e-3, cycle_decay=0.5, cycle_limit=4),
                                 3, shift=True), 130),
    "cycle_mul_2.0_k_decay_limit": (
        dict(t_initial=7, cycle_mul=2.0, k_decay=0.5, cycle_limit=3),
        lambda: schedules.cosine_warm_restarts(0.1, 7, 2.0, k_decay=0.5, cycle_limit=3), 70),
    "cycle_decay_warmup": (
        dict(t_initial=9, lr_min=1e-4, cycle_decay=0.8, cycle_limit=5, warmup_t=4, warmup_lr_init=1e-3),
        lambda: schedules.warmup(schedules.cosine_warm_restarts(0.1, 9, 1, 1e-4, cycle_decay=0.8, cycle_limit=5),
                                 4, 1e-3, shift=False), 60),
    "cycle_mul_1.3_unlimited": (
        dict(t_initial=6, cycle_mul=1.3, k_decay=1.5, cycle_limit=10**9),
        lambda: schedules.cosine_warm_restarts(0.1, 6, 1.3, k_decay=1.5), 200),
}


@pytest.mark.parametrize("wide", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(TIMM))
def test_timm_cosine_lr_scheduler_formula(name, wide):
  kw, ours, n = TIMM[name]
  ref = np.asarray([timm_cosine_lr(t, 0.1, **kw) for t in range(n)])
  with jax.enable_x64(wide):
    np.testing.assert_allclose(values(ours(), n), ref, rtol=1e-12 if wide else 2e-6, atol=1e-15 if wide else 1e-9)


def test_timm_t_in_epochs_is_per_epoch(x64):
  kw = dict(t_initial=12, lr_min=1e-4, warmup_t=2, warmup_lr_init=1e-3, k_decay=1.5)
  sched = schedules.per_epoch(schedules.warmup(schedules.cosine_annealing(0.1, 12, 1e-4, k_decay=1.5), 2, 1e-3,
                                               shift=False), 25)
  ref = [timm_cosine_lr(t // 25, 0.1, **kw) for t in range(400)]  # lr_scheduler.step(epoch + 1) after each epoch
  np.testing.assert_allclose(values(sched, 400), ref, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------ big_vision's create_learning_rate_schedule
BIG_VISION = {  # big_vision's config (total_steps=100, base=0.1), ours
    "rsqrt_timescale": (dict(decay_type="rsqrt", warmup_steps=10, timescale=25),
                        lambda: schedules.inverse_sqrt(0.1, 10, timescale=25)),
    "rsqrt_no_warmup": (dict(decay_type="rsqrt", timescale=30), lambda: schedules.inverse_sqrt(0.1, 0, timescale=30.0)),
    "linear_end": (dict(decay_type="linear", warmup_steps=10, linear_end=0.01),
                   lambda: schedules.warmup(schedules.polynomial_decay(0.1, 90, end_value=0.01), 10)),
    "polynomial_end": (dict(decay_type="polynomial", power=2.0, end=0.02),
                       lambda: schedules.polynomial_decay(0.1, 100, 2.0, 0.02)),
    "cosine_cooldown": (dict(decay_type="cosine", warmup_steps=10, cooldown_steps=20),
                        lambda: schedules.multiply(schedules.warmup(schedules.cosine_annealing(0.1, 90), 10),
                                                   lambda t: jnp.minimum(1.0, (100 - t).astype(float) / 20))),
    "stair_warmup": (dict(decay_type="stair", warmup_steps=10, steps=[30, 60], mults=[0.1, 0.01]),
                     lambda: schedules.warmup(schedules.multistep_decay(0.1, [30, 60], 0.1), 10, shift=False)),
}


@pytest.mark.parametrize("wide", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(BIG_VISION))
def test_big_vision_schedule_formula(name, wide):
  kw, ours = BIG_VISION[name]
  ref = np.asarray([big_vision_lr(t, 100, 0.1, **kw) for t in range(100)])
  with jax.enable_x64(wide):
    np.testing.assert_allclose(values(ours(), 100), ref, rtol=1e-12 if wide else 2e-6, atol=1e-15 if wide else 1e-9)


# ----------------------------------------------------- LinearLR, LambdaLR, MultiplicativeLR, ChainedScheduler
TORCH_NEW = {  # ours, torch's scheduler, lr, steps
    "linear_defaults": (lambda: schedules.linear(0.1), lambda o: lr_scheduler.LinearLR(o), 0.1, 20),
    "linear_up": (lambda: schedules.linear(0.5, 0.25, 0.75, 30), lambda o: lr_scheduler.LinearLR(o, 0.25, 0.75, 30),
                  0.5, 50),
    "linear_down": (lambda: schedules.linear(0.2, 1.0, 0.1, 40.0), lambda o: lr_scheduler.LinearLR(o, 1.0, 0.1, 40),
                    0.2, 60),
    "lambda_exp": (lambda: schedules.lambda_lr(0.1, lambda t: 0.95 ** t.astype(float)),
                   lambda o: lr_scheduler.LambdaLR(o, lambda e: 0.95**e), 0.1, 200),
    "lambda_stair": (lambda: schedules.lambda_lr(0.3, lambda t: 0.5 ** (t // 7).astype(float)),
                     lambda o: lr_scheduler.LambdaLR(o, lambda e: 0.5 ** (e // 7)), 0.3, 60),
    "multiplicative": (lambda: schedules.multiplicative(0.1, lambda e: 0.95 if e % 3 else 1.02, 80),
                       lambda o: lr_scheduler.MultiplicativeLR(o, lambda e: 0.95 if e % 3 else 1.02), 0.1, 81),
    "chained_constant_exponential": (
        lambda: schedules.multiply(schedules.constant(1.0, 0.1, 2), schedules.exponential_decay(0.1, 0.9)),
        lambda o: lr_scheduler.ChainedScheduler([lr_scheduler.ConstantLR(o, 0.1, 2),
                                                 lr_scheduler.ExponentialLR(o, 0.9)]),
        0.1, 50),
    "chained_linear_step": (
        lambda: schedules.multiply(schedules.linear(1.0, 0.5, 1.0, 10), schedules.step_decay(0.2, 7, 0.5)),
        lambda o: lr_scheduler.ChainedScheduler([lr_scheduler.LinearLR(o, 0.5, 1.0, 10),
                                                 lr_scheduler.StepLR(o, 7, 0.5)]),
        0.2, 60),
}


@pytest.mark.parametrize("wide", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(TORCH_NEW))
def test_torch_factor_schedulers(name, wide):
  ours, theirs, lr, n = TORCH_NEW[name]
  ref = torch_lrs(theirs, n, lr)
  with jax.enable_x64(wide):
    np.testing.assert_allclose(values(ours(), n), ref, rtol=1e-12 if wide else 2e-6, atol=1e-15 if wide else 1e-9)


def test_multiplicative_calls_fn_on_the_host_once_per_epoch_then_holds():
  calls = []
  sched = schedules.multiplicative(1.0, lambda e: calls.append(e) or 0.5, total_steps=4)
  assert calls == [1, 2, 3, 4]
  np.testing.assert_array_equal(values(sched, 8), [1.0, 0.5, 0.25, 0.125, 0.0625, 0.0625, 0.0625, 0.0625])
  assert calls == [1, 2, 3, 4]  # evaluating the schedule calls nothing


# ------------------------------------------------------------------ jit, retrace, pmap, inject_hyperparams, step counts
NEW = ["polynomial_end", "cosine_k", "sgdr_timm", "warmup_noshift", "inverse_sqrt_timescale", "per_epoch", "multiply",
       "linear", "lambda_lr", "multiplicative"]


@pytest.mark.parametrize("name", NEW)
def test_new_schedules_jit_no_retrace_pmap_counts(name):
  sched = SCHEDULES[name]()
  chex.clear_trace_counter()
  jitted = jax.jit(chex.assert_max_traces(n=1)(sched))
  for t in [0, 1, 5, 17, 33, 2**24 + 1, 2**31 - 1]:
    assert float(jitted(jnp.int32(t))) == pytest.approx(float(sched(t)), rel=1e-6, abs=1e-12)
  assert float(jitted(jnp.int32(-3))) == float(sched(0))  # a traced negative count clamps
  with pytest.raises(ValueError, match="count"):
    sched(-1)
  n = jax.local_device_count()
  np.testing.assert_allclose(np.asarray(jax.pmap(sched)(jnp.arange(n, dtype=jnp.int32))),
                             np.asarray(jax.vmap(sched)(jnp.arange(n, dtype=jnp.int32))), rtol=1e-6)


@pytest.mark.parametrize("name", NEW)
def test_new_schedules_in_inject_hyperparams(name):
  sched = SCHEDULES[name]()
  tx = optax.inject_hyperparams(momentum.sgd)(learning_rate=sched)
  params = jnp.ones(3)
  state, update = tx.init(params), jax.jit(tx.update)
  for t in range(4):
    u, state = update(jnp.ones(3), state, params)
    np.testing.assert_allclose(np.asarray(state.hyperparams["learning_rate"]), float(sched(t)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(u), -float(sched(t)), rtol=1e-6)


STEP_ARGS = [  # new step-count arguments: 110.0 == 110, 110.5 raises naming it
    (schedules.per_epoch, dict(schedule=schedules.cosine_annealing(0.1, 5)), "steps_per_epoch"),
    (schedules.linear, dict(value=0.1), "total_steps"),
    (schedules.multiplicative, dict(value=0.1, fn=lambda e: 0.99), "total_steps"),
    (schedules.inverse_sqrt, dict(peak_value=0.1, warmup_steps=10), "timescale"),
    (schedules.cosine_warm_restarts, dict(init_value=0.1, t_0=3, t_mult=1.5), "cycle_limit"),
]


@pytest.mark.parametrize("factory,kwargs,arg", STEP_ARGS, ids=[f"{f.__name__}-{a}" for f, _, a in STEP_ARGS])
def test_new_step_counts_take_integral_floats(factory, kwargs, arg):
  as_int, as_float = factory(**kwargs, **{arg: 110}), factory(**kwargs, **{arg: 110.0})
  np.testing.assert_array_equal(values(as_float, 400), values(as_int, 400))
  with pytest.raises(ValueError, match=f"{arg} must be an integer.*got {arg} = 110.5"):
    factory(**kwargs, **{arg: 110.5})


def test_t_mult_is_a_multiplier():
  with pytest.raises(ValueError, match="t_mult must be a cycle-length multiplier >= 1.*got t_mult = 0.9"):
    schedules.cosine_warm_restarts(0.1, 5, 0.9)
  sched = schedules.cosine_warm_restarts(1.0, 4, 1.5)  # cycles start at 0, 4, 10, 19, 32.5
  assert [float(sched(t)) for t in (0, 4, 10, 19)] == [1.0, 1.0, 1.0, 1.0]
  assert float(sched(33)) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5 / 20.25)), rel=1e-6)


@pytest.mark.parametrize("name", NEW)
def test_new_schedules_are_shaped_like_count(name):
  sched = SCHEDULES[name]()
  assert sched(3).shape == () and sched(jnp.zeros((2, 3), jnp.int32)).shape == (2, 3)


def test_constant_callables_are_shaped_like_count():
  count = jnp.zeros((2, 3), jnp.int32)
  assert schedules.lambda_lr(0.1, lambda t: 1.0)(count).shape == (2, 3)
  assert schedules.multiply(lambda t: 0.5, lambda t: 2.0)(count).shape == (2, 3)
  np.testing.assert_array_equal(np.asarray(schedules.multiply(lambda t: 0.5, 0.2)(count)),
                                np.full((2, 3), 0.1, np.float32))
