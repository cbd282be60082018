"""The README's DAG example parses and builds the DAG it promises (its code is not run anywhere else)."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def _dag_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    examples = [block for block in blocks if "@dag" in block]
    assert len(examples) == 1, "the README should hold exactly one DAG example"
    return examples[0]


def test_readme_dag_example_builds_its_dag() -> None:
    namespace: dict[str, object] = {}
    exec(compile(_dag_example(), "README.md", "exec"), namespace)

    from airflow.sdk import DAG

    dags = [value for value in namespace.values() if isinstance(value, DAG)]
    if not dags:  # the @dag call's result is not bound to a name in the example
        built = namespace["tenant_keys"]
        assert callable(built)
        dags = [built()]
    dag = dags[0]
    assert dag.dag_id == "tenant_keys"
    assert set(dag.task_dict) == {"tenants", "create", "at_80_percent", "disable"}
    assert dag.task_dict["at_80_percent"].upstream_task_ids == set()
    assert dag.task_dict["disable"].upstream_task_ids == {"at_80_percent"}
