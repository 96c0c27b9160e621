"""Checkpoints: restoring with a target resumes bitwise; without one, the next update says what to do.

Issue #14, item 4: Orbax restores a checkpoint made without a target as dicts and lists (the
NamedTuple states are gone), and the next ``update`` used to fail far from the cause
(``AttributeError: 'dict' object has no attribute 'inner_state'``). Every ``update`` of every
transform of the package, and every state reader, now raises a ``ValueError`` that says what
happened and how to restore with a target.

Item 3: a checkpoint of the plain optimizer restores into the inner state of the same optimizer
under ``optax.inject_hyperparams`` (and back), also when a hyperparameter is an explicit Python 0.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import grad_stream, state_signature
from jaxopt_practices import adaptive, clipping, flat, momentum, monitor, plateau, recipe, regularization
from test_contract import CASES

ocp = pytest.importorskip("orbax.checkpoint")

RESTORE = "without a target.*jax.eval_shape\\(tx.init, params\\).*StandardRestore"


def _params():
  """Small params with no zero-size leaf (Orbax cannot save those)."""
  k = jax.random.split(jax.random.key(0), 3)
  return {"dense": {"kernel": jax.random.normal(k[0], (4, 3)), "bias": jax.random.normal(k[1], (3,))},
          "scale": jax.random.normal(k[2], ())}


def _loss(params, t):
  target = jnp.sin(jnp.asarray(t, jnp.float32) + 1.0)
  return sum(jnp.sum(jnp.square(p - target)) for p in jax.tree.leaves(params))


def _stepper(tx):
  tx = optax.with_extra_args_support(tx)

  @jax.jit
  def step(params, state, t):
    loss, grads = jax.value_and_grad(_loss)(params, t)
    updates, state = tx.update(grads, state, params, value=loss)
    return optax.apply_updates(params, updates), state

  def train(params, state, start, steps):
    for t in range(start, start + steps):
      params, state = step(params, state, t)
    return params, state

  return train


def _save(path, tree):
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, tree)


def _restore(path, target=None):
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(path) if target is None else ckptr.restore(path, target)


def _preset(name):
  return recipe.build(recipe.preset(name, total_steps=40))


CONFIGS = {
    "sgd_momentum": lambda: momentum.sgd(0.1, momentum=0.9, weight_decay=1e-3),
    "adamw": lambda: adaptive.adamw(1e-2, mask="auto", amsgrad=True),
    "rmsprop": lambda: adaptive.rmsprop(1e-2, momentum=0.5, centered=True),
    "adagrad": lambda: adaptive.adagrad(0.1, lr_decay=0.01),
    "nadam_decoupled": lambda: adaptive.nadam(1e-2, weight_decay=0.1, decoupled_weight_decay=True),
    "rprop": lambda: adaptive.rprop(1e-2),
    "clip_chain": lambda: optax.chain(clipping.clip_by_value(2.0), clipping.clip_by_global_norm(1.0),
                                      clipping.adaptive_grad_clip(0.5), momentum.sgd(0.1)),
    "skip_nonfinite": lambda: clipping.skip_nonfinite(adaptive.adam(1e-2), max_consecutive=3),
    "plateau": lambda: optax.chain(momentum.sgd(0.1), plateau.reduce_on_plateau(factor=0.5, patience=0)),
    "noise_ema_swa": lambda: optax.chain(regularization.gradient_noise(0.01, seed=3), momentum.sgd(0.1),
                                         regularization.ema(0.9), regularization.swa(1, 1)),
    "decay": lambda: optax.chain(regularization.l2_penalty(1e-2), adaptive.scale_by_adam(),
                                 regularization.decoupled_weight_decay(1e-2, mask=None)),
    "monitor": lambda: monitor.track(adaptive.adam(1e-2)),
    "recipe_tour": lambda: _preset("tour"),
    "recipe_resnet_sgd": lambda: _preset("resnet-sgd"),
    "recipe_transformer_adamw": lambda: _preset("transformer-adamw"),
    "recipe_fastai_one_cycle": lambda: _preset("fastai-one-cycle"),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_orbax_round_trip(name, tmp_path):
  """With a target: bitwise resume. Without: the next update raises the clear ValueError."""
  tx = CONFIGS[name]()
  train = _stepper(tx)
  params = _params()
  full_params, full_state = train(params, tx.init(params), 0, 5)
  mid_params, mid_state = train(params, tx.init(params), 0, 3)
  _save(tmp_path / "ckpt", {"params": mid_params, "opt_state": mid_state})

  abstract = {"params": jax.eval_shape(lambda: params), "opt_state": jax.eval_shape(tx.init, params)}
  restored = _restore(tmp_path / "ckpt", abstract)
  assert jax.tree.structure(restored["opt_state"]) == jax.tree.structure(mid_state)
  resumed_params, resumed_state = train(restored["params"], restored["opt_state"], 3, 2)
  for got, want in zip(jax.tree.leaves((resumed_params, resumed_state)), jax.tree.leaves((full_params, full_state))):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

  raw = _restore(tmp_path / "ckpt")
  with pytest.raises(ValueError, match=RESTORE):
    train(raw["params"], raw["opt_state"], 3, 1)


def _as_restored(tree):
  """What a restore without a target gives back: NamedTuples as dicts, tuples as lists, EmptyState as None."""
  if isinstance(tree, optax.EmptyState):
    return None
  if hasattr(tree, "_fields"):
    return {k: _as_restored(v) for k, v in zip(tree._fields, tree)}
  if isinstance(tree, (tuple, list)):
    return [_as_restored(v) for v in tree]
  if isinstance(tree, dict):
    return {k: _as_restored(v) for k, v in tree.items()}
  return tree


def _is_stateless(case) -> bool:
  return isinstance(case.build().init(case.tree()), optax.EmptyState)


STATEFUL = [c for c in CASES if not _is_stateless(c)]
STATELESS = [c for c in CASES if _is_stateless(c)]


def _not_restored(state):
  """Target-less shapes of ``state``: as Orbax gives it back (dicts, lists); for a transform's own
  NamedTuple state also None and its fields as a list. (A whole ``optax.chain`` state given as None
  fails in optax's chain, before any of our checks: Orbax gives a chain's tuple back as a list.)"""
  shapes = {"restored": _as_restored(state)}
  if hasattr(state, "_fields"):
    shapes.update(none=None, fields_as_list=[_as_restored(v) for v in state])
  return shapes


@pytest.mark.parametrize("case", STATEFUL, ids=[c.name for c in STATEFUL])
def test_every_update_rejects_a_state_restored_without_target(case):
  params = case.tree()
  tx = case.build()
  grads = grad_stream(params, 1)[0]
  for state in _not_restored(tx.init(params)).values():
    with pytest.raises(ValueError, match=RESTORE):
      tx.update(grads, state, params, **case.extra_args(0))
    with pytest.raises(ValueError, match=RESTORE):
      jax.jit(tx.update)(grads, state, params, **case.extra_args(0))


def _stateless_transforms():
  """Every stateless public transform: the contract cases with an ``optax.EmptyState``, and the flat twin."""
  params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.arange(4.0)}
  made = [(c.name, c.build(), c.tree()) for c in STATELESS]
  made.append(("flat.adaptive_grad_clip", flat.adaptive_grad_clip(0.01, layout=flat.flatten(params)[1]),
               flat.flatten(params)[0]))
  return made


def test_the_stateless_transforms_are_the_known_ones():
  """A new stateless transform joins the None-state test through its contract case."""
  assert {c.name for c in STATELESS} == {"clip_by_value", "adaptive_grad_clip", "scale_by_group"}


@pytest.mark.parametrize("name, tx, params", _stateless_transforms(), ids=lambda x: x if isinstance(x, str) else "")
def test_stateless_transforms_take_optax_none_state(name, tx, params):
  """Issue #20: ``tx.update(g, None)`` as in optax (its own tests, users' code), equal to ``init``'s state."""
  grads = grad_stream(params, 1, scale=3.0)[0]
  for update in (tx.update, jax.jit(tx.update)):
    want, _ = update(grads, tx.init(params), params)
    got, state = update(grads, None, params)
    chex.assert_trees_all_equal(got, want)
    assert state is None, name
  chained = optax.chain(tx, optax.scale(-0.1))  # optax's chain hands each transform its part: None too
  chex.assert_trees_all_equal(chained.update(grads, (None, optax.EmptyState()), params)[0],
                              chained.update(grads, chained.init(params), params)[0])


