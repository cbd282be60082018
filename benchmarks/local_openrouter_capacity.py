"""How many requests a second the local OpenRouter answers: the ceiling every other benchmark runs under.

A benchmark of a client against the local OpenRouter measures the client only while the server is far faster.
This prints the server's capacity, measured with the thinnest client there is (``http.client`` on a keep-alive
connection) in three set-ups, each the median of a few rounds:

- served in this process (the ``local_openrouter`` pytest fixture's set-up): shares the interpreter lock with
  the client;
- served from a child process (``python -m airflow_provider_openrouter.testing``), one client;
- the same child process, four concurrent clients.

Other benchmark scripts print the same figure with ``measure_capacity()``.

Run: ``python benchmarks/local_openrouter_capacity.py [--seconds 1.0] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial
from typing import TYPE_CHECKING

from airflow_provider_openrouter.testing import LocalOpenRouter
from airflow_provider_openrouter.testing._capacity import measure_capacity
from airflow_provider_openrouter.testing._process import LocalOpenRouterProcess

if TYPE_CHECKING:
    from collections.abc import Callable


def median_rate(rounds: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per set-up (the median is shown)")
    args = parser.parse_args()

    rows: list[tuple[str, float]] = []
    with LocalOpenRouter() as fake:
        in_process = partial(measure_capacity, args.seconds, fake=fake)
        rows.append(("in this process, 1 client", median_rate(args.rounds, in_process)))
    with LocalOpenRouterProcess() as child:
        for clients in (1, 4):
            in_child = partial(
                measure_capacity,
                args.seconds,
                base_url=child.base_url,
                management_key=child.management_key,
                clients=clients,
            )
            label = f"child process, {clients} client{'s' if clients > 1 else ''}"
            rows.append((label, median_rate(args.rounds, in_child)))

    print("Local OpenRouter capacity, GET /api/v1/key on keep-alive connections (requests/s, median)")
    width = max(len(name) for name, _ in rows)
    for name, rate in rows:
        print(f"  {name:<{width}}  {rate:>9,.0f}")


if __name__ == "__main__":
    main()
