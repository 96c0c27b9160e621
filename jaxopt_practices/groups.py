"""Parameter groups: PyTorch's ``param_groups`` and big_vision's ``lr_mults`` / ``wd_mults``, by path.

A leaf's *path* is its keys joined by ``"/"``: dict keys, sequence indices and attribute names
(NamedTuple or dataclass fields), as ``jax.tree_util`` key paths give them. An ``nnx.Variable``
adds no key of its own, so linen ``params["Dense_0"]["kernel"]`` and an NNX model's
``dense.kernel`` are ``"Dense_0/kernel"`` and ``"dense/kernel"``. :func:`paths` shows them.
Patterns are Python regexes matched against the *whole* path (``re.fullmatch``).

The common PyTorch ports::

    # [{"params": kernels, "weight_decay": 5e-4}, {"params": biases_and_norms, "weight_decay": 0}]
    momentum.sgd(lr, momentum=0.9, weight_decay=5e-4, mask=groups.match(".*kernel"))
    # [{"params": body}, {"params": head, "lr": 10 * lr}]: multiply the head's learning rate
    optax.chain(momentum.sgd(lr, momentum=0.9), groups.scale_by_group([("head/.*", 10.0)]))
    # AdamW with [{"params": body}, {"params": head, "lr": 10 * lr}]: the decay follows each group's lr
    optax.chain(adaptive.scale_by_adam(), schedules.scale_by_learning_rate(lr),
                groups.scale_by_group([("head/.*", 10.0)]),
                groups.weight_decay(1e-2, None, learning_rate=lr, lr_mults=[("head/.*", 10.0)]))

    # timm's param_groups_weight_decay: no decay for ndim <= 1 and model.no_weight_decay()
    no_decay = groups.match(["pos_embed", "cls_token"])
    adaptive.adamw(lr, weight_decay=0.05, mask=groups.exclude(groups.kernels(), no_decay))

``match`` is a mask for any ``mask=`` argument (the optimizers' coupled ``weight_decay``,
``regularization.l2_penalty`` / ``decoupled_weight_decay``, ``adaptive.adamw``,
``optax.masked``). Coupled L2 with several rates is one ``regularization.l2_penalty(rate, mask)``
per rate, chained in front of the optimizer. :func:`kernels` (the rule behind ``mask="auto"``),
:func:`union`, :func:`intersect` and :func:`exclude` build masks from masks; a ``match``
pattern that matches no leaf raises when the mask is applied (``allow_unmatched=True`` opts out).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxopt_practices import _base
from jaxopt_practices._masks import exclude as exclude
from jaxopt_practices._masks import intersect as intersect
from jaxopt_practices._masks import kernels as kernels
from jaxopt_practices._masks import union as union
from jaxopt_practices import _tree
from jaxopt_practices import _validate

__all__ = ["paths", "match", "kernels", "union", "intersect", "exclude", "scale_by_group", "weight_decay"]

Rules = list[tuple[re.Pattern, float]]


def _key_name(key: Any) -> str:
  for attr in ("key", "idx", "name"):  # DictKey / FlattenedIndexKey, SequenceKey, GetAttrKey
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _is_variable(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


def _map_paths(fn: Callable[[str], Any], tree: Any) -> Any:
  """``fn(path)`` for every leaf of ``tree``, same structure (an ``nnx.Variable`` keeps its box)."""
  def one(path, leaf):
    name = "/".join(_key_name(k) for k in path)
    return jax.tree.map(lambda _: fn(name), leaf) if _is_variable(leaf) else fn(name)

  return jax.tree_util.tree_map_with_path(one, tree, is_leaf=_is_variable)


def paths(tree: Any) -> Any:
  """The path of every leaf, as a tree of strings shaped like ``tree`` (what patterns match).

  Args:
    tree: any pytree (params, updates, a mask); its leaves' paths are joined with ``"/"``.

  Returns:
    A pytree shaped like ``tree`` whose leaves are the paths, e.g. ``"Dense_0/kernel"``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import groups
    >>> groups.paths({"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}, "scales": [jnp.ones(2)]})
    {'Dense_0': {'bias': 'Dense_0/bias', 'kernel': 'Dense_0/kernel'}, 'scales': ['scales/0']}
  """
  return _map_paths(lambda name: name, tree)


def _compile(name: str, pattern: Any) -> re.Pattern:
  if not isinstance(pattern, str):
    raise ValueError(f"{name} must hold regex strings, got {pattern!r} in {name}.")
  try:
    return re.compile(pattern)
  except re.error as e:
    raise ValueError(f"{name} holds an invalid regex {pattern!r}: {e}.") from e


_TORCH_STYLE = re.compile(r"[A-Za-z0-9_]\.[A-Za-z_]")  # "bn.weight", "layer1.0.conv1.weight"


def _unmatched_error(unmatched: list[str], names: list[str]) -> ValueError:
  """The ``ValueError`` naming every pattern that matches no path, with a few real paths."""
  shown = ", ".join(repr(n) for n in names[:6]) + (", ..." if len(names) > 6 else "")
  torch = [p for p in unmatched if _TORCH_STYLE.search(p) and "/" not in p]
  hint = (f" {torch} look like PyTorch names: paths here are '/'-joined flax paths (keys such as "
          f"'Dense_0/kernel', 'BatchNorm_0/scale'), not torch's '.'-joined ones." if torch else "")
  return ValueError(f"groups.match: pattern(s) {unmatched} match no leaf of the params.{hint} The paths are: "
                    f"{shown} (groups.paths(params) lists them all). Fix the pattern(s), or pass "
                    f"allow_unmatched=True if a pattern may legitimately match nothing.")


def match(patterns: str | Sequence[str], *, allow_unmatched: bool = False) -> Callable[[Any], Any]:
  """A mask: ``params -> pytree of bools``, True where the leaf's path fully matches a pattern.

  A pattern that matches no leaf is almost always a mistake (a torch-style ``"bn.weight"``,
  a linen head called ``Dense_1`` rather than ``head``) that would silently change nothing,
  so the mask raises when it is applied (at the first ``update``), naming every such pattern
  and showing real paths.

  Args:
    patterns: a regex or a list of regexes (``re.fullmatch`` against the "/"-joined path).
    allow_unmatched: do not raise for patterns that match no leaf (a list shared by models
      that do not all have every group).

  Returns:
    A callable for any ``mask=`` argument (or ``optax.masked``).

  Raises:
    ValueError: at construction for a pattern that is not a valid regex string; when the
      mask is applied, naming every pattern that matches no leaf (unless ``allow_unmatched``).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import groups
    >>> params = {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}, "LayerNorm_0": {"scale": jnp.ones(3)}}
    >>> groups.match(".*/kernel")(params)
    {'Dense_0': {'bias': False, 'kernel': True}, 'LayerNorm_0': {'scale': False}}
    >>> groups.match(["bn.weight", ".*/kernel"])(params)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: groups.match: pattern(s) ['bn.weight'] match no leaf of the params. ...
  """
  items = [patterns] if isinstance(patterns, str) else patterns
  if not isinstance(items, Sequence):
    raise ValueError(f"patterns must be a regex or a list of regexes, got patterns = {patterns!r}.")
  compiled = [_compile("patterns", p) for p in items]
  _validate.check_bool("allow_unmatched", allow_unmatched)

  def mask(params: Any) -> Any:
    names = jax.tree.leaves(paths(params))
    if names and not allow_unmatched:
      unmatched = [p.pattern for p in compiled if not any(p.fullmatch(n) for n in names)]
      if unmatched:
        raise _unmatched_error(unmatched, names)
    return _map_paths(lambda name: any(p.fullmatch(name) for p in compiled), params)

  return mask


def _rules(name: str, multipliers: Any) -> Rules:
  """``[(compiled regex, float)]`` from a list of ``(regex, multiplier)`` pairs or a dict, validated."""
  items = list(multipliers.items()) if isinstance(multipliers, Mapping) else multipliers
  if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
    raise ValueError(f"{name} must be a list of (regex, multiplier) pairs, got {name} = {multipliers!r}.")
  rules = []
  for pair in items:
    if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
      raise ValueError(f"{name} must be a list of (regex, multiplier) pairs, got {pair!r} in {name}.")
    _validate.check_number(f"{name} multiplier for {pair[0]!r}", pair[1], low=0.0)
    rules.append((_compile(name, pair[0]), float(pair[1])))
  return rules


def _first(rules: Rules, name: str, default: float) -> float:
  """The multiplier of the first rule whose regex fully matches ``name``, else ``default``."""
  return next((m for p, m in rules if p.fullmatch(name)), default)


def scale_by_group(multipliers: Sequence[tuple[str, float]] | Mapping[str, float],
                   default: float = 1.0) -> optax.GradientTransformation:
  r"""Multiplies each leaf's update by the multiplier of the first pattern that matches its path.

  .. math:: u_\ell \leftarrow m_\ell\, u_\ell, \qquad m_\ell = \text{the first } m_i
    \text{ with } \texttt{fullmatch}(r_i, \text{path}_\ell), \text{ else } \texttt{default}

  Placed after the learning-rate scaling it multiplies the learning rate of those leaves:
  PyTorch's per-group ``lr`` (``lr = m * base_lr``), big_vision's ``lr_mults``, layer-wise lr
  decay for fine-tuning. The product is taken in float32 (or wider) and cast back to the
  update's dtype; a leaf with multiplier 1 passes through bitwise. The multipliers are
  resolved from the paths when ``update`` is traced, so nothing is stored.

  Args:
    multipliers: ``(regex, multiplier)`` pairs (a list, e.g. from JSON, or a dict in order);
      multipliers are finite and ``>= 0`` (0 freezes a leaf).
    default: multiplier of the leaves no pattern matches, ``>= 0``.

  Returns:
    An ``optax.GradientTransformation`` with an empty state (``optax.EmptyState``).

  Raises:
    ValueError: for ``multipliers`` that are not ``(regex, multiplier)`` pairs, an invalid
      regex, a negative or non-finite multiplier, or a negative ``default``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import groups
    >>> tx = groups.scale_by_group([("head/.*", 10.0), ("embed/.*", 0.5)])
    >>> u = {"head": {"kernel": jnp.ones(2)}, "embed": {"table": jnp.ones(2)}, "body": jnp.ones(2)}
    >>> out, _ = tx.update(u, tx.init(u))
    >>> print(out["head"]["kernel"], out["embed"]["table"], out["body"])
    [10. 10.] [0.5 0.5] [1. 1.]

  References:
    Beyer et al, big_vision (``config.lr_mults``), 2022.
  """
  rules = _rules("multipliers", multipliers)
  _validate.check_number("default", default, low=0.0)
  default = float(default) if isinstance(default, (int, float)) else default  # an array under inject_hyperparams

  def scale(u: jax.Array, m: Any) -> jax.Array:
    if isinstance(m, float) and m == 1.0:
      return u
    acc = _tree.acc_dtype(u.dtype)
    return (u.astype(acc) * jnp.asarray(m, acc)).astype(u.dtype)

  def update_fn(updates, state, params=None):
    del params
    _validate.check_state("groups.scale_by_group", state, optax.EmptyState)
    mults = _map_paths(lambda name: _first(rules, name, default), updates)
    return jax.tree.map(scale, updates, mults), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def _times(value: Any, m: float) -> Any:
  """``value * m`` for a number or a schedule; ``value`` itself when ``m == 1``."""
  if m == 1.0:
    return value
  if callable(value):
    # value's own dtype (float64 under x64); float32 * a Python float stays float32, as before
    return lambda count: jnp.asarray(value(count)) * m
  return float(value) * m if isinstance(value, (int, float)) else value * m


def _group_mask(mask: _validate.Mask, lr_rules: Rules, wd_rules: Rules, key: tuple[float, float]) -> Callable:
  """``mask`` restricted to the leaves whose (lr, wd) multipliers are ``key``."""
  def group(params: Any) -> Any:
    base = _tree.resolve_mask(mask, params)
    mine = _map_paths(lambda n: (_first(lr_rules, n, 1.0), _first(wd_rules, n, 1.0)) == key, params)
    return jax.tree.map(lambda on, sel: on if sel else False, base, mine)

  return group


def weight_decay(rate: _base.ScalarOrSchedule, mask: _validate.Mask = "auto", *,
                 learning_rate: _base.ScalarOrSchedule | None = None,
                 lr_mults: Sequence[tuple[str, float]] = (),
                 wd_mults: Sequence[tuple[str, float]] = ()) -> optax.GradientTransformation:
  r"""Decoupled weight decay with per-group rates: ``regularization.decoupled_weight_decay`` per group.

  A leaf selected by ``mask`` with multipliers :math:`m_{wd}` (``wd_mults``) and
  :math:`m_{lr}` (``lr_mults``, first match, 1 when none) decays with rate
  :math:`\lambda m_{wd}`, following the learning rate :math:`\eta_t m_{lr}` when
  ``learning_rate`` is given (PyTorch param groups: AdamW's ``1 - lr_g * wd_g``, to the bit)
  or independently of it when ``None`` (big_vision). One ``decoupled_weight_decay`` is
  chained per distinct :math:`(m_{lr}, m_{wd})`, each masked to its leaves; leaves with
  :math:`m_{wd} = 0` do not decay. Without multipliers this *is*
  ``decoupled_weight_decay(rate, mask, learning_rate=learning_rate)``.

  Unlike big_vision, where ``wd_mults`` is also the mask, leaves no pattern matches keep
  multiplier 1 and ``mask`` decides whether they decay (end the list with ``(".*", 0.0)``
  for big_vision's behaviour). Place it after the learning-rate scaling and after
  :func:`scale_by_group` (the decay is not multiplied again).

  Args:
    rate: :math:`\lambda \ge 0`, a float or a schedule.
    mask: the leaves that decay at all (``"auto"``, ``None``, a pytree of bools, a callable
      such as :func:`match`).
    learning_rate: the base learning rate the decay follows, or ``None``.
    lr_mults: ``(regex, multiplier)`` pairs of the groups' learning rates (needs ``learning_rate``).
    wd_mults: ``(regex, multiplier)`` pairs of the groups' decay rates.

  Returns:
    An ``optax.GradientTransformation`` (needs ``params``).

  Raises:
    ValueError: for a negative ``rate`` or ``learning_rate``, a ``mask`` of another kind,
      ``lr_mults`` / ``wd_mults`` that are not ``(regex, multiplier)`` pairs, or ``lr_mults``
      without a ``learning_rate``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxopt_practices import groups
    >>> tx = groups.weight_decay(0.1, None, wd_mults=[("head/.*", 0.5), ("norm/.*", 0.0)])
    >>> p = {"head": {"w": jnp.ones(1)}, "norm": {"scale": jnp.ones(1)}, "body": jnp.ones(1)}
    >>> u, _ = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
    >>> print(u["head"]["w"], u["norm"]["scale"], u["body"])
    [-0.05] [0.] [-0.1]
  """
  _validate.check_number("rate", rate, low=0.0, allow_schedule=True)
  _validate.check_mask(mask)
  if learning_rate is not None:
    _validate.check_number("learning_rate", learning_rate, low=0.0, allow_schedule=True)
  lr_rules, wd_rules = _rules("lr_mults", lr_mults), _rules("wd_mults", wd_mults)
  if not lr_rules and not wd_rules:
    return _base.decoupled_weight_decay(rate, mask, learning_rate=learning_rate)
  if lr_rules and learning_rate is None:
    raise ValueError("lr_mults needs learning_rate (the decay follows each group's learning rate); "
                     "an lr-independent decay (learning_rate=None) takes wd_mults only.")
  lr_values = sorted({1.0, *(m for _, m in lr_rules)})
  wd_values = sorted({1.0, *(m for _, m in wd_rules)} - {0.0})
  parts = []
  for lm in lr_values:
    for wm in wd_values:
      follow = None if learning_rate is None else _times(learning_rate, lm)
      parts.append(_base.decoupled_weight_decay(_times(rate, wm), _group_mask(mask, lr_rules, wd_rules, (lm, wm)),
                                                learning_rate=follow))
  return optax.chain(*parts)


# ----------------------------------------------------------------------------- labels (issue #23)
__all__ += ["labels"]


def labels(rules: Sequence[tuple[str, str]] | Mapping[str, str], default: str) -> Callable[[Any], Any]:
  """A labelling ``params -> pytree of labels`` for ``optax.multi_transform``: the first match wins.

  Each leaf gets the label of the first ``(regex, label)`` rule whose regex fully matches its
  "/"-joined path (as :func:`scale_by_group`), else ``default``. This is how PyTorch's
  separate optimizers per parameter set are ported, e.g. Muon for the hidden matrices and
  AdamW for the rest.

  Args:
    rules: ``(regex, label)`` pairs (a list, or a dict in order); labels are strings.
    default: the label of the leaves no rule matches.

  Returns:
    A callable for ``optax.multi_transform(transforms, param_labels)``.

  Raises:
    ValueError: for rules that are not ``(regex, string)`` pairs, a bad regex or a non-string default.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import adaptive, groups
    >>> params = {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)}, "head": {"kernel": jnp.ones((4, 2))}}
    >>> label_fn = groups.labels([("head/.*", "adamw"), (".*/kernel", "muon")], default="adamw")
    >>> label_fn(params)
    {'Dense_0': {'bias': 'adamw', 'kernel': 'muon'}, 'head': {'kernel': 'adamw'}}
    >>> tx = optax.multi_transform({"muon": adaptive.muon(0.02), "adamw": adaptive.adamw(3e-4)}, label_fn)
    >>> updates, _ = tx.update(params, tx.init(params), params)
  """
  items = list(rules.items()) if isinstance(rules, Mapping) else rules
  if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
    raise ValueError(f"rules must be a list of (regex, label) pairs, got rules = {rules!r}.")
  compiled = []
  for pair in items:
    is_pair = isinstance(pair, Sequence) and not isinstance(pair, (str, bytes)) and len(pair) == 2
    if not is_pair or not isinstance(pair[1], str):
      raise ValueError(f"rules must be a list of (regex, label) pairs with string labels, got {pair!r} in rules.")
    compiled.append((_compile("rules", pair[0]), pair[1]))
  if not isinstance(default, str):
    raise ValueError(f"default must be a string label, got default = {default!r}.")
  label_of = lambda name: next((lab for p, lab in compiled if p.fullmatch(name)), default)
  return lambda params: _map_paths(label_of, params)
