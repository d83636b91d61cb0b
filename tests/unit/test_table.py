"""The conflict invariants of the upsert, on moto."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError

from earnings_sync.records import EarningsRecord
from earnings_sync.table import (
    EarningsTable,
    PoisonRecordError,
    RetryableWriteError,
    UpsertResult,
    item_to_plain,
    record_to_item,
)
from tests.helpers import Faults, dynamodb_error, http_response

OLD, NEW, NEWER = "2025-07-18T06:00:00.000000Z", "2025-07-19T06:00:00.000000Z", "2025-07-20T06:00:00.000000Z"


def rec(symbol: str = "AAPL", date: str = "2025-07-31", estimate: str | None = "1.42", name: str = "Apple Inc") -> EarningsRecord:
    return EarningsRecord(symbol, date, name, "2025-06-30", estimate, "USD")


@pytest.fixture(params=["conditional", "batch"])
def table(aws: dict[str, Any], request: pytest.FixtureRequest) -> EarningsTable:
    """Every conflict invariant holds on both write paths."""
    return EarningsTable(aws["dynamodb"], aws["resources"].table_name, sleep=lambda _: None, write_mode=request.param)


def stored(table: EarningsTable, symbol: str = "AAPL", date: str = "2025-07-31") -> dict[str, Any]:
    item = table.get((symbol, date))
    assert item is not None
    return item_to_plain(item)


def test_first_sync_inserts_with_bookkeeping(table: EarningsTable) -> None:
    result = table.upsert_records([rec(), rec("MSFT", estimate=None)], "sync-new", NEW)
    assert result.outcomes == {"inserted": 2, "updated": 0, "unchanged": 0, "stale": 0}
    item = stored(table)
    assert item["estimate"] == Decimal("1.42")
    assert item["lastSyncDate"] == NEW and item["sync_id"] == "sync-new"
    assert stored(table, "MSFT")["estimate"] is None


def test_redelivery_of_the_same_sync_costs_no_write(table: EarningsTable) -> None:
    table.upsert_records([rec()], "sync-new", NEW)
    again = table.upsert_records([rec()], "sync-new", NEW)
    assert again.outcomes["unchanged"] == 1
    assert set(again.requests) == {"BatchGetItem"}


def test_newer_sync_content_wins(table: EarningsTable) -> None:
    table.upsert_records([rec(estimate="1.42")], "sync-old", OLD)
    result = table.upsert_records([rec(estimate="1.50")], "sync-new", NEW)
    assert result.outcomes["updated"] == 1
    item = stored(table)
    assert item["estimate"] == Decimal("1.50") and item["lastSyncDate"] == NEW


def test_unchanged_record_only_moves_the_sync_forward(table: EarningsTable) -> None:
    table.upsert_records([rec()], "sync-old", OLD)
    result = table.upsert_records([rec()], "sync-new", NEW)
    assert result.outcomes["unchanged"] == 1
    if table.write_mode == "conditional":
        assert "PutItem" not in result.requests and result.requests["UpdateItem"] == 1
    else:
        assert result.requests == {"BatchGetItem": 1, "BatchWriteItem": 1}
    assert stored(table)["lastSyncDate"] == NEW and stored(table)["sync_id"] == "sync-new"


def test_numbers_compare_as_numbers(table: EarningsTable) -> None:
    table.upsert_records([rec(estimate="1.4")], "sync-old", OLD)
    result = table.upsert_records([rec(estimate="1.40")], "sync-new", NEW)
    assert result.outcomes["unchanged"] == 1


@pytest.mark.parametrize("estimate", ["1.42", "9.99"])
def test_older_sync_never_overwrites_newer_data(table: EarningsTable, estimate: str) -> None:
    table.upsert_records([rec(estimate="1.50")], "sync-new", NEW)
    result = table.upsert_records([rec(estimate=estimate)], "sync-old", OLD)
    assert result.outcomes["stale"] == 1 and result.stale_keys == [("AAPL", "2025-07-31")]
    assert set(result.requests) == {"BatchGetItem"}
    item = stored(table)
    assert item["estimate"] == Decimal("1.50") and item["lastSyncDate"] == NEW


def test_same_sync_with_other_content_is_applied(table: EarningsTable) -> None:
    """A fixed record replayed under its own sync replaces what that sync wrote."""
    table.upsert_records([rec(estimate="1.0")], "sync-new", NEW)
    result = table.upsert_records([rec(estimate="2.0")], "sync-new", NEW)
    assert result.outcomes["updated"] == 1 and stored(table)["estimate"] == Decimal("2.0")


def test_item_written_by_hand_without_bookkeeping_is_claimed(table: EarningsTable, aws: dict[str, Any]) -> None:
    item = record_to_item(rec(estimate="5"), "x", NEW)
    del item["lastSyncDate"]
    aws["dynamodb"].put_item(TableName=table.table_name, Item=item)
    result = table.upsert_records([rec(estimate="6")], "sync-new", NEW)
    assert result.outcomes["updated"] == 1 and stored(table)["lastSyncDate"] == NEW


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
        EarningsTable(aws["dynamodb"], name).upsert_records([rec(estimate="1")], "sync-old", OLD)
    client = RacingClient(aws["dynamodb"], name, rec(estimate="7.77"), NEWER)
    table = EarningsTable(client, name, write_mode="conditional")
    result = table.upsert_records([rec(estimate="3")], "sync-new", NEW)
    assert client.raced
    assert result.lost_races == 1 and result.outcomes["stale"] == 1
    item = stored(table)
    assert item["estimate"] == Decimal("7.77") and item["lastSyncDate"] == NEWER


def test_race_with_an_older_writer_is_won(aws: dict[str, Any]) -> None:
    name = aws["resources"].table_name
    client = RacingClient(aws["dynamodb"], name, rec(estimate="0.5"), OLD)
    table = EarningsTable(client, name, write_mode="conditional")
    result = table.upsert_records([rec(estimate="3")], "sync-new", NEW)
    assert result.lost_races == 1 and result.outcomes["updated"] == 1
    assert stored(table)["estimate"] == Decimal("3") and stored(table)["lastSyncDate"] == NEW


def test_throttling_is_retried_by_the_sdk_and_counted(aws: dict[str, Any], table: EarningsTable) -> None:
    operation = "PutItem" if table.write_mode == "conditional" else "BatchWriteItem"
    faults = Faults(aws["dynamodb"], "dynamodb", operation, [dynamodb_error("ProvisionedThroughputExceededException")] * 2)
    result = table.upsert_records([rec()], "sync-new", NEW)
    assert result.outcomes["inserted"] == 1
    assert faults.calls == 3 and result.retries == 2


def test_throttling_beyond_the_retries_raises_retryable(aws: dict[str, Any], table: EarningsTable) -> None:
    operation = "PutItem" if table.write_mode == "conditional" else "BatchWriteItem"
    Faults(aws["dynamodb"], "dynamodb", operation, [dynamodb_error("ThrottlingException")] * 50)
    with pytest.raises(RetryableWriteError, match="ThrottlingException"):
        table.upsert_records([rec()], "sync-new", NEW)


def test_unprocessed_keys_are_retried_with_backoff(aws: dict[str, Any], table: EarningsTable) -> None:
    table.upsert_records([rec()], "sync-old", OLD)
    delays: list[float] = []
    table.sleep = delays.append

    def unprocessed(request: Any) -> Any:
        import json

        return http_response(200, {"Responses": {}, "UnprocessedKeys": json.loads(request.body)["RequestItems"]})

    Faults(aws["dynamodb"], "dynamodb", "BatchGetItem", [unprocessed, unprocessed])
    result = table.upsert_records([rec()], "sync-new", NEW)
    assert result.outcomes["unchanged"] == 1  # the item was found once the keys were processed
    assert len(delays) == 2 and result.retries == 2


def test_unprocessed_keys_forever_is_retryable(aws: dict[str, Any], table: EarningsTable) -> None:
    import json

    table.attempts = 3
    Faults(aws["dynamodb"], "dynamodb", "BatchGetItem", [lambda r: http_response(200, {"Responses": {}, "UnprocessedKeys": json.loads(r.body)["RequestItems"]})] * 10)
    with pytest.raises(RetryableWriteError, match="UnprocessedKeys"):
        table.upsert_records([rec()], "sync-new", NEW)


def test_validation_exception_marks_only_that_record_poison(aws: dict[str, Any], table: EarningsTable) -> None:
    if table.write_mode == "batch":  # the batch is refused whole, then records are tried one by one
        Faults(aws["dynamodb"], "dynamodb", "BatchWriteItem", [dynamodb_error("ValidationException", "Item size has exceeded the maximum allowed size")])
    Faults(aws["dynamodb"], "dynamodb", "PutItem", [None, dynamodb_error("ValidationException", "Item size has exceeded the maximum allowed size")])
    result = table.upsert_records([rec("A"), rec("B"), rec("C")], "sync-new", NEW)
    assert result.outcomes["inserted"] == 2
    assert result.poison == [(1, "DynamoDB rejected the record: Item size has exceeded the maximum allowed size")]
    assert table.get(("B", "2025-07-31")) is None


def test_other_client_errors_propagate(aws: dict[str, Any], table: EarningsTable) -> None:
    Faults(aws["dynamodb"], "dynamodb", "PutItem" if table.write_mode == "conditional" else "BatchWriteItem", [dynamodb_error("AccessDeniedException")])
    with pytest.raises(ClientError):
        table.upsert_records([rec()], "sync-new", NEW)


def test_many_keys_are_read_in_chunks_of_100(table: EarningsTable) -> None:
    records = [rec(f"S{i}") for i in range(130)]
    table.upsert_records(records, "sync-old", OLD)
    result = UpsertResult()
    table.upsert_records(records, "sync-old", OLD, result)
    assert result.requests == {"BatchGetItem": 2} and result.outcomes["unchanged"] == 130
    assert table.count() == 130


def test_poison_error_type_is_exported() -> None:
    assert issubclass(PoisonRecordError, Exception)


def batch_table(aws: dict[str, Any]) -> EarningsTable:
    return EarningsTable(aws["dynamodb"], aws["resources"].table_name, sleep=lambda _: None, write_mode="batch")


def test_batch_path_spends_two_requests_per_message(aws: dict[str, Any]) -> None:
    table = batch_table(aws)
    records = [rec(f"S{i}") for i in range(25)]
    first = table.upsert_records(records, "sync-old", OLD)
    assert first.requests == {"BatchGetItem": 1, "BatchWriteItem": 1} and first.outcomes["inserted"] == 25
    again = table.upsert_records(records, "sync-new", NEW)
    assert again.requests == {"BatchGetItem": 1, "BatchWriteItem": 1} and again.outcomes["unchanged"] == 25
    assert {stored(table, f"S{i}")["lastSyncDate"] for i in range(25)} == {NEW}
    replay = table.upsert_records(records, "sync-new", NEW)
    assert replay.requests == {"BatchGetItem": 1} and replay.outcomes["unchanged"] == 25


def test_batch_path_retries_unprocessed_items(aws: dict[str, Any]) -> None:
    import json

    table = batch_table(aws)
    delays: list[float] = []
    table.sleep = delays.append
    Faults(aws["dynamodb"], "dynamodb", "BatchWriteItem",
           [lambda r: http_response(200, {"UnprocessedItems": json.loads(r.body)["RequestItems"]})])
    result = table.upsert_records([rec("A"), rec("B")], "sync-new", NEW)
    assert result.outcomes["inserted"] == 2 and len(delays) == 1 and result.requests["BatchWriteItem"] == 2
    assert table.get(("A", "2025-07-31")) and table.get(("B", "2025-07-31"))
    table.attempts = 2
    Faults(aws["dynamodb"], "dynamodb", "BatchWriteItem",
           [lambda r: http_response(200, {"UnprocessedItems": json.loads(r.body)["RequestItems"]})] * 5)
    with pytest.raises(RetryableWriteError, match="UnprocessedItems"):
        table.upsert_records([rec("C")], "sync-new", NEW)


def test_batch_path_keeps_the_last_row_of_a_repeated_key(aws: dict[str, Any]) -> None:
    table = batch_table(aws)
    result = table.upsert_records([rec(estimate="1"), rec(estimate="2")], "sync-new", NEW)
    assert result.outcomes == {"inserted": 1, "updated": 0, "unchanged": 1, "stale": 0}
    assert stored(table)["estimate"] == Decimal("2")


def test_batch_path_race_window_is_left_to_the_stream_guard(aws: dict[str, Any]) -> None:
    """Documents the trade-off: without a condition, a newer write in the window is overwritten;
    the stream consumer restores it (tested with the stream consumer)."""
    name = aws["resources"].table_name
    client = RacingClient(aws["dynamodb"], name, rec(estimate="7.77"), NEWER)
    client.batch_write_item = lambda **kw: (client._race(), aws["dynamodb"].batch_write_item(**kw))[1]  # type: ignore[method-assign]
    table = EarningsTable(client, name, write_mode="batch")
    table.upsert_records([rec(estimate="3")], "sync-new", NEW)
    assert stored(table)["lastSyncDate"] == NEW  # regressed until the stream consumer sees the MODIFY


def test_unknown_write_mode_is_refused(aws: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="write_mode"):
        EarningsTable(aws["dynamodb"], "t", write_mode="yolo")  # type: ignore[arg-type]
