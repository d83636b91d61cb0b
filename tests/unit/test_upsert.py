"""The conflict invariants of the upsert (upsert.py through calendar_table.CalendarTable), on moto."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError

from earnings_sync.calendar_table import (
    CalendarTable,
    PoisonRecordError,
    RetryableWriteError,
    item_to_plain,
    record_to_item,
)
from earnings_sync.consumer import MessageConsumer
from earnings_sync.records import EarningsRecord
from earnings_sync.upsert import UpsertResult, WriteMode, upsert_records
from tests.helpers import Faults, dynamodb_error, http_response

OLD, NEW, NEWER = "2025-07-18T06:00:00.000000Z", "2025-07-19T06:00:00.000000Z", "2025-07-20T06:00:00.000000Z"


def rec(symbol: str = "AAPL", date: str = "2025-07-31", estimate: str | None = "1.42", name: str = "Apple Inc") -> EarningsRecord:
    return EarningsRecord(symbol, date, name, "2025-06-30", estimate, "USD")


@dataclass
class Writer:
    """One write path over one gateway, as the consumer runs it."""

    table: CalendarTable
    write_mode: WriteMode

    def upsert(
        self, records: Sequence[EarningsRecord], sync_id: str, synced_at: str, result: UpsertResult | None = None
    ) -> UpsertResult:
        return upsert_records(self.table, records, sync_id, synced_at, result, write_mode=self.write_mode)


@pytest.fixture(params=["conditional", "batch"])
def writer(aws: dict[str, Any], request: pytest.FixtureRequest) -> Writer:
    """Every conflict invariant holds on both write paths."""
    return Writer(CalendarTable(aws["dynamodb"], aws["resources"].table_name, sleep=lambda _: None), request.param)


def stored(table: CalendarTable, symbol: str = "AAPL", date: str = "2025-07-31") -> dict[str, Any]:
    item = table.get((symbol, date))
    assert item is not None
    return item_to_plain(item)


def test_first_sync_inserts_with_bookkeeping(writer: Writer) -> None:
    result = writer.upsert([rec(), rec("MSFT", estimate=None)], "sync-new", NEW)
    assert result.outcomes == {"inserted": 2, "updated": 0, "unchanged": 0, "stale": 0}
    item = stored(writer.table)
    assert item["estimate"] == Decimal("1.42")
    assert item["lastSyncDate"] == NEW and item["sync_id"] == "sync-new"
    assert stored(writer.table, "MSFT")["estimate"] is None


def test_redelivery_of_the_same_sync_costs_no_write(writer: Writer) -> None:
    writer.upsert([rec()], "sync-new", NEW)
    again = writer.upsert([rec()], "sync-new", NEW)
    assert again.outcomes["unchanged"] == 1
    assert set(again.requests) == {"BatchGetItem"}


def test_newer_sync_content_wins(writer: Writer) -> None:
    writer.upsert([rec(estimate="1.42")], "sync-old", OLD)
    result = writer.upsert([rec(estimate="1.50")], "sync-new", NEW)
    assert result.outcomes["updated"] == 1
    item = stored(writer.table)
    assert item["estimate"] == Decimal("1.50") and item["lastSyncDate"] == NEW


def test_unchanged_record_only_moves_the_sync_forward(writer: Writer) -> None:
    writer.upsert([rec()], "sync-old", OLD)
    result = writer.upsert([rec()], "sync-new", NEW)
    assert result.outcomes["unchanged"] == 1
    if writer.write_mode == "conditional":
        assert "PutItem" not in result.requests and result.requests["UpdateItem"] == 1
    else:
        assert result.requests == {"BatchGetItem": 1, "BatchWriteItem": 1}
    assert stored(writer.table)["lastSyncDate"] == NEW and stored(writer.table)["sync_id"] == "sync-new"


def test_numbers_compare_as_numbers(writer: Writer) -> None:
    writer.upsert([rec(estimate="1.4")], "sync-old", OLD)
    result = writer.upsert([rec(estimate="1.40")], "sync-new", NEW)
    assert result.outcomes["unchanged"] == 1


@pytest.mark.parametrize("estimate", ["1.42", "9.99"])
def test_older_sync_never_overwrites_newer_data(writer: Writer, estimate: str) -> None:
    writer.upsert([rec(estimate="1.50")], "sync-new", NEW)
    result = writer.upsert([rec(estimate=estimate)], "sync-old", OLD)
    assert result.outcomes["stale"] == 1 and result.stale_keys == [("AAPL", "2025-07-31")]
    assert set(result.requests) == {"BatchGetItem"}
    item = stored(writer.table)
    assert item["estimate"] == Decimal("1.50") and item["lastSyncDate"] == NEW


def test_same_sync_with_other_content_is_applied(writer: Writer) -> None:
    """A fixed record replayed under its own sync replaces what that sync wrote."""
    writer.upsert([rec(estimate="1.0")], "sync-new", NEW)
    result = writer.upsert([rec(estimate="2.0")], "sync-new", NEW)
    assert result.outcomes["updated"] == 1 and stored(writer.table)["estimate"] == Decimal("2.0")


def test_item_written_by_hand_without_bookkeeping_is_claimed(writer: Writer, aws: dict[str, Any]) -> None:
    item = record_to_item(rec(estimate="5"), "x", NEW)
    del item["lastSyncDate"]
    aws["dynamodb"].put_item(TableName=writer.table.table_name, Item=item)
    result = writer.upsert([rec(estimate="6")], "sync-new", NEW)
    assert result.outcomes["updated"] == 1 and stored(writer.table)["lastSyncDate"] == NEW


class RacingClient:
    """Lets a newer sync write the same key between our read and our conditional write."""

    def __init__(self, client: Any, table: str, newer: EarningsRecord, newer_sync: str) -> None:
        self._client, self._table, self._newer, self._sync = client, table, newer, newer_sync
        self.raced = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _race(self) -> None:
        if not self.raced:
            self.raced = True
            self._client.put_item(TableName=self._table, Item=record_to_item(self._newer, "sync-racer", self._sync))

    def put_item(self, **kwargs: Any) -> Any:
        self._race()
        return self._client.put_item(**kwargs)

    def update_item(self, **kwargs: Any) -> Any:
        self._race()
        return self._client.update_item(**kwargs)


@pytest.mark.parametrize("existing", [False, True])
def test_lost_race_rereads_and_never_regresses(aws: dict[str, Any], existing: bool) -> None:
    name = aws["resources"].table_name
    if existing:
        upsert_records(CalendarTable(aws["dynamodb"], name), [rec(estimate="1")], "sync-old", OLD)
    client = RacingClient(aws["dynamodb"], name, rec(estimate="7.77"), NEWER)
    writer = Writer(CalendarTable(client, name), "conditional")
    result = writer.upsert([rec(estimate="3")], "sync-new", NEW)
    assert client.raced
    assert result.lost_races == 1 and result.outcomes["stale"] == 1
    item = stored(writer.table)
    assert item["estimate"] == Decimal("7.77") and item["lastSyncDate"] == NEWER


def test_race_with_an_older_writer_is_won(aws: dict[str, Any]) -> None:
    name = aws["resources"].table_name
    client = RacingClient(aws["dynamodb"], name, rec(estimate="0.5"), OLD)
    writer = Writer(CalendarTable(client, name), "conditional")
    result = writer.upsert([rec(estimate="3")], "sync-new", NEW)
    assert result.lost_races == 1 and result.outcomes["updated"] == 1
    assert stored(writer.table)["estimate"] == Decimal("3") and stored(writer.table)["lastSyncDate"] == NEW


def test_throttling_is_retried_by_the_sdk_and_counted(aws: dict[str, Any], writer: Writer) -> None:
    operation = "PutItem" if writer.write_mode == "conditional" else "BatchWriteItem"
    faults = Faults(aws["dynamodb"], "dynamodb", operation, [dynamodb_error("ProvisionedThroughputExceededException")] * 2)
    result = writer.upsert([rec()], "sync-new", NEW)
    assert result.outcomes["inserted"] == 1
    assert faults.calls == 3 and result.retries == 2


def test_throttling_beyond_the_retries_raises_retryable(aws: dict[str, Any], writer: Writer) -> None:
    operation = "PutItem" if writer.write_mode == "conditional" else "BatchWriteItem"
    Faults(aws["dynamodb"], "dynamodb", operation, [dynamodb_error("ThrottlingException")] * 50)
    with pytest.raises(RetryableWriteError, match="ThrottlingException"):
        writer.upsert([rec()], "sync-new", NEW)


def test_unprocessed_keys_are_retried_with_backoff(aws: dict[str, Any], writer: Writer) -> None:
    writer.upsert([rec()], "sync-old", OLD)
    delays: list[float] = []
    writer.table.sleep = delays.append

    def unprocessed(request: Any) -> Any:
        import json

        return http_response(200, {"Responses": {}, "UnprocessedKeys": json.loads(request.body)["RequestItems"]})

    Faults(aws["dynamodb"], "dynamodb", "BatchGetItem", [unprocessed, unprocessed])
    result = writer.upsert([rec()], "sync-new", NEW)
    assert result.outcomes["unchanged"] == 1  # the item was found once the keys were processed
    assert len(delays) == 2 and result.retries == 2


def test_unprocessed_keys_forever_is_retryable(aws: dict[str, Any], writer: Writer) -> None:
    import json

    writer.table.attempts = 3
    Faults(aws["dynamodb"], "dynamodb", "BatchGetItem", [lambda r: http_response(200, {"Responses": {}, "UnprocessedKeys": json.loads(r.body)["RequestItems"]})] * 10)
    with pytest.raises(RetryableWriteError, match="UnprocessedKeys"):
        writer.upsert([rec()], "sync-new", NEW)


def test_validation_exception_marks_only_that_record_poison(aws: dict[str, Any], writer: Writer) -> None:
    if writer.write_mode == "batch":  # the batch is refused whole, then records are tried one by one
        Faults(aws["dynamodb"], "dynamodb", "BatchWriteItem", [dynamodb_error("ValidationException", "Item size has exceeded the maximum allowed size")])
    Faults(aws["dynamodb"], "dynamodb", "PutItem", [None, dynamodb_error("ValidationException", "Item size has exceeded the maximum allowed size")])
    result = writer.upsert([rec("A"), rec("B"), rec("C")], "sync-new", NEW)
    assert result.outcomes["inserted"] == 2
    assert result.poison == [(1, "DynamoDB rejected the record: Item size has exceeded the maximum allowed size")]
    assert writer.table.get(("B", "2025-07-31")) is None


def test_other_client_errors_propagate(aws: dict[str, Any], writer: Writer) -> None:
    Faults(aws["dynamodb"], "dynamodb", "PutItem" if writer.write_mode == "conditional" else "BatchWriteItem", [dynamodb_error("AccessDeniedException")])
    with pytest.raises(ClientError):
        writer.upsert([rec()], "sync-new", NEW)


def test_many_keys_are_read_in_chunks_of_100(writer: Writer) -> None:
    records = [rec(f"S{i}") for i in range(130)]
    writer.upsert(records, "sync-old", OLD)
    result = UpsertResult()
    writer.upsert(records, "sync-old", OLD, result)
    assert result.requests == {"BatchGetItem": 2} and result.outcomes["unchanged"] == 130
    assert writer.table.count() == 130


def test_poison_error_type_is_exported() -> None:
    assert issubclass(PoisonRecordError, Exception)


def batch_writer(aws: dict[str, Any]) -> Writer:
    return Writer(CalendarTable(aws["dynamodb"], aws["resources"].table_name, sleep=lambda _: None), "batch")


def test_batch_path_spends_two_requests_per_message(aws: dict[str, Any]) -> None:
    writer = batch_writer(aws)
    records = [rec(f"S{i}") for i in range(25)]
    first = writer.upsert(records, "sync-old", OLD)
    assert first.requests == {"BatchGetItem": 1, "BatchWriteItem": 1} and first.outcomes["inserted"] == 25
    again = writer.upsert(records, "sync-new", NEW)
    assert again.requests == {"BatchGetItem": 1, "BatchWriteItem": 1} and again.outcomes["unchanged"] == 25
    assert {stored(writer.table, f"S{i}")["lastSyncDate"] for i in range(25)} == {NEW}
    replay = writer.upsert(records, "sync-new", NEW)
    assert replay.requests == {"BatchGetItem": 1} and replay.outcomes["unchanged"] == 25


def test_batch_path_retries_unprocessed_items(aws: dict[str, Any]) -> None:
    import json

    writer = batch_writer(aws)
    delays: list[float] = []
    writer.table.sleep = delays.append
    Faults(aws["dynamodb"], "dynamodb", "BatchWriteItem",
           [lambda r: http_response(200, {"UnprocessedItems": json.loads(r.body)["RequestItems"]})])
    result = writer.upsert([rec("A"), rec("B")], "sync-new", NEW)
    assert result.outcomes["inserted"] == 2 and len(delays) == 1 and result.requests["BatchWriteItem"] == 2
    assert writer.table.get(("A", "2025-07-31")) and writer.table.get(("B", "2025-07-31"))
    writer.table.attempts = 2
    Faults(aws["dynamodb"], "dynamodb", "BatchWriteItem",
           [lambda r: http_response(200, {"UnprocessedItems": json.loads(r.body)["RequestItems"]})] * 5)
    with pytest.raises(RetryableWriteError, match="UnprocessedItems"):
        writer.upsert([rec("C")], "sync-new", NEW)


def test_batch_path_keeps_the_last_row_of_a_repeated_key(aws: dict[str, Any]) -> None:
    writer = batch_writer(aws)
    result = writer.upsert([rec(estimate="1"), rec(estimate="2")], "sync-new", NEW)
    assert result.outcomes == {"inserted": 1, "updated": 0, "unchanged": 1, "stale": 0}
    assert stored(writer.table)["estimate"] == Decimal("2")


def test_batch_path_race_window_is_left_to_the_stream_guard(aws: dict[str, Any]) -> None:
    """Documents the trade-off: without a condition, a newer write in the window is overwritten;
    the stream consumer restores it (tested with the stream consumer)."""
    name = aws["resources"].table_name
    client = RacingClient(aws["dynamodb"], name, rec(estimate="7.77"), NEWER)
    client.batch_write_item = lambda **kw: (client._race(), aws["dynamodb"].batch_write_item(**kw))[1]  # type: ignore[method-assign]
    writer = Writer(CalendarTable(client, name), "batch")
    writer.upsert([rec(estimate="3")], "sync-new", NEW)
    assert stored(writer.table)["lastSyncDate"] == NEW  # regressed until the stream consumer sees the MODIFY


def test_unknown_write_mode_is_refused(aws: dict[str, Any]) -> None:
    table = CalendarTable(aws["dynamodb"], aws["resources"].table_name)
    with pytest.raises(ValueError, match="write_mode"):
        upsert_records(table, [rec()], "sync-new", NEW, write_mode="yolo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="write_mode"):
        MessageConsumer(table, aws["sqs"], "https://dlq", 5, write_mode="yolo")  # type: ignore[arg-type]
    assert table.count() == 0