def test_a_foreign_state_is_named():
  """Another transform's state: the message names both types and says where the state comes from."""
  params = jnp.zeros(3)
  with pytest.raises(ValueError, match="ScaleByAdamState.*init"):
    adaptive.scale_by_adam().update(params, momentum.scale_by_momentum(0.9).init(params))


READERS = [
    (monitor.stats, lambda: monitor.track(momentum.sgd(0.1)), "TrackState"),
    (plateau.scale, lambda: optax.chain(momentum.sgd(0.1), plateau.reduce_on_plateau()), "ReduceOnPlateauState"),
    (regularization.ema_params, lambda: optax.chain(momentum.sgd(0.1), regularization.ema(0.9)), "EmaState"),
    (regularization.swa_params, lambda: optax.chain(momentum.sgd(0.1), regularization.swa(1)), "SwaState"),
]


@pytest.mark.parametrize("reader, make, kind", READERS, ids=[r[2] for r in READERS])
def test_readers_explain_a_state_restored_without_target(reader, make, kind, tmp_path):
  params = _params()
  _save(tmp_path / "ckpt", {"opt_state": make().init(params)})
  raw = _restore(tmp_path / "ckpt")["opt_state"]
  with pytest.raises(ValueError, match=f"found no {kind}.*fields of {kind}.*{RESTORE}"):
    reader(raw)
  with pytest.raises(ValueError, match=f"found no {kind}.*fields of {kind}.*{RESTORE}"):
    reader(_as_restored(make().init(params)))


