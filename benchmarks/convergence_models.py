"""Models, synthetic data and the vmapped trainer behind ``benchmarks/convergence.py``.

Plain JAX, no framework: a ReLU MLP (digits), a small post-LN Transformer encoder (sorting
short token sequences) and a vanilla tanh RNN (the adding problem). ``train_runs`` trains
many independent runs (arms x seeds) in one compiled, vmapped ``lax.scan``: one compile
per experiment instead of one per run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

# ----------------------------------------------------------------------------- trainer
def train_runs(loss_fn: Callable, make_tx: Callable[[Any], optax.GradientTransformation],
               params: Any, hyper: Any, xs: Any) -> tuple[Any, np.ndarray, np.ndarray]:
  """Trains ``R`` independent runs at once: ``vmap`` over runs of a ``lax.scan`` over steps.

  Args:
    loss_fn: ``(params, x) -> scalar loss`` for one run and one step's scan input ``x``.
    make_tx: ``hyper -> optax.GradientTransformation`` for one run (``hyper`` traced).
    params: initial params with a leading run axis ``R``.
    hyper: per-run hyperparameters (leading axis ``R``), e.g. a learning-rate table.
    xs: per-run, per-step scan inputs (leading axes ``R, steps``): batch indices or PRNG keys.

  Returns:
    final params (run axis first), losses ``(R, steps)`` and pre-update gradient global
    norms ``(R, steps)``, the last two as NumPy arrays.
  """
  def one(p, h, xs_run):
    tx = make_tx(h)

    def step(carry, x):
      p, s = carry
      loss, g = jax.value_and_grad(loss_fn)(p, x)
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), (loss, optax.global_norm(g))

    (p, _), (losses, norms) = jax.lax.scan(step, (p, tx.init(p)), xs_run)
    return p, losses, norms

  p, losses, norms = jax.jit(jax.vmap(one))(params, hyper, xs)
  return p, np.asarray(losses), np.asarray(norms)


def lr_table(schedule: Callable, steps: int) -> np.ndarray:
  """``schedule(t)`` for ``t = 0 .. steps - 1``, so that arms with different schedules share one
  compiled step (the optimizer then reads ``table[count]``; the values are the schedule's own)."""
  return np.asarray(schedule(np.arange(steps)), np.float32)


def stack(trees: list) -> Any:
  """Stacks a list of pytrees along a new leading (run) axis."""
  return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def step_keys(seed: int, steps: int) -> jax.Array:
  """One PRNG key per step for the data stream of ``seed`` (the same for every arm)."""
  return jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), 1), steps)


# ----------------------------------------------------------------------------- MLP on digits
def digits():
  """scikit-learn's 8x8 digits: 1,437 train / 360 test images in [0, 1], stratified split."""
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


def mlp_loss(xtr, ytr) -> Callable:
  """Cross-entropy on the minibatch ``xtr[ids]`` (``ids``: one step's indices; ``None``-like
  full batch when ``ids`` is a scalar)."""
  xtr, ytr = jnp.asarray(xtr), jnp.asarray(ytr)

  def loss(params, ids):
    xb, yb = (xtr, ytr) if jnp.ndim(ids) == 0 else (xtr[ids], ytr[ids])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(mlp_apply(params, xb), yb))

  return loss


def mlp_accuracy(params, x, y) -> np.ndarray:
  """Test accuracy of every run (params with a run axis)."""
  logits = jax.vmap(mlp_apply, in_axes=(0, None))(params, jnp.asarray(x))
  return np.asarray(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(y)[None], axis=-1))


# ----------------------------------------------------------------------------- post-LN Transformer
VOCAB, SEQ_LEN, HEADS = 16, 10, 4


def sort_batch(key, n):
  """``n`` random sequences of ``SEQ_LEN`` tokens from ``VOCAB``; the target is the sorted sequence."""
  x = jax.random.randint(key, (n, SEQ_LEN), 0, VOCAB)
  return x, jnp.sort(x, axis=-1)


def transformer_init(key, d_model: int, layers: int, ff: int = 4):
  """Stacked layer weights (leading axis = layer), 1/sqrt(fan_in) normal init, LayerNorm at (1, 0)."""
  k = jax.random.split(key, 7)
  n = lambda k, shape, fan: jax.random.normal(k, shape) / np.sqrt(fan)
  d, h = d_model, ff * d_model
  blocks = {"qkv": n(k[3], (layers, d, 3 * d), d), "o": n(k[4], (layers, d, d), d),
            "w1": n(k[5], (layers, d, h), d), "b1": jnp.zeros((layers, h)),
            "w2": n(k[6], (layers, h, d), h), "b2": jnp.zeros((layers, d)),
            "ln_scale": jnp.ones((layers, 2, d)), "ln_bias": jnp.zeros((layers, 2, d))}
  return {"embed": n(k[0], (VOCAB, d), d), "pos": n(k[1], (SEQ_LEN, d), d),
          "out": n(k[2], (d, VOCAB), d), "blocks": blocks}


