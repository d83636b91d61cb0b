"""The whole-table audit on moto: dry run vs --fix, and agreement with the stream consumer."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from earnings_sync.audit import audit_table, format_report
from earnings_sync.calendar_table import CalendarTable, key_of, record_to_item
from earnings_sync.ledger import SyncLedger
from earnings_sync.records import EarningsRecord
from earnings_sync.upsert import upsert_records
from earnings_sync_cli.main import main
from tests.helpers import Faults, dynamodb_error, sync_id_for
from tests.integration.stream_support import T1, T2, T3, StreamReader, call_handler


def rec(symbol: str, date: str, fiscal: str = "2025-06-30") -> EarningsRecord:
    return EarningsRecord(symbol, date, f"{symbol} Inc", fiscal, "1.00", "USD")


def put(env: dict[str, Any], record: EarningsRecord, synced_at: str, **extra: Any) -> None:
    item = {**record_to_item(record, f"sync-{synced_at[:10]}", synced_at), **extra}
    env["dynamodb"].put_item(TableName=env["resources"].table_name, Item={k: v for k, v in item.items() if v is not None})


def calendar(env: dict[str, Any]) -> CalendarTable:
    return CalendarTable(env["dynamodb"], env["resources"].table_name)


def keys(env: dict[str, Any]) -> set[tuple[str, str]]:
    return {key_of(i) for i in calendar(env).all_items()}


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
    report = audit_table(calendar(seeded))
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
    report = audit_table(calendar(seeded), fix=True)
    assert (report.fixed, report.fix_conflicts) == (1, 0)
    assert keys(seeded) == {
        ("AAPL", "2025-04-30"), ("AAPL", "2025-08-01"), ("TIE", "2025-08-05"), ("TIE", "2025-08-06"),
        ("BAD", "2025-08-07"), ("OK", "2025-08-08"),
    }
    again = audit_table(calendar(seeded))
    assert "superseded" not in again.by_rule and again.by_rule["bad_currency"] == 1


def test_fix_leaves_an_item_a_sync_touched_since_the_scan(seeded: dict[str, Any]) -> None:
    Faults(seeded["dynamodb"], "dynamodb", "DeleteItem", [dynamodb_error("ConditionalCheckFailedException")])
    report = audit_table(calendar(seeded), fix=True)
    assert (report.fixed, report.fix_conflicts) == (0, 1)
    assert ("AAPL", "2025-07-31") in keys(seeded)


def test_the_audit_and_the_stream_consumer_agree(handler_env: dict[str, Any]) -> None:
    """What the audit calls superseded is exactly what the stream consumer removes."""
    stream = StreamReader(handler_env)
    table = calendar(handler_env)
    upsert_records(table, [rec("AAPL", "2025-07-31"), rec("MSFT", "2025-07-29"), rec("IBM", "2025-04-23", "2025-03-31")], "s1", T1)
    upsert_records(table, [rec("AAPL", "2025-08-01"), rec("MSFT", "2025-07-30"), rec("IBM", "2025-07-23")], "s2", T2)
    found = audit_table(calendar(handler_env))
    assert {s.key for s in found.superseded} == {("AAPL", "2025-07-31"), ("MSFT", "2025-07-29")}

    _, metrics, _ = call_handler(stream.event())
    assert metrics["SupersededRemoved"] == len(found.superseded)
    assert metrics["ValidationFailed"] == found.invalid_items == 0
    after = audit_table(calendar(handler_env))
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


# --------------------------------------------------------------------------- sync metadata

FUTURE = "2999-01-01T00:00:00.000000Z"


def at(text: str) -> Any:
    """A clock that says `text` (a synced_at)."""
    moment = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return lambda: moment


def forge(env: dict[str, Any], record: EarningsRecord, synced_at: str, sync_id: str) -> None:
    env["dynamodb"].put_item(TableName=env["resources"].table_name, Item=record_to_item(record, sync_id, synced_at))


def ledger(env: dict[str, Any], registered_at: str = T2, name: str | None = None) -> SyncLedger:
    clock = at(registered_at)
    return SyncLedger(env["dynamodb"], name or env["resources"].tables["SyncLedgerTable"], clock=lambda: clock().timestamp())


def test_a_future_item_is_reported_kept_out_of_superseded_and_deleted_by_fix(aws: dict[str, Any]) -> None:
    put(aws, rec("AAPL", "2025-08-01"), T2)
    forge(aws, rec("AAPL", "2025-07-31"), FUTURE, sync_id_for(FUTURE))  # would make the real date look superseded
    report = audit_table(calendar(aws), now=at(T3))
    assert report.by_rule == {"future_sync_date": 1} and report.superseded == []
    assert [(f.key, f.last_sync_date) for f in report.future] == [(("AAPL", "2025-07-31"), FUTURE)]
    assert "is in the future (later than 2025-07-20T06:05:00.000000Z)" in report.findings[0].detail
    assert "1 future-dated item(s) would be deleted with --fix" in format_report(report)

    Faults(aws["dynamodb"], "dynamodb", "DeleteItem", [dynamodb_error("ConditionalCheckFailedException")])
    raced = audit_table(calendar(aws), now=at(T3), fix=True)
    assert (raced.fixed, raced.fix_conflicts, raced.future_conflicts) == (0, 1, 1) and ("AAPL", "2025-07-31") in keys(aws)
    fixed = audit_table(calendar(aws), now=at(T3), fix=True)
    assert (fixed.fixed, fixed.future_fixed, fixed.remaining) == (1, 1, 0) and keys(aws) == {("AAPL", "2025-08-01")}


def test_within_the_clock_skew_an_item_is_not_future(aws: dict[str, Any]) -> None:
    forge(aws, rec("AAPL", "2025-08-01"), "2025-07-20T06:04:59.000000Z", sync_id_for("2025-07-20T06:04:59.000000Z"))
    assert audit_table(calendar(aws), now=at(T3)).findings == []


def test_unregistered_syncs_are_judged_only_since_the_registry_records_ids(aws: dict[str, Any]) -> None:
    registry = ledger(aws, registered_at="2025-07-19T06:00:01.000000Z")
    registry.register_sync(sync_id_for(T2), T2)
    assert registry.registered_sync_ids() == {sync_id_for(T2)}
    put(aws, rec("OLD", "2025-04-30", "2025-03-31"), T1)  # history from before ids were recorded: "sync-2025-07-18"
    forge(aws, rec("REAL", "2025-08-01"), T2, sync_id_for(T2))
    forge(aws, rec("FORGED", "2025-08-02"), T3, sync_id_for(T3, 7))
    forge(aws, rec("MOVED", "2025-08-03"), T3, sync_id_for(T2))  # a registered id, another time
    report = audit_table(calendar(aws), now=at(T3), ledger=registry)
    assert report.registry.endswith("1 sync id(s), recorded since 2025-07-19T06:00:01.000000Z")
    assert {(f.key[0], f.detail) for f in report.findings} == {
        ("FORGED", "sync_id is not a registered sync"),
        ("MOVED", "lastSyncDate is not the time of its sync_id"),
    }
    assert report.unregistered == [("FORGED", "2025-08-02"), ("MOVED", "2025-08-03")]
    fixed = audit_table(calendar(aws), now=at(T3), ledger=registry, fix=True)
    assert fixed.fixed == 0 and len(keys(aws)) == 4  # reported, never deleted
    assert "never deleted automatically" in format_report(fixed)


def test_without_registered_ids_or_a_readable_ledger_the_rule_is_skipped_and_said_so(aws: dict[str, Any]) -> None:
    forge(aws, rec("FORGED", "2025-08-02"), T3, sync_id_for(T3, 7))
    table = aws["resources"].table_name
    empty = audit_table(CalendarTable(aws["dynamodb"], table), now=at(T3), ledger=ledger(aws))
    assert empty.findings == [] and "records no sync ids yet: unregistered_sync not checked" in empty.registry
    missing = audit_table(CalendarTable(aws["dynamodb"], table), now=at(T3), ledger=ledger(aws, name="no-such-ledger"))
    assert missing.findings == [] and missing.registry.startswith("no-such-ledger could not be read (")
    assert "ResourceNotFoundException" in missing.registry
    assert "no ledger table" in audit_table(CalendarTable(aws["dynamodb"], table), now=at(T3)).registry


def test_cli_reads_the_registry_of_the_ledger_it_is_given(
    aws: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEDGER_TABLE", raising=False)
    ledger(aws).register_sync(sync_id_for(T1), T1)
    forge(aws, rec("FORGED", "2025-08-02"), dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), sync_id_for(T3, 7))
    target = ["audit", "--endpoint-url", aws["endpoint"], "--table", aws["resources"].table_name]
    assert main([*target, "--json"]) == 1  # <table>-sync-ledger, as the stack names it
    assert json.loads(capsys.readouterr().out)["by_rule"] == {"unregistered_sync": 1}
    assert main([*target, "--ledger-table", "elsewhere"]) == 0
    assert "sync registry: elsewhere could not be read" in capsys.readouterr().out
    monkeypatch.setenv("LEDGER_TABLE", "elsewhere")
    assert main(target) == 0
    assert main(["audit", "--csv", "x.csv", "--ledger-table", "elsewhere"]) == 2
    assert "drop --ledger-table" in capsys.readouterr().err
