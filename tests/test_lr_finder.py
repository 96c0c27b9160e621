"""Tests for ``jaxopt_practices.lr_finder.lr_range_test`` on a real task (digits) and closed forms."""

from __future__ import annotations

import io
import itertools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_practices import lr_finder, momentum


@pytest.fixture(scope="module")
def digits():
  datasets = pytest.importorskip("sklearn.datasets")
  x, y = datasets.load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32)
  # Batches of 128; the last one (1797 % 128 = 5 rows) has another shape.
  return [(jnp.asarray(x[i:i + 128]), jnp.asarray(y[i:i + 128])) for i in range(0, len(x), 128)]


def _params():
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  return {"hidden": {"w": 0.1 * jax.random.normal(k1, (64, 32)), "b": jnp.zeros(32)},
          "out": {"w": 0.1 * jax.random.normal(k2, (32, 10)), "b": jnp.zeros(10)}}


class CountingLoss:
  """A small MLP's cross-entropy that counts how often Python runs it (= how often it is traced)."""

  def __init__(self):
    self.calls = 0

  def __call__(self, params, batch):
    self.calls += 1
    x, y = batch
    h = jax.nn.relu(x @ params["hidden"]["w"] + params["hidden"]["b"][None, :])
    logits = h @ params["out"]["w"] + params["out"]["b"][None, :]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def test_digits_sweep(digits):
  loss_fn = CountingLoss()
  params = _params()
  before = jax.tree.map(lambda x: np.array(x, copy=True), params)
  res = lr_finder.lr_range_test(loss_fn, params, digits, lambda lr: momentum.sgd(lr, momentum=0.9),
                                start_lr=1e-4, end_lr=1e3, num_steps=80, progress=False)
  # Traced at most twice: once for the full batches, once for the short last batch.
  assert 1 <= loss_fn.calls <= 2
  # The caller's params are untouched, bitwise.
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(before)):
    np.testing.assert_array_equal(np.asarray(a), b)
  assert np.all(np.diff(res.lrs) > 0)
  np.testing.assert_allclose(res.lrs, np.geomspace(1e-4, 1e3, 80)[: len(res.lrs)], rtol=1e-12)
  # SGD with momentum at lr ~1e3 blows up: the sweep stops early.
  assert res.stopped_early and len(res.lrs) < 80
  assert res.lrs[0] <= res.suggestion <= res.lrs[-1] and res.suggestion in res.lrs
  assert set(res.suggestions) == {"valley", "minimum", "steep"}
  assert res.suggested_by == "valley" and res.suggestion == res.suggestions["valley"]
  for v in res.suggestions.values():
    assert 1e-5 <= v <= 1e3
  # The suggestion (valley) is a useful lr: 60 steps of training with it
  # lower the loss a lot.
  tx = momentum.sgd(res.suggestion, momentum=0.9)
  p, state = params, tx.init(params)
  grad = jax.jit(jax.value_and_grad(CountingLoss()))
  first = None
  for batch in itertools.islice(itertools.cycle(digits[:-1]), 60):
    loss, g = grad(p, batch)
    first = float(loss) if first is None else first
    u, state = tx.update(g, state, p)
    p = optax.apply_updates(p, u)
  assert float(grad(p, digits[0])[0]) < 0.7 * first


def test_smoothing_and_divergence_rule_closed_form():
  """On 0.5 p^2 with SGD, p_{k+1} = (1 - lr_k) p_k: losses follow in closed form; lr > 2 diverges."""
  loss_fn = lambda p, batch: 0.5 * jnp.sum(p**2) * batch
  res = lr_finder.lr_range_test(loss_fn, jnp.ones(1), [jnp.float32(1.0)], optax.sgd, start_lr=1e-2,
                                end_lr=100.0, num_steps=60, smoothing=0.3, diverge_threshold=3.0,
                                progress=False)
  lrs = np.geomspace(1e-2, 100.0, 60)
  p = np.cumprod(np.concatenate([[1.0], 1.0 - lrs[:-1]]))
  np.testing.assert_allclose(res.losses, (0.5 * p**2)[: len(res.losses)], rtol=1e-4)
  ema = [res.losses[0]]
  for loss in res.losses[1:]:
    ema.append(0.3 * loss + 0.7 * ema[-1])
  np.testing.assert_allclose(res.smoothed_losses, ema, rtol=1e-12)
  best = np.minimum.accumulate(res.smoothed_losses)
  over = res.smoothed_losses[1:] > 3.0 * best[:-1]
  assert res.stopped_early and over[-1] and not over[:-1].any()
  assert res.suggestion < 2.0  # beyond lr = 2 the loss grows


