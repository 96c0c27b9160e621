"""Argument checks that raise ``ValueError`` at construction time.

Every public factory validates its hyperparameters here so that a bad value fails
loudly where it is written, naming the argument, the value and what is allowed.
Values that cannot be checked at construction (a schedule, or a traced array such
as the hyperparameters ``optax.inject_hyperparams`` passes under ``jit``) are
accepted as they are; nothing is ever silently clamped.
"""

from __future__ import annotations

import dis
import math
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import optax


class PracticeWarning(UserWarning):
  """Warnings issued by jaxopt_practices, e.g. ``initializers.lsuv`` on a dead or unconverged layer.

  Filter them with ``warnings.filterwarnings(..., category=PracticeWarning)``; the test suite
  turns every warning into an error.
  """


Mask: TypeAlias = str | None | Any | Callable[[Any], Any]
"""Which leaves a transform touches: ``"auto"`` (kernels, leaves with ``ndim >= 2``), ``None``
(every leaf), a pytree of bools shaped like the params or a prefix of it (a bool masks a whole
subtree, as in ``optax.masked``), or a callable ``params -> such a pytree``."""


def _is_traced(value: Any) -> bool:
  return isinstance(value, jax.core.Tracer)


def _concrete_float(name: str, value: Any, kind: str = "a number") -> float | None:
  """Returns ``value`` as a Python float, or None when it cannot be checked (a tracer).

  ``kind`` says what is allowed (e.g. ``"a real number in [0, inf)"``), for the message.
  Bools, strings, arrays of more than one value and complex numbers are not numbers here.
  """
  if _is_traced(value):
    return None
  if isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name} must be {kind}, got {name} = {value!r} (a bool).")
  try:
    arr = np.asarray(value)
  except Exception as e:  # pragma: no cover - exotic objects
    raise ValueError(f"{name} must be {kind}, got {name} = {value!r}.") from e
  if np.iscomplexobj(arr):
    raise ValueError(f"{name} must be {kind} (real, not complex), got {name} = {value!r}.")
  if arr.shape != () or not jnp.issubdtype(arr.dtype, jnp.number):  # jnp: bfloat16 too
    raise ValueError(f"{name} must be {kind} (a scalar), got {name} = {value!r}.")
  return float(arr)


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
  lo = "-inf" if low is None else f"{low:g}"
  hi = "inf" if high is None else f"{high:g}"
  left = "(" if (low_open or low is None) else "["
  right = ")" if (high_open or high is None) else "]"
  return f"{left}{lo}, {hi}{right}"


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_schedule: bool = False,
) -> None:
  """Raises ``ValueError`` unless ``value`` is a finite number in the interval.

  Args:
    name: the argument's name, used in the message.
    value: the value to check; a callable passes when ``allow_schedule``.
    low, high: the bounds (``None`` for unbounded).
    low_open, high_open: whether each bound is excluded.
    allow_schedule: accept a callable ``count -> value`` (an ``optax.Schedule``).
  """
  if callable(value):
    if allow_schedule:
      return
    raise ValueError(f"{name} must be a number, got a callable {name} = {value!r}.")
  allowed = _interval(low, high, low_open, high_open)
  kind = "a number or a schedule" if allow_schedule else "a number"
  x = _concrete_float(name, value, f"{kind} in {allowed}")
  if x is None:
    return
  if not math.isfinite(x):
    raise ValueError(f"{name} must be a finite {kind} in {allowed}, got {name} = {value!r}.")
  too_low = low is not None and (x <= low if low_open else x < low)
  too_high = high is not None and (x >= high if high_open else x > high)
  if too_low or too_high:
    hint = ""
    dtype = jnp.dtype(getattr(value, "dtype", np.float32))
    if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
      hint = (f" A {value.dtype} {name} is usually optax.inject_hyperparams casting it to the params' dtype"
              " (0.999 rounds to 1 in bfloat16); pass hyperparam_dtype=jnp.float32 to keep it exact.")
    raise ValueError(f"{name} must be in {allowed}, got {name} = {value!r}.{hint}")


def check_decay(name: str, value: Any, allow_schedule: bool = False) -> None:
  """Raises ``ValueError`` unless ``value`` is a decay rate (a beta, alpha, momentum) in ``[0, 1)``."""
  check_number(name, value, low=0.0, high=1.0, high_open=True, allow_schedule=allow_schedule)


def check_weight_decay(value: Any) -> None:
  """Raises ``ValueError`` unless ``value`` is an optimizer's ``weight_decay``.

  The one rule of every optimizer's ``weight_decay`` (coupled L2 or decoupled): ``None`` (no
  decay step at all), a finite number ``>= 0`` or a schedule of the update count.

  Args:
    value: the ``weight_decay`` argument.
  """
  if value is not None:
    check_number("weight_decay", value, low=0.0, allow_schedule=True)


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> None:
  """Raises ``ValueError`` unless ``value`` is an integer in ``[low, high]``.

  For integers that are not counts of steps (sizes, groups, seeds); a step count goes through
  :func:`check_steps`, which also takes integral floats. A concrete 0-d integer array (what
  ``optax.inject_hyperparams`` passes) counts as an integer.
  """
  if _is_traced(value):
    return
  if isinstance(value, (np.ndarray, jax.Array)) and value.shape == () and np.issubdtype(value.dtype, np.integer):
    value = int(value)
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be an integer, got {name} = {value!r}.")
  if (low is not None and value < low) or (high is not None and value > high):
    raise ValueError(f"{name} must be an integer in {_interval(low, high, False, False)}, got {name} = {value!r}.")


