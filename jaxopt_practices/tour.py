"""The tour: each practice in the regime where it matters, against a baseline that differs only by it.

Eight scenarios on scikit-learn's digits (8x8 images, 1,437 train / 360 test, standardised),
each a pair of runs that differ by exactly one practice, trained for several seeds at once
(the seeds are ``vmap``-ed, the steps run in a ``lax.scan``) and judged by the mean ± std
over the seeds; a difference no larger than the seed spread reads "within noise":

1. schedules: warmup at a high peak lr (Adam 0.03) on a post-LayerNorm residual MLP;
2. LR range test + reduce-on-plateau: Adam at the test's aggressive ``steep`` suggestion on
   a long run, which stalls and climbs back unless the plateau rule cuts the lr;
3. initialization: He vs the default init on a 20-layer plain ReLU MLP;
4. momentum: SGD vs Nesterov momentum at the same small lr, a fitting regime (train loss);
5. adaptive: Adam vs SGD + momentum on a 16-layer plain net, whose gradient scale differs
   by orders of magnitude from layer to layer (train loss);
6. clipping: SGD + momentum at an lr that blows up, with and without global-norm clipping;
7. regularization: decoupled weight decay + EMA on 150 training images, where the net
   overfits, judged by test accuracy and the train - test gap (not by train loss);
8. the full recipe (``recipe.preset("tour")``) against plain SGD.

``run_experiments`` returns the :class:`Scenario` list; ``write_report`` writes ``report.md``
and the PNG plots.
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import optax

from jaxopt_practices import (adaptive, clipping, initializers, lr_finder, momentum, plateau, recipe, regularization,
                              schedules)
from jaxopt_practices import _tour_report
from jaxopt_practices import _validate
from jaxopt_practices import _tour_core as core
from jaxopt_practices._tour_core import RunResult as RunResult
from jaxopt_practices._tour_core import Scenario as Scenario
from jaxopt_practices._tour_core import load_digits as load_digits
from jaxopt_practices._tour_core import reading as reading

# The public API: run the scenarios, read and write their results. The demo's models, batch
# size and training loop (core.MLP, core.BATCH, core.train, ...) stay in _tour_core, reached
# through the module so that they do not become names of this one; the scenario builders
# are private too (reach them through SCENARIOS).
__all__ = ["SCENARIOS", "run_experiments", "write_report", "Scenario", "RunResult", "reading", "load_digits"]


def _warmup_scenario(data, steps: int, common: dict, extras: dict) -> Scenario:
  """1: Adam at a high peak on a post-LN residual MLP, with and without a 10% linear warmup."""
  del extras
  peak, warm, model = 0.03, steps // 10, core.PostLNMLP()
  cosine = adaptive.adam(schedules.cosine_annealing(peak, t_max=steps))
  warmed = adaptive.adam(schedules.warmup(schedules.cosine_annealing(peak, t_max=steps - warm), warm))
  return Scenario(
      "1 schedules", f"post-LN residual MLP ({model.blocks} blocks of {model.width}), Adam, cosine decay from "
      f"a high peak lr ({peak})", "the first full-size Adam steps wreck the post-LN net; a linear warmup to the "
      "same peak trains it (Xiong et al. 2020 in miniature)", "test accuracy",
      core.train("cosine, no warmup", f"cosine from {peak}", cosine, data, steps=steps, model=model, **common),
      core.train("warmup + cosine", f"{warm}-step warmup to {peak}, then cosine", warmed, data, steps=steps,
            model=model, **common))


def _finder(data, seed: int, make_optimizer) -> lr_finder.LRRangeTestResult:
  """The LR range test (its defaults) on the seed's initial 6x64 MLP and batches."""
  model = core.MLP()
  params = jax.tree.map(lambda leaf: leaf[0], core.init_params(model, data[0], [seed]))
  batches = [(data[0][i], data[1][i]) for i in core.seed_batches(seed, len(data[0]), 100, core.BATCH)]
  return lr_finder.lr_range_test(lambda p, b: core.cross_entropy(model, p, *b), params, batches, make_optimizer,
                                 progress=False)


def _plateau_scenario(data, steps: int, common: dict, extras: dict) -> Scenario:
  """2: Adam at the LR range test's ``steep`` suggestion for 2x the steps, with and without plateau cuts."""
  finder = extras["lr_range_test"] = _finder(data, common["seeds"][0], adaptive.adam)
  lr, long, per_epoch = finder.suggestions["steep"], 2 * steps, len(data[0]) // core.BATCH
  cut = plateau.reduce_on_plateau(factor=0.3, patience=2, accumulation_size=per_epoch)
  return Scenario(
      "2 lr finder + plateau", f"6x64 MLP, Adam at the LR range test's aggressive `steep` suggestion "
      f"({lr:.3g}; the default `valley` is {finder.suggestion:.3g}), {long} steps", "at a constant aggressive "
      "lr the loss stalls and climbs back; reduce_on_plateau (x0.3 after 2 epochs without progress) keeps it "
      "falling", "test accuracy",
      core.train("constant lr", f"Adam {lr:.3g}", adaptive.adam(lr), data, steps=long, **common),
      core.train("+ reduce_on_plateau", f"Adam {lr:.3g} + plateau", optax.chain(adaptive.adam(lr), cut), data,
            steps=long, pass_loss=True, **common))


