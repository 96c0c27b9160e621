"""Practice 3 — initializers: fans, distributions, gains, PyTorch parity, bad input."""

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxopt_practices import initializers as I

DENSE = (2000, 500)  # fan_in 2000, fan_out 500
CONV = (3, 3, 256, 384)  # fan_in 2304, fan_out 3456
SLOPES = [None, 0.0, 0.2, 1, -0.5, 3.0]


def _draw(init, shape, seed=0, dtype=jnp.float32):
  return np.asarray(init(jax.random.key(seed), shape, dtype), np.float64)


# --- fans ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "shape, fans",
    [((3, 5), (3, 5)), ((7, 1), (7, 1)), ((4, 6, 8), (24, 32)), ((3, 3, 16, 32), (144, 288)),
     ((2, 3, 4, 5, 6), (120, 144)), ((1, 1, 10, 20), (10, 20))],
)
def test_compute_fans_exact(shape, fans):
  assert I.compute_fans(shape) == fans


def test_compute_fans_match_torch_transposed():
  torch = pytest.importorskip("torch")
  for shape in [(3, 5), (4, 6, 8), (3, 3, 16, 32), (2, 3, 4, 5, 6)]:
    torch_shape = (shape[-1], shape[-2], *shape[:-2])  # (out, in, *spatial)
    assert I.compute_fans(shape) == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(torch_shape))


# --- distributions: closed form ------------------------------------------------------------

def _expected(name, shape, gain=1.0, slope=0.0, mode="fan_in", nl="leaky_relu"):
  """(distribution, mean, std) from the papers' / torch docs' formulas."""
  fi, fo = I.compute_fans(shape)
  if name.startswith("xavier"):
    std = gain * math.sqrt(2.0 / (fi + fo))
  elif name.startswith("he"):
    g = {"relu": math.sqrt(2), "leaky_relu": math.sqrt(2 / (1 + slope**2)), "tanh": 5 / 3, "linear": 1.0}[nl]
    std = g / math.sqrt(fi if mode == "fan_in" else fo)
  else:  # lecun
    std = 1 / math.sqrt(fi)
  return ("normal" if name.endswith("normal") else "uniform"), 0.0, std


CASES = [
    ("xavier_uniform", lambda: I.xavier_uniform(), {}),
    ("xavier_uniform", lambda: I.xavier_uniform(gain=0.7), {"gain": 0.7}),
    ("xavier_normal", lambda: I.xavier_normal(), {}),
    ("xavier_normal", lambda: I.xavier_normal(gain=5 / 3), {"gain": 5 / 3}),
    ("he_normal", lambda: I.he_normal(), {}),
    ("he_normal", lambda: I.he_normal(0.2), {"slope": 0.2}),
    ("he_normal", lambda: I.he_normal(mode="fan_out", nonlinearity="relu"), {"mode": "fan_out", "nl": "relu"}),
    ("he_normal", lambda: I.he_normal(nonlinearity="tanh"), {"nl": "tanh"}),
    ("he_uniform", lambda: I.he_uniform(), {}),
    ("he_uniform", lambda: I.he_uniform(0.1, mode="fan_out"), {"slope": 0.1, "mode": "fan_out"}),
    ("lecun_normal", lambda: I.lecun_normal(), {}),
    ("lecun_uniform", lambda: I.lecun_uniform(), {}),
]


def _check_sample(w, dist, mean, std):
  n = w.size
  assert abs(w.mean() - mean) < 6 * std / math.sqrt(n) + 1e-12
  np.testing.assert_allclose(w.std(), std, rtol=5e-3)
  if dist == "uniform":
    bound = math.sqrt(3) * std
    assert np.abs(w - mean).max() <= bound * (1 + 1e-6)
    assert np.abs(w - mean).max() >= bound * (1 - 1e-4)
  else:  # plain, untruncated normal: P(|z| > 2) = 4.55%, P(|z| > 3) = 0.27%
    z = np.abs(w - mean) / std
    assert abs((z > 2).mean() - 0.0455) < 2e-3
    assert abs((z > 3).mean() - 0.0027) < 4e-4


