"""Do the LR range test's suggestions train? Small models on scikit-learn's digits.

    python benchmarks/lr_suggestions.py            # ~5 minutes on 2 CPU cores
    python benchmarks/lr_suggestions.py --smoke    # seconds: checks that it runs, writes nothing

For each case (a model and an optimizer) and each of its seeds (init and batch order):

1. run ``lr_finder.lr_range_test`` with its defaults (1e-7 -> 10 over 100 steps, batch 64)
   on that seed's initial params and batches, and read fastai's own valley off the same sweep
   (``result.valley(0.0)``, for comparison);
2. train from the same params with a constant learning rate at each of the four suggestions
   (``valley``, the default; fastai's valley; ``minimum``; ``steep``) and at each lr of a log
   grid (1e-4 ... 1, half a decade apart), ``STEPS`` steps of batch 64;
3. record the test accuracy (360 held-out images) and whether the run diverged (a non-finite
   loss, or a final train loss above the initial one).

The best grid lr is the one with the highest mean test accuracy over the seeds; the gap is
that accuracy minus the mean accuracy at the suggestion. All runs of one case (grid x seeds
and suggestions x seeds) train together: one ``vmap`` over the learning rate, the initial
params and the batch order of a ``lax.scan`` over the steps, compiled once.

Two sets of cases. ``first``: MLPs with 1 and 4 hidden layers of 128 ReLU units and a small
CNN, with SGD + momentum 0.9 and Adam, seeds 0-2; fastai's valley failed two of them, and they
were looked at when the default valley was made noise-aware (the tolerance of one noise std
was fixed on principle, not fitted). ``held-out``: a tanh MLP, a wider CNN, Nesterov SGD and
RMSprop, seeds 3-5, run only after the rule was fixed; then flax's ``examples/mnist`` CNN (conv 32 -
conv 64 - dense 256 - dense 10) with SGD momentum 0.9, the case a user found far off (issue #21).

    python benchmarks/lr_suggestions.py --only "mnist CNN"   # just the cases whose model or optimizer
                                                            # contains that text; merged into the results

Writes ``benchmarks/results/lr_suggestions.json`` and the table between the ``lr_suggestions``
markers of ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import convergence_models
import readme_block
from jaxopt_practices import adaptive, lr_finder, momentum
from jaxopt_practices._tour_core import seed_batches

HERE = pathlib.Path(__file__).parent
FIRST_SEEDS, HELD_OUT_SEEDS = (0, 1, 2), (3, 4, 5)
STEPS, BATCH = 400, 64
GRID = tuple(float(v) for v in np.geomspace(1e-4, 1.0, 9))  # half a decade apart
GOAL_POINTS = 1.5


class MLP(nn.Module):
  """``depth`` hidden layers of ``width`` units (ReLU, or tanh)."""
  depth: int
  width: int = 128
  tanh: bool = False

  @nn.compact
  def __call__(self, x):
    for _ in range(self.depth):
      x = nn.Dense(self.width)(x)
      x = jnp.tanh(x) if self.tanh else nn.relu(x)
    return nn.Dense(10)(x)


class Conv3x3(nn.Module):
  """A 3x3 "SAME" convolution (``nn.Conv``'s maths, kernel layout and default init) written as nine
  shifted slices and one matmul: vmapped over the params, XLA:CPU runs it 3-5x faster than the
  grouped convolution that ``vmap`` makes of ``nn.Conv``."""
  features: int

  @nn.compact
  def __call__(self, x):
    c, (h, w) = x.shape[-1], x.shape[1:3]
    kernel = self.param("kernel", nn.linear.default_kernel_init, (3, 3, c, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = jnp.concatenate([xp[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)], axis=-1)
    return cols @ kernel.reshape(9 * c, self.features) + bias


class CNN(nn.Module):
  """conv 3x3 x ``c1`` - maxpool 2 - conv 3x3 x ``c2`` - dense 10, on the 8x8 images."""
  c1: int = 8
  c2: int = 16

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], 8, 8, 1)
    x = nn.max_pool(nn.relu(Conv3x3(self.c1)(x)), (2, 2), strides=(2, 2))
    x = nn.relu(Conv3x3(self.c2)(x))
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


class MnistCNN(nn.Module):
  """flax's ``examples/mnist`` CNN: conv 3x3 x 32 - avgpool 2 - conv 3x3 x 64 - avgpool 2 - dense 256 - dense 10,
  on the 8x8 images (scaled to [0, 1] as the example scales MNIST; 2x2x64 features reach the dense layer)."""

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], 8, 8, 1)
    x = nn.avg_pool(nn.relu(Conv3x3(32)(x)), (2, 2), strides=(2, 2))
    x = nn.avg_pool(nn.relu(Conv3x3(64)(x)), (2, 2), strides=(2, 2))
    x = nn.relu(nn.Dense(256)(x.reshape(x.shape[0], -1)))
    return nn.Dense(10)(x)


MODELS = {"MLP 1x128": MLP(depth=1), "MLP 4x128": MLP(depth=4), "CNN 8-16": CNN(),
          "MLP 2x256 tanh": MLP(depth=2, width=256, tanh=True), "CNN 16-32": CNN(16, 32),
          "mnist CNN 32-64-256": MnistCNN()}
OPTIMIZERS = {"SGD momentum 0.9": lambda lr: momentum.sgd(lr, momentum=0.9), "Adam": lambda lr: adaptive.adam(lr),
              "SGD Nesterov 0.9": lambda lr: momentum.sgd(lr, momentum=0.9, nesterov=True),
              "RMSprop": lambda lr: adaptive.rmsprop(lr)}
CASES = ([("first", m, o, FIRST_SEEDS) for m in ("MLP 1x128", "MLP 4x128", "CNN 8-16")
          for o in ("SGD momentum 0.9", "Adam")]
         + [("held-out", "MLP 2x256 tanh", o, HELD_OUT_SEEDS) for o in ("SGD momentum 0.9", "Adam", "RMSprop")]
         + [("held-out", "CNN 16-32", o, HELD_OUT_SEEDS) for o in ("SGD Nesterov 0.9", "Adam")]
         + [("held-out", "mnist CNN 32-64-256", "SGD momentum 0.9", HELD_OUT_SEEDS)])
NAMES = ("valley", "fastai valley", "minimum", "steep")  # what is trained: the suggestions, and fastai's valley


def data():
  """Digits / 16, the same stratified 80/20 split as ``convergence.py``."""
  x, y = load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32)
  return train_test_split(x, y.astype(np.int32), test_size=0.2, random_state=0, stratify=y)


def train(model, make_optimizer, splits, lrs, params, idx):
  """Every run at once (``convergence_models.train_runs``: one compiled, vmapped scan); returns the
  test accuracies and the per-step train losses, one row per run."""
  xtr, xte, ytr, yte = map(jnp.asarray, splits)

  def loss_fn(p, ids):
    return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, xtr[ids]), ytr[ids]).mean()

  final, losses, _ = convergence_models.train_runs(loss_fn, make_optimizer, params, lrs, idx)
  accuracy = jax.jit(jax.vmap(lambda p: jnp.mean(jnp.argmax(model.apply({"params": p}, xte), -1) == yte)))
  return np.asarray(accuracy(final)), losses


def diverged(losses: np.ndarray) -> np.ndarray:
  """Per run: a non-finite loss, or a final train loss (last 10% of steps) above the first one."""
  tail = losses[:, -max(1, losses.shape[1] // 10):].mean(1)
  return ~np.isfinite(losses).all(1) | ~(tail < losses[:, 0])


def init_params(model, x, seeds) -> dict:
  """The initial params of each seed, stacked on a leading axis (one compiled, vmapped init).

  "rbg" keys: on CPU, XLA takes seconds per array shape to compile threefry's random bits.
  """
  keys = jnp.stack([jax.random.key(seed, impl="rbg") for seed in seeds])
  return jax.jit(jax.vmap(lambda key: model.init(key, x[:1])["params"]))(keys)


def suggestions(model, make_optimizer, xtr, ytr, seeds):
  """Per seed: the LR range test's three suggestions (defaults: 1e-7 -> 10, 100 steps), fastai's valley
  (``valley_tolerance=0``) and the measured noise of the smoothed loss."""
  out = []
  stacked = init_params(model, xtr, seeds)
  for k, seed in enumerate(seeds):
    params = jax.tree.map(lambda leaf, k=k: leaf[k], stacked)
    idx = seed_batches(seed, len(xtr), 100, BATCH)
    batches = [(xtr[i], ytr[i]) for i in idx]

    def loss_fn(p, batch):
      return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, batch[0]), batch[1]).mean()

    res = lr_finder.lr_range_test(loss_fn, params, batches, make_optimizer, progress=False)
    out.append({**res.suggestions, "fastai valley": res.valley(0.0), "noise": res.noise})
  return out


def run_case(model, make_optimizer, splits, seeds, steps, grid):
  """One model and optimizer: suggestions per seed, then every run in one vmapped call."""
  xtr, _, ytr, _ = splits
  sugg = suggestions(model, make_optimizer, xtr, ytr, seeds)
  names = list(NAMES)
  lrs = [lr for lr in grid for _ in seeds] + [s[name] for name in names for s in sugg]
  seed_of = [seed for _ in range(len(grid) + len(names)) for seed in seeds]
  params = init_params(model, xtr, seed_of)
  idx = jnp.asarray(np.stack([seed_batches(seed, len(xtr), steps, BATCH) for seed in seed_of]))
  acc, losses = train(model, make_optimizer, splits, jnp.asarray(lrs, jnp.float32), params, idx)
  acc = acc.reshape(-1, len(seeds))
  div = diverged(losses).reshape(-1, len(seeds))
  final = losses[:, -max(1, steps // 10):].mean(1).reshape(-1, len(seeds))
  g = len(grid)
  best = int(np.argmax(acc[:g].mean(1)))
  row = {"grid": [{"lr": lr, "accuracy": acc[i].tolist(), "final_train_loss": final[i].tolist(),
                   "diverged": int(div[i].sum())} for i, lr in enumerate(grid)],
         "best_grid_lr": grid[best], "best_grid_accuracy": float(acc[best].mean())}
  for k, name in enumerate(names):
    row[name] = {"lrs": [s[name] for s in sugg], "accuracy": acc[g + k].tolist(),
                 "final_train_loss": final[g + k].tolist(),
                 "mean_accuracy": float(acc[g + k].mean()), "diverged": int(div[g + k].sum()),
                 "gap_points": 100 * float(acc[best].mean() - acc[g + k].mean())}
  row["noise"] = [s["noise"] for s in sugg]
  return row


def met(row: dict, name: str = "valley") -> bool:
  """The goal: within ``GOAL_POINTS`` of the grid's best test accuracy, and no seed diverged."""
  return row[name]["gap_points"] <= GOAL_POINTS and not row[name]["diverged"]


def table(rows: list[dict]) -> list[str]:
  """The README table: the default suggestion (valley) against the grid's best, then the other three."""
  lines = ["| set | model | optimizer | valley lr (per seed) | valley acc | best grid lr | grid acc | gap (points) "
           "| valley diverged | fastai valley acc (gap) | minimum/10 acc (diverged) | steep acc (diverged) "
           "| grid lrs that diverged |",
           "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
  for r in rows:
    v, f, m, st = r["valley"], r["fastai valley"], r["minimum"], r["steep"]
    n = len(v["lrs"])
    lrs = ", ".join(f"{lr:.2g}" for lr in v["lrs"])
    bad = [f"{g['lr']:.2g} ({g['diverged']}/{n})" for g in r["grid"] if g["diverged"]]
    lines.append(f"| {r['set']} | {r['model']} | {r['optimizer']} | {lrs} | {100 * v['mean_accuracy']:.1f}% | "
                 f"{r['best_grid_lr']:.2g} | {100 * r['best_grid_accuracy']:.1f}% | {v['gap_points']:+.1f} | "
                 f"{v['diverged']}/{n} | {100 * f['mean_accuracy']:.1f}% ({f['gap_points']:+.1f}) | "
                 f"{100 * m['mean_accuracy']:.1f}% ({m['diverged']}/{n}) | "
                 f"{100 * st['mean_accuracy']:.1f}% ({st['diverged']}/{n}) | {', '.join(bad) if bad else 'none'} |")
  return lines


def summary(rows: list[dict]) -> str:
  """How many cases of each set meet the goal, at the default valley and at fastai's."""
  parts = []
  for which in ("first", "held-out"):
    sel = [r for r in rows if r["set"] == which]
    if sel:
      parts.append(f"{which}: default valley {sum(met(r) for r in sel)}/{len(sel)}, "
                   f"fastai's valley {sum(met(r, 'fastai valley') for r in sel)}/{len(sel)}")
  return "; ".join(parts)


def merged(new_rows: list[dict]) -> list[dict]:
  """The rows of ``results/lr_suggestions.json`` with ``new_rows`` in place of the same cases, in ``CASES`` order."""
  old = json.loads((HERE / "results" / "lr_suggestions.json").read_text())["rows"]
  by_case = {(r["set"], r["model"], r["optimizer"]): r for r in old + new_rows}
  return [by_case[c[:3]] for c in CASES if c[:3] in by_case]


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true", help="2 cases, 1 seed, 40 steps, 3 grid lrs; writes nothing")
  parser.add_argument("--only", default=None,
                      help="run only the cases whose model or optimizer name contains this text; their rows replace "
                           "(or join) those of results/lr_suggestions.json and the README table is rewritten")
  args = parser.parse_args(argv)
  cases, steps, grid = (([(c[0], c[1], c[2], c[3][:1]) for c in CASES[::7]], 40, GRID[::4]) if args.smoke
                        else (CASES, STEPS, GRID))
  if args.only is not None:
    cases = [c for c in cases if args.only in c[1] or args.only in c[2]]
    if not cases:
      raise SystemExit(f"--only {args.only!r} matches no case; the cases are {[c[1:3] for c in CASES]}")
  t0 = time.perf_counter()
  splits = data()
  rows = []
  for which, model_name, opt_name, seeds in cases:
    t = time.perf_counter()
    row = {"set": which, "model": model_name, "optimizer": opt_name, "seeds": list(seeds),
           **run_case(MODELS[model_name], OPTIMIZERS[opt_name], splits, seeds, steps, grid)}
    row["wall_time_s"] = time.perf_counter() - t
    rows.append(row)
    print(table([row])[-1], f"{row['wall_time_s']:.0f} s", flush=True)
  total = time.perf_counter() - t0
  if args.only is not None and not args.smoke:
    rows = merged(rows)
    total = sum(r["wall_time_s"] for r in rows)
  lines = table(rows)
  block = (f"{len(cases[0][3])} seeds per case, {steps} steps of batch {BATCH} at a constant lr, "
           "test accuracy on 360 images "
           f"(mean over seeds); grid {', '.join(f'{g:.2g}' for g in grid)}. Goal (within {GOAL_POINTS} points of "
           f"the grid's best, no divergence) met by {summary(rows)}. Total {total:.0f} s on "
           f"`{jax.devices()[0].platform}`.\n\n" + "\n".join(lines))
  print("\n".join(lines))
  print(summary(rows), f"{total:.0f} s")
  if args.smoke:
    return
  meta = {"first_seeds": list(FIRST_SEEDS), "held_out_seeds": list(HELD_OUT_SEEDS), "steps": steps, "batch": BATCH,
          "grid": list(grid), "goal_points": GOAL_POINTS, "total_s": total, "platform": jax.devices()[0].platform}
  (HERE / "results").mkdir(exist_ok=True)
  (HERE / "results" / "lr_suggestions.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
  readme_block.replace_block(HERE / "README.md", "lr_suggestions", block,
                             "LR range test suggestions (digits)")


if __name__ == "__main__":
  main()