def test_stops_on_nonfinite_and_linear_mode():
  loss_fn = lambda p, batch: jnp.sum(p["p"] ** 2)
  res = lr_finder.lr_range_test(loss_fn, {"p": jnp.ones(3)}, iter([None] * 5), optax.sgd, start_lr=1.0,
                                end_lr=1e6, num_steps=200, mode="linear", diverge_threshold=1e300,
                                progress=False)
  np.testing.assert_allclose(res.lrs, np.linspace(1.0, 1e6, 200)[: len(res.lrs)], rtol=1e-12)
  assert res.stopped_early and not np.isfinite(res.losses[-1])
  assert np.all(np.isfinite(res.losses[:-1]))
  assert res.lrs[0] <= res.suggestion <= res.lrs[-1]


def test_iterator_is_cycled_and_progress_bar(capsys, monkeypatch):
  seen = []

  def loss_fn(p, batch):
    return jnp.sum((p - batch) ** 2) + 10.0

  def gen():
    for b in range(3):
      seen.append(b)
      yield jnp.float32(b)

  class Terminal(io.StringIO):
    def isatty(self):
      return True

  terminal = Terminal()
  monkeypatch.setattr(sys, "stderr", terminal)
  res = lr_finder.lr_range_test(loss_fn, jnp.zeros(2), gen(), optax.sgd, start_lr=1e-3, end_lr=1e-2,
                                num_steps=10, progress=True)
  assert len(res.losses) == 10 and seen == [0, 1, 2]  # the generator was read once, then replayed
  assert "LR range test" in terminal.getvalue()  # a terminal gets the bar
  fig = res.plot()
  assert type(fig).__name__ == "Figure"
  import matplotlib.pyplot as plt

  plt.close("all")


@pytest.mark.parametrize("progress", [True, False])
def test_no_bar_and_no_tqdm_import_outside_a_terminal(capsys, monkeypatch, progress):
  """Issue #21 item 10: in a notebook or a log (stderr not a terminal) nothing is drawn, whatever
  ``progress`` says, and ``progress=False`` imports nothing (tqdm.auto warned in notebooks)."""
  monkeypatch.setitem(sys.modules, "tqdm", None)  # any import of tqdm now raises ImportError
  monkeypatch.setitem(sys.modules, "tqdm.auto", None)
  res = lr_finder.lr_range_test(lambda p, b: jnp.sum((p - b) ** 2), jnp.zeros(2), [jnp.ones(2)], optax.sgd,
                                start_lr=1e-3, end_lr=1e-2, num_steps=10, progress=progress)
  assert len(res.losses) == 10
  assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- NNX models (issue #11)
def _nnx():
  return pytest.importorskip("flax.nnx")


def _cnn(nnx):
  class CNN(nnx.Module):
    """Conv -> BatchNorm -> ReLU -> Linear: Params and BatchStats."""

    def __init__(self, rngs):
      self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
      self.bn = nnx.BatchNorm(4, rngs=rngs)
      self.head = nnx.Linear(4 * 8 * 8, 10, rngs=rngs)

    def __call__(self, x):
      h = nnx.relu(self.bn(self.conv(x)))
      return self.head(h.reshape(h.shape[0], -1))

  return CNN(nnx.Rngs(0))


def _image_batches(n=3):
  rng = np.random.default_rng(0)
  return [(jnp.asarray(rng.standard_normal((16, 8, 8, 1)), jnp.float32), jnp.asarray(rng.integers(0, 10, 16)))
          for _ in range(n)]


def _nnx_loss(model, batch):
  x, y = batch
  return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def _all_state(nnx, model):
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))


