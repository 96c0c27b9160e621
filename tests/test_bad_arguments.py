"""The one table of bad inputs: every public factory raises ``ValueError`` naming the argument.

API.md: "Every bad argument raises ``ValueError`` at construction time, naming the argument, the
value and the allowed range. Nothing is silently clamped." Each row of :data:`BAD` calls one
public callable with one bad input and expects a ``ValueError`` whose message matches ``match``
(the argument's name, or for config sections the key path). Where the row's bad value is a
plain scalar given by name, the message must also show that value.

:func:`test_every_public_factory_has_a_row` walks every public module of the package and fails
when a public function has neither a row here nor a reasoned entry in :data:`NO_ARGUMENTS`.

Rows that fail on today's code are ``xfail(strict=True)`` with the issue that fixes them: they
turn into failures the moment the fix lands, so the mark must then be removed.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

import jaxopt_practices as package
from helpers import TinyMLP, linen_mlp, nnx_mlp
from jaxopt_practices import (adaptive, clipping, flat, groups, initializers as I, lr_finder, momentum, monitor,
                              parallel,
                              plateau, recipe, regularization, schedules)
from jaxopt_practices import training


class Row(NamedTuple):
  """One bad input.

  Attributes:
    factory: the public callable under test (what the completeness check counts).
    kwargs: its keyword arguments, or a thunk returning them (arrays, models and meshes are
      built when the row runs, not at collection).
    match: a regex the ``ValueError`` message must contain: the argument's name.
    args: positional arguments, or a thunk returning them.
    then: called on the factory's result when the error comes from using it (an initializer
      called with a bad shape, an ``update`` without params, a method of the result).
  """
  factory: Callable[..., Any]
  kwargs: dict[str, Any] | Callable[[], dict[str, Any]]
  match: str
  args: tuple | Callable[[], tuple] = ()
  then: Callable[[Any], Any] | None = None


def xfail(reason: str, *row: Any):
  """A row that fails on today's code; strict, so it fails once the product is fixed."""
  return pytest.param(Row(*row), marks=pytest.mark.xfail(strict=True, reason=reason))


_KEY = lambda: jax.random.key(0)  # noqa: E731
_SGD = optax.sgd(0.1)
_quadratic = lambda p, b: jnp.sum(jnp.square(p))  # noqa: E731


def _layout():
  return flat.flatten({"w": jnp.zeros(2)})[1]


def _mesh():
  return parallel.make_mesh(("data",))


def _lr_test(**override):
  """Thunk: good ``lr_range_test`` arguments with ``override`` applied."""
  return lambda: {"loss_fn": _quadratic, "params": jnp.zeros(2), "batches": [0.0], "make_optimizer": optax.sgd,
                  "num_steps": 5, "progress": False, **override}


def _lsuv(**override):
  def kwargs():
    apply_fn, params, x = linen_mlp()
    return {"apply_fn": apply_fn, "params": params, "batch": x, **override}
  return kwargs


def _lsuv_nnx(**override):
  def kwargs():
    model, x = nnx_mlp()
    return {"model": model, "batch": x, **override}
  return kwargs


def _jitted_apply_fn():
  kwargs = _lsuv()()
  return {**kwargs, "apply_fn": jax.jit(kwargs["apply_fn"])}


def _init_call(*call_args):
  """``then``: call the initializer a factory returned with ``(key, *call_args)``."""
  return lambda init: init(_KEY(), *call_args)


def _sgd_recipe(**sections):
  return {"optimizer": {"name": "sgd", "learning_rate": 0.1}, **sections}


