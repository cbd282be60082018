"""The tenant sync's plan as people read it: a table in the task's log, a Markdown table for an approver."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_openrouter._sync_plan import ACTIONS

if TYPE_CHECKING:
    from collections.abc import Mapping


def _detail(item: Mapping[str, Any], arrow: str) -> str:
    changes = ", ".join(f"{f}: {old!r} {arrow} {new!r}" for f, (old, new) in item["changes"].items())
    return "; ".join(part for part in (changes, item.get("reason") or "") if part)


def _counts(plan: Mapping[str, Any]) -> str:
    counts = plan["counts"]
    return ", ".join(f"{a} {counts.get(a, 0)}" for a in ACTIONS)


def plan_table(plan: Mapping[str, Any], *, limit: int = 200) -> str:
    """The plan as the log shows it: one line per change, then the counts."""
    rows = [("ACTION", "TENANT / KEY", "HASH", "CHANGES / REASON")]
    for item in plan["actions"][:limit]:
        who = item["tenant"] or item.get("key_name") or ""
        rows.append((item["action"], who, (item["key_hash"] or "(new)")[:12], _detail(item, "->")))
    widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows]
    more = len(plan["actions"]) - limit
    if more > 0:
        lines.append(f"... and {more} more (the full plan is in the return value)")
    lines.append("counts: " + _counts(plan))
    return "\n".join(lines)


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def plan_markdown(plan: Mapping[str, Any], *, limit: int = 100) -> str:
    """The plan as a Markdown table, for an approver (the human-in-the-loop ``body`` renders Markdown)."""
    lines = [
        "**Counts:** " + _counts(plan),
        "",
        "| Action | Tenant / key | Hash | Changes / reason |",
        "|---|---|---|---|",
    ]
    for item in plan["actions"][:limit]:
        who = item["tenant"] or item.get("key_name") or ""
        hash_ = f"`{item['key_hash'][:12]}`" if item["key_hash"] else "(new)"
        lines.append(f"| {item['action']} | {_md(who)} | {hash_} | {_md(_detail(item, '→'))} |")
    if not plan["actions"]:
        lines.append("| (nothing to change) | | | |")
    more = len(plan["actions"]) - limit
    if more > 0:
        lines.append(f"\n… and {more} more: the full plan is the plan task's return value.")
    return "\n".join(lines)
