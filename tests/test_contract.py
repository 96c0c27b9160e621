"""The shared contract every public transform of the package goes through.

Cases are registered in ``tests/cases_<module>.py`` files, each defining ``CASES``, a list
of :class:`helpers.ContractCase`. Every case is checked for:

- init/update with and without ``jit`` (same results), no retrace on later updates;
- ``jax.pmap`` on 8 devices with ``pmean``-ed gradients: replicas bitwise identical and
  equal to a single-device run on the mean gradient;
- composition inside ``optax.chain`` and ``optax.inject_hyperparams``;
- ``optax.tree.map_params`` over the state (how sharding specs are built) keeps its structure;
- ``optax.inject_hyperparams`` gives the same inner state structure, leaf shapes and dtypes as
  the plain transform, after init and after updates, and an Orbax checkpoint of the plain state
  restores as the injected optimizer's inner state, which then carries on as the plain one (and back);
- float32 and bfloat16 params: updates in the gradient dtype, floating state in float32
  or wider, state structure / shapes / dtypes unchanged by an update;
- scalar, zero-size and nested leaves.
"""

from __future__ import annotations

import importlib
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import ContractCase, floating_leaves, grad_stream, run, state_signature

NUM_DEVICES = 8
STEPS = 3


def _load_cases() -> list[ContractCase]:
  cases = []
  for path in sorted(pathlib.Path(__file__).parent.glob("cases_*.py")):
    cases.extend(importlib.import_module(path.stem).CASES)
  names = [c.name for c in cases]
  assert len(names) == len(set(names)), f"duplicate contract case names: {names}"
  return cases


CASES = _load_cases()
param = pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])


def test_registry_is_not_empty():
  assert len(CASES) >= 6


@param
def test_jit_matches_eager(case: ContractCase):
  params = case.tree()
  grads = grad_stream(params, STEPS)
  p_eager, s_eager, _ = run(case.build(), params, grads, case.extra_args, jit=False)
  p_jit, s_jit, _ = run(case.build(), params, grads, case.extra_args, jit=True)
  chex.assert_trees_all_close(p_eager, p_jit, rtol=1e-6, atol=1e-6)
  chex.assert_trees_all_close(s_eager, s_jit, rtol=1e-6, atol=1e-6)


@param
def test_no_retrace(case: ContractCase):
  chex.clear_trace_counter()
  tx = case.build()
  params = case.tree()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(g, state, p, extra):
    return tx.update(g, state, p, **extra)

  state = tx.init(params)
  for i, g in enumerate(grad_stream(params, STEPS)):
    _, state = step(g, state, params, case.extra_args(i))


@param
def test_pmap_replicas_identical_and_match_single_device(case: ContractCase):
  assert jax.local_device_count() == NUM_DEVICES, "conftest must create 8 CPU devices"
  params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.arange(4.0)}
  if case.params is not None:  # matrices only: "b" as a (1, 4) row
    params["b"] = params["b"][None]
  per_device = [grad_stream(params, STEPS, seed=10 + d) for d in range(NUM_DEVICES)]
  tx_p = case.build(**case.pmap_kwargs)

  # (grads, state, params) travel as one mapped argument: with an optax.EmptyState state as an
  # argument of its own, the params arrived unmapped here (jax 0.10.2, 8 devices).
  def step(mapped, extra):
    g, state, p = mapped
    g = jax.lax.pmean(g, "i")
    updates, state = tx_p.update(g, state, p, **extra)
    return optax.apply_updates(p, updates), state

  pstep = jax.pmap(step, axis_name="i", in_axes=(0, None))
  rep = lambda t: jax.tree.map(lambda x: jnp.broadcast_to(x, (NUM_DEVICES,) + jnp.shape(x)), t)
  p_rep, s_rep = rep(params), rep(tx_p.init(params))
  for i in range(STEPS):
    g = jax.tree.map(lambda *xs: jnp.stack(xs), *[per_device[d][i] for d in range(NUM_DEVICES)])
    p_rep, s_rep = pstep((g, s_rep, p_rep), case.extra_args(i))

  for tree in (p_rep, s_rep):
    for leaf in jax.tree.leaves(tree):
      leaf = np.asarray(leaf)
      for d in range(1, NUM_DEVICES):
        np.testing.assert_array_equal(leaf[d], leaf[0], err_msg=f"replica {d} differs")

  mean_grads = [jax.tree.map(lambda *xs: sum(xs) / NUM_DEVICES, *[per_device[d][i] for d in range(NUM_DEVICES)])
                for i in range(STEPS)]
  p_single, _, _ = run(case.build(), params, mean_grads, case.extra_args)
  chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], p_rep), p_single, rtol=1e-5, atol=1e-6)


