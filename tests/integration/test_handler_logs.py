"""What the handlers log: every line joinable by sync_id / message id, timing and memory on the batch
lines, conflicts as counts plus a capped list of keys, and never a whole item."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers import sqs_consumer, stream_consumer
from earnings_sync.consumer import MAX_NOTED_KEYS
from earnings_sync_local.lambda_runtime import LambdaContext, invoke
from earnings_sync_local.pipeline import routed_logs
from producers import app as producer_app
from tests.integration.stream_support import StreamReader
from tests.integration.test_aws_operations import NEW, OLD, Emitted, consume, produce, rows


@pytest.fixture
def logs(handler_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The handlers' JSON log lines at INFO, as CloudWatch Logs would receive them."""
    loggers = (producer_app.logger, sqs_consumer.logger, stream_consumer.logger)
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")
    levels = [logger.log_level for logger in loggers]
    stream = io.StringIO()
    with contextlib.ExitStack() as stack:
        for logger in loggers:
            logger.setLevel("INFO")
            stack.enter_context(routed_logs(logger, stream))
        yield stream
    for logger, level in zip(loggers, levels):
        logger.setLevel(level)


def lines(logs: io.StringIO) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    logs.seek(0)
    logs.truncate()
    return found


def test_every_producer_line_of_a_sync_carries_its_sync_id(handler_env: dict[str, Any], logs: io.StringIO, tmp_path: Path) -> None:
    report = produce(Emitted(), tmp_path, rows(("AAA", "2025-08-01", "1.00")) + "BAD ROW\nCCC,,,,,\n", NEW)
    written = lines(logs)
    messages = [line["message"] for line in written]
    assert messages[0] == "sync started" and messages[-1] == "sync enqueued" and messages.count("row rejected") == 2
    assert {line.get("sync_id") for line in written} == {report["sync_id"]}
    done = written[-1]
    assert done["sync"]["duration_ms"] >= 0 and done["memory_used_mb"] > 0
    # the test process's peak RSS against the context's 512 MB (it may pass 100 % in a long suite)
    assert done["memory_utilization"] == round(100 * done["memory_used_mb"] / LambdaContext("ProducerFunction", 300).memory_limit_in_mb, 1)
    assert "rejections" not in done["sync"]  # each rejection had its own line


def test_consumer_lines_carry_message_and_sync_ids_and_conflicts_are_counted_with_few_keys(
    handler_env: dict[str, Any], logs: io.StringIO, tmp_path: Path,
) -> None:
    symbols = [(f"S{i:03d}", "2025-08-01", "1.00") for i in range(MAX_NOTED_KEYS + 10)]
    emitted = Emitted()
    produce(emitted, tmp_path, rows(*symbols), NEW)
    consume(handler_env, emitted)
    lines(logs)
    old = produce(emitted, tmp_path, rows(*symbols), OLD)  # a replayed older sync: every record is stale
    consume(handler_env, emitted)
    written = [line for line in lines(logs) if line.get("function_name") == "ConsumerFunction"]
    conflicts = [line for line in written if line["message"] == "conflicts resolved"]
    assert sum(line["stale_skipped"] for line in conflicts) == len(symbols)
    keys = [tuple(key) for line in conflicts for key in line["stale_keys"]]
    assert all(len(line["stale_keys"]) <= MAX_NOTED_KEYS for line in conflicts)
    assert set(keys) <= {(s, d) for s, d, _ in symbols} and len(keys) == len(set(keys))
    batches = [line for line in written if line["message"] == "batch processed"]
    assert batches and all(line["sync_ids"] == [old["sync_id"]] for line in batches)
    assert all(line["duration_ms"] >= 0 and line["memory_used_mb"] > 0 and "throttles" in line for line in batches)
    for line in written:  # keys and counts only: no item content, no message body
        assert "company_name" not in json.dumps(line) and "AAA Inc" not in json.dumps(line)


def test_a_failed_message_line_names_the_message_and_its_sync(handler_env: dict[str, Any], logs: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    resources, sqs = handler_env["resources"], handler_env["sqs"]
    monkeypatch.setenv("DLQ_URL", resources.dlq_url + "-missing")  # the DLQ send fails: the message stays
    sqs.send_message(QueueUrl=resources.queue_url, MessageBody="not a sync message",
                     MessageAttributes={"sync_id": {"DataType": "String", "StringValue": "sync-x"}})
    consume_once = sqs.receive_message(QueueUrl=resources.queue_url, AttributeNames=["All"], MessageAttributeNames=["All"])["Messages"]
    from earnings_sync_local.sqs_mapping import SqsEventSource

    source = SqsEventSource(sqs, resources.queue_url, resources.queue_arn, sqs_consumer.lambda_handler, batch_size=10,
                            report_batch_item_failures=True, function_name="ConsumerFunction", timeout_seconds=30)
    result, _, error = invoke(sqs_consumer.lambda_handler, source.build_event(consume_once), LambdaContext("ConsumerFunction", 30))
    assert error is None and len(result["batchItemFailures"]) == 1
    (failed,) = [line for line in lines(logs) if line["message"].startswith("message failed")]
    assert failed["message_id"] == consume_once[0]["MessageId"] and failed["sync_id"] == "sync-x"


def test_stream_batch_lines_name_the_syncs_they_carried(handler_env: dict[str, Any], logs: io.StringIO, tmp_path: Path) -> None:
    stream = StreamReader(handler_env)
    emitted = Emitted()
    report = produce(emitted, tmp_path, rows(("AAA", "2025-08-01", "1.00")), NEW)
    consume(handler_env, emitted)
    lines(logs)
    _, _, error = invoke(stream_consumer.lambda_handler, stream.event(), LambdaContext("StreamConsumerFunction", 60))
    assert error is None
    (batch,) = [line for line in lines(logs) if line["message"] == "stream batch processed"]
    assert batch["sync_ids"] == [report["sync_id"]] and batch["memory_used_mb"] > 0 and batch["throttles"] == 0
