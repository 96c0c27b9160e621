"""groups.labels (issue #23): a labelling for optax.multi_transform, first matching rule wins."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxopt_practices import adaptive, groups, momentum

PARAMS = {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)}, "head": {"kernel": jnp.ones((4, 2))},
          "scales": [jnp.ones(2)]}


def test_first_match_wins_and_default():
  label = groups.labels([("head/.*", "frozen"), (".*/kernel", "muon"), ("head/kernel", "never")], default="adamw")
  assert label(PARAMS) == {"Dense_0": {"kernel": "muon", "bias": "adamw"}, "head": {"kernel": "frozen"},
                           "scales": ["adamw"]}
  assert groups.labels({".*bias": "b"}, default="rest")(PARAMS)["Dense_0"] == {"kernel": "rest", "bias": "b"}
  assert groups.labels([], default="all")(PARAMS)["head"]["kernel"] == "all"


def test_labels_drive_multi_transform():
  tx = optax.multi_transform({"frozen": optax.set_to_zero(), "sgd": momentum.sgd(1.0)},
                             groups.labels([("head/.*", "frozen")], default="sgd"))
  grads = {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)}, "head": {"kernel": jnp.ones((4, 2))},
           "scales": [jnp.ones(2)]}
  u, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  np.testing.assert_array_equal(u["head"]["kernel"], np.zeros((4, 2)))
  np.testing.assert_array_equal(u["Dense_0"]["bias"], -np.ones(4))


def test_labels_on_an_nnx_model():
  model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.Linear(4, 2, rngs=nnx.Rngs(1)))
  tx = optax.multi_transform({"muon": adaptive.muon(0.02), "adamw": adaptive.adamw(1e-3)},
                             groups.labels([(".*kernel", "muon")], default="adamw"))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  before = model.layers[0].kernel[...]
  optimizer.update(model, nnx.grad(lambda m: (m(jnp.ones((2, 3))) ** 2).sum())(model))
  assert not np.array_equal(np.asarray(model.layers[0].kernel[...]), np.asarray(before))