# ----------------------------------------------------------------------------- item 3: inject_hyperparams
# An explicit Python 0 builds the state an injected 0 builds (before issue #14 it left the momentum
# buffer / the coupled-L2 step out, so the plain checkpoint did not restore into the injected state).
ZEROS = [
    (momentum.sgd, dict(learning_rate=0.1, momentum=0.0, weight_decay=0.0)),
    (momentum.sgd, dict(learning_rate=0.1, momentum=0, dampening=0.5)),
    (adaptive.rmsprop, dict(learning_rate=1e-2, momentum=0.0, weight_decay=0.0)),
    (adaptive.scale_by_rmsprop, dict(momentum=0.0)),
    (adaptive.adam, dict(learning_rate=1e-2, weight_decay=0.0)),
    (adaptive.adagrad, dict(learning_rate=0.1, weight_decay=0)),
    (adaptive.nadam, dict(learning_rate=1e-2, weight_decay=0.0, decoupled_weight_decay=True)),
]


@pytest.mark.parametrize("make, kwargs", ZEROS, ids=[f"{m.__name__}-{sorted(kw)}" for m, kw in ZEROS])
def test_plain_checkpoint_restores_into_inject_hyperparams(make, kwargs, tmp_path):
  """The realistic flow: save the plain state, restore it as the injected optimizer's inner state, go on."""
  params = _params()
  plain, injected = make(**kwargs), optax.inject_hyperparams(make)(**kwargs)
  mid_params, mid_state = _stepper(plain)(params, plain.init(params), 0, 2)
  _save(tmp_path / "plain", {"params": mid_params, "opt_state": mid_state})
  fresh = injected.init(params)
  target = {"params": jax.eval_shape(lambda: params), "opt_state": jax.eval_shape(lambda: fresh.inner_state)}
  restored = _restore(tmp_path / "plain", target)
  assert state_signature(restored["opt_state"]) == state_signature(mid_state)
  state = fresh._replace(inner_state=restored["opt_state"])
  p_inj, s_inj = _stepper(injected)(restored["params"], state, 2, 2)
  p_plain, s_plain = _stepper(plain)(mid_params, mid_state, 2, 2)
  assert state_signature(s_inj.inner_state) == state_signature(s_plain)
  for got, want in zip(jax.tree.leaves(p_inj), jax.tree.leaves(p_plain)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)

  # And back: the injected optimizer's inner state restores into the plain optimizer.
  _save(tmp_path / "injected", {"opt_state": s_inj.inner_state})
  back = _restore(tmp_path / "injected", {"opt_state": jax.eval_shape(plain.init, params)})["opt_state"]
  assert state_signature(back) == state_signature(s_plain)


def test_a_python_zero_changes_nothing_numerically():
  """The kept state is carried, not used: a Python 0 momentum / weight decay gives torch's plain step."""
  params = {"w": jnp.array([1.0, -2.0, jnp.inf]), "b": jnp.array([-0.0, 3.0, 0.5])}
  grads = {"w": jnp.array([0.5, -0.0, 1.0]), "b": jnp.array([-0.0, 2.0, jnp.nan])}
  for zero, none in [(momentum.sgd(0.1, momentum=0.0, weight_decay=0.0), momentum.sgd(0.1)),
                     (adaptive.rmsprop(0.1, momentum=0.0, weight_decay=0.0), adaptive.rmsprop(0.1)),
                     (adaptive.adam(0.1, weight_decay=0.0), adaptive.adam(0.1))]:
    s_zero, s_none = zero.init(params), none.init(params)
    for _ in range(2):
      u_zero, s_zero = zero.update(grads, s_zero, params)
      u_none, s_none = none.update(grads, s_none, params)
      for a, b in zip(jax.tree.leaves(u_zero), jax.tree.leaves(u_none)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.signbit(a), np.signbit(b))


