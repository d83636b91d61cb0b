"""The pipeline under faults: real handlers, moto, faults injected at the botocore layer (seeded).

Each scenario ends with the same two checks: the ledger accounts for every CSV row exactly once
(written, unchanged, stale, rejected, duplicate, or in the DLQ until it is replayed), and the final
table equals the fault-free run's (content and lastSyncDate; sync ids differ from run to run). The
change-event scenarios also compare what was published with the fault-free run's events.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from earnings_sync.observability import M
from earnings_sync_cli import main as cli
from tests.change_event_support import assert_valid
from tests.faults.conftest import (
    NEWER_AT,
    OLDER_AT,
    Baseline,
    Harness,
    Snapshots,
    _rows,
    assert_accounted,
    assert_same_fates,
    assert_same_table,
)
from tests.faults.injectors import (
    ConcurrentConsumer,
    CrashAfterWrite,
    FailedEntries,
    Gate,
    PartialBatch,
    RaceBeforeWrite,
    SeededFaults,
    StreamConsumerDown,
    TimingOut,
    access_denied,
    connection_lost,
    request_body,
    server_error,
    throttled,
    unavailable,
    written_keys,
)
from tests.helpers import Faults, dynamodb_error, http_response
from tests.integration.redo_support import failure_alarm_fires

World = Callable[..., Harness]
Baselines = Callable[..., Baseline]


# --------------------------------------------------------------------------- DynamoDB faults


@pytest.mark.parametrize(
    ("reply", "operations"),
    [
        pytest.param(throttled, ("BatchGetItem", "BatchWriteItem"), id="throttling"),
        pytest.param(server_error, ("BatchGetItem", "BatchWriteItem", "PutItem"), id="5xx-ledger-included"),
        pytest.param(unavailable, ("BatchWriteItem",), id="503"),
        pytest.param(connection_lost, ("BatchGetItem", "BatchWriteItem", "PutItem"), id="connection-errors"),
    ],
)
def test_dynamodb_faults_delay_but_never_lose_or_double_count(
    world: World, baseline: Baselines, snapshots: Snapshots, reply: Callable, operations: tuple[str, ...]
) -> None:
    """A quarter of the consumer's DynamoDB calls fail (its ledger PutItem too, where listed):
    messages are retried by SQS, a few use up maxReceiveCount and go to the DLQ (with a reason, or
    by the queue's own redrive when even the last receive could not record its outcome); a replay
    settles them. A message counts once, on its first completion."""
    fault_free = baseline((snapshots.older, OLDER_AT))
    harness = world()
    with harness.running():
        report, _ = harness.sync(snapshots.older, OLDER_AT)  # the producer's manifest is not faulted here
        faults = SeededFaults(harness.handler_client("dynamodb"), "dynamodb", operations, reply, rate=0.25, seed=3)
        harness.drain()
        assert faults.injected > 0 and harness.metric(M.MESSAGES_FAILED) > 0
        before = harness.ledger(report["sync_id"])
        assert before.manifest and not before.anomalies
        assert before.accounted_rows + before.missing == before.rows  # nothing counted twice
        assert before.in_dlq_total == before.in_dlq.get("retries_exhausted", 0)
        assert before.missing == 0 or harness.dlq_depth() > 0  # missing = moved by the queue's redrive
        faults.gate.on = False
        harness.replay()
        assert harness.dlq_depth() == 0
        after = harness.ledger(report["sync_id"])
    assert_accounted(after)
    assert_same_fates(after, fault_free.ledgers[0])
    assert_same_table(harness, fault_free)


def test_unprocessed_items_and_keys_are_retried_to_completion(world: World, baseline: Baselines, snapshots: Snapshots) -> None:
    """BatchWriteItem / BatchGetItem process only part of each request; our backoff loop retries the
    rest, and a message whose retries run out is retried by SQS."""
    fault_free = baseline((snapshots.older, OLDER_AT))
    harness = world()
    with harness.running():
        client = harness.handler_client("dynamodb")
        writes = PartialBatch(client, "dynamodb", "BatchWriteItem", rate=0.4, seed=5)
        reads = PartialBatch(client, "dynamodb", "BatchGetItem", rate=0.3, seed=6, gate=writes.gate)
        report, _ = harness.sync(snapshots.older, OLDER_AT)
        harness.drain()
        assert writes.injected > 0 and reads.injected > 0 and harness.metric(M.WRITE_RETRIES) > 0
        writes.gate.on = False
        harness.replay()
        ledger = harness.ledger(report["sync_id"])
    assert_accounted(ledger)
    assert_same_fates(ledger, fault_free.ledgers[0])
    assert_same_table(harness, fault_free)


# --------------------------------------------------------------------------- SQS faults


def test_send_failures_are_resent_by_the_producer(world: World, baseline: Baselines, snapshots: Snapshots) -> None:
    """SendMessageBatch reports a third of its entries as Failed, and some calls lose the
    connection: the producer resends with backoff and the sync is whole."""
    fault_free = baseline((snapshots.older, OLDER_AT))
    harness = world()
    with harness.running():
        sqs = harness.handler_client("sqs")
        partial = PartialBatch(sqs, "sqs", "SendMessageBatch", rate=0.3, seed=7)
        cut = SeededFaults(sqs, "sqs", ("SendMessageBatch",), connection_lost, rate=0.2, seed=8)
        report, error = harness.sync(snapshots.older, OLDER_AT)
        assert error is None and partial.injected > 0 and cut.injected > 0 and report["send_retries"] > 0
        partial.gate.on = cut.gate.on = False
        harness.drain()
        ledger = harness.ledger(report["sync_id"])
    assert_accounted(ledger)
    assert ledger.inserted == fault_free.ledgers[0].inserted
    assert_same_table(harness, fault_free)


def test_messages_sqs_never_accepts_make_the_sync_incomplete_until_it_is_run_again(
    world: World, baseline: Baselines, snapshots: Snapshots
) -> None:
    """Two messages fail on every attempt: the producer fails, the ledger names exactly what was
    never enqueued, and running the sync again (same snapshot, same synced_at) completes the table."""
    fault_free = baseline((snapshots.older, OLDER_AT))
    harness = world()
    with harness.running():
        refused = {2, 5}
        partial = PartialBatch(
            harness.handler_client("sqs"), "sqs", "SendMessageBatch", rate=0.0, seed=9,
            always=lambda entry: json.loads(entry["MessageBody"])["seq"] in refused,
        )
        report, error = harness.sync(snapshots.older, OLDER_AT)
        assert error is not None and sorted(f["seq"] for f in report["failed_messages"]) == sorted(refused)
        harness.drain()
        first = harness.ledger(report["sync_id"])
        assert first.status == "incomplete" and first.missing == 0 and not first.anomalies
        assert [seq for seq, _ in first.unsent_seqs] == sorted(refused)
        assert first.not_enqueued == sum(f["records"] for f in report["failed_messages"])
        assert first.accounted_rows + first.not_enqueued == first.rows
        assert any("never enqueued" in problem for problem in first.problems())
        partial.gate.on = False
        again, error = harness.sync(snapshots.older, OLDER_AT)
        assert error is None
        harness.drain()
        second = harness.ledger(again["sync_id"])
    assert_accounted(second)
    assert second.written == first.not_enqueued  # the rest was already there: unchanged
    assert_same_table(harness, fault_free)


# --------------------------------------------------------------------------- the consumer dies


def test_a_crash_in_the_middle_of_a_batch(world: World, baseline: Baselines, snapshots: Snapshots) -> None:
    """The invocation dies right after some BatchWriteItem calls: those records are in the table,
    their message has no outcome yet, and the whole batch comes back. The redelivery finds them
    already written (unchanged) and records the message's outcome once."""
    fault_free = baseline((snapshots.older, OLDER_AT))
    harness = world()
    with harness.running():
        crash = CrashAfterWrite(harness.handler_client("dynamodb"), crash_on={2, 9, 15})
        report, _ = harness.sync(snapshots.older, OLDER_AT)
        harness.drain()
        ledger = harness.ledger(report["sync_id"])
    assert crash.crashes == 3 and harness.drains[0].failed_invocations == 3
    assert harness.metric(M.LEDGER_REPEATS) > 0  # redelivered messages that had completed before the crash
    assert_accounted(ledger)
    assert_same_fates(ledger, fault_free.ledgers[0])
    assert 0 < ledger.unchanged <= 3 * 5  # only the crashed messages' records look unchanged
    assert_same_table(harness, fault_free)


def test_a_lambda_timeout_after_part_of_the_batch(world: World, baseline: Baselines, snapshots: Snapshots) -> None:
    """The runtime kills two invocations after they finished half of their messages: every message
    of those batches is delivered again, and the ledger keeps the first completion of each, so it
    is identical to the fault-free run's."""
    fault_free = baseline((snapshots.older, OLDER_AT))
    timeouts = TimingOut(2)
    harness = world(wrap_consumer=timeouts)
    with harness.running():
        report, _ = harness.sync(snapshots.older, OLDER_AT)
        harness.drain()
        ledger = harness.ledger(report["sync_id"])
    assert timeouts.timeouts == 2 and harness.metric(M.LEDGER_REPEATS) >= 2
    assert_accounted(ledger)
    expected = fault_free.ledgers[0]
    assert (ledger.inserted, ledger.updated, ledger.unchanged, ledger.stale) == (
        expected.inserted, expected.updated, expected.unchanged, expected.stale,
    )
    assert_same_table(harness, fault_free)


# --------------------------------------------------------------------------- two syncs


def _shuffle_queue(harness: Harness, seed: int, duplicate_rate: float) -> int:
    """Take every queued message off and send them back in a seeded order, some twice."""
    sqs, url = harness.sqs, harness.resources.queue_url
    messages: list[dict] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600,
                                       MessageAttributeNames=["All"]).get("Messages", []):
        messages.extend(batch)
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    rng = random.Random(seed)
    order = messages + [m for m in messages if rng.random() < duplicate_rate]
    rng.shuffle(order)
    for start in range(0, len(order), 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": m["Body"], "MessageAttributes": m.get("MessageAttributes", {})}
            for i, m in enumerate(order[start : start + 10])
        ])
    return len(order) - len(messages)


