"""The tenant sync as people read it: the plan as a table in the task's log and as a Markdown table for an
approver, and the apply's progress lines."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_openrouter._sync_guardrails import GUARDRAIL_ACTIONS
from airflow_provider_openrouter._sync_plan import ACTIONS

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

# The tenants an assignment names, at most this many of them.
_NAMED: Final = 5


def _detail(item: Mapping[str, Any], arrow: str) -> str:
    changes = ", ".join(f"{f}: {old!r} {arrow} {new!r}" for f, (old, new) in item["changes"].items())
    return "; ".join(part for part in (changes, item.get("reason") or "") if part)


def _counts(plan: Mapping[str, Any]) -> str:
    counts = plan["counts"]
    text = ", ".join(f"{a} {counts.get(a, 0)}" for a in ACTIONS)
    guarded = plan.get("guardrail_counts")
    if guarded:
        text += "; guardrails: " + ", ".join(f"{a} {guarded.get(a, 0)}" for a in GUARDRAIL_ACTIONS)
    return text


def _guardrail_detail(item: Mapping[str, Any], arrow: str) -> str:
    tenants = item["tenants"]
    if tenants:
        named = ", ".join(tenants[:_NAMED]) + (
            f", … ({len(tenants) - _NAMED} more)" if len(tenants) > _NAMED else ""
        )
        return "; ".join(part for part in (item.get("reason"), named) if part)
    return _detail(item, arrow)


def _rows(plan: Mapping[str, Any], limit: int, arrow: str) -> Iterator[tuple[str, str, str | None, str]]:
    """Each line of a plan: action, tenant / key or guardrail, hash or guardrail id, what changes."""
    for item in plan["actions"][:limit]:
        yield (
            item["action"],
            item["tenant"] or item.get("key_name") or "",
            item["key_hash"],
            _detail(item, arrow),
        )
    for item in plan.get("guardrail_actions", [])[: max(limit - len(plan["actions"]), 0)]:
        detail = _guardrail_detail(item, arrow)
        yield item["action"], f"guardrail {item['guardrail']}", item["guardrail_id"], detail


def _total(plan: Mapping[str, Any]) -> int:
    return len(plan["actions"]) + len(plan.get("guardrail_actions", []))


def plan_table(plan: Mapping[str, Any], *, limit: int = 200) -> str:
    """The plan as the log shows it: one line per change, then the counts."""
    rows = [("ACTION", "TENANT / KEY", "HASH", "CHANGES / REASON")]
    for action, who, ident, detail in _rows(plan, limit, "->"):
        rows.append((action, who, (ident or "(new)")[:12], detail))
    widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows]
    more = _total(plan) - limit
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
    for action, who, ident, detail in _rows(plan, limit, "→"):
        hash_ = f"`{ident[:12]}`" if ident else "(new)"
        lines.append(f"| {action} | {_md(who)} | {hash_} | {_md(detail)} |")
    if not _total(plan):
        lines.append("| (nothing to change) | | | |")
    more = _total(plan) - limit
    if more > 0:
        lines.append(f"\n… and {more} more: the full plan is the plan task's return value.")
    return "\n".join(lines)


class Progress:
    """A line every ``every`` seconds: done / total, rate, time left."""

    def __init__(self, log: Any, what: str, total: int, every: float = 5.0) -> None:
        self.log, self.what, self.total, self.every = log, what, total, every
        self.done = 0
        self.started = self.last = time.monotonic()
        self._lock = threading.Lock()

    def step(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if now - self.last < self.every or self.done >= self.total:
                return
            self.last = now
        rate = self.done / max(now - self.started, 1e-9)
        left = (self.total - self.done) / rate if rate else float("inf")
        self.log.info(
            "%s: %d / %d done, %.1f/s, about %.0f s left", self.what, self.done, self.total, rate, left
        )