# ------------------------------------------------------------------------------ schedules
SCHEDULES = [
    Row(schedules.constant, dict(value=-1.0), "value"),
    Row(schedules.constant, dict(value=float("nan")), "value"),
    Row(schedules.step_decay, dict(init_value=0.1, step_size=0), "step_size"),
    Row(schedules.step_decay, dict(init_value=0.1, step_size=2.5), "step_size"),
    Row(schedules.multistep_decay, dict(init_value=0.1, milestones=[]), "milestones"),
    Row(schedules.multistep_decay, dict(init_value=0.1, milestones=[0, 3]), "milestones"),
    Row(schedules.multistep_decay, dict(init_value=0.1, milestones=5), "milestones"),
    Row(schedules.multistep_decay, dict(init_value=0.1, milestones=[3], gamma=-0.1), "gamma"),
    Row(schedules.exponential_decay, dict(init_value=-0.1, gamma=0.9), "init_value"),
    Row(schedules.polynomial_decay, dict(init_value=0.1, total_steps=0), "total_steps"),
    Row(schedules.polynomial_decay, dict(init_value=0.1, total_steps=5, power=-1.0), "power"),
    Row(schedules.cosine_annealing, dict(init_value=0.1, t_max=0), "t_max"),
    Row(schedules.cosine_annealing, dict(init_value=0.1, t_max=10, eta_min=-1.0), "eta_min"),
    Row(schedules.cosine_warm_restarts, dict(init_value=0.1, t_0=0), "t_0"),
    Row(schedules.cosine_warm_restarts, dict(init_value=0.1, t_0=5, t_mult=0), "t_mult"),
    Row(schedules.cosine_warm_restarts, dict(init_value=0.1, t_0=5, t_mult=0.5),
        "t_mult must be a cycle-length multiplier"),
    Row(schedules.cosine_warm_restarts, dict(init_value=0.1, t_0=5, t_mult=float("inf")), "t_mult"),
    Row(schedules.cosine_warm_restarts, dict(init_value=0.1, t_0=1, t_mult=1.000001), "t_mult"),
    Row(schedules.cosine_warm_restarts, dict(init_value=0.1, t_0=5, k_decay=0.0), "k_decay"),
    Row(schedules.cosine_warm_restarts, dict(init_value=0.1, t_0=5, cycle_decay=-0.5), "cycle_decay"),
    Row(schedules.cosine_warm_restarts, dict(init_value=0.1, t_0=5, cycle_limit=0), "cycle_limit"),
    Row(schedules.cosine_warm_restarts, dict(init_value=0.1, t_0=5, cycle_limit=2.5), "cycle_limit"),
    Row(schedules.cosine_annealing, dict(init_value=0.1, t_max=10, k_decay=-1.0), "k_decay"),
    Row(schedules.polynomial_decay, dict(init_value=0.1, total_steps=5, end_value=-0.1), "end_value"),
    Row(schedules.inverse_sqrt, dict(peak_value=1.0, warmup_steps=10, timescale=0), "timescale"),
    Row(schedules.inverse_sqrt, dict(peak_value=1.0, warmup_steps=10, timescale=100.5), "timescale"),
    Row(schedules.warmup, dict(schedule=0.1, warmup_steps=3, shift="no"), "shift"),
    Row(schedules.per_epoch, dict(schedule=0.1, steps_per_epoch=0), "steps_per_epoch"),
    Row(schedules.per_epoch, dict(schedule=0.1, steps_per_epoch=9.5), "steps_per_epoch"),
    Row(schedules.per_epoch, dict(schedule=-0.1, steps_per_epoch=10), "schedule"),
    Row(schedules.multiply, dict(), "factor"),
    Row(schedules.multiply, dict(), "factors", args=(0.1, -1.0)),
    Row(schedules.multiply, dict(), "factors", args=(0.1, "cos")),
    Row(schedules.linear, dict(value=-0.1), "value"),
    Row(schedules.linear, dict(value=0.1, start_factor=0.0), "start_factor"),
    Row(schedules.linear, dict(value=0.1, start_factor=1.5), "start_factor"),
    Row(schedules.linear, dict(value=0.1, end_factor=1.5), "end_factor"),
    Row(schedules.linear, dict(value=0.1, total_steps=0), "total_steps"),
    Row(schedules.linear, dict(value=0.1, total_steps=4.5), "total_steps"),
    Row(schedules.lambda_lr, dict(value=-0.1, fn=lambda t: 1.0), "value"),
    Row(schedules.lambda_lr, dict(value=0.1, fn=0.5), "fn"),
    Row(schedules.multiplicative, dict(value=0.1, fn=lambda e: 0.9, total_steps=-1), "total_steps"),
    Row(schedules.multiplicative, dict(value=0.1, fn=lambda e: 0.9, total_steps=2.5), "total_steps"),
    Row(schedules.multiplicative, dict(value=0.1, fn="0.9", total_steps=5), "fn"),
    Row(schedules.multiplicative, dict(value=0.1, fn=lambda e: -0.9 if e == 3 else 0.9, total_steps=5), r"fn\(3\)"),
    Row(schedules.multiplicative, dict(value=0.1, fn=lambda e: 1e300, total_steps=5), "fn"),
    Row(schedules.cyclical, dict(base_lr=-0.1, max_lr=1.0), "base_lr"),
    Row(schedules.cyclical, dict(base_lr=0.1, max_lr=1.0, step_size_up=0), "step_size_up"),
    Row(schedules.cyclical, dict(base_lr=0.1, max_lr=1.0, step_size_down=-1), "step_size_down"),
    Row(schedules.cyclical, dict(base_lr=0.1, max_lr=1.0, mode="sine"), "mode"),
    Row(schedules.cyclical, dict(base_lr=0.1, max_lr=1.0, mode="exp_range", gamma=0.0), "gamma"),
    Row(schedules.cyclical_momentum, dict(base_momentum=1.0), "base_momentum"),
    Row(schedules.cyclical_momentum, dict(max_momentum=-0.1), "max_momentum"),
    Row(schedules.one_cycle, dict(max_lr=0.1, total_steps=0), "total_steps"),
    Row(schedules.one_cycle, dict(max_lr=0.1, total_steps=10, pct_start=1.5), "pct_start"),
    Row(schedules.one_cycle, dict(max_lr=0.1, total_steps=10, anneal_strategy="exp"), "anneal_strategy"),
    Row(schedules.one_cycle, dict(max_lr=0.1, total_steps=10, div_factor=0.0), "div_factor"),
    Row(schedules.one_cycle, dict(max_lr=0.1, total_steps=10, final_div_factor=-1.0), "final_div_factor"),
    Row(schedules.one_cycle, dict(max_lr=0.1, total_steps=10, three_phase="yes"), "three_phase"),
    Row(schedules.one_cycle_momentum, dict(total_steps=10, max_momentum=1.2), "max_momentum"),
    Row(schedules.one_cycle_momentum, dict(total_steps=-3), "total_steps"),
    Row(schedules.warmup, dict(schedule=0.1, warmup_steps=-1), "warmup_steps"),
    Row(schedules.warmup, dict(schedule=-0.1, warmup_steps=3), "schedule"),
    Row(schedules.warmup, dict(schedule=0.1, warmup_steps=3, start_value=-1.0), "start_value"),
    Row(schedules.plot, dict(schedule=0.1, num_steps=10), "schedule"),
    Row(schedules.plot, dict(schedule=schedules.constant(0.1), num_steps=0), "num_steps"),
    Row(schedules.step_decay, dict(init_value=0.1, step_size=3, gamma=-0.5), "gamma"),
    Row(schedules.step_decay, dict(init_value=0.1, step_size=3, gamma=float("inf")), "gamma"),
    Row(schedules.exponential_decay, dict(init_value=0.1, gamma=float("nan")), "gamma"),
    Row(schedules.constant, dict(value=0.1, factor=1.5), "factor"),
    Row(schedules.constant, dict(value=0.1, factor=-0.1), "factor"),
    Row(schedules.constant, dict(value=0.1, factor=0.5, total_steps=-1), "total_steps"),
    Row(schedules.one_cycle, dict(max_lr=0.1), "total_steps"),
    Row(schedules.one_cycle, dict(max_lr=0.1, epochs=3), "steps_per_epoch"),
    Row(schedules.one_cycle, dict(max_lr=0.1, steps_per_epoch=3), "epochs"),
    Row(schedules.one_cycle, dict(max_lr=0.1, epochs=0, steps_per_epoch=3), "epochs"),
    Row(schedules.one_cycle, dict(max_lr=0.1, epochs=3, steps_per_epoch=2.5), "steps_per_epoch"),
    Row(schedules.one_cycle, dict(max_lr=0.1, total_steps=10, epochs=3, steps_per_epoch=4), "total_steps"),
    Row(schedules.one_cycle, dict(max_lr=0.1, epochs=2**16, steps_per_epoch=2**16), "total_steps"),
    Row(schedules.one_cycle_momentum, dict(), "total_steps"),
    Row(schedules.inverse_sqrt, dict(peak_value=-1.0, warmup_steps=10), "peak_value"),
    Row(schedules.inverse_sqrt, dict(peak_value=1.0, warmup_steps=0), "warmup_steps"),
    Row(schedules.sequential, dict(schedules=[], milestones=[]), "schedules"),
    Row(schedules.sequential, dict(schedules=schedules.constant(0.1), milestones=[]), "schedules"),
    Row(schedules.sequential, dict(schedules=[0.1, -0.2], milestones=[3]), "schedules"),
    Row(schedules.sequential, dict(schedules=[0.1, 0.2], milestones=[]), "milestones"),
    Row(schedules.sequential, dict(schedules=[0.1, 0.2], milestones=3), "milestones"),
    Row(schedules.sequential, dict(schedules=[0.1, 0.2, 0.3], milestones=[5, 5]), "milestones"),
    Row(schedules.sequential, dict(schedules=[0.1, 0.2], milestones=[0]), "milestones"),
    Row(schedules.swa_lr, dict(schedule=0.1, swa_lr=-0.1, start_step=5), "swa_lr"),
    Row(schedules.swa_lr, dict(schedule="cos", swa_lr=0.1, start_step=5), "schedule"),
    Row(schedules.swa_lr, dict(schedule=0.1, swa_lr=0.1, start_step=-1), "start_step"),
    Row(schedules.swa_lr, dict(schedule=0.1, swa_lr=0.1, start_step=110.5), "start_step"),
    Row(schedules.swa_lr, dict(schedule=0.1, swa_lr=0.1), "start_step"),
    Row(schedules.swa_lr, dict(schedule=0.1, swa_lr=0.1, swa_start=-1), "swa_start"),  # deprecated name
    Row(schedules.swa_lr, dict(schedule=0.1, swa_lr=0.1, start_step=5, swa_start=5), "swa_start"),
    Row(schedules.swa_lr, dict(schedule=0.1, swa_lr=0.1, start_step=5, anneal_steps=-1), "anneal_steps"),
    Row(schedules.swa_lr, dict(schedule=0.1, swa_lr=0.1, start_step=5, anneal_strategy="exp"), "anneal_strategy"),
    Row(schedules.scale_by_learning_rate, dict(learning_rate=-1.0), "learning_rate"),
    Row(schedules.scale_by_learning_rate, dict(learning_rate=0.1, lr_decay=-0.1), "lr_decay"),
    Row(schedules.scale_by_learning_rate, dict(learning_rate=0.1, flip_sign=1), "flip_sign"),
    # A complex number is not a number here (a TypeError before issue #14).
    Row(schedules.constant, dict(value=1j), "value"),
    Row(schedules.step_decay, dict(init_value=0.1 + 0j, step_size=3), "init_value"),
    Row(schedules.cosine_annealing, dict(init_value=0.1, t_max=10, eta_min=1j), "eta_min"),
    Row(schedules.one_cycle, dict(max_lr=0.1 + 0.1j, total_steps=10), "max_lr"),
    Row(schedules.scale_by_learning_rate, dict(learning_rate=0.1j), "learning_rate"),
]

# ------------------------------------------------------------------ plateau and lr_finder
PLATEAU = [
    Row(plateau.reduce_on_plateau, dict(factor=1.0), "factor"),
    Row(plateau.reduce_on_plateau, dict(factor=-0.1), "factor"),
    Row(plateau.reduce_on_plateau, dict(patience=-1), "patience"),
    Row(plateau.reduce_on_plateau, dict(patience=1.5), "patience"),
    Row(plateau.reduce_on_plateau, dict(threshold=-1e-3), "threshold"),
    Row(plateau.reduce_on_plateau, dict(threshold=float("nan")), "threshold"),
    Row(plateau.reduce_on_plateau, dict(threshold_mode="relative"), "threshold_mode"),
    Row(plateau.reduce_on_plateau, dict(mode="minimum"), "mode"),
    Row(plateau.reduce_on_plateau, dict(cooldown=-2), "cooldown"),
    Row(plateau.reduce_on_plateau, dict(cooldown=110.5), "cooldown"),
    Row(plateau.reduce_on_plateau, dict(min_scale=-0.1), "min_scale"),
    Row(plateau.reduce_on_plateau, dict(min_scale=1.5), "min_scale"),
    Row(plateau.reduce_on_plateau, dict(accumulation_size=0), "accumulation_size"),
    Row(plateau.reduce_on_plateau, dict(accumulation_size=110.5), "accumulation_size"),
    Row(plateau.reduce_on_plateau, dict(patience=110.5), "patience"),
    Row(plateau.reduce_on_plateau, dict(axis_name=3), "axis_name"),
    Row(plateau.reduce_on_plateau, dict(eps=-1.0), "eps"),
    Row(plateau.reduce_on_plateau, dict(factor=0.5j), "factor"),
    Row(plateau.scale, dict(state="x"), "ReduceOnPlateauState"),
    Row(plateau.step, dict(opt_state="x", value=1.0), "ReduceOnPlateauState"),
    Row(plateau.step, lambda: dict(opt_state=plateau.reduce_on_plateau().init(jnp.zeros(1)), value=jnp.ones(2)),
        "value"),
    Row(plateau.step, lambda: dict(opt_state=plateau.reduce_on_plateau().init(jnp.zeros(1)), value=None), "value"),
    Row(plateau.step, lambda: dict(opt_state=plateau.reduce_on_plateau().init(jnp.zeros(1)), value=1.0,
                                   axis_name=3), "axis_name"),
]