def test_nnx_cnn_with_batchnorm_matches_a_manual_loop_and_leaves_the_model():
  """The sweep = a hand-written NNX loop on a clone (Params stepped, BatchStats by the forward pass)."""
  nnx = _nnx()
  model = _cnn(nnx)
  before = _all_state(nnx, model)
  batches = _image_batches()
  res = lr_finder.lr_range_test(_nnx_loss, model, batches, optax.sgd, wrt=nnx.Param, start_lr=1e-3, end_lr=1.0,
                                num_steps=8, diverge_threshold=1e6, progress=False)
  chex = pytest.importorskip("chex")
  chex.assert_trees_all_equal(_all_state(nnx, model), before)  # never mutated

  ref_model, ref_losses = nnx.clone(model), []
  for lr, batch in zip(res.lrs, itertools.cycle(batches)):
    loss, grads = nnx.value_and_grad(_nnx_loss)(ref_model, batch)  # updates the BatchStats in place
    ref_losses.append(float(loss))
    params = nnx.state(ref_model, nnx.Param)
    nnx.update(ref_model, jax.tree.map(lambda p, g: p - jnp.float32(lr) * g, params, grads))
  np.testing.assert_allclose(res.losses, ref_losses, rtol=2e-5)
  assert not res.stopped_early and len(res.losses) == 8


def test_nnx_only_wrt_variables_are_swept_and_the_rest_is_carried():
  """A BatchStat the forward pass counts with: carried from step to step, never decayed by the optimizer."""
  nnx = _nnx()

  class Counting(nnx.Module):
    def __init__(self):
      self.w = nnx.Param(jnp.ones(2))
      self.seen = nnx.BatchStat(jnp.zeros([]))  # how many forward passes; shifts the output

    def __call__(self, x):
      self.seen[...] += 1.0
      return x @ self.w + self.seen[...]

  model = Counting()
  loss_fn = lambda m, x: jnp.mean(m(x))  # noqa: E731
  decayed_sgd = lambda lr: optax.chain(optax.add_decayed_weights(0.5), optax.sgd(lr))  # noqa: E731
  x = jnp.ones((4, 2))
  res = lr_finder.lr_range_test(loss_fn, model, [x], decayed_sgd, start_lr=0.1, end_lr=0.2, num_steps=4,
                                mode="linear", diverge_threshold=1e6, progress=False)
  w, seen, want = np.ones(2), 0.0, []
  for lr in res.lrs:
    seen += 1.0
    want.append(float(np.mean(np.ones((4, 2)) @ w + seen)))
    w = w - lr * (np.ones(2) + 0.5 * w)  # grad of mean(x @ w) is 1 per weight; decay on w only
  np.testing.assert_allclose(res.losses, want, rtol=1e-6)
  assert float(model.seen[...]) == 0.0  # the caller's model is untouched


def test_nnx_wrt_selects_what_is_swept_and_wrt_needs_a_module():
  nnx = _nnx()
  model = _cnn(nnx)
  res = lr_finder.lr_range_test(_nnx_loss, model, _image_batches(1), optax.sgd, wrt=nnx.PathContains("head"),
                                start_lr=1e-3, end_lr=1e-2, num_steps=3, progress=False)
  assert len(res.losses) == 3
  with pytest.raises(ValueError, match="wrt"):
    lr_finder.lr_range_test(lambda p, b: jnp.sum(p ** 2), jnp.ones(2), [0], optax.sgd, wrt=nnx.Param,
                            num_steps=3, progress=False)
  with pytest.raises(ValueError, match="floating-point"):
    lr_finder.lr_range_test(_nnx_loss, model, _image_batches(1), optax.sgd, wrt=nnx.RngState, num_steps=3,
                            progress=False)


