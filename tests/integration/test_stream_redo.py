"""`earnings-sync stream redo` on moto: the failure queue's ranges are read again from the real stream
and redone with the stream consumer's own processor; what cannot be redone is reported and kept."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from earnings_sync import aws as aws_clients
from earnings_sync import consistency
from earnings_sync.audit import find_superseded
from earnings_sync.calendar_table import record_to_item
from earnings_sync.stream_redo import (
    LOST_RANGE_ADVICE,
    FailureRange,
    RedoError,
    ShardReader,
    failure_queue_arn,
    format_report,
    parse_failure_record,
    redo_stream_failures,
)
from earnings_sync_cli import main as cli
from earnings_sync_cli.tables import client as cli_client
from tests.helpers import Faults, dynamodb_error, http_response
from tests.integration.redo_support import MOVED_FROM, MOVED_TO, REGRESSED, T1, T2, Scene, failure_alarm_fires, rec


@pytest.fixture
def scene(aws: dict[str, Any]) -> Scene:
    return Scene(aws)


@pytest.fixture
def given_up(scene: Scene) -> Scene:
    """A regression and a rescheduled date, with the stream consumer down past its retries."""
    scene.regress()
    scene.stream_consumer_gives_up()
    assert scene.estimate_and_sync(REGRESSED) == (Decimal("1"), T1)  # the older sync's write stands
    assert {MOVED_FROM, MOVED_TO} <= scene.keys()
    return scene


def redo(scene: Scene, **options: Any) -> Any:
    return redo_stream_failures(scene.sqs, scene.table, scene.streams, scene.queue_url, scene.stream, wait_seconds=0, **options)


def on_failure_record(scene: Scene, **info: Any) -> str:
    """An on-failure record as Lambda sends it, for the table's stream unless `info` says otherwise."""
    shard = scene.streams.describe_stream(StreamArn=scene.stream.stream_arn)["StreamDescription"]["Shards"][0]
    batch = {
        "shardId": shard["ShardId"],
        "startSequenceNumber": "9" * 30,
        "endSequenceNumber": "9" * 30,
        "approximateArrivalOfFirstRecord": "2025-07-19T06:00:00.000000Z",
        "approximateArrivalOfLastRecord": "2025-07-19T06:00:00.000000Z",
        "batchSize": 1,
        "streamArn": scene.stream.stream_arn,
        **info,
    }
    return json.dumps({"requestContext": {"condition": "RetryAttemptsExhausted"}, "version": "1.0", "DDBStreamBatchInfo": batch})


def send(scene: Scene, *bodies: str) -> None:
    for body in bodies:
        scene.sqs.send_message(QueueUrl=scene.queue_url, MessageBody=body)


# --------------------------------------------------------------------------- redone


def test_a_redone_range_restores_the_regression_and_empties_the_queue(given_up: Scene) -> None:
    scene = given_up
    messages, _ = scene.queue_depth()
    assert messages >= 7 and failure_alarm_fires(scene.sqs, scene.resources)
    # What the audit checks cannot see it: the regressed item is well-formed and current for its
    # period; only the stream record holds the newer image. The superseded date is visible.
    assert consistency.validate_item(scene.item(REGRESSED)) == []
    assert [s.key for s in find_superseded(list(scene.table.all_items()))[0]] == [MOVED_FROM]

    report = redo(scene)

    assert report.ok and report.count("redone") == messages == len(report.items)
    assert report.total("regressions_restored") == 1 and report.total("superseded_removed") == 1
    assert sum(item.regressions for item in report.items) == 1
    restored = [item for item in report.items if item.tally and item.tally.restored]
    assert [list(item.tally.restored) for item in restored] == [[REGRESSED]]
    assert scene.estimate_and_sync(REGRESSED) == (Decimal("2"), T2)
    assert MOVED_FROM not in scene.keys() and MOVED_TO in scene.keys()
    assert scene.queue_depth() == (0, 0) and not failure_alarm_fires(scene.sqs, scene.resources)
    assert find_superseded(list(scene.table.all_items())) == ([], [])
    # a second run finds nothing, and running a range twice changes nothing
    again = redo(scene)
    assert again.ok and again.items == []


