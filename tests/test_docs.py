"""The documentation site's API reference names every public name of every public module.

The pages are generated from each module's ``__all__`` by ``docs/_ext/apigen.py`` when Sphinx
starts; this checks the generator (without Sphinx) so that a module or a name cannot be left
out of the reference. The build itself (``python -m sphinx -W ...``) runs in CI.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import importlib.util
import inspect
import pathlib
import pkgutil
import re
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
import apigen  # noqa: E402  (docs/_ext is not a package)

PACKAGE_DIRS = importlib.util.find_spec("jaxopt_practices").submodule_search_locations
PUBLIC_MODULES = sorted(m.name for m in pkgutil.iter_modules(PACKAGE_DIRS) if not m.name.startswith("_"))


def test_every_public_module_has_a_page():
  assert sorted(set(apigen.MODULES) - {"jaxopt_practices"}) == PUBLIC_MODULES
  assert set(apigen.pages()) == {"index.rst"} | {f"{m}.rst" for m in apigen.MODULES}


@pytest.mark.parametrize("module", apigen.MODULES)
def test_every_name_of_all_is_documented(module):
  mod = importlib.import_module(apigen.full_name(module))
  page = apigen.pages()[f"{module}.rst"]
  documented = set(re.findall(r"^\.\. (?:autofunction|autoclass|py:data):: (\S+)$", page, flags=re.M))
  submodules = {n for n in mod.__all__ if n in PUBLIC_MODULES}
  assert documented == {f"{mod.__name__}.{n}" for n in mod.__all__ if n not in submodules}
  assert f".. automodule:: {mod.__name__}" in page


def test_the_porting_page_and_the_tour_report_are_in_the_site():
  index = (DOCS / "index.md").read_text()
  assert "porting" in index and "tour/index" in index and "api/index" in index
  report = DOCS / "tour" / "report"
  assert (report / "report.md").read_text().startswith("# jaxopt-practices tour")
  for png in ("loss_curves.png", "lr_curves.png", "lr_range_test.png", "activation_std.png"):
    assert (report / png).stat().st_size > 0
    assert f"report/{png}" in (DOCS / "tour" / "index.md").read_text()
  assert "notebooks/10_porting_from_pytorch" in (DOCS / "porting.md").read_text()


# Modules whose docstrings are complete (issue #20): every public module.
COMPLETE = ("jaxopt_practices", "schedules", "plateau", "lr_finder", "initializers", "momentum", "adaptive",
            "clipping", "regularization", "groups", "recipe", "training", "parallel", "flat", "tour", "cli",
            "monitor")
_RAISES = re.compile(r"\braise ValueError|\b_?check_\w*\(")


def _section(doc: str, title: str) -> str:
  """The text of a Google-style section (``Args:``, ``Attributes:``): its indented lines."""
  m = re.search(rf"^( *){title}:\n((?:\1 +\S.*\n|\s*\n)*)", doc + "\n", flags=re.M)
  return m.group(2) if m else ""


def _record_fields(obj) -> list[str]:
  """The fields of a NamedTuple or a dataclass (the record types: states, reports, configs)."""
  if dataclasses.is_dataclass(obj):
    return [f.name for f in dataclasses.fields(obj)]
  return list(getattr(obj, "_fields", ()))


def _sections_missing(obj) -> list[str]:
  """What the docstring of a public function or class lacks.

  The rule (CONTRIBUTING's "Docstrings"): a function has a one-line summary, ``Args:`` naming
  every parameter, ``Returns:`` unless it returns ``None``, ``Raises:`` where its source raises
  ``ValueError`` or calls a ``check_*`` validator, and an ``Example:`` doctest. A record type (a
  NamedTuple state, a result, a dataclass) has a summary and ``Attributes:`` naming every field;
  its example is the one of the function that makes it. An exception or warning class has a
  summary (its example is the function that raises it); another class has a summary and an example.
  """
  doc = inspect.getdoc(obj) or ""
  missing = [] if doc.strip() else ["summary"]
  if inspect.isclass(obj) and _record_fields(obj):
    listed = _section(doc, "Attributes")
    return missing + [f"Attributes {f}" for f in _record_fields(obj) if not re.search(rf"\b{f}\b", listed)]
  if inspect.isclass(obj):
    return missing + ([] if ">>>" in doc or issubclass(obj, BaseException) else ["Example"])
  listed = _section(doc, "Args")
  params = [p for p in inspect.signature(obj).parameters if p not in ("self", "cls")]
  missing += [f"Args {p}" for p in params if not re.search(rf"\b{p}\b", listed)]
  if inspect.signature(obj).return_annotation not in (None, "None"):
    missing += [] if "Returns:" in doc else ["Returns"]
  if _RAISES.search(inspect.getsource(obj)):
    missing += [] if "Raises:" in doc else ["Raises"]
  return missing + ([] if ">>>" in doc else ["Example"])


def _documented(mod) -> dict[str, object]:
  """The functions and classes of ``mod.__all__`` (not the constants and type aliases)."""
  return {n: getattr(mod, n) for n in mod.__all__ if inspect.isfunction(getattr(mod, n)) or
          inspect.isclass(getattr(mod, n))}


@pytest.mark.parametrize("module", COMPLETE)
def test_public_callables_have_summary_args_returns_raises_and_example(module):
  mod = importlib.import_module(apigen.full_name(module))
  gaps = {n: _sections_missing(obj) for n, obj in _documented(mod).items()}
  assert not {n: m for n, m in gaps.items() if m}


def test_the_docstring_check_can_fail():
  def undocumented(x: int) -> int:
    if x < 0:
      raise ValueError("x")
    return x

  assert _sections_missing(undocumented) == ["summary", "Args x", "Returns", "Raises", "Example"]
  assert _sections_missing(collections.namedtuple("State", "count mu")) == ["Attributes count", "Attributes mu"]
