"""The tour's report: ``report.md`` lines and the PNG plots (see ``tour.write_report``)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

__all__ = ["write_plots", "report_lines", "mean_std"]

PLOTS = {
    "loss_curves.png": "train loss of both runs of every scenario (mean over seeds, band: min to max)",
    "lr_curves.png": "the learning rate each step applied (`monitor.current_learning_rate`), where it changes",
    "lr_range_test.png": "the LR range test of scenario 2 with its three suggestions",
    "activation_std.png": "activation std through the 20-layer net of scenario 3, default vs He init",
}


def write_plots(scenarios: Sequence[Any], extras: dict, out: pathlib.Path) -> None:
  """Writes the four PNGs of :data:`PLOTS` into ``out``."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  def save(fig, name):
    fig.tight_layout()
    fig.savefig(out / name, dpi=100)
    plt.close(fig)

  save(_loss_curves(plt, scenarios), "loss_curves.png")
  save(_lr_curves(plt, scenarios), "lr_curves.png")
  save(extras["lr_range_test"].plot(), "lr_range_test.png")
  fig, ax = plt.subplots(figsize=(7, 4))
  for name, rep in extras["init_reports"].items():
    rep.plot(ax=ax, label=name)
  ax.set_title("Activation std through depth (before training)")
  ax.legend(fontsize=8)
  save(fig, "activation_std.png")


def _smooth(losses: np.ndarray) -> np.ndarray:
  """A 10-step running mean of each seed's curve (non-finite values kept non-finite)."""
  k = min(10, losses.shape[1])
  return np.stack([np.convolve(row, np.ones(k) / k, mode="valid") for row in losses])


def _loss_curves(plt, scenarios):
  rows = (len(scenarios) + 3) // 4
  fig, axes = plt.subplots(rows, 4, figsize=(16, 3.6 * rows), squeeze=False)
  for ax, s in zip(axes.flat, scenarios):
    for run, color in ((s.baseline, "C7"), (s.practice, "C0")):
      curves = _smooth(np.where(np.isfinite(run.losses), run.losses, np.nan))
      steps = np.arange(curves.shape[1])
      with np.errstate(all="ignore"):
        ax.plot(steps, np.nanmean(curves, 0), color=color, label=run.name)
        ax.fill_between(steps, np.nanmin(curves, 0), np.nanmax(curves, 0), color=color, alpha=0.2, lw=0)
    ax.set(yscale="log", xlabel="step", title=s.name)
    ax.legend(fontsize=7)
  for ax in axes.flat[len(scenarios):]:
    ax.axis("off")
  axes[0, 0].set_ylabel("train loss (10-step mean)")
  return fig


def _lr_curves(plt, scenarios):
  varying = [s for s in scenarios if any(np.ptp(r.learning_rates[0]) > 0 for r in (s.baseline, s.practice))]
  varying = varying or list(scenarios[:1])
  fig, axes = plt.subplots(1, len(varying), figsize=(4.5 * len(varying), 3.4), squeeze=False)
  for ax, s in zip(axes.flat, varying):
    for run, color in ((s.baseline, "C7"), (s.practice, "C0")):
      ax.plot(run.learning_rates[0], color=color, label=run.name)
    ax.set(yscale="log", xlabel="step", ylabel="learning rate applied (seed 0)", title=s.name)
    ax.legend(fontsize=7)
  return fig


def mean_std(values: np.ndarray, fmt: str, unit: str = "") -> str:
  """``"m ± s"`` over the finite values (``"m (1 seed)"`` for one), noting how many were not finite."""
  finite = values[np.isfinite(values)]
  if not finite.size:
    return "not finite"
  spread = f" ± {finite.std(ddof=1):{fmt}}{unit}" if finite.size > 1 else " (1 seed)"
  note = f" ({values.size - finite.size} not finite)" if finite.size < values.size else ""
  return f"{finite.mean():{fmt}}{unit}{spread}{note}"


def _row(s: Any, run: Any, reading: str) -> str:
  n = len(run.test_accuracy)
  gap = 100 * (run.train_accuracy - run.test_accuracy)
  return (f"| {s.name} | {run.name} | {mean_std(100 * run.test_accuracy, '.1f', '%')} | "
          f"{mean_std(run.final_loss, '.4f')} | {mean_std(gap, '.1f')} | {int(run.diverged.sum())}/{n} | "
          f"{run.wall_time_s:.1f} | {reading} |")


def report_lines(scenarios: Sequence[Any], extras: dict, wall_time_s: float | None) -> list[str]:
  """The lines of ``report.md``: setup, the table (two rows per scenario), what each shows, the plots."""
  seeds, total = extras["seeds"], f" Total time {wall_time_s:.0f} s." if wall_time_s is not None else ""
  lines = [
      "# jaxopt-practices tour", "",
      f"Digits (scikit-learn, 1,437 train / 360 test images, standardised), batch 64, {extras['steps']} steps "
      f"per run (scenario 2: twice that), {seeds} seed{'s' if seeds > 1 else ''} per run, run together "
      f"(`vmap`); device: {jax.devices()[0].platform}.{total}", "",
      "Each scenario is two runs that differ by one practice. Numbers are mean ± std over the seeds; the "
      "reading compares the means with the seed spread (the larger std of the two runs) and says "
      "\"within noise\" when the difference is no larger. Train loss: mean over the last 10% of steps. "
      "Wall time includes compilation.", "",
      "| scenario | run | test accuracy (mean ± std) | final train loss (mean ± std) | train − test gap "
      "(points, mean ± std) | diverged | wall time (s) | reading |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for s in scenarios:
    lines += [_row(s, s.baseline, "reference"), _row(s, s.practice, f"{s.reading}")]
  lines += ["", "## What each scenario shows", ""]
  for s in scenarios:
    lines.append(f"- **{s.name}** — {s.regime}. {s.baseline.name} vs {s.practice.name}: {s.shows}. "
                 f"Measured: {s.reading}. See `loss_curves.png`.")
  finder = extras["lr_range_test"]
  lines += ["", "## Plots", ""] + [f"- [`{name}`]({name}): {what}" for name, what in PLOTS.items()]
  lines += ["", "## LR range test (scenario 2)", "",
            "Suggestions, all read from the trimmed sweep: " + ", ".join(
                f"`{k}` {v:.3g}" for k, v in finder.suggestions.items()) + f" (default: `{finder.suggested_by}`).",
            "", "## Full recipe config", "", "```json", json.dumps(extras["recipe"], indent=2), "```", ""]
  return lines
