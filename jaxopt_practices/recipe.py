"""One optimizer from one JSON-serialisable config: a choice per practice, in a fixed order.

``build(config)`` chains, in this order (the manner of big_vision's ``optax.py``)::

    skip_nonfinite(                       # 0. a step with NaN/Inf grads changes nothing
      clip                                # 1. on the raw gradients (PyTorch: clip_grad_norm_ before step)
      -> gradient_noise                   # 2. annealed Gaussian noise on the clipped gradients
      -> l2                               # 3. coupled L2: + λθ to the gradient
      -> optimizer(learning_rate=[warmup ->] schedule, momentum/b1=momentum_schedule)
                                          # 4. the core, with its own PyTorch options (its update is -η_t·u)
      -> lr_mults                         # 4'. × m_lr per leaf: the leaf's learning rate is η_t·m_lr
      -> weight_decay                     # 5. - λ·m_wd·η_t·m_lr·θ: decoupled decay following the lr (default)
      -> plateau                          # 6. × the reduce-on-plateau scale (value=loss, or plateau.step)
      -> weight_decay (learning_rate=None or "schedule")  # 5'. - λ·m_wd·θ (× s_t/peak): lr-independent
      -> averaging                        # 7. EMA or SWA of the params (reads the final update)
    )

The decay is ``regularization.decoupled_weight_decay`` placed after the learning-rate scaling.
With ``"learning_rate": "optimizer"`` (the default, PyTorch's and optax's AdamW convention)
it follows the optimizer's scheduled learning rate and the plateau scale; with
``"learning_rate": "schedule"`` it is big_vision's ``rate × s_t / peak``, the schedule's *shape*
(warmup included: exactly 0 at step 0 with a warmup from 0) without the lr's magnitude or the
plateau scale; with ``"learning_rate": None`` it is ``rate`` per step whatever the learning
rate. The ``averaging`` section's ``ema`` takes ``decay``, ``debias`` and ``every``
(torchvision's ``model_ema_steps``); ``decay`` may be a schedule section, e.g. torchvision's
warmup copy ``{"name": "constant", "value": 0.998, "factor": 0.0, "total_steps": W + 1}``.

``schedule.steps_per_epoch`` steps the schedule once per epoch (torchvision's
``scheduler.step()`` per epoch, timm's ``t_in_epochs``): the schedule's and the warmup's steps
then count epochs (``schedules.per_epoch(warmup(schedule), steps_per_epoch)``).

Parameter groups (PyTorch ``param_groups``, big_vision's ``lr_mults`` / ``wd_mults``): the
top-level keys ``lr_mults`` and ``wd_mults`` are lists of ``[regex, multiplier]`` matched
against each leaf's "/"-joined path (``groups.paths``; the first match wins, unmatched leaves
keep 1). ``lr_mults`` is ``groups.scale_by_group`` right after the optimizer, so it multiplies
everything the optimizer returns (coupled L2 and adamw's own decay included): a leaf's
learning rate is ``η_t·m_lr``, as a torch group with ``lr = m_lr·lr``. ``wd_mults`` scales the
``weight_decay`` section's rate per leaf (``groups.weight_decay``: one masked
``decoupled_weight_decay`` per distinct multiplier pair); the section's ``mask`` still decides
which leaves decay at all. A decay that follows the learning rate follows each leaf's
``η_t·m_lr`` (torch AdamW groups, to the bit); an lr-independent one ignores ``lr_mults``
(big_vision). Any ``mask`` key (``weight_decay``, ``l2``, the optimizer's) may be a list of
regexes, read as ``groups.match(list)``.

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

from jaxopt_practices import _presets
from jaxopt_practices._section import Section as Section
from jaxopt_practices import _validate
from jaxopt_practices import adaptive, clipping, groups, momentum, plateau, regularization, schedules

__all__ = ["Recipe", "Section", "build", "preset", "OPTIMIZERS", "SCHEDULES", "MOMENTUM_SCHEDULES", "CLIPS",
           "AVERAGING"]

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": momentum.sgd, "asgd": momentum.asgd,
    **{name: getattr(adaptive, name) for name in ("adagrad", "rmsprop", "adam", "adamw", "nadam", "radam", "adamax",
                                                  "adadelta", "rprop", "adafactor", "muon")},
}
SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "constant": schedules.constant, "step_decay": schedules.step_decay,
    "multistep_decay": schedules.multistep_decay, "exponential_decay": schedules.exponential_decay,
    "polynomial_decay": schedules.polynomial_decay, "cosine_annealing": schedules.cosine_annealing,
    "cosine_warm_restarts": schedules.cosine_warm_restarts, "cyclical": schedules.cyclical,
    "one_cycle": schedules.one_cycle, "inverse_sqrt": schedules.inverse_sqrt, "linear": schedules.linear,
}
_Transforms = dict[str, Callable[..., optax.GradientTransformation]]
MOMENTUM_SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "one_cycle_momentum": schedules.one_cycle_momentum, "cyclical_momentum": schedules.cyclical_momentum}
CLIPS: _Transforms = {"global_norm": clipping.clip_by_global_norm, "value": clipping.clip_by_value,
                      "agc": clipping.adaptive_grad_clip}
AVERAGING: _Transforms = {"ema": regularization.ema, "swa": regularization.swa}
# The schedule argument that receives the optimizer's learning_rate (the peak value).
_PEAK = {"constant": "value", "linear": "value", "one_cycle": "max_lr", "cyclical": "max_lr",
         "inverse_sqrt": "peak_value"}
_MULTS = ("lr_mults", "wd_mults")  # the config keys that are lists of [regex, multiplier], not sections


_WARMUP = Section(required=("steps",), optional={"start_value": 0.0, "shift": True})
_WEIGHT_DECAY = Section(required=("rate",), optional={"mask": "auto", "learning_rate": "optimizer"})


@dataclasses.dataclass
class Recipe:
  """The config as a dataclass: one field per practice, ``None`` where it is not used.

  Each practice field is a dict; ``"name"`` picks the variant where there are several and
  the other keys are the keyword arguments of the matching public factory (a :class:`Section`
  made with :meth:`Section.of`); ``warmup`` and ``weight_decay`` take the keys noted below.
  A schedule's peak (``init_value``, ``value``, ``max_lr`` or ``peak_value``) defaults to the
  optimizer's ``learning_rate``. ``lr_mults`` / ``wd_mults`` are lists of ``[regex, multiplier]``
  (see the module docstring).

  Attributes:
    optimizer: ``{"name": one of OPTIMIZERS, "learning_rate": ..., ...}`` (default: SGD, lr 0.1).
    schedule: ``{"name": one of SCHEDULES, ...}``, its peak the optimizer's learning rate;
      ``"steps_per_epoch"`` steps it once per epoch.
    warmup: ``{"steps": int, "start_value": 0.0, "shift": True}`` (``schedules.warmup``).
    momentum_schedule: ``{"name": one of MOMENTUM_SCHEDULES, ...}``, fed to the optimizer's
      ``momentum`` (sgd, rmsprop) or ``b1`` (adam, adamw).
    plateau: the arguments of ``plateau.reduce_on_plateau``.
    clip: ``{"name": one of CLIPS, ...}``.
    gradient_noise: the arguments of ``regularization.gradient_noise``.
    l2: ``{"rate": float, "mask": None | "auto" | list of regexes}``, coupled L2.
    weight_decay: ``{"rate", "mask": "auto", "learning_rate": "optimizer" | "schedule" | None}``,
      the decoupled decay (see the module docstring).
    averaging: ``{"name": one of AVERAGING, ...}``; an ``ema``'s ``decay`` may be a schedule section.
    skip_nonfinite: ``{"max_consecutive": int | None}`` (``clipping.skip_nonfinite``).
    lr_mults: ``[[regex, multiplier], ...]``: × the learning rate of the matching leaves.
    wd_mults: ``[[regex, multiplier], ...]``: × the ``weight_decay`` rate of the matching leaves.

  Example:
    >>> from jaxopt_practices import recipe
    >>> r = recipe.Recipe.from_dict({"optimizer": {"name": "adam", "learning_rate": 1e-3}})
    >>> r.optimizer["name"], r.schedule, r.to_dict()["warmup"]
    ('adam', None, None)
  """
  optimizer: dict = dataclasses.field(default_factory=lambda: {"name": "sgd", "learning_rate": 0.1})
  schedule: dict | None = None
  warmup: dict | None = None            # {"steps": int, "start_value": float = 0.0, "shift": bool = True}
  momentum_schedule: dict | None = None  # fed to sgd/rmsprop `momentum` or adam/adamw `b1`
  plateau: dict | None = None
  clip: dict | None = None
  gradient_noise: dict | None = None
  l2: dict | None = None                # {"rate": float, "mask": None | "auto"}
  weight_decay: dict | None = None      # {"rate", "mask": "auto" | None, "learning_rate": "optimizer" | ...}
  averaging: dict | None = None
  skip_nonfinite: dict | None = None    # {"max_consecutive": int | None}
  lr_mults: list | None = None          # [[regex, multiplier], ...]: × the learning rate of matching leaves
  wd_mults: list | None = None          # [[regex, multiplier], ...]: × the weight_decay rate of matching leaves

  def to_dict(self) -> dict[str, Any]:
    """The config as a JSON-serialisable dict (a deep copy)."""
    return copy.deepcopy(dataclasses.asdict(self))

  @classmethod
  def from_dict(cls, config: Mapping[str, Any] | Recipe) -> Recipe:
    """A ``Recipe`` of a config dict (a deep copy; a ``Recipe`` is copied).

    Raises:
      ValueError: for a config that is not a dict, an unknown key, a section that is not a dict
        or ``None``, or ``lr_mults`` / ``wd_mults`` that are not ``[regex, multiplier]`` pairs.
    """
    if isinstance(config, Recipe):
      return copy.deepcopy(config)
    if not isinstance(config, Mapping):
      raise ValueError(f"config must be a dict or a Recipe, got config = {config!r}.")
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(config) - set(valid))
    if unknown:
      raise ValueError(f"unknown config key(s) {unknown}; valid keys are {valid}.")
    for key, value in config.items():
      if key in _MULTS:
        try:
          groups.scale_by_group(value or [])  # validates the [regex, multiplier] pairs
        except ValueError as e:
          raise ValueError(f"config[{key!r}]: {e}") from e
      elif value is not None and not isinstance(value, Mapping):
        raise ValueError(f"config[{key!r}] must be a dict or None, got {value!r}.")
    return cls(**copy.deepcopy(dict(config)))


def _choose(section: str, table: Mapping[str, Callable], spec: Mapping[str, Any]) -> tuple[str, Callable, dict]:
  """``(name, factory, the other keys)`` for ``spec["name"]`` from ``table``."""
  spec = dict(spec)
  name = spec.pop("name", None)
  if name not in table:
    raise ValueError(f"{section}.name must be one of {sorted(table)}; got {section}.name = {name!r}.")
  return name, table[name], spec


def _make(section: str, table: Mapping[str, Callable], spec: Mapping[str, Any], skip: tuple[str, ...] = ()) -> Any:
  """The factory named by ``spec["name"]`` called with the section's other keys, checked."""
  name, factory, rest = _choose(section, table, spec)
  return factory(**Section.of(factory, skip=skip).check(f"{section} ({name})", rest))


