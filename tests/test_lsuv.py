"""Practice 3 — data-dependent init: LSUV (linen, NNX), weight-norm init, init_report."""

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxopt_practices import PracticeWarning
from jaxopt_practices import initializers as I

X = jax.random.normal(jax.random.key(0), (128, 16))
IMG = jax.random.normal(jax.random.key(1), (32, 8, 8, 3))


# --- models ----------------------------------------------------------------------------------

class Block(nn.Module):
  width: int
  kinit: object = I.normal(0.01)

  @nn.compact
  def __call__(self, x):
    return nn.relu(nn.Dense(self.width, kernel_init=self.kinit)(x))


class DeepMLP(nn.Module):
  depth: int = 8
  kinit: object = I.normal(0.01)

  @nn.compact
  def __call__(self, x):
    for _ in range(self.depth):
      x = Block(24, self.kinit)(x)  # nested: Block_i/Dense_0
    return nn.Dense(5, kernel_init=self.kinit)(x)


class SmallCNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), kernel_init=I.xavier_normal(0.1))(x))
    x = nn.relu(nn.Conv(8, (3, 3), strides=2, kernel_init=I.xavier_normal(0.1))(x))
    return nn.Dense(4, kernel_init=I.normal(1.0))(x.reshape(x.shape[0], -1))


class Swapped(nn.Module):
  """Declared second-then-first but called first-then-second: order comes from the forward pass."""

  def setup(self):
    self.second = nn.Dense(8)
    self.first = nn.Dense(8)

  def __call__(self, x):
    return self.second(nn.relu(self.first(x)))


def _fn(model):
  return lambda p, x: model.apply({"params": p}, x)


def _linen_outputs(model, params, x):
  """Each Dense/Conv output, measured with flax's own capture_intermediates (independent of ours)."""
  capture = lambda m, name: isinstance(m, (nn.Dense, nn.Conv))  # noqa: E731
  _, state = jax.jit(lambda p, x: model.apply({"params": p}, x, capture_intermediates=capture))(params, x)
  leaves = jax.tree_util.tree_leaves_with_path(state["intermediates"])
  return {jax.tree_util.keystr(k): np.asarray(v, np.float64) for k, v in leaves}


def _init(model, x, seed=2):
  return jax.jit(model.init)(jax.random.key(seed), x)["params"]


# --- LSUV, linen -----------------------------------------------------------------------------

@pytest.mark.parametrize("model, x", [(DeepMLP(), X), (SmallCNN(), IMG)], ids=["deep_mlp", "cnn"])
def test_lsuv_linen_reaches_unit_std(model, x):
  params = _init(model, x)
  before = _linen_outputs(model, params, x)
  assert min(v.std() for v in before.values()) < 0.5  # the bad init really is bad
  new, report = I.lsuv(_fn(model), params, x, tol=0.05)
  outs = _linen_outputs(model, new, x)
  assert len(report) == len(outs)
  for v in outs.values():
    assert abs(v.std() - 1.0) <= 0.05
  assert report.converged and all(r.status == "ok" for r in report)
  np.testing.assert_allclose([r.std_after for r in report], [v.std() for v in outs.values()], rtol=1e-4)
  np.testing.assert_allclose(report[0].std_before, list(before.values())[0].std(), rtol=1e-4)
  assert "std before" in str(report) and report[0].name in str(report)


def test_lsuv_target_std_and_scale_is_uniform_per_layer():
  model = DeepMLP(depth=3, kinit=I.he_normal())
  params = _init(model, X)
  new, report = I.lsuv(_fn(model), params, X, target_std=2.0, tol=1e-3)
  for v in _linen_outputs(model, new, X).values():
    assert abs(v.std() - 2.0) <= 1e-3
  # only a rescaling: each kernel is a positive multiple of the original one
  k0, k1 = params["Block_0"]["Dense_0"]["kernel"], new["Block_0"]["Dense_0"]["kernel"]
  ratio = np.asarray(k1) / np.asarray(k0)
  np.testing.assert_allclose(ratio, report[0].scale, rtol=1e-5)


def test_lsuv_forward_order_from_the_model():
  model = Swapped()
  params = _init(model, X)
  _, report = I.lsuv(_fn(model), params, X)
  assert [r.name for r in report] == ["first", "second"]


