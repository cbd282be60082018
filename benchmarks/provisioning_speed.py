"""Creating keys under fresh names: the provisioning sequence against a bare ``POST /keys`` loop.

All three contenders run one request at a time against the local OpenRouter in a process of its own, and
each round starts from the same account (the previous round's keys deleted):

* the bare loop sends one ``POST /keys`` per key with a ``requests.Session`` and keeps the plaintext;
* one task per name is what ``CreateApiKeyOperator`` does in its own task process: a walk of the account to
  look for the name, a claim created (its plaintext masked), a walk deciding the claim, delivery to a dict,
  the rename. Airflow runs each task in a process of its own whose secrets masker starts empty, so the masker
  is emptied between names here too, rather than growing with every key as it would if one process made
  them all;
* the batch is ``Provisioner.provision_many`` (what ``SyncApiKeysOperator`` uses): one walk for every name,
  the claims, one walk deciding them all, delivery, the renames.

Printed: keys per second of each, their ratios to the bare loop, and the requests each sent per key. The
safe sequence needs a write before delivery and a write after it (the claim and its rename, so that a key
whose plaintext went nowhere can be recognised), and a read between them to decide among simultaneous
claims. One name at a time that is four requests a key (two of them walks); in a batch the walks are
shared, and it is two.

Then one ``CreateApiKeyOperator`` in an account of ``--account`` keys, with every request answered after each
``--latency`` (0 and 50 ms: loopback, and a real network): its walk to look for the name is most of its time.
Printed against the floors of the same run: a raw sequential walk of the account (goal at 50 ms at most
0.4x), a raw walk with as many pages in flight as the hook allows, and one bare POST + PATCH.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import TYPE_CHECKING, Any

from _floors import Floors, label, medians, parse_latencies, set_latency

if TYPE_CHECKING:
    from collections.abc import Callable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200, help="keys per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per contender (median kept)")
    parser.add_argument(
        "--account", type=int, default=12_000, help="keys in the account of the single create"
    )
    parser.add_argument("--latency", default="0,50", help="milliseconds per request, comma-separated")
    args = parser.parse_args()

    import requests
    from airflow.sdk import log as sdk_log

    from airflow_provider_openrouter._batch import Request, provision_many
    from airflow_provider_openrouter._masking import mask_plaintexts
    from airflow_provider_openrouter._provisioning import Provisioner
    from airflow_provider_openrouter.testing._process import LocalOpenRouterProcess

    with LocalOpenRouterProcess() as fake:
        os.environ["AIRFLOW_CONN_OPENROUTER_BENCH"] = fake.connection_json()
        from airflow_provider_openrouter.hooks.openrouter import OpenRouterHook

        hook = OpenRouterHook("openrouter_bench")
        hook.list_keys()  # the connection is read and its secrets masked before anything is timed
        masker = sdk_log._secrets_masker()
        at_task_start = set(masker.patterns)
        session = requests.Session()
        headers = {"Authorization": f"Bearer {fake.management_key}"}
        vault: dict[str, str] = {}

        def deliver_to_vault(created: Any) -> list[str]:
            vault[created.name] = created.plaintext
            return ["dict"]

        def bare(prefix: str) -> float:
            started = time.perf_counter()
            for i in range(args.keys):
                response = session.post(
                    f"{fake.base_url}/keys", json={"name": f"{prefix}-{i}"}, headers=headers, timeout=30
                )
                response.raise_for_status()
                vault[f"{prefix}-{i}"] = response.json()["key"]
            return args.keys / (time.perf_counter() - started)

        def one_task_per_name(prefix: str) -> float:
            started = time.perf_counter()
            for i in range(args.keys):
                name = f"{prefix}-{i}"
                Provisioner(hook).provision(name, "fail", hook.create_key, deliver_to_vault)
                masker.patterns = set(at_task_start)  # the next task is a fresh process
                masker.replacer = None
            return args.keys / (time.perf_counter() - started)

        def batch(prefix: str) -> float:
            names = [f"{prefix}-{i}" for i in range(args.keys)]
            started = time.perf_counter()
            provisioner = Provisioner(hook)
            views, since = provisioner.walk(names, None)

            def create(provisional: str) -> Any:
                return hook.create_key(provisional, mask=False)  # masked in one go below

            requests_ = [Request(name, create, deliver_to_vault, view=views[name]) for name in names]
            outcomes = provision_many(provisioner, requests_, since=since, workers=1, mask=mask_plaintexts)
            failed = [o for o in outcomes if isinstance(o, BaseException)]
            if failed:
                raise failed[0]
            return args.keys / (time.perf_counter() - started)

        contenders: dict[str, Callable[[str], float]] = {
            "bare": bare,
            "task": one_task_per_name,
            "batch": batch,
        }
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        sent: dict[str, float] = {}
        for rnd in range(args.rounds):
            for label, contender in contenders.items():
                fake.control.clear_requests()
                rates[label].append(contender(f"{label}-{rnd}"))
                sent[label] = len(fake.control.requests) / args.keys
                account = fake.control.keys()  # a list of the account's keys, not a mapping's keys
                made = [k for k in account if k["name"].startswith(f"{label}-{rnd}-")]
                if len(made) != args.keys or any("[" in k["name"] for k in made):
                    raise SystemExit(f"{label}: {len(made)} keys under their names, expected {args.keys}")
                for key in made:
                    hook.delete_key(key["hash"], missing_ok=True)
        median = {label: statistics.median(values) for label, values in rates.items()}
        for label, title in (("task", "one task per name"), ("batch", "batch (provision_many)")):
            print(
                f"create under fresh names, {title}: {median[label]:,.0f} keys/s, bare POST loop "
                f"{median['bare']:,.0f} keys/s -> {median[label] / median['bare']:.2f}x; "
                f"{sent[label]:.2f} requests a key against {sent['bare']:.2f} (goal 0.5x; {args.keys} keys a "
                f"round, median of {args.rounds})"
            )

        os.environ["AIRFLOW_CONN_OPENROUTER_DEFAULT"] = fake.connection_json()
        fake.control.seed_keys(args.account - len(fake.control.keys()))
        floors = Floors(fake.base_url, fake.management_key, concurrency=hook._get_config().pages_in_flight)
        for index, latency in enumerate(parse_latencies(args.latency)):
            set_latency(fake.control, latency)
            _one_create(floors, args.account, latency, prefix=f"single{index}", rounds=args.rounds)
        set_latency(fake.control, 0)


def _one_create(floors: Floors, account: int, latency: float, *, prefix: str, rounds: int) -> None:
    """One ``CreateApiKeyOperator`` (a task's whole run: look for the name, claim, check, deliver, rename)."""
    from airflow_provider_openrouter.operators.api_key import CreateApiKeyOperator

    names = iter(f"{prefix}-{i}" for i in range(3 * rounds + 1))
    vault: dict[str, str] = {}

    def create() -> float:
        name = next(names)
        operator = CreateApiKeyOperator(
            task_id="create",
            name=name,
            deliver_to_callable=lambda key, context: vault.__setitem__(name, key.plaintext),
        )
        started = time.perf_counter()
        operator.execute({})  # type: ignore[arg-type]
        return time.perf_counter() - started

    create()  # warm: the process's first task pays its imports
    times = medians(
        {
            "create": create,
            "sequential": lambda: floors.raw_walk()[0],
            "in flight": lambda: floors.raw_walk_in_flight()[0],
            "post patch": lambda: floors.bare_post_patch([next(names)]),
        },
        rounds,
    )
    create, walk = times["create"], times["sequential"]
    print(
        f"one CreateApiKeyOperator in an account of {account:,} keys, {label(latency)}: {create:.2f} s; "
        f"floors: raw sequential walk {walk:.2f} s, raw walk with {floors.concurrency} pages in flight "
        f"{times['in flight']:.2f} s, one bare POST + PATCH {times['post patch']:.3f} s -> create / raw "
        f"sequential walk = {create / walk:.2f}x (goal at 50 ms <= 0.4x), create / raw in flight = "
        f"{create / times['in flight']:.2f}x (median of {rounds}, in turns)"
    )


if __name__ == "__main__":
    main()