def test_a_dry_run_reads_the_ranges_and_changes_nothing(given_up: Scene) -> None:
    scene = given_up
    before = {key: scene.item(key) for key in scene.keys()}
    visible, _ = scene.queue_depth()

    report = redo(scene, dry_run=True)

    assert report.ok and report.count("would_redo") == visible and report.count("redone") == 0
    assert sum(item.regressions for item in report.items) == 1 and report.total("regressions_restored") == 0
    assert {key: scene.item(key) for key in scene.keys()} == before
    assert scene.queue_depth() == (visible, 0) and report.released == visible
    text = format_report(report)
    assert "dry run: nothing written or deleted" in text and f"would redo {visible}" in text


def test_a_range_is_redone_in_order_across_an_expired_iterator(given_up: Scene) -> None:
    scene = given_up
    Faults(scene.streams, "dynamodbstreams", "GetRecords", [dynamodb_error("ExpiredIteratorException")])
    report = redo(scene)
    assert report.ok and report.total("regressions_restored") == 1


# --------------------------------------------------------------------------- not redone


def test_lost_ranges_are_reported_with_what_to_do_and_kept_until_discarded(scene: Scene) -> None:
    scene.regress()
    shard = scene.streams.describe_stream(StreamArn=scene.stream.stream_arn)["StreamDescription"]["Shards"][0]
    first = int(shard["SequenceNumberRange"]["StartingSequenceNumber"])
    send(
        scene,
        on_failure_record(scene, startSequenceNumber=str(first), endSequenceNumber=str(first)),  # trimmed (AWS's answer injected)
        on_failure_record(scene, startSequenceNumber=str(first + 1), endSequenceNumber=str(first + 1)),  # shard deleted
        on_failure_record(scene),  # past the end of the stream: never found
        on_failure_record(scene, startSequenceNumber=str(first + 2), endSequenceNumber=str(first + 10_000)),  # the shard ends first
    )
    # What DynamoDB Streams answers for a position older than 24 hours, and for a deleted shard.
    answers = {str(first): "TrimmedDataAccessException", str(first + 1): "ResourceNotFoundException"}

    def trimmed_or_gone(request: Any, **_: Any) -> Any:
        code = answers.get(json.loads(request.body)["SequenceNumber"])
        return dynamodb_error(code)(request) if code else None

    scene.streams.meta.events.register("before-send.dynamodbstreams.GetShardIterator", trimmed_or_gone)
    before = {key: scene.item(key) for key in scene.keys()}

    report = redo(scene)

    assert not report.ok and report.count("lost") == 4 and len(report.items) == 4
    reasons = sorted(item.reason for item in report.items)
    assert any(r.startswith("trimmed") for r in reasons) and any("no longer exists" in r for r in reasons)
    assert any("first record is not in the stream" in r for r in reasons) and any("last record" in r for r in reasons)
    assert {key: scene.item(key) for key in scene.keys()} == before  # a partial range is never redone
    assert scene.queue_depth() == (4, 0) and failure_alarm_fires(scene.sqs, scene.resources)
    assert report.as_dict()["lost_range_advice"] == LOST_RANGE_ADVICE
    assert "earnings-sync audit --fix" in format_report(report) and "[kept in the queue]" in format_report(report)

    assert redo(scene, discard_lost=True, dry_run=True).count("lost") == 4 and scene.queue_depth() == (4, 0)
    discarded = redo(scene, discard_lost=True)
    assert discarded.count("lost") == 4 and all(item.deleted for item in discarded.items)
    assert scene.queue_depth() == (0, 0)


