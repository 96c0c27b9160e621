"""Contract cases for ``groups`` (parameter groups by path)."""

import optax

from helpers import ContractCase
from jaxopt_practices import groups, regularization

_sched = optax.linear_schedule(0.1, 0.01, 10)

# nested_params() paths: scalar, empty, dense/kernel, dense/bias, conv/0, conv/1/0
CASES = [
    ContractCase("scale_by_group", groups.scale_by_group,
                 dict(multipliers=[("dense/.*", 10.0), ("conv/1/.*", 0.0)], default=0.5)),
    ContractCase("group_weight_decay_following_lr", groups.weight_decay,
                 dict(rate=0.1, mask=None, learning_rate=_sched, lr_mults=[("dense/.*", 2.0)],
                      wd_mults=[("conv/.*", 0.5), ("scalar", 0.0)])),
    ContractCase("group_weight_decay_lr_independent", groups.weight_decay,
                 dict(rate=0.1, wd_mults=[("dense/kernel", 3.0)])),
    ContractCase("decay_on_combined_masks", regularization.decoupled_weight_decay,
                 dict(rate=0.1, mask=groups.union(
                     groups.exclude(groups.kernels(), groups.match("conv/0", allow_unmatched=True)),
                     groups.intersect(groups.match("dense/.*", allow_unmatched=True), None))),
                 inject=False),  # inject_hyperparams reads any callable as a schedule (static_args=("mask",))
]