# ------------------------------------------------------------------------------------ suggestions
def test_suggestions_lie_inside_the_trimmed_sweep_and_are_ordered(digits):
  """fastai's trim ``[num_steps // 10 : -5]``, and the orderings the docstring states."""
  res = lr_finder.lr_range_test(CountingLoss(), _params(), digits, lambda lr: momentum.sgd(lr, momentum=0.9),
                                start_lr=1e-5, end_lr=10.0, num_steps=100, progress=False)
  start, stop = res.window
  assert (start, stop) == (10, len(res.lrs) - 5)
  trimmed, smoothed = res.lrs[start:stop], res.smoothed_losses[start:stop]
  assert res.suggestions["valley"] in trimmed and res.suggestions["steep"] in trimmed
  # By construction: 10 * minimum is the lr of the lowest smoothed loss of the trimmed sweep.
  assert 10 * res.suggestions["minimum"] == pytest.approx(trimmed[np.argmin(smoothed)], rel=1e-12)
  assert trimmed[0] / 10 <= res.suggestions["minimum"] < 10 * res.suggestions["minimum"] <= trimmed[-1]
  # Not by construction, but the documented usual case, which this U-shaped curve is.
  assert res.suggestions["valley"] <= 10 * res.suggestions["minimum"]


def _fastai_reference(lrs, losses, num_steps):
  """fastai 2.7's ``lr_find`` suggestion functions, transcribed (valley, minimum, steep)."""
  lrs, losses = lrs[num_steps // 10:-5], losses[num_steps // 10:-5]
  n = len(losses)
  max_start, max_end = 0, 0
  lds = [1] * n
  for i in range(1, n):
    for j in range(0, i):
      if losses[i] < losses[j] and lds[i] < lds[j] + 1:
        lds[i] = lds[j] + 1
      if lds[max_end] < lds[i]:
        max_end = i
        max_start = max_end - lds[max_end]
  sections = (max_end - max_start) / 3
  valley = lrs[max(max_start + int(sections) + int(sections / 2), 0)]
  grads = (losses[1:] - losses[:-1]) / (np.log(lrs[1:]) - np.log(lrs[:-1]))
  return {"valley": valley, "minimum": lrs[np.argmin(losses)] / 10, "steep": lrs[np.argmin(grads)]}


def _prescribed(values, smoothing, start_lr=1e-6, **kw):
  """An LR range test whose batch losses are ``values`` (the loss is the batch itself), ``start_lr`` -> 1."""
  loss_fn = lambda p, batch: jnp.sum(0.0 * p) + batch
  return lr_finder.lr_range_test(loss_fn, jnp.zeros(1), [jnp.float32(v) for v in values], optax.sgd,
                                 start_lr=start_lr, end_lr=1.0, num_steps=len(values), smoothing=smoothing,
                                 diverge_threshold=1e30, progress=False, **kw)


@pytest.mark.parametrize("curve", ["u_shape", "noisy_u", "random_walk"])
def test_suggestions_match_fastai_on_prescribed_curves(curve):
  """With ``smoothing=1`` the smoothed loss is the batch value itself, so any curve can be prescribed;
  ``valley_tolerance=0`` is fastai's valley exactly."""
  rng = np.random.default_rng({"u_shape": 0, "noisy_u": 1, "random_walk": 2}[curve])
  t = np.linspace(-1.0, 1.0, 60)
  values = {"u_shape": 3.0 + t**2 - 0.5 * t, "noisy_u": 3.0 + t**2 + 0.1 * rng.normal(size=60),
            "random_walk": 10.0 + np.cumsum(rng.normal(size=60))}[curve]
  res = _prescribed(values, 1.0, start_lr=1e-4, valley_tolerance=0.0)
  assert not res.stopped_early and res.window == (6, 55)
  expected = _fastai_reference(res.lrs, res.smoothed_losses, 60)
  for name in lr_finder.SUGGESTIONS:
    assert res.suggestions[name] == pytest.approx(expected[name], rel=1e-12), name


@pytest.mark.parametrize("smoothing", [1.0, 0.05])
def test_noise_estimate_closed_form(smoothing):
  """Independent normal batch noise of std 0.05 on a trend: the EMA keeps 0.05 * sqrt(a / (2 - a))
  of it, which ``result.noise`` measures within 15%, whether the trend is gentle or steep."""
  rng = np.random.default_rng(0)
  t, noise = np.linspace(-1.0, 1.0, 400), 0.05 * rng.normal(size=400)
  expected = 0.05 * np.sqrt(smoothing / (2.0 - smoothing))
  gentle = _prescribed(3.0 + t**2 + noise, smoothing)
  steep = _prescribed(30.0 + 10.0 * (t**2 - t) + noise, smoothing)
  assert gentle.noise == pytest.approx(expected, rel=0.15)
  assert steep.noise == pytest.approx(expected, rel=0.15)
  assert _prescribed(3.0 + t**2, smoothing).noise < 0.01 * expected  # no noise, (almost) none measured


@pytest.mark.parametrize("seed", range(5))
def test_valley_skips_the_settling_start(seed):
  """Half a sweep that does not train, its smoothed loss settling from a hard first batch (0.15 above
  the rest, batch noise 0.04), then a descent over indices 55..90 and a blow-up: fastai's valley
  (tolerance 0) counts the settling as descent and lands near the descent's start; the default
  lands well inside it (the EMA lags the batch losses by ~1 / smoothing = 20 steps)."""
  rng = np.random.default_rng(seed)
  i = np.arange(100)
  values = np.where(i < 55, 2.3, 2.3 - 0.9 * ((i - 55) / 35.0) ** 2) + 0.04 * rng.normal(size=100)
  values[0], values[95:] = 2.45, 8.0
  default, fastai = _prescribed(values, 0.05), _prescribed(values, 0.05, valley_tolerance=0.0)
  assert default.suggestions["minimum"] == fastai.suggestions["minimum"]
  assert default.suggestions["steep"] == fastai.suggestions["steep"]
  at = lambda res: int(np.argmin(np.abs(res.lrs - res.suggestion)))
  assert at(fastai) <= 62 and 70 <= at(default) <= 85, (at(fastai), at(default))


def test_valley_reread_matches_a_new_sweep(digits):
  """``result.valley(t)`` on a recorded sweep is the valley a sweep with ``valley_tolerance=t`` returns."""
  make = lambda lr: momentum.sgd(lr, momentum=0.9)
  res = lr_finder.lr_range_test(CountingLoss(), _params(), digits[:-1], make, progress=False)
  assert res.valley(1.0) == res.suggestions["valley"]
  for t in (0.0, 3.0):
    again = lr_finder.lr_range_test(CountingLoss(), _params(), digits[:-1], make, progress=False, valley_tolerance=t)
    assert res.valley(t) == again.suggestion
  with pytest.raises(ValueError, match="valley_tolerance"):
    res.valley(-1.0)


def test_default_valley_trains_where_fastais_lags(digits):
  """On digits with SGD momentum (1e-7 -> 10 in 100 steps), fastai's valley sits where the loss is
  still settling; 150 steps at the default valley reach less than half its training loss."""
  make = lambda lr: momentum.sgd(lr, momentum=0.9)
  res = lr_finder.lr_range_test(CountingLoss(), _params(), digits[:-1], make, progress=False)
  fastai = lr_finder.lr_range_test(CountingLoss(), _params(), digits[:-1], make, progress=False,
                                   valley_tolerance=0.0)
  assert fastai.suggestion < res.suggestion
  grad = jax.jit(jax.value_and_grad(CountingLoss()))

  def train_loss(lr):
    tx = make(lr)
    p, state = _params(), tx.init(_params())
    for batch in itertools.islice(itertools.cycle(digits[:-1]), 150):
      u, state = tx.update(grad(p, batch)[1], state, p)
      p = optax.apply_updates(p, u)
    return np.mean([float(grad(p, batch)[0]) for batch in digits[:-1]])

  assert train_loss(res.suggestion) < 0.5 * train_loss(fastai.suggestion)


@pytest.mark.parametrize("suggestion", ["valley", "minimum", "steep"])
def test_suggestion_argument_picks_one_of_the_three(suggestion):
  loss_fn = lambda p, batch: 0.5 * jnp.sum(p**2) * batch
  res = lr_finder.lr_range_test(loss_fn, jnp.ones(1), [jnp.float32(1.0)], optax.sgd, start_lr=1e-3,
                                end_lr=10.0, num_steps=50, progress=False, suggestion=suggestion)
  assert res.suggested_by == suggestion and res.suggestion == res.suggestions[suggestion]


def test_default_suggestion_is_valley():
  import inspect

  assert inspect.signature(lr_finder.lr_range_test).parameters["suggestion"].default == "valley"


@pytest.mark.parametrize("bad", ["steepest", "minimum/10", None, 1])
def test_bad_suggestion_raises_naming_it(bad):
  with pytest.raises(ValueError, match="suggestion"):
    lr_finder.lr_range_test(lambda p, b: jnp.sum(p**2), jnp.ones(2), [0.0], optax.sgd, num_steps=5,
                            progress=False, suggestion=bad)


def test_short_and_early_stopped_sweeps_fall_back_to_the_whole_finite_sweep():
  loss_fn = lambda p, batch: 0.5 * jnp.sum(p**2) * batch
  # 10 steps: the trim [1:5] would leave 4 < MIN_WINDOW points, so all 10 are read.
  short = lr_finder.lr_range_test(loss_fn, jnp.ones(1), [jnp.float32(1.0)], optax.sgd, start_lr=1e-3,
                                  end_lr=1e-1, num_steps=10, progress=False)
  assert not short.stopped_early and short.window == (0, 10)
  # On 0.5 p^2 SGD diverges past lr = 2: a 100-step sweep from 1.5 to 1e4 stops after a dozen steps;
  # the whole finite sweep but the point that tripped the divergence rule is read.
  early = lr_finder.lr_range_test(loss_fn, jnp.ones(1), [jnp.float32(1.0)], optax.sgd, start_lr=1.5,
                                  end_lr=1e4, num_steps=100, progress=False)
  n = len(early.lrs)
  assert early.stopped_early and n - 5 - 10 < lr_finder.MIN_WINDOW
  assert early.window == (0, n - 1)
  for v in (early.suggestions["valley"], early.suggestions["steep"], 10 * early.suggestions["minimum"]):
    assert early.lrs[0] <= v <= early.lrs[n - 2]


def test_plot_marks_the_three_suggestions():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  loss_fn = lambda p, batch: 0.5 * jnp.sum(p**2) * batch
  res = lr_finder.lr_range_test(loss_fn, jnp.ones(1), [jnp.float32(1.0)], optax.sgd, start_lr=1e-3,
                                end_lr=100.0, num_steps=60, progress=False, suggestion="steep")
  fig = res.plot()
  labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
  assert [lab.split(":")[0] for lab in labels[-3:]] == ["valley", "minimum/10", "steep"]
  assert sum("(suggestion)" in lab for lab in labels) == 1 and "(suggestion)" in labels[-1]
  plt.close("all")


# ------------------------------------------------- Dropout and BatchNorm with call-time rngs (issue #21 item 3)
def _tutorial_model(nnx, own_rngs=False):
  """The Flax NNX tutorial's pattern: Linear -> BatchNorm -> ReLU -> Dropout -> Linear, the Dropout
  driven by ``model(x, rngs=rngs)`` (or owning its Rngs with ``own_rngs``)."""

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.l1 = nnx.Linear(6, 16, rngs=rngs)
      self.bn = nnx.BatchNorm(16, rngs=rngs)
      self.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=7) if own_rngs else None)
      self.l2 = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x, rngs=None):
      return self.l2(self.drop(nnx.relu(self.bn(self.l1(x))), rngs=rngs))

  return Net(nnx.Rngs(0))


