"""Sphinx configuration for the airflow-provider-openrouter documentation.

Build: ``sphinx-build -W --keep-going -n -q -b html docs docs/_build/html`` (warnings are errors, nitpicky).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# autodoc imports the package, which imports Airflow, which reads its configuration and creates AIRFLOW_HOME
# on first import: point it at a throwaway directory so a docs build never writes to ~/airflow.
_airflow_home = tempfile.mkdtemp(prefix="openrouter-docs-airflow-home-")
atexit.register(shutil.rmtree, _airflow_home, ignore_errors=True)
os.environ["AIRFLOW_HOME"] = _airflow_home
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
# A connection exported in the builder's shell must not leak into anything rendered at build time.
os.environ.pop("AIRFLOW_CONN_OPENROUTER_DEFAULT", None)

# Build from the checkout even when the package is not installed in the environment running Sphinx.
sys.path.insert(0, str(ROOT))

from airflow_provider_openrouter import __version__  # noqa: E402

project = "airflow-provider-openrouter"
author = "airflow-provider-openrouter contributors"
copyright = "airflow-provider-openrouter contributors"
version = __version__
release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]
default_role = "py:obj"
primary_domain = "py"

# -- autodoc -------------------------------------------------------------------------------------------------
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_class_signature = "separated"
autodoc_preserve_defaults = True
autoclass_content = "class"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# -- nitpicky references -------------------------------------------------------------------------------------
# The build runs offline, so there is no intersphinx: a reference to another project's object (Airflow, the
# standard library, requests, pendulum ...) cannot resolve. Those are the only references ignored; a broken
# reference to this package's own objects still fails the build.
_EXTERNAL = (
    "airflow",
    "aiohttp",
    "requests",
    "urllib3",
    "pendulum",
    "datetime",
    "collections",
    "typing",
    "typing_extensions",
    "types",
    "enum",
    "pathlib",
    "contextlib",
    "logging",
    "asyncio",
    "http",
    "socketserver",
    "threading",
    "json",
    "pytest",
    "_pytest",
)
nitpick_ignore_regex = [
    (r"py:.*", rf"(?:{'|'.join(_EXTERNAL)})(?:\..+)?"),
]

# -- HTML ----------------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"airflow-provider-openrouter {release}"
html_short_title = "airflow-provider-openrouter"
html_static_path: list[str] = []
html_show_sourcelink = False
html_theme_options = {
    "source_repository": "https://github.com/airflow-provider-openrouter/airflow-provider-openrouter/",
    "source_branch": "main",
    "source_directory": "docs/",
}
