"""Sphinx configuration of the API reference (built from the docstrings; see docs/api.md).

    python -m sphinx -W -b html docs/api docs/api/_build/html

The Detectron2 plugin's page is built only where detectron2 imports (``make setup`` installs it).
"""
import importlib.util
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "plugin"))  # the checkout's adarand, installed or not

import adarand  # noqa: E402

project = "adarand"
release = version = adarand.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = [("Shape", "params_style"), ("Equation", "notes_style")]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}  # constants too
exclude_patterns = ["_build"]
if importlib.util.find_spec("detectron2") is None:
    exclude_patterns.append("detection.rst")
suppress_warnings = ["toc.excluded"]
html_theme = "alabaster"


def _no_builtin_docstring(app, what, name, obj, options, lines):
    """A constant (``IGNORE_INDEX = -100``) is shown with its value, not with ``int``'s docstring."""
    if what == "data" and lines and "\n".join(lines).strip() == (type(obj).__doc__ or "").strip():
        lines.clear()


def setup(app):
    app.connect("autodoc-process-docstring", _no_builtin_docstring)
