"""The whole-table audit on moto: dry run vs --fix, and agreement with the stream consumer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from earnings_sync.audit import audit_table, format_report
from earnings_sync.cli import main
from earnings_sync.records import EarningsRecord
from earnings_sync.table import EarningsTable, record_to_item
from tests.helpers import Faults, dynamodb_error
from tests.integration.stream_support import T1, T2, StreamReader, call_handler


def rec(symbol: str, date: str, fiscal: str = "2025-06-30") -> EarningsRecord:
    return EarningsRecord(symbol, date, f"{symbol} Inc", fiscal, "1.00", "USD")


def put(env: dict[str, Any], record: EarningsRecord, synced_at: str, **extra: Any) -> None:
    item = {**record_to_item(record, f"sync-{synced_at[:10]}", synced_at), **extra}
    env["dynamodb"].put_item(TableName=env["resources"].table_name, Item={k: v for k, v in item.items() if v is not None})


def keys(env: dict[str, Any]) -> set[tuple[str, str]]:
    table = EarningsTable(env["dynamodb"], env["resources"].table_name)
    return {(i["asset_symbol"]["S"], i["earnings_date"]["S"]) for i in table.scan()}


@pytest.fixture
def seeded(aws: dict[str, Any]) -> dict[str, Any]:
    """Written around the stream consumer: what the audit exists to find."""
    put(aws, rec("AAPL", "2025-04-30", fiscal="2025-03-31"), T1)  # history: another fiscal period
    put(aws, rec("AAPL", "2025-07-31"), T1)  # superseded by the newer date below
    put(aws, rec("AAPL", "2025-08-01"), T2)
    put(aws, rec("TIE", "2025-08-05"), T2)  # two dates from the same sync: ambiguous, kept
    put(aws, rec("TIE", "2025-08-06"), T2)
    put(aws, rec("BAD", "2025-08-07"), T2, currency={"S": "usd"}, company_name=None)
    put(aws, rec("OK", "2025-08-08"), T2)
    return aws


def test_dry_run_reports_everything_and_changes_nothing(seeded: dict[str, Any]) -> None:
    before = keys(seeded)
    report = audit_table(seeded["dynamodb"], seeded["resources"].table_name)
    assert keys(seeded) == before
    assert report.items == 7 and not report.fix and report.fixed == 0
    assert report.by_rule == {
        "ambiguous_fiscal_period": 2,
        "bad_currency": 1,
        "missing_attribute": 1,
        "superseded": 1,
    }
    assert [(s.key, s.kept_dates) for s in report.superseded] == [(("AAPL", "2025-07-31"), ("2025-08-01",))]
    assert report.invalid_items == 1 and report.remaining == 5
    text = format_report(report)
    assert "1 superseded item(s) would be deleted with --fix" in text and "BAD 2025-08-07: bad_currency" in text


def test_fix_deletes_only_superseded_items(seeded: dict[str, Any]) -> None:
    report = audit_table(seeded["dynamodb"], seeded["resources"].table_name, fix=True)
    assert (report.fixed, report.fix_conflicts) == (1, 0)
    assert keys(seeded) == {
        ("AAPL", "2025-04-30"), ("AAPL", "2025-08-01"), ("TIE", "2025-08-05"), ("TIE", "2025-08-06"),
        ("BAD", "2025-08-07"), ("OK", "2025-08-08"),
    }
    again = audit_table(seeded["dynamodb"], seeded["resources"].table_name)
    assert "superseded" not in again.by_rule and again.by_rule["bad_currency"] == 1


def test_fix_leaves_an_item_a_sync_touched_since_the_scan(seeded: dict[str, Any]) -> None:
    Faults(seeded["dynamodb"], "dynamodb", "DeleteItem", [dynamodb_error("ConditionalCheckFailedException")])
    report = audit_table(seeded["dynamodb"], seeded["resources"].table_name, fix=True)
    assert (report.fixed, report.fix_conflicts) == (0, 1)
    assert ("AAPL", "2025-07-31") in keys(seeded)


def test_the_audit_and_the_stream_consumer_agree(handler_env: dict[str, Any]) -> None:
    """What the audit calls superseded is exactly what the stream consumer removes."""
    stream = StreamReader(handler_env)
    table = EarningsTable(handler_env["dynamodb"], handler_env["resources"].table_name)
    table.upsert_records([rec("AAPL", "2025-07-31"), rec("MSFT", "2025-07-29"), rec("IBM", "2025-04-23", "2025-03-31")], "s1", T1)
    table.upsert_records([rec("AAPL", "2025-08-01"), rec("MSFT", "2025-07-30"), rec("IBM", "2025-07-23")], "s2", T2)
    found = audit_table(handler_env["dynamodb"], handler_env["resources"].table_name)
    assert {s.key for s in found.superseded} == {("AAPL", "2025-07-31"), ("MSFT", "2025-07-29")}

    _, metrics, _ = call_handler(stream.event())
    assert metrics["SupersededRemoved"] == len(found.superseded)
    assert metrics["ValidationFailed"] == found.invalid_items == 0
    after = audit_table(handler_env["dynamodb"], handler_env["resources"].table_name)
    assert after.findings == [] and after.items == found.items - len(found.superseded)


def test_cli_dry_run_fix_and_exit_codes(seeded: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    target = ["--endpoint-url", seeded["endpoint"], "--table", seeded["resources"].table_name]
    assert main(["audit", *target, "--json"]) == 1
    dry = json.loads(capsys.readouterr().out)
    assert dry["superseded"] == 1 and not dry["fix"] and dry["remaining"] == 5
    assert {"rule": "superseded", "key": ["AAPL", "2025-07-31"]}.items() <= next(
        f for f in dry["findings"] if f["rule"] == "superseded"
    ).items()
    assert main(["audit", *target, "--fix"]) == 1  # invalid and ambiguous items remain
    assert "deleted 1 superseded item(s)" in capsys.readouterr().out
    assert ("AAPL", "2025-07-31") not in keys(seeded)
    assert main(["audit", "--csv", "x.csv", *target]) == 2
    assert "--csv builds its own table" in capsys.readouterr().err


def test_cli_clean_table_exits_zero(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    put(aws, rec("OK", "2025-08-08"), T2)
    assert main(["audit", "--endpoint-url", aws["endpoint"], "--table", aws["resources"].table_name]) == 0
    assert "1 items, 0 finding(s)" in capsys.readouterr().out
