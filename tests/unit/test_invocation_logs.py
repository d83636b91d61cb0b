"""What each Lambda logs and emits around its domain call, read from a real Powertools Logger without
Lambda: the producer's sync lines, the consumer's and the stream consumer's batch lines, the upcoming
function's request lines, and the shared set-up in lambda_setup."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics.provider import cold_start
from aws_lambda_powertools.utilities.batch import EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from consumers.sqs_consumer import message_context
from earnings_sync.consistency import item_key
from earnings_sync.consumer import ConsumerTally, MessageContext
from earnings_sync.lambda_setup import batch_processor, observed_function
from earnings_sync.observability import MAX_LOGGED_SYNC_IDS, ConsumerBatchLog, M, StreamBatchLog, UpcomingLog, parse_emf
from earnings_sync.producer import (
    MAX_LOGGED_FAILURES,
    MAX_LOGGED_REJECTIONS,
    EnqueueError,
    SyncAborted,
    SyncLog,
    SyncReport,
    loggable_sync,
)
from earnings_sync.records import EarningsRecord, NotACalendarError, Rejection, UpstreamError
from earnings_sync.sources import SourceError
from earnings_sync.stream import StreamTally
from earnings_sync.upcoming import UpcomingResult
from earnings_sync_local.lambda_runtime import LambdaContext
from tests.unit.test_observability import Collected

MEMORY = {"memory_used_mb": 80.5, "memory_utilization": 15.7}


class Lines:
    """A Powertools Logger of its own (a fresh service name: loggers of one name share a handler)
    whose JSON lines are read back as dicts."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.logger = Logger(service=f"test-{uuid.uuid4().hex}", level="INFO", logger_handler=logging.StreamHandler(self.stream))

    def read(self) -> list[dict[str, Any]]:
        found = [json.loads(line) for line in self.stream.getvalue().splitlines() if line.startswith("{")]
        self.stream.seek(0)
        self.stream.truncate()
        return found


@pytest.fixture
def lines() -> Lines:
    return Lines()


def added(metrics: Collected) -> dict[str, float]:
    return {name: value for name, _, value in metrics.added}


def record(symbol: str, fiscal: str) -> EarningsRecord:
    return EarningsRecord(symbol, "2025-08-01", f"{symbol} Inc", fiscal, "1.00", "USD")


def report(**fields: Any) -> SyncReport:
    return SyncReport(sync_id="20250719T060000000000Z-1a2b3c4d", synced_at="2025-07-19T06:00:00.000000Z", source="x.csv", **fields)


# --------------------------------------------------------------------------- the producer


def test_a_sync_logs_its_start_every_line_after_it_carries_the_sync_id(lines: Lines) -> None:
    sync_log = SyncLog(lines.logger, Collected())
    callbacks = sync_log.callbacks()
    callbacks["on_start"](report())
    callbacks["on_duplicate"](record("AAA", "2025-06-30"), record("AAA", "2025-09-30"))
    started, duplicate = lines.read()
    assert started["message"] == "sync started" and started["source"] == "x.csv"
    assert started["synced_at"] == "2025-07-19T06:00:00.000000Z"
    assert duplicate["message"] == "duplicate key in snapshot, later row wins"
    assert duplicate["key"] == ["AAA", "2025-08-01"] and duplicate["fiscal_periods"] == ["2025-06-30", "2025-09-30"]
    assert started["sync_id"] == duplicate["sync_id"] == "20250719T060000000000Z-1a2b3c4d"


def test_only_the_first_rejections_of_a_sync_get_a_line(lines: Lines) -> None:
    sync_log = SyncLog(lines.logger, Collected())
    for line in range(2, MAX_LOGGED_REJECTIONS + 12):
        sync_log.rejected(Rejection(line, "bad_symbol", f"detail {line}"))
    written = lines.read()
    assert len(written) == MAX_LOGGED_REJECTIONS and sync_log.rejections_seen == MAX_LOGGED_REJECTIONS + 10
    assert written[0]["message"] == "row rejected" and written[0]["level"] == "WARNING"
    assert (written[0]["line"], written[0]["reason"], written[0]["detail"]) == (2, "bad_symbol", "detail 2")


