"""Every state reader on every container, in and out of ``jit`` / ``nnx.jit`` (issue #11, item 1).

Readers: ``monitor.stats``, ``monitor.current_learning_rate``, ``plateau.scale``,
``plateau.step``, ``regularization.ema_params``, ``regularization.swa_params``.
Containers: a raw optax state, flax's linen ``TrainState``, ours
(``training.TrainState``), an ``nnx.Optimizer`` and its ``opt_state`` (``nnx.Variable``
leaves). Each container is trained for three "epochs" of two updates (the gradients do not
depend on the params, so every container sees the same stream) with ``plateau.step`` on a
rising validation loss after each epoch; every reader must then give the reference values of
the raw state driven eagerly.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state as flax_train_state

from jaxopt_practices import momentum, monitor, plateau, regularization, training

CONTAINERS = ["raw", "flax_train_state", "our_train_state", "nnx_optimizer", "nnx_opt_state"]
READERS = {
    "stats": monitor.stats,
    "current_learning_rate": monitor.current_learning_rate,
    "scale": plateau.scale,
    "ema_params": regularization.ema_params,
    "swa_params": regularization.swa_params,
}
VAL_LOSSES = [1.0, 2.0, 3.0]  # rising: reductions after the 2nd and 3rd epoch
UPDATES_PER_EPOCH = 2


# Tiny programs: XLA's optimizations cost most of their compile time (fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("fast_compile")


def _tx():
  return monitor.track(optax.chain(momentum.sgd(0.1, momentum=0.9),
                                   plateau.reduce_on_plateau(factor=0.5, patience=0),
                                   regularization.ema(0.5), regularization.swa(start_step=1)))


def _xs():
  rng = np.random.default_rng(0)
  return [jnp.asarray(rng.standard_normal((4, 3)), jnp.float32) for _ in range(len(VAL_LOSSES) * UPDATES_PER_EPOCH)]


C = jnp.asarray([[1.0, -2.0]] * 4)


def _loss(params, x):
  """Linear in the params: the gradient depends on ``x`` only."""
  return jnp.sum(C * (x @ params["kernel"] + params["bias"][None, :]))


def _model():
  return nnx.Linear(3, 2, rngs=nnx.Rngs(0))


def _params():
  return {k: jnp.asarray(v) for k, v in nnx.to_pure_dict(nnx.state(_model(), nnx.Param)).items()}


class _Raw:
  """The raw optax state and its params, driven as a user's own loop does."""

  def __init__(self, jit):
    self.tx, self.params = _tx(), _params()
    self.state = self.tx.init(self.params)
    self.update = jax.jit(self._update) if jit else self._update
    self.step = jax.jit(plateau.step) if jit else plateau.step
    self.read = (lambda f: jax.jit(f)(self.state)) if jit else (lambda f: f(self.state))

  def _update(self, params, state, x):
    u, state = self.tx.update(jax.grad(_loss)(params, x), state, params)
    return optax.apply_updates(params, u), state

  def train(self, x):
    self.params, self.state = self.update(self.params, self.state, x)

  def plateau_step(self, v):
    out = self.step(self.state, v)
    assert type(out) is type(self.state)
    self.state = out


class _Linen(_Raw):
  """flax's ``TrainState`` (no value: the plateau is driven by ``plateau.step``) or ours."""

  def __init__(self, jit, cls):
    self.cls = cls
    self.state = cls.create(apply_fn=None, params=_params(), tx=_tx())
    self.update = jax.jit(self._apply) if jit else self._apply
    self.step = jax.jit(plateau.step) if jit else plateau.step
    self.read = (lambda f: jax.jit(f)(self.state)) if jit else (lambda f: f(self.state))

  @staticmethod
  def _apply(state, x):
    return state.apply_gradients(grads=jax.grad(_loss)(state.params, x))

  def train(self, x):
    self.state = self.update(self.state, x)
    assert type(self.state) is self.cls


class _Nnx:
  """An ``nnx.Optimizer``; ``container`` is the optimizer itself or its ``opt_state``."""

  def __init__(self, jit, which):
    self.model = _model()
    self.opt = nnx.Optimizer(self.model, _tx(), wrt=nnx.Param)
    self.which, self.jit = which, jit

  def container(self):
    return self.opt if self.which == "optimizer" else self.opt.opt_state

  def train(self, x):
    def update(model, opt, x):
      grads = nnx.grad(lambda m: jnp.sum(C * m(x)))(model)
      opt.update(model, grads)

    (nnx.jit(update) if self.jit else update)(self.model, self.opt, x)

  def plateau_step(self, v):
    if self.jit:
      nnx.jit(lambda c, v: plateau.step(c, v) and None)(self.container(), v)
    else:
      assert plateau.step(self.container(), v) is self.container()

  def read(self, f):
    return nnx.jit(f)(self.container()) if self.jit else f(self.container())


