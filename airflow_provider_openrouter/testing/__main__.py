"""``python -m airflow_provider_openrouter.testing``: serve a local OpenRouter until interrupted."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from typing import TYPE_CHECKING

from airflow_provider_openrouter._defaults import DEFAULT_CONN_ID
from airflow_provider_openrouter.testing._local import LocalOpenRouter
from airflow_provider_openrouter.testing.realism import HARD, Realism

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType


def realism_of(args: argparse.Namespace) -> Realism:
    """The realism the flags ask for: ``--hard`` or the default, then each knob given."""
    changes = {
        name: value
        for name in ("list_order", "shuffle_ties", "commit_gap", "list_lag", "trim_stamp_zeros")
        if (value := getattr(args, name)) is not None
    }
    if args.name_max_length is not None:
        changes["name_max_length"] = args.name_max_length or None
    return dataclasses.replace(HARD if args.hard else Realism(), **changes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_openrouter.testing",
        description="Serve a local OpenRouter (a fake of the key-management API) until interrupted.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free port)")
    parser.add_argument(
        "--management-key", default=None, help="management key to accept (default: generated)"
    )
    parser.add_argument(
        "--spend-per-second",
        type=float,
        default=0.0,
        help="USD that every usable key spends per second, up to its limit (default 0: none)",
    )
    parser.add_argument("--conn-id", default=DEFAULT_CONN_ID, help="connection id for the printed variable")
    knobs = parser.add_argument_group("realism", "how hard the fake is; each flag overrides --hard's value")
    knobs.add_argument("--hard", action="store_true", help="start from the hard settings (realism.HARD)")
    knobs.add_argument("--list-order", choices=("insertion", "created_at"), help="order of GET /keys")
    knobs.add_argument(
        "--shuffle-ties",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="equal created_at stamps in a new order on each request",
    )
    knobs.add_argument("--commit-gap", type=float, help="seconds between a create's stamp and its commit")
    knobs.add_argument("--list-lag", type=float, help="up to this many seconds before a write reaches lists")
    knobs.add_argument("--name-max-length", type=int, help="longest accepted name (0: no limit)")
    knobs.add_argument(
        "--trim-stamp-zeros",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="stamps without the trailing zeros of their fraction of a second",
    )
    args = parser.parse_args(argv)

    fake = LocalOpenRouter(
        host=args.host,
        port=args.port,
        management_key=args.management_key,
        spend_per_second=args.spend_per_second,
        realism=realism_of(args),
    )
    fake.start()
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    [(env_name, env_value)] = fake.airflow_env(args.conn_id).items()
    print(f"Local OpenRouter serving at {fake.base_url}", flush=True)
    print(f"base_url={fake.base_url}")
    print(f"management_key={fake.management_key}")
    print(f"control_url={fake.root_url}/_local")
    print(f"{env_name}='{env_value}'", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()
    print("Local OpenRouter stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
