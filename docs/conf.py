"""Sphinx configuration of the jaxopt_practices documentation site.

Build (warnings are errors):  python -m sphinx -W --keep-going -b html docs docs/_build/html
after ``pip install -e ".[docs]"``. The notebooks are rendered with their stored outputs
(never executed here: the test suite executes them); the API reference is generated from
each public module's ``__all__`` by ``_ext/apigen.py``.
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's package, not an installed copy
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "_ext"))

project = "jaxopt_practices"
author = "the jaxopt_practices authors"
copyright = "the jaxopt_practices authors, Apache-2.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
    "apigen",
]

# Docstrings are Google style (Args:, Returns:, Raises:, Example:).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# The notebooks are shown as stored; the test suite is what executes them.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "_ext", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]

html_theme = "sphinx_book_theme"
html_title = "jaxopt_practices"
html_theme_options = {"show_toc_level": 2}
