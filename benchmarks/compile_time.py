"""Time to the first step: compile time of our train steps against their optax equivalents (issue 19).

Run on its own::

    python benchmarks/compile_time.py              # 120 and 480 leaves + the flat path, a few minutes
    python benchmarks/compile_time.py --skip-480   # 120 leaves + the flat path only
    python benchmarks/compile_time.py --smoke      # tiny trees, seconds (a check that it runs)

Each case builds ``step(params, state, grads[, loss]) -> (params, state[, norms])`` and times
``jax.jit(step, donate_argnums=(0, 1)).lower(...).compile()`` (tracing, lowering and XLA's
compile) on a tree of 64-wide layers (a ``(64, 64)`` kernel, a bias and a scale per layer).
Ours and the optax equivalent are built interleaved in this one process, in both orders
(ours first, then optax first), so both see the same machine load and neither always gets
the warm caches. The reference for ``monitor.track`` is what an optax user writes to see the
same numbers: the same optimizer plus ``optax.global_norm`` of the gradients, the updates
and the params, returned from the step. Writes ``benchmarks/results/compile_time.json`` and
the table between the ``compile_time`` markers of ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import optax

import readme_block
from jaxopt_practices import adaptive, clipping, flat, momentum, monitor, plateau, recipe, regularization, schedules

HERE = pathlib.Path(__file__).parent
WIDTH = 64
TOTAL_STEPS = 10_000
WARM = TOTAL_STEPS // 20


def _ours_schedule():
  return schedules.warmup(schedules.cosine_annealing(3e-4, t_max=TOTAL_STEPS - WARM), WARM)


def _optax_schedule():
  return optax.warmup_cosine_decay_schedule(0.0, 3e-4, WARM, TOTAL_STEPS)


def _kernels(params):
  return jax.tree.map(lambda x: x.ndim >= 2, params)


def _ours_recipe():
  config = recipe.preset("transformer-adamw", total_steps=TOTAL_STEPS)
  return monitor.track(optax.chain(recipe.build(config), plateau.reduce_on_plateau(), regularization.ema(0.999)))


def _optax_recipe():
  return optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(_optax_schedule(), b2=0.98, weight_decay=0.01, mask=_kernels),
                     optax.contrib.reduce_on_plateau(), optax.ema(0.999))


# name: (what ours is, what the reference is, goal, ours, reference, reference returns the 3 norms, needs a loss)
CASES = {
    "sgd_momentum": ("momentum.sgd(0.1, momentum=0.9)", "optax.sgd(0.1, momentum=0.9)", 1.15,
                     lambda: momentum.sgd(0.1, momentum=0.9), lambda: optax.sgd(0.1, momentum=0.9), False, False),
    "adamw": ("adaptive.adamw(1e-3)", "optax.adamw(1e-3)", 1.15,
              lambda: adaptive.adamw(1e-3), lambda: optax.adamw(1e-3), False, False),
    "clip_adamw": ("chain(clipping.clip_by_global_norm(1.0), adaptive.adamw(warmup+cosine))",
                   "chain(optax.clip_by_global_norm(1.0), optax.adamw(warmup_cosine_decay_schedule))", 1.25,
                   lambda: optax.chain(clipping.clip_by_global_norm(1.0), adaptive.adamw(_ours_schedule())),
                   lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(_optax_schedule())), False, False),
    "track_adamw": ("monitor.track(adaptive.adamw(1e-3))", "optax.adamw(1e-3) + 3 optax.global_norm", 1.25,
                    lambda: monitor.track(adaptive.adamw(1e-3)), lambda: optax.adamw(1e-3), True, False),
    "track_every10_adamw": ("monitor.track(adaptive.adamw(1e-3), every=10)",
                            "optax.adamw(1e-3) + 3 optax.global_norm", 1.25,
                            lambda: monitor.track(adaptive.adamw(1e-3), every=10), lambda: optax.adamw(1e-3),
                            True, False),
    "track_recipe": ("track(chain(recipe.build(preset('transformer-adamw')), plateau, ema))",
                     "chain(optax clip, adamw, contrib.reduce_on_plateau, optax.ema) + 3 optax.global_norm", 1.25,
                     _ours_recipe, _optax_recipe, True, True),
}


def layered(num_leaves: int) -> dict:
  """``num_leaves / 3`` layers of width 64: kernel ``(64, 64)``, bias and scale ``(64,)``."""
  leaf = lambda shape, v: jnp.full(shape, v, jnp.float32)
  return {f"layer_{i:04d}": {"kernel": leaf((WIDTH, WIDTH), 0.01), "bias": leaf((WIDTH,), 0.0),
                             "scale": leaf((WIDTH,), 1.0)} for i in range(num_leaves // 3)}


def compile_seconds(tx, params, with_norms: bool, with_loss: bool) -> tuple[float, float]:
  """``(wall, cpu)`` seconds to trace, lower and compile one donated train step of ``tx`` on ``params``."""
  tx = optax.with_extra_args_support(tx)

  def step(p, s, g, loss):
    extra = {"value": loss} if with_loss else {}
    u, s = tx.update(g, s, p, **extra)
    new_p = optax.apply_updates(p, u)
    if with_norms:
      return new_p, s, (optax.global_norm(g), optax.global_norm(u), optax.global_norm(p))
    return new_p, s

  state = jax.eval_shape(tx.init, params)
  shapes = jax.eval_shape(lambda: params)
  t0, c0 = time.perf_counter(), time.process_time()
  jax.jit(step, donate_argnums=(0, 1)).lower(shapes, state, shapes, jax.ShapeDtypeStruct((), jnp.float32)).compile()
  return time.perf_counter() - t0, time.process_time() - c0


def measure(name: str, num_leaves: int, params=None, repeats: int = 1) -> dict:
  """Ours and the reference compiled ``repeats`` times in each build order. Ratios are of the
  summed process CPU seconds (what other jobs on the machine disturb least); wall seconds too."""
  what, ref_what, goal, ours, ref, norms, loss = CASES[name]
  params = layered(num_leaves) if params is None else params
  wall, cpu = {}, {}
  for _ in range(repeats):
    for order in ("ours_first", "reference_first"):
      builds = [("ours", ours, False), ("reference", ref, norms)]
      for who, make, with_norms in (builds if order == "ours_first" else builds[::-1]):
        w, c = compile_seconds(make(), params, with_norms, loss)
        wall[f"{who}_{order}"] = wall.get(f"{who}_{order}", 0.0) + w / repeats
        cpu[f"{who}_{order}"] = cpu.get(f"{who}_{order}", 0.0) + c / repeats
  both = lambda d, who: (d[f"{who}_ours_first"] + d[f"{who}_reference_first"]) / 2
  rec = dict(case=name, leaves=num_leaves, ours=what, reference=ref_what, goal=goal, repeats=repeats,
             ours_cpu_s=round(both(cpu, "ours"), 3), reference_cpu_s=round(both(cpu, "reference"), 3),
             ratio=round(both(cpu, "ours") / both(cpu, "reference"), 3),
             ratio_ours_first=round(cpu["ours_ours_first"] / cpu["reference_ours_first"], 3),
             ratio_reference_first=round(cpu["ours_reference_first"] / cpu["reference_reference_first"], 3),
             ours_wall_s=round(both(wall, "ours"), 3), reference_wall_s=round(both(wall, "reference"), 3),
             wall_ratio=round(both(wall, "ours") / both(wall, "reference"), 3),
             cpu_s={k: round(v, 3) for k, v in cpu.items()}, wall_s={k: round(v, 3) for k, v in wall.items()})
  print(f"{name:22s} {num_leaves:5d} leaves  CPU ours {rec['ours_cpu_s']:7.2f} s  "
        f"optax {rec['reference_cpu_s']:7.2f} s  "
        f"ratio {rec['ratio']:.2f} ({rec['ratio_ours_first']:.2f} / {rec['ratio_reference_first']:.2f}); "
        f"wall ratio {rec['wall_ratio']:.2f}", flush=True)
  return rec


def flat_row(num_leaves: int) -> dict:
  """``track(chain(clip, adamw))`` on one flat buffer holding ``num_leaves`` leaves, against optax's chain."""
  buf, _ = flat.flatten(layered(num_leaves))
  CASES["flat_track_clip_adamw"] = (
      "monitor.track(chain(clip_by_global_norm(1.0), adamw(1e-3))) on a flat buffer",
      "chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)) + 3 optax.global_norm on the same buffer", 1.25,
      lambda: monitor.track(optax.chain(clipping.clip_by_global_norm(1.0), adaptive.adamw(1e-3))),
      lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)), True, False)
  return measure("flat_track_clip_adamw", num_leaves, buf)


