"""The `earningsCalendar` gateway on moto: the codec, each request's condition, and what each call counts."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from earnings_sync.calendar_table import (
    INDEX_ATTRIBUTES,
    ITEM_FIELDS,
    CalendarTable,
    LostRace,
    PoisonRecordError,
    RetryableWriteError,
    export_jsonl,
    index_start,
    item_to_plain,
    key_of,
    last_sync_of,
    plain_key,
    record_to_item,
    same_content,
)
from earnings_sync.records import EarningsRecord
from tests.helpers import Faults, dynamodb_error

T1, T2, T3 = "2025-07-18T06:00:00.000000Z", "2025-07-19T06:00:00.000000Z", "2025-07-20T06:00:00.000000Z"


def rec(symbol: str = "AAPL", date: str = "2025-07-31", estimate: str | None = "1.42", time_of_day: str | None = None) -> EarningsRecord:
    return EarningsRecord(symbol, date, f"{symbol} Inc", "2025-06-30", estimate, "USD", time_of_day)


class Log:
    """A RequestLog/WriteLog that remembers everything it was told."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.retries = 0
        self.responses: list[Mapping[str, Any] | None] = []

    def count_request(self, kind: str, response: Mapping[str, Any] | None = None) -> None:
        self.requests[kind] += 1
        self.responses.append(response)

    def count_retry(self) -> None:
        self.retries += 1


@pytest.fixture
def table(aws: dict[str, Any]) -> CalendarTable:
    return CalendarTable(aws["dynamodb"], aws["resources"].table_name, sleep=lambda _: None)


def put(table: CalendarTable, record: EarningsRecord, synced_at: str) -> None:
    table.batch_put([record_to_item(record, f"sync-{synced_at[:10]}", synced_at)], Log())


def stored_sync(table: CalendarTable, key: tuple[str, str]) -> str | None:
    item = table.get(key)
    return None if item is None else last_sync_of(item)


@pytest.mark.parametrize("record", [rec(), rec(estimate=None), rec(time_of_day="post-market"), rec("BRK.B", estimate="-0.05")])
def test_the_codec_round_trips_a_record(record: EarningsRecord) -> None:
    item = record_to_item(record, "sync-1", T1)
    assert key_of(item) == record.key == plain_key(item_to_plain(item))
    assert same_content(record, item) and last_sync_of(item) == T1
    plain = item_to_plain(item)
    assert set(plain) <= set(ITEM_FIELDS) and (plain["sync_id"], plain["lastSyncDate"]) == ("sync-1", T1)
    assert plain["estimate"] == (None if record.estimate is None else Decimal(record.estimate))
    assert ("time_of_the_day" in plain) == (record.time_of_the_day is not None)
    assert not same_content(rec(record.asset_symbol, estimate="9.99"), item)


def test_batch_get_reads_what_batch_put_wrote_and_counts_both(table: CalendarTable) -> None:
    log = Log()
    table.batch_put([record_to_item(rec(s), "sync-1", T1) for s in ("A", "B")], log)
    found = table.batch_get([("A", "2025-07-31"), ("B", "2025-07-31"), ("A", "2025-07-31"), ("C", "2025-07-31")], log)
    assert set(found) == {("A", "2025-07-31"), ("B", "2025-07-31")}
    assert log.requests == {"BatchWriteItem": 1, "BatchGetItem": 1} and log.retries == 0
    assert all(response is not None for response in log.responses)  # the SDK's retry attempts are read from them


def test_put_if_sync_writes_while_the_item_is_as_read_and_reports_a_lost_race(table: CalendarTable) -> None:
    log = Log()
    table.put_if_sync(record_to_item(rec(estimate="1"), "sync-1", T1), None, log)  # absent, as read
    read = table.get(rec().key)
    assert read is not None and log.requests == {"PutItem": 1}
    put(table, rec(estimate="7"), T3)  # another writer, after our read
    with pytest.raises(LostRace) as lost:
        table.put_if_sync(record_to_item(rec(estimate="2"), "sync-2", T2), read, log)
    assert lost.value.current is not None and last_sync_of(lost.value.current) == T3
    assert log.requests == {"PutItem": 1, "ConditionalCheckFailed": 1}
    with pytest.raises(LostRace):  # "absent" is a condition too
        table.put_if_sync(record_to_item(rec(estimate="2"), "sync-2", T2), None, log)
    assert stored_sync(table, rec().key) == T3