def _tutorial_batch():
  rng = np.random.default_rng(1)
  return jnp.asarray(rng.standard_normal((32, 6)), jnp.float32), jnp.asarray(rng.integers(0, 3, 32))


def test_nnx_call_time_rngs_are_part_of_the_traced_state():
  """``rngs=`` is split / merged with the model in each compiled step: fresh dropout masks every step
  (at lr 1e-7 the params barely move, yet the loss jumps), and neither the model nor the rngs change."""
  nnx = _nnx()
  model, rngs = _tutorial_model(nnx), nnx.Rngs(dropout=3)
  before, count = _all_state(nnx, model), int(rngs.dropout.count.get_value())
  loss = lambda m, b, r: optax.softmax_cross_entropy_with_integer_labels(m(b[0], rngs=r), b[1]).mean()  # noqa: E731
  res = lr_finder.lr_range_test(loss, model, [_tutorial_batch()], optax.sgd, rngs=rngs, start_lr=1e-7,
                                end_lr=2e-7, num_steps=6, diverge_threshold=1e6, progress=False)
  assert len(res.losses) == 6 and np.std(res.losses) > 1e-3  # a new mask each step
  pytest.importorskip("chex").assert_trees_all_equal(_all_state(nnx, model), before)
  assert int(rngs.dropout.count.get_value()) == count
  eval_loss = lambda m, b, r: loss(nnx.view(m, deterministic=True), b, r)  # noqa: E731
  res = lr_finder.lr_range_test(eval_loss, model, [_tutorial_batch()], optax.sgd, rngs=rngs, start_lr=1e-7,
                                end_lr=2e-7, num_steps=6, diverge_threshold=1e6, progress=False)
  assert np.std(res.losses) < 1e-4  # no dropout: the loss only moves with the (tiny) steps


