"""Stream consumer domain logic: each change to `earningsCalendar` is checked and the table tidied.

Per DynamoDB stream record (NEW_AND_OLD_IMAGES):

* REMOVE: counted, nothing else (most are our own superseded deletes coming back).
* MODIFY whose new `lastSyncDate` is older than the old one (a *regression*): the conflict rules
  never allow it, but a future batch-write path could. The old image is put back, conditional on
  the item still carrying the regressed `lastSyncDate`, so a newer write in between always wins.
* MODIFY that changed only `lastSyncDate`/`sync_id` (*bookkeeping-only*): a raw comparison of the
  two images, counted, and nothing more — no validation, no query. This is the bulk of a daily
  sync, and the image's content was validated when it last changed.
* INSERT, or MODIFY with a content change: the new image is validated (`consistency.validate_item`)
  and, if valid, its fiscal period is *settled*: rescheduled earnings arrive as a new item
  (same symbol and fiscal period, another date), so one Query on the symbol per invocation (a handful of items)
  finds the other dates of that period. Every one whose `lastSyncDate` is older than the record's is
  superseded and deleted, conditional on the `lastSyncDate` that was read (a failed condition is a
  concurrent newer write: counted, skipped). Other fiscal periods are history and are kept. When the
  query shows a *newer* item for the period under another date, the record's own item is the stale
  one (e.g. an old sync's message replayed from the DLQ after a newer sync moved the date) and it
  is deleted the same way. Two dates with the same newest sync are ambiguous data: both are kept.

Why a bookkeeping-only MODIFY does not settle the period: the item's content, fiscal period and
date are unchanged since the change that inserted or modified it, and that change already settled
the period (its stream record is retried, and sent to the on-failure queue only after retries).
An unchanged re-sync only moves the kept item's `lastSyncDate` forward; the superseded item was
removed on the first change and, being absent from the newer snapshots, is never re-written.
Querying on every confirmation would cost one Query per item per sync to find nothing; what
the rare lost record leaves behind is reported and removed by `earnings-sync audit --fix`.

Invalid images are counted per rule and left in place (retrying cannot fix data); the audit reports
them. Errors other than a failed condition propagate, so the batch processor reports the record
and Lambda retries it: every step is idempotent.

Change events (`change_events`, with a publisher passed in): a valid INSERT publishes `Earnings
Scheduled`, or `Earnings Rescheduled` when settling removes an older date of its period; a content
MODIFY publishes `Earnings Updated`. Nothing else does: REMOVEs, bookkeeping-only MODIFYs, invalid
images, a record whose own item turns out stale, a regression and the regression guard's restore
(recognised by the `restoredOver` marker the restore writes). An event is published before the
deletes it announces, so a record retried after a failed publish finds the same older date and
publishes the same event again; the other events wait in a `ChangeOutbox` and go out ten at a time.
After the first record that fails (a publish or a DynamoDB error), the rest of the batch is deferred
untouched (`RecordDeferred`): Lambda retries from the failed record, so the records are handled, and
their events published, in stream order, and none is handled twice in one delivery.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from earnings_sync import change_events, consistency
from earnings_sync.calendar_table import (
    FISCAL_DATE,
    LAST_SYNC_DATE,
    CalendarTable,
    Item,
    fiscal_date_of,
    key_of,
    last_sync_of,
)
from earnings_sync.change_events import ChangeEvent, ChangePublisher, ChangePublishError
from earnings_sync.sync_identity import Clock, latest_allowed, utc_now

MAX_NOTED = 50  # keys kept per kind for the handler's log lines


@dataclass
class StreamTally:
    """Counts for one invocation; the handler turns them into metrics, the local runner into a summary."""

    records: int = 0
    inserts: int = 0
    modifies: int = 0
    removes: int = 0
    validation_passed: int = 0
    validation_failed: int = 0
    initial_load_unsettled: int = 0
    violations: Counter[str] = field(default_factory=Counter)
    bookkeeping_only: int = 0
    superseded_removed: int = 0
    superseded_conflicts: int = 0
    regressions_restored: int = 0
    regression_conflicts: int = 0
    failures: int = 0
    deferred: int = 0  # left untouched after an earlier record of the batch failed
    events_published: Counter[str] = field(default_factory=Counter)  # by detail-type
    event_publish_failures: int = 0  # events still not published after the retries
    publish_error: str | None = None  # why the last failed publish failed (one line, no content)
    requests: Counter[str] = field(default_factory=Counter)
    # (key, rule names) and keys only: never whole items
    invalid: list[tuple[tuple[str, str], list[str]]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)
    restored: list[tuple[str, str]] = field(default_factory=list)

    def note(self, bucket: list, value: Any) -> None:
        if len(bucket) < MAX_NOTED:
            bucket.append(value)

    def count_request(self, kind: str, response: Mapping[str, Any] | None = None) -> None:
        """A `calendar_table.RequestLog`: requests by kind, for `DynamoDBRequests_<kind>`."""
        self.requests[kind] += 1


class RecordDeferred(Exception):
    """An earlier record of the batch failed: this one is left untouched for Lambda's retry."""


