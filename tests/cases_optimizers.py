"""Contract cases for practices 4 and 5 (momentum family and adaptive methods)."""

import optax

from helpers import ContractCase, matrix_params
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

# torch.optim.Adafactor, ASGD and Muon (issue #23); Muon takes matrices only, neither it nor Adafactor complex.
CASES += [
    ContractCase("scale_by_adafactor", adaptive.scale_by_adafactor, dict(beta2_decay=-0.5, eps=(1e-30, 1e-2)),
                 complex_ok=False, map_params=False),
    ContractCase("adafactor", adaptive.adafactor, dict(learning_rate=_sched, d=2.0, weight_decay=0.1),
                 complex_ok=False, map_params=False),
    ContractCase("scale_by_asgd", momentum.scale_by_asgd, dict(t0=1.0)),
    ContractCase("asgd", momentum.asgd, dict(learning_rate=0.1, lambd=0.1, alpha=0.5, t0=1.0, weight_decay=1e-2)),
    # inject_hyperparams passes a scheduled lr as this step's value: eta's one-step lag (torch's) is then lost.
    ContractCase("asgd_schedule", momentum.asgd, dict(learning_rate=_sched), inject=False),
    ContractCase("scale_by_muon", adaptive.scale_by_muon, dict(momentum=0.9, nesterov=False, ns_steps=3),
                 params=matrix_params, complex_ok=False),
    ContractCase("muon", adaptive.muon, dict(learning_rate=0.02, adjust_lr_fn="match_rms_adamw"), params=matrix_params,
                 complex_ok=False),
    ContractCase("muon_schedule_f32", adaptive.muon, dict(learning_rate=_sched, ns_dtype="float32"),
                 params=matrix_params, complex_ok=False),
]
