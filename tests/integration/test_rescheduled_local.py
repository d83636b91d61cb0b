"""Rescheduled earnings end to end through `run_local`: producer → SQS → consumer → table → stream
consumer, two successive syncs; the summary, the table, the audit and the GSI read must agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from earnings_sync import aws as aws_clients
from earnings_sync.audit import audit_table
from earnings_sync.calendar_table import CalendarTable, item_to_plain
from earnings_sync.upcoming import upcoming_earnings
from earnings_sync_cli.local import format_summary
from earnings_sync_cli.main import main
from earnings_sync_local.pipeline import run_local
from tests.conftest import csv_text

T1, T2 = "2025-07-18T06:00:00.000000Z", "2025-07-19T06:00:00.000000Z"

FIRST = [
    "AAPL,Apple Inc,2025-07-31,2025-06-30,1.42,USD",
    "AAPL,Apple Inc,2025-04-30,2025-03-31,1.60,USD",  # last quarter: history, absent from the second file
    "MSFT,Microsoft Corp,2025-07-29,2025-06-30,3.35,USD",
    "SHOP,Shopify Inc,2025-08-06,2025-06-30,0.29,CAD",
    "IBM,IBM Corp,2025-07-23,2025-06-30,2.64,USD",
]
SECOND = [
    "AAPL,Apple Inc,2025-08-01,2025-06-30,1.42,USD",  # moved a day, same fiscal period
    "MSFT,Microsoft Corp,2025-07-29,2025-06-30,3.35,USD",  # unchanged
    "SHOP,Shopify Inc,2025-07-30,2025-06-30,0.30,CAD",  # moved across the month, estimate revised
    "IBM,IBM Corp,2025-07-23,2025-06-30,2.70,USD",  # same date, estimate revised
    "NVDA,NVIDIA Corp,2025-08-27,2025-07-31,1.00,USD",  # new
]
MOVED = {("AAPL", "2025-07-31"), ("SHOP", "2025-08-06")}


@pytest.fixture
def snapshots(tmp_path: Path) -> list[str]:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text(csv_text(*FIRST))
    second.write_text(csv_text(*SECOND))
    return [str(first), str(second)]


def test_the_newest_sync_decides_each_fiscal_period_and_history_is_kept(snapshots: list[str]) -> None:
    seen: dict[str, Any] = {}

    def inspect(summary: Any, emulator: Any) -> None:
        client = aws_clients.client("dynamodb")
        name = emulator.resources.table_name
        table = CalendarTable(client, name)
        seen["items"] = [item_to_plain(i) for i in table.all_items()]
        seen["audit"] = audit_table(table)
        seen["upcoming"] = upcoming_earnings(table, "2025-07-29", "2025-08-02", limit=3)

    summary = run_local(snapshots, synced_at=[T1, T2], on_ready=inspect)
    assert summary.ok, summary.as_dict()
    first, second = summary.syncs

    # The table: one date per (symbol, fiscal period), the newest sync's; older periods kept.
    periods: dict[tuple[str, str], list[str]] = {}
    for item in seen["items"]:
        periods.setdefault((item["asset_symbol"], item["fiscal_date_ending"]), []).append(item["earnings_date"])
    assert periods == {
        ("AAPL", "2025-06-30"): ["2025-08-01"],
        ("AAPL", "2025-03-31"): ["2025-04-30"],
        ("MSFT", "2025-06-30"): ["2025-07-29"],
        ("SHOP", "2025-06-30"): ["2025-07-30"],
        ("IBM", "2025-06-30"): ["2025-07-23"],
        ("NVDA", "2025-07-31"): ["2025-08-27"],
    }
    by_key = {(i["asset_symbol"], i["earnings_date"]): i for i in seen["items"]}
    assert by_key[("AAPL", "2025-04-30")]["lastSyncDate"] == T1  # history: not in the newer snapshot
    assert all(i["lastSyncDate"] == T2 for k, i in by_key.items() if k != ("AAPL", "2025-04-30"))
    assert not MOVED & set(by_key)

    # The summary says what happened, per sync.
    assert (first.validation_passed, first.superseded_removed, first.bookkeeping_only) == (5, 0, 0)
    assert first.validation_failed == {}
    assert second.superseded_removed == len(MOVED)
    assert second.bookkeeping_only == 1  # MSFT, confirmed unchanged
    assert second.validation_passed == 4  # AAPL, SHOP (new dates), IBM (revised), NVDA (new)
    assert second.validation_failed == {} and second.regressions_restored == 0
    assert second.stream_records == 3 + 2 + len(MOVED)  # INSERTs AAPL/SHOP/NVDA, MODIFYs MSFT/IBM, REMOVEs
    assert summary.table_items == len(seen["items"]) == 6 and summary.stream_failure_messages == 0

    # The audit agrees: nothing superseded or invalid left, the same item count.
    audit = seen["audit"]
    assert audit.findings == [] and audit.items == summary.table_items
    assert audit.by_rule == {**first.validation_failed, **second.validation_failed} == {}

    # And the GSI read sees the moved dates, ordered, across the month boundary.
    upcoming = seen["upcoming"]
    assert [(i["earnings_date"], i["asset_symbol"]) for i in upcoming.items] == [
        ("2025-07-29", "MSFT"),
        ("2025-07-30", "SHOP"),
        ("2025-08-01", "AAPL"),
    ]
    assert upcoming.next_token is not None and not upcoming.fallback_used

    text = format_summary(summary)
    assert "superseded removed 2" in text and "bookkeeping-only 1" in text
    row = summary.as_dict()["syncs"][1]
    assert (row["superseded_removed"], row["validation_failed_total"], row["bookkeeping_only"]) == (2, 0, 1)


def test_cli_audit_on_csvs(snapshots: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--json", "--csv", *snapshots]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["items"] == 6 and report["by_rule"] == {}


def test_cli_upcoming_on_csvs(snapshots: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["upcoming", "--from", "2025-07-30", "--to", "2025-08-01", "--csv", *snapshots]) == 0
    out = capsys.readouterr().out
    assert out.index("SHOP") < out.index("AAPL") and "2025-07-31" not in out
    assert main(["upcoming", "--from", "2025-07-30", "--to", "2025-08-01", "--csv", "/nonexistent.csv"]) == 2