def _call(section: str, factory: Callable, spec: Mapping[str, Any], **given: Any) -> Any:
  """``factory`` called with the keys of ``spec`` (checked against its arguments) and ``given``."""
  return factory(**given, **Section.of(factory, skip=tuple(given)).check(section, spec))


def _masks(spec: Mapping[str, Any]) -> dict[str, Any]:
  """``spec`` with a ``mask`` given as a list of regexes read as ``groups.match(list)``."""
  mask = spec.get("mask")
  if isinstance(mask, (list, tuple)) and all(isinstance(m, str) for m in mask):
    return {**spec, "mask": groups.match(list(mask))}
  return dict(spec)


def _optimizer(r: Recipe) -> tuple[Callable, dict[str, Any], float]:
  """The optimizer factory, its checked arguments without ``learning_rate``, and the learning rate."""
  name, factory, rest = _choose("optimizer", OPTIMIZERS, _masks(r.optimizer))
  kw = Section.of(factory, required=("learning_rate",)).check(f"optimizer ({name})", rest)
  lr = kw.pop("learning_rate")
  if r.momentum_schedule is not None:
    target = "b1" if "b1" in kw else "momentum" if "momentum" in kw else None
    if target is None or target in r.optimizer:
      why = ("has no momentum or b1 argument to schedule" if target is None
             else f"sets optimizer.{target} = {r.optimizer[target]!r} as well; give one of the two")
      raise ValueError(f"momentum_schedule needs an optimizer with a momentum (sgd, rmsprop) or b1 (adam, adamw) "
                       f"argument; optimizer.name = {name!r} {why}.")
    kw[target] = _make("momentum_schedule", MOMENTUM_SCHEDULES, r.momentum_schedule)
  return factory, kw, lr