def test_malformed_messages_are_reported_and_kept_and_the_good_ones_redone(given_up: Scene) -> None:
    scene = given_up
    good, _ = scene.queue_depth()
    other_table = scene.stream.stream_arn.replace(f"table/{scene.table_name}/", "table/someone-else/")
    malformed = {
        "not JSON": "\x00\xff garbage",
        "no DDBStreamBatchInfo (KinesisBatchInfo)": json.dumps({"KinesisBatchInfo": {"shardId": "shardId-000000000000"}}),
        "DDBStreamBatchInfo lacks": json.dumps({"DDBStreamBatchInfo": {"streamArn": scene.stream.stream_arn}}),
        "another stream's record": on_failure_record(scene, streamArn=other_table),
        "not a shard id": on_failure_record(scene, shardId="../../etc/passwd"),
        "not decimal numbers": on_failure_record(scene, startSequenceNumber="12e4"),
        "after endSequenceNumber": on_failure_record(scene, startSequenceNumber="9" * 31),
        "the stream API refuses this position": on_failure_record(scene, shardId="shardId-1"),  # too short for the API
        "the stream refuses this position": on_failure_record(scene, endSequenceNumber="9" * 31),
    }
    send(scene, *malformed.values())

    def refuse_the_unknown_position(request: Any, **_: Any) -> Any:
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        return dynamodb_error("ValidationException", "Invalid SequenceNumber")(request) if "9" * 30 in body else None

    scene.streams.meta.events.register("before-send.dynamodbstreams.GetShardIterator", refuse_the_unknown_position)

    report = redo(scene)

    assert not report.ok
    bad = [item for item in report.items if item.outcome == "malformed"]
    assert len(bad) == len(malformed) and report.count("redone") == good
    for reason in malformed:
        assert any(reason in item.reason for item in bad), (reason, [i.reason for i in bad])
    assert scene.queue_depth() == (len(malformed), 0)
    assert scene.estimate_and_sync(REGRESSED) == (Decimal("2"), T2)
    assert "\x00" not in format_report(report) and "not on-failure records of this table's stream" in format_report(report)


def test_a_failure_while_redoing_stops_the_run_and_puts_everything_back(given_up: Scene) -> None:
    scene = given_up
    visible, _ = scene.queue_depth()
    denied: list[str] = []

    def deny_the_first_write(request: Any, **_: Any) -> Any:
        if denied:
            return None
        denied.append(request.headers["X-Amz-Target"].decode() if isinstance(request.headers["X-Amz-Target"], bytes) else request.headers["X-Amz-Target"])
        return http_response(400, {"__type": "com.amazonaws.dynamodb.v20120810#AccessDeniedException", "message": "not allowed"})

    for operation in ("PutItem", "DeleteItem"):  # the regression's restore, the superseded date's removal
        scene.dynamodb.meta.events.register(f"before-send.dynamodb.{operation}", deny_the_first_write)

    report = redo(scene)

    assert not report.ok and report.count("failed") == 1 and report.aborted.startswith("redoing the range: ClientError")
    assert "AccessDeniedException" in report.aborted and "stopped:" in format_report(report)
    done = report.count("redone")
    assert scene.queue_depth() == (visible - done, 0)  # the failed message and those not read are back
    assert redo(scene).ok  # and the next run finishes the job
    assert scene.estimate_and_sync(REGRESSED) == (Decimal("2"), T2) and MOVED_FROM not in scene.keys()
    assert scene.queue_depth() == (0, 0)


def test_parse_failure_record_takes_lambdas_own_body(given_up: Scene) -> None:
    scene = given_up
    body = scene.sqs.receive_message(QueueUrl=scene.queue_url, VisibilityTimeout=0)["Messages"][0]["Body"]
    failure = parse_failure_record(body, scene.stream)
    assert failure.stream_arn == scene.stream.stream_arn and failure.batch_size == 1
    assert failure.condition == "RetryAttemptsExhausted" and int(failure.start) <= int(failure.end)


