"""Run every benchmark, one after the other, each against its own local OpenRouter (``mapped_vs_sync.py``
and ``sync_scale_deployment.py`` against a whole Airflow deployment of their own).

Each script prints its figures as ratios against baselines measured in the same run, so results from
different machines compare by ratio, not by seconds.

Run: ``python benchmarks/run_all.py`` (or ``make bench``)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = (
    "import_time.py",
    "local_openrouter_capacity.py",
    "hook_speed.py",
    "provisioning_speed.py",
    "sync_speed.py",
    "triggers_at_scale.py",
    "keys_page.py",
    # Last and longest: a whole deployment (PostgreSQL, Redis, Celery workers) for a few minutes each.
    "mapped_vs_sync.py",
    # One sync task for 500 and then 5,000 fresh tenants: the per-key cost must not grow with the count.
    "sync_scale_deployment.py",
)


def main() -> int:
    failed = []
    for script in SCRIPTS:
        print(f"\n=== {script} ===", flush=True)
        if subprocess.run([sys.executable, str(HERE / script)], check=False).returncode != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
