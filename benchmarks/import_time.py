"""What importing the provider costs a DAG file, on top of ``import airflow.sdk``.

DAG files are parsed again and again, and each import of a hook, operator or sensor module is paid on every
parse. Each measurement is a fresh interpreter (nothing cached in ``sys.modules``), timed from inside so that
interpreter start-up does not count; targets alternate, and the median and minimum are printed. For scale,
the same is shown for ``requests`` and ``aiohttp``, which the provider imports only when it first talks to
OpenRouter. The script also says whether a module pulled in an HTTP client or the local OpenRouter: none may.

Installed packages come with their bytecode compiled (pip does it), so that is how it is measured: bytecode
is kept in a private ``PYTHONPYCACHEPREFIX`` even where the environment sets ``PYTHONDONTWRITEBYTECODE``.

Run: ``python benchmarks/import_time.py [--runs 15]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

BUDGET_MS = 30.0
HEAVY = ("requests", "aiohttp", "airflow_provider_openrouter.testing")

_PROBE = """
import sys, time
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
import {module}
t2 = time.perf_counter()
heavy = [name for name in {heavy!r} if name in sys.modules]
print(t1 - t0, t2 - t1, ",".join(heavy) or "-")
"""

PROVIDER_MODULES = (
    "airflow_provider_openrouter.hooks.openrouter",
    "airflow_provider_openrouter.operators.api_key",
    "airflow_provider_openrouter.sensors.key_usage",
)
FOR_SCALE = ("requests", "aiohttp")


def measure(module: str, env: dict[str, str]) -> tuple[float, float, str]:
    """Seconds of ``import airflow.sdk``, then of importing ``module`` right after, in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module, heavy=HEAVY)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split()
    return float(out[0]), float(out[1]), out[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per module")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="import-time-airflow-home-"))
    env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="import-time-pycache-")
    targets = PROVIDER_MODULES + FOR_SCALE
    for module in targets:
        measure(module, env)  # compile and cache bytecode once

    added: dict[str, list[float]] = {module: [] for module in targets}
    pulled: dict[str, set[str]] = {module: set() for module in targets}
    sdk: list[float] = []
    for _ in range(args.runs):
        for module in targets:
            sdk_seconds, seconds, heavy = measure(module, env)
            sdk.append(sdk_seconds)
            added[module].append(seconds * 1000)
            pulled[module].update(name for name in heavy.split(",") if name != "-")

    print(f"`import airflow.sdk` itself: median {statistics.median(sdk) * 1000:,.0f} ms")
    print(f"added on top of it ({args.runs} fresh interpreters each):")
    for module in targets:
        values = added[module]
        heavy = ", ".join(sorted(pulled[module])) or "nothing heavy"
        note = "" if module in FOR_SCALE else f"   pulls in: {heavy}"
        print(f"  {module:<48} median {statistics.median(values):6.1f} ms   min {min(values):6.1f} ms{note}")
    worst = max(statistics.median(added[module]) for module in PROVIDER_MODULES)
    verdict = "within" if worst <= BUDGET_MS else "OVER"
    print(f"slowest provider module adds {worst:.1f} ms: {verdict} the {BUDGET_MS:.0f} ms budget")


if __name__ == "__main__":
    main()