def test_confirm_moves_only_the_bookkeeping(table: CalendarTable) -> None:
    put(table, rec(estimate="1"), T1)
    read = table.get(rec().key)
    log = Log()
    table.confirm(rec().key, "sync-2", T2, read, log)
    item = item_to_plain(table.get(rec().key) or {})
    assert (item["lastSyncDate"], item["sync_id"], item["estimate"]) == (T2, "sync-2", Decimal("1"))
    with pytest.raises(LostRace) as lost:  # the item moved on: the read is stale
        table.confirm(rec().key, "sync-3", T3, read, log)
    assert lost.value.current is not None and last_sync_of(lost.value.current) == T2
    assert log.requests == {"UpdateItem": 1, "ConditionalCheckFailed": 1}


def test_an_item_without_bookkeeping_is_claimed_only_as_it_is(table: CalendarTable, aws: dict[str, Any]) -> None:
    hand_written = {k: v for k, v in record_to_item(rec(), "x", T1).items() if k != "lastSyncDate"}
    aws["dynamodb"].put_item(TableName=table.table_name, Item=hand_written)
    table.confirm(rec().key, "sync-2", T2, hand_written, Log())
    assert stored_sync(table, rec().key) == T2


@pytest.mark.parametrize(
    ("code", "error"), [("ThrottlingException", RetryableWriteError), ("ValidationException", PoisonRecordError)]
)
def test_a_conditional_write_says_what_an_error_means(table: CalendarTable, aws: dict[str, Any], code: str, error: type) -> None:
    Faults(aws["dynamodb"], "dynamodb", "PutItem", [dynamodb_error(code)] * 10)
    with pytest.raises(error):
        table.put_if_sync(record_to_item(rec(), "sync-1", T1), None, Log())


def test_restore_puts_the_image_back_only_over_the_regressed_sync(table: CalendarTable) -> None:
    put(table, rec(estimate="2"), T2)
    newer = table.get(rec().key)
    assert newer is not None
    put(table, rec(estimate="1"), T1)  # an older sync's write landed last
    log = Log()
    assert table.restore(newer, T1, log) is True
    assert item_to_plain(table.get(rec().key) or {})["estimate"] == Decimal("2")
    assert table.restore(newer, T1, log) is False  # it carries T2 now, not the regressed T1
    assert log.requests == {"PutItem": 1, "ConditionalCheckFailed": 1}


def test_delete_if_unchanged_deletes_only_what_was_seen(table: CalendarTable, aws: dict[str, Any]) -> None:
    put(table, rec("A"), T2)
    log = Log()
    assert table.delete_if_unchanged(("A", "2025-07-31"), T1, log) is False  # a sync touched it since
    assert table.delete_if_unchanged(("A", "2025-07-31"), T2, log) is True
    assert table.delete_if_unchanged(("A", "2025-07-31"), T2) is False  # gone; no log needed
    assert log.requests == {"ConditionalCheckFailed": 1, "DeleteItem": 1}
    hand_written = {k: v for k, v in record_to_item(rec("B"), "x", T1).items() if k != "lastSyncDate"}
    aws["dynamodb"].put_item(TableName=table.table_name, Item=hand_written)
    assert table.delete_if_unchanged(("C", "2025-07-31"), "") is False  # "" still needs an item
    assert table.delete_if_unchanged(("B", "2025-07-31"), "") is True and table.get(("B", "2025-07-31")) is None


def test_a_delete_refused_otherwise_is_raised(table: CalendarTable, aws: dict[str, Any]) -> None:
    Faults(aws["dynamodb"], "dynamodb", "DeleteItem", [dynamodb_error("AccessDeniedException")])
    with pytest.raises(ClientError):
        table.delete_if_unchanged(("A", "2025-07-31"), T1, Log())