class ChangeOutbox:
    """The batch's change events not yet published, each with its stream record's sequence number."""

    def __init__(self, publisher: ChangePublisher) -> None:
        self.publisher = publisher
        self.pending: list[tuple[str, ChangeEvent]] = []
        self.unpublished: list[str] = []  # sequence numbers of records whose events did not all go out

    def add(self, record_id: str, event: ChangeEvent, tally: StreamTally) -> None:
        self.pending.append((record_id, event))
        if len(self.pending) >= change_events.MAX_ENTRIES:
            self.flush(tally)

    def flush(self, tally: StreamTally) -> None:
        """Publish what is pending; on failure note whose events did not go out, then raise."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        try:
            self.publisher.publish([event for _, event in pending])
        except ChangePublishError as exc:
            self._count(tally, exc.published)
            tally.event_publish_failures += len(exc.unpublished)
            tally.publish_error = str(exc)[:300]
            left = {id(event) for event in exc.unpublished}
            self.unpublished.extend(dict.fromkeys(rid for rid, event in pending if id(event) in left))
            raise
        self._count(tally, [event for _, event in pending])

    @staticmethod
    def _count(tally: StreamTally, events: list[ChangeEvent]) -> None:
        tally.events_published.update(event.detail_type for event in events)


@dataclass(frozen=True)
class Settlement:
    """What settling a record's fiscal period will delete, decided before anything is."""

    superseded: tuple[tuple[str, str], ...] = ()  # (date, lastSyncDate read) of the period's older dates
    stale: bool = False  # a newer date of the period exists: the record's own item goes

    @property
    def previous_date(self) -> str | None:
        """The removed date a consumer saw last: the newest of the superseded ones."""
        return max(self.superseded, key=lambda pair: (pair[1], pair[0]))[0] if self.superseded else None


