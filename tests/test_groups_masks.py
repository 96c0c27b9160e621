"""groups.kernels / union / intersect / exclude and match's unmatched-pattern errors (issue #22 item 6, #21 item 6)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxopt_practices import groups, regularization

SHAPES = {"pos_embed": (5, 4), "cls_token": (1, 4), "Dense_0": {"kernel": (4, 4), "bias": (4,)},
          "BatchNorm_0": {"scale": (4,), "bias": (4,)}, "Dense_1": {"kernel": (4, 3), "bias": (3,)}}


def _params():
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s), jnp.float32), SHAPES,
                      is_leaf=lambda x: isinstance(x, tuple))


def _decay(mask):
  """One step of decoupled decay 0.5 on zero updates: -0.5·θ where the mask is True, 0 elsewhere."""
  p = _params()
  tx = regularization.decoupled_weight_decay(0.5, mask)
  u, _ = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
  return jax.tree.map(lambda u: bool(jnp.any(u != 0)), u)


def test_kernels_is_the_auto_rule():
  p = _params()
  want = jax.tree.map(lambda x: x.ndim >= 2, p)
  assert groups.kernels()(p) == want
  assert _decay(groups.kernels()) == _decay("auto") == want


def test_timm_no_decay_list_on_top_of_the_kernel_rule():
  # timm.optim._param_groups.param_groups_weight_decay: no decay for ndim <= 1, names ending in
  # ".bias" and model.no_weight_decay() (ViT: {"pos_embed", "cls_token"}), written out here by hand.
  p = _params()
  no_wd = {"pos_embed", "cls_token"}
  want = {}
  for path, leaf in zip(jax.tree.leaves(groups.paths(p)), jax.tree.leaves(p)):
    want[path] = not (leaf.ndim <= 1 or path.endswith("bias") or path in no_wd)
  got = groups.exclude(groups.kernels(), groups.match(["pos_embed", "cls_token"]))
  assert dict(zip(jax.tree.leaves(groups.paths(p)), jax.tree.leaves(got(p)))) == want
  assert _decay(got) == got(p)


def test_union_intersect_exclude_are_the_leafwise_set_operations():
  p = _params()
  a, b = groups.match(".*/kernel"), groups.match(["Dense_1/.*", "pos_embed"])
  leaves = lambda t: jax.tree.leaves(t)
  la, lb = leaves(a(p)), leaves(b(p))
  assert leaves(groups.union(a, b)(p)) == [x or y for x, y in zip(la, lb)]
  assert leaves(groups.intersect(a, b)(p)) == [x and y for x, y in zip(la, lb)]
  assert leaves(groups.exclude(a, b)(p)) == [x and not y for x, y in zip(la, lb)]
  assert leaves(groups.exclude(a)(p)) == la
  # every mask form: "auto", None, a prefix pytree of bools, a boolean array leaf
  prefix = {"pos_embed": False, "cls_token": False, "Dense_0": True, "BatchNorm_0": False, "Dense_1": False}
  assert leaves(groups.intersect(None, "auto", prefix)(p)) == [False, False, False, True, False, False, False, False]
  rows = jax.tree.map(lambda x: jnp.zeros(x.shape, bool), p)
  rows["pos_embed"] = jnp.broadcast_to(jnp.arange(5)[:, None] < 2, (5, 4))  # an array mask: the first two rows
  got = groups.union(rows, groups.match("cls_token"))(p)
  np.testing.assert_array_equal(got["pos_embed"], np.broadcast_to(np.arange(5)[:, None] < 2, (5, 4)))
  assert bool(jnp.all(got["cls_token"])) and not bool(jnp.any(got["Dense_0"]["kernel"]))


def test_combined_masks_work_inside_jit_and_optax_masked():
  p = _params()
  mask = groups.exclude(groups.kernels(), groups.match("pos_embed"))
  tx = optax.masked(optax.scale(0.0), mask)
  u, _ = jax.jit(tx.update)(p, tx.init(p), p)
  assert float(jnp.abs(u["Dense_0"]["kernel"]).sum()) == 0.0 and bool(jnp.all(u["pos_embed"] == p["pos_embed"]))


@pytest.mark.parametrize("call, where", [
    (lambda: groups.union(), "at least 1"),
    (lambda: groups.intersect(groups.kernels(), "kernels"), r"masks\[1\]"),
    (lambda: groups.exclude(3.0), r"masks\[0\]"),
])
def test_combinators_reject_non_masks(call, where):
  with pytest.raises(ValueError, match=where):
    call()


def test_match_names_every_pattern_that_matches_nothing():
  p = _params()
  with pytest.raises(ValueError, match=r"\['head/.\*', 'Dense_2/kernel'\] match no leaf") as e:
    groups.match(["head/.*", ".*/kernel", "Dense_2/kernel"])(p)
  assert "'Dense_0/kernel'" in str(e.value) and "allow_unmatched=True" in str(e.value)
  assert "PyTorch" not in str(e.value)
  got = groups.match(["head/.*", ".*/kernel"], allow_unmatched=True)(p)
  assert got["Dense_1"] == {"kernel": True, "bias": False}


def test_match_explains_torch_style_names_on_a_linen_model():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return nn.Dense(2)(nn.BatchNorm(use_running_average=not train)(nn.Dense(3)(x)))

  params = Net().init(jax.random.key(0), jnp.ones((1, 2)))["params"]
  no_decay = groups.match(["bn.weight", "fc.bias"])
  tx = regularization.decoupled_weight_decay(0.1, groups.exclude(groups.kernels(), no_decay))
  with pytest.raises(ValueError) as e:  # at the first update, inside jit too
    jax.jit(tx.update)(params, tx.init(params), params)
  msg = str(e.value)
  assert "['bn.weight', 'fc.bias'] look like PyTorch names" in msg and "'/'-joined flax paths" in msg
  assert "'BatchNorm_0/bias'" in msg and "'Dense_0/kernel'" in msg


def test_match_on_an_nnx_model_state():
  class Net(nnx.Module):
    def __init__(self, rngs):
      self.body = nnx.Linear(2, 3, rngs=rngs)
      self.head = nnx.Linear(3, 1, rngs=rngs)

  state = nnx.state(Net(nnx.Rngs(0)), nnx.Param)
  got = groups.exclude(groups.kernels(), groups.match("head/.*"))(state)
  assert jax.tree.leaves(got) == [False, True, False, False]  # body/bias, body/kernel, head/bias, head/kernel
  with pytest.raises(ValueError, match="Dense_1"):
    groups.match("Dense_1/kernel")(state)
