"""`earnings-sync dlq`: stats, peek and replay against moto, with the real consumer handler."""

from __future__ import annotations

import datetime as dt
import io
import json
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from earnings_sync import aws as aws_clients
from earnings_sync import dlq
from earnings_sync.calendar_table import CalendarTable, item_to_plain
from earnings_sync.messages import SyncMessage, decode_envelope, encode_message, encode_records
from earnings_sync.observability import M
from earnings_sync.producer import message_attributes
from earnings_sync.records import EarningsRecord
from earnings_sync.replay import (
    NATIVE_UNSUPPORTED,
    DlqError,
    NativeUnsupported,
    ReplayFilter,
    dlq_stats,
    peek_dlq,
    replay_dlq,
    start_native_replay,
)
from earnings_sync_cli import main as cli
from earnings_sync_cli import tables as cli_table
from earnings_sync_local.pipeline import run_local
from earnings_sync_local.sqs_mapping import SqsEventSource
from tests.conftest import csv_text
from tests.helpers import FakeClock, Faults, http_response, sync_id_for

OLD, NEW = "2025-07-18T06:00:00.000000Z", "2025-07-19T06:00:00.000000Z"
OLD_ID, NEW_ID = sync_id_for(OLD), sync_id_for(NEW)
NOW = dt.datetime(2025, 7, 20, 12, 0, tzinfo=dt.UTC)
DLQ = "earnings-dlq"


def rec(symbol: str, estimate: str | None = "1.00", date: str = "2025-08-01") -> EarningsRecord:
    return EarningsRecord(symbol, date, f"{symbol} Inc", "2025-06-30", estimate, "USD")


def stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dead_letter(
    sqs: Any,
    dlq_url: str,
    records: list[EarningsRecord],
    *,
    sync_id: str = NEW_ID,
    synced_at: str = NEW,
    kind: dlq.FailureKind = "poison",
    reason: str = "invalid record: injected",
    failed_at: dt.datetime = NOW - dt.timedelta(minutes=5),
) -> str:
    """A DLQ message exactly as the consumer writes one (DeadLetter body + failure attributes)."""
    letter = dlq.DeadLetter(
        sync_id=sync_id,
        synced_at=synced_at,
        records=encode_records(records),
        failures=[dlq.RecordFailure(i, reason) for i in range(len(records))],
    )
    attributes = dlq.failure_attributes(
        kind, reason, sync_id=sync_id, source_message_id="source-1", receive_count=1,
        carried=message_attributes(sync_id, synced_at, len(records)),
    )
    attributes[dlq.ATTR_FAILED_AT] = {"DataType": "String", "StringValue": stamp(failed_at)}
    body = msgspec.json.encode(letter).decode()
    return sqs.send_message(QueueUrl=dlq_url, MessageBody=body, MessageAttributes=attributes)["MessageId"]