def check_seed(name: str, value: Any) -> None:
  """Raises ``ValueError`` unless ``value`` is an integer seed ``jax.random.key`` takes, in [-2**63, 2**63 - 1].

  (Without ``jax_enable_x64``, JAX itself uses only the low 32 bits of a seed.)
  """
  check_int(name, value)
  if not _is_traced(value) and not -(2**63) <= int(value) <= 2**63 - 1:
    raise ValueError(f"{name} must be an integer in [-2**63, 2**63 - 1] (what jax.random.key takes), "
                     f"got {name} = {value!r}.")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
  """Raises ``ValueError`` unless ``value`` is one of ``choices``."""
  choices = tuple(choices)
  if value not in choices:
    raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {name} = {value!r}.")


def check_bool(name: str, value: Any) -> None:
  """Raises ``ValueError`` unless ``value`` is a Python bool."""
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name} must be True or False, got {name} = {value!r}.")


def check_callable(name: str, value: Any) -> Callable[..., Any]:
  """Raises ``ValueError`` unless ``value`` is callable; returns it."""
  if not callable(value):
    raise ValueError(f"{name} must be callable, got {name} = {value!r}.")
  return value


def known_value(value: Any) -> float | None:
  """``value`` as a float when it is a concrete number or array; None for schedules and tracers."""
  if callable(value) or _is_traced(value):
    return None
  return float(np.asarray(value))


def is_zero(value: Any) -> bool:
  """True when ``value`` is ``None`` or a Python or NumPy number equal to 0.

  The rule for skipping *computation* (PyTorch's ``if weight_decay != 0``), never for
  leaving out *state*: the state structure must not depend on whether a hyperparameter is a
  Python number or an array that ``optax.inject_hyperparams`` passes (concrete at ``init``,
  traced at ``update``), or a checkpoint of one would not restore into the other. So
  optional state (a momentum buffer, a coupled-L2 step) is left out only when its argument
  is ``None`` (not given); a Python 0 keeps it, like an injected 0, and only skips the
  arithmetic that would multiply by 0.
  """
  return value is None or (isinstance(value, (int, float, np.number)) and float(value) == 0.0)


def check_axis_name(axis_name: Any, *, optional: bool = True) -> None:
  """Raises ``ValueError`` unless ``axis_name`` is a string (or ``None`` when ``optional``)."""
  if (axis_name is None and optional) or isinstance(axis_name, str):
    return
  allowed = "a string or None" if optional else "a string"
  raise ValueError(f"axis_name must be {allowed} (a pmap / shard_map axis name), got axis_name = {axis_name!r}.")


def need_params(name: str, params: Any) -> None:
  """Raises ``ValueError`` at ``update`` time when a transform that reads the params got none."""
  if params is None:
    raise ValueError(f"{name} needs the params: call update(updates, state, params).")


def is_mask_leaf(value: Any) -> bool:
  """Whether ``value`` may be a leaf of a mask: a bool, or a boolean array (concrete or traced)."""
  if isinstance(value, (bool, np.bool_)):
    return True
  return isinstance(value, (np.ndarray, jax.Array)) and value.dtype == np.bool_


def check_mask(mask: Any) -> None:
  """Raises ``ValueError`` unless ``mask`` is 'auto', None, a callable or a pytree of bools.

  A pytree mask may be a prefix of the params tree (a bool masks a whole subtree, as in
  ``optax.masked``); its leaves are bools or boolean arrays shaped like their param.
  """
  if mask is None or callable(mask) or (isinstance(mask, str) and mask == "auto"):
    return
  allowed = "'auto', None, a pytree of bools (the params' structure or a prefix of it) or a callable"
  if isinstance(mask, str):
    raise ValueError(f"mask must be {allowed}; got mask = {mask!r}.")
  bad = [leaf for leaf in jax.tree.leaves(mask) if not is_mask_leaf(leaf)]
  if bad or not jax.tree.leaves(mask):
    what = f"a leaf {bad[0]!r}" if bad else "no leaf"
    raise ValueError(f"mask must be {allowed}; got mask = {mask!r:.200} with {what}.")


RESTORE_HINT = (
    "That is what a checkpoint restored without a target looks like: Orbax (like "
    "flax.serialization) gives the state's NamedTuples back as dicts and its tuples as lists. "
    "Restore with a target made by the same optimizer: abstract = jax.eval_shape(tx.init, params), "
    "then ocp.StandardCheckpointer().restore(path, abstract), or with a CheckpointManager "
    "manager.restore(step, args=ocp.args.StandardRestore(abstract)). For an nnx.Optimizer the target is "
    "nnx.state(optimizer). Or pass what was restored to jaxopt_practices.training.restore(target, restored), "
    "which puts a target-less checkpoint into the target's structure (an nnx.Optimizer in place).")