@param
def test_inside_chain(case: ContractCase):
  params = case.tree()
  grads = grad_stream(params, STEPS)
  alone, _, _ = run(case.build(), params, grads, case.extra_args)
  chained, _, _ = run(optax.chain(optax.identity(), case.build(), optax.scale(1.0)), params, grads,
                      case.extra_args)
  chex.assert_trees_all_close(alone, chained, rtol=1e-6, atol=1e-7)


@param
def test_inject_hyperparams(case: ContractCase):
  if not case.inject:
    pytest.skip(f"{case.name} opts out of inject_hyperparams (see its case: no numeric hyperparameter, or why)")
  params = case.tree()
  grads = grad_stream(params, STEPS)
  plain, _, _ = run(case.build(), params, grads, case.extra_args)
  tx = optax.inject_hyperparams(case.make)(**case.kwargs)
  for jit in (False, True):
    injected, state, _ = run(tx, params, grads, case.extra_args, jit=jit)
    chex.assert_trees_all_close(plain, injected, rtol=1e-5, atol=1e-6)
  assert state.hyperparams, "inject_hyperparams found no numeric hyperparameter"


def _params_copies(state, params) -> int:
  """How many subtrees of ``state`` have the tree structure and leaf shapes of ``params``."""
  want = jax.tree.structure(params), [jnp.shape(x) for x in jax.tree.leaves(params)]

  def is_copy(node):
    return (jax.tree.structure(node), [jnp.shape(x) for x in jax.tree.leaves(node)]) == want

  return sum(is_copy(node) for node in jax.tree.leaves(state, is_leaf=is_copy))


@param
def test_map_params(case: ContractCase):
  """``optax.tree.map_params`` finds every params-shaped part of the state, as for optax's own."""
  params = case.tree()
  tx = case.build()
  _, state, _ = run(tx, params, grad_stream(params, STEPS), case.extra_args)
  if not case.map_params:  # per-leaf buffers that are not params-shaped: loud, not wrong specs
    with pytest.raises(ValueError, match="pytree structure"):
      optax.tree.map_params(tx, lambda v: v, state)
    return
  seen = []
  same = optax.tree.map_params(tx, lambda v: seen.append(v) or v, state)
  assert len(seen) == _params_copies(state, params) * len(jax.tree.leaves(params)), (
      "map_params missed (or invented) a params-shaped buffer of the state")
  chex.assert_trees_all_equal(same, state)
  assert jax.tree.structure(same) == jax.tree.structure(state)
  zeroed = optax.tree.map_params(tx, jnp.zeros_like, state)
  assert state_signature(zeroed) == state_signature(state)
  specs = optax.tree.map_params(tx, lambda _: "spec", state, transform_non_params=lambda _: None)
  assert jax.tree.structure(specs, is_leaf=lambda x: x is None) == jax.tree.structure(state)


@param
def test_inject_hyperparams_keeps_the_state_structure(case: ContractCase):
  """The inner state of ``inject_hyperparams(make)(**kwargs)`` is shaped as ``make(**kwargs)``'s."""
  if not case.inject:
    pytest.skip(f"{case.name} opts out of inject_hyperparams (see its case: no numeric hyperparameter, or why)")
  params = case.tree()
  grads = grad_stream(params, 2)
  plain, injected = case.build(), optax.inject_hyperparams(case.make)(**case.kwargs)
  s_plain, s_injected = plain.init(params), injected.init(params)
  assert state_signature(s_injected.inner_state) == state_signature(s_plain), "after init"
  for jit in (False, True):
    _, s_plain, _ = run(plain, params, grads, case.extra_args, jit=jit)
    _, s_injected, _ = run(injected, params, grads, case.extra_args, jit=jit)
    assert state_signature(s_injected.inner_state) == state_signature(s_plain), f"after updates (jit={jit})"