def test_an_enqueued_sync_answers_its_report_and_logs_it_without_the_rejections(lines: Lines) -> None:
    metrics = Collected()
    done = report(rows=3, records=2, rejected={"bad_symbol": 1}, messages_sent=1, records_enqueued=2)
    done.rejections.append({"line": 3, "reason": "bad_symbol", "detail": "x"})
    answer = SyncLog(lines.logger, metrics).enqueued(done, 4, MEMORY)
    assert answer == done.as_dict()
    (line,) = lines.read()
    assert line["message"] == "sync enqueued" and line["throttles"] == 4 and line["memory_used_mb"] == 80.5
    assert "rejections" not in line["sync"] and line["sync"]["rejected"] == {"bad_symbol": 1}
    figures = added(metrics)
    assert figures[M.ROWS_READ] == 3 and figures["RowsRejected_bad_symbol"] == 1 and figures[M.SEND_THROTTLES] == 4


def test_a_sync_with_unsent_messages_lists_a_few_and_counts_them_all(lines: Lines) -> None:
    metrics = Collected()
    failed = report(messages=30, failed_messages=[{"seq": n, "records": 1, "error": "boom", "body_bytes": 9} for n in range(30)])
    SyncLog(lines.logger, metrics).failed(EnqueueError(failed), 2)
    (line,) = lines.read()
    assert line["message"] == "sync incomplete: messages not sent" and line["level"] == "ERROR" and line["throttles"] == 2
    assert len(line["sync"]["failed_messages"]) == MAX_LOGGED_FAILURES and line["sync"]["failed_messages_total"] == 30
    assert added(metrics)[M.ENQUEUE_FAILURES] == 30


def test_an_aborted_sync_says_why_and_still_emits_its_metrics(lines: Lines) -> None:
    metrics = Collected()
    SyncLog(lines.logger, metrics).failed(SyncAborted(report(aborted="stopped after line 9")), 0)
    (line,) = lines.read()
    assert line["message"] == "sync aborted" and line["reason"] == "stopped after line 9"
    assert added(metrics)[M.SYNC_ABORTED] == 1


@pytest.mark.parametrize(
    ("error", "message", "fields", "upstream_errors"),
    [
        (UpstreamError("json_error", "Invalid API call"), "upstream error, nothing enqueued",
         {"kind": "json_error", "upstream_message": "Invalid API call"}, 1),
        (NotACalendarError("no_header", "x.csv has no header"), "not an earnings calendar, nothing enqueued",
         {"kind": "no_header", "problem": "x.csv has no header"}, 1),
        (SourceError("cannot read s3://b/k: NoSuchKey"), "source unavailable, nothing enqueued",
         {"problem": "cannot read s3://b/k: NoSuchKey"}, None),
    ],
)
def test_a_sync_that_never_started_sending_names_its_source_problem(
    lines: Lines, error: Exception, message: str, fields: dict[str, str], upstream_errors: int | None
) -> None:
    metrics = Collected()
    SyncLog(lines.logger, metrics).failed(error, 0)
    (line,) = lines.read()
    assert line["message"] == message and line["level"] == "ERROR"
    assert {name: line[name] for name in fields} == fields
    assert added(metrics).get(M.UPSTREAM_ERRORS) == upstream_errors


def test_an_error_no_line_describes_is_left_to_the_runtime(lines: Lines) -> None:
    metrics = Collected()
    SyncLog(lines.logger, metrics).failed(ValueError("invalid configuration"), 0)
    assert lines.read() == [] and metrics.added == []


def test_the_loggable_report_leaves_a_clean_sync_as_it_is() -> None:
    summary = report(rows=1).as_dict()
    assert loggable_sync(summary) == {k: v for k, v in summary.items() if k not in ("rejections", "failed_messages")}


# --------------------------------------------------------------------------- the SQS consumer


def sqs_record(message_id: str, sync_id: str | None, receive_count: str = "3") -> SQSRecord:
    attributes = {} if sync_id is None else {"sync_id": {"stringValue": sync_id, "dataType": "String"}}
    return SQSRecord(
        {
            "messageId": message_id,
            "receiptHandle": "r",
            "body": "{}",
            "attributes": {"ApproximateReceiveCount": receive_count},
            "messageAttributes": attributes,
        }
    )


def test_an_sqs_record_becomes_the_consumers_message_context() -> None:
    message = message_context(sqs_record("m-1", "sync-a"))
    assert message == MessageContext(message_id="m-1", receive_count=3, attributes={"sync_id": {"stringValue": "sync-a", "dataType": "String"}})
    assert message_context(sqs_record("m-2", None, receive_count="1")) == MessageContext("m-2", 1, {})


