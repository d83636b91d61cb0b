"""The conflict-safe upsert of one sync's records into `earningsCalendar` (through `calendar_table`).

Conflict rules (README, "Conflict resolution"):
- every item carries `lastSyncDate`, the `synced_at` of the newest sync that wrote or confirmed it;
- a record from an older sync than the stored item is skipped (stale), whatever its content;
- a record from the same or a newer sync whose content differs replaces the item;
- a record whose content equals the item only moves `lastSyncDate`/`sync_id` forward (no content
  write), and costs nothing at all when the item already carries this sync;
- every write is conditional on the `lastSyncDate` that was read (optimistic locking), so a
  concurrent writer can never be overwritten by an older sync: a lost race re-reads and decides again.

Two strategies apply them (README, "Write path"): `batch` decides from one BatchGetItem and writes
in BatchWriteItem requests, `conditional` writes record by record with a condition each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from earnings_sync.calendar_table import (
    BATCH_WRITE_LIMIT,
    CalendarTable,
    Item,
    Key,
    LostRace,
    PoisonRecordError,
    RetryableWriteError,
    last_sync_of,
    record_to_item,
    same_content,
)
from earnings_sync.records import EarningsRecord

Outcome = Literal["inserted", "updated", "unchanged", "stale"]
WriteMode = Literal["batch", "conditional"]
WRITE_MODES: tuple[WriteMode, ...] = ("batch", "conditional")


@dataclass
class UpsertResult:
    """What one upsert call did, record by record, plus what it cost (a `calendar_table.WriteLog`)."""

    outcomes: dict[Outcome, int] = field(
        default_factory=lambda: {"inserted": 0, "updated": 0, "unchanged": 0, "stale": 0}
    )
    stale_keys: list[Key] = field(default_factory=list)
    poison: list[tuple[int, str]] = field(default_factory=list)  # (index in input, reason)
    by_index: dict[int, Outcome] = field(default_factory=dict)  # each record's outcome, for the ledger
    retries: int = 0  # throttled/unprocessed attempts that were retried
    lost_races: int = 0  # conditional writes that found a concurrent writer and re-decided
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def written(self) -> int:
        return self.outcomes["inserted"] + self.outcomes["updated"]

    def count(self, index: int, outcome: Outcome) -> None:
        self.outcomes[outcome] += 1
        self.by_index[index] = outcome

    def count_request(self, kind: str, response: Mapping[str, Any] | None = None) -> None:
        self.requests[kind] = self.requests.get(kind, 0) + 1
        if response is not None:
            self.retries += response.get("ResponseMetadata", {}).get("RetryAttempts", 0)

    def count_retry(self) -> None:
        self.retries += 1


Decision = Literal["insert", "update", "confirm", "current", "stale"]
DECISION_OUTCOME: dict[Decision, Outcome] = {
    "insert": "inserted",
    "update": "updated",
    "confirm": "unchanged",  # same content, older sync: only lastSyncDate/sync_id move forward
    "current": "unchanged",  # this sync already wrote it: nothing to do
    "stale": "stale",
}


def decide(record: EarningsRecord, item: Item | None, synced_at: str) -> Decision:
    """The conflict rules, as one pure function of the record and the stored item."""
    if item is None:
        return "insert"
    stored_sync = last_sync_of(item)
    if stored_sync > synced_at:
        return "stale"
    unchanged = same_content(record, item)
    if unchanged and stored_sync == synced_at:
        return "current"
    return "confirm" if unchanged else "update"


def check_write_mode(write_mode: Any) -> WriteMode:
    if write_mode not in WRITE_MODES:
        raise ValueError(f"write_mode must be 'batch' or 'conditional', got {write_mode!r}")
    return write_mode


def upsert_records(
    table: CalendarTable,
    records: Sequence[EarningsRecord],
    sync_id: str,
    synced_at: str,
    result: UpsertResult | None = None,
    *,
    write_mode: WriteMode = "batch",
) -> UpsertResult:
    """Apply one sync's records under the conflict rules; see the module docstring."""
    check_write_mode(write_mode)
    result = result if result is not None else UpsertResult()
    current = table.batch_get([r.key for r in records], result)
    if write_mode == "batch":
        _upsert_batch(table, records, current, sync_id, synced_at, result)
        return result
    for index, record in enumerate(records):
        _apply_one(table, index, record, current.get(record.key), sync_id, synced_at, result)
    return result


def _apply_one(
    table: CalendarTable,
    index: int,
    record: EarningsRecord,
    item: Item | None,
    sync_id: str,
    synced_at: str,
    result: UpsertResult,
) -> None:
    try:
        outcome = _upsert_one(table, record, item, sync_id, synced_at, result)
    except PoisonRecordError as exc:
        result.poison.append((index, str(exc)))
        return
    result.count(index, outcome)
    if outcome == "stale":
        result.stale_keys.append(record.key)


def _upsert_batch(
    table: CalendarTable,
    records: Sequence[EarningsRecord],
    current: dict[Key, Item],
    sync_id: str,
    synced_at: str,
    result: UpsertResult,
) -> None:
    """Decide from the state just read, then one BatchWriteItem per 25 writes.

    BatchWriteItem takes no condition: a newer sync writing the same key between our read and
    our write would be overwritten. The stream consumer guards that window: a MODIFY whose new
    image carries an older lastSyncDate than its old image is restored (README, "Write path").
    """
    last_index = {record.key: index for index, record in enumerate(records)}
    writes: list[tuple[int, EarningsRecord, Decision]] = []
    for index, record in enumerate(records):
        if last_index[record.key] != index:
            result.count(index, "unchanged")  # a later row of this message has the same key
            continue
        decision = decide(record, current.get(record.key), synced_at)
        if decision == "stale":
            result.count(index, "stale")
            result.stale_keys.append(record.key)
        elif decision == "current":
            result.count(index, "unchanged")
        else:
            writes.append((index, record, decision))
    for start in range(0, len(writes), BATCH_WRITE_LIMIT):
        chunk = writes[start : start + BATCH_WRITE_LIMIT]
        try:
            table.batch_put([record_to_item(record, sync_id, synced_at) for _, record, _ in chunk], result)
        except PoisonRecordError:
            # DynamoDB refused the whole request (one bad item): isolate it record by record.
            for index, record, _ in chunk:
                _apply_one(table, index, record, current.get(record.key), sync_id, synced_at, result)
            continue
        for index, _, decision in chunk:
            result.count(index, DECISION_OUTCOME[decision])


def _upsert_one(
    table: CalendarTable,
    record: EarningsRecord,
    item: Item | None,
    sync_id: str,
    synced_at: str,
    result: UpsertResult,
) -> Outcome:
    """One conditional write on the lastSyncDate just read; a lost race re-reads and re-decides."""
    for _ in range(table.attempts):
        decision = decide(record, item, synced_at)
        if decision in ("stale", "current"):
            return DECISION_OUTCOME[decision]
        try:
            if decision == "confirm":
                table.confirm(record.key, sync_id, synced_at, item, result)
            else:
                table.put_if_sync(record_to_item(record, sync_id, synced_at), item, result)
        except LostRace as lost:
            result.lost_races += 1
            item = lost.current
            continue
        return DECISION_OUTCOME[decision]
    raise RetryableWriteError(f"{record.key} kept losing conditional-write races")
