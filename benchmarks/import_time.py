"""What importing the hook costs a DAG file, on top of ``import airflow.sdk``.

Each measurement is a fresh interpreter (nothing cached in ``sys.modules``), timed from inside so that
interpreter start-up does not count; the targets alternate, and the median and minimum are printed. For
scale, the same is shown for ``requests`` and ``aiohttp``, which the hook imports only when it first talks
to OpenRouter.

Run: ``python benchmarks/import_time.py [--runs 15]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

_PROBE = """
import time
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
{extra}
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""

TARGETS = {
    "airflow_provider_openrouter.hooks.openrouter": "import airflow_provider_openrouter.hooks.openrouter",
    "requests (for scale)": "import requests",
    "aiohttp (for scale)": "import aiohttp",
}


def measure(statement: str, env: dict[str, str]) -> tuple[float, float]:
    """Seconds ``import airflow.sdk`` takes, then ``statement`` right after it, in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(extra=statement)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per target")
    args = parser.parse_args()

    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="import-time-airflow-home-"))
    # Measured with bytecode cached, as an installed package has it (pip compiles it at install time).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for statement in TARGETS.values():
        measure(statement, env)  # compile and cache bytecode once

    results: dict[str, list[float]] = {name: [] for name in TARGETS}
    sdk: list[float] = []
    for _ in range(args.runs):
        for name, statement in TARGETS.items():
            sdk_seconds, added = measure(statement, env)
            sdk.append(sdk_seconds)
            results[name].append(added * 1000)
    print(f"`import airflow.sdk` itself: median {statistics.median(sdk) * 1000:,.0f} ms")
    print(f"added on top of it ({args.runs} fresh interpreters each):")
    for name, values in results.items():
        print(f"  {name:<48} median {statistics.median(values):6.1f} ms   min {min(values):6.1f} ms")
    hook = statistics.median(results["airflow_provider_openrouter.hooks.openrouter"])
    print(f"hook import adds {hook:.1f} ms (budget 30 ms)")


if __name__ == "__main__":
    main()
