"""The tour's machinery: models, data, the multi-seed train loop and the reading rule (see ``tour``)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_practices import monitor
from jaxopt_practices import _progress
from jaxopt_practices import _step

__all__ = [
    "BATCH", "DEPTH", "WIDTH", "MLP", "PostLNMLP", "load_digits", "cross_entropy", "RunResult", "Scenario",
    "seed_batches", "init_params", "train", "reading",
]

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


class PostLNMLP(nn.Module):
  """A residual MLP with LayerNorm *after* each residual add (the original, post-LN Transformer layout)."""
  width: int = WIDTH
  blocks: int = 6

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(self.width)(x)
    for _ in range(self.blocks):
      x = nn.LayerNorm()(x + nn.Dense(self.width)(nn.relu(nn.Dense(self.width)(x))))
    return nn.Dense(10)(x)


def load_digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Digits as float32 features standardised on the train split; 80/20 split drawn by ``seed``.

  scikit-learn's bundled 8x8 digits (no download): 1,437 train and 360 test images of 64
  features, each feature standardised with the train split's mean and std.

  Args:
    seed: draws the train / test split.

  Returns:
    ``(x_train, y_train, x_test, y_test)``: float32 features ``(n, 64)``, int32 labels ``(n,)``.

  Example:
    >>> from jaxopt_practices import tour
    >>> x_train, y_train, x_test, y_test = tour.load_digits(seed=0)
    >>> x_train.shape, y_test.shape, x_train.dtype
    ((1437, 64), (360,), dtype('float32'))
  """
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
  """What one run measured, per seed (leading axis of every array).

  Attributes:
    name: the run's label in the report.
    setup: its optimizer in words.
    losses: train loss per seed and step, ``(seeds, steps)``.
    learning_rates: the learning rate each step applied, ``(seeds, steps)``.
    test_accuracy: final test accuracy per seed, in ``[0, 1]``.
    train_accuracy: final train accuracy per seed.
    wall_time_s: the run's wall time, compilation included.

  Example:
    >>> import numpy as np
    >>> from jaxopt_practices import tour
    >>> run = tour.RunResult("sgd", "SGD 0.1", np.array([[2.0, 1.0, np.nan]]), np.full((1, 3), 0.1),
    ...                      np.array([0.9]), np.array([0.95]), 1.5)
    >>> run.diverged
    array([ True])
  """
  name: str
  setup: str
  losses: np.ndarray
  learning_rates: np.ndarray
  test_accuracy: np.ndarray
  train_accuracy: np.ndarray
  wall_time_s: float

  @property
  def final_loss(self) -> np.ndarray:
    """Per seed: the mean train loss over the last 10% of steps."""
    return self.losses[:, -max(1, self.losses.shape[1] // 10):].mean(1)

  @property
  def diverged(self) -> np.ndarray:
    """Per seed: whether the loss ever went non-finite."""
    return ~np.isfinite(self.losses).all(1)


@dataclasses.dataclass
class Scenario:
  """Two runs that differ by one practice, the regime they run in and how they are judged.

  Attributes:
    name: e.g. ``"1 schedules"``.
    regime: the model, data and optimizer setting in words.
    shows: what the practice should change there, and why.
    metric: ``"test accuracy"`` or ``"final train loss"``.
    baseline: the run without the practice.
    practice: the run with it.
    reading: the verdict of :func:`reading` (filled in by ``run_experiments``).

  Example:
    >>> import numpy as np
    >>> from jaxopt_practices import tour
    >>> run = lambda acc: tour.RunResult("r", "", np.ones((1, 4)), np.ones((1, 4)), np.array([acc]),
    ...                                  np.array([acc]), 0.0)
    >>> s = tour.Scenario("x", "regime", "shows", "test accuracy", run(0.5), run(0.75))
    >>> tour.reading(s.baseline, s.practice, s.metric)
    'better: test accuracy +25.0 points (1 seed, no noise estimate)'
  """
  name: str
  regime: str
  shows: str
  metric: str  # "test accuracy" or "final train loss"
  baseline: RunResult
  practice: RunResult
  reading: str = ""


def seed_batches(seed: int, n: int, steps: int, batch: int) -> np.ndarray:
  """``(steps, batch)`` indices: epochs of fresh permutations drawn by ``seed``."""
  rng = np.random.default_rng(seed)
  order = np.concatenate([rng.permutation(n) for _ in range(steps * batch // n + 1)])
  return order[: steps * batch].reshape(steps, batch)


def _chunk(steps: int) -> int:
  """The largest divisor of ``steps`` up to ``steps // 10``: ten or so compiled scans per run."""
  return next(d for d in range(max(1, steps // 10), 0, -1) if steps % d == 0)


def init_params(model: nn.Module, x: np.ndarray, seeds: Sequence[int]) -> Any:
  """The params of each seed, stacked on a leading axis.

  Not jitted, and from "rbg" keys: XLA:CPU takes seconds to compile a program that draws
  random numbers (tens of seconds with threefry keys), while eager ops are compiled once
  per shape and reused by every model of the tour.
  """
  keys = jnp.stack([jax.random.key(s, impl="rbg") for s in seeds])
  return jax.vmap(lambda key: model.init(key, x[:1])["params"])(keys)


def train(name: str, setup: str, tx: optax.GradientTransformation, data, *, steps: int, seeds: Sequence[int] = (0,),
          model: nn.Module | None = None, pass_loss: bool = False, batch: int = BATCH,
          eval_params: Callable[[Any, Any], Any] | None = None, progress: bool = True) -> RunResult:
  """Trains ``model`` with ``tx`` for ``steps`` minibatches, all ``seeds`` at once (``vmap``).

  The steps run in ``lax.scan`` chunks of about a tenth of the run (one compilation), the
  learning rate each step applied is read with ``monitor.current_learning_rate``, and the
  accuracies of ``eval_params(params, opt_state)`` (default: the params) are taken at the end.
  """
  model = model or MLP()
  x_tr, y_tr, x_te, y_te = (jnp.asarray(a) for a in data)
  core = _step.train_step(lambda p, ids: cross_entropy(model, p, x_tr[ids], y_tr[ids]), tx, value_from_loss=pass_loss)

  def scan(params, state, idx):
    def body(carry, ids):
      params, state, loss = core(carry[0], carry[1], ids, {})
      return (params, state), (loss, monitor.current_learning_rate(state))
    return jax.lax.scan(body, (params, state), idx)

  def accuracies(params, state):
    final = eval_params(params, state) if eval_params else params
    acc = lambda x, y: jnp.mean(jnp.argmax(jnp.asarray(model.apply({"params": final}, x)), -1) == y)
    return acc(x_te, y_te), acc(x_tr, y_tr)

  start = time.perf_counter()
  params = init_params(model, data[0], seeds)
  state = jax.vmap(tx.init)(params)
  idx = np.stack([seed_batches(s, len(data[0]), steps, batch) for s in seeds])
  step, chunk, out = jax.jit(jax.vmap(scan)), _chunk(steps), []
  with _progress.bar(progress, total=len(range(0, steps, chunk)), desc=f"{name:<24}", leave=False) as bar:
    for k in range(0, steps, chunk):
      (params, state), curves = step(params, state, jnp.asarray(idx[:, k:k + chunk]))
      out.append(curves)
      bar.update(1)
  test, train_acc = jax.device_get(jax.vmap(accuracies)(params, state))  # eager: nothing to compile
  losses, lrs = (np.concatenate([np.asarray(c[i]) for c in out], axis=1) for i in (0, 1))
  return RunResult(name, setup, losses, lrs, np.asarray(test), np.asarray(train_acc), time.perf_counter() - start)


def _values(run: RunResult, metric: str) -> np.ndarray:
  return 100 * run.test_accuracy if metric == "test accuracy" else run.final_loss


def reading(baseline: RunResult, practice: RunResult, metric: str) -> str:
  """One line judging ``practice`` against ``baseline`` on ``metric`` over the seeds.

  Divergence first (a run whose loss went non-finite); else the difference of the means
  against the seed spread, the larger sample std of the two runs: "within noise" when the
  difference is no larger, "better" / "worse" otherwise; one seed gives no noise estimate.

  Args:
    baseline: the run without the practice.
    practice: the run with it, on the same seeds.
    metric: ``"test accuracy"`` (higher is better, in points) or ``"final train loss"``
      (lower is better).

  Returns:
    The verdict and the numbers behind it, as one line.

  Example:
    >>> import numpy as np
    >>> from jaxopt_practices import tour
    >>> def run(acc, loss):
    ...   return tour.RunResult("r", "", np.full((3, 10), loss), np.zeros((3, 10)), np.array(acc),
    ...                         np.ones(3), 0.0)
    >>> tour.reading(run([0.90, 0.92, 0.94], 0.1), run([0.91, 0.93, 0.95], 0.1), "test accuracy")
    'within noise: test accuracy +1.0 points against a seed std of 2.0 points'
    >>> tour.reading(run([0.90, 0.91, 0.90], 0.1), run([0.95, 0.96, 0.95], 0.1), "test accuracy")
    'better: test accuracy +5.0 points against a seed std of 0.6 points'
  """
  b, p = _values(baseline, metric), _values(practice, metric)
  nb, npr, n = int(baseline.diverged.sum()), int(practice.diverged.sum()), len(b)
  if nb != npr:
    verdict = "better" if npr < nb else "worse"
    return f"{verdict}: the baseline diverged in {nb}/{n} seeds, with the practice {npr}/{n}"
  if nb:
    return f"no comparison: both diverged in some seeds ({nb}/{n})"
  unit, fmt = (" points", ".1f") if metric == "test accuracy" else ("", ".4f")
  diff = float(p.mean() - b.mean())
  change = f"{metric} {diff:+{fmt}}{unit}"
  verdict = "better" if (diff > 0 if metric == "test accuracy" else diff < 0) else "worse"
  if n == 1:
    return f"{'same' if diff == 0 else verdict}: {change} (1 seed, no noise estimate)"
  noise = float(max(b.std(ddof=1), p.std(ddof=1)))
  return f"{'within noise' if abs(diff) <= noise else verdict}: {change} against a seed std of {noise:{fmt}}{unit}"
