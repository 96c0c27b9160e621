"""A real 2-process JAX cluster on 127.0.0.1 (gloo CPU collectives, 4 devices per process).

Both processes train the same recipe (global-norm clipping + AdamW with masked decoupled
weight decay + warmup-cosine schedule) for a few steps with the batch sharded over all 8
devices of the cluster and the params / optimizer state FSDP-sharded; the result must equal
a single-process, single-device run on the whole batch. The worker is ``_cluster_worker.py``.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

import _cluster_worker as worker

NUM_PROCESSES = 2
TIMEOUT_S = 150


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _single_process_reference():
  tx = worker.make_optimizer()
  params = jax.tree.map(np.asarray, worker.init_params())
  state = tx.init(params)

  @jax.jit
  def step(p, s, batch):
    loss, g = jax.value_and_grad(worker.loss_fn)(p, batch)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  losses = []
  for batch in worker.make_batches():
    params, state, loss = step(params, state, batch)
    losses.append(float(loss))
  return params, losses


@pytest.mark.slow
def test_two_process_cluster_matches_single_process(tmp_path: pathlib.Path):
  port = _free_port()
  out = tmp_path / "result.npz"
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "PYTHONPATH": os.pathsep.join([str(pathlib.Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
  procs = []
  try:
    for i in range(NUM_PROCESSES):
      procs.append(subprocess.Popen(
          [sys.executable, str(pathlib.Path(worker.__file__)), str(i), str(NUM_PROCESSES), str(port), str(out)],
          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    for i, p in enumerate(procs):
      try:
        log, _ = p.communicate(timeout=TIMEOUT_S)
      except subprocess.TimeoutExpired:
        pytest.fail(f"process {i} did not finish within {TIMEOUT_S} s")
      logs.append(log)
      assert p.returncode == 0, f"process {i} failed (rc {p.returncode}):\n{log[-4000:]}"
  finally:
    for p in procs:  # on any failure, never leave a process (or a held port) behind
      if p.poll() is None:
        p.kill()
        p.wait(timeout=10)

  result = np.load(out)
  assert int(result["devices"]) == 8
  ref_params, ref_losses = _single_process_reference()
  np.testing.assert_allclose(result["losses"], ref_losses, rtol=1e-6, atol=1e-6)
  for i, leaf in enumerate(jax.tree.leaves(ref_params)):
    np.testing.assert_allclose(result[f"leaf{i}"], np.asarray(leaf), rtol=1e-5, atol=1e-6)
