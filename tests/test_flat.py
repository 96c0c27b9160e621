"""The flat-buffer path: layout, masks, segment norms, AGC, and all seven practices = tree path."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import nested_params
from jaxopt_practices import adaptive, clipping, flat, initializers, momentum, plateau, regularization, schedules

STEPS = 4


# Tiny programs: XLA's optimizations cost most of their compile time (fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("fast_compile")


def _init_params():
  """Practice 3: initializers run on the tree, before flattening."""
  k = jax.random.split(jax.random.PRNGKey(0), 4)
  return {
      "conv": {"kernel": initializers.he_normal()(k[0], (3, 2, 4)), "bias": jnp.zeros(4)},
      "dense": {"kernel": initializers.xavier_uniform()(k[1], (8, 5)), "bias": jnp.zeros(5)},
      "out": {"kernel": initializers.orthogonal()(k[2], (5, 1))},
      "scale": jnp.ones([]),
  }


def _loss(params, batch):
  x, y = batch  # x: (B, 4, 2)
  kernel = params["conv"]["kernel"]
  h = jax.nn.relu(jax.lax.conv_general_dilated(x, kernel, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
                  + params["conv"]["bias"][None, None, :])
  h = h.reshape(h.shape[0], -1) @ jnp.zeros((16, 8)).at[jnp.arange(8), jnp.arange(8)].set(1.0)
  h = jnp.tanh(h @ params["dense"]["kernel"] + params["dense"]["bias"][None, :])
  pred = (h @ params["out"]["kernel"])[:, 0] * params["scale"]
  return jnp.mean(jnp.square(pred - y))


def _batches():
  rng = np.random.default_rng(0)
  out = []
  for _ in range(STEPS):
    x = rng.standard_normal((16, 4, 2)).astype(np.float32)
    out.append((x, np.cos(x.sum(axis=(1, 2))).astype(np.float32)))
  return out


def _tree_run(tx, value_from_loss=False):
  params = _init_params()
  state = tx.init(params)
  tx = optax.with_extra_args_support(tx)

  @jax.jit
  def step(p, s, batch):
    loss, g = jax.value_and_grad(_loss)(p, batch)
    u, s = tx.update(g, s, p, **({"value": loss} if value_from_loss else {}))
    return optax.apply_updates(p, u), s, loss

  losses = []
  for batch in _batches():
    params, state, loss = step(params, state, batch)
    losses.append(float(loss))
  return params, state, losses


def _flat_run(make_tx, value_from_loss=False):
  buf, layout = flat.flatten(_init_params())
  tx = make_tx(layout)
  state = tx.init(buf)
  step = flat.flat_train_step(_loss, tx, layout, value_from_loss=value_from_loss)
  losses = []
  for batch in _batches():
    buf, state, loss = step(buf, state, batch)
    losses.append(float(loss))
  return layout.unravel(buf), state, losses, layout


# Each practice, built for the tree (mask as a tree rule) and for the flat buffer (mask via the layout).
PRACTICES = {
    "1_schedule_one_cycle_sgd": (lambda L: momentum.sgd(schedules.one_cycle(0.1, total_steps=STEPS), momentum=0.9),
                                 None),
    "1_schedule_cosine_warmup_adam": (lambda L: adaptive.adam(schedules.warmup(schedules.cosine_annealing(1e-2, 8), 2)),
                                      None),
    "2_reduce_on_plateau": (lambda L: optax.chain(adaptive.adam(1e-2),
                                                  plateau.reduce_on_plateau(factor=0.5, patience=0)), "value"),
    "4_sgd_nesterov_wd": (lambda L: momentum.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3), None),
    "5_adagrad": (lambda L: adaptive.adagrad(0.05, lr_decay=0.01), None),
    "5_rmsprop_centered": (lambda L: adaptive.rmsprop(1e-2, momentum=0.5, centered=True), None),
    "5_adamw_masked": (lambda L: adaptive.adamw(1e-2, weight_decay=0.1, mask="auto" if L is None else L.mask("auto")),
                       None),
    "5_adamw_amsgrad": (lambda L: adaptive.adamw(1e-2, amsgrad=True), None),
    "5_nadam_decoupled_masked": (lambda L: adaptive.nadam(1e-2, weight_decay=0.1, decoupled_weight_decay=True,
                                                          mask="auto" if L is None else L.mask("auto")), None),
    "5_radam_wd": (lambda L: adaptive.radam(1e-2, b2=0.9, weight_decay=1e-2), None),
    "5_adamax": (lambda L: adaptive.adamax(1e-2), None),
    "5_adadelta": (lambda L: adaptive.adadelta(1.0, rho=0.8), None),
    "5_rprop": (lambda L: adaptive.rprop(1e-2, etas=(0.4, 1.5)), None),
    "6_clip_global_norm": (lambda L: optax.chain(clipping.clip_by_global_norm(0.1), adaptive.adam(1e-2)), None),
    "6_clip_value": (lambda L: optax.chain(clipping.clip_by_value(0.01), momentum.sgd(0.1)), None),
    "6_agc": (lambda L: optax.chain(
        clipping.adaptive_grad_clip(0.01) if L is None else flat.adaptive_grad_clip(0.01, layout=L),
        momentum.sgd(0.1, momentum=0.9)), None),
    "6_skip_nonfinite": (lambda L: clipping.skip_nonfinite(adaptive.adam(1e-2), max_consecutive=2), None),
    "7_decoupled_decay_auto": (lambda L: optax.chain(
        adaptive.scale_by_adam(),
        regularization.decoupled_weight_decay(0.5, mask="auto" if L is None else L.mask("auto")),
        optax.scale(-1e-2)), None),
    "7_l2_penalty_callable_mask": (lambda L: optax.chain(
        regularization.l2_penalty(0.1, mask=(lambda p: {**jax.tree.map(lambda _: False, p),
                                                        "dense": {"kernel": True, "bias": False}})
                                  if L is None else L.mask(lambda p: {**jax.tree.map(lambda _: False, p),
                                                                      "dense": {"kernel": True, "bias": False}})),
        momentum.sgd(0.1)), None),
    "7_ema_swa": (lambda L: optax.chain(adaptive.adam(1e-2), regularization.ema(0.9),
                                        regularization.swa(start_step=1, every=1)), None),
}


@pytest.mark.parametrize("name", sorted(PRACTICES))
def test_flat_path_equals_tree_path(name):
  make, extra = PRACTICES[name]
  tree_params, tree_state, tree_losses = _tree_run(make(None), value_from_loss=extra == "value")
  flat_params, flat_state, flat_losses, layout = _flat_run(make, value_from_loss=extra == "value")
  np.testing.assert_allclose(flat_losses, tree_losses, rtol=1e-6, atol=1e-7)
  chex.assert_trees_all_close(flat_params, tree_params, atol=1e-6, rtol=1e-6)
  assert not np.allclose(np.asarray(layout.ravel(flat_params)), np.asarray(layout.ravel(_init_params())))
  # The state holds flat buffers where the tree path holds trees: compare through the layout.
  # (Leaves only: static aux data such as a per-leaf dtype record legitimately differs.)
  # The ema's placement fingerprint samples entries of the leaves it sees (a few leaves of the
  # tree, the one buffer here), so it is the one state leaf that depends on the layout.
  as_tree = jax.tree.map(lambda x: layout.unravel(x) if x.shape == (layout.size,) else x, _unsampled(flat_state))
  chex.assert_trees_all_close(jax.tree.leaves(as_tree), jax.tree.leaves(_unsampled(tree_state)), atol=1e-6, rtol=1e-6)


def _unsampled(state):
  is_ema = lambda s: isinstance(s, regularization.EmaState)
  return jax.tree.map(lambda s: s._replace(checksum=None) if is_ema(s) else s, state, is_leaf=is_ema)


def test_decay_mask_matters_on_the_flat_buffer():
  """Without layout.mask('auto') a flat buffer (ndim 1) would never decay: the mask is needed."""
  make = lambda L: adaptive.adamw(1e-2, weight_decay=0.5, mask="auto" if L is None else L.mask("auto"))
  tree_params, _, _ = _tree_run(make(None))
  wrong, _, _, _ = _flat_run(lambda L: adaptive.adamw(1e-2, weight_decay=0.5, mask="auto"))
  chex.assert_trees_all_close(_flat_run(make)[0], tree_params, atol=1e-6, rtol=1e-6)
  assert not np.allclose(wrong["dense"]["kernel"], tree_params["dense"]["kernel"], atol=1e-6)


# ----------------------------------------------------------------------------- layout
def test_roundtrip_nested_scalar_and_empty_leaves():
  params = nested_params()
  buf, layout = flatten_and_check(params)
  assert buf.shape == (sum(x.size for x in jax.tree.leaves(params)),)
  chex.assert_trees_all_equal(layout.unravel(buf), params)
  chex.assert_trees_all_equal(layout(buf), params)
  np.testing.assert_array_equal(layout.ravel(params), buf)
  chex.assert_trees_all_equal(jax.jit(layout.unravel)(buf), params)


def flatten_and_check(params):
  buf, layout = flat.flatten(params)
  assert layout.num_leaves == len(jax.tree.leaves(params))
  assert layout.segment_ids.shape == (layout.size,)
  return buf, layout


def test_mixed_dtypes_use_the_widest_and_come_back():
  params = {"a": jnp.ones(3, jnp.bfloat16), "b": jnp.full((2, 2), 0.1, jnp.float32)}
  buf, layout = flat.flatten(params)
  assert buf.dtype == jnp.float32
  back = layout.unravel(buf)
  assert back["a"].dtype == jnp.bfloat16 and back["b"].dtype == jnp.float32
  chex.assert_trees_all_equal(back, params)


@pytest.mark.parametrize("mask", ["auto", None, "tree", "callable"])
def test_mask_to_flat_vector(mask):
  params = nested_params()
  _, layout = flat.flatten(params)
  leaves = jax.tree.leaves(params)
  if mask == "auto":
    expected_leaf = [x.ndim >= 2 for x in leaves]
    arg = "auto"
  elif mask is None:
    expected_leaf, arg = [True] * len(leaves), None
  else:
    expected_tree = jax.tree.map(lambda x: x.ndim == 1, params)
    expected_leaf = jax.tree.leaves(expected_tree)
    arg = expected_tree if mask == "tree" else (lambda p: jax.tree.map(lambda x: len(x.shape) == 1, p))
  expected = np.concatenate([np.full(x.size, m, bool) for x, m in zip(leaves, expected_leaf)])
  np.testing.assert_array_equal(layout.mask(arg), expected)


def test_elementwise_mask_leaves():
  params = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(3)}
  _, layout = flat.flatten(params)
  m = layout.mask({"w": np.array([[True, False], [False, True]]), "b": False})
  np.testing.assert_array_equal(m, [False, False, False, True, False, False, True])  # leaves sorted: b, w


def test_leaf_and_unit_norms_match_per_leaf():
  params = nested_params(seed=3)
  params["huge"] = jnp.full((2, 3), 1e30, jnp.float32)  # squares overflow float32
  buf, layout = flat.flatten(params)
  leaves = jax.tree.leaves(params)
  expected = [np.linalg.norm(np.asarray(x, np.float64)) for x in leaves]
  np.testing.assert_allclose(layout.leaf_norms(buf), expected, rtol=1e-6)
  units = lambda x: max(1, x.shape[-1] if x.ndim >= 2 else 1)
  unit_expected = np.concatenate([np.asarray(clipping.unitwise_norm(x)).reshape(-1)[: units(x)] for x in leaves])
  assert layout.num_units == sum(x.shape[-1] if x.ndim >= 2 else 1 for x in leaves)
  np.testing.assert_allclose(jax.jit(layout.unit_norms)(buf), unit_expected, rtol=1e-6)


def test_agc_equals_tree_agc_on_random_units():
  params = nested_params(seed=5)
  grads = jax.tree.map(lambda x: 10.0 * x[..., ::-1] if x.ndim else 10.0 * x, params)
  buf, layout = flat.flatten(params)
  for lam in (1e-3, 0.5, 100.0):
    tree_u, _ = clipping.adaptive_grad_clip(lam).update(grads, optax.EmptyState(), params)
    tx = flat.adaptive_grad_clip(lam, layout=layout)
    flat_u, _ = jax.jit(tx.update)(layout.ravel(grads), tx.init(buf), buf)
    chex.assert_trees_all_close(layout.unravel(flat_u), tree_u, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("grad_scale", [1.0, 1e30, 3e37], ids=["unit", "1e30", "3e37"])
def test_agc_equals_tree_agc_with_huge_gradients_and_zero_units(grad_scale):
  """The flat AGC is the tree AGC: the same kernel, also where g * (max_norm / |g|) would be subnormal."""
  params = {"w": jnp.array([[1.0, 0.0, 2.0], [3.0, 0.0, 0.5]]), "b": jnp.zeros(3), "s": jnp.ones([])}
  grads = {"w": jnp.array([[1.0, 5.0, 0.0], [-2.0, 0.0, 0.0]]) * grad_scale,  # unit 2: zero gradient
           "b": jnp.zeros(3),                                                  # zero params and gradients
           "s": jnp.asarray(grad_scale)}
  buf, layout = flat.flatten(params)
  tree_u, _ = clipping.adaptive_grad_clip(0.01).update(grads, optax.EmptyState(), params)
  tx = flat.adaptive_grad_clip(0.01, layout=layout)
  flat_u, _ = jax.jit(tx.update)(layout.ravel(grads), tx.init(buf), buf)
  assert bool(jnp.all(jnp.isfinite(flat_u)))
  chex.assert_trees_all_close(layout.unravel(flat_u), tree_u, rtol=1e-6, atol=0.0)
  clipped = layout.unravel(flat_u)
  assert float(clipped["w"][0, 1]) != 0.0 and float(clipped["b"][0]) == 0.0 and float(clipped["w"][0, 2]) == 0.0


@pytest.mark.parametrize("args", [(0.1,), (0.1, 1e-2)], ids=["clipping", "clipping_eps"])
def test_agc_layout_first_is_a_deprecated_form(args):
  params = {"w": jnp.array([[3.0, 0.0], [4.0, 1e-4]]), "b": jnp.zeros(2)}
  buf, layout = flat.flatten(params)
  grads = jnp.arange(1.0, 7.0)
  new, _ = flat.adaptive_grad_clip(*args, layout=layout).update(grads, optax.EmptyState(), buf)
  with pytest.warns(DeprecationWarning, match=r"flat\.adaptive_grad_clip\(clipping, eps, layout=layout\)"):
    tx = flat.adaptive_grad_clip(layout, *args)
  old, _ = tx.update(grads, optax.EmptyState(), buf)
  np.testing.assert_array_equal(np.asarray(old), np.asarray(new))


def test_agc_without_layout_raises():
  with pytest.raises(ValueError, match=r"layout must be a FlatLayout, got layout = None"):
    flat.adaptive_grad_clip(0.01)


def test_train_step_rejects_a_tx_that_is_not_a_transform():
  _, layout = flat.flatten({"w": jnp.zeros(2)})
  with pytest.raises(ValueError, match="tx"):
    flat.flat_train_step(_loss, "x", layout)


def test_donation_consumes_buffers():
  buf, layout = flat.flatten(_init_params())
  tx = adaptive.adam(1e-3)
  state = tx.init(buf)
  step = flat.flat_train_step(_loss, tx, layout)
  new_buf, new_state, _ = step(buf, state, _batches()[0])
  assert buf.is_deleted() and state[0].mu.is_deleted()
  assert not new_buf.is_deleted()
  kept = flat.flat_train_step(_loss, tx, layout, donate=False)
  out, _, _ = kept(new_buf, new_state, _batches()[0])
  assert not new_buf.is_deleted() and out.shape == new_buf.shape


def test_has_aux():
  buf, layout = flat.flatten(_init_params())
  tx = momentum.sgd(0.1)
  step = flat.flat_train_step(lambda p, b: (_loss(p, b), p["scale"]), tx, layout, has_aux=True)
  _, _, (loss, aux) = step(buf, tx.init(buf), _batches()[0])
  np.testing.assert_allclose(float(loss), float(_loss(_init_params(), _batches()[0])), rtol=1e-6)
  assert float(aux) == 1.0
