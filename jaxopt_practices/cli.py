"""Command line: ``jaxopt-practices tour [--out DIR] [--quick] [--steps N] [--seed S]``."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

__all__ = ["DEFAULT_STEPS", "QUICK_STEPS", "build_parser", "main"]

DEFAULT_STEPS = 600
QUICK_STEPS = 150


def _out_dir(value: str) -> pathlib.Path:
  path = pathlib.Path(value).expanduser()
  if path.exists() and not path.is_dir():
    raise argparse.ArgumentTypeError(f"--out {value!r} exists and is not a directory")
  parent = path if path.exists() else next((p for p in path.parents if p.exists()), pathlib.Path("."))
  if not os.access(parent, os.W_OK):
    raise argparse.ArgumentTypeError(f"--out {value!r}: {parent} is not writable")
  return path


def _steps(value: str) -> int:
  try:
    steps = int(value)
  except ValueError:
    raise argparse.ArgumentTypeError(f"--steps must be an integer >= 20, got {value!r}") from None
  if steps < 20:
    raise argparse.ArgumentTypeError(f"--steps must be an integer >= 20, got {steps}")
  return steps


def build_parser() -> argparse.ArgumentParser:
  """The ``jaxopt-practices`` argument parser (one subcommand: ``tour``)."""
  parser = argparse.ArgumentParser(prog="jaxopt-practices",
                                   description="The seven tuning practices of deep-learning optimization in JAX.")
  sub = parser.add_subparsers(dest="command", required=True)
  tour = sub.add_parser("tour", help="train a small Flax MLP on scikit-learn's digits with each practice "
                                     "against a baseline; write report.md and PNG plots")
  tour.add_argument("--out", type=_out_dir, default=pathlib.Path("tour-report"),
                    help="folder for report.md and the plots (default: ./tour-report)")
  tour.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps per run instead of {DEFAULT_STEPS}")
  tour.add_argument("--steps", type=_steps, default=None, help="steps per run (overrides --quick)")
  tour.add_argument("--seed", type=int, default=0, help="data split, init and batch order seed")
  tour.add_argument("--no-progress", action="store_true", help="no progress bars")
  return parser


def main(argv: list[str] | None = None) -> int:
  """Runs the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
  args = build_parser().parse_args(argv)
  if args.command == "tour":
    from jaxopt_practices import tour

    steps = args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS)
    start = time.perf_counter()
    runs, extras = tour.run_experiments(steps, seed=args.seed, progress=not args.no_progress)
    report = tour.write_report(runs, extras, args.out, steps)
    width = max(len(r.name) for r in runs)
    for r in runs:
      print(f"{r.name:<{width}}  loss {r.final_loss:.4f}  test acc {100 * r.test_accuracy:5.1f}%  "
            f"{r.wall_time_s:5.1f}s  {r.reading}")
    print(f"\nwrote {report} and plots in {time.perf_counter() - start:.0f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