@pytest.mark.parametrize("shape", [DENSE, CONV], ids=["dense", "conv"])
@pytest.mark.parametrize("name, make, kw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_fan_based_std_and_bound(name, make, kw, shape):
  dist, mean, std = _expected(name, shape, **kw)
  _check_sample(_draw(make(), shape), dist, mean, std)


def test_normal_and_uniform():
  _check_sample(_draw(I.normal(), (1000, 1000)), "normal", 0.0, 0.01)
  _check_sample(_draw(I.normal(0.5, mean=-2.0), (1000, 1000)), "normal", -2.0, 0.5)
  w = _draw(I.uniform(-3.0, 5.0), (1000, 1000))
  _check_sample(w, "uniform", 1.0, 8 / math.sqrt(12))
  assert w.min() >= -3.0 and w.max() < 5.0
  w = _draw(I.uniform(), (1000,), seed=3)
  assert w.min() >= 0.0 and w.max() < 1.0


def test_constant_zeros_ones():
  k = jax.random.key(0)
  chex.assert_trees_all_equal(I.zeros(k, (2, 3)), jnp.zeros((2, 3)))
  chex.assert_trees_all_equal(I.ones(k, (4,), jnp.bfloat16), jnp.ones((4,), jnp.bfloat16))
  chex.assert_trees_all_equal(I.constant(-1.5)(k, (3, 2)), jnp.full((3, 2), -1.5))
  assert I.constant(2)(k, (2,), jnp.int32).dtype == jnp.int32


@pytest.mark.parametrize("gain", [1.0, 0.5, math.sqrt(2)])
@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (48, 48), (3, 3, 16, 32), (3, 3, 8, 200)])
def test_orthogonal(shape, gain):
  w = I.orthogonal(gain)(jax.random.key(1), shape)
  m = np.asarray(w, np.float64).reshape(-1, shape[-1])
  if m.shape[0] >= m.shape[1]:
    np.testing.assert_allclose(m.T @ m, gain**2 * np.eye(m.shape[1]), atol=2e-5)
  else:
    np.testing.assert_allclose(m @ m.T, gain**2 * np.eye(m.shape[0]), atol=2e-5)


# --- PyTorch parity --------------------------------------------------------------------------

@pytest.mark.parametrize("nonlinearity", I.NONLINEARITIES)
@pytest.mark.parametrize("param", SLOPES)
def test_calculate_gain_matches_torch(nonlinearity, param):
  torch = pytest.importorskip("torch")
  expected = torch.nn.init.calculate_gain(nonlinearity, param)
  assert I.calculate_gain(nonlinearity, param) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("nonlinearity, param",
                         [("gelu", None), ("Relu", None), ("leaky_relu", "0.1"), ("leaky_relu", True), (3, None)])
def test_calculate_gain_errors_match_torch(nonlinearity, param):
  torch = pytest.importorskip("torch")
  with pytest.raises(ValueError):
    torch.nn.init.calculate_gain(nonlinearity, param)
  with pytest.raises(ValueError, match="nonlinearity|param"):
    I.calculate_gain(nonlinearity, param)


def _torch_pairs(torch):
  ni = torch.nn.init
  return [
      (I.xavier_uniform(), lambda t: ni.xavier_uniform_(t)),
      (I.xavier_uniform(1.3), lambda t: ni.xavier_uniform_(t, gain=1.3)),
      (I.xavier_normal(), lambda t: ni.xavier_normal_(t)),
      (I.xavier_normal(0.5), lambda t: ni.xavier_normal_(t, gain=0.5)),
      (I.he_normal(), lambda t: ni.kaiming_normal_(t)),
      (I.he_normal(0.3, "fan_out"), lambda t: ni.kaiming_normal_(t, a=0.3, mode="fan_out")),
      (I.he_normal(nonlinearity="relu"), lambda t: ni.kaiming_normal_(t, nonlinearity="relu")),
      (I.he_normal(nonlinearity="selu"), lambda t: ni.kaiming_normal_(t, nonlinearity="selu")),
      (I.he_uniform(), lambda t: ni.kaiming_uniform_(t)),
      (I.he_uniform(0.2, "fan_out", "leaky_relu"), lambda t: ni.kaiming_uniform_(t, a=0.2, mode="fan_out")),
      (I.he_uniform(nonlinearity="tanh"), lambda t: ni.kaiming_uniform_(t, nonlinearity="tanh")),
      (I.lecun_normal(), lambda t: ni.kaiming_normal_(t, nonlinearity="linear")),
      (I.lecun_uniform(), lambda t: ni.kaiming_uniform_(t, nonlinearity="linear")),
      (I.normal(0.02, 0.1), lambda t: ni.normal_(t, 0.1, 0.02)),
      (I.uniform(-0.3, 0.7), lambda t: ni.uniform_(t, -0.3, 0.7)),
      (I.orthogonal(), lambda t: ni.orthogonal_(t)),
      (I.orthogonal(2.0), lambda t: ni.orthogonal_(t, gain=2.0)),
  ]