LR_FINDER = [
    Row(lr_finder.lr_range_test, _lr_test(loss_fn=3), "loss_fn"),
    Row(lr_finder.lr_range_test, _lr_test(make_optimizer=None), "make_optimizer"),
    Row(lr_finder.lr_range_test, _lr_test(make_optimizer=lambda lr: lr), "make_optimizer"),
    Row(lr_finder.lr_range_test, _lr_test(batches=5), "batches"),
    Row(lr_finder.lr_range_test, _lr_test(batches=[]), "batches"),
    Row(lr_finder.lr_range_test, _lr_test(params={}), "params"),
    Row(lr_finder.lr_range_test, _lr_test(params=jnp.zeros(2, jnp.int32)), "params"),
    Row(lr_finder.lr_range_test, _lr_test(start_lr=0.0), "start_lr"),
    Row(lr_finder.lr_range_test, _lr_test(valley_tolerance=-1.0), "valley_tolerance"),
    Row(lr_finder.lr_range_test, _lr_test(valley_tolerance=float("nan")), "valley_tolerance"),
    Row(lr_finder.lr_range_test, _lr_test(start_lr=-1.0), "start_lr"),
    Row(lr_finder.lr_range_test, _lr_test(start_lr=1e-7 + 0j), "start_lr"),
    Row(lr_finder.lr_range_test, _lr_test(end_lr=1e-8), "end_lr"),
    Row(lr_finder.lr_range_test, _lr_test(end_lr=float("inf")), "end_lr"),
    Row(lr_finder.lr_range_test, _lr_test(num_steps=1), "num_steps"),
    Row(lr_finder.lr_range_test, _lr_test(num_steps=10.5), "num_steps"),
    Row(lr_finder.lr_range_test, _lr_test(wrt="x"), "wrt"),  # wrt only with an nnx.Module
    Row(lr_finder.lr_range_test, _lr_test(mode="log"), "mode"),
    Row(lr_finder.lr_range_test, _lr_test(smoothing=0.0), "smoothing"),
    Row(lr_finder.lr_range_test, _lr_test(smoothing=1.5), "smoothing"),
    Row(lr_finder.lr_range_test, _lr_test(diverge_threshold=1.0), "diverge_threshold"),
    Row(lr_finder.lr_range_test, _lr_test(progress="yes"), "progress"),
    Row(lr_finder.lr_range_test, _lr_test(suggestion="steepest"), "suggestion"),
    Row(lr_finder.lr_range_test, _lr_test(suggestion=None), "suggestion"),
]

# --------------------------------------------------------------------------- initializers
_INITIALIZER_FACTORIES = [I.normal, I.uniform, I.xavier_uniform, I.xavier_normal, I.he_normal, I.he_uniform,
                          I.lecun_normal, I.lecun_uniform, I.orthogonal]

INITIALIZERS = [
    Row(I.constant, dict(value=float("nan")), "value"),
    Row(I.constant, dict(value="a"), "value"),
    Row(I.normal, dict(stddev=-0.1), "stddev"),
    Row(I.normal, dict(stddev=float("inf")), "stddev"),
    Row(I.normal, dict(mean=float("nan")), "mean"),
    Row(I.normal, dict(stddev=0.01j), "stddev"),
    Row(I.uniform, dict(low=1.0, high=0.0), "high"),
    Row(I.uniform, dict(low=float("-inf")), "low"),
    Row(I.xavier_uniform, dict(gain=-1.0), "gain"),
    Row(I.xavier_normal, dict(gain=True), "gain"),
    Row(I.orthogonal, dict(gain=float("nan")), "gain"),
    Row(I.he_normal, dict(negative_slope="0.1"), "negative_slope"),
    Row(I.he_normal, dict(mode="fan_avg"), "mode"),
    Row(I.he_uniform, dict(nonlinearity="gelu"), "nonlinearity"),
    Row(I.he_uniform, dict(negative_slope=float("inf")), "negative_slope"),
    Row(I.calculate_gain, dict(nonlinearity="swish"), "nonlinearity"),
    Row(I.calculate_gain, dict(nonlinearity="leaky_relu", param=float("nan")), "param"),
    Row(I.compute_fans, dict(shape=(3,)), "shape"),
    Row(I.zeros, dict(shape=(4, -1)), "shape", args=lambda: (_KEY(),)),
    Row(I.ones, dict(shape=(4, 2.5)), "shape", args=lambda: (_KEY(),)),
    # The initializers the factories return: a bad dtype or shape at call time.
    *[Row(f, {}, "dtype", then=_init_call((4, 4), jnp.int32)) for f in _INITIALIZER_FACTORIES],
    *[Row(f, {}, "shape", then=_init_call((4, -1))) for f in _INITIALIZER_FACTORIES],
    *[Row(f, {}, "shape", then=_init_call((4, 2.5))) for f in _INITIALIZER_FACTORIES],
    # LSUV, linen and NNX (the same checks).
    *[Row(f, make(**bad), name) for f, make in ((I.lsuv, _lsuv), (I.lsuv_nnx, _lsuv_nnx)) for bad, name in [
        (dict(target_std=0.0), "target_std"),
        (dict(target_std=float("nan")), "target_std"),
        (dict(tol=0.0), "tol"),
        (dict(max_iters=0), "max_iters"),
        (dict(max_iters=2.5), "max_iters"),
        (dict(orthogonal_init="yes"), "orthogonal_init"),
        (dict(orthogonal_init=True), "key"),
        (dict(orthogonal_init=True, key=0), "key"),
        (dict(key="key"), "key"),
    ]],
    Row(I.lsuv, _lsuv(apply_fn="model"), "apply_fn"),
    Row(I.lsuv, _lsuv(params=[1, 2]), "params"),
    Row(I.lsuv_nnx, dict(model=TinyMLP(), batch=None), "model"),  # a linen module is not an NNX one
    Row(I.lsuv_nnx, _lsuv_nnx(forward=3), "forward"),
    # The one NNX convention (issue #20): the model where the params go, the function that runs it first.
    Row(I.lsuv, lambda: dict(zip(("params", "batch"), nnx_mlp()), apply_fn=3), "apply_fn"),
    Row(I.init_report, lambda: dict(zip(("params", "batch"), nnx_mlp()), apply_fn=3), "apply_fn"),
    Row(I.weight_norm_init, lambda: dict(zip(("params", "batch"), nnx_mlp()), apply_fn=3), "apply_fn"),
    # A jitted apply_fn hides the layer calls (a raw tracer error before issue #14).
    Row(I.lsuv, _jitted_apply_fn, "apply_fn"),
    Row(I.init_report, _jitted_apply_fn, "apply_fn"),
    Row(I.weight_norm_init, _jitted_apply_fn, "apply_fn"),
    Row(I.weight_norm_init, _lsuv(apply_fn="model"), "apply_fn"),
    Row(I.weight_norm_init_nnx, dict(model="model", batch=None), "model"),
    Row(I.init_report, _lsuv(apply_fn="model"), "apply_fn"),
    Row(I.init_report_nnx, dict(model="model", batch=None), "model"),
    Row(I.init_report_nnx, _lsuv_nnx(forward=3), "forward"),
    Row(I.init_report, _lsuv(forward=lambda m, b: m(b)), "forward"),  # forward only with an nnx.Module
    Row(I.init_report, lambda: dict(zip(("apply_fn", "params"), nnx_mlp()), forward=3), "forward"),
    # A checkpoint that does not fit the target (issue #21 item 7).
    Row(training.restore, lambda: dict(target={"w": jnp.zeros(2)}, restored={"v": jnp.zeros(2)}), "no entry"),
    Row(training.restore, lambda: dict(target={"w": jnp.zeros(2)}, restored={"w": jnp.zeros(3)}), "shape"),
]

