"""Generates the API reference: one page per public module, one entry per name in its ``__all__``.

Each page has the module's docstring, a table of its names with their one-line summaries, then
one ``autofunction`` / ``autoclass`` / ``py:data`` entry per name.

``pages()`` returns ``{relative path: reStructuredText}`` without importing Sphinx, so the test
suite checks the reference names every public name (``tests/test_docs.py``); ``setup`` writes
the pages into ``docs/api/`` when a build starts (they are generated, not committed).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pathlib
import types

PACKAGE = "jaxopt_practices"
# The public modules: the package itself, its public submodules, the tour and the command line.
MODULES = (
    "jaxopt_practices", "schedules", "plateau", "lr_finder", "initializers", "momentum", "adaptive", "clipping",
    "regularization", "groups", "recipe", "monitor", "training", "parallel", "flat", "tour", "cli",
)
API_DIR = pathlib.Path(__file__).resolve().parent.parent / "api"


def full_name(module: str) -> str:
  return module if module == PACKAGE else f"{PACKAGE}.{module}"


def public_names(module: str) -> list[str]:
  """The names of ``module.__all__`` that the reference documents (submodules get their own page)."""
  mod = importlib.import_module(full_name(module))
  return [n for n in mod.__all__ if not isinstance(getattr(mod, n), types.ModuleType)]


def _directive(module: str, name: str) -> str:
  obj = getattr(importlib.import_module(full_name(module)), name)
  target = f"{full_name(module)}.{name}"
  if inspect.isclass(obj):  # a record's fields are documented once, by its docstring's Attributes:
    fields = [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []
    hidden = ", ".join(["count", "index", *getattr(obj, "_fields", ()), *fields])
    return f".. autoclass:: {target}\n   :members:\n   :exclude-members: {hidden}\n"
  if callable(obj) and (inspect.isfunction(obj) or inspect.isbuiltin(obj) or hasattr(obj, "__wrapped__")):
    return f".. autofunction:: {target}\n"
  return f".. py:data:: {target}\n\n   {_describe(obj)}\n"


def _summary(module: str, name: str) -> str:
  """The first line of a callable's docstring (a constant's description otherwise)."""
  obj = getattr(importlib.import_module(full_name(module)), name)
  if not callable(obj):
    return _describe(obj)
  doc = inspect.getdoc(obj) or ""
  return doc.strip().split("\n")[0]


def _describe(obj) -> str:
  """One line for a constant: its value if short, else its type (and a dict's keys)."""
  if isinstance(obj, dict):
    return f"A ``dict`` with the keys {', '.join(f'``{k}``' for k in obj)}."
  text = repr(obj)
  if isinstance(obj, (str, int, float, tuple)) and len(text) <= 120:
    return f"``{text}``"
  return f"A ``{type(obj).__name__}``; see the module's docstring."


def page(module: str) -> str:
  name = full_name(module)
  lines = [f"``{name}``", "=" * (len(name) + 4), "", f".. automodule:: {name}", "   :no-members:", ""]
  names = public_names(module)
  lines += [".. list-table::", "   :widths: 30 70", ""]
  for n in names:
    lines += [f"   * - :py:obj:`~{name}.{n}`", f"     - {_summary(module, n)}"]
  lines.append("")
  lines += [_directive(module, n) for n in names]
  return "\n".join(lines)


def pages() -> dict[str, str]:
  index = ["API reference", "=============", "",
           "One page per public module, generated from its docstrings; each page lists every name of",
           "the module's ``__all__``.", "", ".. toctree::", "   :maxdepth: 1", ""]
  index += [f"   {m}" for m in MODULES]
  out = {"index.rst": "\n".join(index) + "\n"}
  out.update({f"{m}.rst": page(m) for m in MODULES})
  return out


def write(app=None) -> None:
  del app
  API_DIR.mkdir(exist_ok=True)
  for path, text in pages().items():
    target = API_DIR / path
    if not target.exists() or target.read_text() != text:  # unchanged pages keep their mtime
      target.write_text(text)


def setup(app):
  app.connect("builder-inited", write)
  return {"parallel_read_safe": True, "parallel_write_safe": True}