def _note(rows: list[dict]) -> list[str]:
  """The missed targets, one line each (the reasons are written in the README by hand)."""
  out = []
  for r in rows:
    if r["ratio"] > r["goal"]:
      out.append(f"- **missed**: `{r['case']}` at {r['leaves']} leaves, {r['ratio']:.2f}x (goal {r['goal']:.2f}x).")
  by = {(r["case"], r["leaves"]): r for r in rows}
  for (case, leaves), r in by.items():
    small = by.get((case, leaves // 4))
    if small and r["ours_cpu_s"] / small["ours_cpu_s"] > 4.5:
      out.append(f"- **missed**: `{case}` grows {r['ours_cpu_s'] / small['ours_cpu_s']:.2f}x from {leaves // 4} to "
                 f"{leaves} leaves (goal <= 4.5x).")
  return out or ["Every ratio is within its goal in this run."]


def write_readme(path: pathlib.Path, result: dict) -> None:
  rows = result["rows"]
  lines = [f"Device: `{result['device']}`; jax {result['jax']}, optax {result['optax']}; {result['load']}",
           "", ("Seconds are process CPU seconds per compile (mean of both build orders); the ratio is of "
                "their sums; wall seconds are in the JSON."), "",
           "| case | leaves | ours CPU s | optax CPU s | ours / optax | ours first | optax first | wall ratio | "
           "goal | met |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
  for r in rows:
    lines.append(f"| `{r['ours']}` vs `{r['reference']}` | {r['leaves']} | {r['ours_cpu_s']:.2f} | "
                 f"{r['reference_cpu_s']:.2f} | {r['ratio']:.2f}x | {r['ratio_ours_first']:.2f}x | "
                 f"{r['ratio_reference_first']:.2f}x | {r['wall_ratio']:.2f}x | <= {r['goal']:.2f}x | "
                 f"{'yes' if r['ratio'] <= r['goal'] else '**no**'} |")
  growth = [(r, s) for r in rows for s in rows if r["case"] == s["case"] and r["leaves"] == 4 * s["leaves"]]
  if growth:
    lines += ["", "| case | ours 480 / ours 120 leaves | optax 480 / optax 120 | goal | met |",
              "|---|---:|---:|---:|:---:|"]
    for r, s in growth:
      g = r["ours_cpu_s"] / s["ours_cpu_s"]
      lines.append(f"| `{r['case']}` | {g:.2f}x | {r['reference_cpu_s'] / s['reference_cpu_s']:.2f}x | <= 4.50x | "
                   f"{'yes' if g <= 4.5 else '**no**'} |")
  lines += ["", *_note(rows)]
  readme_block.replace_block(path, "compile_time", "\n".join(lines), heading="Compile time (latest run)")


def _describe(start: tuple, end: tuple) -> str:
  loaded = max(start[0], end[0]) >= 1.0
  caveat = ", the seconds are not an idle machine's" if loaded else ""
  return (f"{'measured under load from other jobs' if loaded else 'measured on a quiet machine'} (1-min load "
          f"average {start[0]:.1f} at the start, {end[0]:.1f} at the end, {os.cpu_count()} cores); ours and optax "
          f"are interleaved in one process, so the ratios are fair{caveat}.")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--smoke", action="store_true", help="tiny trees (12 leaves, flat 60): checks that it runs")
  ap.add_argument("--skip-480", action="store_true", help="only 120 leaves (and the flat path)")
  ap.add_argument("--skip-flat", action="store_true", help="skip the 5,000-leaf flat path")
  ap.add_argument("--only", default="", help="comma-separated case names (default: all)")
  ap.add_argument("--repeats", type=int, default=2, help="compiles per build order and size (480 leaves: 1)")
  ap.add_argument("--out", default=None, help="results JSON (default results/compile_time.json; --smoke: none)")
  ap.add_argument("--readme", default=str(HERE / "README.md"))
  args = ap.parse_args(argv)
  if args.out is None and not args.smoke:
    args.out = str(HERE / "results" / "compile_time.json")
  sizes = [12] if args.smoke else ([120] if args.skip_480 else [120, 480])
  names = [n for n in CASES if not args.only or n in args.only.split(",")]
  load, t0 = os.getloadavg(), time.perf_counter()
  rows = [measure(name, n, repeats=args.repeats if n < 480 else 1) for n in sizes for name in names]
  if not args.skip_flat:
    rows.append(flat_row(60 if args.smoke else 5_000))
  from step_time import _device  # the same device line as the step-time table
  start, end = load, os.getloadavg()
  result = dict(device=_device(), jax=jax.__version__, optax=optax.__version__, load=_describe(start, end),
                load_average_start=start, load_average_end=end, measured_under_load=max(start[0], end[0]) >= 1.0,
                total_s=round(time.perf_counter() - t0, 1), rows=rows)
  if readme_block.write_results(args.out, result, result["total_s"]) and not args.smoke:
    write_readme(pathlib.Path(args.readme), result)


if __name__ == "__main__":
  main()