def test_duplicate_and_out_of_order_deliveries_of_two_syncs(world: World, baseline: Baselines, snapshots: Snapshots) -> None:
    """Both syncs' messages in one seeded random order, a third of them delivered twice: the older
    sync's records that arrive after the newer sync's are stale, duplicates count once."""
    fault_free = baseline((snapshots.older, OLDER_AT), (snapshots.newer, NEWER_AT))
    harness = world()
    with harness.running():
        older, _ = harness.sync(snapshots.older, OLDER_AT)
        newer, _ = harness.sync(snapshots.newer, NEWER_AT)
        duplicates = _shuffle_queue(harness, seed=13, duplicate_rate=0.33)
        harness.drain()
        ledgers = harness.ledger(older["sync_id"]), harness.ledger(newer["sync_id"])
    assert duplicates > 0 and harness.metric(M.LEDGER_REPEATS) >= duplicates
    assert ledgers[0].stale > 0  # some of the older sync came after the newer one
    for ledger, expected in zip(ledgers, fault_free.ledgers, strict=True):
        assert_accounted(ledger)
        assert_same_fates(ledger, expected)
    assert_same_table(harness, fault_free)


def test_dlq_replay_of_an_older_sync_after_a_newer_one(world: World, baseline: Baselines, snapshots: Snapshots) -> None:
    """The older sync leaves records in the DLQ: two poison records (DynamoDB refuses them; the
    first DLQ send fails and the message is retried) and a message whose reads are throttled until
    maxReceiveCount. The newer sync runs, then the DLQ is replayed: each record leaves the DLQ in
    the ledger (stale where the newer sync has it), and the table is as if nothing had failed."""
    fault_free = baseline((snapshots.older, OLDER_AT), (snapshots.newer, NEWER_AT))
    poisoned = snapshots.keys_of(snapshots.stable[5:6]) | snapshots.keys_of(snapshots.stable[-3:-2])
    starved = {s for s in snapshots.stable[20:22]}
    harness = world()
    with harness.running():
        gate = Gate()
        client = harness.handler_client("dynamodb")
        refuse = SeededFaults(
            client, "dynamodb", ("BatchWriteItem", "PutItem"), dynamodb_error("ValidationException", "invalid"), rate=1.0, seed=1, gate=gate,
            where=lambda request: bool(written_keys(request_body(request)) & poisoned),
        )
        starve = SeededFaults(
            client, "dynamodb", ("BatchGetItem",), throttled, rate=1.0, seed=2, gate=gate,
            where=lambda request: any(k["asset_symbol"]["S"] in starved
                                      for r in request_body(request)["RequestItems"].values() for k in r["Keys"]),
        )
        dlq_send = Faults(harness.handler_client("sqs", 8), "sqs", "SendMessage", [access_denied])  # the first DLQ send
        older, _ = harness.sync(snapshots.older, OLDER_AT)
        harness.drain()
        held = harness.ledger(older["sync_id"])
        assert refuse.injected > 0 and starve.injected >= harness.resources.max_receive_count and dlq_send.injected == 1
        assert_accounted(held, settled=False)
        assert held.in_dlq.get("poison") == len(poisoned) and held.in_dlq.get("retries_exhausted", 0) >= 2
        assert held.status == "in_dlq" and any("wait in the DLQ" in p for p in held.problems())
        gate.on = False
        newer, _ = harness.sync(snapshots.newer, NEWER_AT)
        harness.drain()
        assert harness.replay() >= 2
        ledgers = harness.ledger(older["sync_id"]), harness.ledger(newer["sync_id"])
    assert ledgers[0].replays >= 2 and ledgers[0].stale > 0
    for ledger, expected in zip(ledgers, fault_free.ledgers, strict=True):
        assert_accounted(ledger)
        assert_same_fates(ledger, expected)
    assert_same_table(harness, fault_free)