def test_nnx_dropout_owning_its_rngs_draws_new_masks():
  nnx = _nnx()
  model = _tutorial_model(nnx, own_rngs=True)
  res = lr_finder.lr_range_test(lambda m, b: optax.softmax_cross_entropy_with_integer_labels(m(b[0]), b[1]).mean(),
                                model, [_tutorial_batch()], optax.sgd, start_lr=1e-7, end_lr=2e-7, num_steps=6,
                                diverge_threshold=1e6, progress=False)
  assert np.std(res.losses) > 1e-3


def test_nnx_rngs_closed_over_by_the_loss_is_a_value_error_naming_the_fix():
  """The tutorial's loss closing over its ``rngs`` used to fail with flax's TraceContextError."""
  nnx = _nnx()
  model, rngs = _tutorial_model(nnx), nnx.Rngs(dropout=3)
  loss = lambda m, b: optax.softmax_cross_entropy_with_integer_labels(m(b[0], rngs=rngs), b[1]).mean()  # noqa: E731
  with pytest.raises(ValueError, match=r"rngs=rngs.*loss_fn\(model, batch, rngs\)"):
    lr_finder.lr_range_test(loss, model, [_tutorial_batch()], optax.sgd, num_steps=4, progress=False)
  with pytest.raises(ValueError, match="rngs must be an nnx.Rngs"):
    lr_finder.lr_range_test(loss, model, [_tutorial_batch()], optax.sgd, rngs=3, num_steps=4, progress=False)
  with pytest.raises(ValueError, match="rngs is handed to loss_fn"):
    lr_finder.lr_range_test(lambda p, b: jnp.sum(p), jnp.ones(2), [None], optax.sgd, rngs=rngs, progress=False)


