"""One rule for every optimizer's ``weight_decay`` (issue #20).

``sgd`` rejected a ``weight_decay`` schedule that ``adam`` accepted. Now every optimizer that takes
a ``weight_decay`` (coupled L2 or decoupled) checks it with ``_validate.check_weight_decay``:
``None`` adds no decay step, a number ``>= 0`` or a schedule of the update count decays; a
negative, NaN, complex or string value raises ``ValueError`` naming ``weight_decay``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

from jaxopt_practices import adaptive, momentum

OPTIMIZERS = {  # name -> make(weight_decay) with everything else fixed
    "sgd": lambda wd: momentum.sgd(0.1, momentum=0.9, weight_decay=wd),
    "asgd": lambda wd: momentum.asgd(0.1, weight_decay=wd),
    "adagrad": lambda wd: adaptive.adagrad(0.1, weight_decay=wd),
    "rmsprop": lambda wd: adaptive.rmsprop(0.01, weight_decay=wd),
    "adam": lambda wd: adaptive.adam(0.01, weight_decay=wd),
    "adamw": lambda wd: adaptive.adamw(0.01, weight_decay=wd),
    "nadam": lambda wd: adaptive.nadam(0.01, weight_decay=wd),
    "nadam_decoupled": lambda wd: adaptive.nadam(0.01, weight_decay=wd, decoupled_weight_decay=True),
    "radam": lambda wd: adaptive.radam(0.01, weight_decay=wd),
    "radam_decoupled": lambda wd: adaptive.radam(0.01, weight_decay=wd, decoupled_weight_decay=True),
    "adamax": lambda wd: adaptive.adamax(0.01, weight_decay=wd),
    "adadelta": lambda wd: adaptive.adadelta(1.0, weight_decay=wd),
    "adafactor": lambda wd: adaptive.adafactor(0.01, weight_decay=wd),
    "muon": lambda wd: adaptive.muon(0.01, weight_decay=wd, ns_dtype=jnp.float32),
}
names = pytest.mark.parametrize("name", OPTIMIZERS)


def _run(tx, steps=4):
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
  state, out = tx.init(params), []
  for t in range(steps):
    grads = jax.tree.map(lambda p: jnp.cos(p * (t + 1.0)), params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    out.append(params)
  return out


@names
def test_a_weight_decay_schedule_is_accepted_and_read_at_the_update_count(name):
  make = OPTIMIZERS[name]
  chex.assert_trees_all_close(_run(make(lambda t: 0.25)), _run(make(0.25)), rtol=1e-6, atol=1e-7)
  # a schedule that is 0.25 for the first two updates and 0 after: the first two steps are those of
  # the constant 0.25, the last ones differ from it (the schedule is read at each update's count)
  changing = _run(make(lambda t: jnp.where(t < 2, 0.25, 0.0)))
  constant = _run(make(0.25))
  chex.assert_trees_all_close(changing[:2], constant[:2], rtol=1e-6, atol=1e-7)
  assert not jnp.allclose(changing[-1]["w"], constant[-1]["w"], rtol=0.0, atol=1e-7)


@names
def test_none_adds_no_decay_step_and_zero_changes_nothing(name):
  make = OPTIMIZERS[name]
  chex.assert_trees_all_close(_run(make(None)), _run(make(0.0)), rtol=1e-6, atol=1e-7)


def _message(make, bad):
  with pytest.raises(ValueError, match="weight_decay") as info:
    make(bad)
  return str(info.value)


@names
@pytest.mark.parametrize("bad", [-0.1, float("nan"), 0.1j, "0.1", True])
def test_a_bad_weight_decay_is_the_same_error_everywhere(name, bad):
  """The message ``adam`` gives (naming the argument, the value and the range) is every optimizer's."""
  assert _message(OPTIMIZERS[name], bad) == _message(OPTIMIZERS["adam"], bad)
