"""Step-time rows of issue 23's optimizers: ours against optax's counterpart and torch's CPU implementation.

Run through ``step_time.py`` (``python benchmarks/step_time.py --only new-optimizers``, or as
part of the full run). For each of NAdam, RAdam, Adamax, Adadelta and Rprop, on the same flat
10M float32 buffer as the other ``*_flat_10M`` rows: our donated jitted step, optax's, and
``torch.optim.<Class>.step()`` on one 10M ``torch.nn.Parameter`` (torch's defaults:
``foreach=None``, which is the single-tensor path for CPU tensors), interleaved round by
round in one process, best round kept. Same hyperparameters in all three.

optax's counterparts are not all the same algorithm (the table says so):
``optax.nadam`` is Adam with Dozat's Nesterov term (no ``momentum_decay`` / ``mu_product``);
``optax.radam`` puts eps on the bias-corrected root and rectifies at ``rho_t >= 5``;
``optax.rprop`` applies the previous step's update (one step late, so its step needs no new
step size); Adamax and Adadelta are torch's algorithm.
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np
import optax

from jaxopt_practices import adaptive

# arrays read + written per step by the minimal implementation (params, grads, two state buffers)
TRAFFIC = {"nadam": 7, "radam": 7, "adamax": 7, "adadelta": 7, "rprop": 7}
# name: (ours, optax's counterpart, torch class name, torch kwargs, whether optax runs the same algorithm)
NEW = {
    "nadam": (lambda: adaptive.nadam(2e-3), lambda: optax.nadam(2e-3), "NAdam", dict(lr=2e-3),
              "optax.nadam is Adam + Nesterov (Dozat), not torch's NAdam: no momentum_decay"),
    "radam": (lambda: adaptive.radam(1e-3), lambda: optax.radam(1e-3), "RAdam", dict(lr=1e-3),
              "optax.radam: eps on the bias-corrected root, threshold >= 5"),
    "adamax": (lambda: adaptive.adamax(2e-3), lambda: optax.adamax(2e-3), "Adamax", dict(lr=2e-3), "same algorithm"),
    "adadelta": (lambda: adaptive.adadelta(1.0), lambda: optax.adadelta(1.0), "Adadelta", dict(lr=1.0),
                 "same algorithm"),
    "rprop": (lambda: adaptive.rprop(1e-2), lambda: optax.rprop(1e-2), "Rprop", dict(lr=1e-2),
              "optax.rprop applies the previous step's update (one step late), so it reads less"),
}


class TorchBench:
  """``opt.step()`` of a torch optimizer on one flat parameter with a fixed gradient (CPU)."""

  def __init__(self, cls_name: str, kwargs: dict, params: jax.Array, grads: jax.Array):
    import torch

    t0 = time.perf_counter()
    self.param = torch.nn.Parameter(torch.from_numpy(np.array(params)))
    self.param.grad = torch.from_numpy(np.array(grads))
    self.opt = getattr(torch.optim, cls_name)([self.param], **kwargs)
    self.compile_s = time.perf_counter() - t0
    self.run(2)  # warm up: allocates the state

  def run(self, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
      self.opt.step()
    return (time.perf_counter() - t0) * 1e3 / n


def traffic(bench) -> tuple[float, int]:
  """``(arrays, copies)`` of a compiled step: XLA's bytes accessed per step in units of one
  parameter-sized float32 array, and the parameter-sized ``copy`` instructions in its HLO."""
  cost = bench.fn.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  size = 4 * bench.grads.size
  hlo = bench.fn.as_text()
  entry = hlo[hlo.index("ENTRY"):]
  copies = sum(1 for line in entry.splitlines() if " copy(" in line and f"[{bench.grads.size}]" in line.split("=")[1])
  return round(cost.get("bytes accessed", 0.0) / size, 2), copies


def traffic_fields(ours, optax_) -> dict:
  """The record fields of :func:`traffic` for both compiled steps (each read once)."""
  (arrays_ours, copies_ours), (arrays_optax, copies_optax) = traffic(ours), traffic(optax_)
  return dict(arrays_ours=arrays_ours, arrays_optax=arrays_optax, copies_ours=copies_ours, copies_optax=copies_optax)


def rows(n: int, label: str, rounds: int, steps: int, triad: float, st) -> list[dict]:
  """One record per optimizer: ours vs optax (``optax_ms``) with ``torch_ms`` beside them.

  ``st`` is the ``step_time`` module (its ``Bench``, ``interleaved_rounds``, ``record`` and ``_flat``).
  """
  p, g = st._flat(n)
  records = []
  for name, (ours, theirs, torch_cls, torch_kw, same) in NEW.items():
    b_ours, b_opt = st.Bench(ours(), p, g), st.Bench(theirs(), p, g)
    b_torch = TorchBench(torch_cls, torch_kw, p, g)
    times = st.interleaved_rounds([b_ours, b_opt, b_torch], rounds, steps)
    o, t, pt = (min(x) for x in times)
    ratios = sorted(a / b for a, b in zip(times[0], times[1]))
    roof = triad * TRAFFIC[name] / 3
    records.append(st.record(f"{name}_flat_{label}", o, t, roof, b_ours.compile_s, b_opt.compile_s,
                             ratio_median=round(statistics.median(ratios), 3), ratio_min=round(ratios[0], 3),
                             ratio_max=round(ratios[-1], 3),
                             torch_ms=round(pt, 3), optax_semantics=same, bandwidth_fraction=round(roof / o, 3),
                             **traffic_fields(b_ours, b_opt),
                             note="issue 23: torch.optim on CPU (defaults, single-tensor path) in the same run"))
    print(f"  {name}: ours / optax per round, median {statistics.median(ratios):.3f} "
          f"[{ratios[0]:.3f}-{ratios[-1]:.3f}]", flush=True)
    del b_ours, b_opt, b_torch
  return records


def table(records: list[dict]) -> list[str]:
  """README lines for the rows that have a torch time."""
  rows_ = [r for r in records if "torch_ms" in r]
  if not rows_:
    return []
  out = ["| optimizer (flat 10M) | ours ms | optax ms | torch ms | ours / optax | ours / torch | arrays accessed "
         "(ours / optax) | buffer copies (ours / optax) | optax's algorithm |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
  for r in rows_:
    arrays = f"{r['arrays_ours']:g} / {r['arrays_optax']:g}" if "arrays_ours" in r else "-"
    copies = f"{r['copies_ours']} / {r['copies_optax']}" if "copies_ours" in r else "-"
    out.append(f"| {r['case']} | {r['ours_ms']:.2f} | {r['optax_ms']:.2f} | {r['torch_ms']:.2f} | "
               f"{_ratio(r):.2f}x{_spread(r)} | {r['ours_ms'] / r['torch_ms']:.2f}x | {arrays} | {copies} | "
               f"{r['optax_semantics']} |")
  return ["", "Issue 23 rows: ours, optax and `torch.optim` (CPU, default settings) interleaved in one process; "
          "ms: best round; ours / optax: the median of the per-round ratios (their range in brackets). "
          "Arrays accessed: XLA's `bytes accessed` of the compiled step per 10M float32 array "
          "(the memory traffic the step needs); buffer copies: parameter-sized `copy` instructions XLA "
          "inserted to keep an input alive while its buffer is overwritten.", "", *out]


def _ratio(r: dict) -> float:
  """Ours / optax: the median of the per-round ratios (older rows: the ratio of the best rounds)."""
  return r.get("ratio_median", r["ours_ms"] / r["optax_ms"])


def _spread(r: dict) -> str:
  return f" [{r['ratio_min']:.2f}-{r['ratio_max']:.2f}]" if "ratio_min" in r else ""


def targets(records: list[dict]) -> list[tuple[str, str, bool]]:
  """The issue's ``ours <= 1.05x optax`` line for each row (the median per-round ratio)."""
  return [(f"{r['case']}: ours <= 1.05x optax", f"{_ratio(r):.2f}x", _ratio(r) <= 1.05)
          for r in records if "torch_ms" in r]