def result_discarded() -> bool:
  """Whether the caller of the public function that calls this throws its result away.

  True when the caller's next bytecode instruction after the call is ``POP_TOP`` (an expression
  statement, ``f(x)`` on a line of its own) or ``PRINT_EXPR`` (the same as the last line of an
  interactive cell: the value is only displayed). For functions whose whole effect is the
  returned value (a new state), discarding it is always a mistake. CPython only: elsewhere (no
  ``f_lasti``), or when the bytecode cannot be read, this says False.

  Returns:
    Whether the result of the call in progress is thrown away by the code that made it.
  """
  try:
    frame = sys._getframe(2)  # noqa: SLF001 - 0: here, 1: the public function, 2: its caller
    following = (i for i in dis.get_instructions(frame.f_code) if i.offset > frame.f_lasti)
    return next(following).opname in ("POP_TOP", "PRINT_EXPR")
  except (AttributeError, ValueError, StopIteration):
    return False


def check_state(owner: str, state: Any, *types: type) -> None:
  """Raises ``ValueError`` unless ``state`` is an instance of one of ``types``.

  The first line of every ``update``: an isinstance check at trace time (no runtime cost),
  so a state restored without a target (dicts and lists) fails here, with the fix, instead
  of as an ``AttributeError`` deep inside the update. A stateless transform (``types``
  holds ``optax.EmptyState``) also takes ``None``, as optax's own stateless transforms do:
  there is nothing to restore, so nothing to detect.

  Args:
    owner: the public transform, for the message (e.g. ``"momentum.scale_by_momentum"``).
    state: the state ``update`` was given.
    types: the state types the transform accepts.
  """
  if isinstance(state, types) or (state is None and optax.EmptyState in types):
    return
  want = " or ".join(t.__name__ for t in types)
  msg = f"{owner}: update got a state of type {type(state).__name__} where a {want} was expected."
  if state is None or type(state) in (dict, list, tuple):
    raise ValueError(f"{msg} {RESTORE_HINT}")
  raise ValueError(f"{msg} Pass the state that this transform's init (or its last update) returned.")


def check_transform(name: str, value: Any) -> optax.GradientTransformation:
  """Raises ``ValueError`` unless ``value`` is an ``optax.GradientTransformation``; returns it."""
  if not isinstance(value, optax.GradientTransformation):
    raise ValueError(f"{name} must be an optax.GradientTransformation, got {name} = {value!r}.")
  return value


def check_steps(name: str, value: Any, *, low: int = 0, high: int | None = 2**31 - 1,
                allow_traced: bool = False) -> Any:
  """A step count as a Python int; ``ValueError`` unless it is an integer in ``[low, high]``.

  Integral floats are accepted (``110.0`` from epoch arithmetic such as
  ``warmup_epochs * steps_per_epoch``) and ``110.5`` is rejected, as are bools, NaN, infinities
  and traced values (a step count sizes a schedule at construction and must be concrete).
  A concrete 0-d array counts as its number.

  Args:
    name: the argument's name, used in the message.
    value: the count to check.
    low, high: the allowed range (``high=None``: unbounded).
    allow_traced: return a traced ``value`` unchecked instead of raising: for a count that is a
      numeric argument ``optax.inject_hyperparams`` passes back traced at ``update`` (it was
      checked concrete at ``init``). The caller casts it with ``jnp.asarray(value, jnp.int32)``.

  Returns:
    ``value`` as a Python int (a traced ``value`` as it is, with ``allow_traced``).

  Example:
    >>> from jaxopt_practices import _validate
    >>> _validate.check_steps("t_max", 110.0)
    110
    >>> _validate.check_steps("t_max", 110.5)
    Traceback (most recent call last):
    ...
    ValueError: t_max must be an integer number of steps (an integral float such as 110.0 is fine), got t_max = 110.5.
  """
  if _is_traced(value):
    if allow_traced:
      return value
    raise ValueError(f"{name} must be a concrete number of steps, got a traced {name} = {value!r}.")
  real = isinstance(value, (int, float, np.integer, np.floating, np.ndarray, jax.Array)) and not isinstance(value, bool)
  arr = np.asarray(value) if real else np.asarray(None)
  if arr.shape != () or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
    raise ValueError(f"{name} must be an integer number of steps, got {name} = {value!r}.")
  x = arr.item()
  if isinstance(x, float) and not (math.isfinite(x) and x.is_integer()):
    raise ValueError(f"{name} must be an integer number of steps (an integral float such as 110.0 is fine), "
                     f"got {name} = {value!r}.")
  if x < low or (high is not None and x > high):
    allowed = f"[{low}, {'inf' if high is None else high}]"
    raise ValueError(f"{name} must be an integer in {allowed}, got {name} = {value!r}.")
  return int(x)
