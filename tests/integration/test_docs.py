"""The docs stay true to the code.

- Every ``literalinclude`` in ``docs/`` points at a file that exists and at markers that are there, in order.
- Each operator's and the sensor's docstring points at its how-to, and the how-to defines that label.
- Every module the provider declares has an API reference page, and every public name of the package is in
  the API reference (what its directives describe, with autodoc's rules for ``automodule``).
- The changelog has dated versions and the official providers' sections.
- Every example DAG is on the examples page.
- The examples on the testing page (between the ``[START docs_…]`` / ``[END docs_…]`` markers below) run here,
  against a local OpenRouter, like any other test.

The Sphinx build itself (warnings as errors) is ``make docs``, part of ``make test``.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import pkgutil
import re
import textwrap
from pathlib import Path

import pytest

import airflow_provider_openrouter
from airflow_provider_openrouter.exceptions import NotFoundError
from airflow_provider_openrouter.get_provider_info import CONN_FIELDS, get_provider_info
from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook
from airflow_provider_openrouter.operators.api_key import (
    CreateApiKeyOperator,
    DeleteApiKeyOperator,
    UpdateApiKeyOperator,
)
from airflow_provider_openrouter.operators.fleet_alerts import ApiKeyAlertsOperator
from airflow_provider_openrouter.operators.retire import RetireApiKeysOperator
from airflow_provider_openrouter.sensors.key_usage import OpenRouterKeyUsageSensor
from airflow_provider_openrouter.testing import DropAfterCommit, LocalOpenRouter, Status
from tests.example_dag_runs import discovered_dag_ids

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RST_FILES = sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts)

_DIRECTIVE = re.compile(r"^(?P<indent> *)\.\. (?P<name>[\w:-]+)::[ \t]*(?P<arg>.*)$")
_OPTION = re.compile(r"^ +:(?P<name>[\w-]+):[ \t]*(?P<value>.*)$")
_LABEL = re.compile(r"^\.\. _(?P<label>[^:]+:[^:]+|[^:]+):\s*$", re.MULTILINE)


def _literalincludes() -> list[tuple[str, Path, dict[str, str]]]:
    found = []
    for rst in RST_FILES:
        lines = rst.read_text().splitlines()
        for number, line in enumerate(lines):
            match = _DIRECTIVE.match(line)
            if not match or match["name"] != "literalinclude":
                continue
            options = {}
            for following in lines[number + 1 :]:
                option = _OPTION.match(following)
                if not option:
                    break
                options[option["name"]] = option["value"].strip()
            where = f"{rst.relative_to(ROOT)}:{number + 1}"
            found.append((where, (rst.parent / match["arg"].strip()).resolve(), options))
    return found


LITERALINCLUDES = _literalincludes()


def _python_blocks() -> list[tuple[str, str]]:
    """``(where, code)`` of every ``.. code-block:: python`` in the docs."""
    blocks = []
    for rst in RST_FILES:
        lines = rst.read_text().splitlines()
        for number, line in enumerate(lines):
            match = _DIRECTIVE.match(line)
            if not match or match["name"] != "code-block" or match["arg"].strip() != "python":
                continue
            body: list[str] = []
            for following in lines[number + 1 :]:
                if following.strip() and not following.startswith(match["indent"] + " "):
                    break
                body.append(following)
            blocks.append((f"{rst.relative_to(ROOT)}:{number + 1}", textwrap.dedent("\n".join(body))))
    return blocks


PYTHON_BLOCKS = _python_blocks()


def _labels() -> set[str]:
    return {m["label"].lower() for rst in RST_FILES for m in _LABEL.finditer(rst.read_text())}


def test_docs_include_code() -> None:
    assert LITERALINCLUDES, "no literalinclude found: the how-tos should show code from the example DAGs"


@pytest.mark.parametrize(
    ("where", "path", "options"), LITERALINCLUDES, ids=[f"{w}" for w, _, _ in LITERALINCLUDES]
)
def test_literalinclude_markers_exist(where: str, path: Path, options: dict[str, str]) -> None:
    assert path.is_file(), f"{where}: {path.relative_to(ROOT)} does not exist"
    text = path.read_text()
    start, end = options.get("start-after"), options.get("end-before")
    assert start, f"{where}: include a marked region (:start-after:), not a whole file"
    assert end, f"{where}: include a marked region (:end-before:), not a whole file"
    assert text.count(start) == 1, f"{where}: {start!r} occurs {text.count(start)} times in {path.name}"
    assert text.count(end) == 1, f"{where}: {end!r} occurs {text.count(end)} times in {path.name}"
    region = text[text.index(start) + len(start) : text.index(end)]
    assert region.strip(), f"{where}: {start!r} comes after {end!r}, or marks nothing, in {path.name}"


@pytest.mark.parametrize(("where", "code"), PYTHON_BLOCKS, ids=[w for w, _ in PYTHON_BLOCKS])
def test_python_blocks_compile(where: str, code: str) -> None:
    compile(code, where, "exec")


def test_quick_start_builds_its_dag() -> None:
    [(where, code)] = [(w, c) for w, c in PYTHON_BLOCKS if w.startswith("docs/index.rst")]
    namespace: dict[str, object] = {}
    exec(compile(code, where, "exec"), namespace)
    dag = namespace["provision_one_tenant"]()  # type: ignore[operator]
    assert [task.task_id for task in dag.tasks] == ["create_key"]


HOWTOS = {
    CreateApiKeyOperator: "howto/operator:CreateApiKeyOperator",
    UpdateApiKeyOperator: "howto/operator:UpdateApiKeyOperator",
    DeleteApiKeyOperator: "howto/operator:DeleteApiKeyOperator",
    OpenRouterKeyUsageSensor: "howto/sensor:OpenRouterKeyUsageSensor",
    ApiKeyAlertsOperator: "howto/operator:ApiKeyAlertsOperator",
    RetireApiKeysOperator: "howto/operator:RetireApiKeysOperator",
}


@pytest.mark.parametrize(("cls", "label"), HOWTOS.items(), ids=[c.__name__ for c in HOWTOS])
def test_docstring_points_to_its_howto(cls: type, label: str) -> None:
    assert f":ref:`{label}`" in (cls.__doc__ or ""), f"{cls.__name__}'s docstring should link {label}"
    assert label.lower() in _labels(), f"no page in docs/ defines the label {label}"


def test_connection_page_label() -> None:
    assert "howto/connection:openrouter" in _labels()


@pytest.mark.parametrize("field", sorted(CONN_FIELDS))
def test_connection_page_lists_every_extra(field: str) -> None:
    page = (DOCS / "connections.rst").read_text()
    start = f"   * - ``{field}``"
    assert start in page, f"connections.rst has no row for the extra {field!r}"
    row = page[page.index(start) :].split("   * - ``", 2)[1]
    default = CONN_FIELDS[field]["schema"].get("default")
    if default is not None:
        assert f"``{default}``" in row, f"connections.rst: {field}'s default should read {default}"


def test_every_declared_module_has_an_api_page() -> None:
    info = get_provider_info()
    modules = {
        module
        for kind in ("hooks", "operators", "sensors", "triggers")
        for entry in info[kind]
        for module in entry["python-modules"]
    }
    modules |= {link.rsplit(".", 1)[0] for link in info["extra-links"]}
    modules |= {
        "airflow_provider_openrouter.models",
        "airflow_provider_openrouter.exceptions",
        "airflow_provider_openrouter.testing",
    }
    documented = set(
        re.findall(r"^\.\. automodule:: (\S+)", "\n".join(p.read_text() for p in RST_FILES), re.MULTILINE)
    )
    assert modules <= documented, f"modules without an API page: {sorted(modules - documented)}"


# Public modules that are not API: Airflow's entry point for the provider info, and the plugin Airflow loads
# (the page it adds is described on docs/keys_page.rst).
NOT_API = {"airflow_provider_openrouter.get_provider_info", "airflow_provider_openrouter.plugins.keys_page"}
TESTING = "airflow_provider_openrouter.testing"


def public_names() -> dict[str, object]:
    """``{"module.name": object}`` for every public name of the package.

    A module's public names are its ``__all__``; without one, the classes and functions it defines whose names
    do not start with an underscore. The local OpenRouter's package declares its API in its own ``__all__``
    and the pytest plugin: its other modules are what that API is built from.
    """
    found: dict[str, object] = {}
    for info in pkgutil.walk_packages(airflow_provider_openrouter.__path__, "airflow_provider_openrouter."):
        name = info.name
        if any(part.startswith("_") for part in name.split(".")) or name in NOT_API:
            continue
        if name.startswith(TESTING + ".") and name != f"{TESTING}.pytest_plugin":
            continue
        module = importlib.import_module(name)
        names = getattr(module, "__all__", None)
        if names is None:
            names = [
                attr
                for attr, value in vars(module).items()
                if not attr.startswith("_")
                and (inspect.isclass(value) or inspect.isfunction(value))
                and value.__module__ == name
            ]
        found.update({f"{name}.{attr}": getattr(module, attr) for attr in names})
    return found


def _documented_by_autodoc(module_name: str, options: dict[str, str]) -> set[str]:
    """What ``.. automodule::`` documents with this project's autodoc settings (``members`` by default, no
    ``undoc-members``): the module's ``__all__`` (or the classes and functions it defines) that carry a
    docstring, and data with a ``#:`` comment in the module's source; ``:members:`` and ``:exclude-members:``
    as given. Worked out here rather than by Sphinx, which only the docs build's environment has."""
    module = importlib.import_module(module_name)
    listed = [name.strip() for name in options.get("members", "").split(",") if name.strip()]
    if not listed:
        listed = list(getattr(module, "__all__", None) or [])
    if not listed:
        listed = [
            name
            for name, value in vars(module).items()
            if (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__ == module_name
        ]
    excluded = {name.strip() for name in options.get("exclude-members", "").split(",")}
    source = inspect.getsource(module)
    found = set()
    for name in listed:
        if name.startswith("_") or name in excluded:
            continue
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            documented = bool(inspect.getdoc(value))
        else:
            documented = (
                re.search(rf"^#:.*\n(?:#:.*\n)*{re.escape(name)}\b", source, re.MULTILINE) is not None
            )
        if documented:
            found.add(f"{module_name}.{name}")
    return found


def _documented() -> set[str]:
    """Every Python object the API reference (docs/api/) describes, by full name."""
    found: set[str] = set()
    for rst in sorted((DOCS / "api").glob("*.rst")):
        lines = rst.read_text().splitlines()
        for number, line in enumerate(lines):
            match = _DIRECTIVE.match(line)
            if not match or not match["name"].startswith(("py:", "auto")):
                continue
            options = {}
            for following in lines[number + 1 :]:
                option = _OPTION.match(following)
                if not option:
                    break
                options[option["name"]] = option["value"].strip()
            target = match["arg"].strip()
            if match["name"] == "automodule":
                found |= _documented_by_autodoc(target, options)
            elif match["name"].startswith("py:") and "module" in options:
                found.add(f"{options['module']}.{target.split('(')[0].strip()}")
            else:
                found.add(target.split("(")[0].strip())
    return found


def test_every_public_name_is_in_the_api_reference() -> None:
    documented = _documented()
    names = public_names()
    assert "airflow_provider_openrouter.operators.sync.SyncApiKeysOperator" in names
    missing = []
    for full_name, value in names.items():
        # A name re-exported from where it is defined is documented under either.
        canonical = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"
        if full_name not in documented and canonical not in documented:
            missing.append(full_name)
    assert missing == [], f"public names missing from the API reference (docs/api/): {missing}"


def test_every_example_dag_is_on_the_examples_page() -> None:
    page = (DOCS / "examples.rst").read_text()
    dag_ids = discovered_dag_ids()
    assert "example_openrouter_sync_tenants" in dag_ids
    missing = sorted(dag_id for dag_id in dag_ids if f"``{dag_id}``" not in page)
    assert missing == [], f"example DAGs missing from docs/examples.rst: {missing}"


CHANGELOG_SECTIONS = {"Breaking changes", "Features", "Bug Fixes", "Misc", "Doc-only"}


def test_changelog_has_dated_versions_and_the_providers_sections() -> None:
    lines = (DOCS / "changelog.rst").read_text().splitlines()
    headings = [
        (title, underline[0])
        for title, underline in itertools.pairwise(lines)
        if title.strip() and underline and len(set(underline)) == 1 and len(underline) == len(title)
    ]
    versions = [title for title, mark in headings if mark == "."]
    sections = {title for title, mark in headings if mark == "~"}
    assert versions[0] == "Unreleased" or re.fullmatch(r"\d+\.\d+\.\d+ \(\d{4}-\d{2}-\d{2}\)", versions[0])
    for version in versions[1:]:
        assert re.fullmatch(r"\d+\.\d+\.\d+ \(\d{4}-\d{2}-\d{2}\)", version), version
    assert any(v.startswith(f"{airflow_provider_openrouter.__version__} (") for v in versions)
    assert sections
    assert sections <= CHANGELOG_SECTIONS, sections - CHANGELOG_SECTIONS


# -- examples shown on docs/testing.rst --------------------------------------------------------------------


# [START docs_hook_usage]
def test_hook_usage(openrouter_conn_env: LocalOpenRouter) -> None:
    hook = OpenRouterHook()  # openrouter_conn_id="openrouter_default"

    created = hook.create_key("tenant-acme", limit=10.0, limit_reset="monthly")
    # created.plaintext is the key itself, this once; created.api_key is its metadata.
    assert created.api_key.limit == 10.0

    # Pages of 100 keys are fetched as the loop goes.
    near_limit = [
        key.name for key in hook.list_keys() if key.limit is not None and key.usage_monthly >= 0.8 * key.limit
    ]
    assert near_limit == []

    updated = hook.update_key(created.hash, limit=None)  # sends {"limit": null} and nothing else
    assert updated.limit is None
    assert updated.limit_reset == "monthly"

    with pytest.raises(NotFoundError) as err:
        hook.get_key("0" * 64)
    assert err.value.status == 404

    assert hook.delete_key(created.hash) is True
    assert hook.delete_key(created.hash, missing_ok=True) is False  # already gone


# [END docs_hook_usage]


# [START docs_testing_create_key]
def test_provisioning_delivers_the_key(openrouter_conn_env: LocalOpenRouter) -> None:
    fake = openrouter_conn_env  # a local OpenRouter; AIRFLOW_CONN_OPENROUTER_DEFAULT points at it
    vault: dict[str, str] = {}

    create = CreateApiKeyOperator(
        task_id="create_key",
        name="tenant-acme",
        limit=5.0,
        limit_reset="monthly",
        deliver_to_callable=lambda key, context: vault.update({key.name: key.plaintext}),
    )
    result = create.execute(context={})

    assert result["action"] == "created"
    assert vault["tenant-acme"] in fake.issued_plaintexts  # the plaintext reached the store...
    assert vault["tenant-acme"] not in str(result)  # ...and only the store
    assert fake.get_key_state(result["hash"])["limit"] == 5.0


# [END docs_testing_create_key]


# [START docs_testing_faults]
def test_lost_answer_leaves_exactly_one_key(openrouter_conn_env: LocalOpenRouter) -> None:
    fake = openrouter_conn_env
    # The fake creates the key, then drops the connection without answering: the plaintext is lost.
    fake.inject(DropAfterCommit(), method="POST", path="/keys")
    # And the operator's first look for keys of that name is rate limited (the hook waits and retries).
    fake.inject(Status(429, retry_after=0), method="GET", path="/keys")

    create = CreateApiKeyOperator(
        task_id="create_key", name="tenant-acme", deliver_to_callable=lambda key, context: None
    )
    result = create.execute(context={})

    names = [key["name"] for key in fake.keys(include_management=False)]
    assert names == ["tenant-acme"]  # the orphan was deleted
    assert len(result["deleted_orphan_key_hashes"]) == 1
    assert [r.status for r in fake.requests if r.method == "POST"] == [None, 201]  # None: dropped


# [END docs_testing_faults]


# [START docs_testing_usage]
def test_sensor_sees_usage_and_resets(openrouter_conn_env: LocalOpenRouter) -> None:
    fake = openrouter_conn_env
    key = fake.add_key("tenant-acme", limit=5.0, limit_reset="daily")  # inserted directly, no HTTP
    sensor = OpenRouterKeyUsageSensor(
        task_id="watch", key_name="tenant-acme", limit_fraction_at_least=0.8, deferrable=False
    )

    fake.add_usage(key.hash, 3.0)  # 60 % of the limit
    assert not sensor.poke(context={}).is_done

    fake.add_usage(key.hash, 1.5)  # 90 %
    result = sensor.poke(context={})
    assert result.is_done
    assert result.xcom_value["fraction_of_limit"] == pytest.approx(0.9)

    fake.advance_clock(24 * 3600)  # the next UTC day: usage_daily starts again from 0
    assert not sensor.poke(context={}).is_done


# [END docs_testing_usage]