def _learning_rate(r: Recipe, lr: float) -> float | optax.Schedule:
  """The optimizer's ``learning_rate``: the schedule (peak ``lr``) behind the warmup (per epoch), or ``lr``."""
  sched: float | optax.Schedule = lr
  steps_per_epoch = None
  if r.schedule is not None:
    name, factory, rest = _choose("schedule", SCHEDULES, r.schedule)
    if "steps_per_epoch" not in inspect.signature(factory).parameters:  # one_cycle's own argument stays its own
      steps_per_epoch = rest.pop("steps_per_epoch", None)
    sched = factory(**Section.of(factory, defaults={_PEAK.get(name, "init_value"): lr}).check(
        f"schedule ({name})", rest))
  if r.warmup is not None:
    kw = _WARMUP.check("warmup", r.warmup)
    sched = schedules.warmup(sched, kw["steps"], kw["start_value"], kw["shift"])
  return sched if steps_per_epoch is None else schedules.per_epoch(sched, steps_per_epoch)


def _peak(r: Recipe, lr: float) -> float:
  """The peak of the optimizer's schedule: its peak argument (default the optimizer's ``learning_rate``)."""
  name = (r.schedule or {}).get("name")
  peak = (r.schedule or {}).get(_PEAK.get(name or "", "init_value"), lr)
  if not isinstance(peak, (int, float)) or peak <= 0:
    raise ValueError("weight_decay.learning_rate = 'schedule' divides the schedule by its peak, which must be a "
                     f"number > 0; got a peak of {peak!r}.")
  return float(peak)