def _apply(model: nn.Module, params: Any, x: jax.Array) -> Any:
  """``model``'s output for ``params`` (a linen ``apply_fn``)."""
  return model.apply({"params": params}, x)


def _init_scenario(data, steps: int, common: dict, extras: dict) -> Scenario:
  """3: a 20-layer plain ReLU MLP with the default (LeCun) init vs He init, plain SGD 0.05."""
  default, he = core.MLP(depth=20), core.MLP(depth=20, kernel_init=initializers.he_normal())
  x = data[0][:256]
  extras["init_reports"] = {
      name: initializers.init_report(functools.partial(_apply, m),
                                     jax.tree.map(lambda leaf: leaf[0], core.init_params(m, x, common["seeds"][:1])), x)
      for name, m in [("default (LeCun normal)", default), ("he_normal", he)]}
  return Scenario(
      "3 initialization", "20-layer plain ReLU MLP (no normalization, no residuals), SGD 0.05",
      "with variance 1/fan_in the signal halves at every ReLU layer and the net barely trains; He's 2/fan_in "
      "keeps it (see activation_std.png)", "test accuracy",
      core.train("default init", "LeCun normal (Flax default)", momentum.sgd(0.05), data, steps=steps, model=default,
            **common),
      core.train("He init", "he_normal", momentum.sgd(0.05), data, steps=steps, model=he, **common))


def _momentum_scenario(data, steps: int, common: dict, extras: dict) -> Scenario:
  """4: SGD 0.01 with and without Nesterov momentum 0.9 (a fitting regime: train loss)."""
  del extras
  return Scenario(
      "4 momentum", "6x64 MLP, SGD at a small lr (0.01), fixed step budget", "momentum 0.9 multiplies the "
      "effective step by ~10 along consistent directions: far lower train loss in the same steps",
      "final train loss",
      core.train("SGD", "SGD 0.01", momentum.sgd(0.01), data, steps=steps, **common),
      core.train("+ Nesterov momentum", "SGD 0.01, Nesterov 0.9", momentum.sgd(0.01, momentum=0.9, nesterov=True), data,
            steps=steps, **common))


def _adaptive_scenario(data, steps: int, common: dict, extras: dict) -> Scenario:
  """5: SGD + momentum 0.9 (lr 0.01) vs Adam (b1 0.9, lr 1e-3) on a 16-layer plain ReLU MLP."""
  del extras
  model = core.MLP(depth=16)
  return Scenario(
      "5 adaptive", "16-layer plain ReLU MLP (default init): gradient scales differ by orders of magnitude "
      "between layers; each optimizer at its usual lr", "Adam's per-parameter normalization gives every "
      "layer a step of the same size; SGD's steps are tiny in the early layers", "final train loss",
      core.train("SGD + momentum", "SGD 0.01, momentum 0.9", momentum.sgd(0.01, momentum=0.9), data, steps=steps,
            model=model, **common),
      core.train("Adam", "Adam 1e-3 (b1 0.9)", adaptive.adam(1e-3), data, steps=steps, model=model, **common))


def _clipping_scenario(data, steps: int, common: dict, extras: dict) -> Scenario:
  """6: SGD + momentum at 0.2 (it blows up) with and without global-norm clipping at 1.0."""
  del extras
  sgd = momentum.sgd(0.2, momentum=0.9)
  return Scenario(
      "6 clipping", "6x64 MLP, SGD + momentum 0.9 at a high lr (0.2)", "a few large early gradients throw "
      "the unclipped run into a blow-up; clipping the global norm at 1.0 bounds every step", "test accuracy",
      core.train("no clipping", "SGD 0.2, momentum 0.9", sgd, data, steps=steps, **common),
      core.train("+ clip_by_global_norm(1.0)", "clipped", optax.chain(clipping.clip_by_global_norm(1.0), sgd), data,
            steps=steps, **common))


