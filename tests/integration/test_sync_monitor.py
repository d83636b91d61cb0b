"""The sync monitor on the emulator: the real handlers make and settle syncs, the monitor handler nets
them from the ledger on a simulated clock, its metrics go to moto's CloudWatch at that time, and the
two sync alarms of template.yaml are evaluated on them by their own period, statistic, threshold and
missing-data treatment (tests/integration/alarm_support.py)."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from consumers import sqs_consumer
from earnings_sync.ledger import REGISTRY, SyncLedger
from earnings_sync.observability import M
from earnings_sync.sync_identity import compact, format_synced_at, utc_now
from earnings_sync.sync_watch import COMPLETE, INCOMPLETE, PENDING, watch_syncs
from earnings_sync_local.lambda_runtime import LambdaContext, invoke
from earnings_sync_local.pipeline import routed_logs
from earnings_sync_local.sqs_mapping import SqsEventSource
from producers import app
from queries import sync_monitor
from tests.conftest import csv_text
from tests.integration.alarm_support import MetricStore, Verdict, template_alarm

ROWS = ("AAPL,Apple Inc,2025-07-31,2025-06-30,1.42,USD", "MSFT,Microsoft Corp,2025-07-29,2025-06-30,3.35,USD")
QUARTER = dt.timedelta(minutes=15)
HOUR = dt.timedelta(hours=1)


class Timeline:
    """Syncs made by the real producer and consumer; the sync monitor run at simulated times."""

    def __init__(self, env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        resources = env["resources"]
        for name, value in resources.environments["SyncMonitorFunction"].items():
            monkeypatch.setenv(name, str(value))
        self.tmp_path = tmp_path
        self.ledger = SyncLedger(env["dynamodb"], resources.tables["SyncLedgerTable"])
        self.source = SqsEventSource(
            env["sqs"], resources.queue_url, resources.queue_arn, sqs_consumer.lambda_handler,
            batch_size=10, report_batch_item_failures=True, function_name="ConsumerFunction", timeout_seconds=30,
        )
        cloudwatch = boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=env["endpoint"])
        self.store = MetricStore(cloudwatch)
        self.now = utc_now().replace(microsecond=0)  # the producer registers syncs on the real clock
        monkeypatch.setattr(sync_monitor, "utc_now", lambda: self.now)
        self.last_watch: dict[str, Any] = {}

    def produce(self, synced_at: str | None = None) -> str:
        """A sync of now, or a backfill of an older snapshot (`synced_at`)."""
        path = self.tmp_path / "calendar.csv"
        path.write_text(csv_text(*ROWS))
        event = {"path": str(path)} | ({"synced_at": synced_at} if synced_at else {})
        report, _, error = invoke(app.lambda_handler, event, LambdaContext("ProducerFunction", 300))
        assert error is None, error
        return report["sync_id"]

    def consume(self) -> None:
        assert self.source.drain().deliveries >= 1

    def run_monitor(self) -> dict[str, Any]:
        watch, metrics, error = invoke(sync_monitor.lambda_handler, {}, LambdaContext("SyncMonitorFunction", 60))
        assert error is None, error
        self.store.publish(metrics, self.now)
        self.last_watch = watch
        return watch

    def advance(self, span: dt.timedelta, *, every: dt.timedelta | None = QUARTER) -> None:
        """Move the clock by `span`, running the monitor every `every` (None: it never runs)."""
        end = self.now + span
        while every is not None and self.now + every <= end:
            self.now += every
            self.run_monitor()
        self.now = end

    def alarm(self, alarm_id: str) -> str:
        return self.verdict(alarm_id).state

    def verdict(self, alarm_id: str) -> Verdict:
        """CloudWatch evaluates every minute: a minute on, the last run's data point has landed."""
        return self.store.evaluate(template_alarm(alarm_id), self.now + dt.timedelta(minutes=1))