def test_each_message_names_itself_and_its_sync_on_the_lines_logged_while_it_is_handled(lines: Lines) -> None:
    batch = ConsumerBatchLog(lines.logger, ConsumerTally())
    first = message_context(sqs_record("m-1", "sync-a"))
    batch.message(first)
    batch.message_failed(RuntimeError("throttled"), first)
    batch.message(message_context(sqs_record("m-2", None)))
    lines.logger.info("after")
    failed, after = lines.read()
    assert failed["message"] == "message failed, SQS will deliver it again" and failed["reason"] == "throttled"
    assert (failed["message_id"], failed["sync_id"], failed["receive_count"]) == ("m-1", "sync-a", 3)
    assert (after["message_id"], after["sync_id"]) == ("m-2", "")
    assert list(batch.sync_ids) == ["sync-a", ""]


def test_a_consumer_batch_line_counts_everything_and_names_a_few_syncs(lines: Lines) -> None:
    batch = ConsumerBatchLog(lines.logger, ConsumerTally())
    for n in range(MAX_LOGGED_SYNC_IDS + 3):
        batch.message(message_context(sqs_record(f"m-{n}", f"sync-{n}")))
    batch.tally.messages, batch.tally.inserted, batch.tally.retries = 13, 40, 2
    batch.finished({"batchItemFailures": [{"itemIdentifier": "m-0"}]}, 1, 12.345, MEMORY)
    (line,) = lines.read()  # no conflicts: no conflicts line
    assert line["message"] == "batch processed" and line["sync_ids"] == [f"sync-{n}" for n in range(MAX_LOGGED_SYNC_IDS)]
    assert (line["messages"], line["failed"], line["inserted"], line["retries"]) == (13, 1, 40, 2)
    assert (line["throttles"], line["duration_ms"], line["memory_utilization"]) == (1, 12.3, 15.7)


def test_conflicts_are_a_line_of_counts_and_keys(lines: Lines) -> None:
    batch = ConsumerBatchLog(lines.logger, ConsumerTally())
    batch.tally.stale, batch.tally.stale_keys, batch.tally.lost_races = 2, [("AAA", "2025-08-01"), ("BBB", "2025-08-02")], 1
    batch.finished({}, 0, 1.0, {})
    conflicts, processed = lines.read()
    assert conflicts["message"] == "conflicts resolved" and conflicts["lost_races"] == 1
    assert conflicts["stale_skipped"] == 2 and conflicts["stale_keys"] == [["AAA", "2025-08-01"], ["BBB", "2025-08-02"]]
    assert processed["stale_skipped"] == 2 and processed["failed"] == 0


# --------------------------------------------------------------------------- the stream consumer


def stream_record(event_name: str, image: str, sync_id: str) -> dict[str, Any]:
    keys = {"asset_symbol": {"S": "AAA"}, "earnings_date": {"S": "2025-08-01"}}
    return {
        "eventName": event_name,
        "dynamodb": {"Keys": keys, "SequenceNumber": "100", image: {**keys, "sync_id": {"S": sync_id}, "company_name": {"S": "AAA Inc"}}},
    }


def test_a_failed_stream_record_is_counted_and_named_by_key_never_by_content(lines: Lines) -> None:
    batch = StreamBatchLog(lines.logger, StreamTally(), key_of=item_key)
    removed = stream_record("REMOVE", "OldImage", "sync-old")
    batch.record(removed)
    batch.record_failed(removed, RuntimeError("x" * 400))
    (line,) = lines.read()
    assert line["message"] == "stream record failed, Lambda will retry from it" and batch.tally.failures == 1
    assert (line["sequence_number"], line["event_name"], line["key"]) == ("100", "REMOVE", ["AAA", "2025-08-01"])
    assert line["sync_id"] == "sync-old" and len(line["error"]) == 300 and line["error"].startswith("RuntimeError: x")
    assert "AAA Inc" not in json.dumps(line) and list(batch.sync_ids) == ["sync-old"]


def test_a_stream_batch_logs_rule_breaks_what_it_tidied_and_one_summary(lines: Lines) -> None:
    batch = StreamBatchLog(lines.logger, StreamTally(), key_of=item_key)
    batch.record(stream_record("INSERT", "NewImage", "sync-new"))
    batch.record({"eventName": "MODIFY"})  # no images: an empty sync id, still named
    batch.tally.invalid.append((("AAA", "2025-08-01"), ["estimate_not_number"]))
    batch.tally.violations["estimate_not_number"] += 1
    batch.tally.removed.append(("BBB", "2025-08-02"))
    batch.tally.records, batch.tally.superseded_removed = 2, 1
    batch.finished({"batchItemFailures": []}, 0, 3.0, MEMORY)
    invalid, tidied, processed = lines.read()
    assert invalid["message"] == "item breaks consistency rules" and invalid["rules"] == ["estimate_not_number"]
    assert tidied["message"] == "table tidied" and tidied == {**tidied, "superseded_removed": [["BBB", "2025-08-02"]], "regressions_restored": []}
    assert processed["message"] == "stream batch processed" and processed["sync_ids"] == ["sync-new", ""]
    assert processed["validation_failed"] == {"estimate_not_number": 1} and processed["superseded_removed"] == 1