# --------------------------------------------------------------------------- the command


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["stream", "redo", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_redoes_and_prints_json(given_up: Scene, capsys: pytest.CaptureFixture[str]) -> None:
    scene = given_up
    visible, _ = scene.queue_depth()
    target = ["--endpoint-url", scene.env["endpoint"], "--table", scene.table_name]

    code, out, _ = run_cli(capsys, scene.queue_url, *target, "--dry-run", "--json")
    dry = json.loads(out)
    assert code == 0 and dry["dry_run"] and dry["would_redo"] == visible and dry["regressions"] == 1
    assert scene.estimate_and_sync(REGRESSED) == (Decimal("1"), T1)

    queue_name = scene.queue_url.rsplit("/", 1)[-1]
    code, out, _ = run_cli(capsys, queue_name, *target, "--json")
    done = json.loads(out)
    assert code == 0 and done["ok"] and done["redone"] == done["deleted"] == visible
    assert done["regressions_restored"] == 1 and done["superseded_removed"] == 1 and done["lost_range_advice"] is None
    assert [i["restored"] for i in done["items"] if i["restored"]] == [[list(REGRESSED)]]
    assert {i["outcome"] for i in done["items"]} == {"redone"} and all(i["range"]["shard_id"] for i in done["items"])

    code, out, _ = run_cli(capsys, queue_name, *target)
    assert code == 0 and "nothing to redo" in out


def test_the_command_exits_1_when_something_was_not_redone(scene: Scene, capsys: pytest.CaptureFixture[str]) -> None:
    send(scene, "not json", on_failure_record(scene))
    code, out, err = run_cli(capsys, scene.queue_url, "--table", scene.table_name)
    assert code == 1 and err == ""
    assert "malformed 1" in out and "lost 1" in out and LOST_RANGE_ADVICE in out
    assert scene.queue_depth() == (2, 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["no-such-queue", "--table", "{table}"], "no such queue: no-such-queue", id="unknown-queue"),
        pytest.param(["{queue}", "--table", "no-such-table"], "no such table: no-such-table", id="unknown-table"),
        pytest.param(["--table", "{table}"], "name the stream failure queue (QUEUE)", id="no-mapping-to-find-the-queue"),
        pytest.param(["{queue}", "--visibility-timeout", "0"], "--visibility-timeout must be between 1", id="bad-visibility"),
        pytest.param(["{queue}", "--endpoint-url", "http://127.0.0.1:9"], "cannot reach http://127.0.0.1:9", id="unreachable"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(scene: Scene, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    argv = [a.format(table=scene.table_name, queue=scene.queue_url) for a in argv]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("earnings-sync stream redo: ") and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_no_credentials_is_one_line_and_exit_2(
    scene: Scene, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    aws_clients._cached_client.cache_clear()
    code, out, err = run_cli(capsys, scene.queue_url, "--table", scene.table_name)
    assert code == 2 and "no AWS credentials" in err and err.count("\n") == 1


def test_the_failure_queue_is_found_from_the_stream_mapping() -> None:
    stream_arn = "arn:aws:dynamodb:us-east-1:123456789012:table/earningsCalendar/stream/2025-07-18T06:00:00.000"
    queue_arn = "arn:aws:sqs:us-east-1:123456789012:stack-StreamFailureQueue-ABC"
    client = boto3.client("lambda", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_response(
            "list_event_source_mappings",
            {"EventSourceMappings": [{"UUID": "00000000-0000-0000-0000-000000000001", "EventSourceArn": stream_arn, "DestinationConfig": {"OnFailure": {"Destination": queue_arn}}}]},
            {"EventSourceArn": stream_arn},
        )
        assert failure_queue_arn(client, stream_arn) == queue_arn
        stub.add_response(
            "list_event_source_mappings",
            {"EventSourceMappings": [
                {"UUID": "00000000-0000-0000-0000-000000000001", "DestinationConfig": {"OnFailure": {"Destination": queue_arn}}},
                {"UUID": "00000000-0000-0000-0000-000000000002", "DestinationConfig": {"OnFailure": {"Destination": queue_arn + "2"}}},
            ]},
            {"EventSourceArn": stream_arn},
        )
        with pytest.raises(RedoError, match="2 on-failure queue"):
            failure_queue_arn(client, stream_arn)


# --------------------------------------------------------------------------- reading and the queue


def test_ranges_of_one_shard_are_read_in_one_pass_and_gaps_are_skipped_or_sought(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    for number in range(12):
        scene.sync(T1, rec(f"S{number:02d}", "2025-08-01"))
    shard = scene.streams.describe_stream(StreamArn=scene.stream.stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    reader = ShardReader(scene.streams, scene.stream.stream_arn, shard)
    first = int(reader.streams.get_records(
        ShardIterator=reader.streams.get_shard_iterator(StreamArn=scene.stream.stream_arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    )["Records"][0]["dynamodb"]["SequenceNumber"])

    def failure(start: int, end: int) -> FailureRange:
        return FailureRange(scene.stream.stream_arn, shard, str(first + start), str(first + end), end - start + 1, "", None)

    seeks = Faults(scene.streams, "dynamodbstreams", "GetShardIterator", [])
    symbols = lambda records: [r["dynamodb"]["Keys"]["asset_symbol"]["S"] for r in records]  # noqa: E731
    assert symbols(reader.read(failure(0, 1), limit=4)) == ["S00", "S01"]
    assert symbols(reader.read(failure(2, 2), limit=4)) == ["S02"]  # contiguous: read on
    assert symbols(reader.read(failure(5, 6), limit=4)) == ["S05", "S06"]  # a small gap: skipped
    assert seeks.calls == 1
    assert symbols(reader.read(failure(4, 4), limit=1)) == ["S04"]  # behind what was read: a seek
    assert seeks.calls == 2
    monkeypatch.setattr("earnings_sync.stream_redo.GAP_BUDGET", 2)
    assert symbols(reader.read(failure(10, 11), limit=2)) == ["S10", "S11"]  # a wide gap: a seek
    assert seeks.calls == 3


def test_a_table_without_a_stream_is_bad_input(scene: Scene, capsys: pytest.CaptureFixture[str]) -> None:
    scene.dynamodb.create_table(
        TableName="no-stream",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    code, _, err = run_cli(capsys, scene.queue_url, "--table", "no-stream")
    assert code == 2 and "table no-stream has no stream" in err


def test_messages_whose_visibility_ran_out_are_handled_once(given_up: Scene) -> None:
    scene = given_up
    visible, _ = scene.queue_depth()
    report = redo(scene, dry_run=True, visibility_timeout=1, progress=lambda r: time.sleep(1.2))
    assert report.count("would_redo") == visible == len({item.message_id for item in report.items}) == len(report.items)
    assert scene.queue_depth() == (visible, 0)


def test_a_range_redone_but_not_deleted_is_redone_again_harmlessly(given_up: Scene) -> None:
    scene = given_up
    visible, _ = scene.queue_depth()
    Faults(scene.sqs, "sqs", "DeleteMessageBatch", [lambda request: http_response(403, {"__type": "AccessDenied", "message": "no"})])
    report = redo(scene)
    assert report.count("redone") == visible and report.ok and report.total("regressions_restored") == 1
    assert not any(item.deleted for item in report.items)
    assert all(item.reason.startswith("not deleted from the queue: ClientError") for item in report.items)
    assert scene.queue_depth() == (visible, 0)
    again = redo(scene)  # the restore's condition fails now: nothing is written twice
    assert again.ok and again.count("redone") == visible
    assert again.total("regressions_restored") == 0 and again.total("regression_conflicts") == 1
    assert scene.queue_depth() == (0, 0) and scene.estimate_and_sync(REGRESSED) == (Decimal("2"), T2)


def test_an_error_reading_the_stream_or_the_queue_stops_the_run(given_up: Scene) -> None:
    scene = given_up
    visible, _ = scene.queue_depth()
    denied = dynamodb_error("AccessDeniedException", "not allowed")
    Faults(scene.streams, "dynamodbstreams", "GetShardIterator", [denied])
    report = redo(scene)
    assert report.aborted.startswith("reading the stream: ClientError") and report.count("failed") == 1
    assert scene.queue_depth() == (visible, 0)

    Faults(scene.sqs, "sqs", "ReceiveMessage", [None, lambda request: http_response(403, {"__type": "AccessDenied", "message": "no"})])
    report = redo(scene)
    assert report.aborted.startswith("reading the queue") and report.count("redone") > 0 and not report.ok
    Faults(scene.sqs, "sqs", "ReceiveMessage", [lambda request: http_response(403, {"__type": "AccessDenied", "message": "no"})])
    with pytest.raises(ClientError):
        redo(scene)  # nothing read at all: the caller's error (the command exits 2)


def test_expired_iterators_are_renewed_a_few_times_then_the_run_stops(given_up: Scene) -> None:
    scene = given_up
    Faults(scene.streams, "dynamodbstreams", "GetRecords", [dynamodb_error("ExpiredIteratorException")] * 4)
    report = redo(scene)
    assert report.aborted and "ExpiredIteratorException" in report.aborted and scene.queue_depth()[0] > 0


def test_invalid_items_are_counted_and_their_range_is_done(scene: Scene) -> None:
    scene.regress()
    scene.dynamodb.put_item(
        TableName=scene.table_name,
        Item={**record_to_item(rec("ZBAD", "2025-09-01"), "sync-2025-07-19", T2), "currency": {"S": "dollars"}},
    )
    scene.stream_consumer_gives_up()
    report = redo(scene)
    assert report.ok and report.total("validation_failed") == 1 and scene.queue_depth() == (0, 0)
    text = format_report(report, max_lines=3)
    assert "validation failed 1 (bad_currency)" in text or "more (--json lists all)" in text
    assert f"… {len(report.items) - 3} more (--json lists all)" in text
    (invalid,) = [i for item in report.as_dict()["items"] for i in item["invalid"]]
    assert invalid == {"key": ["ZBAD", "2025-09-01"], "rules": ["bad_currency"]}
    assert "validation failed 1 (bad_currency)" in format_report(report, max_lines=100)


def test_a_queue_that_cannot_be_read_is_bad_input(scene: Scene, capsys: pytest.CaptureFixture[str]) -> None:
    denied = lambda request: http_response(403, {"__type": "AccessDenied", "message": "not allowed"})  # noqa: E731
    Faults(cli_client("sqs", None), "sqs", "ReceiveMessage", [denied])  # the command's own client
    code, out, err = run_cli(capsys, scene.queue_url, "--table", scene.table_name)
    assert code == 2 and out == "" and "AccessDenied" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("synced_at", "estimate"),
    [
        pytest.param("2025-07-20T06:00:00.000000Z", "1.00", id="next-sync-same-content-as-the-older"),
        pytest.param("2025-07-20T06:00:00.000000Z", "3.00", id="next-sync-new-content"),
        pytest.param(T2, "2.00", id="the-newer-snapshot-again-with-its-own-synced-at"),
    ],
)
def test_a_lost_regression_is_rewritten_by_the_next_sync_that_lists_the_key(scene: Scene, synced_at: str, estimate: str) -> None:
    """What LOST_RANGE_ADVICE promises, by the conflict rules: any sync newer than the regressed
    lastSyncDate replaces or confirms the item, so it ends exactly as that sync has it."""
    scene.regress()
    assert scene.estimate_and_sync(REGRESSED) == (Decimal("1"), T1)
    scene.sync(synced_at, rec(*REGRESSED, estimate=estimate))
    assert scene.estimate_and_sync(REGRESSED) == (Decimal(estimate), synced_at)
