"""The configs behind ``recipe.preset``: well-known recipes as plain, JSON-serialisable dicts."""

from __future__ import annotations

from typing import Any

__all__ = ["configs", "fastai_one_cycle"]


def fastai_one_cycle(total_steps: int, pct_start: float = 0.25, div: float = 25.0,
                     div_final: float = 1e5) -> tuple[dict[str, Any], dict[str, Any]]:
  """fastai's ``fit_one_cycle`` lr and momentum curves as ``one_cycle`` / ``one_cycle_momentum`` sections.

  fastai (``callback/schedule.py``) sets the lr of batch ``i`` of ``T`` to
  ``combined_cos(pct_start, lr_max/div, lr_max, lr_max/div_final)(i / T)``: a cosine from
  ``lr_max/div`` to ``lr_max`` over ``pos = i/T in [0, pct_start]``, then to
  ``lr_max/div_final`` at ``pos = 1`` (never reached). torch's ``OneCycleLR`` peaks at step
  ``pct·T' - 1`` and ends at step ``T' - 1``, so fastai's curve is exactly
  ``one_cycle(lr_max, T + 1, pct_start=(pct_start·T + 1)/(T + 1), div_factor=div,
  final_div_factor=div_final/div)``, one step later than ``one_cycle(lr_max, T, pct_start)``.
  The momentum (``moms=(0.95, 0.85, 0.95)``) is the same ``combined_cos``.

  Returns:
    ``(schedule section, momentum_schedule section)`` for ``total_steps = T`` updates.
  """
  steps = total_steps + 1
  pct = (pct_start * total_steps + 1.0) / steps
  schedule = {"name": "one_cycle", "total_steps": steps, "pct_start": pct, "div_factor": div,
              "final_div_factor": div_final / div}
  momentum = {"name": "one_cycle_momentum", "total_steps": steps, "pct_start": pct,
              "base_momentum": 0.85, "max_momentum": 0.95}
  return schedule, momentum


def configs(total_steps: int) -> dict[str, dict[str, Any]]:
  """Every preset's config for ``total_steps`` optimizer steps (see ``recipe.preset``)."""
  warm = max(1, total_steps // 20)
  schedule, momentum = fastai_one_cycle(total_steps)
  return {
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
      "fastai-one-cycle": {  # fit_one_cycle's defaults; fastai's Adam: sqr_mom 0.99, eps 1e-5, true_wd 0.01
          "optimizer": {"name": "adamw", "learning_rate": 1e-3, "b2": 0.99, "eps": 1e-5, "weight_decay": 0.01,
                        "mask": "auto"},
          "schedule": schedule,
          "momentum_schedule": momentum,
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
