"""Step time of Adafactor, ASGD and Muon (issue #23) against optax's counterparts and torch's CPU optimizers.

Run on its own (it wants the whole machine)::

    python benchmarks/step_time_optim2.py            # a few minutes on 2 CPU cores
    python benchmarks/step_time_optim2.py --smoke    # tiny sizes: a check that it runs

One process; ours, optax's and torch's steps are interleaved (alternating rounds, best round
kept) on the same tree of matrices (Flax ``(in, out)``; torch gets ``(out, in)``), so all see
the same machine state. Our and optax's steps are jitted with the params and state donated
(``step_time.Bench``); torch's is ``optimizer.step()`` with the gradients already in ``.grad``.
Counterparts: ``optax.adafactor`` is *another algorithm* (it factors only dims >= 128, clips
before the lr, scales the lr by the param RMS differently) and ``optax.contrib.muon`` differs
too (Newton–Schulz in the gradient's dtype, not bfloat16; its own lr scaling); optax has no
ASGD. Writes ``benchmarks/results/step_time_optim2.json`` and the table between the
``step_time_optim2`` markers of ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

import readme_block
from jaxopt_practices import adaptive, momentum
from step_time import Bench, _device

HERE = pathlib.Path(__file__).parent

CASES = {  # name: (ours, optax's or None, torch class and kwargs)
    "adafactor": (lambda: adaptive.adafactor(1e-2), lambda: optax.adafactor(1e-2),
                  (torch.optim.Adafactor, {"lr": 1e-2})),
    "asgd": (lambda: momentum.asgd(1e-2), None, (torch.optim.ASGD, {"lr": 1e-2})),
    "muon": (lambda: adaptive.muon(1e-3), lambda: optax.contrib.muon(1e-3), (torch.optim.Muon, {"lr": 1e-3})),
}


class TorchBench:
  """``torch.optim`` ``step()`` on ``(out, in)`` copies of the params with the gradients set once."""

  def __init__(self, cls, kwargs, params, grads):
    self.params = [torch.nn.Parameter(torch.tensor(np.asarray(p).T.copy())) for p in jax.tree.leaves(params)]
    for p, g in zip(self.params, jax.tree.leaves(grads)):
      p.grad = torch.tensor(np.asarray(g).T.copy())
    self.opt = cls(self.params, **kwargs)
    self.run(2)

  def run(self, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
      self.opt.step()
    return (time.perf_counter() - t0) * 1e3 / n


def _tree(count: int, shape: tuple[int, int]):
  rng = np.random.default_rng(0)
  params = {f"layer_{i}": {"kernel": jnp.asarray(rng.standard_normal(shape), jnp.float32)} for i in range(count)}
  grads = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), jnp.float32), params)
  return params, grads


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--smoke", action="store_true")
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--count", type=int, default=16, help="matrices in the tree")
  ap.add_argument("--shape", type=int, nargs=2, default=(256, 512), help="each matrix (in, out)")
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--note", default="")
  args = ap.parse_args(argv)
  if args.smoke:
    args.count, args.shape, args.steps, args.rounds = 2, (16, 32), 2, 2
  params, grads = _tree(args.count, tuple(args.shape))
  records, t_start = [], time.perf_counter()
  for name, (ours, theirs, (cls, kw)) in CASES.items():
    benches = [Bench(ours(), params, grads)] + ([Bench(theirs(), params, grads)] if theirs else [])
    benches.append(TorchBench(cls, kw, params, grads))
    times = [[] for _ in benches]
    for _ in range(args.rounds):
      for i, b in enumerate(benches):
        times[i].append(b.run(args.steps))
    best = [min(t) for t in times]
    rec = dict(case=f"{name}_{args.count}x{args.shape[0]}x{args.shape[1]}", ours_ms=round(best[0], 3),
               optax_ms=round(best[1], 3) if theirs else None, torch_ms=round(best[-1], 3),
               compile_ours_s=round(benches[0].compile_s, 3), device=_device(),
               torch_threads=torch.get_num_threads())
    print(rec, flush=True)
    records.append(rec)
  total = time.perf_counter() - t_start
  if args.smoke:
    print(f"smoke run done ({total:.0f} s)")
    return
  out = HERE / "results" / "step_time_optim2.json"
  out.write_text(json.dumps(records, indent=1) + "\n")
  rows = ["| case | ours ms | optax ms | ours / optax | torch CPU ms | ours / torch |", "|---|---|---|---|---|---|"]
  for r in records:
    opt = "—" if r["optax_ms"] is None else f"{r['optax_ms']:.2f}"
    ratio = "—" if r["optax_ms"] is None else f"{r['ours_ms'] / r['optax_ms']:.2f}"
    rows.append(f"| {r['case']} | {r['ours_ms']:.2f} | {opt} | {ratio} | {r['torch_ms']:.2f} | "
                f"{r['ours_ms'] / r['torch_ms']:.2f} |")
  rows += ["", f"{records[0]['device']}; torch threads {records[0]['torch_threads']}; run {total:.0f} s. "
           "optax.adafactor and optax.contrib.muon are different algorithms (see the script's docstring); "
           "optax has no ASGD. " + args.note]
  readme_block.replace_block(HERE / "README.md", "step_time_optim2", "\n".join(rows),
                             heading="Step time: Adafactor, ASGD, Muon vs optax and torch (issue #23)")
  print(f"wrote {out} ({total:.0f} s)")


if __name__ == "__main__":
  main()
