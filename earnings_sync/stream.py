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
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from earnings_sync import consistency
from earnings_sync.sync_identity import Clock, latest_allowed, utc_now
from earnings_sync.table import Item

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
    requests: Counter[str] = field(default_factory=Counter)
    # (key, rule names) and keys only: never whole items
    invalid: list[tuple[tuple[str, str], list[str]]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)
    restored: list[tuple[str, str]] = field(default_factory=list)

    def note(self, bucket: list, value: Any) -> None:
        if len(bucket) < MAX_NOTED:
            bucket.append(value)


def _key(symbol: str, date: str) -> Item:
    return {"asset_symbol": {"S": symbol}, "earnings_date": {"S": date}}


def _is_condition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class StreamProcessor:
    """Everything the stream handler does for one record, with the DynamoDB client passed in."""

    def __init__(self, client: Any, table_name: str, sole_sync: str | None = None, *, now: Clock = utc_now) -> None:
        """One processor per invocation: it caches each symbol's items for the batch.

        `sole_sync` is the `synced_at` of the only sync ever registered (ledger.sole_sync), read
        when the batch starts: its records need no settling, since superseding takes an older sync
        and a newer one registers before it writes (its own records then settle against these).
        """
        self.client = client
        self.table_name = table_name
        self.sole_sync = sole_sync
        # An image dated after this was not written by a real sync (the consumer bounds synced_at): it
        # is never settled against (it would make every real date of its period look superseded) and
        # never restored over a real write. The audit reports it; `audit --fix` deletes it.
        self.latest_sync = latest_allowed(now)
        self._symbol_items: dict[str, list[Item]] = {}

    def process(self, record: Mapping[str, Any], tally: StreamTally) -> None:
        """`record` is one Lambda DynamoDB stream record (`Records[i]`), images as attribute-value maps."""
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

        violations = consistency.validate_item(new, change.get("Keys"))
        if violations:
            rules = sorted({v.rule for v in violations})
            tally.validation_failed += 1
            tally.violations.update(rules)
            tally.note(tally.invalid, (consistency.item_key(new), rules))
            return
        if new["lastSyncDate"]["S"] > self.latest_sync:
            tally.validation_failed += 1
            tally.violations.update([consistency.FUTURE_SYNC_DATE])
            tally.note(tally.invalid, (consistency.item_key(new), [consistency.FUTURE_SYNC_DATE]))
            return
        tally.validation_passed += 1
        if self.sole_sync is not None and new["lastSyncDate"]["S"] == self.sole_sync:
            tally.initial_load_unsettled += 1
            return
        self.settle_fiscal_period(
            new["asset_symbol"]["S"],
            new["fiscal_date_ending"]["S"],
            new["earnings_date"]["S"],
            new["lastSyncDate"]["S"],
            tally,
        )

    # -- regressions ---------------------------------------------------------------------------
    def _restore(self, old: Item, new: Item, tally: StreamTally) -> None:
        """Put the newer (old) image back unless the item has moved on since the regressed write."""
        if (consistency.text_attribute(old, "lastSyncDate") or "") > self.latest_sync:
            tally.regression_conflicts += 1  # a future-dated image is not a newer write: keep the real one
            return
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=old,
                ConditionExpression="lastSyncDate = :regressed",
                ExpressionAttributeValues={":regressed": new["lastSyncDate"]},
            )
        except ClientError as exc:
            if not _is_condition_failure(exc):
                raise
            tally.requests["ConditionalCheckFailed"] += 1
            tally.regression_conflicts += 1
            return
        tally.requests["PutItem"] += 1
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
        items: list[Item] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "asset_symbol = :s",
            "ProjectionExpression": "asset_symbol, earnings_date, fiscal_date_ending, lastSyncDate",
            "ExpressionAttributeValues": {":s": {"S": symbol}},
            "ConsistentRead": True,
        }
        while True:
            response = self.client.query(**kwargs)
            tally.requests["Query"] += 1
            items.extend(response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        self._symbol_items[symbol] = items
        return items

    def period_items(self, symbol: str, fiscal: str, tally: StreamTally) -> list[Item]:
        """The symbol's items of one fiscal period."""
        return [i for i in self.symbol_items(symbol, tally) if i.get("fiscal_date_ending", {}).get("S") == fiscal]

    def settle_fiscal_period(self, symbol: str, fiscal: str, date: str, synced_at: str, tally: StreamTally) -> None:
        """Delete the period's other dates older than `synced_at`; delete this date if another is newer."""
        others = [
            (item["earnings_date"]["S"], item.get("lastSyncDate", {}).get("S", ""))
            for item in self.period_items(symbol, fiscal, tally)
            if item["earnings_date"]["S"] != date
        ]
        for other_date, seen in others:
            if seen < synced_at:
                self.delete_superseded(symbol, other_date, seen, tally)
        if any(seen > synced_at for _, seen in others):
            self.delete_superseded(symbol, date, synced_at, tally)

    def delete_superseded(self, symbol: str, date: str, seen: str, tally: StreamTally) -> bool:
        if not delete_if_unchanged(self.client, self.table_name, (symbol, date), seen):
            tally.requests["ConditionalCheckFailed"] += 1
            tally.superseded_conflicts += 1
            return False
        tally.requests["DeleteItem"] += 1
        tally.superseded_removed += 1
        cached = self._symbol_items.get(symbol)
        if cached is not None:
            cached[:] = [i for i in cached if i["earnings_date"]["S"] != date]
        tally.note(tally.removed, (symbol, date))
        return True


def delete_if_unchanged(client: Any, table_name: str, key: tuple[str, str], seen: str) -> bool:
    """Delete the item only as it was read (same `lastSyncDate`); False when a write got there first."""
    if seen:
        condition: dict[str, Any] = {
            "ConditionExpression": "lastSyncDate = :seen",
            "ExpressionAttributeValues": {":seen": {"S": seen}},
        }
    else:  # written without bookkeeping (by hand): only while it still has none
        condition = {"ConditionExpression": "attribute_exists(asset_symbol) AND attribute_not_exists(lastSyncDate)"}
    try:
        client.delete_item(TableName=table_name, Key=_key(*key), **condition)
    except ClientError as exc:
        if not _is_condition_failure(exc):
            raise
        return False
    return True
