"""Contract cases for practice 1: ``scale_by_learning_rate`` and optimizers driven by the v0.3 schedules.

Each case drives a transform with schedules built from the new names and options (``per_epoch``,
``warmup(shift=False)``, timm's cosine options, ``multiply``, ``linear``, ``lambda_lr``,
``multiplicative``, ``inverse_sqrt(timescale)``, ``polynomial_decay(end_value)``), so the shared
contract (jit/eager, no retrace, pmap replicas, ``inject_hyperparams``, dtypes) covers them.
"""

from helpers import ContractCase
from jaxopt_practices import adaptive, momentum, schedules

_timm = schedules.per_epoch(schedules.warmup(
    schedules.cosine_warm_restarts(0.1, 3, 1.5, 1e-3, k_decay=2.0, cycle_decay=0.5, cycle_limit=3), 2, 0.01,
    shift=False), steps_per_epoch=2)
_product = schedules.multiply(
    schedules.linear(0.01), schedules.lambda_lr(1.0, lambda t: 1.0 / (1.0 + t.astype(float))),
    schedules.multiplicative(1.0, lambda e: 0.9, 5), schedules.inverse_sqrt(1.0, 2, timescale=3),
    schedules.polynomial_decay(1.0, 10, 2.0, end_value=0.1))

CASES = [
    ContractCase("scale_by_learning_rate_per_epoch", schedules.scale_by_learning_rate, dict(learning_rate=_timm)),
    ContractCase("sgd_momentum_timm_cosine_per_epoch", momentum.sgd, dict(learning_rate=_timm, momentum=0.9)),
    ContractCase("adam_multiply_of_factor_schedules", adaptive.adam, dict(learning_rate=_product)),
]
