"""One optimizer from one JSON-serialisable config: a choice per practice, in a fixed order.

``build(config)`` chains, in this order (the manner of big_vision's ``optax.py``)::

    skip_nonfinite(                       # 0. a step with NaN/Inf grads changes nothing
      clip                                # 1. on the raw gradients (PyTorch: clip_grad_norm_ before step)
      -> gradient_noise                   # 2. annealed Gaussian noise on the clipped gradients
      -> l2                               # 3. coupled L2: + λθ to the gradient
      -> optimizer(learning_rate=[warmup ->] schedule, momentum/b1=momentum_schedule)
                                          # 4. the core, with its own PyTorch options
      -> weight_decay                     # 5. - λ·η_t·θ: decoupled decay following the lr (default)
      -> plateau                          # 6. × the reduce-on-plateau scale (needs value=loss)
      -> weight_decay (learning_rate=None)  # 5'. - λ·θ: big_vision's lr-independent decay
      -> averaging                        # 7. EMA or SWA of the params (reads the final update)
    )

The decay is ``regularization.decoupled_weight_decay`` placed after the learning-rate scaling.
With ``"learning_rate": "optimizer"`` (the default, PyTorch's and optax's AdamW convention)
it follows the optimizer's scheduled learning rate and the plateau scale; with
``"learning_rate": None`` it is ``rate`` per step whatever the learning rate.

Example:
  >>> from jaxopt_practices import recipe
  >>> tx = recipe.build({"optimizer": {"name": "adamw", "learning_rate": 3e-4},
  ...                    "schedule": {"name": "cosine_annealing", "t_max": 1000},
  ...                    "warmup": {"steps": 100}, "clip": {"name": "global_norm", "max_norm": 1.0}})
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import optax

from jaxopt_practices import adaptive, clipping, momentum, plateau, regularization, schedules

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": momentum.sgd, "adagrad": adaptive.adagrad, "rmsprop": adaptive.rmsprop,
    "adam": adaptive.adam, "adamw": adaptive.adamw,
}
SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "constant": schedules.constant, "step_decay": schedules.step_decay,
    "multistep_decay": schedules.multistep_decay, "exponential_decay": schedules.exponential_decay,
    "polynomial_decay": schedules.polynomial_decay, "cosine_annealing": schedules.cosine_annealing,
    "cosine_warm_restarts": schedules.cosine_warm_restarts, "cyclical": schedules.cyclical,
    "one_cycle": schedules.one_cycle,
}
MOMENTUM_SCHEDULES = {"one_cycle_momentum": schedules.one_cycle_momentum,
                      "cyclical_momentum": schedules.cyclical_momentum}
CLIPS = {"global_norm": clipping.clip_by_global_norm, "value": clipping.clip_by_value,
         "agc": clipping.adaptive_grad_clip}
AVERAGING = {"ema": regularization.ema, "swa": regularization.swa}
# The schedule argument that receives the optimizer's learning_rate (the peak value).
_PEAK = {"constant": "value", "one_cycle": "max_lr", "cyclical": "max_lr"}


@dataclasses.dataclass
class Recipe:
  """The config as a dataclass: one field per practice, ``None`` where it is not used.

  Each practice field is a dict; ``"name"`` picks the variant where there are several and
  the other keys are the keyword arguments of the matching public factory.
  """
  optimizer: dict = dataclasses.field(default_factory=lambda: {"name": "sgd", "learning_rate": 0.1})
  schedule: dict | None = None
  warmup: dict | None = None            # {"steps": int, "start_value": float = 0.0}
  momentum_schedule: dict | None = None  # fed to sgd/rmsprop `momentum` or adam/adamw `b1`
  plateau: dict | None = None
  clip: dict | None = None
  gradient_noise: dict | None = None
  l2: dict | None = None                # {"rate": float, "mask": None | "auto"}
  weight_decay: dict | None = None      # {"rate": float, "mask": "auto" | None, "learning_rate": "optimizer" | None}
  averaging: dict | None = None
  skip_nonfinite: dict | None = None    # {"max_consecutive": int | None}

  def to_dict(self) -> dict[str, Any]:
    return copy.deepcopy(dataclasses.asdict(self))

  @classmethod
  def from_dict(cls, config: Mapping[str, Any]) -> Recipe:
    if isinstance(config, Recipe):
      return copy.deepcopy(config)
    if not isinstance(config, Mapping):
      raise ValueError(f"config must be a dict or a Recipe, got config = {config!r}.")
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(config) - set(valid))
    if unknown:
      raise ValueError(f"unknown config key(s) {unknown}; valid keys are {valid}.")
    for key, value in config.items():
      if value is not None and not isinstance(value, Mapping):
        raise ValueError(f"config[{key!r}] must be a dict or None, got {value!r}.")
    return cls(**copy.deepcopy(dict(config)))


def _pick(section: str, table: Mapping[str, Callable], spec: Mapping[str, Any], default: str | None = None):
  """``(factory, kwargs)`` for ``spec["name"]`` from ``table``, arguments checked by name."""
  spec = dict(spec)
  name = spec.pop("name", default)
  if name not in table:
    raise ValueError(f"{section}.name must be one of {sorted(table)}; got {section}.name = {name!r}.")
  return name, table[name], _kwargs(f"{section} ({name})", table[name], spec)


def _kwargs(where: str, factory: Callable, spec: Mapping[str, Any]) -> dict[str, Any]:
  valid = [p for p in inspect.signature(factory).parameters if p not in ("inner",)]
  unknown = sorted(set(spec) - set(valid))
  if unknown:
    raise ValueError(f"unknown argument(s) {unknown} for {where}; valid arguments are {valid}.")
  return dict(spec)


def _learning_rate(r: Recipe, lr: float) -> float | optax.Schedule:
  sched: float | optax.Schedule = lr
  if r.schedule is not None:
    name, factory, kw = _pick("schedule", SCHEDULES, r.schedule)
    kw.setdefault(_PEAK.get(name, "init_value"), lr)
    sched = factory(**kw)
  if r.warmup is not None:
    kw = _kwargs("warmup", lambda steps, start_value=0.0: None, r.warmup)
    if "steps" not in kw:
      raise ValueError("warmup needs 'steps', e.g. {'steps': 500}.")
    sched = schedules.warmup(sched, kw["steps"], kw.get("start_value", 0.0))
  return sched


def build(config: Mapping[str, Any] | Recipe) -> optax.GradientTransformationExtraArgs:
  """Builds one ``GradientTransformation`` from a config (see the module docstring for the order).

  Args:
    config: a dict with the keys of :class:`Recipe` (or a ``Recipe``). Unknown keys,
      names or arguments raise ``ValueError`` listing the valid ones; every value is then
      validated by the practice's own factory.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; pass ``value=loss`` to ``update`` when
    the config has a ``plateau``.
  """
  r = Recipe.from_dict(config)
  opt_spec = dict(r.optimizer or {})
  _, opt_factory, opt_kw = _pick("optimizer", OPTIMIZERS, opt_spec)
  lr = opt_kw.pop("learning_rate", None)
  if lr is None:
    raise ValueError(f"optimizer.learning_rate is required, got optimizer = {r.optimizer!r}.")
  learning_rate = _learning_rate(r, lr)
  if r.momentum_schedule is not None:
    _, factory, kw = _pick("momentum_schedule", MOMENTUM_SCHEDULES, r.momentum_schedule)
    opt_kw["b1" if "b1" in inspect.signature(opt_factory).parameters else "momentum"] = factory(**kw)

  parts: list[optax.GradientTransformation] = []
  if r.clip is not None:
    _, factory, kw = _pick("clip", CLIPS, r.clip)
    parts.append(factory(**kw))
  if r.gradient_noise is not None:
    parts.append(regularization.gradient_noise(**_kwargs("gradient_noise", regularization.gradient_noise,
                                                         r.gradient_noise)))
  if r.l2 is not None:
    parts.append(regularization.l2_penalty(**_kwargs("l2", regularization.l2_penalty, r.l2)))
  parts.append(opt_factory(learning_rate, **opt_kw))

  decay_after_plateau = None
  if r.weight_decay is not None:
    kw = _kwargs("weight_decay", lambda rate, mask="auto", learning_rate="optimizer": None, r.weight_decay)
    follow = kw.get("learning_rate", "optimizer")
    if isinstance(follow, str) and follow != "optimizer":
      raise ValueError("weight_decay.learning_rate must be 'optimizer' (the decay follows the optimizer's "
                       f"learning rate), None (lr-independent) or a number; got {follow!r}.")
    follow = learning_rate if follow == "optimizer" else follow
    decay = regularization.decoupled_weight_decay(kw["rate"], kw.get("mask", "auto"), learning_rate=follow)
    if follow is None:
      decay_after_plateau = decay
    else:
      parts.append(decay)
  if r.plateau is not None:
    parts.append(plateau.reduce_on_plateau(**_kwargs("plateau", plateau.reduce_on_plateau, r.plateau)))
  if decay_after_plateau is not None:
    parts.append(decay_after_plateau)
  if r.averaging is not None:
    _, factory, kw = _pick("averaging", AVERAGING, r.averaging)
    parts.append(factory(**kw))

  tx = optax.chain(*parts)
  if r.skip_nonfinite is not None:
    tx = clipping.skip_nonfinite(tx, **_kwargs("skip_nonfinite", clipping.skip_nonfinite, r.skip_nonfinite))
  return optax.with_extra_args_support(tx)


def preset(name: str, total_steps: int = 10_000, learning_rate: float | None = None) -> dict[str, Any]:
  """A config dict for a well-known recipe, ready for :func:`build` (edit it freely).

  - ``"resnet-sgd"``: SGD, Nesterov momentum 0.9, lr 0.1, 5% linear warmup then cosine,
    decoupled weight decay 5e-5·lr-following on kernels only (the "decay mask").
  - ``"transformer-adamw"``: AdamW (b2 0.98, weight decay 0.01 on kernels only), lr 3e-4,
    warmup then cosine, global-norm clipping at 1.0.
  - ``"fastai-one-cycle"``: AdamW (b2 0.99, weight decay 0.01), one-cycle lr with
    momentum (``b1``) cycled 0.95 -> 0.85 -> 0.95.
  - ``"tour"``: what ``jaxopt-practices tour`` runs as the full recipe: SGD Nesterov,
    warmup + cosine, clipping at 1.0, decay mask, EMA, skipping non-finite steps.
  """
  warm = max(1, total_steps // 20)
  presets = {
      "resnet-sgd": {
          "optimizer": {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True},
          "schedule": {"name": "cosine_annealing", "t_max": total_steps - warm},
          "warmup": {"steps": warm},
          "weight_decay": {"rate": 5e-5, "mask": "auto"},
      },
      "transformer-adamw": {
          "optimizer": {"name": "adamw", "learning_rate": 3e-4, "b2": 0.98, "weight_decay": 0.01, "mask": "auto"},
          "schedule": {"name": "cosine_annealing", "t_max": total_steps - warm},
          "warmup": {"steps": warm},
          "clip": {"name": "global_norm", "max_norm": 1.0},
      },
      "fastai-one-cycle": {
          "optimizer": {"name": "adamw", "learning_rate": 3e-3, "b2": 0.99, "weight_decay": 0.01},
          "schedule": {"name": "one_cycle", "total_steps": total_steps, "pct_start": 0.25},
          "momentum_schedule": {"name": "one_cycle_momentum", "total_steps": total_steps, "pct_start": 0.25,
                                "base_momentum": 0.85, "max_momentum": 0.95},
      },
      "tour": {
          "optimizer": {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True},
          "schedule": {"name": "cosine_annealing", "t_max": total_steps - warm},
          "warmup": {"steps": warm},
          "clip": {"name": "global_norm", "max_norm": 1.0},
          "weight_decay": {"rate": 1e-3, "mask": "auto"},
          "averaging": {"name": "ema", "decay": 0.99},
          "skip_nonfinite": {"max_consecutive": 10},
      },
  }
  if name not in presets:
    raise ValueError(f"preset name must be one of {sorted(presets)}; got name = {name!r}.")
  config = presets[name]
  if learning_rate is not None:
    config["optimizer"]["learning_rate"] = learning_rate
  Recipe.from_dict(config)
  return config
