"""Skipping steps with non-finite gradients: ``skip_nonfinite``, public as ``clipping.skip_nonfinite``.

A wrapper around any optimizer, kept apart from the clipping transforms it is documented
with; :mod:`jaxopt_practices.clipping` re-exports its public names.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_practices import _tree
from jaxopt_practices import _validate

__all__ = ["SkipNonfiniteState", "NonfiniteGradientsError", "skip_nonfinite"]


class SkipNonfiniteState(NamedTuple):
  """The state of :func:`skip_nonfinite`: counts of skipped steps, the failure flag and the inner state.

  Attributes:
    nonfinite_count: int32, the number of updates so far whose gradients (or ``inner``'s updates)
      held NaN or Inf, all skipped (the name of ``monitor.stats``'s count of the same steps).
    consecutive_nonfinite: int32, how many of the latest updates in a row were non-finite (0 after a
      finite one).
    failed: bool, set for good once more than ``max_consecutive`` non-finite updates came in a row
      (the updates are NaN from then on).
    inner_state: the wrapped optimizer's state, kept as it was on a skipped update.
  """
  nonfinite_count: jax.Array
  consecutive_nonfinite: jax.Array
  failed: jax.Array
  inner_state: Any

  @property
  def total_nonfinite(self) -> jax.Array:
    """Deprecated (issue #20): the old name of :attr:`nonfinite_count`, which it returns."""
    warnings.warn("SkipNonfiniteState.total_nonfinite is deprecated: use SkipNonfiniteState.nonfinite_count.",
                  DeprecationWarning, stacklevel=2)
    return self.nonfinite_count


class NonfiniteGradientsError(FloatingPointError):
  """Raised (through ``jax.debug.callback``) after too many non-finite steps in a row."""


def _raise_if_failed(failed, consecutive, max_consecutive):
  if np.any(failed):
    raise NonfiniteGradientsError(
        f"skip_nonfinite: {int(np.max(consecutive))} consecutive steps with NaN/Inf gradients "
        f"or updates, more than max_consecutive = {int(np.max(max_consecutive))}; the updates are NaN.")


# Module-level branches (not fresh lambdas): an eager lax.cond traces and compiles them once.
def _raise_branch(*args) -> None:
  jax.debug.callback(_raise_if_failed, *args)


def _quiet_branch(*args) -> None:
  del args


def _all_finite(tree: Any) -> jax.Array:
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.array(True)


def _no_change(u: Any) -> jax.Array:
  """Zeros that leave any param bitwise unchanged when added: ``-0.0`` (``x + -0.0 == x``, also for
  ``x = -0.0``, while ``-0.0 + 0.0 = +0.0``), in both components of a complex leaf."""
  u = jnp.asarray(u)
  if jnp.iscomplexobj(u):
    return jnp.full_like(u, complex(-0.0, -0.0))
  return jnp.full_like(u, -0.0) if jnp.issubdtype(u.dtype, jnp.floating) else jnp.zeros_like(u)


def skip_nonfinite(inner: optax.GradientTransformation, max_consecutive: int | None = None, *,
                   on_failure: str = "raise") -> optax.GradientTransformationExtraArgs:
  r"""Skips steps whose gradients (or ``inner``'s updates) hold NaN or Inf.

  On a bad step the updates are zeros (``-0.0``, so that ``optax.apply_updates`` leaves every
  param bitwise as it was, a ``-0.0`` included) and ``inner``'s state is kept bitwise as it
  was, so a run with bad steps ends exactly where the same run without those steps would.
  Bad steps are counted (``nonfinite_count``, ``consecutive_nonfinite``); a good step resets
  the consecutive count.

  With ``max_consecutive = k``, up to ``k`` bad steps in a row are skipped; the next
  consecutive bad step fails loudly: (1) the updates of that and every later step are NaN,
  so training visibly diverges, and ``state.failed`` is set for good; (2) with
  ``on_failure="raise"`` (the default) it also raises :class:`NonfiniteGradientsError`
  through ``jax.debug.callback`` (only called on failure, inside a ``lax.cond``): the
  message comes back as a ``JaxRuntimeError`` eagerly and under ``jit`` / ``pmap`` when the
  step runs (at the latest when its result is read; under ``pmap`` JAX also keeps the error
  in its runtime token, so later ``jax.effects_barrier()`` calls re-raise it). ``on_failure="nan"`` skips the
  exception (e.g. where host callbacks are unavailable) and keeps only (1). With
  ``max_consecutive=None`` bad steps are skipped forever (but counted).

  Differs from ``optax.apply_if_finite``: that one, after too many bad steps, silently
  *applies* the bad update; also ``max_consecutive=None``, the failure, and checking the
  inner updates as well as the gradients.

  Args:
    inner: the optimizer to protect (any ``GradientTransformation``, extra args forwarded).
    max_consecutive: ``None`` (skip forever) or an integer ``>= 0``, the number of non-finite
      updates in a row to skip before failing (traced under ``optax.inject_hyperparams``).
    on_failure: ``"raise"`` or ``"nan"``, see above.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; its state is :class:`SkipNonfiniteState`.

  Raises:
    ValueError: for an ``inner`` that is not an ``optax.GradientTransformation``, a
      ``max_consecutive`` that is neither ``None`` nor an integer ``>= 0`` (an integral float such
      as ``3.0`` is fine), or an ``on_failure`` other than ``"raise"`` / ``"nan"``; at ``update``,
      for a state that is not a :class:`SkipNonfiniteState`.
    NonfiniteGradientsError: with ``on_failure="raise"``, from the step that exceeds
      ``max_consecutive`` (wrapped in a ``JaxRuntimeError``, see above).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import clipping
    >>> tx = clipping.skip_nonfinite(optax.sgd(0.1))
    >>> u, state = tx.update(jnp.array([jnp.nan]), tx.init(jnp.zeros(1)))
    >>> print(u, state.nonfinite_count)
    [-0.] 1
  """
  _validate.check_transform("inner", inner)
  if max_consecutive is not None:
    max_consecutive = _validate.check_steps("max_consecutive", max_consecutive, allow_traced=True)
  _validate.check_choice("on_failure", on_failure, ("raise", "nan"))
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    zero = jnp.zeros([], jnp.int32)
    return SkipNonfiniteState(nonfinite_count=zero, consecutive_nonfinite=zero,
                              failed=jnp.array(False), inner_state=inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    _validate.check_state("clipping.skip_nonfinite", state, SkipNonfiniteState)
    new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
    ok = _all_finite(updates) & _all_finite(new_updates)
    consecutive = jnp.where(ok, jnp.zeros([], jnp.int32), _tree.increment(state.consecutive_nonfinite))
    total = jnp.where(ok, state.nonfinite_count, _tree.increment(state.nonfinite_count))
    out = jax.tree.map(lambda u: jnp.where(ok, u, _no_change(u)), new_updates)
    inner_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_inner, state.inner_state)
    failed = state.failed
    if max_consecutive is not None:
      limit = jnp.asarray(max_consecutive, jnp.int32)
      failed = failed | (consecutive > limit)
      out = jax.tree.map(
          lambda u: jnp.where(failed, jnp.full_like(u, jnp.nan), u)
          if jnp.issubdtype(u.dtype, jnp.inexact) else u, out)
      if on_failure == "raise":
        jax.lax.cond(failed, _raise_branch, _quiet_branch, failed, consecutive, limit)
    return out, SkipNonfiniteState(nonfinite_count=total, consecutive_nonfinite=consecutive,
                                   failed=failed, inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
