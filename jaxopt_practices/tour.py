"""The tour: each of the seven practices on top of a baseline, on scikit-learn's digits.

A small ReLU MLP (6 hidden layers of 64 units) is trained on the 8x8 digits images
(1,437 train / 360 test, standardised) with plain SGD as the baseline, then with each
practice applied on top of that baseline, then with the full recipe. Each run records
its training loss and learning rate per step, its test accuracy and its wall time;
``run_tour`` writes ``report.md`` and PNG plots into a folder.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_practices import (adaptive, clipping, initializers, lr_finder, momentum, monitor, plateau, recipe,
                              regularization, schedules)
from jaxopt_practices import _step

__all__ = [
    "BASE_LR", "WIDTH", "DEPTH", "BATCH", "MLP", "load_digits", "cross_entropy", "RunResult", "train",
    "run_experiments", "write_report",
]

BASE_LR = 0.05
WIDTH, DEPTH = 64, 6
BATCH = 64


class MLP(nn.Module):
  """``depth`` hidden ReLU layers of ``width`` units and a 10-way linear head."""
  width: int = WIDTH
  depth: int = DEPTH
  kernel_init: Callable[..., jax.Array] = nn.linear.default_kernel_init

  @nn.compact
  def __call__(self, x):
    for _ in range(self.depth):
      x = nn.relu(nn.Dense(self.width, kernel_init=self.kernel_init)(x))
    return nn.Dense(10, kernel_init=self.kernel_init)(x)


def load_digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Digits as float32 features standardised on the train split; 80/20 split."""
  from sklearn.datasets import load_digits as _load

  data = _load()
  x, y = data.data.astype(np.float32), data.target.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(x))
  x, y = x[order], y[order]
  n_train = int(0.8 * len(x))
  mean, std = x[:n_train].mean(0), x[:n_train].std(0) + 1e-6
  x = (x - mean) / std
  return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def cross_entropy(model: nn.Module, params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
  """The mean softmax cross-entropy of ``model`` on images ``x`` with integer labels ``y``."""
  logits = model.apply({"params": params}, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@dataclasses.dataclass
class RunResult:
  """What one tour run measured."""
  name: str
  practice: str
  losses: np.ndarray
  learning_rates: np.ndarray
  grad_norms: np.ndarray
  test_accuracy: float
  wall_time_s: float
  reading: str = ""

  @property
  def final_loss(self) -> float:
    tail = self.losses[-max(1, len(self.losses) // 10):]
    return float(np.mean(tail))


def train(name: str, practice: str, tx: optax.GradientTransformation, data, *, steps: int, seed: int = 0,
          model: nn.Module | None = None, params: Any = None, pass_loss: bool = False,
          eval_params: Callable[[Any, Any], Any] | None = None, progress: bool = True) -> RunResult:
  """Trains ``model`` with ``tx`` (wrapped in ``monitor.track``) for ``steps`` minibatches."""
  from tqdm.auto import tqdm

  x_tr, y_tr, x_te, y_te = data
  model = model or MLP()
  if params is None:
    params = model.init(jax.random.PRNGKey(seed), x_tr[:1])["params"]
  tx = monitor.track(tx)
  state = tx.init(params)
  core = _step.train_step(lambda p, batch: cross_entropy(model, p, *batch), tx, value_from_loss=pass_loss)

  @jax.jit
  def step(params, state, batch):
    params, state, loss = core(params, state, batch, {})
    s = monitor.stats(state)
    return params, state, loss, s["learning_rate"], s["grad_norm"]

  rng = np.random.default_rng(seed)
  order = np.concatenate([rng.permutation(len(x_tr)) for _ in range(steps * BATCH // len(x_tr) + 1)])
  losses, lrs, norms = [], [], []
  start = time.perf_counter()
  for i in tqdm(range(steps), desc=f"{name:<22}", disable=not progress, leave=False):
    idx = order[i * BATCH:(i + 1) * BATCH]
    params, state, loss, lr, gnorm = step(params, state, (x_tr[idx], y_tr[idx]))
    losses.append(loss)
    lrs.append(lr)
    norms.append(gnorm)
  final = eval_params(params, state) if eval_params else params
  accuracy = float(jnp.mean(jnp.argmax(model.apply({"params": final}, x_te), -1) == y_te))
  wall = time.perf_counter() - start
  return RunResult(name, practice, np.asarray(jax.device_get(losses)), np.asarray(jax.device_get(lrs)),
                   np.asarray(jax.device_get(norms)), accuracy, wall)


def _reading(run: RunResult, base: RunResult) -> str:
  """One line comparing ``run`` with the baseline: accuracy first, then training loss."""
  if not np.isfinite(run.final_loss):
    return "diverged (non-finite loss)"
  d_acc = 100 * (run.test_accuracy - base.test_accuracy)
  ratio = run.final_loss / max(base.final_loss, 1e-12)
  if d_acc > 0.5 or (abs(d_acc) <= 0.5 and ratio < 0.8):
    verdict = "better than"
  elif d_acc < -0.5 or ratio > 1.25:
    verdict = "worse than"
  else:
    verdict = "on par with"
  return f"{verdict} the baseline: test accuracy {d_acc:+.1f} points, final train loss x{ratio:.2f}"


def run_experiments(steps: int, *, seed: int = 0, progress: bool = True) -> tuple[list[RunResult], dict]:
  """Runs the baseline, the seven practices and the full recipe; returns results and extras."""
  data = load_digits(seed)
  x_tr, y_tr = data[0], data[1]
  model = MLP()
  extras: dict[str, Any] = {}
  runs = []
  common = dict(steps=steps, seed=seed, progress=progress)

  runs.append(train("baseline", "SGD, constant lr", momentum.sgd(BASE_LR), data, **common))

  sched = schedules.warmup(schedules.cosine_annealing(0.2, t_max=steps - steps // 10), steps // 10)
  runs.append(train("1 schedules", "warmup + cosine annealing", momentum.sgd(sched), data, **common))

  params0 = model.init(jax.random.PRNGKey(seed), x_tr[:1])["params"]
  batches = [(x_tr[i:i + BATCH], y_tr[i:i + BATCH]) for i in range(0, len(x_tr) - BATCH + 1, BATCH)]
  finder = lr_finder.lr_range_test(lambda p, b: cross_entropy(model, p, *b), params0, batches,
                                   lambda lr: momentum.sgd(lr), start_lr=1e-4, end_lr=10.0,
                                   num_steps=min(100, steps), progress=False)
  extras["lr_range_test"] = finder
  found_lr = float(finder.suggestion)
  runs.append(train("2 lr finder + plateau", f"LR range test (lr={found_lr:.3g}) + reduce_on_plateau",
                    optax.chain(momentum.sgd(found_lr),
                                plateau.reduce_on_plateau(factor=0.5, patience=5, accumulation_size=10)),
                    data, pass_loss=True, **common))

  he = MLP(kernel_init=initializers.he_normal())
  runs.append(train("3 initialization", "He (Kaiming) normal init", momentum.sgd(BASE_LR), data, model=he,
                    **common))
  extras["init_reports"] = {
      name: initializers.init_report(lambda p, x, m=m: m.apply({"params": p}, x),
                                     m.init(jax.random.PRNGKey(seed), x_tr[:1])["params"], x_tr[:256])
      for name, m in [("default (lecun, truncated)", model), ("he_normal", he),
                      ("normal(0.01)", MLP(kernel_init=initializers.normal(0.01)))]}

  runs.append(train("4 momentum", "Nesterov momentum 0.9", momentum.sgd(BASE_LR / 5, momentum=0.9, nesterov=True),
                    data, **common))
  runs.append(train("5 adaptive", "AdamW", adaptive.adamw(1e-3, weight_decay=1e-4), data, **common))
  runs.append(train("6 clipping", f"lr x4 ({4 * BASE_LR:g}) made safe by global-norm clipping at 1.0",
                    optax.chain(clipping.clip_by_global_norm(1.0), momentum.sgd(4 * BASE_LR)), data, **common))
  ema_decay = round(1.0 - 10.0 / steps, 4)   # averages over roughly the last 10% of the run
  runs.append(train("7 regularization", f"decoupled weight decay + EMA ({ema_decay}) of the weights",
                    optax.chain(momentum.sgd(BASE_LR),
                                regularization.decoupled_weight_decay(1e-3 * BASE_LR),
                                regularization.ema(ema_decay)),
                    data, eval_params=lambda p, s: regularization.ema_params(s), **common))

  config = recipe.preset("tour", total_steps=steps)
  config["averaging"]["decay"] = ema_decay
  extras["recipe"] = config
  runs.append(train("full recipe", "recipe.build(preset('tour'))", recipe.build(config), data,
                    model=he, eval_params=lambda p, s: regularization.ema_params(s), **common))
  base = runs[0]
  for run in runs[1:]:
    run.reading = _reading(run, base)
  base.reading = "reference: plain SGD at a constant learning rate, default Flax init"
  return runs, extras


def write_report(runs: Sequence[RunResult], extras: dict, out: pathlib.Path, steps: int) -> pathlib.Path:
  """Writes ``report.md`` and the PNG plots into ``out``; returns the report's path."""
  out.mkdir(parents=True, exist_ok=True)
  _write_plots(runs, extras, out)
  path = out / "report.md"
  path.write_text("\n".join(_report_lines(runs, extras, steps)))
  return path


def _write_plots(runs: Sequence[RunResult], extras: dict, out: pathlib.Path) -> None:
  """``loss_curves.png``, ``lr_curves.png``, ``lr_range_test.png`` and ``activation_std.png``."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  def save(fig, name):
    fig.savefig(out / name, dpi=110)
    plt.close(fig)

  def curves(values, ylabel, title, name):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in runs:
      ax.plot(values(r), label=r.name)
    ax.set(xlabel="step", ylabel=ylabel, yscale="log", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, name)

  curves(lambda r: np.convolve(r.losses, np.ones(10) / 10, mode="valid"), "train loss (10-step mean)",
         "Loss curves", "loss_curves.png")
  curves(lambda r: r.learning_rates, "learning rate applied", "Learning-rate curves", "lr_curves.png")
  save(extras["lr_range_test"].plot(), "lr_range_test.png")

  fig, ax = plt.subplots(figsize=(7, 4))
  for name, rep in extras["init_reports"].items():
    rep.plot(ax=ax, label=name)
  ax.set_title("Activation std through depth (before training)")
  fig.tight_layout()
  save(fig, "activation_std.png")


def _report_lines(runs: Sequence[RunResult], extras: dict, steps: int) -> list[str]:
  """The lines of ``report.md``: the setup, one table row per run, notes and the recipe config."""
  lines = [
      "# jaxopt-practices tour",
      "",
      f"Digits (scikit-learn, 1,437 train / 360 test), MLP {DEPTH}x{WIDTH} ReLU, batch {BATCH}, {steps} steps, "
      f"device: {jax.devices()[0].platform}.",
      "",
      "| run | practice | final train loss | test accuracy | wall time (s) | reading |",
      "|---|---|---|---|---|---|",
  ]
  for r in runs:
    lines.append(f"| {r.name} | {r.practice} | {r.final_loss:.4f} | {100 * r.test_accuracy:.1f}% | "
                 f"{r.wall_time_s:.1f} | {r.reading} |")
  lines += [
      "",
      "Final train loss is the mean over the last 10% of steps; wall time includes compilation.",
      f"The LR range test suggested {float(extras['lr_range_test'].suggestion):.3g} (steepest descent of the "
      "smoothed loss).",
      "",
      "Plots: `loss_curves.png`, `lr_curves.png` (the learning rate each step actually used, read with "
      "`monitor.stats`), `lr_range_test.png`, `activation_std.png`.",
      "",
      "Full recipe config:",
      "",
      "```json",
      json.dumps(extras["recipe"], indent=2),
      "```",
      "",
  ]
  return lines
