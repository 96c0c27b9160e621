"""Contract cases for practices 4 and 5 (momentum family and adaptive methods)."""

import optax

from helpers import ContractCase
from jaxopt_practices import adaptive, momentum

_sched = optax.linear_schedule(0.1, 0.01, 10)

CASES = [
    ContractCase("scale_by_momentum", momentum.scale_by_momentum, dict(momentum=0.9, dampening=0.1)),
    ContractCase("sgd", momentum.sgd, dict(learning_rate=0.1)),
    ContractCase("sgd_momentum_wd", momentum.sgd, dict(learning_rate=0.1, momentum=0.9, dampening=0.5,
                                                       weight_decay=1e-2)),
    ContractCase("sgd_nesterov_schedule", momentum.sgd, dict(learning_rate=_sched, momentum=0.9, nesterov=True)),
    ContractCase("scale_by_adagrad", adaptive.scale_by_adagrad, dict(initial_accumulator_value=0.1)),
    ContractCase("adagrad", adaptive.adagrad, dict(learning_rate=0.1, lr_decay=0.01, weight_decay=1e-3)),
    ContractCase("scale_by_rmsprop", adaptive.scale_by_rmsprop, dict(alpha=0.9, momentum=0.5, centered=True)),
    ContractCase("rmsprop", adaptive.rmsprop, dict(learning_rate=0.01)),
    ContractCase("rmsprop_centered_momentum", adaptive.rmsprop, dict(learning_rate=_sched, momentum=0.9,
                                                                     centered=True, weight_decay=1e-3)),
    ContractCase("scale_by_adam", adaptive.scale_by_adam, dict(b1=0.8, b2=0.99)),
    ContractCase("adam", adaptive.adam, dict(learning_rate=1e-2)),
    ContractCase("adam_amsgrad_wd", adaptive.adam, dict(learning_rate=1e-2, amsgrad=True, weight_decay=1e-2)),
    ContractCase("adamw", adaptive.adamw, dict(learning_rate=1e-2, weight_decay=0.1, mask="auto")),
    ContractCase("adamw_schedule_amsgrad", adaptive.adamw, dict(learning_rate=_sched, amsgrad=True)),
]

# issue 23: torch's NAdam, RAdam, Adamax, Adadelta, Rprop (each full optimizer covers its scale_by_* block)
CASES += [
    ContractCase("nadam_wd", adaptive.nadam, dict(learning_rate=1e-2, weight_decay=1e-2, momentum_decay=0.01)),
    ContractCase("nadam_decoupled_schedule", adaptive.nadam, dict(learning_rate=_sched, weight_decay=0.1,
                                                                  decoupled_weight_decay=True)),
    ContractCase("radam_decoupled", adaptive.radam, dict(learning_rate=1e-2, b2=0.9, weight_decay=0.1,
                                                         decoupled_weight_decay=True)),
    ContractCase("adamax_wd", adaptive.adamax, dict(learning_rate=1e-2, weight_decay=1e-2)),
    ContractCase("adadelta_schedule_wd", adaptive.adadelta, dict(learning_rate=_sched, rho=0.8, weight_decay=1e-3)),
    ContractCase("rprop", adaptive.rprop, dict(learning_rate=1e-2, etas=(0.4, 1.5), step_sizes=(1e-4, 1.0))),
]
