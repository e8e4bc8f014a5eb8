"""Sphinx configuration for the sparse_rec documentation.

Build with ``sphinx-build -W -b html . _build/html`` from this folder.
"""

import os
import sys

# Document the package from this checkout, installed or not.
sys.path.insert(0, os.path.abspath(".."))

import sparse_rec  # noqa: E402

project = "sparse_rec"
author = "sparse_rec developers"
copyright = "sparse_rec developers"
release = sparse_rec.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",  # renders benchmarks.md, written by the benchmark scripts
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# No intersphinx: the build must work without network access.
autodoc_default_options = {"member-order": "bysource"}
autosummary_generate = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

html_theme = "alabaster"
html_theme_options = {
    "description": "Truly sparse recommenders trained by Dynamic Sparse Learning",
    "fixed_sidebar": True,
}
html_static_path = []


def _drop_missing_benchmarks(app, docname, source):
    # docs/benchmarks.md is written by the scripts under benchmarks/; until
    # they have run, leave it out of the toctree instead of failing under -W.
    if docname == "index" and not os.path.exists(os.path.join(app.srcdir, "benchmarks.md")):
        source[0] = source[0].replace("\n   benchmarks\n", "\n").replace(
            ":doc:`benchmarks`", "``benchmarks.md``"
        )


def setup(app):
    app.connect("source-read", _drop_missing_benchmarks)