def revised(snapshots: Snapshots) -> list[str]:
    """Stable symbols whose estimate the newer snapshot revises."""
    older = {(row[0], row[2]): row[4] for row in _rows(snapshots.older)}
    return [s for s in snapshots.stable if any(row[0] == s and older.get((s, row[2])) != row[4] for row in _rows(snapshots.newer))]


def test_race_of_two_syncs_and_a_dlq_replay_on_the_batch_path(world: World, baseline: Baselines, snapshots: Snapshots) -> None:
    """A second consumer environment writes the newer sync's messages between the older sync's
    BatchGetItem and BatchWriteItem, twice: once during the older sync, once during the replay of
    its DLQ messages. The older writes land on newer items (BatchWriteItem has no condition) and the
    stream consumer's regression guard puts the newer data back."""
    fault_free = baseline((snapshots.older, OLDER_AT), (snapshots.newer, NEWER_AT))
    live = snapshots.keys_of(snapshots.stable[:2]) | snapshots.keys_of(revised(snapshots)[:2])  # some whose content changes
    replayed_symbols = set(snapshots.stable[-6:-4])
    harness = world()
    staging_url = harness.sqs.create_queue(QueueName="newer-sync-staging")["QueueUrl"]
    staging_arn = harness.sqs.get_queue_attributes(QueueUrl=staging_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    with harness.running():
        client = harness.handler_client("dynamodb")
        starve = SeededFaults(
            client, "dynamodb", ("BatchGetItem",), throttled, rate=1.0, seed=2,
            where=lambda request: any(k["asset_symbol"]["S"] in replayed_symbols
                                      for r in request_body(request)["RequestItems"].values() for k in r["Keys"]),
        )
        second = ConcurrentConsumer(harness.sqs, staging_url, staging_arn, harness.resources)
        race = RaceBeforeWrite(client, second, older=OLDER_AT, targets=live | snapshots.keys_of(sorted(replayed_symbols)), gates=[starve.gate])
        older, _ = harness.sync(snapshots.older, OLDER_AT)
        newer, _ = harness.sync(snapshots.newer, NEWER_AT, queue_url=staging_url)
        harness.drain()
        assert race.races >= 1 and harness.dlq_depth() >= 1
        starve.gate.on = False
        harness.replay()
        assert race.races >= 2
        second.source.drain()  # the rest of the newer sync
        harness.drain()  # and the stream
        ledgers = harness.ledger(older["sync_id"]), harness.ledger(newer["sync_id"])
    assert harness.metric(M.REGRESSIONS_RESTORED) >= 2
    for ledger, expected in zip(ledgers, fault_free.ledgers, strict=True):
        assert_accounted(ledger)
        assert_same_fates(ledger, expected)
    assert_same_table(harness, fault_free)
    # Neither the regressed MODIFYs nor their restores reach consumers: each key's events move
    # forward in time, and a key the newer sync wrote first has that one Scheduled event only.
    events = harness.take_events()
    assert_valid(events)
    by_key = defaultdict(list)
    for event in events:
        by_key[(event["detail"]["asset_symbol"], event["detail"]["earnings_date"])].append(event)
    for key, published in by_key.items():
        moments = [e["detail"]["synced_at"] for e in published]
        assert moments == sorted(moments), (key, moments)
    assert live <= by_key.keys()
    for key in live:
        assert [(e["detail-type"], e["detail"]["synced_at"]) for e in by_key[key]] == [("Earnings Scheduled", NEWER_AT)], key


# --------------------------------------------------------------------------- the stream consumer gives up


def regressions(harness: Harness, fault_free: Baseline) -> set[tuple[str, str]]:
    """Keys holding the older sync where the fault-free run holds the newer one."""
    return {
        key for key, values in harness.table().items()
        if values[-1] == OLDER_AT and key in fault_free.table and fault_free.table[key][-1] == NEWER_AT
    }


def test_a_regression_the_stream_consumer_gave_up_on_is_found_and_repaired(
    world: World, baseline: Baselines, snapshots: Snapshots, capsys: pytest.CaptureFixture[str]
) -> None:
    """The race of test_race_of_two_syncs_and_a_dlq_replay_on_the_batch_path regresses items while
    the stream consumer is down past its retry window: the mapping gives up on every record (3
    retries after bisecting down to single records) and sends each range to StreamFailureQueue.
    The consumer comes back and the rest of the newer sync is checked as usual, but the mapping never
    returns to what it skipped: the regression stays. The alarm is raised; `earnings-sync stream
    redo` (docs/operations.md) restores the fault-free table and empties the queue."""
    fault_free = baseline((snapshots.older, OLDER_AT), (snapshots.newer, NEWER_AT))
    live = snapshots.keys_of(snapshots.stable[:3])
    harness = world()
    staging_url = harness.sqs.create_queue(QueueName="newer-sync-staging")["QueueUrl"]
    staging_arn = harness.sqs.get_queue_attributes(QueueUrl=staging_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    failure_queue = harness.resources.stream_failure_queue_url
    with harness.running():
        assert harness.pipeline.streams is not None and harness.pipeline.streams.on_failure_url == failure_queue
        down = StreamConsumerDown(harness.pipeline.streams)
        second = ConcurrentConsumer(harness.sqs, staging_url, staging_arn, harness.resources)
        race = RaceBeforeWrite(harness.handler_client("dynamodb"), second, older=OLDER_AT, targets=live, gates=[])
        older, _ = harness.sync(snapshots.older, OLDER_AT)
        newer, _ = harness.sync(snapshots.newer, NEWER_AT, queue_url=staging_url)
        harness.drain()  # the older sync, raced by part of the newer one; every stream record given up on
        skipped = harness.drains[-1].stream_skipped_records
        assert race.races >= 1 and down.invocations > 0 and skipped == harness.drains[-1].stream_records > 0
        down.recover()
        second.source.drain()  # the rest of the newer sync
        harness.drain()
        assert harness.drains[-1].stream_records > 0 and harness.drains[-1].stream_skipped_records == 0
        # (a) the table holds the regression: the older sync's content where the newer sync wrote
        regressed = regressions(harness, fault_free)
        assert regressed & live
        # (b) the alarm on the failure queue, as template.yaml declares it, holds
        assert failure_alarm_fires(harness.sqs, harness.resources)
        # (c) the documented repair
        code = cli.main(["stream", "redo", failure_queue, "--table", harness.resources.table_name, "--json"])
        report = json.loads(capsys.readouterr().out)
        assert code == 0 and report["ok"], report
        assert report["redone"] == report["deleted"] == report["messages"] and report["records"] == skipped
        assert report["regressions_restored"] == report["regressions"] == len(regressed)
        harness.drain()  # the stream consumer checks the repair's own writes
        ledgers = harness.ledger(older["sync_id"]), harness.ledger(newer["sync_id"])
    assert not failure_alarm_fires(harness.sqs, harness.resources)
    assert sum(d.stream_skipped_records for d in harness.drains) == skipped  # nothing given up on since
    for ledger, expected in zip(ledgers, fault_free.ledgers, strict=True):
        assert_accounted(ledger)
        assert_same_fates(ledger, expected)
    assert_same_table(harness, fault_free)


# --------------------------------------------------------------------------- change events


def events_unavailable(request: Any) -> Any:
    return http_response(500, {"__type": "InternalException", "message": "injected"})


def change(event: dict[str, Any]) -> tuple:
    """What an event says, apart from which run made it (sync ids, and so change ids, differ)."""
    detail = {k: v for k, v in event["detail"].items() if k not in ("change_id", "sync_id")}
    return event["detail-type"], json.dumps(detail, sort_keys=True)


def test_change_events_that_fail_to_publish_go_out_once_per_change_id(world: World, baseline: Baselines, snapshots: Snapshots) -> None:
    """A tenth of the stream consumer's PutEvents requests fail outright and a tenth of the other
    requests' entries are reported failed (FailedEntryCount). Failed entries are sent again; what
    still fails fails its stream record before any delete it announces, the rest of the batch is
    deferred, and Lambda's mapping retries from that record. In the end every change of the
    fault-free run is out, each under one change_id: retried records published the same ids again,
    never a new one, and nothing else."""
    fault_free = baseline((snapshots.older, OLDER_AT), (snapshots.newer, NEWER_AT))
    harness = world()
    with harness.running():
        client = harness.handler_client("events")
        cut = SeededFaults(client, "events", ("PutEvents",), events_unavailable, rate=0.1, seed=21)
        partial = FailedEntries(client, rate=0.1, seed=22, gate=cut.gate)
        reports = []
        for path, synced_at in ((snapshots.older, OLDER_AT), (snapshots.newer, NEWER_AT)):
            report, _ = harness.sync(path, synced_at)
            harness.drain()
            reports.append(report["sync_id"])
        events = harness.take_events()
        ledgers = [harness.ledger(sync_id) for sync_id in reports]
    assert cut.injected > 0 and partial.injected > 0
    assert harness.metric(M.CHANGE_EVENT_PUBLISH_FAILURES) > 0 and harness.metric(M.STREAM_RECORD_FAILURES) > 0
    assert sum(d.stream_skipped_records for d in harness.drains) == 0  # every record was done in the end
    assert_valid(events)
    by_id: dict[str, set[tuple]] = defaultdict(set)
    for event in events:
        by_id[event["detail"]["change_id"]].add(change(event))
    assert all(len(changes) == 1 for changes in by_id.values())  # an id names one change, however often sent
    assert len(events) > len(by_id)  # retried records published their events again
    assert sorted(c for changes in by_id.values() for c in changes) == sorted(change(e) for e in fault_free.events)
    kinds = {e["detail-type"] for e in fault_free.events}
    assert kinds == {"Earnings Scheduled", "Earnings Rescheduled", "Earnings Updated"}
    for ledger, expected in zip(ledgers, fault_free.ledgers, strict=True):
        assert_accounted(ledger)
        assert_same_fates(ledger, expected)
    assert_same_table(harness, fault_free)