@param
def test_plain_checkpoint_restores_into_inject_hyperparams(case: ContractCase, tmp_path):
  """The restore story behind the structure check: a checkpoint of ``make(**kwargs)``'s state restores,
  with Orbax, as the inner state of ``inject_hyperparams(make)(**kwargs)`` (the state it wraps), and the
  injected optimizer carries on from it as the plain one does; and the other way round."""
  if not case.inject:
    pytest.skip(f"{case.name} opts out of inject_hyperparams (see its case: no numeric hyperparameter, or why)")
  ocp = pytest.importorskip("orbax.checkpoint")
  params = {k: v for k, v in case.tree().items() if k != "empty"}  # Orbax cannot save zero-size arrays
  grads = grad_stream(params, 4)
  plain, injected = case.build(), optax.inject_hyperparams(case.make)(**case.kwargs)
  _, s_plain, _ = run(plain, params, grads[:2], case.extra_args)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(tmp_path / "plain", {"opt_state": s_plain})
  fresh = injected.init(params)
  with ocp.StandardCheckpointer() as ckptr:
    inner = ckptr.restore(tmp_path / "plain", {"opt_state": jax.eval_shape(lambda: fresh.inner_state)})["opt_state"]
  chex.assert_trees_all_equal(inner, s_plain)
  # inject_hyperparams evaluates scheduled hyperparameters at its own counts: carry them on too.
  at_step_2 = lambda c: jnp.full_like(c, 2)  # noqa: E731
  s_injected = fresh._replace(count=at_step_2(fresh.count), inner_state=inner,
                              hyperparams_states=jax.tree.map(at_step_2, fresh.hyperparams_states))
  for i, g in enumerate(grads[2:], start=2):
    u_plain, s_plain = plain.update(g, s_plain, params, **case.extra_args(i))
    u_injected, s_injected = injected.update(g, s_injected, params, **case.extra_args(i))
    chex.assert_trees_all_close(u_injected, u_plain, rtol=1e-5, atol=1e-6)
  assert state_signature(s_injected.inner_state) == state_signature(s_plain)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(tmp_path / "injected", {"opt_state": s_injected.inner_state})
  with ocp.StandardCheckpointer() as ckptr:
    back = ckptr.restore(tmp_path / "injected", {"opt_state": jax.eval_shape(plain.init, params)})["opt_state"]
  assert state_signature(back) == state_signature(s_plain)


@param
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_dtypes_and_state_structure(case: ContractCase, dtype):
  params = case.tree(dtype)
  tx = case.build()
  state = tx.init(params)
  before = state_signature(state)
  for jit in (False, True):
    update = jax.jit(tx.update) if jit else tx.update
    s = state
    for i, g in enumerate(grad_stream(params, STEPS)):
      updates, s = update(g, s, params, **case.extra_args(i))
      for u, gi in zip(jax.tree.leaves(updates), jax.tree.leaves(g)):
        assert u.dtype == gi.dtype, f"update dtype {u.dtype} != gradient dtype {gi.dtype}"
        assert u.shape == gi.shape
      assert state_signature(s) == before, "an update changed the state's structure, shapes or dtypes"
  for leaf in floating_leaves(state):
    assert jnp.finfo(leaf.dtype).bits >= 32, f"state leaf in {leaf.dtype}; accumulators must be float32+"


@param
def test_scalar_empty_and_nested_leaves(case: ContractCase):
  params = case.tree()
  final, state, history = run(case.build(), params, grad_stream(params, STEPS), case.extra_args, jit=True)
  chex.assert_trees_all_equal_shapes(final, params)
  chex.assert_tree_all_finite(final)
  chex.assert_tree_all_finite(history)
  assert final["empty"].shape == (0, 3) and ("scalar" not in params or final["scalar"].shape == ())
