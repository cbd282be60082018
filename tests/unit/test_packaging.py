"""What the package carries and declares: the wheel's license files, the provider info, the dependencies, the
Airflow version guard."""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from typing import TYPE_CHECKING

import pytest

import airflow_provider_openrouter
from airflow_provider_openrouter.get_provider_info import get_provider_info
from tests.conftest import ROOT

if TYPE_CHECKING:
    from pathlib import Path

PACKAGE = airflow_provider_openrouter.__name__

# Public modules with no place in Airflow's provider-info schema (it knows hooks, operators, sensors,
# triggers, extra links, plugins and connection types): each is in the API reference instead.
NOT_IN_PROVIDER_INFO = {
    f"{PACKAGE}.get_provider_info",  # the provider info itself
    f"{PACKAGE}.models",
    f"{PACKAGE}.guardrails",  # models too, of the guardrail endpoints
    f"{PACKAGE}.exceptions",
}

# Imported by the package, installed with Airflow itself: the keys page's web stack, the connection form's
# (Airflow 3.1) widgets and the task process's logging (structlog, whose output the plaintext masking hooks).
# A new third-party import outside this set must be declared in pyproject.toml.
PROVIDED_BY_AIRFLOW = {
    "airflow",
    "fastapi",
    "starlette",
    "jinja2",
    "sqlalchemy",
    "wtforms",
    "flask_appbuilder",
    "structlog",
}
# Imported only by the opt-in pytest plugin and the typing of the local OpenRouter, for users' own suites.
TEST_TIME_ONLY = {"pytest", "typing_extensions"}


def public_modules() -> set[str]:
    """Every public module of the package (subpackages' ``__init__`` aside: they hold no classes here)."""
    found = set()
    for module in pkgutil.walk_packages(airflow_provider_openrouter.__path__, f"{PACKAGE}."):
        if not module.ispkg and not any(part.startswith("_") for part in module.name.split(".")):
            found.add(module.name)
    return found


def declared_in_provider_info() -> set[str]:
    info = get_provider_info()
    modules = {
        module
        for kind in ("hooks", "operators", "sensors", "triggers")
        for entry in info[kind]
        for module in entry["python-modules"]
    }
    modules |= {link.rsplit(".", 1)[0] for link in info["extra-links"]}
    modules |= {plugin["plugin-class"].rsplit(".", 1)[0] for plugin in info["plugins"]}
    modules |= {ct["hook-class-name"].rsplit(".", 1)[0] for ct in info["connection-types"]}
    modules |= {entry["handler"].rsplit(".", 1)[0] for entry in info["asset-uris"]}
    return modules


def test_provider_info_lists_every_public_module() -> None:
    testing = {m for m in public_modules() if m.startswith(f"{PACKAGE}.testing")}
    expected = public_modules() - testing - NOT_IN_PROVIDER_INFO
    assert f"{PACKAGE}.operators.sync" in expected  # the walk sees the package's modules at all
    declared = declared_in_provider_info()
    assert expected - declared == set(), "public modules missing from get_provider_info()"
    assert declared - public_modules() == set(), "get_provider_info() names modules that do not exist"


def _third_party_imports() -> set[str]:
    found = set()
    for path in (ROOT / PACKAGE).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found |= {name.split(".")[0] for name in names}
    return found - set(sys.stdlib_module_names) - {PACKAGE, "__future__"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", str(ROOT), "-w", str(out)],
        check=True,
        timeout=600,
    )
    [built] = out.glob("airflow_provider_openrouter-*.whl")
    return built


def _metadata(wheel: Path) -> tuple[list[str], dict[str, list[str]]]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(archive.read(metadata).decode())
    fields: dict[str, list[str]] = {}
    for key, value in message.items():
        fields.setdefault(key, []).append(value)
    return names, fields


def test_wheel_carries_license_and_notice(wheel: Path) -> None:
    names, fields = _metadata(wheel)
    with zipfile.ZipFile(wheel) as archive:
        for name in ("LICENSE", "NOTICE"):
            [member] = [n for n in names if n.endswith(f".dist-info/licenses/{name}")]
            assert archive.read(member).decode() == (ROOT / name).read_text()
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                        Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    assert fields["License-Expression"] == ["Apache-2.0"]
    assert sorted(fields["License-File"]) == ["LICENSE", "NOTICE"]


def test_wheel_declares_every_third_party_import(wheel: Path) -> None:
    _, fields = _metadata(wheel)
    required = {
        requirement.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip()
        for requirement in fields["Requires-Dist"]
        if "extra ==" not in requirement
    }
    undeclared = _third_party_imports() - {name.replace("-", "_") for name in required}
    assert "urllib3" in _third_party_imports()
    assert undeclared - PROVIDED_BY_AIRFLOW - TEST_TIME_ONLY == set()


def test_wheel_classifiers_cover_the_supported_pythons(wheel: Path) -> None:
    _, fields = _metadata(wheel)
    assert fields["Requires-Python"] == [">=3.10"]
    pythons = [
        c.rsplit(" :: ", 1)[1]
        for c in fields["Classifier"]
        if c.startswith("Programming Language :: Python :: 3.")
    ]
    assert pythons == ["3.10", "3.11", "3.12", "3.13"]
    urls = {url.split(",", 1)[0] for url in fields["Project-URL"]}
    assert urls == {"Documentation", "Source", "Changelog", "Issue tracker"}


def _import_with_airflow(version: str) -> subprocess.CompletedProcess[str]:
    # A stand-in `airflow` module already imported, as in any Airflow process: the guard reads its version.
    code = (
        "import sys, types\n"
        "airflow = types.ModuleType('airflow')\n"
        f"airflow.__version__ = {version!r}\n"
        "sys.modules['airflow'] = airflow\n"
        "import airflow_provider_openrouter\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_an_airflow_older_than_3_1_is_refused() -> None:
    proc = _import_with_airflow("3.0.6")
    assert proc.returncode != 0
    assert (
        f"RuntimeError: The package `airflow-provider-openrouter:{airflow_provider_openrouter.__version__}` "
        "needs Apache Airflow 3.1.0+, but Airflow 3.0.6 is installed."
    ) in proc.stderr


@pytest.mark.parametrize("version", ["3.1.0rc1", "3.1.0", "3.3.2", "4.0.0.dev0"])
def test_supported_airflow_versions_import(version: str) -> None:
    proc = _import_with_airflow(version)
    assert proc.returncode == 0, proc.stderr


def test_the_installed_airflow_is_read_without_importing_it() -> None:
    code = (
        "import sys, airflow_provider_openrouter as p\n"
        "print(p._airflow_version(), 'airflow' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    from airflow import __version__

    assert proc.stdout.split() == [__version__, "False"]