@pytest.mark.parametrize("shape", [DENSE, (600, 800), (3, 3, 64, 96)], ids=["dense", "wide", "conv"])
@pytest.mark.parametrize("index", range(17))
def test_std_and_bound_match_torch(index, shape):
  """Same distribution as torch.nn.init on the transposed weight: std, mean and support."""
  torch = pytest.importorskip("torch")
  ours_init, torch_init = _torch_pairs(torch)[index]
  if index >= 15:  # orthogonal: a QR per draw, so smaller matrices
    shape = shape[:-2] + (shape[-2] // 4, shape[-1] // 4)
  torch.manual_seed(index)
  t = torch.empty((shape[-1], shape[-2], *shape[:-2]))
  theirs = torch_init(t).numpy().astype(np.float64)
  ours = _draw(ours_init, shape, seed=index)
  n = ours.size
  tol = 6.0 / math.sqrt(n) + 1e-3
  np.testing.assert_allclose(ours.std(), theirs.std(), rtol=tol)
  assert abs(ours.mean() - theirs.mean()) < 8 * theirs.std() / math.sqrt(n)
  lo, hi = theirs.min(), theirs.max()
  is_uniform = index in (0, 1, 8, 9, 10, 12, 14)
  if is_uniform:  # same support, up to the sampling gap at the ends
    np.testing.assert_allclose([ours.min(), ours.max()], [lo, hi], rtol=2e-3, atol=1e-4 * (hi - lo))
  else:
    np.testing.assert_allclose(np.abs(ours - ours.mean()).max() / ours.std(),
                               np.abs(theirs - theirs.mean()).max() / theirs.std(), rtol=0.35)


# --- behaviour -------------------------------------------------------------------------------

ALL = {
    "normal": I.normal(), "uniform": I.uniform(), "xavier_uniform": I.xavier_uniform(),
    "xavier_normal": I.xavier_normal(), "he_normal": I.he_normal(), "he_uniform": I.he_uniform(),
    "lecun_normal": I.lecun_normal(), "lecun_uniform": I.lecun_uniform(), "orthogonal": I.orthogonal(),
}
FAN_BASED = ["xavier_uniform", "xavier_normal", "he_normal", "he_uniform", "lecun_normal", "lecun_uniform",
             "orthogonal"]


@pytest.mark.parametrize("name", sorted(ALL))
def test_same_key_same_array_and_jit(name):
  init = ALL[name]
  a = init(jax.random.key(7), (3, 3, 4, 8))
  chex.assert_trees_all_equal(a, init(jax.random.key(7), (3, 3, 4, 8)))
  assert not np.array_equal(np.asarray(a), np.asarray(init(jax.random.key(8), (3, 3, 4, 8))))
  jitted = jax.jit(init, static_argnums=(1, 2))
  chex.assert_trees_all_close(jitted(jax.random.key(7), (3, 3, 4, 8), jnp.float32), a, atol=1e-6)
  chex.assert_trees_all_equal(init(jax.random.PRNGKey(7), (5, 6)), init(jax.random.PRNGKey(7), (5, 6)))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
@pytest.mark.parametrize("name", sorted(ALL))
def test_float_dtypes(name, dtype):
  init = ALL[name]
  w = init(jax.random.key(3), (64, 32), dtype)
  assert w.dtype == dtype
  ref = init(jax.random.key(3), (64, 32), jnp.float32)
  chex.assert_trees_all_equal(w, ref.astype(dtype))  # sampled in float32, then cast


@pytest.mark.parametrize("name", FAN_BASED)
def test_fan_based_need_two_dims(name):
  for shape in [(), (5,)]:
    with pytest.raises(ValueError, match="at least 2 dimensions"):
      ALL[name](jax.random.key(0), shape)


@pytest.mark.parametrize("name", sorted(ALL))
def test_zero_size_shapes(name):
  w = ALL[name](jax.random.key(0), (0, 4))
  assert w.shape == (0, 4)


def test_drop_into_flax_linen_and_nnx():
  x = jnp.ones((2, 8, 8, 3))
  conv = nn.Conv(16, (3, 3), kernel_init=I.he_normal(), bias_init=I.zeros)
  v = conv.init(jax.random.key(0), x)
  assert v["params"]["kernel"].shape == (3, 3, 3, 16)
  dense = nn.Dense(4, kernel_init=I.orthogonal(), param_dtype=jnp.bfloat16)
  vd = dense.init(jax.random.key(0), jnp.ones((2, 8), jnp.bfloat16))
  assert vd["params"]["kernel"].dtype == jnp.bfloat16
  lin = nnx.Linear(8, 4, kernel_init=I.xavier_uniform(), bias_init=I.constant(0.1), rngs=nnx.Rngs(0))
  assert lin.kernel.get_value().shape == (8, 4)
  chex.assert_trees_all_equal(lin.bias.get_value(), jnp.full((4,), 0.1))
  c = nnx.Conv(3, 8, (3, 3), kernel_init=I.lecun_normal(), rngs=nnx.Rngs(0))
  assert c(x).shape == (2, 8, 8, 8)
