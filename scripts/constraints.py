"""The committed constraints files: write one from this environment, or check this environment against one.

Run it with the virtualenv's own interpreter, since it reads the environment it runs in::

    .venv/bin/python scripts/constraints.py freeze constraints/airflow-3.3.2-python3.11.txt --note "..."
    .venv/bin/python scripts/constraints.py check constraints/airflow-3.3.2-python3.11.txt

A constraints file pins every distribution of the environment, pip and setuptools included, except this
provider itself. ``check`` fails on any difference either way (a package missing, one not in the file, another
version), so a venv that drifted from its file, or a file that no longer matches what installs, turns CI red.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from importlib import metadata
from pathlib import Path

PROJECT = "airflow-provider-openrouter"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    """Every distribution of this environment by normalised name, this provider left out."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and normalize(name) != PROJECT:
            found[normalize(name)] = dist.version
    return found


def pinned(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        pin = raw.split("#", 1)[0].strip()
        if not pin:
            continue
        name, sep, version = pin.partition("==")
        if not sep:
            raise SystemExit(f"{path}: {pin!r} is not a 'name==version' pin")
        pins[normalize(name)] = version.strip()
    return pins


def freeze(path: Path, note: str) -> None:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    header = [
        f"# Every distribution of a working environment: Python {python}, made by `make constraints`",
        f"# on {dt.date.today().isoformat()} from what the package index offered that day.",
        *(f"# {line.strip()}" for line in note.splitlines() if line.strip()),
    ]
    body = [f"{name}=={version}" for name, version in sorted(installed().items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([*header, *body]) + "\n")
    print(f"{path}: {len(body)} pins")


def differences(path: Path) -> list[str]:
    want, have = pinned(path), installed()
    lines = []
    for name in sorted(want.keys() | have.keys()):
        if name not in have:
            lines.append(f"  {name}: {want[name]} in the file, not installed")
        elif name not in want:
            lines.append(f"  {name}: {have[name]} installed, not in the file")
        elif want[name] != have[name]:
            lines.append(f"  {name}: {want[name]} in the file, {have[name]} installed")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("freeze", help="write the constraints file of this environment")
    write.add_argument("path", type=Path)
    write.add_argument("--note", default="", help="why the file carries the pins it does (kept as comments)")
    check = commands.add_parser("check", help="fail when this environment differs from the file")
    check.add_argument("path", type=Path)
    args = parser.parse_args()
    if args.command == "freeze":
        freeze(args.path, args.note)
        return 0
    if not args.path.is_file():
        print(f"{args.path} does not exist: `make constraints` writes it", file=sys.stderr)
        return 1
    drift = differences(args.path)
    if drift:
        print(f"{sys.prefix} differs from {args.path}:", *drift, sep="\n", file=sys.stderr)
        print(
            "Reinstall the venv (`make clean`), or regenerate the file (`make constraints`).", file=sys.stderr
        )
        return 1
    print(f"{sys.prefix} matches {args.path} ({len(pinned(args.path))} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
