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
from typing import TYPE_CHECKING

from sphinx.util.nodes import make_refnode

if TYPE_CHECKING:
    from docutils.nodes import Element
    from sphinx.addnodes import pending_xref
    from sphinx.application import Sphinx
    from sphinx.environment import BuildEnvironment

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
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
autoclass_content = "class"

# -- nitpicky references ------------------------------------------------------------------------------------
# The build runs offline, so there is no intersphinx: a reference to another project's object (Airflow, the
# standard library, requests, pendulum ...) cannot resolve. Those are the only references ignored; a broken
# reference to this package's own objects still fails the build.
_PACKAGE = "airflow_provider_openrouter"
_EXTERNAL_MODULES = (
    "airflow",
    "aiohttp",
    "requests",
    "urllib3",
    "pendulum",
    "datetime",
    "dt",  # ``import datetime as dt``
    "re",
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
    "urllib",
    "pytest",
    "_pytest",
)
# This package's private modules are not documented; the docstrings that mention them say what they do.
_PRIVATE = rf"{_PACKAGE}(?:\.\w+)*\._\w+(?:\..+)?"
# Airflow names that appear unqualified in signatures (imported only for type checking).
_EXTERNAL_NAMES = (
    "BaseHook",
    "BaseOperator",
    "BaseOperatorLink",
    "BaseSensorOperator",
    "BaseTrigger",
    "Connection",
    "Context",
    "PokeReturnValue",
    "TaskInstanceKey",
    "TriggerEvent",
    "BaseNotifier",
    "Asset",
)
# This package's private classes that appear unqualified in public signatures.
# (The sync's plan types live in its private plan module.)
_PRIVATE_NAMES = ("OpenRouterConnectionConfig", "Prune", "Mode", "Tenant", "Plan")
nitpick_ignore_regex = [
    (r"py:.*", rf"(?:{'|'.join(_EXTERNAL_MODULES)})(?:\..+)?"),
    (r"py:.*", rf"(?:{'|'.join(_EXTERNAL_NAMES)})"),
    (r"py:.*", _PRIVATE),
    (r"py:.*", rf"(?:{'|'.join(_PRIVATE_NAMES)})"),
]


def _public_bases(app: Sphinx, name: str, obj: object, options: object, bases: list[type]) -> None:
    """Show a class's public ancestry: a private base of this package is replaced by its own bases."""
    index = 0
    while index < len(bases):
        base = bases[index]
        if base.__module__.startswith(_PACKAGE) and base.__name__.startswith("_"):
            bases[index : index + 1] = [b for b in base.__bases__ if b is not object or len(bases) == 1]
            continue
        index += 1


def _resolve_unqualified(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Element
) -> Element | None:
    """Resolve ``:class:`NotFoundError``` written inside another module of this package.

    Docstrings name the package's own classes unqualified; when exactly one documented object of the package
    carries that name, link to it (like Sphinx's ``.Name`` search). Ambiguous or unknown names stay unresolved
    and fail the build.
    """
    if node.get("refdomain") != "py":
        return None
    target = str(node.get("reftarget", ""))
    if not target or "." in target:
        return None
    domain = env.get_domain("py")
    matches = {
        fullname: entry
        for fullname, entry in domain.objects.items()
        if fullname.startswith(_PACKAGE + ".") and fullname.endswith("." + target) and not entry.aliased
    }
    if len(matches) != 1:
        return None
    [(fullname, entry)] = matches.items()
    return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, fullname)


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("missing-reference", _resolve_unqualified)


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
