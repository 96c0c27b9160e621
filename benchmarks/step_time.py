"""Step time of our optimizers against optax, flat buffers against pytrees, and the memory roofline.

Run on its own (it wants the whole machine)::

    python benchmarks/step_time.py            # full run, < 10 min on 2 CPU cores
    python benchmarks/step_time.py --skip-50m --skip-5000   # quicker
    python benchmarks/step_time.py --smoke    # tiny sizes, a few seconds (a check that it runs)
    python benchmarks/step_time.py --only new-optimizers   # issue 23's rows (with torch), merged in

Every measurement runs in this one process and ours / optax are *interleaved* (alternating
rounds, best round kept), so both see the same machine state. Every step is jitted with
``donate_argnums`` for the params and the state. Writes ``benchmarks/results/step_time.json``
(a list of records) and the table between the ``step_time`` markers of ``benchmarks/README.md``.

The roofline is a donated in-place triad ``a = a + s * b``: it reads 2 and writes 1 array
per step, the least traffic any update needs. An optimizer that must read ``r`` and write
``w`` arrays of the same size has roofline time ``triad_ms * (r + w) / 3``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax

import readme_block
import step_time_more
from jaxopt_practices import adaptive, clipping, momentum

try:
  from jaxopt_practices import monitor
except ImportError:  # pragma: no cover
  monitor = None

HERE = pathlib.Path(__file__).parent
# arrays read + written per step by the minimal implementation (params, grads, state)
TRAFFIC = {"sgd": 3, "sgd_momentum": 5, "sgd_nesterov": 5, "adagrad": 5, "rmsprop": 5, "adam": 7, "adamw": 7}

PAIRS = {
    "sgd": (lambda: momentum.sgd(1e-3), lambda: optax.sgd(1e-3)),
    "sgd_momentum": (lambda: momentum.sgd(1e-3, momentum=0.9), lambda: optax.sgd(1e-3, momentum=0.9)),
    "sgd_nesterov": (lambda: momentum.sgd(1e-3, momentum=0.9, nesterov=True),
                     lambda: optax.sgd(1e-3, momentum=0.9, nesterov=True)),
    "adagrad": (lambda: adaptive.adagrad(1e-2), lambda: optax.adagrad(1e-2, initial_accumulator_value=0.0, eps=1e-10)),
    "rmsprop": (lambda: adaptive.rmsprop(1e-2), lambda: optax.rmsprop(1e-2, decay=0.99, eps=1e-8)),
    "adam": (lambda: adaptive.adam(1e-3), lambda: optax.adam(1e-3)),
    "adamw": (lambda: adaptive.adamw(1e-3, weight_decay=1e-2), lambda: optax.adamw(1e-3, weight_decay=1e-2)),
}


def _cpu_model() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _device() -> str:
  d = jax.devices()[0]
  return (f"{_cpu_model()}, {os.cpu_count()} cores ({platform.machine()}); jax backend {jax.default_backend()}: "
          f"{d.platform}:{d.device_kind} x{jax.device_count()}")


class Bench:
  """A compiled, donated ``(params, state, grads) -> (params, state)`` step and its live buffers."""

  def __init__(self, tx, params, grads):
    tx = optax.with_extra_args_support(tx)

    def step(p, s, g):
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s

    t0 = time.perf_counter()
    self.state = jax.jit(tx.init)(params)
    self.params = jax.tree.map(jnp.copy, params)
    self.grads = grads
    self.fn = jax.jit(step, donate_argnums=(0, 1)).lower(self.params, self.state, grads).compile()
    self.compile_s = time.perf_counter() - t0
    self.run(2)  # warm up (first-touch page faults)

  def run(self, n: int) -> float:
    """Runs ``n`` steps; returns ms per step (``self.last``: wall ms, CPU ms, minor page faults per step)."""
    jax.block_until_ready(self.params)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(n):
      self.params, self.state = self.fn(self.params, self.state, self.grads)
    jax.block_until_ready(self.params)
    wall, r1 = (time.perf_counter() - t0) * 1e3 / n, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1e3 / n
    self.last = (wall, cpu, (r1.ru_minflt - r0.ru_minflt) / n)
    return wall


def interleaved_rounds(benches: list, rounds: int, steps: int) -> list[list[float]]:
  """ms/step of each bench in every round, rounds alternating between them."""
  times: list[list[float]] = [[] for _ in benches]
  for _ in range(rounds):
    for i, b in enumerate(benches):
      times[i].append(b.run(steps))
  return times


def interleaved(benches: list[Bench], rounds: int, steps: int) -> list[float]:
  """Best-of-rounds ms/step for each bench, rounds alternating between them."""
  return [min(t) for t in interleaved_rounds(benches, rounds, steps)]


# issue 13: the cost of observing / clipping an AdamW step, as a ratio to the plain step
OVERHEAD = {
    "clip_adamw": ("chain(clip_by_global_norm, adamw)", 1.10,
                   lambda: optax.chain(clipping.clip_by_global_norm(1.0), adaptive.adamw(1e-3))),
    "monitor_adamw": ("monitor.track(adamw)", 1.25, lambda: monitor.track(adaptive.adamw(1e-3))),
    "monitor_every10_adamw": ("monitor.track(adamw, every=10)", 1.05,
                              lambda: monitor.track(adaptive.adamw(1e-3), every=10)),
}


def ratio_rounds(benches: list[Bench], rounds: int, steps: int) -> dict:
  """Interleaved rounds of ``[ours, reference]``; per-round wall and CPU-time ratios ours / reference."""
  wall, cpu, faults = [[], []], [[], []], [[], []]
  for _ in range(rounds):
    for i, b in enumerate(benches):
      b.run(steps)
      for acc, v in zip((wall, cpu, faults), b.last):
        acc[i].append(v)
  ratios = [a / b for a, b in zip(*wall)]
  med = statistics.median
  return dict(ours_ms=med(wall[0]), ref_ms=med(wall[1]), ratio=med(ratios), ratio_min=min(ratios),
              ratio_max=max(ratios), cpu_ratio=med([a / b for a, b in zip(*cpu)]),
              faults_ours=med(faults[0]), faults_ref=med(faults[1]))


def overhead_rows(n: int, label: str, rounds: int, steps: int, roof: float) -> list[dict]:
  """Each OVERHEAD case against plain AdamW, built (and compiled) ours first, then reference first."""
  if monitor is None:  # pragma: no cover
    return []
  p, g = _flat(n)
  steps = 10 * -(-steps // 10)  # whole multiples of every=10: each round holds the same measured steps
  records = []
  for name, (what, goal, make) in OVERHEAD.items():
    for order in ("ours_first", "reference_first"):
      if order == "ours_first":
        ours = Bench(make(), p, g)
        ref = Bench(adaptive.adamw(1e-3), p, g)
      else:
        ref = Bench(adaptive.adamw(1e-3), p, g)
        ours = Bench(make(), p, g)
      r = ratio_rounds([ours, ref], rounds, steps)
      temp = ours.fn.memory_analysis().temp_size_in_bytes
      suffix = "" if order == "ours_first" else "_ref_first"
      records.append(record(f"{name}_vs_adamw_{label}{suffix}", r["ours_ms"], r["ref_ms"], roof, ours.compile_s,
                            ref.compile_s, what=what, goal=goal, build_order=order, rounds=rounds,
                            steps_per_round=steps, ratio_median=round(r["ratio"], 3),
                            ratio_min=round(r["ratio_min"], 3), ratio_max=round(r["ratio_max"], 3),
                            cpu_ratio_median=round(r["cpu_ratio"], 3), page_faults_per_step=r["faults_ours"],
                            page_faults_per_step_ref=r["faults_ref"], temp_mb=round(temp / 1e6, 1),
                            note="optax_ms is our plain adamw (the baseline); medians of interleaved rounds"))
      del ours, ref
  return records


def triad_ms(n: int, rounds: int, steps: int) -> float:
  a, b = jnp.zeros(n, jnp.float32), jnp.ones(n, jnp.float32)
  f = jax.jit(lambda a, b: a + jnp.float32(1e-3) * b, donate_argnums=0)
  a = f(a, b)
  best = []
  for _ in range(rounds):
    jax.block_until_ready(a)
    t0 = time.perf_counter()
    for _ in range(steps):
      a = f(a, b)
    jax.block_until_ready(a)
    best.append((time.perf_counter() - t0) * 1e3 / steps)
  return min(best)


def _flat(n, seed=0):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  return jax.random.normal(k1, (n,), jnp.float32), 1e-2 * jax.random.normal(k2, (n,), jnp.float32)


def _tree(num_leaves, leaf_size):
  p = {f"l{i:05d}": jnp.full((leaf_size,), 0.5, jnp.float32) for i in range(num_leaves)}
  g = {k: jnp.full((leaf_size,), 1e-3, jnp.float32) for k in p}
  return p, g


def record(case, ours_ms, optax_ms, roofline_ms, compile_ours_s, compile_optax_s, **extra):
  rec = dict(case=case, ours_ms=round(ours_ms, 3), optax_ms=None if optax_ms is None else round(optax_ms, 3),
             roofline_ms=None if roofline_ms is None else round(roofline_ms, 3),
             compile_ours_s=None if compile_ours_s is None else round(compile_ours_s, 3),
             compile_optax_s=None if compile_optax_s is None else round(compile_optax_s, 3),
             device=_device(), **extra)
  ratio = "" if optax_ms is None else f"  ratio {ours_ms / optax_ms:.3f}"
  print(f"{case:40s} ours {ours_ms:9.3f} ms  other {optax_ms if optax_ms is not None else float('nan'):9.3f} ms{ratio}",
        flush=True)
  return rec


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs")
  ap.add_argument("--skip-50m", action="store_true", help="skip the 50M-parameter cases")
  ap.add_argument("--skip-5000", action="store_true", help="skip the 5,000-leaf tree (its per-leaf compile is slow)")
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--out", default=None, help="results JSON (default results/step_time.json; --smoke: none)")
  ap.add_argument("--readme", default=str(HERE / "README.md"))
  ap.add_argument("--note", default="", help="a note on the machine state, written into the README")
  ap.add_argument("--readme-only", type=float, default=None, metavar="TOTAL_S",
                  help="only rewrite the README table from --out (TOTAL_S: the run's duration)")
  ap.add_argument("--overhead-only", action="store_true",
                  help="only the clip / monitor rows against AdamW (issue 13), merged into --out and the README")
  ap.add_argument("--only", choices=["new-optimizers"], default=None,
                  help="only NAdam/RAdam/Adamax/Adadelta/Rprop vs optax and torch (step_time_more.py), merged in")
  args = ap.parse_args(argv)
  if args.out is None and not args.smoke:
    args.out = str(HERE / "results" / "step_time.json")
  if args.readme_only is not None:
    write_readme(pathlib.Path(args.readme), json.loads(pathlib.Path(args.out).read_text()), args.readme_only, args.note)
    return
  if args.overhead_only:
    return overhead_only(args)
  if args.only == "new-optimizers":
    return new_optimizers_only(args)

  sizes = {"10M": 10_000_000, "50M": 50_000_000}
  trees = {"500x20k": (500, 20_000), "5000x2k": (5_000, 2_000)}
  steps = {"10M": 10, "50M": 4}
  if args.smoke:
    sizes, trees, steps, args.rounds = {"10k": 10_000}, {"50x200": (50, 200)}, {"10k": 5}, 2
  if args.skip_50m:
    sizes.pop("50M", None)
  if args.skip_5000:
    trees.pop("5000x2k", None)

  records = []
  t_start = time.perf_counter()
  triads = {}
  for label, n in sizes.items():
    triads[label] = triad_ms(n, args.rounds, steps[label])
    records.append(record(f"triad_{label}", triads[label], None, triads[label], None, None,
                          gbytes_per_s=round(3 * 4 * n / triads[label] / 1e6, 2)))

  # 1. every optimizer against its optax counterpart on a flat buffer
  for label, n in sizes.items():
    p, g = _flat(n)
    for name, (ours, theirs) in PAIRS.items():
      b_ours, b_opt = Bench(ours(), p, g), Bench(theirs(), p, g)
      o, t = interleaved([b_ours, b_opt], args.rounds, steps[label])
      roof = triads[label] * TRAFFIC[name] / 3
      records.append(record(f"{name}_flat_{label}", o, t, roof, b_ours.compile_s, b_opt.compile_s,
                            bandwidth_fraction=round(roof / o, 3)))
      del b_ours, b_opt
    del p, g

  # 2. Adam on trees: ours per leaf, ours on the flat buffer, optax per leaf
  base = next(iter(sizes))
  records += step_time_more.rows(sizes[base], base, args.rounds, steps[base], triads[base], sys.modules[__name__])
  for label, (leaves, size) in trees.items():
    p, g = _tree(leaves, size)
    fp, fg = jnp.concatenate(list(p.values())), jnp.concatenate(list(g.values()))
    b_tree = Bench(adaptive.adam(1e-3), p, g)
    b_flat = Bench(adaptive.adam(1e-3), fp, fg)
    b_opt = Bench(optax.adam(1e-3), p, g)
    o_tree, o_flat, t = interleaved([b_tree, b_flat, b_opt], args.rounds, steps[base])
    roof = triads[base] * 7 / 3 * (leaves * size) / sizes[base]
    records.append(record(f"adam_tree_{label}", o_tree, t, roof, b_tree.compile_s, b_opt.compile_s,
                          leaves=leaves, note="ours per leaf vs optax.adam per leaf"))
    records.append(record(f"adam_flat_{label}", o_flat, t, roof, b_flat.compile_s, b_opt.compile_s,
                          leaves=leaves, note="ours on one flat buffer vs optax.adam per leaf",
                          speedup=round(t / o_flat, 2), compile_speedup=round(b_opt.compile_s / b_flat.compile_s, 1)))
    del b_tree, b_flat, b_opt, p, g, fp, fg

  # 3. clip + AdamW and monitor.track(AdamW) against plain AdamW, both build orders
  records += overhead_rows(sizes[base], base, args.rounds + 2, steps[base], triads[base] * 7 / 3)

  total = time.perf_counter() - t_start
  # --smoke without --out: a check that it runs, the committed results stay
  if readme_block.write_results(args.out, records, total) and not args.smoke:
    write_readme(pathlib.Path(args.readme), records, total, args.note)


def overhead_only(args) -> None:
  """Runs only the OVERHEAD rows (10M, or 10k with --smoke) and merges them into --out and the README."""
  label, n, steps = ("10k", 10_000, 5) if args.smoke else ("10M", 10_000_000, 10)
  t0 = time.perf_counter()
  roof = triad_ms(n, args.rounds, steps) * 7 / 3
  new = overhead_rows(n, label, args.rounds + 2, steps, roof)
  _merge(args, new, tuple(OVERHEAD), time.perf_counter() - t0)


def new_optimizers_only(args) -> None:
  """Runs only the issue-23 rows (10M, or 10k with --smoke) and merges them into --out and the README."""
  label, n, steps = ("10k", 10_000, 5) if args.smoke else ("10M", 10_000_000, 10)
  t0 = time.perf_counter()
  new = step_time_more.rows(n, label, args.rounds, steps, triad_ms(n, args.rounds, steps), sys.modules[__name__])
  _merge(args, new, (), time.perf_counter() - t0)


def _merge(args, new, drop_prefixes, total) -> None:
  """Replaces the rows named in ``new`` (and those starting with ``drop_prefixes``) in --out and the README."""
  if args.smoke:
    return
  out = pathlib.Path(args.out)
  old = json.loads(out.read_text()) if out.exists() else []
  names = {r["case"] for r in new}
  keep = [r for r in old if r["case"] not in names and not (drop_prefixes and r["case"].startswith(drop_prefixes))]
  out.write_text(json.dumps(keep + new, indent=1) + "\n")
  print(f"merged {len(new)} rows into {out} ({total:.0f} s)")
  write_readme(pathlib.Path(args.readme), keep + new, total, args.note)


def _overhead_table(records) -> list[str]:
  rows = [r for r in records if "build_order" in r]
  if not rows:
    return []
  out = ["| case | built first | adamw ms | ours ms | ours / adamw: median [min-max] | CPU-time ratio | "
         "page faults / step (ours, adamw) | temp MB | goal |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    first = "ours" if r["build_order"] == "ours_first" else "adamw"
    out.append(f"| `{r['what']}` | {first} | {r['optax_ms']:.2f} | {r['ours_ms']:.2f} | "
               f"{r['ratio_median']:.2f}x [{r['ratio_min']:.2f}-{r['ratio_max']:.2f}] | {r['cpu_ratio_median']:.2f}x | "
               f"{r['page_faults_per_step']:.0f}, {r['page_faults_per_step_ref']:.0f} | {r['temp_mb']:.0f} | "
               f"<= {r['goal']:.2f}x |")
  return ["", f"Issue 13 rows: {rows[0]['rounds']} interleaved rounds of {rows[0]['steps_per_round']} donated steps "
          f"each; device: `{rows[0]['device']}`.", "", *out]


def _targets(records):
  by = {r["case"]: r for r in records}
  lines = []
  for r in records:
    name = r["case"]
    if any(name.startswith(k + "_flat_") and name.endswith("M") for k in PAIRS):
      ok = r["ours_ms"] <= 1.05 * r["optax_ms"]
      lines.append((f"{name}: ours <= 1.05x optax", f"{r['ours_ms'] / r['optax_ms']:.2f}x", ok))
  for label in ("5000x2k", "500x20k"):
    r = by.get(f"adam_flat_{label}")
    if r:
      lines.append((f"flat Adam {label}: >= 5x faster per step than per-leaf optax", f"{r['speedup']:.1f}x",
                    r["speedup"] >= 5 if label == "5000x2k" else None))
      lines.append((f"flat Adam {label}: >= 20x faster to compile", f"{r['compile_speedup']:.0f}x",
                    r["compile_speedup"] >= 20 if label == "5000x2k" else None))
  r = by.get("adam_flat_50M")
  if r:
    lines.append(("Adam at 50M: >= 90% of the triad's bandwidth", f"{100 * r['bandwidth_fraction']:.0f}%",
                  r["bandwidth_fraction"] >= 0.9))
  for name, (what, goal, _) in OVERHEAD.items():
    rows = [r for r in records if r["case"].startswith(f"{name}_vs_adamw_")]
    if rows:
      val = " / ".join(f"{r['ratio_median']:.2f}x [{r['ratio_min']:.2f}-{r['ratio_max']:.2f}]" for r in rows)
      lines.append((f"`{what}` / `adamw` <= {goal:.2f}x (median [min-max] of interleaved rounds; "
                    f"built ours first / reference first)", val, all(r["ratio_median"] <= goal for r in rows)))
  return lines


def write_readme(path: pathlib.Path, records, total_s, note):
  def fmt(x, f="{:.2f}"):
    return "–" if x is None else f.format(x)

  rows = ["| case | ours ms | other ms | ours/other | roofline ms | compile ours s | compile other s |",
          "|---|---:|---:|---:|---:|---:|---:|"]
  for r in records:
    ratio = None if r["optax_ms"] is None else r["ours_ms"] / r["optax_ms"]
    rows.append(f"| {r['case']} | {fmt(r['ours_ms'])} | {fmt(r['optax_ms'])} | {fmt(ratio)} | "
                f"{fmt(r['roofline_ms'])} | "
                f"{fmt(r['compile_ours_s'])} | {fmt(r['compile_optax_s'])} |")
  tgt = ["| target | measured | met |", "|---|---:|:---:|"]
  for what, val, ok in _targets(records) + step_time_more.targets(records):
    tgt.append(f"| {what} | {val} | {'–' if ok is None else ('yes' if ok else '**no**')} |")
  block = "\n".join([
      f"Device: `{records[0]['device']}`; jax {jax.__version__}, optax {optax.__version__}; "
      f"total run {total_s:.0f} s. {note}".strip(),
      "", *rows, *_overhead_table(records), *step_time_more.table(records), "", *tgt])
  readme_block.replace_block(path, "step_time", block)


if __name__ == "__main__":
  main()