@pytest.fixture
def timeline(handler_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Timeline:
    return Timeline(handler_env, monkeypatch, tmp_path)


def test_a_sync_still_incomplete_an_hour_after_it_started_fires_the_incomplete_alarm(timeline: Timeline) -> None:
    sync_id = timeline.produce()  # enqueued, but nothing consumes it
    timeline.advance(45 * dt.timedelta(minutes=1))
    assert [(s["sync_id"], s["state"]) for s in timeline.last_watch["syncs"]] == [(sync_id, PENDING)]
    assert timeline.alarm("SyncIncompleteAlarm") == "OK"  # three quarters of an hour: still in time

    timeline.advance(75 * dt.timedelta(minutes=1))  # two hours after it started
    assert [(s["sync_id"], s["state"], s["ledger"]) for s in timeline.last_watch["syncs"]] == [(sync_id, INCOMPLETE, "incomplete")]
    assert timeline.last_watch["incomplete"] == 1
    assert timeline.alarm("SyncIncompleteAlarm") == "ALARM"

    timeline.consume()  # the consumer catches up: the ledger is complete
    timeline.advance(QUARTER)
    assert timeline.last_watch["completions"] == 1 and timeline.last_watch["incomplete"] == 0
    assert timeline.alarm("SyncIncompleteAlarm") == "ALARM"  # the last hour still saw it incomplete
    timeline.advance(HOUR)
    assert timeline.alarm("SyncIncompleteAlarm") == "OK"


def test_no_completed_sync_in_26_hours_fires_the_missing_sync_alarm(timeline: Timeline) -> None:
    # The clock starts 27 hours back, with a sync of that time (a backfill, for the real producer),
    # so that the sync that ends the silence can be an ordinary one, of the real now.
    real_now = timeline.now
    timeline.now -= 27 * HOUR
    timeline.produce(synced_at=format_synced_at(timeline.now))
    timeline.consume()
    timeline.advance(QUARTER)
    assert timeline.last_watch["completions"] == 1
    assert timeline.alarm("NoCompletedSyncAlarm") == "OK"

    timeline.advance(25 * HOUR, every=HOUR)  # the monitor keeps running; no new sync
    assert timeline.last_watch["completions"] == 0 and timeline.last_watch["complete"] == 1
    assert timeline.alarm("NoCompletedSyncAlarm") == "OK"  # 25 h 15 min: the completion is in the window
    timeline.advance(HOUR, every=HOUR)
    assert timeline.alarm("NoCompletedSyncAlarm") == "ALARM"  # 26 h 15 min without one
    assert timeline.alarm("SyncIncompleteAlarm") == "OK"  # nothing is incomplete: nothing ran at all

    timeline.advance(real_now - timeline.now, every=None)
    timeline.produce()  # the next sync completes: the alarm clears
    timeline.consume()
    timeline.advance(QUARTER)
    assert timeline.last_watch["completions"] == 1
    assert timeline.alarm("NoCompletedSyncAlarm") == "OK"


def test_a_monitor_that_does_not_run_is_the_missing_sync_alarm_too(timeline: Timeline) -> None:
    timeline.produce()
    timeline.consume()
    timeline.advance(QUARTER)
    assert timeline.alarm("NoCompletedSyncAlarm") == "OK"
    timeline.advance(27 * HOUR, every=None)  # no data at all: missing data breaches
    verdict = timeline.verdict("NoCompletedSyncAlarm")
    assert verdict.state == "ALARM" and verdict.values == [None] * 26
    assert timeline.alarm("SyncIncompleteAlarm") == "OK"  # its missing data does not breach


def test_a_completion_is_counted_once_and_a_complete_sync_is_not_read_again(timeline: Timeline) -> None:
    sync_id = timeline.produce()
    timeline.consume()
    first = timeline.run_monitor()
    assert (first["completions"], first["complete"], first["ledger_reads"]) == (1, 1, 1)
    again = timeline.run_monitor()
    assert (again["completions"], again["complete"], again["ledger_reads"]) == (0, 1, 0)
    (registration,) = timeline.ledger.registrations_since(sync_id)
    assert registration.completed_at == format_synced_at(timeline.now)
    assert timeline.ledger.mark_completed(sync_id, "2030-01-01T00:00:00.000000Z") is False
    assert timeline.ledger.mark_completed("20250101T000000000000Z-00000000", "2030-01-01T00:00:00.000000Z") is False


def test_the_window_holds_the_last_26_hours_by_sync_id(timeline: Timeline) -> None:
    """Registry items are read by sort key from the window's start: older syncs cost nothing."""
    now = timeline.now
    for age, suffix in ((27 * HOUR, "aaaaaaaa"), (2 * HOUR, "bbbbbbbb")):
        then = now - age  # registered by a producer at that time, which then stopped
        ledger = SyncLedger(timeline.ledger.client, timeline.ledger.table_name, clock=then.timestamp)
        ledger.register_sync(f"{compact(format_synced_at(then))}-{suffix}", format_synced_at(then))
    watch = watch_syncs(ledger, now)
    assert [(s.sync_id[-8:], s.state, s.ledger_status) for s in watch.syncs] == [("bbbbbbbb", INCOMPLETE, "unknown")]
    assert watch.syncs[0].problems and "no ledger entries" in watch.syncs[0].problems[0]
    assert watch.window_start == format_synced_at(now - 26 * HOUR)
    assert [s.sync_id[-8:] for s in watch_syncs(ledger, now, window=28 * HOUR).syncs] == ["aaaaaaaa", "bbbbbbbb"]


def test_the_monitor_logs_each_incomplete_sync_with_its_problems(timeline: Timeline) -> None:
    sync_id = timeline.produce()
    timeline.advance(2 * HOUR, every=None)
    stream = io.StringIO()
    with routed_logs(sync_monitor.logger, stream):
        watch = timeline.run_monitor()
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    (incomplete,) = [line for line in lines if line["message"] == "sync incomplete"]
    assert (incomplete["sync_id"], incomplete["ledger"], incomplete["age_minutes"]) == (sync_id, "incomplete", 120.0)
    assert "have no outcome yet" in incomplete["problems"][0] and incomplete["level"] == "WARNING"
    (summary,) = [line for line in lines if line["message"] == "syncs watched"]
    assert (summary["incomplete"], summary["function_name"]) == (1, "SyncMonitorFunction") and summary == {**summary, **watch}


def test_without_a_ledger_table_the_monitor_fails_with_one_line(timeline: Timeline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_TABLE")
    _, metrics, error = invoke(sync_monitor.lambda_handler, {}, LambdaContext("SyncMonitorFunction", 60))
    assert isinstance(error, ValueError) and "LEDGER_TABLE is not set" in str(error)
    assert M.SYNC_COMPLETIONS not in metrics and M.SYNCS_INCOMPLETE not in metrics  # nothing published: a gap


def test_registry_reads_leave_the_counter_alone(timeline: Timeline) -> None:
    timeline.produce()
    items = timeline.ledger.client.query(
        TableName=timeline.ledger.table_name, KeyConditionExpression="sync_id = :r", ExpressionAttributeValues={":r": {"S": REGISTRY}}
    )["Items"]
    assert {item["entry"]["S"].split("#")[0] for item in items} == {"syncs", "sync"}
    assert len(timeline.ledger.registrations_since("0")) == 1  # the `syncs` counter is not a sync
    assert [s.state for s in watch_syncs(timeline.ledger, timeline.now).syncs] == [PENDING]
    timeline.consume()
    assert [s.state for s in watch_syncs(timeline.ledger, timeline.now).syncs] == [COMPLETE]