def _layer_norm(x, scale, bias):
  mean = x.mean(-1, keepdims=True)
  var = jnp.square(x - mean).mean(-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias


def transformer_apply(params, tokens):
  """Post-LN encoder (Vaswani et al. 2017): ``h = LN(h + Attn(h)); h = LN(h + FFN(h))``."""
  h = params["embed"][tokens] + params["pos"]
  b, t, d = h.shape
  heads = lambda z: z.reshape(b, t, HEADS, d // HEADS)

  def block(h, w):
    q, k, v = jnp.split(h @ w["qkv"], 3, axis=-1)
    att = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", heads(q), heads(k)) / np.sqrt(d // HEADS), -1)
    h = _layer_norm(h + jnp.einsum("bhqk,bkhd->bqhd", att, heads(v)).reshape(b, t, d) @ w["o"],
                    w["ln_scale"][0], w["ln_bias"][0])
    ffn = jax.nn.relu(h @ w["w1"] + w["b1"]) @ w["w2"] + w["b2"]
    return _layer_norm(h + ffn, w["ln_scale"][1], w["ln_bias"][1]), None

  h, _ = jax.lax.scan(block, h, params["blocks"])
  return h @ params["out"]


def sort_loss(batch_size: int) -> Callable:
  def loss(params, key):
    x, y = sort_batch(key, batch_size)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(transformer_apply(params, x), y))
  return loss


def sort_accuracy(params, n: int = 1000) -> np.ndarray:
  """Token accuracy of every run on ``n`` held-out sequences (a key never used in training)."""
  x, y = sort_batch(jax.random.PRNGKey(10_000), n)
  logits = jax.vmap(transformer_apply, in_axes=(0, None))(params, x)
  return np.asarray(jnp.mean(jnp.argmax(logits, -1) == y[None], axis=(1, 2)))


# ----------------------------------------------------------------------------- tanh RNN
def adding_batch(key, n: int, length: int):
  """The adding problem (Hochreiter & Schmidhuber 1997): inputs ``(value ~ U(0,1), marker)``;
  one marker in each half; the target is the sum of the two marked values. Predicting the mean
  (1.0) gives MSE 1/6 ≈ 0.167."""
  k1, k2 = jax.random.split(key)
  values = jax.random.uniform(k1, (n, length))
  where = jax.random.randint(k2, (n, 2), 0, length // 2) + jnp.array([0, length // 2])
  marks = jax.nn.one_hot(where, length).sum(1)
  return jnp.stack([values, marks], -1), (values * marks).sum(1)


def rnn_init(key, hidden: int, radius: float):
  """Recurrent matrix = ``radius`` x a random orthogonal matrix (spectral radius ``radius``)."""
  k = jax.random.split(key, 3)
  q, _ = jnp.linalg.qr(jax.random.normal(k[0], (hidden, hidden)))
  return {"w_in": jax.random.normal(k[1], (2, hidden)), "w_rec": radius * q, "b": jnp.zeros(hidden),
          "w_out": jax.random.normal(k[2], (hidden, 1)) / np.sqrt(hidden), "b_out": jnp.zeros(1)}


def rnn_apply(params, x):
  def cell(h, xt):
    return jnp.tanh(xt @ params["w_in"] + h @ params["w_rec"] + params["b"]), None
  h0 = jnp.zeros((x.shape[0], params["w_rec"].shape[0]))
  h, _ = jax.lax.scan(cell, h0, jnp.swapaxes(x, 0, 1))
  return (h @ params["w_out"] + params["b_out"])[:, 0]


def adding_loss(batch_size: int, length: int) -> Callable:
  def loss(params, key):
    x, y = adding_batch(key, batch_size, length)
    return jnp.mean(jnp.square(rnn_apply(params, x) - y))
  return loss


def adding_test_mse(params, length: int, n: int = 1000) -> np.ndarray:
  """Test MSE of every run on ``n`` held-out sequences (NaN for a diverged run)."""
  x, y = adding_batch(jax.random.PRNGKey(10_000), n, length)
  pred = jax.vmap(rnn_apply, in_axes=(0, None))(params, x)
  return np.asarray(jnp.mean(jnp.square(pred - y[None]), axis=-1))