def _weight_decay(r: Recipe, learning_rate: float | optax.Schedule, lr: float
                  ) -> tuple[optax.GradientTransformation, bool]:
  """The decoupled decay of the ``weight_decay`` section (per group with ``lr_mults`` / ``wd_mults``), and
  whether it ignores the learning rate's magnitude (placed after the plateau scale)."""
  kw = _WEIGHT_DECAY.check("weight_decay", _masks(r.weight_decay or {}))
  follow, rate = kw["learning_rate"], kw["rate"]
  if isinstance(follow, str) and follow not in ("optimizer", "schedule"):
    raise ValueError("weight_decay.learning_rate must be 'optimizer' (the decay follows the optimizer's "
                     "learning rate), 'schedule' (big_vision: rate x schedule(t) / peak), None "
                     f"(lr-independent) or a number; got {follow!r}.")
  if follow == "schedule":
    _validate.check_number("weight_decay.rate", rate, low=0.0)
    if callable(learning_rate):  # a constant lr has a flat shape: rate per step
      base, peak, schedule = float(rate), _peak(r, lr), learning_rate
      rate = lambda count: base * schedule(count) / peak  # noqa: E731
    follow = None
  lr_follow = learning_rate if follow == "optimizer" else follow
  decay = groups.weight_decay(rate, kw["mask"], learning_rate=lr_follow,
                              lr_mults=(r.lr_mults or ()) if lr_follow is not None else (), wd_mults=r.wd_mults or ())
  return decay, follow is None