def test_lsuv_does_not_modify_input_and_keeps_frozendict():
  model = DeepMLP(depth=2)
  params = flax.core.freeze(_init(model, X))
  copy = jax.tree_util.tree_map(np.array, flax.core.unfreeze(params))
  new, _ = I.lsuv(_fn(model), params, X)
  assert isinstance(new, flax.core.FrozenDict)
  chex.assert_trees_all_equal(flax.core.unfreeze(params), copy)


def test_lsuv_orthogonal_pre_init():
  model = DeepMLP(depth=2)
  params = _init(model, X)
  new, report = I.lsuv(_fn(model), params, X, orthogonal_init=True, key=jax.random.key(3))
  assert report.converged
  w = np.asarray(new["Block_1"]["Dense_0"]["kernel"], np.float64)
  gram = w.T @ w
  np.testing.assert_allclose(gram / gram[0, 0], np.eye(24), atol=1e-4)  # orthogonal up to the LSUV scale


def test_lsuv_bfloat16_params():
  model = DeepMLP(depth=3)
  params = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), _init(model, X))
  new, report = I.lsuv(_fn(model), params, X.astype(jnp.bfloat16))
  assert report.converged
  assert all(a.dtype == jnp.bfloat16 for a in jax.tree_util.tree_leaves(new))


class Dead(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(16)(x))
    x = nn.relu(nn.Dense(16, kernel_init=I.zeros)(x))  # output identically 0
    return nn.Dense(4)(x)


def test_lsuv_dead_layer_warns_and_stays_finite():
  model = Dead()
  params = _init(model, X)
  with pytest.warns(PracticeWarning, match="dead") as record:
    new, report = I.lsuv(_fn(model), params, X)
  assert {"Dense_1", "Dense_2"} <= {w.message.args[0].split()[2] for w in record}
  assert [r.status for r in report] == ["ok", "dead", "dead"]  # Dense_2 sees a zero input and zero bias
  assert all(bool(jnp.isfinite(a).all()) for a in jax.tree_util.tree_leaves(new))
  chex.assert_trees_all_equal(new["Dense_1"], params["Dense_1"])


def test_lsuv_bad_inputs():
  model = DeepMLP(depth=1)
  params = _init(model, X)
  with pytest.raises(ValueError, match="apply_fn"):
    I.lsuv("model", params, X)
  with pytest.raises(ValueError, match="params"):
    I.lsuv(_fn(model), [1, 2], X)
  with pytest.raises(ValueError, match="no layer"):
    I.lsuv(lambda p, x: x * 2.0, params, X)
  with pytest.raises(ValueError, match="params"):  # params not the 'params' collection
    I.lsuv(lambda p, x: model.apply({"params": p["inner"]}, x), {"inner": params}, X)
  with pytest.raises(ValueError, match="model"):
    I.lsuv_nnx(model, X)  # a linen module is not an NNX one (checked before the deprecation warning)


# --- LSUV, NNX -------------------------------------------------------------------------------

class NNXCNN(nnx.Module):
  def __init__(self, rngs):
    self.convs = nnx.List([
        nnx.Conv(3, 8, (3, 3), kernel_init=I.xavier_normal(0.1), rngs=rngs),
        nnx.Conv(8, 8, (3, 3), strides=2, kernel_init=I.xavier_normal(0.1), rngs=rngs),
    ])
    self.head = nnx.Linear(8 * 4 * 4, 4, kernel_init=I.normal(1.0), rngs=rngs)

  def __call__(self, x, return_all=False):
    outs = []
    for c in self.convs:
      x = c(x)
      outs.append(x)
      x = nnx.relu(x)
    y = self.head(x.reshape(x.shape[0], -1))
    return outs + [y] if return_all else y


def _nnx_mlp(depth=10, kinit=I.normal(0.01), dead_at=None):
  rngs = nnx.Rngs(0)
  layers = []
  for i in range(depth):
    init = I.zeros if i == dead_at else kinit
    layers += [nnx.Linear(16 if i == 0 else 24, 24, kernel_init=init, rngs=rngs), nnx.relu]
  return nnx.Sequential(*layers, nnx.Linear(24, 5, kernel_init=kinit, rngs=rngs))


