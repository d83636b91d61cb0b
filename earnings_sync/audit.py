"""Whole-table audit: the stream consumer's rules applied to every item, plus the table-level rule.

Item rules are `consistency.validate_item` (the same check the stream consumer runs on each change).
The table-level rule is about rescheduled earnings: one (symbol, fiscal period) should have one
report date. When it has several, the item with the newest `lastSyncDate` is the current one and
every older item is `superseded` — exactly what the stream consumer deletes as changes arrive, so a
clean pipeline leaves nothing for the audit to find. Several dates carrying the same newest sync are
`ambiguous_fiscal_period`: the snapshot itself listed both, and nothing is deleted.

`fix=True` applies the only safe cleanup, deleting superseded items, each conditional on the
`lastSyncDate` the scan saw (a sync that touched it since wins). Invalid items are reported only:
which value is right is not something the table can tell. The default is a dry run.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from earnings_sync import consistency
from earnings_sync.stream import delete_if_unchanged
from earnings_sync.table import Item

Key = tuple[str, str]


@dataclass(frozen=True)
class Finding:
    """One rule broken by one item; never the item's content beyond its key."""

    rule: str
    key: Key
    attribute: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Superseded:
    key: Key
    fiscal_date_ending: str
    last_sync_date: str
    kept_dates: tuple[str, ...]  # the period's current date(s)


@dataclass
class AuditReport:
    items: int = 0
    findings: list[Finding] = field(default_factory=list)
    superseded: list[Superseded] = field(default_factory=list)
    fix: bool = False
    fixed: int = 0
    fix_conflicts: int = 0  # superseded items changed by a sync between the scan and the delete
    seconds: float = 0.0

    @property
    def by_rule(self) -> dict[str, int]:
        """Items per broken rule (an item breaking one rule twice counts once)."""
        return dict(sorted(Counter(rule for rule, _ in {(f.rule, f.key) for f in self.findings}).items()))

    @property
    def invalid_items(self) -> int:
        return len({f.key for f in self.findings if f.rule in consistency.ITEM_RULES})

    @property
    def remaining(self) -> int:
        """Findings still in the table after this run (fixed superseded items no longer count)."""
        return len(self.findings) - self.fixed

    def as_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "ok": self.remaining == 0,
            "by_rule": self.by_rule,
            "invalid_items": self.invalid_items,
            "superseded": len(self.superseded),
            "findings": [
                {"rule": f.rule, "key": list(f.key), "attribute": f.attribute, "detail": f.detail} for f in self.findings
            ],
            "fix": self.fix,
            "fixed": self.fixed,
            "fix_conflicts": self.fix_conflicts,
            "remaining": self.remaining,
            "seconds": round(self.seconds, 3),
        }


def scan_items(client: Any, table_name: str, page_size: int = 1000) -> list[Item]:
    items: list[Item] = []
    request: dict[str, Any] = {"TableName": table_name, "Limit": page_size}
    while True:
        response = client.scan(**request)
        items.extend(response.get("Items", []))
        if "LastEvaluatedKey" not in response:
            return items
        request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def find_superseded(items: list[Item]) -> tuple[list[Superseded], list[Finding]]:
    """Per (symbol, fiscal period) with several dates: older items, and ties at the newest sync."""
    periods: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)  # -> [(date, lastSyncDate)]
    for item in items:
        symbol = consistency.text_attribute(item, "asset_symbol")
        date = consistency.text_attribute(item, "earnings_date")
        fiscal = consistency.text_attribute(item, "fiscal_date_ending")
        if symbol is None or date is None or fiscal is None:
            continue  # reported by the item rules; without a fiscal period it has no siblings
        periods[(symbol, fiscal)].append((date, consistency.text_attribute(item, "lastSyncDate") or ""))
    superseded: list[Superseded] = []
    ambiguous: list[Finding] = []
    for (symbol, fiscal), dated in sorted(periods.items()):
        if len(dated) < 2:
            continue
        newest = max(seen for _, seen in dated)
        kept = tuple(sorted(date for date, seen in dated if seen == newest))
        for date, seen in sorted(dated):
            if seen < newest:
                superseded.append(Superseded((symbol, date), fiscal, seen, kept))
        if len(kept) > 1:
            ambiguous.extend(
                Finding(consistency.AMBIGUOUS_PERIOD, (symbol, date), "earnings_date", f"fiscal period {fiscal}: {len(kept)} dates")
                for date in kept
            )
    return superseded, ambiguous


def audit_table(
    client: Any,
    table_name: str,
    *,
    fix: bool = False,
    page_size: int = 1000,
    clock: Callable[[], float] = time.perf_counter,
) -> AuditReport:
    """Scan the table and report every broken rule; with `fix`, delete the superseded items."""
    started = clock()
    report = AuditReport(fix=fix)
    items = scan_items(client, table_name, page_size)
    report.items = len(items)
    for item in items:
        key = consistency.item_key(item)
        report.findings.extend(Finding(v.rule, key, v.attribute, v.detail) for v in consistency.validate_item(item))
    superseded, ambiguous = find_superseded(items)
    report.superseded = superseded
    report.findings.extend(
        Finding(consistency.SUPERSEDED, s.key, "earnings_date", f"fiscal period {s.fiscal_date_ending} is now on {', '.join(s.kept_dates)}")
        for s in superseded
    )
    report.findings.extend(ambiguous)
    if fix:
        for entry in superseded:
            if delete_if_unchanged(client, table_name, entry.key, entry.last_sync_date):
                report.fixed += 1
            else:
                report.fix_conflicts += 1
    report.seconds = clock() - started
    return report


def format_report(report: AuditReport, max_lines: int = 50) -> str:
    mode = "fix" if report.fix else "dry run"
    lines = [f"earnings-sync audit ({mode}): {report.items:,} items, {len(report.findings):,} finding(s)"]
    for rule, count in report.by_rule.items():
        lines.append(f"  {rule}: {count:,}")
    for finding in report.findings[:max_lines]:
        where = f" {finding.attribute}" if finding.attribute else ""
        lines.append(f"  {finding.key[0]} {finding.key[1]}: {finding.rule}{where} {finding.detail}".rstrip())
    if len(report.findings) > max_lines:
        lines.append(f"  … {len(report.findings) - max_lines:,} more (--json lists all)")
    if report.fix:
        lines.append(f"deleted {report.fixed:,} superseded item(s), {report.fix_conflicts:,} changed since the scan (kept)")
    elif report.superseded:
        lines.append(f"{len(report.superseded):,} superseded item(s) would be deleted with --fix")
    return "\n".join(lines)
