"""Masks as values: the kernel rule and the set operations on masks (re-exported by ``groups``).

A *mask* is anything a ``mask=`` argument takes: ``"auto"`` (kernels), ``None`` (every leaf), a
pytree of bools (the params' structure or a prefix of it; leaves may be boolean arrays shaped
like their param) or a callable ``params -> such a pytree``. The functions here return
callables, so a combination is resolved against the params it is given, at ``update`` time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_practices import _tree
from jaxopt_practices import _validate

__all__ = ["kernels", "union", "intersect", "exclude"]

Mask = _validate.Mask


def kernels() -> Callable[[Any], Any]:
  """The rule behind ``mask="auto"`` as a mask: True on the leaves with ``ndim >= 2``.

  Dense ``(in, out)`` and Conv kernels and embedding tables decay; biases and norm scales
  (``ndim <= 1``) do not: big_vision's ``".*/kernel$"``, timm's ``param_groups_weight_decay``
  (``ndim <= 1`` or a ``.bias`` goes to the no-decay group) and fastai's ``wd_bn_bias=False``.

  Returns:
    A callable ``params -> pytree of bools`` for any ``mask=`` argument.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import groups
    >>> groups.kernels()({"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}})
    {'Dense_0': {'bias': False, 'kernel': True}}
  """
  def mask(params: Any) -> Any:
    return _tree.resolve_mask("auto", params)

  return mask


def _checked(name: str, masks: tuple[Any, ...], least: int) -> tuple[Any, ...]:
  if len(masks) < least:
    raise ValueError(f"{name} needs at least {least} mask(s), got {len(masks)}.")
  for i, m in enumerate(masks):
    try:
      _validate.check_mask(m)
    except ValueError as e:
      raise ValueError(f"{name}: masks[{i}]: {e}") from e
  return masks


def _combine(op: Callable[[Any, Any], Any], array_op: Callable[[Any, Any], Any], masks: tuple[Any, ...]) -> Callable:
  """``params -> op`` folded leafwise over the resolved masks (Python bools stay Python bools)."""
  def one(a: Any, b: Any) -> Any:
    if isinstance(a, bool) and isinstance(b, bool):
      return op(a, b)
    return array_op(jnp.asarray(a), jnp.asarray(b))

  def mask(params: Any) -> Any:
    resolved = [_tree.resolve_mask(m, params) for m in masks]
    out = resolved[0]
    for r in resolved[1:]:
      out = jax.tree.map(one, out, r)
    return out

  return mask


def union(*masks: Mask) -> Callable[[Any], Any]:
  """The leaves selected by *any* of ``masks`` (leafwise OR).

  Args:
    *masks: one or more masks (``"auto"``, ``None``, pytrees of bools, callables such as
      :func:`kernels` or :func:`~jaxopt_practices.groups.match`).

  Returns:
    A callable ``params -> pytree of bools``.

  Raises:
    ValueError: with no mask, or when one is not a mask (naming its position).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import groups
    >>> params = {"embed": {"table": jnp.ones((5, 2))}, "head": {"bias": jnp.zeros(2)}, "norm": {"scale": jnp.ones(2)}}
    >>> groups.union(groups.kernels(), groups.match("head/bias"))(params)
    {'embed': {'table': True}, 'head': {'bias': True}, 'norm': {'scale': False}}
  """
  return _combine(lambda a, b: a or b, jnp.logical_or, _checked("union", masks, 1))


def intersect(*masks: Mask) -> Callable[[Any], Any]:
  """The leaves selected by *every one* of ``masks`` (leafwise AND), e.g. kernels of the encoder only.

  Args:
    *masks: one or more masks, in any of the forms :func:`union` takes.

  Returns:
    A callable mask, resolved against the params it is given.

  Raises:
    ValueError: when no mask is given or an argument is not a mask (``masks[i]`` names it).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import groups
    >>> params = {"encoder": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}, "head": {"kernel": jnp.ones((2, 2))}}
    >>> groups.intersect(groups.kernels(), {"encoder": True, "head": False})(params)
    {'encoder': {'bias': False, 'kernel': True}, 'head': {'kernel': False}}
  """
  return _combine(lambda a, b: a and b, jnp.logical_and, _checked("intersect", masks, 1))


def exclude(mask: Mask, *masks: Mask) -> Callable[[Any], Any]:
  """The leaves selected by ``mask`` and by none of ``masks`` (``mask AND NOT union(masks)``).

  timm's no-decay list on top of the kernel rule:
  ``exclude(groups.kernels(), groups.match(["pos_embed", "cls_token"], allow_unmatched=True))``.

  Args:
    mask: the mask to start from.
    *masks: the masks whose leaves are taken out (none: ``mask`` itself).

  Returns:
    A callable ``params -> pytree of bools``.

  Raises:
    ValueError: when an argument is not a mask (naming its position).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxopt_practices import groups
    >>> params = {"pos_embed": jnp.ones((4, 2)), "Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
    >>> groups.exclude(groups.kernels(), groups.match("pos_embed"))(params)
    {'Dense_0': {'bias': False, 'kernel': True}, 'pos_embed': False}
  """
  checked = _checked("exclude", (mask, *masks), 1)
  if len(checked) == 1:
    return _combine(lambda a, b: a, lambda a, b: a, (mask, mask))
  taken = _combine(lambda a, b: a or b, jnp.logical_or, checked[1:])

  def not_taken(params: Any) -> Any:
    return jax.tree.map(lambda t: (not t) if isinstance(t, bool) else jnp.logical_not(t), taken(params))

  return _combine(lambda a, b: a and b, jnp.logical_and, (mask, not_taken))
