"""Creating keys under fresh names: the provisioning sequence against a bare ``POST /keys`` loop.

Both run against the local OpenRouter in a process of its own. The bare loop sends one ``POST /keys`` per key
with a ``requests.Session`` and keeps the plaintext; the provisioning sequence is what
``CreateApiKeyOperator`` does for each name (a claim created, checked, delivered to a dict, renamed), starting
from one shared walk of the account. Printed: keys per second of each and their ratio (goal 0.5x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from airflow_provider_openrouter.testing._process import LocalOpenRouterProcess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200, help="keys per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per contender (median kept)")
    args = parser.parse_args()

    import requests

    from airflow_provider_openrouter._provisioning import Provisioner, view_of

    with LocalOpenRouterProcess() as fake:
        os.environ["AIRFLOW_CONN_OPENROUTER_BENCH"] = fake.connection_json()
        from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

        hook = OpenRouterHook("openrouter_bench")
        session = requests.Session()
        headers = {"Authorization": f"Bearer {fake.management_key}"}
        vault: dict[str, str] = {}

        def bare(prefix: str) -> float:
            started = time.perf_counter()
            for i in range(args.keys):
                response = session.post(
                    f"{fake.base_url}/keys", json={"name": f"{prefix}-{i}"}, headers=headers, timeout=30
                )
                response.raise_for_status()
                vault[f"{prefix}-{i}"] = response.json()["key"]
            return args.keys / (time.perf_counter() - started)

        def provisioned(prefix: str) -> float:
            names = [f"{prefix}-{i}" for i in range(args.keys)]
            started = time.perf_counter()
            provisioner = Provisioner(hook)
            views = view_of(hook.list_keys(include_disabled=True, include_expired=True), names)
            for name in names:

                def deliver(created: object, name: str = name) -> list[str]:
                    vault[name] = created.plaintext  # type: ignore[attr-defined]
                    return ["dict"]

                provisioner.provision(name, "fail", hook.create_key, deliver, view=views[name])
            return args.keys / (time.perf_counter() - started)

        ratios, bare_rates, ours = [], [], []
        for rnd in range(args.rounds):
            b = bare(f"bare-{rnd}")
            p = provisioned(f"fresh-{rnd}")
            bare_rates.append(b)
            ours.append(p)
            ratios.append(p / b)
            # Each round starts from the same account size.
            for key in fake.control.keys(include_management=False):
                hook.delete_key(key["hash"], missing_ok=True)
        print(
            f"create under fresh names: provisioning {statistics.median(ours):,.0f} keys/s, bare POST loop "
            f"{statistics.median(bare_rates):,.0f} keys/s -> {statistics.median(ratios):.2f}x (goal 0.5x; "
            f"{args.keys} keys per round, median of {args.rounds})"
        )


if __name__ == "__main__":
    main()
