"""The question nobody asked the ledger: did the newest syncs complete?

The ledger can tell whether one sync is done (`ledger.account`), but only when someone asks.
`watch_syncs`, run on a schedule by queries/sync_monitor.py, asks it for every sync registered in the
last `window` (26 h by default) and sorts each into one state:

* **complete**: every row settled. The first run that sees it marks the sync's registry item
  (`completed_at`, a conditional write, so one completion is counted once however many runs or
  retries see it) and counts a completion (`SyncCompletions`, what the missing-sync alarm watches);
* **incomplete**: not complete `grace` (1 h) after the producer registered it: rows still missing,
  waiting in the DLQ, never enqueued, no manifest, or the sync aborted (`SyncsIncomplete`);
* **pending**: not complete yet, and younger than `grace`.

A sync marked complete is not read again: a run costs one small Query on the registry, plus one
Query of the ledger per sync of the window that is not complete yet (docs/operations.md, "The sync
monitor", counts it). The window is found by sync id, which starts with the sync's `synced_at`: a
backfill given an old `synced_at` is outside it, and is followed with `earnings-sync ledger`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from earnings_sync.ledger import Registration, SyncLedger
from earnings_sync.observability import emit_sync_watch_metrics
from earnings_sync.sync_identity import InvalidSyncMetadata, compact, format_synced_at, parse_synced_at

DEFAULT_WINDOW = dt.timedelta(hours=26)  # a daily sync plus two hours: the missing-sync alarm's span
DEFAULT_GRACE = dt.timedelta(hours=1)  # a whole sync takes minutes; an hour means something is stuck
COMPLETE, INCOMPLETE, PENDING = "complete", "incomplete", "pending"
MAX_LOGGED_SYNCS = 20
MAX_LOGGED_PROBLEMS = 3


@dataclass(frozen=True)
class WatchedSync:
    """One sync of the window: its state, the ledger's own status, and what is not settled yet."""

    sync_id: str
    registered_at: str
    age_minutes: float
    state: str  # complete / incomplete / pending
    ledger_status: str  # complete, in_dlq, incomplete or unknown (ledger.LedgerReport.status)
    newly_complete: bool = False
    problems: tuple[str, ...] = ()

    def as_log(self) -> dict[str, Any]:
        return {"sync_id": self.sync_id, "state": self.state, "ledger": self.ledger_status, "age_minutes": self.age_minutes}


@dataclass
class SyncWatch:
    """What one run found; `ledger_reads` counts the syncs whose ledger it had to read."""

    checked_at: str
    window_start: str
    syncs: list[WatchedSync] = field(default_factory=list)
    ledger_reads: int = 0

    def count(self, state: str) -> int:
        return sum(1 for sync in self.syncs if sync.state == state)

    @property
    def completions(self) -> int:
        return sum(1 for sync in self.syncs if sync.newly_complete)

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked_at": self.checked_at,
            "window_start": self.window_start,
            "complete": self.count(COMPLETE),
            "incomplete": self.count(INCOMPLETE),
            "pending": self.count(PENDING),
            "completions": self.completions,
            "ledger_reads": self.ledger_reads,
            "syncs": [sync.as_log() for sync in self.syncs[-MAX_LOGGED_SYNCS:]],
        }


def _age_minutes(registration: Registration, now: dt.datetime) -> float:
    """Minutes since the producer registered the sync (its `synced_at` if the time is unreadable)."""
    for text in (registration.registered_at, registration.synced_at):
        try:
            return round((now - parse_synced_at(text)).total_seconds() / 60, 1)
        except InvalidSyncMetadata:
            continue
    return float("inf")  # no readable time at all: old enough to be judged


def _watch_one(ledger: SyncLedger, registration: Registration, now: dt.datetime, grace: dt.timedelta, watch: SyncWatch) -> WatchedSync:
    age = _age_minutes(registration, now)
    found = {"sync_id": registration.sync_id, "registered_at": registration.registered_at, "age_minutes": age}
    if registration.completed_at:
        return WatchedSync(**found, state=COMPLETE, ledger_status="complete")
    watch.ledger_reads += 1
    report = ledger.report(registration.sync_id, consistent=False)
    if report.complete:
        newly = ledger.mark_completed(registration.sync_id, format_synced_at(now))
        return WatchedSync(**found, state=COMPLETE, ledger_status=report.status, newly_complete=newly)
    state = INCOMPLETE if age >= grace.total_seconds() / 60 else PENDING
    return WatchedSync(**found, state=state, ledger_status=report.status, problems=tuple(report.problems()[:MAX_LOGGED_PROBLEMS]))


def watch_syncs(
    ledger: SyncLedger, now: dt.datetime, *, window: dt.timedelta = DEFAULT_WINDOW, grace: dt.timedelta = DEFAULT_GRACE
) -> SyncWatch:
    """Every sync registered since `now - window`, oldest first, netted and sorted (see the module docstring)."""
    start = format_synced_at(now - window)
    watch = SyncWatch(checked_at=format_synced_at(now), window_start=start)
    for registration in ledger.registrations_since(compact(start)):
        watch.syncs.append(_watch_one(ledger, registration, now, grace, watch))
    return watch


class SyncWatchLog:
    """The sync monitor's metrics and lines: one line per run, one warning per incomplete sync
    (with the ledger's first problems, which name messages and counts, never data)."""

    def __init__(self, logger: Any, metrics: Any) -> None:
        self.logger = logger
        self.metrics = metrics

    def failed(self, exc: BaseException) -> None:
        """No sync metric is published: the missing-sync alarm treats the gap as breaching."""
        self.logger.error("sync monitor failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})

    def watched(self, watch: SyncWatch, memory: Mapping[str, float]) -> dict[str, Any]:
        emit_sync_watch_metrics(self.metrics, watch)
        for sync in watch.syncs:
            if sync.state == INCOMPLETE:
                self.logger.warning("sync incomplete", extra={**sync.as_log(), "problems": list(sync.problems)})
            elif sync.newly_complete:
                self.logger.info("sync complete", extra=sync.as_log())
        summary = watch.as_dict()
        self.logger.info("syncs watched", extra={**summary, **memory})
        return summary
