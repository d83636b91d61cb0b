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

from botocore.exceptions import ClientError

from earnings_sync.records import EarningsRecord

Item = dict[str, dict[str, Any]]  # DynamoDB low-level attribute-value map
Outcome = Literal["inserted", "updated", "unchanged", "stale"]

CONTENT_FIELDS = ("company_name", "fiscal_date_ending", "estimate", "currency", "time_of_the_day")
ITEM_FIELDS = ("asset_symbol", "earnings_date", *CONTENT_FIELDS, "lastSyncDate", "sync_id")
BATCH_GET_LIMIT = 100

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
    retries: int = 0  # throttled/unprocessed attempts that were retried
    lost_races: int = 0  # conditional writes that found a concurrent writer and re-decided
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def written(self) -> int:
        return self.outcomes["inserted"] + self.outcomes["updated"]

    def count_request(self, kind: str, response: dict | None = None) -> None:
        self.requests[kind] = self.requests.get(kind, 0) + 1
        if response is not None:
            self.retries += response.get("ResponseMetadata", {}).get("RetryAttempts", 0)


def backoff_delays(attempts: int, base: float = 0.05, cap: float = 5.0) -> Iterable[float]:
    """Exponential backoff with full jitter (the AWS architecture blog's recommendation)."""
    for attempt in range(attempts):
        yield random.uniform(0, min(cap, base * 2**attempt))


class EarningsTable:
    """Adapter around a low-level boto3 DynamoDB client; the client is passed in, never global."""

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        attempts: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.attempts = attempts
        self.sleep = sleep

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
        for index, record in enumerate(records):
            try:
                outcome = self._upsert_one(record, current.get(record.key), sync_id, synced_at, result)
            except PoisonRecordError as exc:
                result.poison.append((index, str(exc)))
                continue
            result.outcomes[outcome] += 1
            if outcome == "stale":
                result.stale_keys.append(record.key)
        return result

    def _upsert_one(
        self,
        record: EarningsRecord,
        item: Item | None,
        sync_id: str,
        synced_at: str,
        result: UpsertResult,
    ) -> Outcome:
        for _ in range(self.attempts):
            if item is None:
                condition = "attribute_not_exists(asset_symbol)"
                values: dict[str, Any] = {}
                outcome: Outcome = "inserted"
            else:
                stored_sync = item.get("lastSyncDate", {}).get("S", "")
                if stored_sync > synced_at:
                    return "stale"
                unchanged = same_content(record, item)
                if unchanged and stored_sync == synced_at:
                    return "unchanged"  # this sync already wrote it: a redelivery costs nothing
                if stored_sync:
                    condition = "lastSyncDate = :read"
                    values = {":read": {"S": stored_sync}}
                else:  # an item written without bookkeeping (by hand): claim it
                    condition = "attribute_not_exists(lastSyncDate)"
                    values = {}
                outcome = "unchanged" if unchanged else "updated"
            try:
                if outcome == "unchanged":
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
                    kwargs: dict[str, Any] = {}
                    if values:
                        kwargs["ExpressionAttributeValues"] = values
                    response = self.client.put_item(
                        TableName=self.table_name,
                        Item=record_to_item(record, sync_id, synced_at),
                        ConditionExpression=condition,
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                        **kwargs,
                    )
                    result.count_request("PutItem", response)
                return outcome
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code == "ConditionalCheckFailedException":
                    result.count_request("ConditionalCheckFailed")
                    result.lost_races += 1
                    item = exc.response.get("Item") or self.get(record.key)
                    continue
                if code in THROTTLE_CODES:
                    raise RetryableWriteError(f"{code} after the SDK's retries") from exc
                if code == "ValidationException":
                    raise PoisonRecordError(f"DynamoDB rejected the record: {exc.response['Error'].get('Message', '')}") from exc
                raise
        raise RetryableWriteError(f"{record.key} kept losing conditional-write races")

    def _call(self, operation: str, result: UpsertResult, **kwargs: Any) -> dict:
        method = {"BatchGetItem": self.client.batch_get_item, "BatchWriteItem": self.client.batch_write_item}[operation]
        try:
            response = method(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in THROTTLE_CODES:
                raise RetryableWriteError(f"{operation}: {code} after the SDK's retries") from exc
            raise
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
