"""Shared test helpers: the contract-case record, random trees, gradient streams and tiny models."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


@dataclasses.dataclass(frozen=True)
class ContractCase:
  """One public transform, as the shared contract in ``test_contract.py`` exercises it.

  Attributes:
    name: the test id.
    make: a factory ``make(**kwargs) -> GradientTransformation`` (usually the public one).
    kwargs: the arguments for ``make``; the numeric ones are also injected with
      ``optax.inject_hyperparams`` (bools and callables stay static).
    extra_args: ``step -> dict`` of keyword arguments for ``update`` (e.g. ``value=``).
    pmap_kwargs: extra ``make`` arguments under ``pmap`` (e.g. ``{"axis_name": "i"}``).
    inject: whether ``optax.inject_hyperparams(make)`` is meaningful (numeric kwargs).
    params: ``params(dtype)`` -> the tree the contract runs on (default :func:`nested_params`);
      a transform for matrices only (Muon) gets :func:`matrix_params`.
    complex_ok: whether the transform takes complex params (torch's Adafactor and Muon do not).
    map_params: False where the state keeps per-leaf buffers that are not params-shaped
      (Adafactor's factored moments, kept as per-leaf tuples): ``optax.tree.map_params`` then
      raises instead of giving them the params' specs (``parallel`` shards by shape and works).
  """

  name: str
  make: Callable[..., optax.GradientTransformation]
  kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  extra_args: Callable[[int], dict[str, Any]] = lambda step: {}
  pmap_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  inject: bool = True
  params: Callable[..., Any] | None = None
  complex_ok: bool = True
  map_params: bool = True

  def tree(self, dtype=jnp.float32) -> Any:
    return (self.params or nested_params)(dtype)

  def build(self, **overrides: Any) -> optax.GradientTransformation:
    return self.make(**{**self.kwargs, **overrides})


def nested_params(dtype=jnp.float32, seed: int = 0) -> dict:
  """A nested tree with a scalar, a zero-size leaf, matrices, vectors and a conv kernel."""
  k = jax.random.split(jax.random.PRNGKey(seed), 6)
  return {
      "scalar": jax.random.normal(k[0], (), jnp.float32).astype(dtype),
      "empty": jnp.zeros((0, 3), dtype),
      "dense": {"kernel": jax.random.normal(k[1], (4, 3), jnp.float32).astype(dtype),
                "bias": jax.random.normal(k[2], (3,), jnp.float32).astype(dtype)},
      "conv": [jax.random.normal(k[3], (3, 3, 2, 4), jnp.float32).astype(dtype),
               (jax.random.normal(k[4], (4,), jnp.float32).astype(dtype),)],
  }


def matrix_params(dtype=jnp.float32, seed: int = 0) -> dict:
  """A nested tree of 2-D leaves only (a zero-size one included), for transforms of matrices (Muon)."""
  k = jax.random.split(jax.random.PRNGKey(seed), 3)
  return {
      "empty": jnp.zeros((0, 3), dtype),
      "dense": {"kernel": jax.random.normal(k[0], (4, 3), jnp.float32).astype(dtype)},
      "conv": [jax.random.normal(k[1], (5, 2), jnp.float32).astype(dtype),
               (jax.random.normal(k[2], (2, 6), jnp.float32).astype(dtype),)],
  }


def grad_stream(params: Any, num_steps: int, seed: int = 1, scale: float = 1.0) -> list:
  """``num_steps`` random gradient trees shaped like ``params`` (same dtypes)."""
  leaves, treedef = jax.tree.flatten(params)
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(num_steps):
    out.append(jax.tree.unflatten(treedef, [
        jnp.asarray(scale * rng.standard_normal(np.shape(x)), jnp.float32).astype(jnp.result_type(x))
        for x in leaves]))
  return out


def run(tx: optax.GradientTransformation, params: Any, grads: list, extra_args=lambda step: {},
        jit: bool = False):
  """Applies ``tx`` to a gradient stream; returns ``(params, state, list of updates)``."""
  update = jax.jit(tx.update) if jit else tx.update
  state = tx.init(params)
  history = []
  for i, g in enumerate(grads):
    updates, state = update(g, state, params, **extra_args(i))
    history.append(updates)
    params = optax.apply_updates(params, updates)
  return params, state, history


def scan_steps(tx: optax.GradientTransformation, p0: list, grads: list) -> tuple[list, Any]:
  """``(params, state)`` after applying ``tx`` to each step's list of gradients, in one jitted ``lax.scan``."""
  params = [jnp.asarray(p) for p in p0]
  stacked = [jnp.asarray(np.stack([g[i] for g in grads])) for i in range(len(p0))]

  @jax.jit
  def train(params, stacked):
    def body(carry, g):
      p, s = carry
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    return jax.lax.scan(body, (params, tx.init(params)), stacked)[0]

  return train(params, stacked)


def run_scan(tx: optax.GradientTransformation, p0: list, grads: list) -> list:
  """The params after applying ``tx`` to each step's list of gradients (:func:`scan_steps`), as numpy."""
  return [np.asarray(p) for p in scan_steps(tx, p0, grads)[0]]


def donated_step_param_ops(tx: optax.GradientTransformation, params: Any) -> list[str]:
  """The parameter-sized ``fusion`` and ``copy`` instructions of the compiled, donated train step
  ``(params, state, grads) -> (params + updates, state)`` of ``tx`` (its ENTRY computation).

  ``params``: float32 leaves (arrays or ``jax.ShapeDtypeStruct``) that all have one shape. A
  ``copy`` is XLA keeping a donated input alive; each ``fusion`` is one loop over a parameter.
  """
  shapes = {tuple(x.shape) for x in jax.tree.leaves(params)}
  assert len(shapes) == 1, f"params of one shape, got {shapes}"
  dims = ",".join(map(str, shapes.pop()))

  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  text = jax.jit(step, donate_argnums=(0, 1)).lower(params, jax.eval_shape(tx.init, params), params).compile().as_text()
  pattern = re.compile(rf"= f32\[{dims}\]\S* (fusion|copy)\(")
  return [line.strip() for line in text[text.index("ENTRY"):].splitlines() if pattern.search(line)]


def floating_leaves(tree: Any) -> list:
  return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.floating)]


def state_signature(tree: Any) -> tuple:
  """Tree structure plus each leaf's shape and dtype: what a checkpoint of ``tree`` depends on."""
  return jax.tree.structure(tree), [(jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(tree)]


class TinyMLP(nn.Module):
  """Two Dense layers: the smallest linen model with kernels (for LSUV and init reports)."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(4)(nn.relu(nn.Dense(8)(x)))


def linen_mlp(seed: int = 0) -> tuple[Callable[[Any, Any], Any], Any, jax.Array]:
  """``(apply_fn, params, batch)`` of a :class:`TinyMLP` on a (32, 16) batch."""
  model = TinyMLP()
  x = jax.random.normal(jax.random.key(seed), (32, 16))
  params = model.init(jax.random.key(seed + 1), x)["params"]
  return (lambda p, b: model.apply({"params": p}, b)), params, x


def nnx_mlp(seed: int = 0) -> tuple[nnx.Module, jax.Array]:
  """``(model, batch)``: one ``nnx.Linear`` (16 -> 4) and a (32, 16) batch."""
  model = nnx.Sequential(nnx.Linear(16, 4, rngs=nnx.Rngs(seed)))
  return model, jax.random.normal(jax.random.key(seed), (32, 16))
