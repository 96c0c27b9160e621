"""initializers.trunc_normal / sparse / dirac / eye ≙ torch.nn.init's, in Flax layouts (issue #23)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxopt_practices import initializers as I

N = 200_000


def _truncated_moments(mean, std, a, b):
  """Mean and std of N(mean, std^2) truncated to [a, b] (closed form)."""
  alpha, beta = (a - mean) / std, (b - mean) / std
  pdf = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731
  cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
  z = cdf(beta) - cdf(alpha)
  m = (pdf(alpha) - pdf(beta)) / z
  var = 1 + (alpha * pdf(alpha) - beta * pdf(beta)) / z - m * m
  return mean + std * m, std * math.sqrt(var)


@pytest.mark.parametrize("mean, std, a, b", [(0.0, 1.0, -2.0, 2.0), (0.0, 0.02, -2.0, 2.0), (1.0, 2.0, 0.0, 1.5),
                                             (-0.5, 0.3, -1.0, 5.0)])
def test_trunc_normal_moments_and_absolute_bounds(mean, std, a, b):
  w = np.asarray(I.trunc_normal(mean, std, a, b)(jax.random.key(0), (N,)), np.float64)
  want_mean, want_std = _truncated_moments(mean, std, a, b)
  assert w.min() >= a and w.max() <= b
  assert abs(w.mean() - want_mean) < 6 * want_std / math.sqrt(N)
  np.testing.assert_allclose(w.std(), want_std, rtol=1e-2)


def test_trunc_normal_bounds_are_absolute_not_in_stds():
  """timm/ViT's trunc_normal(std=0.02): bounds at +-2 are +-100 std, so it is a plain normal,
  unlike jax.nn.initializers.truncated_normal(0.02), which truncates at +-2 std."""
  w = np.asarray(I.trunc_normal(std=0.02)(jax.random.key(1), (N,)))
  assert abs((np.abs(w) > 0.04).mean() - 0.0455) < 3e-3
  assert np.abs(np.asarray(jax.nn.initializers.truncated_normal(0.02)(jax.random.key(1), (N,)))).max() <= 0.04


@pytest.mark.parametrize("sparsity, shape", [(0.1, (20, 30)), (0.5, (7, 5)), (0.0, (4, 4)), (1.0, (3, 6)),
                                             (0.34, (9, 3))])
def test_sparse_zeros_per_input_as_torch(sparsity, shape):
  w = np.asarray(I.sparse(sparsity, std=0.5)(jax.random.key(2), shape))
  zeros = math.ceil(sparsity * shape[1])  # torch: ceil(sparsity * rows) per column of (out, in)
  np.testing.assert_array_equal((w == 0).sum(axis=1), np.full(shape[0], zeros))
  nonzero = w[w != 0]
  if nonzero.size > 20:
    assert 0.25 < nonzero.std() < 0.75


def test_sparse_counts_match_torch_on_the_transposed_weight():
  torch = pytest.importorskip("torch")
  t = torch.empty(30, 20)  # torch (out, in) = our (20, 30)
  torch.nn.init.sparse_(t, 0.1)
  ours = np.asarray(I.sparse(0.1)(jax.random.key(3), (20, 30)))
  np.testing.assert_array_equal((ours == 0).sum(axis=1), (t.numpy() == 0).sum(axis=0))


@pytest.mark.parametrize("spatial", [(3,), (3, 5), (3, 3, 3)])
@pytest.mark.parametrize("groups", [1, 2])
def test_dirac_conv_is_the_identity(spatial, groups):
  channels = 4
  shape = spatial + (channels // groups, channels)
  w = I.dirac(groups)(jax.random.key(0), shape)
  x = jax.random.normal(jax.random.key(1), (2,) + tuple(s + 4 for s in spatial) + (channels,))
  n = len(spatial)
  letters = "DHW"[-n:] if n < 3 else "DHW"
  dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("N" + letters + "C", letters + "IO", "N" + letters + "C"))
  y = jax.lax.conv_general_dilated(x, w, (1,) * n, "SAME", dimension_numbers=dn, feature_group_count=groups)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


def test_dirac_is_torchs_transposed():
  torch = pytest.importorskip("torch")
  for groups, torch_shape in [(1, (6, 4, 3, 3)), (2, (6, 2, 3)), (3, (6, 3, 3, 3, 3))]:
    t = torch.empty(torch_shape)
    torch.nn.init.dirac_(t, groups)
    n = len(torch_shape) - 2
    ours = I.dirac(groups)(jax.random.key(0), torch_shape[2:] + torch_shape[1::-1])
    np.testing.assert_array_equal(np.asarray(ours), np.moveaxis(t.numpy(), (0, 1), (n + 1, n)))


def test_eye_is_the_identity_and_torchs_transposed():
  torch = pytest.importorskip("torch")
  for shape in [(3, 3), (2, 5), (5, 2)]:
    w = I.eye()(jax.random.key(0), shape, jnp.bfloat16)
    assert w.dtype == jnp.bfloat16
    x = jnp.arange(2.0 * shape[0]).reshape(2, shape[0])
    k = min(shape)
    np.testing.assert_array_equal(np.asarray(x @ w.astype(jnp.float32))[:, :k], np.asarray(x)[:, :k])
    t = torch.empty(shape[::-1])
    torch.nn.init.eye_(t)
    np.testing.assert_array_equal(np.asarray(w, np.float32), t.numpy().T)


def test_new_initializers_in_flax():
  import flax.linen as nn
  dense = nn.Dense(3, kernel_init=I.eye())
  params = dense.init(jax.random.key(0), jnp.ones((1, 3)))
  np.testing.assert_array_equal(np.asarray(dense.apply(params, jnp.array([[1.0, 2.0, 3.0]]))), [[1.0, 2.0, 3.0]])
  conv = nn.Conv(2, (3, 3), kernel_init=I.dirac(), use_bias=False)
  x = jax.random.normal(jax.random.key(1), (1, 5, 5, 2))
  np.testing.assert_array_equal(np.asarray(conv.apply(conv.init(jax.random.key(0), x), x)), np.asarray(x))
