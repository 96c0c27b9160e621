"""The ``jaxopt-practices`` command: ``tour --quick`` end to end, and its argument errors."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from jaxopt_practices import cli


@pytest.mark.slow
def test_tour_quick_writes_report_and_plots(tmp_path, capsys):
  out = tmp_path / "report"
  assert cli.main(["tour", "--quick", "--out", str(out), "--no-progress"]) == 0
  report = (out / "report.md").read_text()
  for name in ["baseline", "1 schedules", "2 lr finder + plateau", "3 initialization", "4 momentum",
               "5 adaptive", "6 clipping", "7 regularization", "full recipe"]:
    assert f"| {name} |" in report, name
  for png in ["loss_curves.png", "lr_curves.png", "lr_range_test.png", "activation_std.png"]:
    data = (out / png).read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5_000, png
  rows = [line for line in report.splitlines() if line.startswith("| ") and "%" in line]
  accuracies = [float(line.split("|")[4].strip().rstrip("%")) for line in rows]
  assert len(accuracies) == 9 and all(a > 50.0 for a in accuracies), accuracies
  assert "wrote" in capsys.readouterr().out


def test_bad_out_is_a_clear_error(tmp_path):
  blocker = tmp_path / "file.txt"
  blocker.write_text("x")
  proc = subprocess.run([sys.executable, "-m", "jaxopt_practices.cli", "tour", "--out", str(blocker)],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert "exists and is not a directory" in proc.stderr


@pytest.mark.parametrize("args,message", [(["tour", "--steps", "5"], "--steps must be an integer >= 20"),
                                          (["tour", "--steps", "many"], "--steps must be an integer >= 20"),
                                          (["tour", "--fast"], "unrecognized arguments: --fast"),
                                          ([], "the following arguments are required")])
def test_bad_options_exit_with_usage(args, message, capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(args)
  assert info.value.code == 2
  assert message in capsys.readouterr().err


def test_console_script_is_declared():
  text = (pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text()
  assert 'jaxopt-practices = "jaxopt_practices.cli:main"' in text
