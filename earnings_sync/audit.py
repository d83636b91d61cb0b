"""Whole-table audit: the stream consumer's rules applied to every item, plus the table-level rule.

Item rules are `consistency.validate_item` (the same check the stream consumer runs on each change).
The table-level rule is about rescheduled earnings: one (symbol, fiscal period) should have one
report date. When it has several, the item with the newest `lastSyncDate` is the current one and
every older item is `superseded` — exactly what the stream consumer deletes as changes arrive, so a
clean pipeline leaves nothing for the audit to find. Several dates carrying the same newest sync are
`ambiguous_fiscal_period`: the snapshot itself listed both, and nothing is deleted.

Sync metadata is checked against the clock and the sync registry (ledger.SyncLedger): an item whose
`lastSyncDate` lies in the future (later than now plus sync_identity.MAX_CLOCK_SKEW) is
`future_sync_date`: every real sync looks older than it and is skipped as stale, so it pins the item.
It is left out of the superseded rule (it would make the real dates look superseded). An item that
names a sync the registry does not know, or a `lastSyncDate` that is not its sync's time, is
`unregistered_sync`. Only items dated since the registry began recording ids (`RegisteredSyncs.since`)
are judged: older syncs were counted without their id, and their items (history the table keeps)
would otherwise all be reported. Without a readable registry this rule is skipped, and the report
says so.

`fix=True` applies the only safe cleanups, each a delete conditional on the `lastSyncDate` the scan
saw (a sync that touched the item since wins): superseded items, and future-dated items (the next
sync that lists the key writes the real row again). Invalid and unregistered items are reported
only: which value is right is not something the table can tell. The default is a dry run.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from earnings_sync import consistency
from earnings_sync.calendar_table import DATE, FISCAL_DATE, LAST_SYNC_DATE, SYMBOL, SYNC_ID, CalendarTable, Item
from earnings_sync.ledger import RegisteredSyncs, SyncLedger
from earnings_sync.sync_identity import Clock, is_synced_at, latest_allowed, synced_at_of, utc_now

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


@dataclass(frozen=True)
class FutureDated:
    key: Key
    last_sync_date: str


@dataclass
class AuditReport:
    items: int = 0
    findings: list[Finding] = field(default_factory=list)
    superseded: list[Superseded] = field(default_factory=list)
    future: list[FutureDated] = field(default_factory=list)
    unregistered: list[Key] = field(default_factory=list)
    registry: str = "not read"  # what the unregistered_sync rule could rely on, in words
    fix: bool = False
    fixed: int = 0  # items deleted: superseded and future-dated
    fix_conflicts: int = 0  # items to delete that a sync changed between the scan and the delete (kept)
    future_fixed: int = 0  # of `fixed`, the future-dated ones
    future_conflicts: int = 0  # of `fix_conflicts`, the future-dated ones
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
            "future_dated": len(self.future),
            "unregistered": len(self.unregistered),
            "registry": self.registry,
            "findings": [
                {"rule": f.rule, "key": list(f.key), "attribute": f.attribute, "detail": f.detail} for f in self.findings
            ],
            "fix": self.fix,
            "fixed": self.fixed,
            "fix_conflicts": self.fix_conflicts,
            "future_fixed": self.future_fixed,
            "future_conflicts": self.future_conflicts,
            "remaining": self.remaining,
            "seconds": round(self.seconds, 3),
        }


def find_superseded(items: list[Item]) -> tuple[list[Superseded], list[Finding]]:
    """Per (symbol, fiscal period) with several dates: older items, and ties at the newest sync."""
    periods: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)  # -> [(date, lastSyncDate)]
    for item in items:
        symbol = consistency.text_attribute(item, SYMBOL)
        date = consistency.text_attribute(item, DATE)
        fiscal = consistency.text_attribute(item, FISCAL_DATE)
        if symbol is None or date is None or fiscal is None:
            continue  # reported by the item rules; without a fiscal period it has no siblings
        periods[(symbol, fiscal)].append((date, consistency.text_attribute(item, LAST_SYNC_DATE) or ""))
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
                Finding(consistency.AMBIGUOUS_PERIOD, (symbol, date), DATE, f"fiscal period {fiscal}: {len(kept)} dates")
                for date in kept
            )
    return superseded, ambiguous


def find_future(items: list[Item], limit: str) -> list[FutureDated]:
    """Items whose `lastSyncDate` is later than `limit` (sync_identity.latest_allowed; a text compare)."""
    found = []
    for item in items:
        seen = consistency.text_attribute(item, LAST_SYNC_DATE)
        if seen is not None and is_synced_at(seen) and seen > limit:
            found.append(FutureDated(consistency.item_key(item), seen))
    return sorted(found, key=lambda f: f.key)


def find_unregistered(items: list[Item], registry: RegisteredSyncs) -> list[Finding]:
    """Items dated since the registry records ids whose sync it does not know (see the module docstring)."""
    if registry.since is None:
        return []
    found = []
    for item in items:
        seen = consistency.text_attribute(item, LAST_SYNC_DATE)
        sync_id = consistency.text_attribute(item, SYNC_ID)
        if seen is None or sync_id is None or not is_synced_at(seen) or seen < registry.since:
            continue  # a broken lastSyncDate/sync_id is an item rule's finding; older items predate the ids
        if sync_id not in registry.ids:
            detail = "sync_id is not a registered sync"
        elif synced_at_of(sync_id) != seen:
            detail = "lastSyncDate is not the time of its sync_id"
        else:
            continue
        found.append(Finding(consistency.UNREGISTERED_SYNC, consistency.item_key(item), SYNC_ID, detail))
    return sorted(found, key=lambda f: f.key)


def read_registry(ledger: SyncLedger | None) -> tuple[RegisteredSyncs | None, str]:
    """The registered syncs, or None with the reason the unregistered_sync rule is skipped."""
    if ledger is None:
        return None, "not read (no ledger table): unregistered_sync not checked"
    try:
        registry = ledger.registered_syncs()
    except (ClientError, BotoCoreError) as exc:
        return None, f"{ledger.table_name} could not be read ({exc}): unregistered_sync not checked"
    if registry.since is None:
        return registry, f"{ledger.table_name} records no sync ids yet: unregistered_sync not checked"
    return registry, f"{ledger.table_name}: {len(registry.ids):,} sync id(s), recorded since {registry.since}"


def audit_table(
    table: CalendarTable,
    *,
    fix: bool = False,
    page_size: int = 1000,
    clock: Callable[[], float] = time.perf_counter,
    now: Clock = utc_now,
    ledger: SyncLedger | None = None,
) -> AuditReport:
    """Scan the table and report every broken rule; with `fix`, delete superseded and future-dated items.

    `ledger` is where the sync registry is read (None: the unregistered_sync rule is skipped).
    """
    started = clock()
    report = AuditReport(fix=fix)
    registry, report.registry = read_registry(ledger)
    items = list(table.all_items(page_size))
    report.items = len(items)
    for item in items:
        key = consistency.item_key(item)
        report.findings.extend(Finding(v.rule, key, v.attribute, v.detail) for v in consistency.validate_item(item))
    limit = latest_allowed(now)
    report.future = find_future(items, limit)
    future_keys = {f.key for f in report.future}
    report.findings.extend(
        Finding(consistency.FUTURE_SYNC_DATE, f.key, LAST_SYNC_DATE, f"{f.last_sync_date} is in the future (later than {limit})")
        for f in report.future
    )
    current = [item for item in items if consistency.item_key(item) not in future_keys]
    superseded, ambiguous = find_superseded(current)
    report.superseded = superseded
    report.findings.extend(
        Finding(consistency.SUPERSEDED, s.key, DATE, f"fiscal period {s.fiscal_date_ending} is now on {', '.join(s.kept_dates)}")
        for s in superseded
    )
    report.findings.extend(ambiguous)
    if registry is not None:
        unregistered = find_unregistered(current, registry)
        report.unregistered = [f.key for f in unregistered]
        report.findings.extend(unregistered)
    if fix:
        for entry in superseded:
            if table.delete_if_unchanged(entry.key, entry.last_sync_date):
                report.fixed += 1
            else:
                report.fix_conflicts += 1
        for dated in report.future:
            if table.delete_if_unchanged(dated.key, dated.last_sync_date):
                report.fixed += 1
                report.future_fixed += 1
            else:
                report.fix_conflicts += 1
                report.future_conflicts += 1
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
    lines.append(f"sync registry: {report.registry}")
    if report.fix:
        lines.append(
            f"deleted {report.fixed - report.future_fixed:,} superseded item(s), "
            f"{report.fix_conflicts - report.future_conflicts:,} changed since the scan (kept)"
        )
        if report.future:
            lines.append(
                f"deleted {report.future_fixed:,} future-dated item(s), {report.future_conflicts:,} changed since the scan "
                "(kept); the next sync that lists their keys writes the real rows again"
            )
    else:
        if report.superseded:
            lines.append(f"{len(report.superseded):,} superseded item(s) would be deleted with --fix")
        if report.future:
            lines.append(
                f"{len(report.future):,} future-dated item(s) would be deleted with --fix: they pin their keys, "
                "every real sync is skipped as stale until they go"
            )
    if report.unregistered:
        lines.append(
            f"{len(report.unregistered):,} item(s) name a sync the registry does not know: never deleted automatically. "
            "The next sync overwrites those whose key it lists; delete the others by hand "
            "(aws dynamodb delete-item) if this pipeline did not write them"
        )
    return "\n".join(lines)