# ------------------------------------------------------- claims match the benchmark (issue #21 item 9)
def test_readme_and_notebook_state_the_measured_rate_of_the_suggestion_benchmark():
  """The README and notebook 02 claimed "every time"; they must state the rate the committed
  results of ``benchmarks/lr_suggestions.py`` give, and the results must hold the mnist CNN case."""
  import json
  import pathlib

  root = pathlib.Path(__file__).resolve().parent.parent
  rows = json.loads((root / "benchmarks" / "results" / "lr_suggestions.json").read_text())["rows"]
  assert any(r["model"].startswith("mnist CNN") and r["optimizer"] == "SGD momentum 0.9" and r["set"] == "held-out"
             for r in rows)
  met = lambda r, name: r[name]["gap_points"] <= 1.5 and not r[name]["diverged"]  # noqa: E731
  valley = f"{sum(met(r, 'valley') for r in rows)} of {len(rows)}"
  fastai = f"{sum(met(r, 'fastai valley') for r in rows)} of {len(rows)}"
  readme = " ".join((root / "README.md").read_text().split())
  cells = json.loads((root / "notebooks" / "02_plateau_and_lr_finder.ipynb").read_text())["cells"]
  notebook = " ".join(" ".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown").split())
  for text in (readme, notebook):
    assert f"in {valley}" in text and fastai in text
    assert "every time" not in text and "in every case" not in text