# ----------------------------------------------------------------- NNX without a target (issue #21 item 7)
def _nnx_optimizer():
  nnx = pytest.importorskip("flax.nnx")
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  tx = optax.chain(momentum.sgd(0.1, momentum=0.9), plateau.reduce_on_plateau(factor=0.5, patience=0))
  return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def _nnx_train(model, opt, values):
  nnx = pytest.importorskip("flax.nnx")
  for v in values:
    grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((2, 3))) ** 2))(model)
    opt.update(model, grads, value=v)


def test_nnx_optimizer_restored_without_a_target(tmp_path):
  """flax's own ``nnx.update(optimizer, restored)`` fails on a target-less checkpoint (string tuple keys,
  ``{"value": x}`` Variables); ``training.restore`` puts it back and training resumes bitwise."""
  from jaxopt_practices import training
  nnx = pytest.importorskip("flax.nnx")
  model, opt = _nnx_optimizer()
  _nnx_train(model, opt, [1.0, 2.0])
  _save(tmp_path / "opt", nnx.state(opt))
  _save(tmp_path / "model", nnx.state(model))
  restored = _restore(tmp_path / "opt")  # no target: dicts
  _nnx_train(model, opt, [3.0, 4.0])  # the reference run goes on

  _, opt2 = _nnx_optimizer()
  with pytest.raises(ValueError, match="immutable node of type tuple"):  # what users hit inside flax
    nnx.update(opt2, restored)
  model2, opt2 = _nnx_optimizer()  # a fresh target (the failed update may have half-written it)
  assert training.restore(opt2, restored) is opt2
  assert training.restore(model2, _restore(tmp_path / "model")) is model2
  assert float(plateau.scale(opt2)) == 0.5 and int(opt2.step[...]) == 2
  _nnx_train(model2, opt2, [3.0, 4.0])
  chex = pytest.importorskip("chex")
  chex.assert_trees_all_equal(nnx.to_pure_dict(nnx.state(opt2)), nnx.to_pure_dict(nnx.state(opt)))
  chex.assert_trees_all_equal(nnx.to_pure_dict(nnx.state(model2)), nnx.to_pure_dict(nnx.state(model)))


def test_a_checkpoint_of_another_optimizer_is_a_value_error_with_the_hint(tmp_path):
  from jaxopt_practices import training
  nnx = pytest.importorskip("flax.nnx")
  _, opt = _nnx_optimizer()
  _save(tmp_path / "opt", nnx.state(opt))
  other = nnx.Optimizer(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), adaptive.adam(1e-3), wrt=nnx.Param)
  with pytest.raises(ValueError, match="no entry .*another optimizer or model.*training.restore"):
    training.restore(other, _restore(tmp_path / "opt"))
  wider = nnx.Optimizer(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), opt.tx, wrt=nnx.Param)
  with pytest.raises(ValueError, match="shape"):
    training.restore(wider, _restore(tmp_path / "opt"))


def test_linen_train_state_restored_without_a_target(tmp_path):
  from jaxopt_practices import training
  tx = optax.chain(momentum.sgd(0.1, momentum=0.9), plateau.reduce_on_plateau(factor=0.5, patience=0))
  state = training.TrainState.create(apply_fn=None, params=_params(), tx=tx)
  grads = jax.tree.map(jnp.ones_like, state.params)
  state = state.apply_gradients(grads=grads, value=1.0).apply_gradients(grads=grads, value=2.0)
  _save(tmp_path / "state", state)
  fresh = training.TrainState.create(apply_fn=None, params=_params(), tx=tx)
  with pytest.raises(ValueError, match="without a target"):  # the update itself names the fix
    fresh.replace(opt_state=_restore(tmp_path / "state")["opt_state"]).apply_gradients(grads=grads, value=3.0)
  back = training.restore(fresh, _restore(tmp_path / "state"))
  chex = pytest.importorskip("chex")
  chex.assert_trees_all_equal(back.opt_state, state.opt_state)
  assert type(back) is training.TrainState and float(plateau.scale(back)) == 0.5


def test_nnx_model_with_rng_keys_restored_without_a_target(tmp_path):
  """Typed PRNG keys (a Dropout's own ``nnx.Rngs``) come back as keys of the same implementation."""
  from jaxopt_practices import training
  nnx = pytest.importorskip("flax.nnx")

  def make():
    return nnx.Sequential(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=3)))

  model = make()
  model(jnp.ones((1, 2)))  # advances the dropout stream
  _save(tmp_path / "model", nnx.state(model))
  back = training.restore(make(), _restore(tmp_path / "model"))
  pytest.importorskip("chex").assert_trees_all_equal(
      jax.tree.map(lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x,
                   nnx.to_pure_dict(nnx.state(back))),
      jax.tree.map(lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x,
                   nnx.to_pure_dict(nnx.state(model))))
