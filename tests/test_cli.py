"""The ``jaxopt-practices`` command: ``tour --quick`` end to end, and its argument errors."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from jaxopt_practices import cli


SCENARIOS = ["1 schedules", "2 lr finder + plateau", "3 initialization", "4 momentum", "5 adaptive", "6 clipping",
             "7 regularization", "full recipe"]
READINGS = ("better: ", "worse: ", "within noise: ", "same: ", "no comparison: ")


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
  """``tour --quick`` run once (1 seed, 150 steps)."""
  out = tmp_path_factory.mktemp("tour") / "report"
  assert cli.main(["tour", "--quick", "--out", str(out), "--no-progress"]) == 0
  return out


@pytest.mark.slow
def test_tour_quick_writes_report_and_plots(quick_report):
  """The plots, the rows and the readings of one ``tour --quick`` run (one test: the tour runs once)."""
  report = (quick_report / "report.md").read_text()
  for png in ["loss_curves.png", "lr_curves.png", "lr_range_test.png", "activation_std.png"]:
    data = (quick_report / png).read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5_000, png
    assert f"]({png})" in report, png  # the report links every plot
  rows = [line.split(" | ") for line in report.splitlines() if line.startswith("| ") and "%" in line]
  assert [r[0].lstrip("| ") for r in rows] == [name for name in SCENARIOS for _ in range(2)]
  accuracies = [float(r[2].split("%")[0]) for r in rows]
  assert all(0.0 <= a <= 100.0 for a in accuracies), accuracies
  # Every practice trains, even in --quick: each practice row is well above chance (10%).
  assert all(a > 50.0 for a in accuracies[1::2]), accuracies
  _report_has_mean_std_columns_and_readings(report.splitlines())


def _report_has_mean_std_columns_and_readings(lines):
  header = next(line for line in lines if line.startswith("| scenario |"))
  assert "test accuracy (mean ± std)" in header and "final train loss (mean ± std)" in header
  assert "train − test gap" in header and "reading" in header
  rows = [line.split(" | ") for line in lines if line.startswith("| ") and "%" in line]
  for baseline, practice in zip(rows[::2], rows[1::2]):
    assert baseline[-1].rstrip(" |") == "reference"
    assert practice[-1].startswith(READINGS), practice[-1]
    assert "1 seed" in practice[-1] or practice[-1].startswith(("better: the", "worse: the", "no comparison"))
  assert "## What each scenario shows" in lines
  assert sum(line.startswith("- **") for line in lines) == len(SCENARIOS)


def test_reading_says_within_noise_below_the_seed_spread():
  import numpy as np

  from jaxopt_practices import tour

  def run(acc, loss=0.1, diverged=False):
    losses = np.full((len(acc), 20), loss)
    if diverged:
      losses[0, -1] = np.nan
    return tour.RunResult("r", "", losses, np.zeros_like(losses), np.asarray(acc), np.ones(len(acc)), 0.0)

  base = run([0.90, 0.92, 0.94])
  assert tour.reading(base, run([0.91, 0.93, 0.95]), "test accuracy").startswith("within noise: ")
  assert tour.reading(base, run([0.97, 0.98, 0.99]), "test accuracy").startswith("better: ")
  assert tour.reading(base, run([0.80, 0.81, 0.82]), "test accuracy").startswith("worse: ")
  assert tour.reading(run([0.9, 0.9, 0.9], 0.5), run([0.9, 0.9, 0.9], 0.1), "final train loss").startswith("better")
  assert tour.reading(run([0.1, 0.9, 0.9], diverged=True), base, "test accuracy") == (
      "better: the baseline diverged in 1/3 seeds, with the practice 0/3")
  assert "1 seed, no noise estimate" in tour.reading(run([0.9]), run([0.95]), "test accuracy")


def test_bad_out_is_a_clear_error(tmp_path):
  blocker = tmp_path / "file.txt"
  blocker.write_text("x")
  proc = subprocess.run([sys.executable, "-m", "jaxopt_practices.cli", "tour", "--out", str(blocker)],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert "exists and is not a directory" in proc.stderr


@pytest.mark.parametrize("args,message", [(["tour", "--steps", "5"], "--steps must be an integer >= 20"),
                                          (["tour", "--steps", "many"], "--steps must be an integer >= 20"),
                                          (["tour", "--steps", "150.5"], "--steps must be an integer >= 20"),
                                          (["tour", "--seeds", "0"], "--seeds must be an integer >= 1"),
                                          (["tour", "--seeds", "two"], "--seeds must be an integer >= 1"),
                                          (["tour", "--fast"], "unrecognized arguments: --fast"),
                                          ([], "the following arguments are required")])
def test_bad_options_exit_with_usage(args, message, capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(args)
  assert info.value.code == 2
  assert message in capsys.readouterr().err


def test_counts_accept_integral_floats():
  args = cli.build_parser().parse_args(["tour", "--steps", "150.0", "--seeds", "2"])
  assert (args.steps, args.seeds) == (150, 2) and isinstance(args.steps, int)


def test_console_script_is_declared():
  text = (pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text()
  assert 'jaxopt-practices = "jaxopt_practices.cli:main"' in text


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=19), r"steps must be an integer in \[20, "),
    (dict(steps=150.5), r"steps must be an integer number of steps \(an integral float such as 110.0 is fine\)"),
    (dict(steps=150, seeds=0), r"seeds must be an integer in \[1, inf\), got seeds = 0"),
    (dict(steps=150, seed=1.5), r"seed must be"),
])
def test_run_experiments_rejects_bad_arguments_before_training(kwargs, match):
  from jaxopt_practices import tour
  with pytest.raises(ValueError, match=match):
    tour.run_experiments(**kwargs, progress=False)
