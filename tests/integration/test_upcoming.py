"""Upcoming earnings through the inverted GSI on moto: order, paging across a month, the Scan fallback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from earnings_sync.calendar_table import INDEX_NAME, CalendarTable
from earnings_sync.records import EarningsRecord
from earnings_sync.upcoming import decode_token, encode_token, upcoming_earnings
from earnings_sync.upsert import upsert_records
from earnings_sync_cli.main import main
from tests.helpers import Faults, dynamodb_error

SYNCED = "2025-07-19T06:00:00.000000Z"
# Three report days on each side of the July/August boundary, a few symbols per day.
ROWS = {
    "2025-07-29": ["MSFT", "ABC", "ZED"],
    "2025-07-30": ["META"],
    "2025-07-31": ["AAPL", "AMZN", "XOM", "BRK.B"],
    "2025-08-01": ["CVX", "ABBV"],
    "2025-08-02": [],
    "2025-08-03": ["ZZZ"],
    "2025-08-04": ["NVDA", "A"],
}


@pytest.fixture
def table(aws: dict[str, Any]) -> dict[str, Any]:
    records = [
        EarningsRecord(symbol, day, f"{symbol} Inc", "2025-06-30", "1.00", "USD")
        for day, symbols in ROWS.items()
        for symbol in symbols
    ]
    upsert_records(CalendarTable(aws["dynamodb"], aws["resources"].table_name), records, "sync-1", SYNCED)
    return aws


def expected(first: str, last: str) -> list[tuple[str, str]]:
    return sorted((day, symbol) for day, symbols in ROWS.items() if first <= day <= last for symbol in symbols)


def keys(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(item["earnings_date"], item["asset_symbol"]) for item in items]


def test_one_query_per_day_ordered_by_date_then_symbol(table: dict[str, Any]) -> None:
    result = upcoming_earnings(CalendarTable(table["dynamodb"], table["resources"].table_name), "2025-07-30", "2025-08-03")
    assert keys(result.items) == expected("2025-07-30", "2025-08-03")
    assert result.queries == 5 and not result.fallback_used and result.next_token is None
    assert result.items[0]["company_name"] == "META Inc" and result.duration_ms > 0


def test_small_pages_still_return_everything_in_order(table: dict[str, Any]) -> None:
    result = upcoming_earnings(CalendarTable(table["dynamodb"], table["resources"].table_name), "2025-07-29", "2025-08-04", page_size=2)
    assert keys(result.items) == expected("2025-07-29", "2025-08-04")
    # 2025-07-29: 3 items = 2 pages, 07-30: 1, 07-31: 4 = 2 or 3 pages, 08-01: 1 or 2, 08-02..08-04: 3
    assert result.queries >= 9


def test_a_limit_gives_a_token_that_resumes_across_the_month_boundary(table: dict[str, Any]) -> None:
    client, name = table["dynamodb"], table["resources"].table_name
    seen: list[tuple[str, str]] = []
    token = None
    pages = 0
    while True:
        page = upcoming_earnings(CalendarTable(client, name), "2025-07-30", "2025-08-04", limit=3, page_size=2, start_token=token)
        assert len(page.items) <= 3
        seen.extend(keys(page.items))
        pages += 1
        token = page.next_token
        if token is None:
            break
    assert seen == expected("2025-07-30", "2025-08-04")
    assert pages == 4  # 10 items by 3
    # the token names the last item returned; it is opaque but checked
    assert decode_token(encode_token(("2025-07-31", "XOM"))) == ("2025-07-31", "XOM")
    with pytest.raises(ValueError, match="page token"):
        upcoming_earnings(CalendarTable(client, name), "2025-07-30", "2025-08-04", start_token="bm90LWEtdG9rZW4")


def test_an_index_failure_falls_back_to_a_scan_with_the_same_answer(table: dict[str, Any]) -> None:
    client, name = table["dynamodb"], table["resources"].table_name
    faults = Faults(client, "dynamodb", "Query", [dynamodb_error("ResourceNotFoundException", "index gone")])
    result = upcoming_earnings(CalendarTable(client, name), "2025-07-29", "2025-08-01")
    assert faults.injected == 1
    assert result.fallback_used and result.index_failures == 1 and result.scan_pages >= 1
    assert result.fallback_reason.startswith("ResourceNotFoundException")
    assert keys(result.items) == expected("2025-07-29", "2025-08-01")


def test_a_failure_midway_keeps_what_the_index_gave_and_scans_the_rest(table: dict[str, Any]) -> None:
    client, name = table["dynamodb"], table["resources"].table_name
    Faults(client, "dynamodb", "Query", [None, None, dynamodb_error("ValidationException")])
    result = upcoming_earnings(CalendarTable(client, name), "2025-07-29", "2025-08-04", limit=7)
    assert result.queries == 2 and result.fallback_used
    assert keys(result.items) == expected("2025-07-29", "2025-08-04")[:7]
    resumed = upcoming_earnings(CalendarTable(client, name), "2025-07-29", "2025-08-04", start_token=result.next_token)
    assert keys(result.items) + keys(resumed.items) == expected("2025-07-29", "2025-08-04")
    assert not resumed.fallback_used  # the token works on the index path as well


def test_a_table_without_the_index_is_read_by_scan(aws: dict[str, Any]) -> None:
    client = aws["dynamodb"]
    client.create_table(
        TableName="no-index",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "asset_symbol", "AttributeType": "S"}, {"AttributeName": "earnings_date", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "asset_symbol", "KeyType": "HASH"}, {"AttributeName": "earnings_date", "KeyType": "RANGE"}],
    )
    upsert_records(
        CalendarTable(client, "no-index"),
        [EarningsRecord("B", "2025-08-01", "B", "2025-06-30", None, "USD"), EarningsRecord("A", "2025-08-01", "A", "2025-06-30", None, "USD")],
        "s",
        SYNCED,
    )
    result = upcoming_earnings(CalendarTable(client, "no-index"), "2025-07-31", "2025-08-01")
    assert result.fallback_used and result.index_failures == 1
    assert keys(result.items) == [("2025-08-01", "A"), ("2025-08-01", "B")]
    assert result.items[0]["estimate"] is None


def test_throttling_is_raised_not_scanned(table: dict[str, Any]) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=table["endpoint"], config=Config(retries={"total_max_attempts": 1}))
    faults = Faults(client, "dynamodb", "Query", [dynamodb_error("ProvisionedThroughputExceededException")])
    scans = Faults(client, "dynamodb", "Scan", [])
    with pytest.raises(ClientError, match="ProvisionedThroughputExceeded"):
        upcoming_earnings(CalendarTable(client, table["resources"].table_name), "2025-07-29", "2025-08-01")
    assert (faults.calls, scans.calls) == (1, 0)


@pytest.mark.parametrize(
    ("first", "last", "kwargs", "message"),
    [
        ("2025-08-02", "2025-08-01", {}, "after"),
        ("2025-8-1", "2025-08-01", {}, "ISO date"),
        ("2025-01-01", "2027-12-31", {}, "at most"),
        ("2025-08-01", "2025-08-01", {"limit": 0}, "limit"),
    ],
)
def test_bad_arguments(table: dict[str, Any], first: str, last: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        upcoming_earnings(CalendarTable(table["dynamodb"], table["resources"].table_name), first, last, **kwargs)


def test_cli_reads_a_deployed_table(table: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["upcoming", "--from", "2025-07-31", "--to", "2025-08-01", "--endpoint-url", table["endpoint"], "--table", table["resources"].table_name]
    assert main([*args, "--json", "--limit", "4"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [(i["earnings_date"], i["asset_symbol"]) for i in payload["items"]] == expected("2025-07-31", "2025-08-01")[:4]
    assert payload["items"][0]["estimate"] == 1.0 and payload["next_token"]
    assert payload["metrics"] == {
        "UpcomingIndexQueries": payload["queries"],
        "UpcomingQueryDuration": payload["metrics"]["UpcomingQueryDuration"],
        "UpcomingIndexFailures": 0,
        "UpcomingScanFallbacks": 0,
    }
    assert main([*args, "--token", payload["next_token"]]) == 0
    text = capsys.readouterr().out
    assert "CVX" in text and "AAPL" not in text and "UpcomingIndexQueries=" in text
    assert main(["upcoming", "--from", "2025-08-02", "--to", "2025-08-01"]) == 2
    assert "after" in capsys.readouterr().err


def test_index_name_matches_the_template(aws: dict[str, Any]) -> None:
    description = aws["dynamodb"].describe_table(TableName=aws["resources"].table_name)["Table"]
    assert [index["IndexName"] for index in description["GlobalSecondaryIndexes"]] == [INDEX_NAME]