# --------------------------------------------------------------------------- upcoming earnings


def test_an_invalid_request_is_answered_with_its_error_and_counts_as_no_request(lines: Lines) -> None:
    metrics = Collected()
    assert UpcomingLog(lines.logger, metrics).invalid(ValueError("limit must be between 1 and 1000")) == {
        "error": "limit must be between 1 and 1000"
    }
    (line,) = lines.read()
    assert line["message"] == "invalid upcoming request" and line["level"] == "WARNING" and metrics.added == []


def test_a_failed_query_is_a_failed_request(lines: Lines) -> None:
    metrics = Collected()
    UpcomingLog(lines.logger, metrics).failed(RuntimeError("throttled"), 3)
    (line,) = lines.read()
    assert line["message"] == "upcoming query failed" and line["error"] == "RuntimeError: throttled" and line["throttles"] == 3
    assert added(metrics) == {M.UPCOMING_REQUESTS: 1, M.UPCOMING_REQUEST_FAILURES: 1, M.UPCOMING_THROTTLES: 3}


def test_an_answer_is_logged_without_its_items(lines: Lines) -> None:
    metrics = Collected()
    result = UpcomingResult(items=[{"asset_symbol": "AAA"}], queries=2, duration_ms=5.55)
    answer = UpcomingLog(lines.logger, metrics).answered(result, 0, MEMORY)
    assert answer == result.as_dict()
    (line,) = lines.read()
    assert line["message"] == "upcoming query answered" and "items" not in line
    assert (line["count"], line["queries"], line["memory_used_mb"]) == (1, 2, 80.5)
    assert added(metrics)[M.UPCOMING_REQUEST_FAILURES] == 0 and added(metrics)[M.UPCOMING_QUERIES] == 2


# --------------------------------------------------------------------------- lambda_setup


@contextlib.contextmanager
def stdout_lines() -> Iterator[io.StringIO]:
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        yield captured


def test_the_observed_handler_flushes_its_metrics_and_stamps_the_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", f"svc-{uuid.uuid4().hex}")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "SetupTest")
    observed = observed_function()
    stream = io.StringIO()
    observed.logger.registered_handler.setStream(stream)
    monkeypatch.setattr(cold_start, "is_cold_start", True)  # as in a fresh execution environment

    @observed.handler
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        observed.logger.append_keys(call=event["n"])
        observed.logger.info("inside")
        observed.metrics.add_metric(name=M.ROWS_READ, unit="Count", value=event["n"])
        if event.get("fail"):
            raise RuntimeError("boom")
        return {"n": event["n"]}

    with stdout_lines() as first:
        assert handler({"n": 2}, LambdaContext("F", 30)) == {"n": 2}
    with stdout_lines() as second, pytest.raises(RuntimeError):
        handler({"n": 5, "fail": True}, LambdaContext("F", 30))
    with stdout_lines() as third:
        observed.logger.info("between")  # the previous invocation's keys were cleared on entry, not exit
        handler({"n": 1}, LambdaContext("F", 30))
    totals = [parse_emf(out.getvalue().splitlines()) for out in (first, second, third)]
    assert [t[M.ROWS_READ] for t in totals] == [2, 5, 1]  # flushed even when the handler raised
    assert [t[M.COLD_START] for t in totals] == [1, 0, 0]
    assert json.loads(first.getvalue().splitlines()[-1])["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "SetupTest"
    logged = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["function_name"] for line in logged if line["message"] == "inside"] == ["F", "F", "F"]
    assert logged[0]["service"].startswith("svc-")


def test_a_batch_where_every_record_fails_is_reported_record_by_record() -> None:
    processor = batch_processor(EventType.SQS)
    records = [sqs_record(f"m-{n}", "s")._data for n in range(3)]

    def fail(record: SQSRecord) -> None:
        raise RuntimeError(record.message_id)

    response = process_partial_response(event={"Records": records}, record_handler=fail, processor=processor)
    assert response == {"batchItemFailures": [{"itemIdentifier": f"m-{n}"} for n in range(3)]}
