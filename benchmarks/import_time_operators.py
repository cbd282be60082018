"""What importing the key operators costs a DAG file, on top of ``import airflow.sdk``.

Two measurements, each in fresh interpreters (nothing cached in ``sys.modules``), alternating:

* inside one interpreter: the time ``import airflow_provider_openrouter.operators.api_key`` takes right after
  ``import airflow.sdk``;
* whole processes: ``python -c "import airflow.sdk"`` against the same plus the operators module, wall
  clock, start-up included.

It also says whether the import pulled in ``requests``, ``aiohttp`` or the local OpenRouter: it must not.

Installed packages come with their bytecode compiled (pip does it), so the figure that counts is the one with
bytecode cached: the script keeps it in a private ``PYTHONPYCACHEPREFIX`` even where the environment sets
``PYTHONDONTWRITEBYTECODE``. What the import costs when every module is compiled from source is shown too.

Run: ``python benchmarks/import_time_operators.py [--runs 15]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

MODULE = "airflow_provider_openrouter.operators.api_key"
BUDGET_MS = 30.0
HEAVY = ("requests", "aiohttp", "airflow_provider_openrouter.testing")

_PROBE = f"""
import sys, time
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
import {MODULE}
t2 = time.perf_counter()
heavy = [name for name in {HEAVY!r} if name in sys.modules]
print(t2 - t1, ",".join(heavy) or "-")
"""


def in_process(env: dict[str, str]) -> tuple[float, str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return float(out[0]) * 1000, out[1]


def whole_process(statement: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], capture_output=True, check=True, env=env)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per measurement")
    args = parser.parse_args()

    source_env = dict(os.environ)
    source_env.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="import-time-airflow-home-"))
    source_env["PYTHONDONTWRITEBYTECODE"] = "1"
    env = {k: v for k, v in source_env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="import-time-pycache-")
    in_process(env)  # compile and cache bytecode once

    added: list[float] = []
    from_source: list[float] = []
    heavy: set[str] = set()
    baseline: list[float] = []
    with_module: list[float] = []
    for _ in range(args.runs):
        ms, loaded = in_process(env)
        added.append(ms)
        heavy.update(name for name in loaded.split(",") if name != "-")
        from_source.append(in_process(source_env)[0])
        baseline.append(whole_process("import airflow.sdk", env))
        with_module.append(whole_process(f"import airflow.sdk; import {MODULE}", env))

    print(f"{MODULE}, {args.runs} fresh interpreters each:")
    median = statistics.median(added)
    print(f"  added after `import airflow.sdk`: median {median:.1f} ms, min {min(added):.1f} ms")
    print(
        f"  the same, every module compiled from source: median {statistics.median(from_source):.1f} ms, "
        f"min {min(from_source):.1f} ms"
    )
    delta = statistics.median(with_module) - statistics.median(baseline)
    print(
        f"  whole processes: airflow.sdk alone median {statistics.median(baseline):,.0f} ms, with the "
        f"operators {statistics.median(with_module):,.0f} ms (difference {delta:+.0f} ms, noisier)"
    )
    print(f"  heavy modules imported: {', '.join(sorted(heavy)) or 'none'}")
    verdict = "ok" if median <= BUDGET_MS else "OVER"
    print(f"operators import adds {median:.1f} ms (budget {BUDGET_MS:.0f} ms): {verdict}")


if __name__ == "__main__":
    main()
