"""One process of the 2-process CPU cluster started by ``test_cluster.py`` (not a test module).

Usage: ``python _cluster_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_PATH``. The parent sets
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` and ``JAX_PLATFORMS=cpu``. Every
process trains the same recipe on a global mesh of all devices (data parallel: the batch
is sharded over both processes), and process 0 writes the final params to ``OUT_PATH``.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_practices import adaptive, clipping, parallel, schedules

STEPS = 3
GLOBAL_BATCH = 32


def make_optimizer() -> optax.GradientTransformation:
  """A full recipe: clipping, AdamW with masked decoupled weight decay, a warmup-cosine schedule."""
  lr = schedules.warmup(schedules.cosine_annealing(1e-2, 10), 2)
  return optax.chain(clipping.clip_by_global_norm(1.0), adaptive.adamw(lr, weight_decay=0.1, mask="auto"))


def init_params():
  k = jax.random.split(jax.random.PRNGKey(0), 2)
  return {"hidden": {"kernel": np.asarray(jax.random.normal(k[0], (8, 16)) / 3.0), "bias": np.zeros(16, np.float32)},
          "out": {"kernel": np.asarray(jax.random.normal(k[1], (16, 1)) / 4.0)}}


def loss_fn(p, batch):
  x, y = batch
  h = jnp.tanh(x @ p["hidden"]["kernel"] + p["hidden"]["bias"][None, :])
  return jnp.mean(jnp.square((h @ p["out"]["kernel"])[:, 0] - y))


def make_batches():
  rng = np.random.default_rng(7)
  out = []
  for _ in range(STEPS):
    x = rng.standard_normal((GLOBAL_BATCH, 8)).astype(np.float32)
    out.append((x, np.sin(x.sum(axis=1)).astype(np.float32)))
  return out


def main(process_id: int, num_processes: int, port: int, out_path: str) -> None:
  from jax.experimental import multihost_utils

  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.config.update("jax_numpy_rank_promotion", "raise")
  jax.config.update("jax_numpy_dtype_promotion", "strict")
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=num_processes,
                             process_id=process_id, initialization_timeout=60)
  assert jax.process_count() == num_processes, jax.process_count()
  mesh = parallel.make_mesh(("data",))
  tx = make_optimizer()
  host_params = init_params()
  p_sh = parallel.fsdp_shardings(host_params, mesh)
  params, state = parallel.init_sharded(tx, host_params, p_sh)
  step = parallel.make_train_step(loss_fn, tx, mesh, p_sh)
  b_sh = parallel.batch_sharding(mesh)
  losses = []
  for batch in make_batches():
    # Each process holds only the rows of the global batch that live on its own devices.
    batch = parallel.shard(batch, jax.tree.map(lambda _: b_sh, batch))
    params, state, loss = step(params, state, batch)
    losses.append(float(np.asarray(loss.addressable_shards[0].data)))  # replicated
  final = multihost_utils.process_allgather(params, tiled=True)
  if process_id == 0:
    leaves = jax.tree.leaves(final)
    np.savez(out_path, losses=np.asarray(losses), devices=jax.device_count(),
             **{f"leaf{i}": np.asarray(x) for i, x in enumerate(leaves)})
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
