"""docs/architecture.rst names every module of the package, by its path relative to the package directory
(``operators/sync.py``, ``testing/_api.py``, ``__init__.py`` for the package itself), so that a new module
cannot land without its place on the page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "airflow_provider_openrouter"
PAGE = ROOT / "docs" / "architecture.rst"


def package_modules() -> list[str]:
    """Every module of the package, as its path relative to the package directory."""
    return sorted(path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py"))


def _mention(module: str) -> re.Pattern[str]:
    # The whole relative path: ``hooks/__init__.py`` does not name the package's ``__init__.py``, nor
    # ``plugins/_keys_app.py`` a ``_keys_app.py`` of the package's top level.
    return re.compile(rf"(?<![\w/.]){re.escape(module)}(?!\w)")


def unnamed(modules: list[str], text: str) -> list[str]:
    """The modules that ``text`` does not name."""
    return [module for module in modules if not _mention(module).search(text)]


def test_the_package_has_modules_to_check() -> None:
    modules = package_modules()
    assert "__init__.py" in modules
    assert "operators/sync.py" in modules
    assert "testing/clock_skew_site/sitecustomize.py" in modules


def test_every_module_is_named_on_the_architecture_page() -> None:
    missing = unnamed(package_modules(), PAGE.read_text(encoding="utf-8"))
    assert not missing, (
        "docs/architecture.rst does not name these modules (by their path relative to "
        f"airflow_provider_openrouter/); give each its place on the page: {', '.join(missing)}"
    )


@pytest.mark.parametrize("module", package_modules())
def test_a_page_without_the_module_fails(module: str) -> None:
    text = _mention(module).sub("", PAGE.read_text(encoding="utf-8"))
    assert module in unnamed(package_modules(), text)


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        pytest.param("``hooks/__init__.py``", "__init__.py", id="a-subpackage-init-is-not-the-package-init"),
        pytest.param("``plugins/_keys_app.py``", "_keys_app.py", id="a-nested-path-is-not-a-top-level-one"),
        pytest.param("``operators/sync.pyc``", "operators/sync.py", id="a-longer-name-is-not-the-module"),
    ],
)
def test_only_the_whole_path_names_a_module(text: str, missing: str) -> None:
    assert unnamed([missing], text) == [missing]


def test_a_named_module_passes() -> None:
    assert unnamed(["__init__.py", "operators/sync.py"], "``__init__.py`` and ``operators/sync.py``") == []
