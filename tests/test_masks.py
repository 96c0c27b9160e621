"""Masks take every form ``optax.masked`` takes, with one implementation everywhere (issue #14, item 8).

A mask is ``None``, ``"auto"``, a pytree of bools with the params' structure *or a prefix of it*
(``{"dense": False}`` leaves a whole subtree out; ``True`` alone selects everything), or a
callable returning one of those. Each form must select exactly the leaves ``optax.masked``
selects, in ``decoupled_weight_decay``, ``l2_penalty``, ``adamw(mask=...)`` and
``flat.FlatLayout.mask``. Boolean arrays shaped like their param stay allowed as leaves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_practices import adaptive, flat, regularization, schedules


def _params():
  k = jax.random.split(jax.random.key(0), 5)
  return {"dense": {"kernel": jax.random.normal(k[0], (4, 3)), "bias": jax.random.normal(k[1], (3,))},
          "conv": [jax.random.normal(k[2], (3, 3, 2, 4)), (jax.random.normal(k[3], (4,)),)],
          "scalar": jax.random.normal(k[4], ())}


def _grads():
  return jax.tree.map(lambda p: jnp.cos(p) + 0.5, _params())


FORMS = {
    "full_tree": {"dense": {"kernel": True, "bias": False}, "conv": [True, (False,)], "scalar": False},
    "prefix": {"dense": False, "conv": True, "scalar": True},
    "nested_prefix": {"dense": {"kernel": True, "bias": False}, "conv": False, "scalar": True},
    "prefix_list": {"dense": True, "conv": [False, True], "scalar": False},
    "root_true": True,
    "root_false": False,
    "callable_full": lambda p: jax.tree.map(lambda x: x.ndim >= 2, p),
    "callable_prefix": lambda p: {"dense": True, "conv": False, "scalar": False},
    "numpy_bools": {"dense": np.bool_(True), "conv": np.bool_(False), "scalar": np.array(True)},
}


def _apply(tx, grads=None):
  params = _params()
  updates, _ = tx.update(_grads() if grads is None else grads, tx.init(params), params)
  return updates


def _assert_bitwise(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("form", FORMS)
def test_decoupled_weight_decay_matches_optax_masked(form):
  mask = FORMS[form]
  lr = schedules.constant(0.1)
  ours = regularization.decoupled_weight_decay(0.3, mask, learning_rate=lr)
  theirs = optax.masked(regularization.decoupled_weight_decay(0.3, None, learning_rate=lr), mask)
  _assert_bitwise(_apply(ours), _apply(theirs))


@pytest.mark.parametrize("form", FORMS)
def test_l2_penalty_matches_optax_masked(form):
  mask = FORMS[form]
  _assert_bitwise(_apply(regularization.l2_penalty(0.5, mask)),
                  _apply(optax.masked(regularization.l2_penalty(0.5), mask)))


@pytest.mark.parametrize("form", FORMS)
def test_adamw_mask_matches_optax_masked(form):
  mask = FORMS[form]
  theirs = optax.chain(adaptive.scale_by_adam(), schedules.scale_by_learning_rate(0.1),
                       optax.masked(regularization.decoupled_weight_decay(0.2, None, learning_rate=0.1), mask))
  _assert_bitwise(_apply(adaptive.adamw(0.1, weight_decay=0.2, mask=mask)), _apply(theirs))


@pytest.mark.parametrize("form", FORMS)
def test_flat_layout_mask_selects_what_optax_masked_selects(form):
  mask = FORMS[form]
  params = _params()
  buf, layout = flat.flatten(params)
  tx = regularization.decoupled_weight_decay(0.3, layout.mask(mask))
  u_flat, _ = tx.update(layout.ravel(_grads()), tx.init(buf), buf)
  tree = _apply(optax.masked(regularization.decoupled_weight_decay(0.3, None), mask))
  np.testing.assert_array_equal(np.asarray(u_flat), np.asarray(layout.ravel(tree)))


def test_boolean_array_leaves_mask_entries():
  """A boolean array shaped like its param masks single entries (the package allowed this before)."""
  entries = np.array([[True, False, True]] * 4)
  mask = {"dense": {"kernel": entries, "bias": True}, "conv": False, "scalar": False}
  params, grads = _params(), _grads()
  u = _apply(regularization.decoupled_weight_decay(0.5, mask), grads)
  want = np.where(entries, grads["dense"]["kernel"] - 0.5 * params["dense"]["kernel"], grads["dense"]["kernel"])
  np.testing.assert_array_equal(np.asarray(u["dense"]["kernel"]), want)
  _assert_bitwise(u["conv"], grads["conv"])
  buf, layout = flat.flatten(params)
  flat_mask = layout.mask(mask)
  assert flat_mask.dtype == bool and flat_mask.shape == (layout.size,)
  np.testing.assert_array_equal(layout.unravel(jnp.asarray(flat_mask, jnp.float32))["dense"]["kernel"], entries)


def test_mask_under_jit_and_traced_array_leaves():
  """A callable mask may return traced boolean arrays (computed from the params inside jit)."""
  params, grads = _params(), _grads()
  mask = lambda p: jax.tree.map(lambda x: x > 0, p)  # noqa: E731
  tx = regularization.decoupled_weight_decay(0.5, mask)
  u = jax.jit(tx.update)(grads, tx.init(params), params)[0]
  want = jax.tree.map(lambda g, p: jnp.where(p > 0, g - 0.5 * p, g), grads, params)
  for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


@pytest.mark.parametrize("mask, match", [
    ({"dense": True, "conv": True}, "prefix"),                         # a key missing: not a prefix
    ({"dense": True, "conv": True, "scalar": True, "extra": False}, "prefix"),
    (lambda p: {"dense": "yes", "conv": True, "scalar": True}, "bools"),
    (lambda p: {"dense": np.ones((3,), bool), "conv": True, "scalar": True}, "subtree"),
], ids=["missing_key", "extra_key", "string_leaf", "array_over_subtree"])
def test_bad_masks_raise_value_error_naming_mask(mask, match):
  tx = regularization.decoupled_weight_decay(0.1, mask)
  with pytest.raises(ValueError, match=f"mask.*{match}|{match}.*mask"):
    _apply(tx)
  with pytest.raises(ValueError, match="mask"):
    flat.flatten(_params())[1].mask(mask)


@pytest.mark.parametrize("mask", [{"dense": 1, "conv": True, "scalar": True}, {"dense": None}, [0.5]])
def test_bad_pytree_masks_raise_at_construction(mask):
  with pytest.raises(ValueError, match="mask must be"):
    regularization.decoupled_weight_decay(0.1, mask)