# ------------------------------------------------------------------ momentum and adaptive
OPTIMIZERS = [
    Row(momentum.sgd, dict(learning_rate=-0.1), "learning_rate"),
    Row(momentum.sgd, dict(learning_rate=float("nan")), "learning_rate"),
    Row(momentum.sgd, dict(learning_rate=float("inf")), "learning_rate"),
    Row(momentum.sgd, dict(learning_rate="0.1"), "learning_rate"),
    Row(momentum.sgd, dict(learning_rate=0.1, momentum=1.0), "momentum"),
    Row(momentum.sgd, dict(learning_rate=0.1, momentum=-0.1), "momentum"),
    Row(momentum.sgd, dict(learning_rate=0.1, momentum=float("nan")), "momentum"),
    Row(momentum.sgd, dict(learning_rate=0.1, momentum=0.9, dampening=1.5), "dampening"),
    Row(momentum.sgd, dict(learning_rate=0.1, momentum=0.9, dampening=-0.5), "dampening"),
    Row(momentum.sgd, dict(learning_rate=0.1, nesterov=True), "nesterov"),
    Row(momentum.sgd, dict(learning_rate=0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    Row(momentum.sgd, dict(learning_rate=0.1, momentum=0.9, nesterov=1), "nesterov"),
    Row(momentum.sgd, dict(learning_rate=0.1, nesterov=None), "nesterov"),
    Row(momentum.sgd, dict(learning_rate=0.1, weight_decay=-1e-4), "weight_decay"),
    Row(momentum.scale_by_momentum, dict(momentum=1.2), "momentum"),
    Row(adaptive.adagrad, dict(learning_rate=-1.0), "learning_rate"),
    Row(adaptive.adagrad, dict(lr_decay=-0.1), "lr_decay"),
    Row(adaptive.adagrad, dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    Row(adaptive.adagrad, dict(eps=-1e-10), "eps"),
    Row(adaptive.adagrad, dict(weight_decay=float("nan")), "weight_decay"),
    Row(adaptive.scale_by_adagrad, dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    Row(adaptive.scale_by_adagrad, dict(eps=float("nan")), "eps"),
    Row(adaptive.rmsprop, dict(alpha=1.0), "alpha"),
    Row(adaptive.rmsprop, dict(alpha=-0.1), "alpha"),
    Row(adaptive.rmsprop, dict(eps=-1.0), "eps"),
    Row(adaptive.rmsprop, dict(momentum=1.0), "momentum"),
    Row(adaptive.rmsprop, dict(weight_decay=-0.1), "weight_decay"),
    Row(adaptive.rmsprop, dict(centered="yes"), "centered"),
    Row(adaptive.scale_by_rmsprop, dict(alpha=1.5), "alpha"),
    Row(adaptive.scale_by_rmsprop, dict(momentum=-0.5), "momentum"),
    Row(adaptive.adam, dict(learning_rate=float("nan")), "learning_rate"),
    Row(adaptive.adam, dict(b1=1.0), "b1"),
    Row(adaptive.adam, dict(b1=-0.1), "b1"),
    Row(adaptive.adam, dict(b2=1.0), "b2"),
    Row(adaptive.adam, dict(b2=1.5), "b2"),
    Row(adaptive.adam, dict(eps=-1e-8), "eps"),
    Row(adaptive.adam, dict(weight_decay=-0.01), "weight_decay"),
    Row(adaptive.adam, dict(amsgrad=None), "amsgrad"),
    Row(adaptive.scale_by_adam, dict(b1=1.0), "b1"),
    Row(adaptive.scale_by_adam, dict(amsgrad="no"), "amsgrad"),
    Row(adaptive.adamw, dict(weight_decay=-0.01), "weight_decay"),
    Row(adaptive.adamw, dict(mask="bias"), "mask"),
    Row(adaptive.adamw, dict(b2=float("inf")), "b2"),
    # issue 23: NAdam, RAdam, Adamax, Adadelta, Rprop
    Row(adaptive.nadam, dict(momentum_decay=-1e-3), "momentum_decay"),
    Row(adaptive.nadam, dict(b1=1.0), "b1"),
    Row(adaptive.nadam, dict(decoupled_weight_decay="yes"), "decoupled_weight_decay"),
    Row(adaptive.nadam, dict(weight_decay=-0.1, decoupled_weight_decay=True), "weight_decay"),
    Row(adaptive.scale_by_nadam, dict(b2=1.0), "b2"),
    Row(adaptive.scale_by_nadam, dict(momentum_decay=float("nan")), "momentum_decay"),
    Row(adaptive.radam, dict(eps=-1e-8), "eps"),
    Row(adaptive.radam, dict(learning_rate=-1e-3, decoupled_weight_decay=True), "learning_rate"),
    Row(adaptive.radam, dict(decoupled_weight_decay=1), "decoupled_weight_decay"),
    Row(adaptive.scale_by_radam, dict(b1=-0.1), "b1"),
    Row(adaptive.adamax, dict(b2=1.0), "b2"),
    Row(adaptive.adamax, dict(weight_decay=-0.01), "weight_decay"),
    Row(adaptive.scale_by_adamax, dict(eps=-1.0), "eps"),
    Row(adaptive.adadelta, dict(rho=1.5), "rho"),
    Row(adaptive.adadelta, dict(learning_rate=-1.0), "learning_rate"),
    Row(adaptive.scale_by_adadelta, dict(eps=-1e-6), "eps"),
    Row(adaptive.scale_by_adadelta, dict(rho=-0.1), "rho"),
    Row(adaptive.rprop, dict(etas=(1.5, 2.0)), "etas"),
    Row(adaptive.rprop, dict(etas=(0.5, 1.0)), "etas"),
    Row(adaptive.rprop, dict(etas=0.5), "etas"),
    Row(adaptive.rprop, dict(step_sizes=(1.0, 0.1)), "step_sizes"),
    Row(adaptive.rprop, dict(step_sizes=(-1e-6, 50.0)), "step_sizes"),
    Row(adaptive.rprop, dict(learning_rate=optax.constant_schedule(0.1)), "learning_rate"),
    Row(adaptive.scale_by_rprop, dict(learning_rate=-0.01), "learning_rate"),
    Row(adaptive.scale_by_rprop, dict(step_sizes=(1e-6,)), "step_sizes"),
    # Complex numbers (a TypeError before issue #14).
    Row(momentum.sgd, dict(learning_rate=1j), "learning_rate"),
    Row(momentum.sgd, dict(learning_rate=0.1, momentum=0.9 + 0j), "momentum"),
    Row(adaptive.adam, dict(learning_rate=1e-3 + 0j), "learning_rate"),
    Row(adaptive.adamw, dict(learning_rate=1e-3j), "learning_rate"),
    Row(adaptive.adamw, dict(weight_decay=0.01 + 0j), "weight_decay"),
    Row(adaptive.adagrad, dict(learning_rate=0.1j), "learning_rate"),
    Row(adaptive.rmsprop, dict(learning_rate=0.01, alpha=0.99j), "alpha"),
]

# ----------------------------------------------------------------------------- clipping
CLIPPING = [
    Row(clipping.clip_by_value, dict(max_abs=0.0), "max_abs"),
    Row(clipping.clip_by_value, dict(max_abs=-1.0), "max_abs"),
    Row(clipping.clip_by_value, dict(max_abs=float("nan")), "max_abs"),
    Row(clipping.clip_by_value, dict(max_abs="1"), "max_abs"),
    Row(clipping.clip_by_global_norm, dict(max_norm=0.0), "max_norm"),
    Row(clipping.clip_by_global_norm, dict(max_norm=float("inf")), "max_norm"),
    Row(clipping.clip_by_global_norm, dict(max_norm=1.0, norm_type=0.0), "norm_type"),
    Row(clipping.clip_by_global_norm, dict(max_norm=1.0, norm_type=-2.0), "norm_type"),
    Row(clipping.clip_by_global_norm, dict(max_norm=1.0, norm_type=-math.inf), "norm_type"),
    Row(clipping.clip_by_global_norm, dict(max_norm=1.0, norm_type="fro"), "norm_type"),
    Row(clipping.clip_by_global_norm, dict(max_norm=1.0, norm_type=True), "norm_type"),
    Row(clipping.clip_by_global_norm, dict(max_norm=1.0, axis_name=0), "axis_name"),
    Row(clipping.clip_by_global_norm, dict(max_norm=1j), "max_norm"),
    Row(clipping.adaptive_grad_clip, dict(clipping=0.0), "clipping"),
    Row(clipping.adaptive_grad_clip, dict(clipping=-0.1), "clipping"),
    Row(clipping.adaptive_grad_clip, dict(eps=-1e-3), "eps"),
    Row(clipping.skip_nonfinite, dict(inner=_SGD, max_consecutive=-1), "max_consecutive"),
    Row(clipping.skip_nonfinite, dict(inner=_SGD, max_consecutive=1.5), "max_consecutive"),
    Row(clipping.skip_nonfinite, dict(inner=_SGD, max_consecutive=110.5), "max_consecutive"),
    Row(clipping.skip_nonfinite, dict(inner=_SGD, max_consecutive=True), "max_consecutive"),
    Row(clipping.skip_nonfinite, dict(inner=lambda g: g), "inner"),
    Row(clipping.skip_nonfinite, dict(inner=_SGD, on_failure="warn"), "on_failure"),
    Row(clipping.global_norm, dict(norm_type=-1.0), "norm_type", lambda: ({"w": jnp.ones(2)},)),
    Row(clipping.global_norm, dict(axis_name=3), "axis_name", lambda: ({"w": jnp.ones(2)},)),
]

# ----------------------------------------------------------------------- regularization
REGULARIZATION = [
    Row(regularization.decoupled_weight_decay, dict(rate=-0.1), "rate"),
    Row(regularization.decoupled_weight_decay, dict(rate=float("nan")), "rate"),
    Row(regularization.decoupled_weight_decay, dict(rate=0.1, mask="kernel"), "mask"),
    Row(regularization.decoupled_weight_decay, dict(rate=0.1, mask=3), "mask"),
    Row(regularization.decoupled_weight_decay, dict(rate=0.1, learning_rate=-1.0), "learning_rate"),
    Row(regularization.l2_penalty, dict(rate=-1.0), "rate"),
    Row(regularization.l2_penalty, dict(rate=0.1, mask="all"), "mask"),
    Row(regularization.gradient_noise, dict(eta=-0.01), "eta"),
    Row(regularization.gradient_noise, dict(gamma=-0.5), "gamma"),
    Row(regularization.gradient_noise, dict(eta=float("inf")), "eta"),
    Row(regularization.gradient_noise, dict(seed=1.5), "seed"),
    Row(regularization.gradient_noise, dict(axis_name=1), "axis_name"),
    # Seeds beyond what jax.random.key takes (accepted until init before issue #14).
    Row(regularization.gradient_noise, dict(seed=2**64), "seed"),
    Row(regularization.gradient_noise, dict(seed=-(2**63) - 1), "seed"),
    Row(regularization.decoupled_weight_decay, dict(rate=1e-2j), "rate"),
    Row(regularization.decoupled_weight_decay, dict(rate=0.1, mask={"w": 1}), "mask"),
    Row(regularization.decoupled_weight_decay, dict(rate=0.1, inner=optax.sgd), "inner"),
    Row(regularization.l2_penalty, dict(rate=0.1, mask=[0.5]), "mask"),
    Row(regularization.ema, dict(decay=1.0), "decay"),
    Row(regularization.ema, dict(decay=-0.1), "decay"),
    Row(regularization.ema, dict(debias=1), "debias"),
    Row(regularization.ema, dict(every=0), "every"),
    Row(regularization.ema, dict(every=2.5), "every"),
    Row(regularization.ema, dict(every=110.5), "every"),
    Row(regularization.ema, dict(inner="sgd"), "inner"),
    Row(regularization.ema, dict(decay=1.5, inner=optax.sgd(0.1)), "decay"),
    Row(regularization.swa, dict(start_step=-1, every=1), "start_step"),
    Row(regularization.swa, dict(start_step=110.5, every=1), "start_step"),
    Row(regularization.swa, dict(start_step=0, every=0), "every"),
    Row(regularization.swa, dict(start_step=0, every=2.5), "every"),
    Row(regularization.swa, dict(start_step=0, every=110.5), "every"),
    Row(regularization.swa, dict(start_step=0, inner="adam"), "inner"),
    Row(regularization.ema_params, dict(opt_state=optax.EmptyState()), "EmaState"),
    Row(regularization.update_bn, dict(apply_fn=None, variables={"batch_stats": {}}, batches=[]), "apply_fn"),
    Row(regularization.update_bn, dict(apply_fn=lambda v, x: (x, v), variables={"params": {}}, batches=[1]),
        "batch_stats"),
    Row(regularization.update_bn, dict(apply_fn=lambda v, x: (x, v), variables={"batch_stats": {}}, batches=[]),
        "batches"),
    Row(regularization.swa_params, dict(opt_state=optax.EmptyState()), "SwaState"),
]

# ---------------------------------------------------------------------- recipe, monitor
RECIPE = [
    Row(recipe.build, dict(config={"optimiser": {}}),
        r"unknown config key\(s\) \['optimiser'\]; valid keys are \['optimizer'"),
    Row(recipe.build, dict(config={"optimizer": {"name": "lion", "learning_rate": 1.0}}),
        r"optimizer.name must be one of \[.*'adagrad', 'adam'.*'sgd'"),
    Row(recipe.build, dict(config={"optimizer": {"name": "sgd"}}), "optimizer.learning_rate is required"),
    Row(recipe.build, dict(config={"averaging": {"name": "ema", "every": 0}}), "every"),
    Row(recipe.build, dict(config={"weight_decay": {"rate": 0.1, "learning_rate": "shape"}}),
        r"weight_decay.learning_rate must be 'optimizer'.*'schedule'"),
    Row(recipe.build, dict(config={"schedule": {"name": "step_decay", "step_size": 1, "init_value": 0.0},
                                   "weight_decay": {"rate": 0.1, "learning_rate": "schedule"}}), "peak"),
    Row(recipe.build, dict(config={"optimizer": {"name": "adam", "learning_rate": 1e-3, "beta1": 0.9}}),
        r"unknown argument\(s\) \['beta1'\] for optimizer \(adam\); valid arguments are \['learning_rate', 'b1'"),
    Row(recipe.build, dict(config={"optimizer": {"name": "sgd", "learning_rate": -1.0}}), "learning_rate must be in"),
    Row(recipe.build, dict(config=_sgd_recipe(schedule={"name": "cosine"})), r"schedule.name must be one of"),
    Row(recipe.build, dict(config=_sgd_recipe(clip={"name": "norm"})), r"clip.name must be one of"),
    Row(recipe.build, dict(config=_sgd_recipe(clip={"name": "global_norm", "max": 1})),
        r"unknown argument\(s\) \['max'\] for clip \(global_norm\)"),
    Row(recipe.build, dict(config=_sgd_recipe(averaging={"name": "polyak"})), "averaging.name must be one of"),
    Row(recipe.build, dict(config=_sgd_recipe(weight_decay={"rate": 0.1, "learning_rate": "yes"})),
        "weight_decay.learning_rate must be 'optimizer'"),
    Row(recipe.build, dict(config=_sgd_recipe(weight_decay={"rate": -0.1})), "rate must be in"),
    Row(recipe.build, dict(config=_sgd_recipe(warmup={"start_value": 0.0})), "warmup needs 'steps'"),
    Row(recipe.build, dict(config=_sgd_recipe(plateau=3)), r"config\['plateau'\] must be a dict"),
    Row(recipe.build, dict(config=[("optimizer", {})]), "config must be a dict or a Recipe"),
    # A required key missing from a section.
    Row(recipe.build, dict(config={"optimizer": {"name": "adam"}}), "learning_rate"),
    Row(recipe.build, dict(config=_sgd_recipe(warmup={})), "steps"),
    Row(recipe.build, dict(config=_sgd_recipe(weight_decay={"mask": "auto"})), "rate"),
    Row(recipe.build, dict(config=_sgd_recipe(l2={})), "rate"),
    Row(recipe.build, dict(config=_sgd_recipe(clip={"name": "global_norm"})), "max_norm"),
    Row(recipe.build, dict(config=_sgd_recipe(clip={"name": "value"})), "max_abs"),
    Row(recipe.build, dict(config=_sgd_recipe(schedule={"name": "step_decay"})), "step_size"),
    Row(recipe.build, dict(config=_sgd_recipe(averaging={"name": "swa"})), "start_step"),
    Row(recipe.build, dict(config=_sgd_recipe(momentum_schedule={"name": "one_cycle_momentum"})),
          "total_steps"),
    Row(recipe.build, dict(config={"optimizer": {"name": "sgd", "learning_rate": 0.1j}}), "learning_rate"),
    # A momentum schedule needs an optimizer with a momentum / b1 to schedule, given once.
    Row(recipe.build, dict(config={"optimizer": {"name": "adagrad", "learning_rate": 0.1},
                                   "momentum_schedule": {"name": "cyclical_momentum"}}), "momentum_schedule.*adagrad"),
    Row(recipe.build, dict(config={"optimizer": {"name": "adam", "learning_rate": 0.1, "b1": 0.9},
                                   "momentum_schedule": {"name": "cyclical_momentum"}}), "momentum_schedule.*b1"),
    Row(recipe.preset, dict(name="bert"), r"preset name must be one of \['fastai-one-cycle'"),
    # preset checks its own arguments (before issue #14: later, naming t_max, or not at all).
    Row(recipe.preset, dict(name="tour", learning_rate=-0.1), "learning_rate"),
    Row(recipe.preset, dict(name="tour", learning_rate=float("nan")), "learning_rate"),
    Row(recipe.preset, dict(name="tour", learning_rate=0.1j), "learning_rate"),
    Row(recipe.preset, dict(name="tour", learning_rate="0.1"), "learning_rate"),
    Row(recipe.preset, dict(name="resnet-sgd", total_steps=0), "total_steps"),
    Row(recipe.preset, dict(name="resnet-sgd", total_steps=1), "total_steps"),
    Row(recipe.preset, dict(name="resnet-sgd", total_steps=-5), "total_steps"),
    Row(recipe.preset, dict(name="resnet-sgd", total_steps=10.5), "total_steps"),
    Row(recipe.preset, dict(name="resnet-sgd", total_steps=110.5), "total_steps"),
    Row(recipe.preset, dict(name="resnet-sgd", total_steps=True), "total_steps"),
    Row(recipe.preset, dict(name="fastai-one-cycle", total_steps=0), "total_steps"),
]

MONITOR = [
    Row(monitor.track, dict(inner=_SGD, every=0), "every"),
    Row(monitor.track, dict(inner=_SGD, every=1.5), "every"),
    Row(monitor.track, dict(inner=_SGD, every=110.5), "every"),
    Row(monitor.track, dict(inner="x"), "inner"),
    Row(monitor.stats, dict(opt_state=optax.EmptyState()), "TrackState"),
]

# ---------------------------------------------------------------------- parallel and flat

PARALLEL = [
    Row(parallel.make_mesh, dict(axis_names=()), "axis_names"),
    Row(parallel.make_mesh, dict(axis_names=("a", "b"), shape=(3, 3)), "shape"),
    Row(parallel.make_mesh, lambda: dict(axis_names=("a",), shape=(jax.device_count() + 0.5,)), "shape"),  # truncated
    Row(parallel.make_mesh, dict(axis_names=("a",), devices=[]), "devices"),
    Row(parallel.make_mesh, dict(axis_names=7), "axis_names"),
    Row(parallel.replicate, dict(tree={"w": jnp.zeros(2)}, devices="cpu"), "devices"),
    Row(parallel.replicate, dict(tree={"w": jnp.zeros(2)}, axis_name=3), "axis_name"),
    Row(parallel.assert_replicated, dict(tree={"w": jnp.ones((2, 2))}, atol=-1.0), "atol"),
    Row(parallel.assert_replicated, dict(tree={"w": jnp.ones((2, 2))}, atol=float("nan")), "atol"),
    Row(parallel.fsdp_shardings, lambda: dict(params={"w": jnp.zeros(8)}, mesh=_mesh(), axis="model"), "axis"),
    Row(parallel.fsdp_shardings, lambda: dict(params={"w": jnp.zeros(8)}, mesh=_mesh(), min_size=-1), "min_size"),
    Row(parallel.opt_state_shardings, dict(opt_state={}, params={"w": jnp.zeros(8)}, params_shardings="x"),
        "params_shardings"),
    Row(parallel.opt_state_shardings, lambda: dict(opt_state={}, params={"w": jnp.zeros(8)},
                                                   params_shardings={"w": parallel.replicated_sharding(_mesh())},
                                                   default="replicated"), "default"),
    Row(parallel.pmap_train_step, dict(loss_fn=3, tx=_SGD), "loss_fn"),
    Row(parallel.pmap_train_step, dict(loss_fn=_quadratic, tx=_SGD, axis_name=None), "axis_name"),
    Row(parallel.pmap_train_step, dict(loss_fn=_quadratic, tx=_SGD, has_aux=1), "has_aux"),
    Row(parallel.make_train_step, lambda: dict(loss_fn=_quadratic, tx=_SGD, mesh=_mesh(), params_shardings=None,
                                               donate="yes"), "donate"),
    Row(parallel.make_train_step, dict(loss_fn=_quadratic, tx=_SGD, mesh="mesh", params_shardings=None), "mesh"),
    Row(parallel.make_train_step, lambda: dict(loss_fn=_quadratic, tx=_SGD, mesh=_mesh(), params_shardings=None,
                                               batch_axis="model"), "batch_axis"),
    Row(parallel.pmap_train_step, dict(loss_fn=_quadratic, tx="x"), "tx"),
    Row(parallel.make_train_step, lambda: dict(loss_fn=_quadratic, tx="x", mesh=_mesh(),
                                                      params_shardings=None), "tx"),
    # tx and mesh are checked (an AttributeError before issue #14).
    Row(parallel.init_sharded, lambda: dict(tx="x", params={"w": jnp.zeros(8)},
                                            params_shardings={"w": parallel.replicated_sharding(_mesh())}), "tx"),
    Row(parallel.init_sharded, dict(tx=_SGD, params={"w": jnp.zeros(8)}, params_shardings={"w": "data"}),
        "params_shardings"),
    Row(parallel.make_train_step, lambda: dict(loss_fn=_quadratic, tx=_SGD, mesh=_mesh(), params_shardings="x"),
        "params_shardings"),
    Row(parallel.replicated_sharding, dict(mesh="mesh"), "mesh"),
    Row(parallel.replicated, dict(mesh="mesh"), "mesh"),  # deprecated alias: the ValueError comes first
    Row(parallel.batch_sharding, dict(mesh="mesh"), "mesh"),
    Row(parallel.batch_sharding, lambda: dict(mesh=_mesh(), axis="model"), "axis"),
    Row(parallel.data_parallel_shardings, dict(params={"w": jnp.zeros(8)}, mesh="mesh"), "mesh"),
    Row(parallel.fsdp_shardings, dict(params={"w": jnp.zeros(8)}, mesh="mesh"), "mesh"),
]

FLAT = [
    Row(flat.flatten, dict(params={"i": jnp.zeros(2, jnp.int32)}), "floating"),
    Row(flat.flatten, dict(params={"w": "weights"}), "floating"),
    # An integer buffer truncated the params silently before issue #14.
    Row(flat.flatten, dict(params={"w": jnp.zeros(2)}, dtype=jnp.int32), "dtype"),
    Row(flat.flatten, dict(params={"w": jnp.zeros(2)}, dtype="bool"), "dtype"),
    Row(flat.flatten, dict(params={"w": jnp.zeros(2)}), "mask", then=lambda out: out[1].mask({"v": True})),
    Row(flat.flatten, dict(params={"w": jnp.zeros(2)}), "mask", then=lambda out: out[1].mask("all")),
    Row(flat.flatten, dict(params={"w": jnp.zeros(2)}), "shape", then=lambda out: out[1].unravel(jnp.zeros(3))),
    Row(flat.adaptive_grad_clip, dict(layout="layout"), "layout"),
    Row(flat.adaptive_grad_clip, lambda: dict(layout=_layout(), clipping=0.0), "clipping"),
    Row(flat.adaptive_grad_clip, lambda: dict(layout=_layout(), clipping=0.1, eps=-1.0), "eps"),
    Row(flat.adaptive_grad_clip, lambda: dict(layout=_layout()), "params",
        then=lambda tx: tx.update(jnp.zeros(2), tx.init(jnp.zeros(2)))),
    Row(flat.flat_train_step, lambda: dict(loss_fn=None, tx=_SGD, layout=_layout()), "loss_fn"),
    Row(flat.flat_train_step, lambda: dict(loss_fn=_quadratic, tx=_SGD, layout=_layout(), donate=1), "donate"),
    Row(flat.flat_train_step, dict(loss_fn=_quadratic, tx=_SGD, layout="layout"), "layout"),
    Row(flat.flat_train_step, lambda: dict(loss_fn=_quadratic, tx="x", layout=_layout()), "tx"),
]

# ------------------------------------------------------------------------- groups
GROUPS = [
    Row(groups.match, dict(patterns=["(unclosed"]), "patterns"),
    Row(groups.match, dict(patterns=[3]), "patterns"),
    Row(groups.match, dict(patterns=5), "patterns"),
    Row(groups.match, dict(patterns="x", allow_unmatched=1), "allow_unmatched"),
    Row(groups.match, dict(patterns=["bn.weight"]), r"\['bn.weight'\] match no leaf.*PyTorch.*'fc/kernel'",
        then=lambda mask: mask({"fc": {"kernel": jnp.ones((2, 2))}})),
    Row(groups.union, dict(), "at least 1 mask"),
    Row(groups.union, dict(), r"masks\[1\]", args=("auto", "kernels")),
    Row(groups.intersect, dict(), r"masks\[0\]", args=(0.5,)),
    Row(groups.exclude, dict(mask={"w": 1}), r"masks\[0\]"),
    Row(groups.exclude, dict(), r"masks\[2\]", args=("auto", None, [3])),
    Row(groups.scale_by_group, dict(multipliers=[("head/.*", -1.0)]), "multipliers"),
    Row(groups.scale_by_group, dict(multipliers=[("head/.*", float("nan"))]), "multipliers"),
    Row(groups.scale_by_group, dict(multipliers=[("head/.*", float("inf"))]), "multipliers"),
    Row(groups.scale_by_group, dict(multipliers=[("[", 1.0)]), "multipliers"),
    Row(groups.scale_by_group, dict(multipliers=[("head/.*",)]), "multipliers"),
    Row(groups.scale_by_group, dict(multipliers="head"), "multipliers"),
    Row(groups.scale_by_group, dict(multipliers=[(1, 2.0)]), "multipliers"),
    Row(groups.scale_by_group, dict(multipliers=[], default=-1.0), "default"),
    Row(groups.weight_decay, dict(rate=-0.1), "rate"),
    Row(groups.weight_decay, dict(rate=0.1, mask="kernels"), "mask"),
    Row(groups.weight_decay, dict(rate=0.1, lr_mults=[("head/.*", 10.0)]), "lr_mults needs learning_rate"),
    Row(groups.weight_decay, dict(rate=0.1, wd_mults=[("head/.*", -1.0)]), "wd_mults"),
]

BAD = SCHEDULES + PLATEAU + LR_FINDER + INITIALIZERS + OPTIMIZERS + CLIPPING + REGULARIZATION + RECIPE + MONITOR \
    + PARALLEL + FLAT + GROUPS

# ------------------------------------------------- Adafactor, ASGD, Muon, nn.init's rest, groups.labels (issue #23)
_M = lambda: dict(x=jnp.ones((3, 2)))  # noqa: E731
TORCH_OPTIM_MORE = [
    Row(adaptive.adafactor, dict(learning_rate=-0.1), "learning_rate"),
    Row(adaptive.adafactor, dict(beta2_decay=0.5), "beta2_decay"),
    Row(adaptive.adafactor, dict(eps=(-1.0, 1e-3)), r"eps\[0\]"),
    Row(adaptive.adafactor, dict(eps=(None, float("nan"))), r"eps\[1\]"),
    Row(adaptive.adafactor, dict(eps=1e-3), "eps"),
    Row(adaptive.adafactor, dict(d=0.5), "d"),
    Row(adaptive.adafactor, dict(weight_decay=-0.1), "weight_decay"),
    Row(adaptive.scale_by_adafactor, dict(d=float("inf")), "d"),
    Row(adaptive.scale_by_adafactor, {}, "complex", then=lambda tx: tx.update(
        jnp.ones(2, jnp.complex64), tx.init(jnp.ones(2, jnp.complex64)), jnp.ones(2, jnp.complex64))),
    Row(adaptive.muon, dict(learning_rate=-1.0), "learning_rate"),
    Row(adaptive.muon, dict(weight_decay=-0.1), "weight_decay"),
    Row(adaptive.muon, dict(momentum=1.5), "momentum"),
    Row(adaptive.muon, dict(nesterov="yes"), "nesterov"),
    Row(adaptive.muon, dict(ns_coefficients=(1.0, 2.0)), "ns_coefficients"),
    Row(adaptive.muon, dict(ns_coefficients=(1.0, float("nan"), 2.0)), r"ns_coefficients\[1\]"),
    Row(adaptive.muon, dict(ns_steps=100), "ns_steps"),
    Row(adaptive.muon, dict(ns_steps=2.5), "ns_steps"),
    Row(adaptive.scale_by_muon, dict(ns_steps=5.5), "ns_steps"),
    Row(adaptive.muon, dict(eps=-1e-7), "eps"),
    Row(adaptive.muon, dict(adjust_lr_fn="sqrt"), "adjust_lr_fn"),
    Row(adaptive.muon, dict(ns_dtype=jnp.int32), "ns_dtype"),
    Row(adaptive.muon, dict(ns_dtype="float99"), "ns_dtype"),
    Row(adaptive.muon, {}, "2-D leaves", then=lambda tx: tx.init({"bias": jnp.ones(3)})),
    Row(adaptive.scale_by_muon, dict(ns_steps=-1), "ns_steps"),
    Row(adaptive.orthogonalize, dict(x=jnp.ones(3)), "x"),
    Row(adaptive.orthogonalize, lambda: dict(_M(), ns_steps=-1), "ns_steps"),
    Row(momentum.asgd, dict(learning_rate=-0.1), "learning_rate"),
    Row(momentum.asgd, dict(lambd=-1e-4), "lambd"),
    Row(momentum.asgd, dict(alpha=float("inf")), "alpha"),
    Row(momentum.asgd, dict(t0=-1.0), "t0"),
    Row(momentum.asgd, dict(weight_decay=-0.1), "weight_decay"),
    Row(momentum.asgd_learning_rate, dict(alpha=-0.75), "alpha"),
    Row(momentum.scale_by_asgd, dict(t0=float("nan")), "t0"),
    Row(momentum.scale_by_asgd, {}, "params", then=lambda tx: tx.update(jnp.ones(2), tx.init(jnp.ones(2)))),
    Row(momentum.asgd_params, dict(opt_state=optax.EmptyState()), "ScaleByAsgdState"),
    Row(I.trunc_normal, dict(std=0.0), "std"),
    Row(I.trunc_normal, dict(mean=float("nan")), "mean"),
    Row(I.trunc_normal, dict(a=1.0, b=0.0), "a < b"),
    Row(I.trunc_normal, {}, "dtype", then=_init_call((4, 4), jnp.int32)),
    Row(I.sparse, dict(sparsity=1.5), "sparsity"),
    Row(I.sparse, dict(sparsity=0.1, std=-0.01), "std"),
    Row(I.sparse, dict(sparsity=0.1), "2-D", then=_init_call((3, 3, 3), jnp.float32)),
    Row(I.dirac, dict(groups=0), "groups"),
    Row(I.dirac, dict(groups=1.5), "groups"),
    Row(I.dirac, dict(groups=3), "divisible", then=_init_call((3, 2, 4), jnp.float32)),
    Row(I.dirac, {}, "dirac takes", then=_init_call((3, 3), jnp.float32)),
    Row(I.eye, {}, "2-D", then=_init_call((3,), jnp.float32)),
    Row(groups.labels, dict(rules="head", default="a"), "rules"),
    Row(groups.labels, dict(rules=[("head/.*", 1)], default="a"), "rules"),
    Row(groups.labels, dict(rules=[("(", "a")], default="a"), "rules"),
    Row(groups.labels, dict(rules=[], default=None), "default"),
]
BAD += TORCH_OPTIM_MORE


def _public_functions() -> dict[str, Callable]:
  """``module.name -> function`` for every public function of every public module."""
  found = {}
  for module_name in package.__all__:
    module = getattr(package, module_name)
    if not inspect.ismodule(module):
      continue
    names = getattr(module, "__all__", None)
    if names is None:  # a module without __all__: its public, package-defined names
      names = [n for n in dir(module) if not n.startswith("_")]
    for name in names:
      obj = getattr(module, name)
      if inspect.isfunction(obj) and obj.__module__.startswith("jaxopt_practices"):
        found[f"{module_name}.{name}"] = obj
  return found


def _row(entry) -> Row:
  return entry.values[0] if hasattr(entry, "values") else entry


def _ids() -> list[str]:
  names = {fn: name for name, fn in _public_functions().items()}
  ids = []
  for i, entry in enumerate(BAD):
    row = _row(entry)
    ids.append(f"{names.get(row.factory, row.factory.__name__)}-{re.sub(r'[^A-Za-z0-9_]+', '_', row.match)[:24]}-{i}")
  return ids


@pytest.mark.parametrize("row", BAD, ids=_ids())
def test_bad_input_raises_value_error_naming_it(row: Row):
  kwargs = row.kwargs() if callable(row.kwargs) else row.kwargs
  args = row.args() if callable(row.args) else row.args
  with pytest.raises(ValueError, match=row.match) as info:
    out = row.factory(*args, **kwargs)
    if row.then is not None:
      row.then(out)
  value = kwargs.get(row.match)
  if isinstance(value, (bool, int, float, complex, str)):
    assert repr(value) in str(info.value) or str(value) in str(info.value), (
        f"the message should show the value {value!r}: {info.value}")


# ---------------------------------------------------------------------------- completeness
# Public functions with no argument a bad value could be given to, or whose inputs are data
# (arrays, pytrees, states) handled like jax.numpy / jax.tree functions handle them.
NO_ARGUMENTS = {
    # Reads the learning rate from any state; documented to return NaN when the state holds none.
    monitor.current_learning_rate,
    # Array maths on one gradient array (no hyperparameter), as jnp.linalg.norm.
    clipping.unitwise_norm,
    # Pytree plumbing: any pytree of replicated arrays / any matching pytree of shardings, as
    # jax.tree.map and jax.device_put take them.
    parallel.unreplicate,
    parallel.shard,
    # The path of every leaf of any pytree, as jax.tree_util.keystr does.
    groups.paths,
    # The kernel rule (mask="auto") as a mask: no argument to get wrong.
    groups.kernels,
}


def test_every_public_factory_has_a_row():
  covered = {_row(entry).factory for entry in BAD}
  public = _public_functions()
  assert len(public) > 60, sorted(public)
  missing = sorted(name for name, fn in public.items() if fn not in covered and fn not in NO_ARGUMENTS)
  assert not missing, f"public functions with no bad-input row in test_bad_arguments.BAD: {missing}"
  stale = [fn.__name__ for fn in NO_ARGUMENTS if fn in covered]
  assert not stale, f"these have rows now; drop them from NO_ARGUMENTS: {stale}"


# ------------------------------------------------------------------ step counts (issue #20)
# Every argument that counts steps, updates, evaluations or iterations goes through
# _validate.check_steps: an integral float (110.0, from epoch arithmetic) is the integer, 110.5 is a
# bad row above. Each entry: (name, build(count) -> something comparable, the integer to try).
def _plateau_run(**kw):
  tx = plateau.reduce_on_plateau(factor=0.5, threshold=0.0, **kw)
  state = tx.init(jnp.zeros(1))
  out = []
  for v in [1.0, 2.0, 3.0, 1.0, 4.0, 5.0, 6.0, 7.0, 8.0]:
    u, state = tx.update(jnp.ones(1), state, value=v)
    out.append(float(u[0]))
  return out


def _average_run(tx, read):
  p, state, out = jnp.zeros(2), tx.init(jnp.zeros(2)), []
  for t in range(6):
    u, state = tx.update(-jnp.full(2, t + 1.0), state, p)
    p = optax.apply_updates(p, u)
    out.append(read(state).tolist())
  return out


def _track_run(every):
  """The grad norms ``monitor.stats`` reports over 4 updates (measured on updates 0, every, ...)."""
  tx = monitor.track(_SGD, every=every, learning_rate=0.1)
  p, state, out = jnp.zeros(2), tx.init(jnp.zeros(2)), []
  for t in range(4):
    _, state = tx.update(jnp.full(2, t + 1.0), state, p)
    out.append(float(monitor.stats(state)["grad_norm"]))
  return out


def _skip_run(max_consecutive):
  """Whether each of 4 non-finite steps in a row has failed (after ``max_consecutive`` skipped)."""
  tx = clipping.skip_nonfinite(_SGD, max_consecutive=max_consecutive, on_failure="nan")
  state, out = tx.init(jnp.zeros(2)), []
  for _ in range(4):
    _, state = tx.update(jnp.full(2, jnp.nan), state)
    out.append(bool(state.failed))
  return out


def _muon_update(**kw):
  tx, p = adaptive.muon(0.1, ns_dtype=jnp.float32, **kw), jnp.ones((2, 3)) + jnp.eye(2, 3)
  return tx.update(p, tx.init(p), p)[0].tolist()


COUNTS = [
    ("plateau.reduce_on_plateau(patience=)", lambda n: _plateau_run(patience=n), 2),
    ("plateau.reduce_on_plateau(cooldown=)", lambda n: _plateau_run(patience=0, cooldown=n), 2),
    ("plateau.reduce_on_plateau(accumulation_size=)", lambda n: _plateau_run(patience=0, accumulation_size=n), 2),
    ("regularization.swa(start_step=)",
     lambda n: _average_run(regularization.swa(start_step=n), regularization.swa_params), 2),
    ("regularization.swa(every=)",
     lambda n: _average_run(regularization.swa(start_step=1, every=n), regularization.swa_params), 2),
    ("regularization.ema(every=)",
     lambda n: _average_run(regularization.ema(0.5, every=n), regularization.ema_params), 2),
    ("schedules.swa_lr(start_step=)",
     lambda n: [float(schedules.swa_lr(0.2, 0.05, start_step=n, anneal_steps=2)(t)) for t in range(8)], 3),
    ("lr_finder.lr_range_test(num_steps=)",
     lambda n: lr_finder.lr_range_test(**_lr_test(num_steps=n)()).lrs.tolist(), 6),
    ("initializers.lsuv(max_iters=)", lambda n: I.lsuv(**_lsuv(max_iters=n)())[1].converged, 3),
    ("recipe.preset(total_steps=)", lambda n: recipe.preset("resnet-sgd", total_steps=n), 110),
    ("adaptive.orthogonalize(ns_steps=)",
     lambda n: adaptive.orthogonalize(jnp.eye(3, 2) + 0.1, ns_steps=n, ns_dtype=jnp.float32).tolist(), 5),
    ("adaptive.muon(ns_steps=)", lambda n: _muon_update(ns_steps=n), 5),
    ("monitor.track(every=)", _track_run, 2),
    ("clipping.skip_nonfinite(max_consecutive=)", _skip_run, 2),
]


@pytest.mark.parametrize("name, build, n", COUNTS, ids=[(c.values if hasattr(c, "values") else c)[0] for c in COUNTS])
def test_step_counts_take_integral_floats(name, build, n):
  """``n.0`` gives what ``n`` gives (the ``n + 0.5`` rows of BAD raise naming the argument)."""
  assert build(float(n)) == build(n), name


INJECTED_COUNTS = [  # counts that optax.inject_hyperparams passes back traced: an integral float works there too
    (plateau.reduce_on_plateau, dict(factor=0.5, patience=1, cooldown=1, accumulation_size=2), {"value": 2.0}),
    (regularization.swa, dict(start_step=1, every=2), {}),
    (regularization.ema, dict(decay=0.5, every=2), {}),
    (adaptive.scale_by_muon, dict(ns_steps=3, ns_dtype="float32"), {}),
    (clipping.skip_nonfinite, dict(inner=_SGD, max_consecutive=2), {}),
]


@pytest.mark.parametrize("make, kwargs, extra", INJECTED_COUNTS, ids=[m.__name__ for m, _, _ in INJECTED_COUNTS])
def test_injected_step_counts_take_integral_floats(make, kwargs, extra):
  as_float = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in kwargs.items()}
  params = jnp.ones((2, 3))
  runs = []
  for kw in (kwargs, as_float):
    tx = optax.inject_hyperparams(make)(**kw)
    step, state, out = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra)), tx.init(params), []
    for t in range(5):
      u, state = step(params * (t + 1.0), state, params)
      out.append(u)
    runs.append(out)
  chex.assert_trees_all_equal(runs[0], runs[1])
