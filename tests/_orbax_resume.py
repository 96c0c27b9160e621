"""Worker for test_integration's Orbax resume test: train, save, restore in a fresh process.

Usage: python _orbax_resume.py CKPT_DIR START STEPS OUT.npz
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_practices import recipe

CONFIG = {
    "optimizer": {"name": "adamw", "learning_rate": 1e-2, "amsgrad": True, "mask": "auto"},
    "schedule": {"name": "cosine_annealing", "t_max": 20},
    "warmup": {"steps": 3},
    "clip": {"name": "global_norm", "max_norm": 1.0},
    "gradient_noise": {"eta": 0.01, "seed": 3},
    "weight_decay": {"rate": 1e-3, "learning_rate": None},
    "plateau": {"factor": 0.5, "patience": 1},
    "averaging": {"name": "ema", "decay": 0.9},
    "skip_nonfinite": {"max_consecutive": 5},
}


def init():
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  params = {"dense": {"kernel": jax.random.normal(k1, (8, 4)), "bias": jnp.zeros(4)},
            "head": {"kernel": jax.random.normal(k2, (4, 1)), "bias": jnp.zeros(1)}}
  tx = recipe.build(CONFIG)
  return params, tx, tx.init(params)


def batch(t):
  rng = np.random.default_rng(100 + t)
  return jnp.asarray(rng.standard_normal((16, 8)), jnp.float32), jnp.asarray(rng.standard_normal((16, 1)), jnp.float32)


def loss_fn(params, x, y):
  h = jnp.tanh(x @ params["dense"]["kernel"] + params["dense"]["bias"][None, :])
  return jnp.mean((h @ params["head"]["kernel"] + params["head"]["bias"][None, :] - y) ** 2)


def train(params, tx, opt_state, start, steps):
  @jax.jit
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params, value=loss)
    return optax.apply_updates(params, updates), opt_state

  for t in range(start, start + steps):
    params, opt_state = step(params, opt_state, *batch(t))
  return params, opt_state


def save(path, params, opt_state):
  import orbax.checkpoint as ocp
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, {"params": params, "opt_state": opt_state})


def restore(path, target):
  import orbax.checkpoint as ocp
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(path, abstract)


def main(argv):
  path, start, steps, out = argv
  params, tx, opt_state = init()
  restored = restore(path, {"params": params, "opt_state": opt_state})
  params, opt_state = train(restored["params"], tx, restored["opt_state"], int(start), int(steps))
  leaves = jax.tree.leaves({"params": params, "opt_state": opt_state})
  np.savez(out, *[np.asarray(x) for x in leaves])


if __name__ == "__main__":
  main(sys.argv[1:])
