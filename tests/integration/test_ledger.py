"""The completeness ledger on moto: the producer's manifest, the consumer's outcomes through the real
handlers (poison records, a replay, a failed ledger write), and `earnings-sync ledger`."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from consumers import sqs_consumer
from earnings_sync import aws as aws_clients
from earnings_sync import dlq, ledger
from earnings_sync.ledger import Manifest, MessageOutcome, SyncLedger
from earnings_sync.observability import M
from earnings_sync.replay import replay_dlq
from earnings_sync_cli import main as cli
from earnings_sync_local.lambda_runtime import LambdaContext, invoke
from earnings_sync_local.sqs_mapping import SqsEventSource
from producers import app
from tests.conftest import csv_text
from tests.helpers import Faults, dynamodb_error, sync_id_for

ROWS = [
    "AAPL,Apple Inc,2025-07-31,2025-06-30,1.42,USD",
    "AAPL,Apple Inc,2025-07-31,2025-03-31,1.40,USD",  # same key: replaces the row above
    "MSFT,Microsoft Corp,2025-07-29,2025-06-30,3.35,USD",
    "OOPS,Broken,2025-08-27,2025-07-31,1.0.0,USD",
    "ZZZ,Zed Co,2025-08-01,2025-06-30,,USD",
]


class Pipeline:
    def __init__(self, env: dict[str, Any]) -> None:
        self.sqs, self.resources = env["sqs"], env["resources"]
        self.ledger = SyncLedger(env["dynamodb"], self.resources.tables["SyncLedgerTable"])
        self.source = SqsEventSource(
            self.sqs, self.resources.queue_url, self.resources.queue_arn, sqs_consumer.lambda_handler,
            batch_size=10, report_batch_item_failures=True, function_name="ConsumerFunction", timeout_seconds=30,
        )

    def produce(self, path: Any) -> dict[str, Any]:
        report, _, error = invoke(app.lambda_handler, {"path": str(path)}, LambdaContext("ProducerFunction", 300))
        assert error is None, error
        return report


@pytest.fixture
def pipeline(handler_env: dict[str, Any]) -> Pipeline:
    return Pipeline(handler_env)


def test_a_sync_is_accounted_row_by_row(pipeline: Pipeline, tmp_path: Any) -> None:
    path = tmp_path / "snapshot.csv"
    path.write_text(csv_text(*ROWS))
    report = pipeline.produce(path)
    assert report["ledger"] == "recorded" and report["duplicate_keys"] == [
        {"key": ["AAPL", "2025-07-31"], "fiscal_periods": ["2025-06-30", "2025-03-31"]}
    ]
    waiting = pipeline.ledger.report(report["sync_id"])
    assert waiting.status == "incomplete" and waiting.missing == 3 and waiting.messages == 1
    stats = pipeline.source.drain()
    assert stats.metrics[M.LEDGER_OUTCOMES] == 1
    done = pipeline.ledger.report(report["sync_id"])
    assert done.complete and (done.rows, done.inserted, done.rejected, done.duplicates) == (5, 3, {"bad_estimate": 1}, 1)
    assert pipeline.ledger.recent_syncs() == [(report["synced_at"], report["sync_id"])]


def test_poison_records_are_followed_through_the_dlq_and_back(pipeline: Pipeline, tmp_path: Any) -> None:
    """DynamoDB refuses MSFT for good: it waits in the DLQ with its seq and position, the replay
    (once DynamoDB accepts it) settles it; a redelivery changes nothing."""
    path = tmp_path / "snapshot.csv"
    path.write_text(csv_text(*ROWS))
    report = pipeline.produce(path)
    client = aws_clients.client("dynamodb", max_attempts=8)

    def refuse_msft(request: Any) -> Any:
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        return dynamodb_error("ValidationException", "refused")(request) if '"MSFT"' in body else None

    Faults(client, "dynamodb", "BatchWriteItem", [refuse_msft])
    Faults(client, "dynamodb", "PutItem", [refuse_msft] * 3)
    pipeline.source.drain()
    held = pipeline.ledger.report(report["sync_id"])
    assert held.status == "in_dlq" and held.in_dlq == {"poison": 1} and held.inserted == 2
    [letter] = pipeline.sqs.receive_message(QueueUrl=pipeline.resources.dlq_url, VisibilityTimeout=0)["Messages"]
    dead = msgspec.json.decode(letter["Body"], type=dlq.DeadLetter)
    assert (dead.seq, dead.positions) == (0, [1])  # MSFT is the second record of message 0

    assert replay_dlq(pipeline.sqs, pipeline.resources.dlq_url, to=pipeline.resources.queue_url, wait_seconds=0).replayed == 1
    stats = pipeline.source.drain()
    settled = pipeline.ledger.report(report["sync_id"])
    assert settled.complete and settled.replays == 1 and settled.inserted == 3
    assert stats.metrics[M.LEDGER_OUTCOMES] == 1


def test_a_failed_ledger_write_retries_the_message_and_counts_once(pipeline: Pipeline, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    path = tmp_path / "snapshot.csv"
    path.write_text(csv_text(*ROWS))
    report = pipeline.produce(path)
    Faults(aws_clients.client("dynamodb", max_attempts=1), "dynamodb", "PutItem", [dynamodb_error("ThrottlingException")])
    stats = pipeline.source.drain()
    assert stats.failed_deliveries == 1 and stats.metrics[M.LEDGER_WRITE_FAILURES] == 1
    done = pipeline.ledger.report(report["sync_id"])
    assert done.complete and (done.inserted, done.unchanged) == (0, 3)  # the retry found them written


def test_a_failed_manifest_write_is_reported_not_raised(pipeline: Pipeline, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    path = tmp_path / "snapshot.csv"
    path.write_text(csv_text(*ROWS))
    Faults(aws_clients.client("dynamodb", max_attempts=1), "dynamodb", "PutItem", [dynamodb_error("ThrottlingException")])
    report, metrics, error = invoke(app.lambda_handler, {"path": str(path)}, LambdaContext("ProducerFunction", 300))
    assert error is None and report["ledger"].startswith("failed: ThrottlingException") and metrics[M.LEDGER_WRITE_FAILURES] == 1
    pipeline.source.drain()
    assert "no manifest" in pipeline.ledger.report(report["sync_id"]).problems()[0]


def test_messages_without_seq_are_not_recorded(pipeline: Pipeline) -> None:
    sync_id = sync_id_for("2025-07-19T06:00:00.000000Z")
    body = json.dumps({"sync_id": sync_id, "synced_at": "2025-07-19T06:00:00.000000Z", "v": 1,
                       "records": [{"asset_symbol": "A", "earnings_date": "2025-08-01", "company_name": "A Inc",
                                    "fiscal_date_ending": "2025-06-30", "estimate": None, "currency": "USD"}]})
    pipeline.sqs.send_message(QueueUrl=pipeline.resources.queue_url, MessageBody=body)
    stats = pipeline.source.drain()
    assert stats.metrics[M.RECORDS_INSERTED] == 1 and stats.metrics[M.LEDGER_OUTCOMES] == 0
    assert pipeline.ledger.report(sync_id).status == "unknown"


def test_large_manifests_are_chunked_and_outcomes_are_first_wins(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger, "CHUNK_SEQS", 2)
    manifest = Manifest("big", "2025-07-19T06:00:00.000000Z", "x.csv", rows=5, records=5, duplicates=0, rejected={},
                        seq_records=[1, 1, 1, 1, 1], unsent=[3], unsent_error="refused")
    assert pipeline.ledger.write_manifest(manifest) == 4  # three chunks and the header
    for seq in (0, 1, 2, 4):
        assert pipeline.ledger.record_outcome(MessageOutcome("big", seq, "i", message_id="m"))
    assert not pipeline.ledger.record_outcome(MessageOutcome("big", 0, "c"))
    report = pipeline.ledger.report("big")
    assert report.status == "incomplete" and report.inserted == 4 and report.unsent_seqs == [(3, 1)]


def test_cli_reports_deployed_syncs(pipeline: Pipeline, tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "snapshot.csv"
    path.write_text(csv_text(*ROWS))
    report = pipeline.produce(path)
    table = pipeline.resources.tables["SyncLedgerTable"]
    assert cli.main(["ledger", report["sync_id"]]) == 1  # LEDGER_TABLE, as the functions have it; not consumed yet
    assert "no outcome yet" in capsys.readouterr().out
    pipeline.source.drain()
    monkeypatch.delenv("LEDGER_TABLE")
    assert cli.main(["ledger", "--json", "--table", table]) == 0  # the recent syncs
    shown = json.loads(capsys.readouterr().out)
    assert shown["complete"] and [s["sync_id"] for s in shown["syncs"]] == [report["sync_id"]]
    monkeypatch.setenv("LEDGER_TABLE", table)
    assert cli.main(["ledger", "unknown-sync"]) == 1 and "unknown" in capsys.readouterr().out
    assert cli.main(["ledger", "--recent", "0"]) == 2
    assert cli.main(["ledger", "--table", pipeline.resources.table_name]) == 2  # a table without any manifest
    assert "no sync recorded" in capsys.readouterr().err


def test_cli_on_csvs_and_usage_errors(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "snapshot.csv"
    path.write_text(csv_text(*ROWS))
    assert cli.main(["ledger", "--csv", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ledger complete: 5 rows = 3 written + 0 unchanged + 0 stale + 1 rejected + 1 duplicate + 0 in the DLQ" in out
    assert cli.main(["ledger", "not-this-run", "--json", "--csv", str(path)]) == 1
    assert json.loads(capsys.readouterr().out)["syncs"][0]["status"] == "unknown"
    assert cli.main(["ledger", "--csv", str(tmp_path / "missing.csv")]) == 2
    assert cli.main(["ledger", "--csv", str(path), "--table", "t"]) == 2
    assert "drop --endpoint-url/--table" in capsys.readouterr().err