def _regularization_scenario(data, steps: int, common: dict, extras: dict) -> Scenario:
  """7: 150 training images; SGD + momentum with and without decoupled weight decay + EMA."""
  del extras
  small = (data[0][:150], data[1][:150], data[2], data[3])
  decay = round(1.0 - 5.0 / steps, 4)
  sgd = momentum.sgd(0.05, momentum=0.9)
  tx = optax.chain(sgd, regularization.decoupled_weight_decay(2e-3), regularization.ema(decay))
  return Scenario(
      "7 regularization", "6x64 MLP on only 150 training images (the net fits them perfectly and overfits), "
      "SGD 0.05 + momentum 0.9", "decay (2e-3 per step, kernels only) + an EMA of the weights "
      f"({decay}) raise test accuracy and shrink the train - test gap", "test accuracy",
      core.train("no regularization", "SGD", sgd, small, steps=steps, **common),
      core.train("+ weight decay + EMA", "SGD + decay + EMA", tx, small, steps=steps,
            eval_params=lambda p, s: regularization.ema_params(s), **common))


def _recipe_scenario(data, steps: int, common: dict, extras: dict) -> Scenario:
  """8: plain SGD 0.05 vs ``recipe.build(preset("tour"))`` (every practice at once)."""
  config = extras["recipe"] = recipe.preset("tour", total_steps=steps)
  config["averaging"]["decay"] = round(1.0 - 5.0 / steps, 4)
  return Scenario(
      "full recipe", f"{core.DEPTH}x{core.WIDTH} MLP, the whole training set", "every practice together against the "
      "plainest optimizer (not a one-practice comparison)", "test accuracy",
      core.train("plain SGD", "SGD 0.05", momentum.sgd(0.05), data, steps=steps, **common),
      core.train("full recipe", "recipe.build(preset('tour'))", recipe.build(config), data, steps=steps,
            eval_params=lambda p, s: regularization.ema_params(s), **common))


SCENARIOS = (_warmup_scenario, _plateau_scenario, _init_scenario, _momentum_scenario, _adaptive_scenario,
             _clipping_scenario, _regularization_scenario, _recipe_scenario)


def run_experiments(steps: int, *, seed: int = 0, seeds: int = 3,
                    progress: bool = True) -> tuple[list[Scenario], dict[str, Any]]:
  """Runs :data:`SCENARIOS` for ``seeds`` seeds (``seed``, ``seed + 1``, ...); returns them and extras.

  ``steps`` is each run's length (the plateau scenario runs twice as long); ``seed`` also
  draws the train / test split. This trains 16 models (about a minute on two CPU cores for
  ``steps=150``); ``jaxopt-practices tour`` calls it.

  Args:
    steps: optimizer steps per run.
    seed: the first seed, and the seed of the train / test split.
    seeds: how many seeds each run trains at once (``vmap``).
    progress: show progress bars.

  Returns:
    ``(scenarios, extras)``: the :class:`Scenario` list with its readings filled in, and what
    the report needs besides (the LR range test, the init reports, the recipe's config, ...).

  Raises:
    ValueError: if ``steps`` is not a step count ``>= 20`` (integral floats such as ``150.0``
      are fine), ``seeds`` is not an integer ``>= 1`` or ``seed`` is not an integer seed.

  Example:
    >>> from jaxopt_practices import tour
    >>> scenarios, extras = tour.run_experiments(150, seeds=1, progress=False)  # doctest: +SKIP
    >>> [s.name for s in scenarios][:2]  # doctest: +SKIP
    ['1 schedules', '2 lr finder + plateau']
  """
  steps = _validate.check_steps("steps", steps, low=20)  # as the CLI's --steps
  _validate.check_int("seeds", seeds, low=1)
  _validate.check_seed("seed", seed)
  _validate.check_bool("progress", progress)
  data = load_digits(seed)
  common = {"seeds": tuple(range(seed, seed + seeds)), "progress": progress}
  extras: dict[str, Any] = {"steps": steps, "seeds": seeds}
  scenarios = [build(data, steps, common, extras) for build in SCENARIOS]
  for s in scenarios:
    s.reading = reading(s.baseline, s.practice, s.metric)
  return scenarios, extras


def write_report(scenarios: Sequence[Scenario], extras: dict[str, Any], out: pathlib.Path,
                 wall_time_s: float | None = None) -> pathlib.Path:
  """Writes ``report.md`` and the PNG plots into ``out``; returns the report's path.

  Args:
    scenarios: what :func:`run_experiments` returned first.
    extras: what it returned second.
    out: the folder (created if missing); its ``report.md`` and PNGs are overwritten.
    wall_time_s: the training time to state in the report, if known.

  Returns:
    ``out / "report.md"``.

  Example:
    >>> import pathlib
    >>> from jaxopt_practices import tour
    >>> scenarios, extras = tour.run_experiments(150, seeds=1, progress=False)  # doctest: +SKIP
    >>> tour.write_report(scenarios, extras, pathlib.Path("tour-report"))  # doctest: +SKIP
    PosixPath('tour-report/report.md')
  """
  out.mkdir(parents=True, exist_ok=True)
  _tour_report.write_plots(scenarios, extras, out)
  path = out / "report.md"
  path.write_text("\n".join(_tour_report.report_lines(scenarios, extras, wall_time_s)))
  return path
