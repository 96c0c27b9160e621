"""Contract cases for composition: monitor.track and recipe.build."""

from helpers import ContractCase
from jaxopt_practices import adaptive, momentum, monitor, recipe


def _tracked_adamw(learning_rate, weight_decay):
  return monitor.track(adaptive.adamw(learning_rate, weight_decay=weight_decay, mask="auto"))


def _tracked_sgd(learning_rate, momentum_):
  return monitor.track(momentum.sgd(learning_rate, momentum=momentum_, nesterov=True))


def _tracked_every(learning_rate, every):
  return monitor.track(adaptive.adam(learning_rate), every=every)


def _preset(name, total_steps=50, learning_rate=None):
  return recipe.build(recipe.preset(name, total_steps=total_steps, learning_rate=learning_rate))


CASES = [
    ContractCase("monitor_track_adamw", _tracked_adamw, dict(learning_rate=1e-2, weight_decay=1e-2)),
    ContractCase("monitor_track_sgd", _tracked_sgd, dict(learning_rate=0.1, momentum_=0.9)),
    ContractCase("monitor_track_every_2", _tracked_every, dict(learning_rate=1e-2, every=2), inject=False),
    ContractCase("recipe_resnet_sgd", _preset, dict(name="resnet-sgd"), inject=False),
    ContractCase("recipe_transformer_adamw", _preset, dict(name="transformer-adamw"), inject=False),
    ContractCase("recipe_fastai_one_cycle", _preset, dict(name="fastai-one-cycle"), inject=False),
    ContractCase("recipe_tour", _preset, dict(name="tour"), inject=False),
]
