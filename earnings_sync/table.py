"""The `earningsCalendar` table: item codec and the conflict-safe upsert.

Conflict rules (README, "Conflict resolution"):
- every item carries `lastSyncDate`, the `synced_at` of the newest sync that wrote or confirmed it;
- a record from an older sync than the stored item is skipped (stale), whatever its content;
- a record from the same or a newer sync whose content differs replaces the item;
- a record whose content equals the item only moves `lastSyncDate`/`sync_id` forward (no content
  write), and costs nothing at all when the item already carries this sync;
- every write is conditional on the `lastSyncDate` that was read (optimistic locking), so a
  concurrent writer can never be overwritten by an older sync: a lost race re-reads and decides again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from earnings_sync.records import EarningsRecord

Item = dict[str, dict[str, Any]]  # DynamoDB low-level attribute-value map
Outcome = Literal["inserted", "updated", "unchanged", "stale"]
WriteMode = Literal["batch", "conditional"]

CONTENT_FIELDS = ("company_name", "fiscal_date_ending", "estimate", "currency", "time_of_the_day")
ITEM_FIELDS = ("asset_symbol", "earnings_date", *CONTENT_FIELDS, "lastSyncDate", "sync_id")
BATCH_GET_LIMIT = 100
BATCH_WRITE_LIMIT = 25

THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TransactionConflictException",
        "InternalServerError",
        "ServiceUnavailable",
        "InternalFailure",
    }
)


# Connection failures that outlived the SDK's retries: as transient as throttling.
TRANSIENT_ERRORS = (BotoConnectionError, HTTPClientError)


class RetryableWriteError(Exception):
    """Throttling or unprocessed work outlived its retries: the whole message should be retried."""


class PoisonRecordError(Exception):
    """DynamoDB refuses this record for good (e.g. ValidationException): retrying cannot help."""


def record_to_item(record: EarningsRecord, sync_id: str, synced_at: str) -> Item:
    item: Item = {
        "asset_symbol": {"S": record.asset_symbol},
        "earnings_date": {"S": record.earnings_date},
        "company_name": {"S": record.company_name},
        "fiscal_date_ending": {"S": record.fiscal_date_ending},
        "estimate": {"N": record.estimate} if record.estimate is not None else {"NULL": True},
        "currency": {"S": record.currency},
        "lastSyncDate": {"S": synced_at},
        "sync_id": {"S": sync_id},
    }
    if record.time_of_the_day is not None:
        item["time_of_the_day"] = {"S": record.time_of_the_day}
    return item


def item_to_plain(item: Item) -> dict[str, Any]:
    """Attribute-value map → plain values (numbers as Decimal, NULL as None), for export and audit."""
    plain: dict[str, Any] = {}
    for name, value in item.items():
        (kind, raw), = value.items()
        if kind == "N":
            plain[name] = Decimal(raw)
        elif kind == "NULL":
            plain[name] = None
        else:
            plain[name] = raw
    return plain


def _content(item: Item) -> tuple:
    estimate = item.get("estimate", {"NULL": True})
    number = Decimal(estimate["N"]) if "N" in estimate else None
    return (
        item.get("company_name", {}).get("S"),
        item.get("fiscal_date_ending", {}).get("S"),
        number,
        item.get("currency", {}).get("S"),
        item.get("time_of_the_day", {}).get("S"),
    )


def same_content(record: EarningsRecord, item: Item) -> bool:
    """Numbers compare as numbers: DynamoDB stores `1.370` as `1.37`."""
    estimate = Decimal(record.estimate) if record.estimate is not None else None
    wanted = (
        record.company_name,
        record.fiscal_date_ending,
        estimate,
        record.currency,
        record.time_of_the_day,
    )
    return wanted == _content(item)


@dataclass
class UpsertResult:
    """What one upsert call did, record by record, plus what it cost."""

    outcomes: dict[Outcome, int] = field(
        default_factory=lambda: {"inserted": 0, "updated": 0, "unchanged": 0, "stale": 0}
    )
    stale_keys: list[tuple[str, str]] = field(default_factory=list)
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

    def count_request(self, kind: str, response: dict | None = None) -> None:
        self.requests[kind] = self.requests.get(kind, 0) + 1
        if response is not None:
            self.retries += response.get("ResponseMetadata", {}).get("RetryAttempts", 0)


def backoff_delays(attempts: int, base: float = 0.05, cap: float = 5.0) -> Iterable[float]:
    """Exponential backoff with full jitter (the AWS architecture blog's recommendation)."""
    for attempt in range(attempts):
        yield random.uniform(0, min(cap, base * 2**attempt))


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
    stored_sync = item.get("lastSyncDate", {}).get("S", "")
    if stored_sync > synced_at:
        return "stale"
    unchanged = same_content(record, item)
    if unchanged and stored_sync == synced_at:
        return "current"
    return "confirm" if unchanged else "update"


def _classified(exc: ClientError, operation: str = "") -> Exception:
    """Throttling → retry the message; ValidationException → this input can never be written."""
    code = exc.response.get("Error", {}).get("Code", "")
    prefix = f"{operation}: " if operation else ""
    if code in THROTTLE_CODES:
        return RetryableWriteError(f"{prefix}{code} after the SDK's retries")
    if code == "ValidationException":
        return PoisonRecordError(f"DynamoDB rejected the record: {exc.response['Error'].get('Message', '')}")
    return exc


class EarningsTable:
    """Adapter around a low-level boto3 DynamoDB client; the client is passed in, never global."""

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        attempts: int = 8,
        sleep: Callable[[float], None] = time.sleep,
        write_mode: WriteMode = "batch",
    ) -> None:
        if write_mode not in ("batch", "conditional"):
            raise ValueError(f"write_mode must be 'batch' or 'conditional', got {write_mode!r}")
        self.client = client
        self.table_name = table_name
        self.attempts = attempts
        self.sleep = sleep
        self.write_mode = write_mode

    # -- reads ---------------------------------------------------------------------------------
    def batch_get(self, keys: Sequence[tuple[str, str]], result: UpsertResult) -> dict[tuple[str, str], Item]:
        """Current items for these keys (consistent reads), retrying UnprocessedKeys with backoff."""
        found: dict[tuple[str, str], Item] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), BATCH_GET_LIMIT):
            request = {
                self.table_name: {
                    "Keys": [
                        {"asset_symbol": {"S": s}, "earnings_date": {"S": d}}
                        for s, d in unique[start : start + BATCH_GET_LIMIT]
                    ],
                    "ConsistentRead": True,
                }
            }
            delays = iter(backoff_delays(self.attempts))
            while request:
                response = self._call("BatchGetItem", result, RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    found[(item["asset_symbol"]["S"], item["earnings_date"]["S"])] = item
                request = response.get("UnprocessedKeys") or {}
                if request:
                    delay = next(delays, None)
                    if delay is None:
                        raise RetryableWriteError("BatchGetItem kept returning UnprocessedKeys")
                    result.retries += 1
                    self.sleep(delay)
        return found

    def get(self, key: tuple[str, str]) -> Item | None:
        response = self.client.get_item(
            TableName=self.table_name,
            Key={"asset_symbol": {"S": key[0]}, "earnings_date": {"S": key[1]}},
            ConsistentRead=True,
        )
        return response.get("Item")

    def scan(self, page_size: int = 1000) -> Iterable[Item]:
        paginator = self.client.get_paginator("scan")
        for page in paginator.paginate(TableName=self.table_name, PaginationConfig={"PageSize": page_size}):
            yield from page.get("Items", [])

    def count(self) -> int:
        paginator = self.client.get_paginator("scan")
        return sum(page["Count"] for page in paginator.paginate(TableName=self.table_name, Select="COUNT"))

    # -- writes --------------------------------------------------------------------------------
    def upsert_records(
        self,
        records: Sequence[EarningsRecord],
        sync_id: str,
        synced_at: str,
        result: UpsertResult | None = None,
    ) -> UpsertResult:
        """Apply one sync's records under the conflict rules; see the module docstring."""
        result = result if result is not None else UpsertResult()
        current = self.batch_get([r.key for r in records], result)
        if self.write_mode == "batch":
            self._upsert_batch(records, current, sync_id, synced_at, result)
            return result
        for index, record in enumerate(records):
            self._apply_one(index, record, current.get(record.key), sync_id, synced_at, result)
        return result

    def _apply_one(
        self, index: int, record: EarningsRecord, item: Item | None, sync_id: str, synced_at: str, result: UpsertResult
    ) -> None:
        try:
            outcome = self._upsert_one(record, item, sync_id, synced_at, result)
        except PoisonRecordError as exc:
            result.poison.append((index, str(exc)))
            return
        result.count(index, outcome)
        if outcome == "stale":
            result.stale_keys.append(record.key)

    def _upsert_batch(
        self,
        records: Sequence[EarningsRecord],
        current: dict[tuple[str, str], Item],
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
                self._batch_put([record_to_item(record, sync_id, synced_at) for _, record, _ in chunk], result)
            except PoisonRecordError:
                # DynamoDB refused the whole request (one bad item): isolate it record by record.
                for index, record, _ in chunk:
                    self._apply_one(index, record, current.get(record.key), sync_id, synced_at, result)
                continue
            for index, _, decision in chunk:
                result.count(index, DECISION_OUTCOME[decision])

    def _batch_put(self, items: list[Item], result: UpsertResult) -> None:
        """BatchWriteItem with UnprocessedItems retried under exponential backoff with full jitter."""
        request: dict[str, Any] = {self.table_name: [{"PutRequest": {"Item": item}} for item in items]}
        delays = iter(backoff_delays(self.attempts))
        while request:
            response = self._call("BatchWriteItem", result, RequestItems=request)
            request = response.get("UnprocessedItems") or {}
            if request:
                delay = next(delays, None)
                if delay is None:
                    raise RetryableWriteError("BatchWriteItem kept returning UnprocessedItems")
                result.retries += 1
                self.sleep(delay)

    def _upsert_one(
        self,
        record: EarningsRecord,
        item: Item | None,
        sync_id: str,
        synced_at: str,
        result: UpsertResult,
    ) -> Outcome:
        """One conditional write on the lastSyncDate just read; a lost race re-reads and re-decides."""
        for _ in range(self.attempts):
            decision = decide(record, item, synced_at)
            if decision in ("stale", "current"):
                return DECISION_OUTCOME[decision]
            if item is None:
                condition, values = "attribute_not_exists(asset_symbol)", {}
            elif "lastSyncDate" in item:
                condition, values = "lastSyncDate = :read", {":read": item["lastSyncDate"]}
            else:  # an item written without bookkeeping (by hand): claim it
                condition, values = "attribute_not_exists(lastSyncDate)", {}
            try:
                if decision == "confirm":
                    response = self.client.update_item(
                        TableName=self.table_name,
                        Key={"asset_symbol": {"S": record.asset_symbol}, "earnings_date": {"S": record.earnings_date}},
                        UpdateExpression="SET lastSyncDate = :s, sync_id = :i",
                        ConditionExpression=condition,
                        ExpressionAttributeValues={**values, ":s": {"S": synced_at}, ":i": {"S": sync_id}},
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    )
                    result.count_request("UpdateItem", response)
                else:
                    response = self.client.put_item(
                        TableName=self.table_name,
                        Item=record_to_item(record, sync_id, synced_at),
                        ConditionExpression=condition,
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                        **({"ExpressionAttributeValues": values} if values else {}),
                    )
                    result.count_request("PutItem", response)
                return DECISION_OUTCOME[decision]
            except TRANSIENT_ERRORS as exc:
                raise RetryableWriteError(f"{type(exc).__name__} after the SDK's retries: {exc}") from exc
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code", "") != "ConditionalCheckFailedException":
                    raise _classified(exc) from exc
                result.count_request("ConditionalCheckFailed")
                result.lost_races += 1
                item = exc.response.get("Item") or self.get(record.key)
        raise RetryableWriteError(f"{record.key} kept losing conditional-write races")

    def _call(self, operation: str, result: UpsertResult, **kwargs: Any) -> dict:
        method = {"BatchGetItem": self.client.batch_get_item, "BatchWriteItem": self.client.batch_write_item}[operation]
        try:
            response = method(**kwargs)
        except ClientError as exc:
            raise _classified(exc, operation) from exc
        except TRANSIENT_ERRORS as exc:
            raise RetryableWriteError(f"{operation}: {type(exc).__name__} after the SDK's retries: {exc}") from exc
        result.count_request(operation, response)
        return response


EXPORT_FIELDS = ("asset_symbol", "earnings_date", "company_name", "fiscal_date_ending", "estimate",
                 "currency", "time_of_the_day", "lastSyncDate", "sync_id")


def export_jsonl(table: EarningsTable, path: str) -> int:
    """Write the table as JSON Lines sorted by key, estimate as a JSON number or null."""
    import msgspec

    encoder = msgspec.json.Encoder(decimal_format="number")
    rows = sorted((item_to_plain(item) for item in table.scan()), key=lambda r: (r["asset_symbol"], r["earnings_date"]))
    with open(path, "wb") as handle:
        for row in rows:
            ordered = {name: row.get(name) for name in EXPORT_FIELDS if name in row or name == "estimate"}
            handle.write(encoder.encode(ordered) + b"\n")
    return len(rows)