def _driver(name, jit):
  if name == "raw":
    return _Raw(jit)
  if name in ("flax_train_state", "our_train_state"):
    return _Linen(jit, flax_train_state.TrainState if name == "flax_train_state" else training.TrainState)
  return _Nnx(jit, "optimizer" if name == "nnx_optimizer" else "opt_state")


def _run(name, jit):
  d = _driver(name, jit)
  xs = iter(_xs())
  for v in VAL_LOSSES:
    for _ in range(UPDATES_PER_EPOCH):
      d.train(next(xs))
    d.plateau_step(jnp.float32(v))
  return d


@functools.cache
def _reference():
  """The readers on the raw state driven eagerly (that run is also the ``raw-eager`` case)."""
  d = _run("raw", jit=False)
  return d, {name: f(d.state) for name, f in READERS.items()}


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", CONTAINERS)
def test_every_reader_on_every_container(name, jit):
  raw, ref = _reference()
  d = raw if (name, jit) == ("raw", False) else _run(name, jit)
  for reader, f in READERS.items():
    got = d.read(f)
    want = ref[reader]
    if isinstance(want, dict):
      assert sorted(got) == sorted(want), reader
    assert len(_leaves(got)) == len(_leaves(want)), reader
    for g, w in zip(_leaves(got), _leaves(want)):
      np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7, err_msg=f"{reader} on {name}")
  # Two reductions happened, and the scale of the 3rd epoch (0.5) was applied to its updates.
  assert float(d.read(plateau.scale)) == 0.25
  assert float(d.read(monitor.current_learning_rate)) == pytest.approx(0.1 * 0.25)  # the next update's
  assert float(d.read(monitor.stats)["learning_rate"]) == pytest.approx(0.1 * 0.5)  # the last update's
  assert int(d.read(monitor.stats)["step"]) == len(VAL_LOSSES) * UPDATES_PER_EPOCH


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_nnx_stats_and_learning_rate_on_opt_state(jit):
  """The issue's report: ``monitor.stats(opt.opt_state)`` raised TypeError, the lr was NaN."""
  model = _model()
  opt = nnx.Optimizer(model, monitor.track(optax.chain(momentum.sgd(0.1), plateau.reduce_on_plateau())),
                      wrt=nnx.Param)

  def step(model, opt, x):
    opt.update(model, nnx.grad(lambda m: jnp.sum(C * m(x)))(model))
    return monitor.stats(opt.opt_state), monitor.current_learning_rate(opt.opt_state)

  stats, lr = (nnx.jit(step) if jit else step)(model, opt, _xs()[0])
  assert int(stats["step"]) == 1 and float(stats["grad_norm"]) > 0
  assert float(lr) == pytest.approx(0.1) and float(stats["learning_rate"]) == pytest.approx(0.1)


def test_ema_params_load_into_an_nnx_model_in_one_call():
  """``nnx.update(model, regularization.ema_params(optimizer))`` puts the EMA weights in the model."""
  model = _model()
  opt = nnx.Optimizer(model, optax.chain(optax.sgd(0.1), regularization.ema(0.5)), wrt=nnx.Param)
  for x in _xs()[:3]:
    opt.update(model, nnx.grad(lambda m: jnp.sum(C * m(x)))(model))
  avg = regularization.ema_params(opt)
  assert isinstance(avg, nnx.State)
  eval_model = nnx.clone(model)
  nnx.update(eval_model, avg)
  chex.assert_trees_all_equal(nnx.to_pure_dict(nnx.state(eval_model, nnx.Param)), nnx.to_pure_dict(avg))
  assert not np.allclose(eval_model.kernel[...], model.kernel[...])  # the training model keeps its weights


def test_plateau_step_on_train_state_returns_a_train_state_and_leaves_the_input():
  state = training.TrainState.create(apply_fn=None, params=_params(), tx=_tx())
  out = plateau.step(state, 1.0)
  assert type(out) is training.TrainState
  assert float(out.opt_state.inner_state[1].best) == 1.0
  assert float(plateau.step(out, 2.0).opt_state.inner_state[1].scale) == 0.5
  assert float(state.opt_state.inner_state[1].best) == np.inf  # the input is untouched


def test_plateau_step_needs_exactly_one_plateau_state():
  params = _params()
  with pytest.raises(ValueError, match="plateau.step expects exactly one ReduceOnPlateauState.*found no"):
    plateau.step(optax.sgd(0.1).init(params), 1.0)
  two = optax.chain(plateau.reduce_on_plateau(), plateau.reduce_on_plateau())
  with pytest.raises(ValueError, match=r"2 ReduceOnPlateauStates \(ambiguous\)"):
    plateau.step(two.init(params), 1.0)
  with pytest.raises(ValueError, match="scalar"):
    plateau.step(_tx().init(params), jnp.ones(2))
