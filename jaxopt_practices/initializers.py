"""Practice 3 — weight initialization: PyTorch's ``torch.nn.init`` in Flax's kernel layout.

Every initializer has the ``jax.nn.initializers`` signature ``init(key, shape,
dtype=jnp.float32)``, so it drops into ``flax.linen`` and ``flax.nnx`` as
``kernel_init=`` / ``bias_init=``. Distributions and gains are PyTorch's
(``torch.nn.init``, 2.x); the layout is Flax's:

* Dense kernel ``(in, out)``, Conv kernel ``(*spatial, in, out)``;
* ``fan_in = in * prod(spatial)``, ``fan_out = out * prod(spatial)``
  (PyTorch's weight is the transpose: Linear ``(out, in)``, Conv ``(out, in, *spatial)``,
  with the same fans).

Normal initializers are *plain* (untruncated) normals, as in PyTorch and in the papers
(Glorot & Bengio 2010, He et al 2015, LeCun et al 1998). ``jax.nn.initializers``
differs here: its ``lecun_normal``, ``he_normal`` and ``glorot_normal`` draw from a
normal truncated at two standard deviations and rescaled, a different distribution
with the same variance.

Random draws are made in float32 and cast to ``dtype``, so every float dtype
(bfloat16 and float16 included) works and the same key gives the same values up to
the cast. A shape with a zero-sized dimension gives an empty array.

Data-dependent initialization lives here too: :func:`lsuv` (Mishkin & Matas 2016),
:func:`weight_norm_init` (Salimans & Kingma 2016) and the diagnostic :func:`init_report`, for
linen (``apply_fn, params``) and NNX (``forward, model``: the model where the params go).
``lsuv_nnx``, ``init_report_nnx`` and ``weight_norm_init_nnx`` are deprecated aliases.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxopt_practices import _fans
from jaxopt_practices import _validate
from jaxopt_practices._fans import NONLINEARITIES as NONLINEARITIES
from jaxopt_practices._fans import Initializer as Initializer
from jaxopt_practices._fans import calculate_gain as calculate_gain
from jaxopt_practices._fans import compute_fans as compute_fans
from jaxopt_practices._init_plain import constant as constant, normal as normal, uniform as uniform
from jaxopt_practices._init_plain import ones as ones, zeros as zeros


def _xavier(name: str, gain: float, dist: str) -> Initializer:
  _validate.check_number("gain", gain, low=0.0)
  g = float(gain)
  return _fans.fan_based(name, lambda fi, fo: g * math.sqrt(2.0 / (fi + fo)), dist)


def xavier_uniform(gain: float = 1.0) -> Initializer:
  r"""Glorot/Xavier uniform, as ``torch.nn.init.xavier_uniform_``.

  .. math::
    W \sim \mathcal U(-a, a), \qquad a = \text{gain}\sqrt{\frac{6}{\text{fan\_in} + \text{fan\_out}}}.

  Args:
    gain: a factor :math:`\ge 0`, e.g. :func:`calculate_gain`.

  Returns:
    An :data:`Initializer` ``init(key, shape, dtype=jnp.float32)``; ``init`` raises
    ``ValueError`` for a shape of fewer than 2 dimensions (no fans) or a non-float dtype.

  Raises:
    ValueError: for a negative or non-finite ``gain``.

  Example:
    >>> import jax
    >>> from jaxopt_practices import initializers
    >>> initializers.xavier_uniform()(jax.random.key(0), (64, 32)).shape
    (64, 32)

  References:
    Glorot & Bengio, Understanding the difficulty of training deep feedforward neural
    networks, 2010.
  """
  return _xavier("xavier_uniform", gain, "uniform")


def xavier_normal(gain: float = 1.0) -> Initializer:
  r"""Glorot/Xavier plain normal, as ``torch.nn.init.xavier_normal_``.

  .. math::
    W \sim \mathcal N(0, \sigma^2), \qquad \sigma = \text{gain}\sqrt{\frac{2}{\text{fan\_in} + \text{fan\_out}}}.

  Untruncated, unlike ``jax.nn.initializers.glorot_normal``.

  Args:
    gain: a factor :math:`\ge 0`, e.g. :func:`calculate_gain`.

  Returns:
    An :data:`Initializer`, raising as :func:`xavier_uniform`'s does.

  Raises:
    ValueError: for a negative or non-finite ``gain``.

  Example:
    >>> import jax
    >>> from jaxopt_practices import initializers
    >>> initializers.xavier_normal()(jax.random.key(0), (3, 3, 8, 16)).shape
    (3, 3, 8, 16)

  References:
    Glorot & Bengio, Understanding the difficulty of training deep feedforward neural
    networks, 2010.
  """
  return _xavier("xavier_normal", gain, "normal")


def _he(name: str, negative_slope: float, mode: str, nonlinearity: str, dist: str) -> Initializer:
  _validate.check_number("negative_slope", negative_slope)
  _validate.check_choice("mode", mode, _fans.MODES)
  _validate.check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
  gain = calculate_gain(nonlinearity, float(negative_slope))
  pick = 0 if mode == "fan_in" else 1
  return _fans.fan_based(name, lambda fi, fo: gain / math.sqrt((fi, fo)[pick]), dist)


def he_normal(negative_slope: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Initializer:
  r"""Kaiming/He plain normal, as ``torch.nn.init.kaiming_normal_`` (``a`` is ``negative_slope``).

  .. math::
    W \sim \mathcal N(0, \sigma^2), \qquad
    \sigma = \frac{\text{calculate\_gain}(\text{nonlinearity}, \text{negative\_slope})}{\sqrt{\text{fan\_mode}}}.

  With the defaults the gain is :math:`\sqrt 2` (ReLU). Untruncated, unlike
  ``jax.nn.initializers.he_normal`` (a truncated normal of the same variance).

  Args:
    negative_slope: the slope of the rectifier's negative part (``leaky_relu`` only).
    mode: ``"fan_in"`` keeps the forward activations' variance, ``"fan_out"`` the
      backward gradients'.
    nonlinearity: the name for :func:`calculate_gain` (PyTorch recommends ``relu``
      or ``leaky_relu``).

  Returns:
    An :data:`Initializer` ``init(key, shape, dtype=jnp.float32)``; ``init`` raises
    ``ValueError`` for a shape of fewer than 2 dimensions (no fans) or a non-float dtype.

  Raises:
    ValueError: for a non-finite ``negative_slope``, or a ``mode`` / ``nonlinearity`` not in
      ``("fan_in", "fan_out")`` / :data:`NONLINEARITIES`.

  Example:
    >>> import jax
    >>> from jaxopt_practices import initializers
    >>> w = initializers.he_normal()(jax.random.key(0), (1000, 1000))
    >>> round(float(w.std() * 1000**0.5), 1)
    1.4

  References:
    He et al, Delving deep into rectifiers: surpassing human-level performance on
    ImageNet classification, 2015.
  """
  return _he("he_normal", negative_slope, mode, nonlinearity, "normal")


def he_uniform(negative_slope: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Initializer:
  r"""Kaiming/He uniform, as ``torch.nn.init.kaiming_uniform_`` (``a`` is ``negative_slope``).

  .. math::
    W \sim \mathcal U(-b, b), \qquad
    b = \text{calculate\_gain}(\text{nonlinearity}, \text{negative\_slope})\sqrt{\frac{3}{\text{fan\_mode}}}.

  Args:
    negative_slope: the slope of the rectifier's negative part (``leaky_relu`` only).
    mode: ``"fan_in"`` or ``"fan_out"``.
    nonlinearity: the name for :func:`calculate_gain`.

  Returns:
    An :data:`Initializer`, raising as :func:`he_normal`'s does.

  Raises:
    ValueError: as :func:`he_normal` does, for a bad ``negative_slope``, ``mode`` or ``nonlinearity``.

  Example:
    >>> import jax
    >>> from jaxopt_practices import initializers
    >>> w = initializers.he_uniform()(jax.random.key(0), (600, 10))
    >>> bool(abs(w).max() <= 6**0.5 / 600**0.5)
    True

  References:
    He et al, Delving deep into rectifiers, 2015.
  """
  return _he("he_uniform", negative_slope, mode, nonlinearity, "uniform")


def _lecun_std(fan_in: int, fan_out: int) -> float:
  del fan_out
  return 1.0 / math.sqrt(fan_in)


def lecun_normal() -> Initializer:
  r"""LeCun plain normal: :math:`\mathcal N(0, 1/\text{fan\_in})`.

  PyTorch's ``kaiming_normal_(nonlinearity="linear")``; untruncated, unlike
  ``jax.nn.initializers.lecun_normal``. The right scale for SELU networks.

  Returns:
    An :data:`Initializer` ``init(key, shape, dtype=jnp.float32)``; ``init`` raises
    ``ValueError`` for a shape of fewer than 2 dimensions (no fans) or a non-float dtype.

  Example:
    >>> import jax
    >>> from jaxopt_practices import initializers
    >>> initializers.lecun_normal()(jax.random.key(0), (4, 2)).shape
    (4, 2)

  References:
    LeCun et al, Efficient BackProp, 1998; Klambauer et al, Self-normalizing neural networks, 2017.
  """
  return _fans.fan_based("lecun_normal", _lecun_std, "normal")


def lecun_uniform() -> Initializer:
  r"""LeCun uniform: :math:`\mathcal U(-\sqrt{3/\text{fan\_in}}, \sqrt{3/\text{fan\_in}})`.

  PyTorch's ``kaiming_uniform_(nonlinearity="linear")``.

  Returns:
    An :data:`Initializer`, raising as :func:`lecun_normal`'s does.

  Example:
    >>> import jax
    >>> from jaxopt_practices import initializers
    >>> initializers.lecun_uniform()(jax.random.key(0), (4, 2)).shape
    (4, 2)

  References:
    LeCun et al, Efficient BackProp, 1998.
  """
  return _fans.fan_based("lecun_uniform", _lecun_std, "uniform")


def orthogonal(gain: float = 1.0) -> Initializer:
  r"""A (semi-)orthogonal kernel times ``gain``, as ``torch.nn.init.orthogonal_``.

  The kernel is viewed as the matrix :math:`M` of shape ``(prod(shape[:-1]), shape[-1])``
  (``(fan_in, out)`` for Dense and Conv, the transpose of PyTorch's flattened weight):
  when ``fan_in >= out`` its columns are orthonormal, :math:`M^\top M = \text{gain}^2 I`;
  otherwise its rows are, :math:`M M^\top = \text{gain}^2 I`. :math:`M` is the ``Q`` of a
  QR decomposition of a standard normal matrix with the signs of ``diag(R)`` folded in,
  so it is Haar-distributed.

  Args:
    gain: a factor :math:`\ge 0`.

  Returns:
    An :data:`Initializer` ``init(key, shape, dtype=jnp.float32)``; ``init`` raises
    ``ValueError`` for a shape of fewer than 2 dimensions or a non-float dtype.

  Raises:
    ValueError: for a negative or non-finite ``gain``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxopt_practices import initializers
    >>> w = initializers.orthogonal()(jax.random.key(0), (8, 4))
    >>> bool(jnp.allclose(w.T @ w, jnp.eye(4), atol=1e-5))
    True

  References:
    Saxe et al, Exact solutions to the nonlinear dynamics of learning in deep linear
    neural networks, 2014.
  """
  _validate.check_number("gain", gain, low=0.0)
  g = float(gain)

  def init(key, shape, dtype=jnp.float32):
    return _fans.orthogonal_kernel(key, shape, dtype, g)

  return init


# Data-dependent initialization and diagnostics (private modules, re-exported here).
from jaxopt_practices._init_report import InitReport as InitReport  # noqa: E402
from jaxopt_practices._init_report import LayerStats as LayerStats  # noqa: E402
from jaxopt_practices._init_report import init_report as init_report  # noqa: E402
from jaxopt_practices._init_report import init_report_nnx as init_report_nnx  # noqa: E402
from jaxopt_practices._lsuv import LayerScaling as LayerScaling  # noqa: E402
from jaxopt_practices._lsuv import LSUVReport as LSUVReport  # noqa: E402
from jaxopt_practices._lsuv import lsuv as lsuv  # noqa: E402
from jaxopt_practices._lsuv import lsuv_nnx as lsuv_nnx  # noqa: E402
from jaxopt_practices._weight_norm import weight_norm_init as weight_norm_init  # noqa: E402
from jaxopt_practices._weight_norm import weight_norm_init_nnx as weight_norm_init_nnx  # noqa: E402
from jaxopt_practices._init_more import dirac as dirac, eye as eye, sparse as sparse  # noqa: E402  (issue #23)
from jaxopt_practices._init_more import trunc_normal as trunc_normal  # noqa: E402

__all__ = [
    "Initializer", "NONLINEARITIES", "calculate_gain", "compute_fans", "zeros", "ones", "constant",
    "normal", "uniform", "xavier_uniform", "xavier_normal", "he_normal", "he_uniform", "lecun_normal",
    "lecun_uniform", "orthogonal", "lsuv", "lsuv_nnx", "LSUVReport", "LayerScaling", "weight_norm_init",
    "weight_norm_init_nnx", "init_report", "init_report_nnx", "InitReport", "LayerStats",
    "trunc_normal", "sparse", "dirac", "eye",
]
