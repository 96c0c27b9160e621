"""Contract cases for practice 7 (regularization through the optimizer)."""

import optax

from helpers import ContractCase
from jaxopt_practices import regularization

_sched = optax.linear_schedule(0.1, 0.01, 10)

CASES = [
    ContractCase("decoupled_weight_decay_auto", regularization.decoupled_weight_decay, dict(rate=0.1)),
    ContractCase("decoupled_weight_decay_all_schedule", regularization.decoupled_weight_decay,
                 dict(rate=_sched, mask=None)),
    ContractCase("decoupled_weight_decay_following_lr", regularization.decoupled_weight_decay,
                 dict(rate=1e-2, mask=None, learning_rate=_sched)),
    ContractCase("l2_penalty", regularization.l2_penalty, dict(rate=0.1)),
    ContractCase("l2_penalty_auto", regularization.l2_penalty, dict(rate=0.1, mask="auto")),
    ContractCase("gradient_noise", regularization.gradient_noise, dict(eta=0.1, gamma=0.55, seed=3),
                 pmap_kwargs={"axis_name": "i"}),
    ContractCase("ema", regularization.ema, dict(decay=0.9)),
    ContractCase("ema_biased", regularization.ema, dict(decay=0.5, debias=False)),
    ContractCase("swa", regularization.swa, dict(start_step=1, every=2)),
    ContractCase("swa_from_init", regularization.swa, dict(start_step=0, every=1)),
]