class StreamProcessor:
    """Everything the stream handler does for one record, with the table's gateway and the change
    publisher passed in."""

    def __init__(
        self,
        table: CalendarTable,
        sole_sync: str | None = None,
        *,
        now: Clock = utc_now,
        publisher: ChangePublisher | None = None,
    ) -> None:
        """One processor per invocation: it caches each symbol's items for the batch.

        `sole_sync` is the `synced_at` of the only sync ever registered (ledger.sole_sync), read
        when the batch starts: its records need no settling, since superseding takes an older sync
        and a newer one registers before it writes (its own records then settle against these).
        Without a `publisher` no change event is built.
        """
        self.table = table
        self.sole_sync = sole_sync
        self.outbox = ChangeOutbox(publisher) if publisher is not None else None
        self.halted = False  # a record failed: the rest of the batch is deferred
        # An image dated after this was not written by a real sync (the consumer bounds synced_at): it
        # is never settled against (it would make every real date of its period look superseded) and
        # never restored over a real write. The audit reports it; `audit --fix` deletes it.
        self.latest_sync = latest_allowed(now)
        self._symbol_items: dict[str, list[Item]] = {}

    @property
    def client(self) -> Any:
        """The DynamoDB client behind the table: the handler counts its throttles."""
        return self.table.client

    def process(self, record: Mapping[str, Any], tally: StreamTally) -> None:
        """`record` is one Lambda DynamoDB stream record (`Records[i]`), images as attribute-value maps.

        Raises `RecordDeferred` once an earlier record of this processor's batch failed."""
        if self.halted:
            tally.deferred += 1
            raise RecordDeferred("an earlier record of the batch failed: retried with it")
        try:
            self._process(record, tally)
        except Exception:
            self.halted = True
            raise

    def finish(self, response: Mapping[str, Any], tally: StreamTally) -> dict[str, Any]:
        """Publish the batch's last events; the batch response with the records whose events did not
        go out added to `batchItemFailures` (Lambda retries from the first of them)."""
        if self.outbox is not None:
            try:
                self.outbox.flush(tally)
            except ChangePublishError:
                pass  # noted in the outbox and the tally
        failures = list(response.get("batchItemFailures", []))
        reported = {failure.get("itemIdentifier") for failure in failures}
        unpublished = self.outbox.unpublished if self.outbox is not None else []
        failures += [{"itemIdentifier": record_id} for record_id in unpublished if record_id not in reported]
        return {**response, "batchItemFailures": failures}

    def _process(self, record: Mapping[str, Any], tally: StreamTally) -> None:
        tally.records += 1
        change = record.get("dynamodb") or {}
        event = record.get("eventName")
        old: Item = change.get("OldImage") or {}
        new: Item = change.get("NewImage") or {}
        if event == "REMOVE":
            tally.removes += 1
            return
        if event == "MODIFY":
            tally.modifies += 1
            if consistency.is_regression(old, new):
                self._restore(old, new, tally)
                return
            if consistency.is_bookkeeping_only(old, new):
                tally.bookkeeping_only += 1
                return
        elif event == "INSERT":
            tally.inserts += 1
        else:
            raise ValueError(f"unexpected stream eventName {event!r}")
        if not self._passes(new, change.get("Keys"), tally):
            return
        # The regression guard's own put brings back an image consumers already saw: no event.
        announce = not (event == "MODIFY" and consistency.is_restore(old, new))
        record_id = str(change.get("SequenceNumber", ""))
        synced_at = new[LAST_SYNC_DATE]["S"]
        if self.sole_sync is not None and synced_at == self.sole_sync:
            tally.initial_load_unsettled += 1
            if announce:
                self._announce(record_id, _change_event(event, old, new, None), tally, before_deletes=False)
            return
        symbol, date = key_of(new)
        settlement = self.plan_settlement(symbol, new[FISCAL_DATE]["S"], date, synced_at, tally)
        if announce and not settlement.stale:
            event_out = _change_event(event, old, new, settlement.previous_date)
            self._announce(record_id, event_out, tally, before_deletes=bool(settlement.superseded))
        self.settle(symbol, date, synced_at, settlement, tally)

    def _passes(self, new: Item, keys: Mapping[str, Any] | None, tally: StreamTally) -> bool:
        """The image breaks no consistency rule and is not dated after any real sync; else counted."""
        violations = consistency.validate_item(new, keys)
        if violations:
            rules = sorted({v.rule for v in violations})
            tally.validation_failed += 1
            tally.violations.update(rules)
            tally.note(tally.invalid, (consistency.item_key(new), rules))
            return False
        if new[LAST_SYNC_DATE]["S"] > self.latest_sync:
            tally.validation_failed += 1
            tally.violations.update([consistency.FUTURE_SYNC_DATE])
            tally.note(tally.invalid, (consistency.item_key(new), [consistency.FUTURE_SYNC_DATE]))
            return False
        tally.validation_passed += 1
        return True

    def _announce(self, record_id: str, event: ChangeEvent | None, tally: StreamTally, *, before_deletes: bool) -> None:
        """Queue the record's event; published at once when deletes follow (they must not come first)."""
        if self.outbox is None or event is None:
            return
        self.outbox.add(record_id, event, tally)
        if before_deletes:
            self.outbox.flush(tally)

    # -- regressions ---------------------------------------------------------------------------
    def _restore(self, old: Item, new: Item, tally: StreamTally) -> None:
        """Put the newer (old) image back unless the item has moved on since the regressed write."""
        if (consistency.text_attribute(old, LAST_SYNC_DATE) or "") > self.latest_sync:
            tally.regression_conflicts += 1  # a future-dated image is not a newer write: keep the real one
            return
        # is_regression found both lastSyncDate attributes, as strings
        if not self.table.restore(old, new[LAST_SYNC_DATE]["S"], tally):
            tally.regression_conflicts += 1
            return
        tally.regressions_restored += 1
        tally.note(tally.restored, consistency.item_key(old))

    # -- rescheduled earnings ------------------------------------------------------------------
    def symbol_items(self, symbol: str, tally: StreamTally) -> list[Item]:
        """The symbol's items (keys, period and bookkeeping), consistently read once per invocation.

        A batch holds most of a symbol's records together (its rows travel in one message), so
        one Query serves them all; the items those records describe were written before the batch
        was read, so the first Query already sees them. Our own deletes update the cached list.
        """
        cached = self._symbol_items.get(symbol)
        if cached is not None:
            return cached
        items = self.table.symbol_items(symbol, tally)
        self._symbol_items[symbol] = items
        return items

    def period_items(self, symbol: str, fiscal: str, tally: StreamTally) -> list[Item]:
        """The symbol's items of one fiscal period."""
        return [i for i in self.symbol_items(symbol, tally) if fiscal_date_of(i) == fiscal]

    def plan_settlement(self, symbol: str, fiscal: str, date: str, synced_at: str, tally: StreamTally) -> Settlement:
        """The period's other dates older than `synced_at` go; this date goes if another is newer."""
        others = [
            (key_of(item)[1], last_sync_of(item))
            for item in self.period_items(symbol, fiscal, tally)
            if key_of(item)[1] != date
        ]
        return Settlement(
            superseded=tuple((other, seen) for other, seen in others if seen < synced_at),
            stale=any(seen > synced_at for _, seen in others),
        )

    def settle(self, symbol: str, date: str, synced_at: str, settlement: Settlement, tally: StreamTally) -> None:
        for other_date, seen in settlement.superseded:
            self.delete_superseded(symbol, other_date, seen, tally)
        if settlement.stale:
            self.delete_superseded(symbol, date, synced_at, tally)

    def settle_fiscal_period(self, symbol: str, fiscal: str, date: str, synced_at: str, tally: StreamTally) -> Settlement:
        """Delete the period's other dates older than `synced_at`; delete this date if another is newer."""
        settlement = self.plan_settlement(symbol, fiscal, date, synced_at, tally)
        self.settle(symbol, date, synced_at, settlement, tally)
        return settlement

    def delete_superseded(self, symbol: str, date: str, seen: str, tally: StreamTally) -> bool:
        if not self.table.delete_if_unchanged((symbol, date), seen, tally):
            tally.superseded_conflicts += 1
            return False
        tally.superseded_removed += 1
        cached = self._symbol_items.get(symbol)
        if cached is not None:
            cached[:] = [i for i in cached if key_of(i)[1] != date]
        tally.note(tally.removed, (symbol, date))
        return True


def _change_event(event_name: str, old: Item, new: Item, previous_date: str | None) -> ChangeEvent | None:
    """An INSERT arrives (Scheduled, or Rescheduled from `previous_date`); a MODIFY updates its key."""
    if event_name == "INSERT":
        return change_events.arrival(new, previous_date)
    return change_events.update(old, new)
