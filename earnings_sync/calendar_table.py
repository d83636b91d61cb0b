"""The `earningsCalendar` table's gateway: its attribute names, the item codec, every item-level call.

The rest of the core speaks of records, `(asset_symbol, earnings_date)` keys and attribute-value
items, and reaches the table only through `CalendarTable`, which is passed in (the client inside it
is never global). What to write is decided elsewhere: the conflict rules in `upsert`, the stream
consumer's repairs in `stream`, the audit's cleanups in `audit`. This module knows how: the
requests, their conditions, the retries of unprocessed work, and what an error means for the
caller (throttling or a lost connection: retry the message; ValidationException: the record can
never be written; a failed condition: another writer got there first).

Each call that costs a request counts it, by kind, on the `RequestLog` it is given: the counts
become the `DynamoDBRequests_<kind>` metrics and the `earnings-sync local` summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

import msgspec
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from earnings_sync.backoff import backoff_delays
from earnings_sync.records import EarningsRecord

Item = dict[str, dict[str, Any]]  # DynamoDB low-level attribute-value map
Key = tuple[str, str]  # (asset_symbol, earnings_date)

# -- names (template.yaml declares the same ones) ------------------------------------------------
SYMBOL = "asset_symbol"  # partition key
DATE = "earnings_date"  # sort key
FISCAL_DATE = "fiscal_date_ending"
LAST_SYNC_DATE = "lastSyncDate"  # synced_at of the newest sync that wrote or confirmed the item
SYNC_ID = "sync_id"  # that sync's id
# Set by the regression guard's restore: the lastSyncDate of the write it undid. Bookkeeping, like the
# two above; it tells the restore's own stream record from a sync's write (change events skip it).
RESTORED_OVER = "restoredOver"
KEY_FIELDS = (SYMBOL, DATE)
CONTENT_FIELDS = ("company_name", FISCAL_DATE, "estimate", "currency", "time_of_the_day")
ITEM_FIELDS = (*KEY_FIELDS, *CONTENT_FIELDS, LAST_SYNC_DATE, SYNC_ID)
INDEX_NAME = "upcoming-earnings-index"  # HASH earnings_date, RANGE asset_symbol: the inverted key
INDEX_ATTRIBUTES = (*KEY_FIELDS, *CONTENT_FIELDS)  # keys + the index's NonKeyAttributes in template.yaml
BATCH_GET_LIMIT = 100
BATCH_WRITE_LIMIT = 25

# -- what an error means ---------------------------------------------------------------------------
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


class LostRace(Exception):
    """A conditional write found another writer's item; `current` is what it left (None: no item)."""

    def __init__(self, current: Item | None) -> None:
        super().__init__("the item changed since it was read")
        self.current = current


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_throttling(exc: ClientError) -> bool:
    return error_code(exc) in THROTTLE_CODES


def _is_condition_failure(exc: ClientError) -> bool:
    return error_code(exc) == "ConditionalCheckFailedException"


def _classified(exc: ClientError, operation: str = "") -> Exception:
    """Throttling → retry the message; ValidationException → this input can never be written."""
    code = error_code(exc)
    prefix = f"{operation}: " if operation else ""
    if code in THROTTLE_CODES:
        return RetryableWriteError(f"{prefix}{code} after the SDK's retries")
    if code == "ValidationException":
        return PoisonRecordError(f"DynamoDB rejected the record: {exc.response['Error'].get('Message', '')}")
    return exc


# -- where the cost of a call is counted ---------------------------------------------------------
class RequestLog(Protocol):
    """Requests by kind (`BatchGetItem`, `PutItem`, `ConditionalCheckFailed`, ...), with the response
    when there is one (it carries the SDK's retry attempts)."""

    def count_request(self, kind: str, response: Mapping[str, Any] | None = None) -> None: ...


class WriteLog(RequestLog, Protocol):
    """A RequestLog that also counts our own retries of unprocessed work."""

    def count_retry(self) -> None: ...