def _nnx_mlp_outputs(model, x):
  outs = []
  for layer in model.layers:
    x = layer(x)
    if isinstance(layer, nnx.Linear):
      outs.append(np.asarray(x, np.float64))
  return outs


def test_lsuv_nnx_deep_mlp():
  model = _nnx_mlp()
  assert _nnx_mlp_outputs(model, X)[-1].std() < 1e-3
  same, report = I.lsuv(None, model, X, tol=0.05)
  assert same is model  # updated in place, returned as lsuv returns linen params
  outs = _nnx_mlp_outputs(model, X)
  assert len(report) == len(outs) == 11 and report.converged
  for v in outs:
    assert abs(v.std() - 1.0) <= 0.05
  assert [r.name for r in report] == [f"layers/{2 * i}" for i in range(11)]


def test_lsuv_nnx_cnn_with_forward():
  model = NNXCNN(nnx.Rngs(0))
  _, report = I.lsuv(lambda m, x: m(x), model, IMG, orthogonal_init=True, key=jax.random.key(0))
  assert report.converged and len(report) == 3
  for v in model(IMG, return_all=True):
    assert abs(float(jnp.std(v)) - 1.0) <= 0.1
  assert type(model.convs[0]) is nnx.Conv  # classes restored after recording


def test_lsuv_nnx_dead_layer():
  model = _nnx_mlp(depth=4, kinit=I.he_normal(), dead_at=1)
  with pytest.warns(PracticeWarning, match="dead"):
    _, report = I.lsuv(None, model, X)
  assert report[1].status == "dead"
  assert all(bool(jnp.isfinite(a).all()) for a in jax.tree_util.tree_leaves(nnx.state(model)))


def test_lsuv_nnx_keeps_batch_stats():
  rngs = nnx.Rngs(0)
  model = nnx.Sequential(nnx.Linear(16, 8, rngs=rngs), nnx.BatchNorm(8, rngs=rngs), nnx.Linear(8, 4, rngs=rngs))
  before = jax.tree_util.tree_map(np.array, nnx.state(model, nnx.BatchStat))
  I.lsuv(None, model, X)
  chex.assert_trees_all_equal(nnx.state(model, nnx.BatchStat), before)


# --- weight-norm init ------------------------------------------------------------------------

