"""Command line: ``jaxopt-practices tour [--out DIR] [--quick] [--steps N] [--seeds K] [--seed S]``."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
from collections.abc import Callable

from jaxopt_practices import _validate

__all__ = ["DEFAULT_STEPS", "QUICK_STEPS", "DEFAULT_SEEDS", "build_parser", "main"]

DEFAULT_STEPS = 600
QUICK_STEPS = 150
DEFAULT_SEEDS = 3


def _out_dir(value: str) -> pathlib.Path:
  path = pathlib.Path(value).expanduser()
  if path.exists() and not path.is_dir():
    raise argparse.ArgumentTypeError(f"--out {value!r} exists and is not a directory")
  parent = path if path.exists() else next((p for p in path.parents if p.exists()), pathlib.Path("."))
  if not os.access(parent, os.W_OK):
    raise argparse.ArgumentTypeError(f"--out {value!r}: {parent} is not writable")
  return path


def _at_least(flag: str, low: int) -> Callable[[str], int]:
  """An argparse ``type``: an integer ``>= low``, else a usage error naming ``flag``.

  Counts go through ``_validate.check_steps``, as everywhere in the package: an integral
  float such as ``150.0`` is accepted, ``150.5`` is not.
  """
  def parse(value: str) -> int:
    try:
      return _validate.check_steps(flag, float(value), low=low)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{flag} must be an integer >= {low}, got {value!r}") from None
  return parse


def build_parser() -> argparse.ArgumentParser:
  """The ``jaxopt-practices`` argument parser (one subcommand: ``tour``).

  Returns:
    An ``argparse.ArgumentParser``; a bad option exits with a usage error naming it.

  Example:
    >>> from jaxopt_practices import cli
    >>> args = cli.build_parser().parse_args(["tour", "--quick", "--out", "report"])
    >>> args.command, args.quick, str(args.out), args.steps
    ('tour', True, 'report', None)
  """
  parser = argparse.ArgumentParser(prog="jaxopt-practices",
                                   description="The seven tuning practices of deep-learning optimization in JAX.")
  sub = parser.add_subparsers(dest="command", required=True)
  tour = sub.add_parser("tour", help="show each practice on scikit-learn's digits, in the regime where it "
                                     "matters, against a baseline that differs only by it; write report.md "
                                     "and PNG plots")
  tour.add_argument("--out", type=_out_dir, default=pathlib.Path("tour-report"),
                    help="folder for report.md and the plots (default: ./tour-report)")
  tour.add_argument("--quick", action="store_true",
                    help=f"{QUICK_STEPS} steps per run and 1 seed instead of {DEFAULT_STEPS} and {DEFAULT_SEEDS}")
  tour.add_argument("--steps", type=_at_least("--steps", 20), default=None, help="steps per run (overrides --quick)")
  tour.add_argument("--seeds", type=_at_least("--seeds", 1), default=None,
                    help=f"seeds per run, trained together (overrides --quick; default {DEFAULT_SEEDS})")
  tour.add_argument("--seed", type=int, default=0,
                    help="data split seed and first init / batch-order seed (then seed + 1, ...)")
  tour.add_argument("--no-progress", action="store_true", help="no progress bars")
  return parser


def main(argv: list[str] | None = None) -> int:
  """Runs the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

  ``tour`` trains the tour's scenarios (:func:`jaxopt_practices.tour.run_experiments`),
  writes ``report.md`` and the plots into ``--out`` and prints one reading per scenario.

  Args:
    argv: the arguments after the program name.

  Returns:
    0 on success (bad options exit with status 2 through ``argparse``).

  Raises:
    SystemExit: on a bad option or ``--help``, with argparse's usage message.

  Example:
    >>> from jaxopt_practices import cli
    >>> cli.main(["tour", "--steps", "5"])
    Traceback (most recent call last):
    SystemExit: 2
  """
  args = build_parser().parse_args(argv)
  if args.command == "tour":
    from jaxopt_practices import tour

    steps = args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS)
    seeds = args.seeds or (1 if args.quick else DEFAULT_SEEDS)
    start = time.perf_counter()
    scenarios, extras = tour.run_experiments(steps, seed=args.seed, seeds=seeds, progress=not args.no_progress)
    train_time = time.perf_counter() - start
    report = tour.write_report(scenarios, extras, args.out, train_time)
    width = max(len(s.name) for s in scenarios)
    for s in scenarios:
      print(f"{s.name:<{width}}  {s.baseline.name} -> {s.practice.name}: {s.reading}")
    print(f"\n{len(scenarios)} scenarios x 2 runs x {seeds} seed(s), {steps} steps: trained in {train_time:.0f} s; "
          f"wrote {report} and plots in {time.perf_counter() - start:.0f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
