"""Every registered practice under pmap, jit data parallel and FSDP sharding on 8 CPU devices.

For each contract case (``tests/cases_*.py``, loaded the way ``test_contract.py`` does) a
small MLP is trained for a few steps on a batch split over 8 devices: replicas must stay
bitwise identical, the result must equal a single-device run on the concatenated batch
(float32, atol 1e-6), and under FSDP every optimizer-state leaf that mirrors a parameter
must be sharded exactly like it (never gathered onto one device).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from helpers import ContractCase
from jaxopt_practices import adaptive, groups, parallel
from test_contract import CASES

NUM_DEVICES = 8
STEPS = 3
PER_DEVICE = 4
AXIS = "i"  # the axis name the contract cases' pmap_kwargs use

SCALE = -0.1


def _build(case: ContractCase, **overrides) -> optax.GradientTransformation:
  """The case's transform followed by ``scale(-0.1)``.

  Bare transforms (``scale_by_adam``, ``clip_by_value``, ``ema``, ...) return a direction of
  the gradient's size and sign, not a step; the trailing scale makes every case a small
  descent step, so three steps stay in a well-conditioned region and the comparison with
  the single-device run measures the parallel reduction, not chaotic amplification.
  """
  tx = case.build(**overrides)
  if case.params is not None:  # a transform of matrices only (Muon): the kernels, as a real model routes them
    tx = optax.multi_transform({"case": tx, "rest": optax.identity()},
                               groups.labels([(".*kernel", "case")], default="rest"))
  return optax.chain(tx, optax.scale(SCALE))
by_case = pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])


def _params():
  k = jax.random.split(jax.random.PRNGKey(0), 3)
  return {"hidden": {"kernel": jax.random.normal(k[0], (8, 16)) / 3.0, "bias": jnp.zeros(16)},
          "out": {"kernel": jax.random.normal(k[1], (16, 1)) / 4.0},
          "scale": jnp.ones([])}


def _loss(params, batch):
  x, y = batch
  h = jnp.tanh(x @ params["hidden"]["kernel"] + params["hidden"]["bias"][None, :])
  pred = (h @ params["out"]["kernel"])[:, 0] * params["scale"]
  return jnp.mean(jnp.square(pred - y))


def _batches():
  rng = np.random.default_rng(42)
  out = []
  for _ in range(STEPS):
    x = rng.standard_normal((NUM_DEVICES * PER_DEVICE, 8)).astype(np.float32)
    y = np.sin(x.sum(axis=1)).astype(np.float32)
    out.append((x, y))
  return out


@functools.cache
def _single_device(name: str):
  """The reference: one device, the whole (concatenated) batch, same number of steps."""
  case = next(c for c in CASES if c.name == name)
  tx = optax.with_extra_args_support(_build(case))
  params = _params()
  state = tx.init(params)

  for i, batch in enumerate(_batches()):  # eager: nothing to compile per case
    g = jax.grad(_loss)(params, batch)
    u, state = tx.update(g, state, params, **case.extra_args(i))
    params = optax.apply_updates(params, u)
  return params, state


def _close(actual, expected):
  """Params: float32 round-off of a differently ordered gradient reduction."""
  chex.assert_trees_all_close(actual, expected, atol=1e-6, rtol=1e-5)


def _close_state(actual, expected):
  """State: some leaves are normalised directions (e.g. centered RMSprop's momentum buffer
  ``g / sqrt(v - m^2)``) that amplify that round-off by ``1/sqrt(v - m^2)``."""
  chex.assert_trees_all_close(actual, expected, atol=1e-5, rtol=1e-4)


def _shards_identical(tree):
  """All addressable copies of every replicated leaf are bitwise equal."""
  for leaf in jax.tree.leaves(tree):
    if leaf.sharding.is_fully_replicated:
      first = np.asarray(leaf.addressable_shards[0].data)
      for s in leaf.addressable_shards[1:]:
        np.testing.assert_array_equal(np.asarray(s.data), first, err_msg=f"copy on {s.device} differs")


# Tiny programs: XLA's optimizations cost most of their compile time (fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == NUM_DEVICES, "conftest must create 8 CPU devices"
  return parallel.make_mesh(("data",))


@by_case
def test_pmap_replicas_identical_and_match_single_device(case: ContractCase):
  tx = _build(case, **case.pmap_kwargs)
  step = parallel.pmap_train_step(_loss, tx, axis_name=AXIS)
  params = parallel.replicate(_params(), axis_name=AXIS)
  state = parallel.replicate(tx.init(_params()), axis_name=AXIS)
  for i, (x, y) in enumerate(_batches()):
    batch = (x.reshape(NUM_DEVICES, PER_DEVICE, -1), y.reshape(NUM_DEVICES, PER_DEVICE))
    params, state, loss = step(params, state, batch, **case.extra_args(i))
  parallel.assert_replicated((params, state, loss))  # bitwise
  ref_params, ref_state = _single_device(case.name)
  _close(parallel.unreplicate(params), ref_params)
  _close_state(parallel.unreplicate(state), ref_state)


def _run_sharded(case, mesh, p_sh):
  tx = _build(case)
  params, state = parallel.init_sharded(tx, _params(), p_sh)
  step = parallel.make_train_step(_loss, tx, mesh, p_sh)
  b_sh = parallel.batch_sharding(mesh)
  for i, batch in enumerate(_batches()):
    batch = jax.device_put(batch, b_sh)
    params, state, loss = step(params, state, batch, **case.extra_args(i))
  return params, state, loss


@by_case
def test_jit_data_parallel_matches_single_device(case: ContractCase, mesh):
  p_sh = parallel.data_parallel_shardings(_params(), mesh)
  params, state, loss = _run_sharded(case, mesh, p_sh)
  for leaf in jax.tree.leaves((params, state, loss)):
    assert leaf.sharding.is_fully_replicated
  parallel.assert_replicated((params, state, loss))  # every device's copy, bitwise
  ref_params, ref_state = _single_device(case.name)
  _close(params, ref_params)
  _close_state(state, ref_state)


@by_case
def test_fsdp_state_sharded_like_params_and_matches_single_device(case: ContractCase, mesh):
  host = _params()
  p_sh = parallel.fsdp_shardings(host, mesh)
  sharded_shapes = {x.shape for x, s in zip(jax.tree.leaves(host), jax.tree.leaves(p_sh))
                    if not s.is_fully_replicated}
  assert sharded_shapes == {(8, 16), (16,), (16, 1)}
  params, state, _ = _run_sharded(case, mesh, p_sh)

  for x, s in zip(jax.tree.leaves(params), jax.tree.leaves(p_sh)):
    assert x.sharding.is_equivalent_to(s, x.ndim), f"param sharding {x.sharding} != {s}"
  expected = parallel.opt_state_shardings(state, params, p_sh)
  for x, s in zip(jax.tree.leaves(state), jax.tree.leaves(expected)):
    assert x.sharding.is_equivalent_to(s, x.ndim), f"state sharding {x.sharding} != {s}"
    # A state leaf of a sharded param's shape is a copy of a parameter: never gathered onto one
    # device, Muon's momentum routed by optax.multi_transform (a masked copy) included. Not
    # checked for Adafactor (its factored row moment of a (16, 1) kernel is (16, 1) too).
    if x.shape in sharded_shapes and case.map_params:
      assert not x.sharding.is_fully_replicated, f"state leaf of shape {x.shape} is replicated"
      assert all(sh.data.size * NUM_DEVICES == x.size for sh in x.addressable_shards)
  _shards_identical(state)
  ref_params, ref_state = _single_device(case.name)
  _close(params, ref_params)
  _close_state(state, ref_state)


# ----------------------------------------------------------------------------- helpers themselves
def test_replicate_unreplicate_roundtrip():
  tree = {"a": jnp.arange(6.0).reshape(2, 3), "b": (jnp.int32(3),)}
  rep = parallel.replicate(tree)
  assert rep["a"].shape == (NUM_DEVICES, 2, 3) and rep["b"][0].shape == (NUM_DEVICES,)
  assert len({s.device for s in rep["a"].addressable_shards}) == NUM_DEVICES
  chex.assert_trees_all_equal(parallel.unreplicate(rep), tree)


def test_fsdp_shardings_choice_of_axis(mesh):
  shapes = {"big": jnp.zeros((3, 16, 8)), "odd": jnp.zeros((3, 5)), "small": jnp.zeros(8), "s": jnp.zeros([])}
  sh = parallel.fsdp_shardings(shapes, mesh, min_size=10)
  assert sh["big"].spec == P(None, "data", None)  # the largest divisible dimension
  assert sh["odd"].spec == P() and sh["s"].spec == P()
  assert sh["small"].spec == P()  # fewer than min_size entries
  assert parallel.fsdp_shardings(shapes, mesh)["small"].spec == P("data")


def test_opt_state_shardings_nested_wrappers(mesh):
  params = _params()
  p_sh = parallel.fsdp_shardings(params, mesh)
  tx = optax.chain(optax.inject_hyperparams(optax.adam)(learning_rate=0.1), optax.ema(0.9))
  state = jax.eval_shape(tx.init, params)
  s_sh = parallel.opt_state_shardings(state, params, p_sh)
  adam_state = s_sh[0].inner_state[0]
  chex.assert_trees_all_equal_structs(adam_state.mu, params)
  for tree in (adam_state.mu, adam_state.nu, s_sh[1].ema):
    assert jax.tree.leaves(tree) == jax.tree.leaves(p_sh)
  assert s_sh[0].hyperparams["learning_rate"].spec == P()
  assert adam_state.count.spec == P()


def test_opt_state_shardings_masked_copies(mesh):
  """optax.multi_transform / optax.masked keep params copies with MaskedNode holes: the leaves
  left are sharded like their params, the holes stay empty, everything else is replicated."""
  params = _params()
  p_sh = parallel.fsdp_shardings(params, mesh)
  label_fn = groups.labels([(".*kernel", "muon")], default="adamw")
  tx = optax.multi_transform({"muon": adaptive.muon(0.02), "adamw": adaptive.adamw(1e-3)}, label_fn)
  state = jax.eval_shape(tx.init, params)
  s_sh = parallel.opt_state_shardings(state, params, p_sh)
  chex.assert_trees_all_equal_structs(jax.tree.map(lambda _: 0, s_sh), jax.tree.map(lambda _: 0, state))
  by_shape = {}
  for x, sh in zip(jax.tree.leaves(state), jax.tree.leaves(s_sh)):
    by_shape.setdefault(x.shape, set()).add(sh.spec)
  expected = {x.shape: s.spec for x, s in zip(jax.tree.leaves(params), jax.tree.leaves(p_sh))}
  for shape, specs in by_shape.items():
    assert specs == {expected.get(shape, P())}, (shape, specs)
  assert any(spec != P() for specs in by_shape.values() for spec in specs)  # something is sharded
  # A masked-out leaf stays a hole in the shardings too (no sharding where the state has no leaf).
  muon_mu = jax.tree.leaves(s_sh.inner_states["muon"], is_leaf=lambda x: isinstance(x, optax.MaskedNode))
  assert sum(isinstance(x, optax.MaskedNode) for x in muon_mu) >= 2


def test_donation_consumes_inputs(mesh):
  tx = adaptive.adam(1e-2)
  p_sh = parallel.fsdp_shardings(_params(), mesh)
  params, state = parallel.init_sharded(tx, _params(), p_sh)
  step = parallel.make_train_step(_loss, tx, mesh, p_sh)
  new_params, new_state, _ = step(params, state, jax.device_put(_batches()[0], parallel.batch_sharding(mesh)))
  # Donated buffers are consumed (XLA may keep a scalar it could not alias, e.g. the count).
  assert all(x.is_deleted() for x in jax.tree.leaves(params))
  assert all(x.is_deleted() for x in jax.tree.leaves(state) if x.ndim > 0)
  assert not any(x.is_deleted() for x in jax.tree.leaves((new_params, new_state)))


def test_value_from_loss_and_aux(mesh):
  tx = optax.GradientTransformationExtraArgs(
      lambda p: optax.EmptyState(),
      lambda u, s, p=None, *, value: (jax.tree.map(lambda g: g * 0.0 + value, u), s))
  aux_loss = lambda p, b: (_loss(p, b), jnp.float32(7.0))
  p_sh = parallel.data_parallel_shardings(_params(), mesh)
  params, state = parallel.init_sharded(tx, _params(), p_sh)
  step = parallel.make_train_step(aux_loss, tx, mesh, p_sh, has_aux=True, value_from_loss=True)
  batch = _batches()[0]
  new_params, _, (loss, aux) = step(params, state, jax.device_put(batch, parallel.batch_sharding(mesh)))
  np.testing.assert_allclose(float(loss), float(_loss(_params(), batch)), rtol=1e-6)
  assert float(aux) == 7.0
  np.testing.assert_allclose(np.asarray(new_params["scale"]), 1.0 + float(loss), rtol=1e-6)


def test_pmap_step_has_aux_and_value_from_loss():
  """The pmean-ed loss is passed as value= and returned with the pmean-ed aux on every replica."""
  tx = optax.GradientTransformationExtraArgs(
      lambda p: optax.EmptyState(),
      lambda u, s, p=None, *, value: (jax.tree.map(lambda g: g * 0.0 + value, u), s))
  aux_loss = lambda p, b: (_loss(p, b), jnp.mean(b[1]))
  step = parallel.pmap_train_step(aux_loss, tx, axis_name=AXIS, has_aux=True, value_from_loss=True)
  x, y = _batches()[0]
  batch = (x.reshape(NUM_DEVICES, PER_DEVICE, -1), y.reshape(NUM_DEVICES, PER_DEVICE))
  params = parallel.replicate(_params(), axis_name=AXIS)
  new_params, _, (loss, aux) = step(params, parallel.replicate(tx.init(_params()), axis_name=AXIS), batch)
  parallel.assert_replicated((new_params, loss, aux))
  np.testing.assert_allclose(np.asarray(loss), float(_loss(_params(), (x, y))), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(aux), float(np.mean(y)), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(new_params["scale"]), 1.0 + np.asarray(loss), rtol=1e-6)


def test_train_steps_reject_a_tx_that_is_not_a_transform(mesh):
  with pytest.raises(ValueError, match="tx"):
    parallel.pmap_train_step(_loss, "x")
  with pytest.raises(ValueError, match="tx"):
    parallel.make_train_step(_loss, "x", mesh, parallel.data_parallel_shardings(_params(), mesh))
  with pytest.raises(ValueError, match="axis_name"):
    parallel.replicate(_params(), axis_name=3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(axis_names=()), "axis_names"),
    (dict(axis_names=("a", "b"), shape=(3, 3)), "shape"),
])
def test_make_mesh_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    parallel.make_mesh(**kwargs)


def test_replicated_sharding(mesh):
  sharding = parallel.replicated_sharding(mesh)
  assert isinstance(sharding, NamedSharding) and sharding.spec == P() and sharding.mesh is mesh


def test_replicated_is_a_deprecated_alias_of_replicated_sharding(mesh):
  with pytest.warns(DeprecationWarning, match=r"parallel\.replicated_sharding"):
    sharding = parallel.replicated(mesh)
  assert sharding == parallel.replicated_sharding(mesh)


# ----------------------------------------------------------------------------- assert_replicated
def _pmap_batches():
  return [(x.reshape(NUM_DEVICES, PER_DEVICE, -1), y.reshape(NUM_DEVICES, PER_DEVICE)) for x, y in _batches()]


def test_assert_replicated_catches_a_step_that_forgets_pmean():
  tx = adaptive.adam(1e-2)

  def step_without_pmean(params, state, batch):  # the bug: each replica applies its own gradient
    updates, state = tx.update(jax.grad(_loss)(params, batch), state, params)
    return optax.apply_updates(params, updates), state

  bad = jax.pmap(step_without_pmean, axis_name=AXIS)
  good = parallel.pmap_train_step(_loss, tx, axis_name=AXIS)
  params = parallel.replicate(_params(), axis_name=AXIS)
  state = parallel.replicate(tx.init(_params()), axis_name=AXIS)
  p_bad, s_bad, p_good, s_good = params, state, params, state
  for batch in _pmap_batches():
    p_bad, s_bad = bad(p_bad, s_bad, batch)
    p_good, s_good, _ = good(p_good, s_good, batch)
  parallel.assert_replicated((p_good, s_good))
  with pytest.raises(ValueError, match=r"leaf \['hidden'\]\['bias'\] differs between replicas: replica 1"):
    parallel.assert_replicated(p_bad)
  with pytest.raises(ValueError, match=r"leaf \[0\]\.mu\['hidden'\]\['bias'\]"):
    parallel.assert_replicated(s_bad)
  gap = float(np.max(np.abs(np.asarray(p_bad["hidden"]["kernel"]) - np.asarray(p_bad["hidden"]["kernel"][0]))))
  parallel.assert_replicated(p_bad["hidden"]["kernel"], atol=gap)  # within atol
  with pytest.raises(ValueError, match=r"leaf <root> differs .* by up to 0\.\d+ \(atol=0.5\)"):
    parallel.assert_replicated(p_bad["hidden"]["kernel"] / gap, atol=0.5)


def test_assert_replicated_on_arrays_replicated_over_a_mesh(mesh):
  sharding = parallel.replicated_sharding(mesh)
  same = jax.device_put(jnp.arange(3.0), sharding)
  parallel.assert_replicated({"w": same, "n": jax.device_put(jnp.int32(2), sharding)})
  copies = [jax.device_put(jnp.arange(3.0) + (0.25 if d.id == 5 else 0.0), d) for d in mesh.devices.flat]
  drifted = jax.make_array_from_single_device_arrays((3,), sharding, copies)
  with pytest.raises(ValueError,
                     match=r"leaf \['w'\] differs between replicas: replica \d differs from replica 0 by up to 0.25"):
    parallel.assert_replicated({"w": drifted})
  parallel.assert_replicated({"w": drifted}, atol=0.25)
  fsdp = jax.device_put(jnp.zeros((16, 2)), NamedSharding(mesh, P("data")))
  with pytest.raises(ValueError, match="is sharded"):
    parallel.assert_replicated({"w": fsdp})


def test_assert_replicated_leaves_it_cannot_read():
  with pytest.raises(ValueError, match=r"leaf \['s'\] has no replica axis"):
    parallel.assert_replicated({"s": jnp.float32(1.0)})
  with pytest.raises(ValueError, match="outside jit"):
    jax.jit(parallel.assert_replicated)(jnp.ones((2, 3)))
  keys = jax.random.split(jax.random.key(0), 2)
  with pytest.raises(ValueError, match="differs between replicas"):
    parallel.assert_replicated(keys)
  parallel.assert_replicated(jnp.stack([jax.random.key_data(jax.random.key(1))] * 2))
  parallel.assert_replicated(jnp.full((NUM_DEVICES, 2), jnp.nan))  # NaNs in the same places are equal
  with pytest.raises(ValueError, match="atol"):
    parallel.assert_replicated(jnp.ones((2, 2)), atol=-1.0)