class WNNet(nn.Module):
  bias_too: bool = False

  @nn.compact
  def __call__(self, x):
    filt = {"kernel", "bias"} if self.bias_too else {"kernel"}
    x = nn.relu(nn.WeightNorm(nn.Conv(6, (3, 3)), variable_filter=filt)(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.WeightNorm(nn.Dense(12))(x))
    return nn.WeightNorm(nn.Dense(5))(x)


def _wn_outputs(model, params, x):
  capture = lambda m, name: isinstance(m, nn.WeightNorm) and name == "__call__"  # noqa: E731
  _, st = jax.jit(lambda p, x: model.apply({"params": p}, x, capture_intermediates=capture))(params, x)
  return [np.asarray(v, np.float64) for v in jax.tree_util.tree_leaves(st["intermediates"])]


def _check_unit_stats(outs, n_expected):
  assert len(outs) == n_expected
  for y in outs:
    flat = y.reshape(-1, y.shape[-1])
    np.testing.assert_allclose(flat.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(flat.std(0), 1.0, rtol=1e-4)


@pytest.mark.parametrize("bias_too", [False, True])
def test_weight_norm_init_linen(bias_too):
  model = WNNet(bias_too)
  x = 2.0 + IMG
  params = _init(model, x)
  new, report = I.weight_norm_init(_fn(model), params, x)
  _check_unit_stats(_wn_outputs(model, new, x), 3)
  assert len(report) == 3 and all(abs(r.std - 1.0) < 1e-3 for r in report)
  chex.assert_trees_all_equal(new["Dense_0"]["kernel"], params["Dense_0"]["kernel"])  # directions kept


def test_weight_norm_init_linen_errors():
  model = DeepMLP(depth=1)
  with pytest.raises(ValueError, match="WeightNorm"):
    I.weight_norm_init(_fn(model), _init(model, X), X)
  no_scale = nn.Sequential([nn.WeightNorm(nn.Dense(4), use_scale=False)])
  with pytest.raises(ValueError, match="use_scale"):
    I.weight_norm_init(_fn(no_scale), _init(no_scale, X), X)
  no_bias = nn.Sequential([nn.WeightNorm(nn.Dense(4, use_bias=False))])
  with pytest.raises(ValueError, match="bias"):
    I.weight_norm_init(_fn(no_bias), _init(no_bias, X), X)


class NNXWN(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.WeightNorm(nnx.Conv(3, 6, (3, 3), rngs=rngs), rngs=rngs)
    self.dense = nnx.WeightNorm(nnx.Linear(6 * 64, 5, rngs=rngs), rngs=rngs)

  def __call__(self, x, return_all=False):
    h = self.conv(x)
    y = self.dense(nnx.relu(h).reshape(x.shape[0], -1))
    return [h, y] if return_all else y


def test_weight_norm_init_nnx():
  model = NNXWN(nnx.Rngs(0))
  x = 2.0 + IMG
  same, report = I.weight_norm_init(None, model, x)  # one return type: (params or model, report)
  assert same is model
  _check_unit_stats([np.asarray(v, np.float64) for v in model(x, return_all=True)], 2)
  assert [r.name for r in report] == ["conv", "dense"]
  with pytest.warns(DeprecationWarning, match=r"weight_norm_init\(forward, model, batch\)"):
    report2 = I.weight_norm_init_nnx(model, x)  # the old twin: already initialized, unchanged
  np.testing.assert_allclose([r.std for r in report2], 1.0, rtol=1e-4)
  with pytest.raises(ValueError, match="WeightNorm"):
    I.weight_norm_init(None, nnx.Sequential(nnx.Linear(16, 4, rngs=nnx.Rngs(0))), X)
  with pytest.raises(ValueError, match=r"weight_norm_init\(None, model, batch\)"):
    I.weight_norm_init(model, x)  # the model-first form returned a bare report: now one type, and a clear error


# --- init_report -----------------------------------------------------------------------------

def test_init_report_linen_matches_direct_measurement():
  model = SmallCNN()
  params = _init(model, IMG)
  report = I.init_report(_fn(model), params, IMG)
  outs = list(_linen_outputs(model, params, IMG).values())
  assert [r.name for r in report] == ["Conv_0", "Conv_1", "Dense_0"]
  for r, y in zip(report, outs):
    flat = y.reshape(-1, y.shape[-1])
    np.testing.assert_allclose([r.mean, r.std], [y.mean(), y.std()], rtol=1e-4, atol=1e-7)
    assert r.dead_fraction == pytest.approx(np.mean(np.all(flat <= 0, axis=0)))
    assert r.shape == y.shape
  text = str(report)
  assert "Conv_1" in text and "dead" in text
  import matplotlib.figure

  fig = report.plot(label="xavier 0.1")
  assert isinstance(fig, matplotlib.figure.Figure)
  import matplotlib.pyplot as plt

  plt.close(fig)


def test_init_report_dead_units_and_nnx():
  model = _nnx_mlp(depth=3, kinit=I.he_normal(), dead_at=1)
  report = I.init_report(None, model, X)
  assert [r.dead_fraction for r in report][1] == 1.0  # all-zero output: every unit dead
  outs = _nnx_mlp_outputs(model, X)
  np.testing.assert_allclose([r.std for r in report], [y.std() for y in outs], rtol=1e-4)
  assert report.stds == [r.std for r in report]


def test_init_report_takes_forward_for_an_nnx_model():
  """``init_report(forward, model, batch)``; the old spellings warn and give the same report (issue #20)."""
  model = _nnx_mlp(depth=3, kinit=I.he_normal())
  batch = {"image": X}
  forward = lambda m, b: m(b["image"])  # noqa: E731
  report = I.init_report(forward, model, batch)
  with pytest.warns(DeprecationWarning, match=r"init_report\(f, model, batch\)"):
    old_form = I.init_report(model, batch, forward=forward)
  with pytest.warns(DeprecationWarning, match=r"init_report\(forward, model, batch\)"):
    old_twin = I.init_report_nnx(model, batch, forward)
  assert report.stds == old_form.stds == old_twin.stds
  np.testing.assert_allclose(report.stds, I.init_report(None, model, X).stds, rtol=1e-6)
  with pytest.raises(ValueError, match="forward"):
    I.init_report(lambda p, b: b, {}, X, forward=forward)  # a linen apply_fn: forward does not apply
  with pytest.raises(ValueError, match=r"init_report\(f, model, batch\)"):
    I.init_report(forward, model, batch, forward=forward)  # forward twice


def test_the_model_first_is_an_error_naming_the_convention():
  model = _nnx_mlp(depth=2)
  with pytest.raises(ValueError, match=r"lsuv\(None, model, batch\)"):
    I.lsuv(model, X, X)


def test_lsuv_nnx_is_a_deprecated_alias_of_lsuv():
  a, b = _nnx_mlp(depth=2), _nnx_mlp(depth=2)
  with pytest.warns(DeprecationWarning, match=r"lsuv\(f, model, batch\)\[1\]"):
    old = I.lsuv_nnx(a, X, forward=lambda m, x: m(x))
  _, new = I.lsuv(lambda m, x: m(x), b, X)
  assert [r.scale for r in old] == [r.scale for r in new]
  chex.assert_trees_all_equal(nnx.state(a, nnx.Param), nnx.state(b, nnx.Param))


# --- Dropout and BatchNorm driven by call-time rngs, run through nnx.view (issue #21 item 3) ----

class TutorialNet(nnx.Module):
  """The Flax NNX tutorial's pattern: Linear -> BatchNorm -> ReLU -> Dropout -> Linear, call-time rngs."""

  def __init__(self, rngs):
    self.l1 = nnx.Linear(16, 32, rngs=rngs)
    self.bn = nnx.BatchNorm(32, rngs=rngs)
    self.drop = nnx.Dropout(0.5)
    self.l2 = nnx.Linear(32, 4, rngs=rngs)

  def __call__(self, x, rngs=None):
    return self.l2(self.drop(nnx.relu(self.bn(self.l1(x))), rngs=rngs))


def _eval_view(m, x):
  return nnx.view(m, deterministic=True, use_running_average=True)(x)


def test_init_report_and_lsuv_follow_an_nnx_view_to_the_model():
  """``forward`` that runs ``nnx.view(model, deterministic=True)`` (new module objects sharing the
  Variables) used to give an empty report and a "no layer" error about linen."""
  model = TutorialNet(nnx.Rngs(0))
  report = I.init_report(_eval_view, model, X)
  assert [r.name for r in report] == ["l1", "l2"]
  h = model.l1(X)
  expected = model.l2(nnx.relu(nnx.view(model.bn, use_running_average=True)(h)))
  np.testing.assert_allclose(report.stds, [float(jnp.std(h)), float(jnp.std(expected))], rtol=1e-5)
  before_bn = jax.tree_util.tree_map(np.array, nnx.state(model, nnx.BatchStat))
  same, lsuv_report = I.lsuv(_eval_view, model, X, tol=0.01)
  assert same is model and lsuv_report.converged and [r.name for r in lsuv_report] == ["l1", "l2"]
  np.testing.assert_allclose(I.init_report(_eval_view, model, X).stds, 1.0, atol=0.01)  # the model itself moved
  chex.assert_trees_all_equal(nnx.state(model, nnx.BatchStat), before_bn)
  with pytest.warns(DeprecationWarning):
    assert I.lsuv_nnx(model, X, forward=_eval_view).converged  # the old name: no error about linen
  with pytest.warns(DeprecationWarning):  # the issue's own call, in the old model-first form: a real report
    assert [r.name for r in I.init_report(model, X, forward=lambda m, x: nnx.view(m, deterministic=True)(x))] == [
        "l1", "l2"]


def test_a_forward_that_runs_another_model_is_an_error_not_an_empty_report():
  model, other = TutorialNet(nnx.Rngs(0)), TutorialNet(nnx.Rngs(1))
  with pytest.raises(ValueError, match="nnx.view"):
    I.init_report(lambda m, x: _eval_view(other, x), model, X)
  with pytest.raises(ValueError, match="nnx.view"):
    I.lsuv(lambda m, x: nnx.clone(m)(x, rngs=nnx.Rngs(0)), model, X)
