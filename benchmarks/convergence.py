"""Small-scale reproductions of the practices' headline findings on scikit-learn's digits.

    python benchmarks/convergence.py          # about a minute on 2 CPU cores

Four experiments, each a few hundred full-jit steps of a small MLP on the 8x8 digits
(1,437 train / 360 test images, no download), 3 seeds each, mean reported:

1. init and depth (Glorot & Bengio 2010; He et al. 2015): a 10-layer ReLU MLP trained with
   SGD from N(0, 0.01²), Xavier and He initialisations — the tiny init does not train.
2. warmup with a large batch (Goyal et al. 2017): full-batch SGD+momentum at a large
   learning rate, with and without a linear warmup.
3. one-cycle / cyclical vs constant learning rate (Smith 2017; Smith & Topin 2019), same
   step budget and peak learning rate.
4. AdamW vs Adam + L2 (Loshchilov & Hutter 2019): the same decay strength, coupled vs
   decoupled, test accuracy.

Writes ``benchmarks/results/convergence.json`` and the table between the ``convergence``
markers of ``benchmarks/README.md``. Numbers are what this run measured — small models,
few steps: they illustrate the direction of each finding, not its size at scale.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from jaxopt_practices import adaptive, initializers, momentum, schedules

HERE = pathlib.Path(__file__).parent
SEEDS = (0, 1, 2)


def data():
  x, y = load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32)
  return train_test_split(x, y.astype(np.int32), test_size=0.2, random_state=0, stratify=y)


def mlp_init(key, sizes, kernel_init):
  params = []
  for k, (a, b) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
    params.append({"kernel": kernel_init(k, (a, b), jnp.float32), "bias": jnp.zeros(b, jnp.float32)})
  return params


def mlp_apply(params, x):
  for layer in params[:-1]:
    x = jax.nn.relu(x @ layer["kernel"] + layer["bias"][None, :])
  return x @ params[-1]["kernel"] + params[-1]["bias"][None, :]


def loss_fn(params, x, y):
  logits = mlp_apply(params, x)
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def train(tx, params, xtr, ytr, steps, batch, seed):
  """Runs ``steps`` minibatch steps inside one ``lax.scan``; returns final params and the loss curve."""
  n = xtr.shape[0]
  idx = np.random.default_rng(seed).integers(0, n, size=(steps, batch)) if batch < n else None
  xtr, ytr = jnp.asarray(xtr), jnp.asarray(ytr)

  def step(carry, ids):
    p, s = carry
    xb, yb = (xtr, ytr) if ids is None else (xtr[ids], ytr[ids])
    loss, g = jax.value_and_grad(loss_fn)(p, xb, yb)
    u, s = tx.update(g, s, p)
    return (optax.apply_updates(p, u), s), loss

  xs = jnp.asarray(idx) if idx is not None else None
  (params, _), losses = jax.jit(lambda c: jax.lax.scan(step, c, xs, length=steps))((params, tx.init(params)))
  return params, np.asarray(losses)


def accuracy(params, x, y):
  return float(jnp.mean(jnp.argmax(mlp_apply(params, jnp.asarray(x)), -1) == jnp.asarray(y)))


def summarize(name, variant, runs, xte, yte):
  finals = [float(np.mean(l[-10:])) for _, l in runs]
  accs = [accuracy(p, xte, yte) for p, _ in runs]
  diverged = sum(not np.isfinite(f) for f in finals)
  return {"experiment": name, "variant": variant, "final_train_loss": float(np.nanmean(finals)) if diverged < len(finals) else None,
          "test_accuracy": float(np.mean(accs)), "diverged_runs": diverged, "seeds": len(runs)}


def main():
  t0 = time.perf_counter()
  xtr, xte, ytr, yte = data()
  rows = []

  # 1. init and depth
  deep = [64] + [64] * 9 + [10]
  inits = {"normal(0.01)": initializers.normal(0.01), "xavier_uniform": initializers.xavier_uniform(),
           "he_normal": initializers.he_normal()}
  for name, init in inits.items():
    runs = [train(momentum.sgd(0.05, momentum=0.9), mlp_init(jax.random.PRNGKey(s), deep, init), xtr, ytr, 300, 64, s)
            for s in SEEDS]
    rows.append(summarize("1 init, 10-layer ReLU MLP, SGD+momentum 0.05, 300 steps", name, runs, xte, yte))

  # 2. warmup with a large (full) batch
  shallow = [64, 128, 128, 10]
  steps = 150
  variants = {}
  for peak in (0.5, 1.0):
    variants[f"constant {peak}"] = peak
    variants[f"warmup 30 steps -> {peak}"] = schedules.warmup(peak, 30)
  for name, lr in variants.items():
    runs = [train(momentum.sgd(lr, momentum=0.9), mlp_init(jax.random.PRNGKey(s), shallow, initializers.he_normal()),
                  xtr, ytr, steps, xtr.shape[0], s) for s in SEEDS]
    rows.append(summarize(f"2 full batch ({xtr.shape[0]}), SGD+momentum, {steps} steps", name, runs, xte, yte))

  # 3. one-cycle / cyclical vs constant, same budget and peak
  steps, peak = 200, 0.3
  lrs = {"constant 0.3": peak,
         "constant 0.03": peak / 10,
         "one_cycle max 0.3": schedules.one_cycle(peak, total_steps=steps),
         "cyclical 0.03-0.3 (triangular2)": schedules.cyclical(peak / 10, peak, step_size_up=50, mode="triangular2")}
  for name, lr in lrs.items():
    runs = [train(momentum.sgd(lr, momentum=0.9), mlp_init(jax.random.PRNGKey(s), shallow, initializers.he_normal()),
                  xtr, ytr, steps, 64, s) for s in SEEDS]
    rows.append(summarize(f"3 SGD+momentum, batch 64, {steps} steps", name, runs, xte, yte))

  # 4. AdamW vs Adam + L2 (the same nominal decay strength)
  steps = 400
  for name, make in {"adam (no decay)": lambda: adaptive.adam(3e-3),
                     "adam + L2 5e-3 (coupled)": lambda: adaptive.adam(3e-3, weight_decay=5e-3),
                     "adamw wd=0.5 (decoupled)": lambda: adaptive.adamw(3e-3, weight_decay=0.5),
                     "adam + L2 0.5 (coupled)": lambda: adaptive.adam(3e-3, weight_decay=0.5)}.items():
    runs = [train(make(), mlp_init(jax.random.PRNGKey(s), [64, 256, 256, 10], initializers.he_normal()),
                  xtr[:300], ytr[:300], steps, 64, s) for s in SEEDS]
    rows.append(summarize(f"4 Adam(W), 300 train images, {steps} steps", name, runs, xte, yte))

  total = time.perf_counter() - t0
  (HERE / "results").mkdir(exist_ok=True)
  (HERE / "results" / "convergence.json").write_text(json.dumps(rows, indent=1) + "\n")
  table = ["| experiment | variant | final train loss | test accuracy | diverged |", "|---|---|---:|---:|---:|"]
  for r in rows:
    loss = "–" if r["final_train_loss"] is None else f"{r['final_train_loss']:.4f}"
    table.append(f"| {r['experiment']} | {r['variant']} | {loss} | {100 * r['test_accuracy']:.1f}% | "
                 f"{r['diverged_runs']}/{r['seeds']} |")
  block = f"Mean of {len(SEEDS)} seeds; total {total:.0f} s on `{jax.devices()[0].platform}`.\n\n" + "\n".join(table)
  readme = HERE / "README.md"
  text = readme.read_text()
  begin, end = "<!-- convergence:begin -->", "<!-- convergence:end -->"
  if begin in text and end in text:
    text = text[: text.index(begin) + len(begin)] + "\n" + block + "\n" + text[text.index(end):]
  else:
    text += f"\n## Convergence (digits)\n\n{begin}\n{block}\n{end}\n"
  readme.write_text(text)
  print("\n".join(table))
  print(f"{total:.0f} s")


if __name__ == "__main__":
  main()