def depth(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def take_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every visible message (left in flight: the test ends with them)."""
    found: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not batch:
            return found
        found.extend(batch)


def sync_ids(messages: list[dict[str, Any]]) -> set[str]:
    return {decode_envelope(m["Body"]).sync_id for m in messages}


def consumer_source(env: dict[str, Any]) -> SqsEventSource:
    from consumers import sqs_consumer

    resources = env["resources"]
    return SqsEventSource(
        env["sqs"],
        resources.queue_url,
        resources.queue_arn,
        sqs_consumer.lambda_handler,
        batch_size=resources.consumer_batch_size,
        report_batch_item_failures=True,
        function_name="ConsumerFunction",
        timeout_seconds=resources.consumer_timeout,
    )


def replay(env: dict[str, Any], **kwargs: Any) -> Any:
    kwargs.setdefault("now", lambda: NOW)
    kwargs.setdefault("wait_seconds", 0)
    return replay_dlq(kwargs.pop("sqs", env["sqs"]), DLQ, **kwargs)


class EntryCounter:
    """Records how many entries each SendMessageBatch call carried, and lets the call through."""

    def __init__(self, client: Any) -> None:
        self.sizes: list[int] = []
        client.meta.events.register("before-send.sqs.SendMessageBatch", self._count)

    def _count(self, request: Any, **_: Any) -> None:
        self.sizes.append(len(json.loads(request.body)["Entries"]))


def refuse_entry(index: int) -> Callable[[Any], Any]:
    """A SendMessageBatch reply where SQS took every entry but one: the others really are sent."""

    def reply(request: Any) -> Any:
        payload = json.loads(request.body)
        refused = payload["Entries"].pop(index)
        result: dict[str, Any] = {"Successful": []}
        if payload["Entries"]:
            headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
            forwarded = urllib.request.Request(request.url, data=json.dumps(payload).encode(), headers=headers, method="POST")
            result = json.loads(urllib.request.urlopen(forwarded).read())
        result.setdefault("Failed", []).append(
            {"Id": refused["Id"], "SenderFault": False, "Code": "InternalError", "Message": "injected refusal"}
        )
        return http_response(200, result)

    return reply


def server_error(request: Any) -> Any:
    return http_response(500, {"__type": "com.amazonaws.sqs#InternalError", "message": "injected"})


# --------------------------------------------------------------------------- replay


def test_replay_all_sends_plain_sync_messages_to_the_redrive_source(aws: dict[str, Any]) -> None:
    sqs, resources = aws["sqs"], aws["resources"]
    for n in range(12):  # more than one SendMessageBatch
        dead_letter(sqs, resources.dlq_url, [rec(f"S{n}")], sync_id=f"sync-{n:02d}")

    report = replay(aws)

    assert report.ok and report.target_url == resources.queue_url
    assert (report.scanned, report.matched, report.replayed, report.released) == (12, 12, 12, 0)
    assert {item.outcome for item in report.items} == {"replayed"}
    assert depth(sqs, resources.dlq_url) == (0, 0)
    moved = take_all(sqs, resources.queue_url)
    assert sync_ids(moved) == {f"sync-{n:02d}" for n in range(12)}
    for message in moved:
        assert "failures" not in json.loads(message["Body"])  # a plain sync message again
        attributes = message["MessageAttributes"]
        assert attributes["replay_count"]["StringValue"] == "1"
        assert attributes["failure_kind"]["StringValue"] == "poison"  # the history stays visible
        assert attributes["synced_at"]["StringValue"] == NEW


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (ReplayFilter(symbol="msft"), {"b"}),
        (ReplayFilter(sync_id="c"), {"c"}),
        (ReplayFilter(reason="THROTTL"), {"c"}),
        (ReplayFilter(kind="poison"), {"a", "b", "d"}),
        (ReplayFilter(min_age=dt.timedelta(hours=1)), {"a", "d"}),
        (ReplayFilter(max_age=dt.timedelta(hours=1)), {"b", "c"}),
        (ReplayFilter(kind="poison", min_age=dt.timedelta(hours=2), max_age=dt.timedelta(hours=4)), {"a"}),
    ],
)
def test_filtered_replay_moves_only_matching_messages(aws: dict[str, Any], where: ReplayFilter, expected: set[str]) -> None:
    sqs, resources = aws["sqs"], aws["resources"]
    hours = dt.timedelta(hours=1)
    dead_letter(sqs, resources.dlq_url, [rec("AAPL")], sync_id="a", failed_at=NOW - 3 * hours)
    dead_letter(sqs, resources.dlq_url, [rec("IBM"), rec("MSFT")], sync_id="b", failed_at=NOW - hours / 6)
    dead_letter(sqs, resources.dlq_url, [rec("AAPL")], sync_id="c", kind="retries_exhausted",
                reason="ThrottlingException after the SDK's retries", failed_at=NOW - hours / 2)
    dead_letter(sqs, resources.dlq_url, [rec("NVDA")], sync_id="d", failed_at=NOW - 30 * hours)

    report = replay(aws, where=where)

    assert report.ok and report.scanned == 4 and report.replayed == len(expected)
    assert report.released == 4 - len(expected)
    assert sync_ids(take_all(sqs, resources.queue_url)) == expected
    # Non-matching messages are visible again at once, not after a visibility timeout.
    assert depth(sqs, resources.dlq_url) == (4 - len(expected), 0)
    assert sync_ids(take_all(sqs, resources.dlq_url)) == {"a", "b", "c", "d"} - expected


def test_limit_stops_after_n_messages(aws: dict[str, Any]) -> None:
    sqs, resources = aws["sqs"], aws["resources"]
    for n in range(5):
        dead_letter(sqs, resources.dlq_url, [rec(f"S{n}")], sync_id=f"s{n}")

    report = replay(aws, limit=2)

    assert report.ok and report.limit_reached and report.replayed == 2
    assert depth(sqs, resources.queue_url)[0] == 2
    assert depth(sqs, resources.dlq_url) == (3, 0)


def test_dry_run_moves_nothing_and_lists_what_would_move(aws: dict[str, Any]) -> None:
    sqs, resources = aws["sqs"], aws["resources"]
    wanted = dead_letter(sqs, resources.dlq_url, [rec("AAPL"), rec("TSLA")], sync_id="x")
    dead_letter(sqs, resources.dlq_url, [rec("IBM")], sync_id="y")

    report = replay(aws, where=ReplayFilter(symbol="TSLA"), dry_run=True)

    assert report.dry_run and report.matched == 1 and report.replayed == 0
    assert [(i.message_id, i.symbols, i.outcome) for i in report.items] == [(wanted, ("AAPL", "TSLA"), "would_replay")]
    assert depth(sqs, resources.queue_url) == (0, 0)
    assert depth(sqs, resources.dlq_url) == (2, 0)


def test_send_error_mid_replay_stops_and_loses_nothing(aws: dict[str, Any]) -> None:
    sqs, resources = aws["sqs"], aws["resources"]
    seeded = {f"s{n:02d}" for n in range(25)}
    for sync_id in sorted(seeded):
        dead_letter(sqs, resources.dlq_url, [rec("AAPL")], sync_id=sync_id)
    client = aws_clients.client("sqs", max_attempts=1)
    faults = Faults(client, "sqs", "SendMessageBatch", [None, server_error, server_error, server_error])

    report = replay(aws, sqs=client)

    assert faults.injected == 1  # one attempt per call: the SDK did not retry
    assert not report.ok and "SendMessageBatch failed" in (report.aborted or "")
    assert (report.replayed, report.send_failed) == (10, 10)
    assert depth(sqs, resources.queue_url) == (10, 0)
    assert depth(sqs, resources.dlq_url) == (15, 0)  # the failed batch and the unread rest, all visible
    in_queue, in_dlq = take_all(sqs, resources.queue_url), take_all(sqs, resources.dlq_url)
    assert sync_ids(in_queue) | sync_ids(in_dlq) == seeded
    assert not sync_ids(in_queue) & sync_ids(in_dlq)


def test_entry_refused_by_send_message_batch_stays_in_the_dlq(aws: dict[str, Any]) -> None:
    sqs, resources = aws["sqs"], aws["resources"]
    for n in range(4):
        dead_letter(sqs, resources.dlq_url, [rec("AAPL")], sync_id=f"s{n}")
    Faults(sqs, "sqs", "SendMessageBatch", [refuse_entry(2)])

    report = replay(aws)

    assert (report.replayed, report.send_failed, report.aborted) == (3, 1, None)
    refused = [item for item in report.items if item.outcome == "send_failed"]
    assert len(refused) == 1 and "injected refusal" in refused[0].error
    assert sync_ids(take_all(sqs, resources.dlq_url)) == {refused[0].sync_id}
    assert sync_ids(take_all(sqs, resources.queue_url)) == {"s0", "s1", "s2", "s3"} - {refused[0].sync_id}


def test_rate_limit_spaces_batches_with_a_token_bucket(aws: dict[str, Any]) -> None:
    sqs, resources = aws["sqs"], aws["resources"]
    for n in range(7):
        dead_letter(sqs, resources.dlq_url, [rec("AAPL")], sync_id=f"s{n}")
    counter = EntryCounter(sqs)
    clock = FakeClock(start=100.0)

    report = replay(aws, rate=2, clock=clock, sleep=clock.sleep)

    assert report.replayed == 7
    assert counter.sizes == [2, 2, 2, 1]  # never more than one second's worth at once
    assert clock.sleeps == pytest.approx([1.0, 1.0, 0.5])  # (7 - 2 burst) / 2 per second
    assert report.throttled_seconds == pytest.approx(2.5)


def test_target_must_be_unambiguous(aws: dict[str, Any]) -> None:
    sqs, resources = aws["sqs"], aws["resources"]
    dlq_arn = resources.dlq_arn
    sqs.create_queue(
        QueueName="second-source",
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})},
    )
    dead_letter(sqs, resources.dlq_url, [rec("AAPL")])

    with pytest.raises(DlqError, match="--to"):
        replay(aws)
    with pytest.raises(DlqError, match="DLQ itself"):
        replay(aws, to=DLQ)
    report = replay(aws, to="second-source")
    assert report.replayed == 1 and report.target_url.endswith("/second-source")


# --------------------------------------------------------------------------- with the real consumer


def test_replaying_an_old_sync_after_a_newer_one_does_not_regress(handler_env: dict[str, Any]) -> None:
    sqs, resources = handler_env["sqs"], handler_env["resources"]
    source = consumer_source(handler_env)
    table = CalendarTable(handler_env["dynamodb"], resources.table_name)
    # The old sync's message ran out of retries; meanwhile the newer sync wrote the same key.
    old_body = encode_message(SyncMessage(sync_id=OLD_ID, synced_at=OLD, records=[rec("AAPL", "1.00")]))
    sqs.send_message(
        QueueUrl=resources.dlq_url,
        MessageBody=old_body,
        MessageAttributes=dlq.failure_attributes("retries_exhausted", "ThrottlingException", sync_id=OLD_ID, receive_count=5),
    )
    sqs.send_message(QueueUrl=resources.queue_url,
                     MessageBody=encode_message(SyncMessage(sync_id=NEW_ID, synced_at=NEW, records=[rec("AAPL", "2.00")])))
    assert source.drain().metrics[M.RECORDS_INSERTED] == 1

    report = replay(handler_env)
    drained = source.drain()

    assert report.replayed == 1
    assert drained.metrics[M.STALE_SYNC_SKIPPED] == 1 and drained.deleted == 1
    item = item_to_plain(table.get(("AAPL", "2025-08-01")) or {})
    assert (item["estimate"], item["lastSyncDate"], item["sync_id"]) == (Decimal("2.00"), NEW, NEW_ID)
    assert depth(sqs, resources.dlq_url) == (0, 0)


def test_poison_record_from_the_consumer_is_explained_and_replayable_after_fixing(handler_env: dict[str, Any]) -> None:
    sqs, resources = handler_env["sqs"], handler_env["resources"]
    source = consumer_source(handler_env)
    table = CalendarTable(handler_env["dynamodb"], resources.table_name)
    bad = rec("BADCO", date="2025-13-01")
    sqs.send_message(
        QueueUrl=resources.queue_url,
        MessageBody=encode_message(SyncMessage(sync_id=NEW_ID, synced_at=NEW, records=[rec("GOOD"), bad])),
        MessageAttributes=message_attributes(NEW_ID, NEW, 2),
    )
    source.drain()
    assert table.count() == 1  # the valid neighbour was written

    [peeked] = peek_dlq(sqs, DLQ, wait_seconds=0)
    assert peeked.kind == "poison" and peeked.symbols == ("BADCO",) and peeked.sync_id == NEW_ID
    assert "bad_report_date" in peeked.reason and "2025-13-01" in peeked.reason and peeked.record_failures[0].reason == peeked.reason
    assert depth(sqs, resources.dlq_url) == (1, 0)

    # Replayed unfixed, it fails again: the consumer writes the new failure over the old attributes.
    assert replay(handler_env).replayed == 1
    source.drain()
    [again] = peek_dlq(sqs, DLQ, wait_seconds=0)
    assert again.replay_count == 1 and again.kind == "poison" and "bad_report_date" in again.reason
    assert again.failed_at is not None and peeked.failed_at is not None and again.failed_at > peeked.failed_at
    assert again.attributes["source_message_id"]["StringValue"] != peeked.attributes["source_message_id"]["StringValue"]

    # Fixed on the way (the corrected date), it lands in the table and leaves the DLQ.
    report = replay(handler_env, where=ReplayFilter(symbol="BADCO"), rewrite=lambda body: body.replace("2025-13-01", "2025-12-01"))
    drained = source.drain()
    assert report.replayed == 1 and drained.metrics[M.RECORDS_INSERTED] == 1
    item = item_to_plain(table.get(("BADCO", "2025-12-01")) or {})
    assert item["sync_id"] == NEW_ID and item["lastSyncDate"] == NEW
    assert depth(sqs, resources.dlq_url) == (0, 0)


# --------------------------------------------------------------------------- stats, peek, native


def test_stats_and_peek_leave_every_message_in_the_dlq(aws: dict[str, Any]) -> None:
    sqs, resources = aws["sqs"], aws["resources"]
    dead_letter(sqs, resources.dlq_url, [rec("AAPL")], sync_id="a", failed_at=NOW - dt.timedelta(hours=3))
    dead_letter(sqs, resources.dlq_url, [rec("IBM")], sync_id="a")
    dead_letter(sqs, resources.dlq_url, [rec("NVDA")], sync_id="b", kind="retries_exhausted", reason="Throttling")
    sqs.send_message(QueueUrl=resources.dlq_url, MessageBody="not json at all")

    stats = dlq_stats(sqs, DLQ, wait_seconds=0, now=lambda: NOW)
    assert (stats.visible, stats.in_flight, stats.scanned, stats.undecodable) == (4, 0, 4, 1)
    assert dict(stats.by_kind) == {"poison": 2, "retries_exhausted": 1, "unknown": 1}
    assert dict(stats.by_sync_id) == {"a": 2, "b": 1, "(none)": 1}
    assert stats.by_reason["invalid record: injected"] == 2
    assert stats.oldest_age_seconds == 3 * 3600
    assert depth(sqs, resources.dlq_url) == (4, 0)

    peeked = peek_dlq(sqs, DLQ, limit=3, wait_seconds=0)
    assert len(peeked) == 3
    assert depth(sqs, resources.dlq_url) == (4, 0)
    everything = peek_dlq(sqs, DLQ, limit=10, wait_seconds=0)
    undecodable = [m for m in everything if not m.decodable]
    assert len(everything) == 4 and len(undecodable) == 1 and undecodable[0].symbols == ()
    assert "not a sync message" in undecodable[0].decode_error
    assert depth(sqs, resources.dlq_url) == (4, 0)


def test_cli_peek_stats_and_dry_run(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    sqs, resources = aws["sqs"], aws["resources"]
    dead_letter(sqs, resources.dlq_url, [rec("AAPL")], sync_id="a", reason="invalid record: bad date")
    sqs.send_message(QueueUrl=resources.dlq_url, MessageBody="{oops")

    assert cli.main(["dlq", "peek", DLQ]) == 0
    text = capsys.readouterr().out
    assert "invalid record: bad date" in text and "AAPL" in text and "undecodable body: '{oops'" in text

    assert cli.main(["dlq", "stats", DLQ, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["by_kind"] == {"poison": 1, "unknown": 1} and stats["visible"] == 2

    assert cli.main(["dlq", "replay", DLQ, "--kind", "poison", "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["matched"] == 1 and [i["outcome"] for i in report["items"]] == ["would_replay"]
    assert depth(sqs, resources.dlq_url) == (2, 0)

    assert cli.main(["dlq", "replay", resources.dlq_url, "--reason", "bad date", "--endpoint-url", aws["endpoint"]]) == 0
    assert "replayed 1" in capsys.readouterr().out
    assert depth(sqs, resources.dlq_url) == (1, 0) and depth(sqs, resources.queue_url) == (1, 0)


def test_native_replay_on_moto_explains_itself(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    dead_letter(aws["sqs"], aws["resources"].dlq_url, [rec("AAPL")])

    with pytest.raises(NativeUnsupported):
        start_native_replay(aws_clients.client("sqs", max_attempts=1), DLQ, rate=5)
    assert cli.main(["dlq", "replay", DLQ, "--native", "--rate", "5"]) == 2
    assert NATIVE_UNSUPPORTED in capsys.readouterr().err
    assert cli.main(["dlq", "replay", DLQ, "--native", "--symbol", "AAPL"]) == 2
    assert "cannot combine with filters" in capsys.readouterr().err
    assert depth(aws["sqs"], aws["resources"].dlq_url) == (1, 0)


def test_unknown_queue_is_a_clear_error(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["dlq", "peek", "no-such-dlq"]) == 2
    assert "no such queue: no-such-dlq" in capsys.readouterr().err


# --------------------------------------------------------------------------- local --serve


def test_local_serve_keeps_the_emulator_up_and_consumes_replays(tmp_path: Any) -> None:
    path = tmp_path / "calendar.csv"
    path.write_text(csv_text("AAPL,Apple Inc,2025-07-31,2025-06-30,1.42,USD"))
    seen: dict[str, Any] = {}

    def ready(summary: Any, emulator: Any) -> None:
        sqs = aws_clients.client("sqs")
        dead_letter(sqs, emulator.resources.dlq_url, [rec("IBM")], sync_id=sync_id_for(NEW, 1))
        seen["replay"] = cli.main(["dlq", "replay", DLQ, "--json"])

        def interrupt(_: float) -> None:
            raise KeyboardInterrupt

        stream = io.StringIO()
        seen["consumed"] = emulator.serve(stream, sleep=interrupt)
        seen["output"] = stream.getvalue()
        seen["table"] = CalendarTable(aws_clients.client("dynamodb"), emulator.resources.table_name).count()

    summary = run_local([str(path)], on_ready=ready)

    assert summary.ok and summary.table_items == 1
    assert seen["replay"] == 0 and seen["consumed"] == 1 and seen["table"] == 2
    assert f"AWS_ENDPOINT_URL={summary.endpoint}" in seen["output"] and "earnings-sync dlq peek earnings-dlq" in seen["output"]
    assert "consumed 1 message(s): 1 done" in seen["output"]


def test_a_message_whose_visibility_ran_out_is_not_read_twice(aws: dict[str, Any]) -> None:
    from earnings_sync.replay import _Scanner

    sqs, resources = aws["sqs"], aws["resources"]
    ids = [dead_letter(sqs, resources.dlq_url, [rec(f"S{n}")], sync_id=f"s{n}") for n in range(3)]
    scanner = _Scanner(sqs, resources.dlq_url, visibility_timeout=30, wait_seconds=0)
    first = scanner.next(2)
    assert [m.message_id for m in first] == ids[:2]
    # As if its visibility timeout had ended mid-scan: SQS hands it out again, first in line.
    sqs.change_message_visibility(QueueUrl=resources.dlq_url, ReceiptHandle=first[0].receipt_handle, VisibilityTimeout=0)

    assert [m.message_id for m in scanner.next(2)] == [ids[2]]
    assert scanner.next(2) == []
    assert scanner.release() == (3, 0)  # the re-read one with its new receipt handle
    assert depth(sqs, resources.dlq_url) == (3, 0)


def test_cli_text_output_and_operator_errors(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    sqs, resources = aws["sqs"], aws["resources"]
    recent = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=90)
    dead_letter(sqs, resources.dlq_url, [rec("AAPL")], sync_id="a", failed_at=recent)
    dead_letter(sqs, resources.dlq_url, [rec("IBM")], sync_id="b", failed_at=recent - dt.timedelta(hours=5))

    assert cli.main(["dlq", "stats", DLQ]) == 0
    text = capsys.readouterr().out
    assert "depth: 2 visible, 0 in flight" in text and "oldest: 5h01m ago" in text
    assert "by failure kind:\n       2  poison" in text and "by sync id:" in text

    assert cli.main(["dlq", "peek", DLQ, "--json", "--limit", "1"]) == 0
    [peeked] = json.loads(capsys.readouterr().out)
    assert peeked["kind"] == "poison" and peeked["record_failures"][0]["reason"] == "invalid record: injected"

    assert cli.main(["dlq", "replay", DLQ, "--older-than", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err
    assert cli.main(["dlq", "replay", DLQ, "--rate", "0"]) == 2
    assert cli.main(["dlq", "replay", DLQ, "--limit", "0"]) == 2
    assert "--limit" in capsys.readouterr().err

    Faults(cli_table.client("sqs", None), "sqs", "SendMessageBatch", [refuse_entry(0)])  # the command's own client
    assert cli.main(["dlq", "replay", DLQ, "--newer-than", "1h"]) == 1  # one matches, and SQS refuses it
    text = capsys.readouterr().out
    assert "send failed 1" in text and "injected refusal" in text and "left in the DLQ 2" in text
    assert depth(sqs, resources.dlq_url) == (2, 0)

    sqs.purge_queue(QueueUrl=resources.dlq_url)
    assert cli.main(["dlq", "peek", DLQ]) == 0
    assert "no visible messages" in capsys.readouterr().out


def test_native_replay_options_are_checked_before_calling_sqs(aws: dict[str, Any]) -> None:
    sqs = aws["sqs"]
    with pytest.raises(DlqError, match="DLQ itself"):
        start_native_replay(sqs, aws["resources"].dlq_arn, to=DLQ)
    with pytest.raises(DlqError, match="between 1 and 500"):
        start_native_replay(sqs, DLQ, to="earnings-queue", rate=1000)


def test_local_serve_from_the_command_line_until_ctrl_c(tmp_path: Any) -> None:
    """The operator flow: `local --serve` in one terminal, `dlq stats` in another, then Ctrl-C."""
    import os
    import signal
    import subprocess
    import sys

    path = tmp_path / "calendar.csv"
    path.write_text(csv_text("AAPL,Apple Inc,2025-07-31,2025-06-30,1.42,USD"))
    serving = subprocess.Popen(
        [sys.executable, "-m", "earnings_sync_cli", "local", str(path), "--serve"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert serving.stdout is not None
        lines = []
        for line in serving.stdout:
            lines.append(line)
            if "earnings-sync dlq peek" in line:
                break
        exports = next(line for line in lines if "export AWS_ENDPOINT_URL=" in line).split("export ", 1)[1].split()
        env = {**os.environ, **dict(pair.split("=", 1) for pair in exports)}
        other = subprocess.run(
            [sys.executable, "-m", "earnings_sync_cli", "dlq", "stats", DLQ, "--json"],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert other.returncode == 0, other.stderr
        assert json.loads(other.stdout)["visible"] == 0
        serving.send_signal(signal.SIGINT)
        rest = serving.communicate(timeout=30)[0]
    finally:
        if serving.poll() is None:
            serving.kill()
    assert serving.returncode == 0
    assert "table items: 1" in "".join(lines) and "stopping the emulator" in rest
