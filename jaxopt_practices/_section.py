"""``recipe.Section``: the keys one config section takes, checked (re-exported by ``recipe``)."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Section"]


@dataclasses.dataclass(frozen=True)
class Section:
  """The keys one config section takes: the ``required`` ones and the ``optional`` ones with their defaults.

  Sections that configure a public factory take its keyword arguments (:meth:`of`); the
  others are written out (``warmup``, ``weight_decay``).

  Attributes:
    required: the keys the section must give (a ``None`` value counts as missing).
    optional: the other keys, with their defaults.

  Example:
    >>> from jaxopt_practices import recipe
    >>> warmup = recipe.Section(required=("steps",), optional={"start_value": 0.0})
    >>> warmup.check("warmup", {"steps": 100})
    {'start_value': 0.0, 'steps': 100}
    >>> warmup.check("warmup", {"start_value": 0.1})
    Traceback (most recent call last):
    ...
    ValueError: warmup.steps is required: warmup needs 'steps'; it also takes 'start_value'.
  """
  required: tuple[str, ...] = ()
  optional: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @classmethod
  def of(cls, factory: Callable, *, required: tuple[str, ...] = (), defaults: Mapping[str, Any] | None = None,
         skip: tuple[str, ...] = ()) -> Section:
    """The keyword arguments of ``factory``: required where it has no default, else optional with it.

    Args:
      factory: a public factory such as ``momentum.sgd``.
      required: arguments required even though ``factory`` has a default for them.
      defaults: arguments optional with these defaults instead of the factory's.
      skip: arguments that are not config keys (``build`` passes them itself).

    Returns:
      The ``Section`` of those keys.
    """
    defaults = dict(defaults or {})
    req, opt = [], {}
    for name, p in inspect.signature(factory).parameters.items():
      if name in skip:
        continue
      if name in defaults and name not in required:
        opt[name] = defaults[name]
      elif name in required or p.default is inspect.Parameter.empty:
        req.append(name)
      else:
        opt[name] = p.default
    return cls(tuple(req), opt)

  def check(self, where: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with the defaults of the optional keys it leaves out.

    Args:
      where: the section's name in messages, e.g. ``"optimizer (sgd)"``.
      spec: the section's keys and values, from the config.

    Returns:
      A new dict: ``spec`` over the optional keys' defaults.

    Raises:
      ValueError: naming the unknown keys and listing the valid ones, or naming the missing
        (absent or ``None``) required keys and listing what ``where`` needs.
    """
    valid = [*self.required, *self.optional]
    unknown = sorted(set(spec) - set(valid))
    if unknown:
      raise ValueError(f"unknown argument(s) {unknown} for {where}; valid arguments are {valid}.")
    missing = [k for k in self.required if spec.get(k) is None]
    if missing:
      section = where.split(" (")[0]
      names = ", ".join(f"{section}.{k}" for k in missing)
      takes = f"; it also takes {', '.join(map(repr, self.optional))}" if self.optional else ""
      raise ValueError(f"{names} {'is' if len(missing) == 1 else 'are'} required: {where} needs "
                       f"{', '.join(map(repr, self.required))}{takes}.")
    return {**self.optional, **spec}
