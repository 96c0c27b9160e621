"""Contract cases for practice 7 (regularization through the optimizer)."""

import jax.numpy as jnp
import optax

from helpers import ContractCase
from jaxopt_practices import adaptive, momentum, regularization

_sched = optax.linear_schedule(0.1, 0.01, 10)
_tf_warmup = lambda t: jnp.minimum(0.9, (1.0 + jnp.asarray(t, jnp.float32)) / (10.0 + jnp.asarray(t, jnp.float32)))  # noqa: E731

CASES = [
    ContractCase("decoupled_weight_decay_auto", regularization.decoupled_weight_decay, dict(rate=0.1)),
    ContractCase("decoupled_weight_decay_all_schedule", regularization.decoupled_weight_decay,
                 dict(rate=_sched, mask=None)),
    ContractCase("decoupled_weight_decay_following_lr", regularization.decoupled_weight_decay,
                 dict(rate=1e-2, mask=None, learning_rate=_sched)),
    ContractCase("decoupled_weight_decay_inner", regularization.decoupled_weight_decay,
                 dict(rate=1e-2, mask=None, learning_rate=0.1, inner=adaptive.adam(0.1))),
    ContractCase("l2_penalty", regularization.l2_penalty, dict(rate=0.1)),
    ContractCase("l2_penalty_auto", regularization.l2_penalty, dict(rate=0.1, mask="auto")),
    ContractCase("gradient_noise", regularization.gradient_noise, dict(eta=0.1, gamma=0.55, seed=3),
                 pmap_kwargs={"axis_name": "i"}),
    ContractCase("ema", regularization.ema, dict(decay=0.9)),
    ContractCase("ema_biased", regularization.ema, dict(decay=0.5, debias=False)),
    ContractCase("ema_every_3", regularization.ema, dict(decay=0.8, every=3)),
    ContractCase("ema_decay_schedule_every_2", regularization.ema,
                 dict(decay=_tf_warmup, debias=False, every=2)),
    ContractCase("ema_inner", regularization.ema, dict(decay=0.9, every=2, inner=momentum.sgd(0.1, momentum=0.9))),
    ContractCase("swa", regularization.swa, dict(start_step=1, every=2)),
    ContractCase("swa_from_init", regularization.swa, dict(start_step=0, every=1)),
]