def build(config: Mapping[str, Any] | Recipe) -> optax.GradientTransformationExtraArgs:
  """Builds one ``GradientTransformation`` from a config (see the module docstring for the order).

  Args:
    config: a dict with the keys of :class:`Recipe` (or a ``Recipe``). Unknown keys,
      names or arguments raise ``ValueError`` listing the valid ones, and so does a missing
      required key (naming the section, the key and what the section needs); every value
      is then validated by the practice's own factory.

  Returns:
    An ``optax.GradientTransformationExtraArgs``. With a ``plateau`` section, either pass
    ``value=loss`` to every ``update``, or call ``plateau.step(opt_state, val_loss)`` once per
    epoch and ``update`` without ``value``.

  Raises:
    ValueError: for an unknown key, name or argument, a missing required key, a value that the
      practice's factory rejects, a ``momentum_schedule`` without a momentum (or ``b1``) to
      drive, or ``wd_mults`` without a ``weight_decay`` section.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_practices import recipe
    >>> tx = recipe.build({"optimizer": {"name": "sgd", "learning_rate": 0.1},
    ...                    "weight_decay": {"rate": 0.5}})
    >>> params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    >>> updates, _ = tx.update(params, tx.init(params), params)  # gradient = params
    >>> print(updates["kernel"][0, 0], updates["bias"][0])  # -0.1 - 0.1 * 0.5; no decay on biases
    -0.15 -0.1
  """
  r = Recipe.from_dict(config)
  if r.wd_mults and r.weight_decay is None:
    raise ValueError("wd_mults scales the rate of the weight_decay section, and the config has none: add "
                     "weight_decay = {'rate': ...} (for adamw, with optimizer.weight_decay = 0).")
  opt_factory, opt_kw, lr = _optimizer(r)
  learning_rate = _learning_rate(r, lr)
  parts: list[optax.GradientTransformation] = []
  if r.clip is not None:
    parts.append(_make("clip", CLIPS, r.clip))
  if r.gradient_noise is not None:
    parts.append(_call("gradient_noise", regularization.gradient_noise, r.gradient_noise))
  if r.l2 is not None:
    parts.append(_call("l2", regularization.l2_penalty, _masks(r.l2)))
  parts.append(opt_factory(learning_rate, **opt_kw))
  if r.lr_mults:
    parts.append(groups.scale_by_group(r.lr_mults))
  late: list[optax.GradientTransformation] = []  # after the plateau scale: an lr-independent decay
  if r.weight_decay is not None:
    decay, lr_independent = _weight_decay(r, learning_rate, lr)
    (late if lr_independent else parts).append(decay)
  if r.plateau is not None:
    parts.append(_call("plateau", plateau.reduce_on_plateau, r.plateau))
  parts += late
  if r.averaging is not None:  # it is last: no inner; a decay given as a schedule section is that schedule
    spec = dict(r.averaging)
    if isinstance(spec.get("decay"), Mapping):
      spec["decay"] = _make("averaging.decay", SCHEDULES, spec["decay"])
    parts.append(_make("averaging", AVERAGING, spec, skip=("inner",)))
  tx = optax.chain(*parts)
  if r.skip_nonfinite is not None:
    tx = _call("skip_nonfinite", clipping.skip_nonfinite, r.skip_nonfinite, inner=tx)
  return optax.with_extra_args_support(tx)


def preset(name: str, total_steps: int = 10_000, learning_rate: float | None = None) -> dict[str, Any]:
  """A config dict for a well-known recipe, ready for :func:`build` (edit it freely).

  - ``"resnet-sgd"``: SGD, Nesterov momentum 0.9, lr 0.1, 5% linear warmup then cosine,
    decoupled weight decay 5e-5·lr-following on kernels only (the "decay mask").
  - ``"transformer-adamw"``: AdamW (b2 0.98, weight decay 0.01 on kernels only), lr 3e-4,
    warmup then cosine, global-norm clipping at 1.0.
  - ``"fastai-one-cycle"``: ``fit_one_cycle``'s defaults: lr 1e-3 on ``combined_cos`` (div 25,
    div_final 1e5, pct_start 0.25: ``one_cycle`` over ``total_steps + 1`` steps), ``b1`` cycled
    0.95 -> 0.85 -> 0.95, Adam ``b2=0.99``, ``eps=1e-5``, decoupled decay 0.01 following the lr,
    not on BatchNorm/bias parameters (``mask="auto"``: ``wd_bn_bias=False``).
  - ``"tour"``: the tour's full recipe: SGD Nesterov, warmup + cosine, clipping at 1.0, decay
    mask, EMA, skipping non-finite steps.

  Args:
    name: one of the names above.
    total_steps: the number of optimizer steps the schedules are sized for, an integer ``>= 2``.
    learning_rate: replaces the preset's ``optimizer.learning_rate`` when given, a number ``>= 0``.

  Returns:
    A JSON-serialisable config dict.

  Raises:
    ValueError: for an unknown ``name``, a ``total_steps`` that is not an int ``>= 2`` or a
      negative ``learning_rate``.

  Example:
    >>> from jaxopt_practices import recipe
    >>> config = recipe.preset("resnet-sgd", total_steps=1000)
    >>> config["warmup"], config["schedule"]
    ({'steps': 50}, {'name': 'cosine_annealing', 't_max': 950})
    >>> tx = recipe.build(config)
  """
  total_steps = _validate.check_steps("total_steps", total_steps, low=2)  # a warmup step and a scheduled one
  if learning_rate is not None:
    _validate.check_number("learning_rate", learning_rate, low=0.0)
  presets = _presets.configs(total_steps)
  if name not in presets:
    raise ValueError(f"preset name must be one of {sorted(presets)}; got name = {name!r}.")
  config = presets[name]
  if learning_rate is not None:
    config["optimizer"]["learning_rate"] = learning_rate
  Recipe.from_dict(config)
  return config