def small_pages(client: Any, operation: str, limit: int = 2) -> None:
    """Every `operation` request asks for `limit` items, so paging is exercised on a small table."""

    def cap(params: dict[str, Any], **_: Any) -> None:
        params["Limit"] = min(params.get("Limit", limit), limit)

    client.meta.events.register(f"provide-client-params.dynamodb.{operation}", cap)


def test_symbol_items_reads_every_page_and_counts_each_query(table: CalendarTable, aws: dict[str, Any]) -> None:
    for day in ("2025-04-30", "2025-07-29", "2025-07-30", "2025-07-31", "2025-10-30"):
        put(table, rec("AAPL", day), T1)
    put(table, rec("MSFT"), T1)
    small_pages(aws["dynamodb"], "Query")
    log = Log()
    items = table.symbol_items("AAPL", log)
    assert [key_of(i)[1] for i in items] == ["2025-04-30", "2025-07-29", "2025-07-30", "2025-07-31", "2025-10-30"]
    assert set(items[0]) == {"asset_symbol", "earnings_date", "fiscal_date_ending", "lastSyncDate"}  # projected
    assert log.requests == {"Query": 3}


def test_query_day_pages_through_one_report_day_of_the_index(table: CalendarTable) -> None:
    for symbol in ("C", "A", "B"):
        put(table, rec(symbol, "2025-08-01"), T1)
    put(table, rec("A", "2025-08-02"), T1)
    first = table.query_day("2025-08-01", limit=2)
    assert [key_of(i) for i in first.items] == [("A", "2025-08-01"), ("B", "2025-08-01")] and first.last_key
    rest = table.query_day("2025-08-01", limit=2, start=first.last_key)
    assert [key_of(i) for i in rest.items] == [("C", "2025-08-01")]
    after_a = table.query_day("2025-08-01", limit=10, start=index_start("2025-08-01", "A"))
    assert [key_of(i) for i in after_a.items] == [("B", "2025-08-01"), ("C", "2025-08-01")] and after_a.last_key is None
    with pytest.raises(ClientError):  # raised as it is: `upcoming` decides about the fallback
        table.query_day("2025-08-01", limit=1, index_name="no-such-index")


def test_scan_dates_filters_and_projects_like_the_index(table: CalendarTable, aws: dict[str, Any]) -> None:
    for symbol, day in (("A", "2025-07-31"), ("B", "2025-08-01"), ("C", "2025-08-02"), ("D", "2025-08-03")):
        put(table, rec(symbol, day), T1)
    small_pages(aws["dynamodb"], "Scan")
    found, start, pages = [], None, 0
    while True:
        page = table.scan_dates("2025-08-01", "2025-08-02", limit=1000, start=start)
        found.extend(page.items)
        pages += 1
        if page.last_key is None:
            break
        start = page.last_key
    assert sorted(key_of(i) for i in found) == [("B", "2025-08-01"), ("C", "2025-08-02")] and pages >= 2
    assert all(set(i) <= set(INDEX_ATTRIBUTES) and "lastSyncDate" not in i for i in found)


def test_all_items_count_and_export_see_the_whole_table(table: CalendarTable, tmp_path: Path) -> None:
    records = [rec("B", estimate=None), rec("A", "2025-08-01", time_of_day="pre-market"), rec("A")]
    for record in records:
        put(table, record, T1)
    assert sorted(key_of(i) for i in table.all_items(page_size=2)) == sorted(r.key for r in records)
    assert table.count() == 3
    path = tmp_path / "table.jsonl"
    assert export_jsonl(table, str(path)) == 3
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["asset_symbol"], r["earnings_date"]) for r in rows] == [("A", "2025-07-31"), ("A", "2025-08-01"), ("B", "2025-07-31")]
    assert list(rows[1]) == list(ITEM_FIELDS) and rows[1]["estimate"] == 1.42
    assert rows[2]["estimate"] is None and "time_of_the_day" not in rows[2]