# -- the item codec ----------------------------------------------------------------------------------
def key_attributes(key: Key) -> Item:
    return {SYMBOL: {"S": key[0]}, DATE: {"S": key[1]}}


def key_of(item: Mapping[str, Any]) -> Key:
    """The key of an attribute-value item that has one (read from the table, not a stream image to check)."""
    return (item[SYMBOL]["S"], item[DATE]["S"])


def plain_key(plain: Mapping[str, Any]) -> Key:
    """The key of an `item_to_plain` item."""
    return (plain[SYMBOL], plain[DATE])


def last_sync_of(item: Mapping[str, Any]) -> str:
    """The item's `lastSyncDate`, '' when it has none (written by hand)."""
    return item.get(LAST_SYNC_DATE, {}).get("S", "")


def fiscal_date_of(item: Mapping[str, Any]) -> str | None:
    return item.get(FISCAL_DATE, {}).get("S")


def index_start(day: str, symbol: str) -> Item:
    """Where a Query of one report day resumes: right after `symbol` (index and table share the key attributes)."""
    return {DATE: {"S": day}, SYMBOL: {"S": symbol}}


def record_to_item(record: EarningsRecord, sync_id: str, synced_at: str) -> Item:
    item: Item = {
        SYMBOL: {"S": record.asset_symbol},
        DATE: {"S": record.earnings_date},
        "company_name": {"S": record.company_name},
        FISCAL_DATE: {"S": record.fiscal_date_ending},
        "estimate": {"N": record.estimate} if record.estimate is not None else {"NULL": True},
        "currency": {"S": record.currency},
        LAST_SYNC_DATE: {"S": synced_at},
        SYNC_ID: {"S": sync_id},
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
        item.get(FISCAL_DATE, {}).get("S"),
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


def _expected(read: Item | None) -> tuple[str, Item]:
    """The condition that the item is still as it was read: (ConditionExpression, its values)."""
    if read is None:
        return f"attribute_not_exists({SYMBOL})", {}
    if LAST_SYNC_DATE in read:
        return f"{LAST_SYNC_DATE} = :read", {":read": read[LAST_SYNC_DATE]}
    return f"attribute_not_exists({LAST_SYNC_DATE})", {}  # an item written without bookkeeping (by hand)


class Page(NamedTuple):
    items: list[Item]
    last_key: Item | None  # LastEvaluatedKey: where the next page starts, None after the last one


# -- the gateway -------------------------------------------------------------------------------------
class CalendarTable:
    """Every item-level request on `earningsCalendar`, over a low-level boto3 DynamoDB client.

    `attempts` bounds our own retries (UnprocessedKeys/UnprocessedItems here, lost races in `upsert`);
    `sleep` is how a backoff waits (tests pass a recorder).
    """

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

    # -- the consumer's batch path ------------------------------------------------------------
    def batch_get(self, keys: Sequence[Key], log: WriteLog) -> dict[Key, Item]:
        """Current items for these keys (consistent reads), retrying UnprocessedKeys with backoff."""
        found: dict[Key, Item] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), BATCH_GET_LIMIT):
            request = {
                self.table_name: {
                    "Keys": [key_attributes(key) for key in unique[start : start + BATCH_GET_LIMIT]],
                    "ConsistentRead": True,
                }
            }
            delays = iter(backoff_delays(self.attempts))
            while request:
                response = self._batch("BatchGetItem", log, RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    found[key_of(item)] = item
                request = response.get("UnprocessedKeys") or {}
                if request:
                    self._back_off(delays, "BatchGetItem kept returning UnprocessedKeys", log)
        return found

    def batch_put(self, items: list[Item], log: WriteLog) -> None:
        """BatchWriteItem (≤ 25 items, no condition), UnprocessedItems retried with backoff."""
        request: dict[str, Any] = {self.table_name: [{"PutRequest": {"Item": item}} for item in items]}
        delays = iter(backoff_delays(self.attempts))
        while request:
            response = self._batch("BatchWriteItem", log, RequestItems=request)
            request = response.get("UnprocessedItems") or {}
            if request:
                self._back_off(delays, "BatchWriteItem kept returning UnprocessedItems", log)

    def _back_off(self, delays: Iterator[float], exhausted: str, log: WriteLog) -> None:
        delay = next(delays, None)
        if delay is None:
            raise RetryableWriteError(exhausted)
        log.count_retry()
        self.sleep(delay)

    def _batch(self, operation: str, log: WriteLog, **kwargs: Any) -> dict:
        method = {"BatchGetItem": self.client.batch_get_item, "BatchWriteItem": self.client.batch_write_item}[operation]
        try:
            response = method(**kwargs)
        except ClientError as exc:
            raise _classified(exc, operation) from exc
        except TRANSIENT_ERRORS as exc:
            raise RetryableWriteError(f"{operation}: {type(exc).__name__} after the SDK's retries: {exc}") from exc
        log.count_request(operation, response)
        return response

    # -- the consumer's conditional path ------------------------------------------------------
    def put_if_sync(self, item: Item, read: Item | None, log: RequestLog) -> None:
        """Put `item` only while the stored item is as `read` (same `lastSyncDate`, or still absent).

        LostRace when another writer got there first; RetryableWriteError or PoisonRecordError as the error says.
        """
        condition, values = _expected(read)
        self._write_if(
            "PutItem",
            key_of(item),
            log,
            Item=item,
            ConditionExpression=condition,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
            **({"ExpressionAttributeValues": values} if values else {}),
        )

    def confirm(self, key: Key, sync_id: str, synced_at: str, read: Item | None, log: RequestLog) -> None:
        """Move only `lastSyncDate`/`sync_id` forward, under the same condition as `put_if_sync`."""
        condition, values = _expected(read)
        self._write_if(
            "UpdateItem",
            key,
            log,
            Key=key_attributes(key),
            UpdateExpression=f"SET {LAST_SYNC_DATE} = :s, {SYNC_ID} = :i",
            ConditionExpression=condition,
            ExpressionAttributeValues={**values, ":s": {"S": synced_at}, ":i": {"S": sync_id}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )

    def _write_if(self, operation: str, key: Key, log: RequestLog, **kwargs: Any) -> None:
        method = {"PutItem": self.client.put_item, "UpdateItem": self.client.update_item}[operation]
        try:
            response = method(TableName=self.table_name, **kwargs)
        except TRANSIENT_ERRORS as exc:
            raise RetryableWriteError(f"{type(exc).__name__} after the SDK's retries: {exc}") from exc
        except ClientError as exc:
            if not _is_condition_failure(exc):
                raise _classified(exc) from exc
            log.count_request("ConditionalCheckFailed")
            raise LostRace(exc.response.get("Item") or self.get(key)) from exc
        log.count_request(operation, response)

    def get(self, key: Key) -> Item | None:
        """The stored item (consistent read), None when there is none."""
        response = self.client.get_item(TableName=self.table_name, Key=key_attributes(key), ConsistentRead=True)
        return response.get("Item")

    # -- the stream consumer's repairs and the audit's cleanups -------------------------------
    def restore(self, image: Item, regressed_sync: str, log: RequestLog) -> bool:
        """Put `image` back while the item still carries `regressed_sync`; False when it has moved on.
        The image goes back marked `restoredOver` = `regressed_sync`."""
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item={**image, RESTORED_OVER: {"S": regressed_sync}},
                ConditionExpression=f"{LAST_SYNC_DATE} = :regressed",
                ExpressionAttributeValues={":regressed": {"S": regressed_sync}},
            )
        except ClientError as exc:
            if not _is_condition_failure(exc):
                raise
            log.count_request("ConditionalCheckFailed")
            return False
        log.count_request("PutItem")
        return True

    def delete_if_unchanged(self, key: Key, seen: str, log: RequestLog | None = None) -> bool:
        """Delete the item only as it was read (same `lastSyncDate`, '' for none); False when a write
        got there first."""
        if seen:
            condition: dict[str, Any] = {
                "ConditionExpression": f"{LAST_SYNC_DATE} = :seen",
                "ExpressionAttributeValues": {":seen": {"S": seen}},
            }
        else:  # written without bookkeeping (by hand): only while it still has none
            condition = {
                "ConditionExpression": f"attribute_exists({SYMBOL}) AND attribute_not_exists({LAST_SYNC_DATE})"
            }
        try:
            self.client.delete_item(TableName=self.table_name, Key=key_attributes(key), **condition)
        except ClientError as exc:
            if not _is_condition_failure(exc):
                raise
            if log is not None:
                log.count_request("ConditionalCheckFailed")
            return False
        if log is not None:
            log.count_request("DeleteItem")
        return True

    def symbol_items(self, symbol: str, log: RequestLog) -> list[Item]:
        """The symbol's items, consistently read: keys, fiscal period and `lastSyncDate` only."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": f"{SYMBOL} = :s",
            "ProjectionExpression": ", ".join((*KEY_FIELDS, FISCAL_DATE, LAST_SYNC_DATE)),
            "ExpressionAttributeValues": {":s": {"S": symbol}},
            "ConsistentRead": True,
        }
        items: list[Item] = []
        while True:
            response = self.client.query(**request)
            log.count_request("Query")
            items.extend(response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return items
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    # -- who reports between two dates --------------------------------------------------------
    def query_day(self, day: str, *, limit: int, start: Item | None = None, index_name: str = INDEX_NAME) -> Page:
        """One page of one report day from the inverted index, in symbol order. ClientErrors are
        raised as they are: the caller decides between a fallback and a failure."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": index_name,
            "KeyConditionExpression": f"{DATE} = :d",
            "ExpressionAttributeValues": {":d": {"S": day}},
            "Limit": limit,
        }
        if start is not None:
            request["ExclusiveStartKey"] = start
        response = self.client.query(**request)
        return Page(response.get("Items", []), response.get("LastEvaluatedKey"))

    def scan_dates(self, first_day: str, last_day: str, *, limit: int, start: Item | None = None) -> Page:
        """One page of a Scan for first_day <= earnings_date <= last_day, with the index's attributes
        (so both read paths answer with the same item shape); `limit` counts items examined."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "FilterExpression": f"{DATE} BETWEEN :a AND :b",
            "ProjectionExpression": ", ".join(INDEX_ATTRIBUTES),
            "ExpressionAttributeValues": {":a": {"S": first_day}, ":b": {"S": last_day}},
            "Limit": limit,
        }
        if start is not None:
            request["ExclusiveStartKey"] = start
        response = self.client.scan(**request)
        return Page(response.get("Items", []), response.get("LastEvaluatedKey"))

    # -- the whole table ------------------------------------------------------------------------
    def all_items(self, page_size: int = 1000) -> Iterator[Item]:
        """Every item, a Scan page at a time (the audit, the export)."""
        request: dict[str, Any] = {"TableName": self.table_name, "Limit": page_size}
        while True:
            response = self.client.scan(**request)
            yield from response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                return
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def count(self) -> int:
        request: dict[str, Any] = {"TableName": self.table_name, "Select": "COUNT"}
        total = 0
        while True:
            response = self.client.scan(**request)
            total += response["Count"]
            if "LastEvaluatedKey" not in response:
                return total
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def export_jsonl(table: CalendarTable, path: str) -> int:
    """Write the table as JSON Lines sorted by key, estimate as a JSON number or null."""
    encoder = msgspec.json.Encoder(decimal_format="number")
    rows = sorted((item_to_plain(item) for item in table.all_items()), key=plain_key)
    with open(path, "wb") as handle:
        for row in rows:
            ordered = {name: row.get(name) for name in ITEM_FIELDS if name in row or name == "estimate"}
            handle.write(encoder.encode(ordered) + b"\n")
    return len(rows)
