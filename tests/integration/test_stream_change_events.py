"""Change events from the stream consumer handler on real stream records (moto), read from a rule's
SQS target: which record publishes which event, what publishes nothing, and retries that publish
the same `change_id` again and never a new one."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from typing import Any

import boto3
import pytest

from earnings_sync import aws as aws_clients
from earnings_sync.calendar_table import RESTORED_OVER
from earnings_sync.change_events import RESCHEDULED, SCHEDULED, UPDATED
from earnings_sync.observability import M
from earnings_sync_local.pipeline import EventTap
from tests.change_event_support import assert_valid
from tests.faults.injectors import FailedEntries
from tests.integration.stream_support import T1, T2, T3, StreamReader, Table, call_handler, rec


@pytest.fixture
def tap(handler_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> EventTap:
    """The stream consumer publishes on the template's bus (as deployed); a catch-all rule reads it."""
    resources = handler_env["resources"]
    monkeypatch.setenv("EVENT_BUS_NAME", resources.environments["StreamConsumerFunction"]["EVENT_BUS_NAME"])
    monkeypatch.setenv("WRITE_ATTEMPTS", "2")
    events = boto3.client("events", region_name="us-east-1", endpoint_url=handler_env["endpoint"])
    return EventTap(events, handler_env["sqs"], resources.event_bus_name)


def received(tap: EventTap) -> list[dict[str, Any]]:
    events = tap.take()
    assert_valid(events)
    return events


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e["detail-type"], e["detail"]["asset_symbol"], e["detail"]["earnings_date"]) for e in events]


def test_new_moved_and_changed_items_each_publish_one_event(table: Table, stream: StreamReader, tap: EventTap) -> None:
    table.sync(T1, rec("AAPL", "2025-07-31"), rec("MSFT", "2025-07-29"), rec("IBM", "2025-07-23", estimate=None))
    _, metrics, _ = call_handler(stream.event())
    first = received(tap)
    assert sorted(summary(first)) == [(SCHEDULED, "AAPL", "2025-07-31"), (SCHEDULED, "IBM", "2025-07-23"), (SCHEDULED, "MSFT", "2025-07-29")]
    assert metrics[M.CHANGE_EVENTS_PUBLISHED] == 3 and metrics[f"{M.CHANGE_EVENTS_PUBLISHED}_Scheduled"] == 3
    aapl = next(e["detail"] for e in first if e["detail"]["asset_symbol"] == "AAPL")
    assert (aapl["sync_id"], aapl["synced_at"], aapl["estimate"], aapl["fiscal_date_ending"]) == ("sync-2025-07-18", T1, 1.0, "2025-06-30")

    # AAPL moves within its fiscal period, MSFT's estimate is revised, IBM is confirmed, NVDA is new
    table.sync(T2, rec("AAPL", "2025-08-01"), rec("MSFT", "2025-07-29", estimate="3.35"), rec("IBM", "2025-07-23", estimate=None),
               rec("NVDA", "2025-08-27", fiscal="2025-07-31"))
    _, metrics, _ = call_handler(stream.event())
    second = received(tap)
    assert sorted(summary(second)) == [(RESCHEDULED, "AAPL", "2025-08-01"), (SCHEDULED, "NVDA", "2025-08-27"), (UPDATED, "MSFT", "2025-07-29")]
    moved = next(e["detail"] for e in second if e["detail-type"] == RESCHEDULED)
    assert moved["previous_earnings_date"] == "2025-07-31" and moved["synced_at"] == T2
    revised = next(e["detail"] for e in second if e["detail-type"] == UPDATED)
    assert revised["changed"] == {"estimate": {"old": 1.0, "new": 3.35}} and revised["estimate"] == 3.35
    assert metrics[M.BOOKKEEPING_ONLY] == 1 and metrics[M.SUPERSEDED_REMOVED] == 1
    assert {k: metrics[f"{M.CHANGE_EVENTS_PUBLISHED}_{k}"] for k in ("Scheduled", "Rescheduled", "Updated")} == {
        "Scheduled": 1, "Rescheduled": 1, "Updated": 1,
    }

    # the removal of the superseded date comes back as a REMOVE: nothing; an unchanged sync: nothing
    _, metrics, _ = call_handler(stream.event())
    assert metrics[M.REMOVE_EVENTS] == 1 and received(tap) == []
    table.sync(T3, rec("AAPL", "2025-08-01"), rec("MSFT", "2025-07-29", estimate="3.35"))
    _, metrics, _ = call_handler(stream.event())
    assert metrics[M.BOOKKEEPING_ONLY] == 2 and metrics[M.CHANGE_EVENTS_PUBLISHED] == 0 and received(tap) == []


def test_a_stale_replay_and_invalid_items_publish_nothing(table: Table, stream: StreamReader, tap: EventTap) -> None:
    table.sync(T2, rec("AAPL", "2025-08-01"))
    call_handler(stream.event())
    assert summary(received(tap)) == [(SCHEDULED, "AAPL", "2025-08-01")]
    table.sync(T1, rec("AAPL", "2025-07-31"))  # the older sync's date, replayed from the DLQ: its own item goes
    table.put(rec("ZBAD", "2025-09-01"), T2, currency={"S": "dollars"})
    _, metrics, _ = call_handler(stream.event())
    assert metrics[M.SUPERSEDED_REMOVED] == 1 and metrics[M.VALIDATION_FAILED] == 1
    assert received(tap) == []


def test_a_regression_and_its_restore_publish_nothing(table: Table, stream: StreamReader, tap: EventTap) -> None:
    table.sync(T2, rec("AAPL", "2025-07-31", estimate="2.00"))
    call_handler(stream.event())
    (scheduled,) = received(tap)
    table.put(rec("AAPL", "2025-07-31", estimate="1.00"), T1)  # an older sync's write lands on the newer one
    _, metrics, _ = call_handler(stream.event())
    assert metrics[M.REGRESSIONS_RESTORED] == 1 and received(tap) == []
    restored = table.table.get(("AAPL", "2025-07-31"))
    assert restored[RESTORED_OVER] == {"S": T1} and Decimal(restored["estimate"]["N"]) == 2
    # the restore's own MODIFY (older content back to newer) is checked, and is no change downstream
    event = stream.event()
    assert [r["eventName"] for r in event["Records"]] == ["MODIFY"]
    _, metrics, _ = call_handler(event)
    assert metrics[M.VALIDATION_PASSED] == 1 and metrics[M.CHANGE_EVENTS_PUBLISHED] == 0 and received(tap) == []
    # later syncs: a confirmation drops the mark as bookkeeping; a real change is an update from what consumers saw
    table.sync(T3, rec("AAPL", "2025-07-31", estimate="2.00"))
    _, metrics, _ = call_handler(stream.event())
    assert metrics[M.BOOKKEEPING_ONLY] == 1 and received(tap) == []
    table.sync("2025-07-21T06:00:00.000000Z", rec("AAPL", "2025-07-31", estimate="2.50"))
    call_handler(stream.event())
    (updated,) = received(tap)
    assert updated["detail"]["changed"] == {"estimate": {"old": 2.0, "new": 2.5}}
    assert updated["detail"]["change_id"] != scheduled["detail"]["change_id"]


def test_a_record_whose_event_is_not_published_is_retried_with_the_same_change_id(
    table: Table, stream: StreamReader, tap: EventTap
) -> None:
    """AAPL moves; its Rescheduled event fails on every attempt: the record fails before the older date
    is deleted, the records after it are deferred, and the retry from it publishes the same event
    with the same change_id (and nothing a consumer has not seen under its id)."""
    table.sync(T1, rec("AAPL", "2025-07-31"), rec("MSFT", "2025-07-29"))
    call_handler(stream.event())
    received(tap)
    table.sync(T2, rec("MSFT", "2025-07-29", estimate="3.00"), rec("AAPL", "2025-08-01"), rec("NVDA", "2025-08-27"))
    event = stream.event()
    assert [r["dynamodb"]["Keys"]["asset_symbol"]["S"] for r in event["Records"]] == ["MSFT", "AAPL", "NVDA"]
    sequence = [r["dynamodb"]["SequenceNumber"] for r in event["Records"]]
    events_client = aws_clients.client("events", max_attempts=8)
    refused = FailedEntries(events_client, fails=lambda entry: json.loads(entry["Detail"])["asset_symbol"] == "AAPL")
    response, metrics, logs = call_handler(event)
    assert refused.injected == 3  # the first try and WRITE_ATTEMPTS=2 retries
    assert response == {"batchItemFailures": [{"itemIdentifier": sequence[1]}, {"itemIdentifier": sequence[2]}]}
    assert metrics[M.CHANGE_EVENT_PUBLISH_FAILURES] == 1 and metrics[M.SUPERSEDED_REMOVED] == 0
    assert ("AAPL", "2025-07-31") in table.keys()  # not deleted before its move was announced
    warning = next(json.loads(line) for line in logs.splitlines() if "change events not published" in line)
    assert warning["unpublished"] == 1 and "InternalFailure" in warning["error"] and "Apple" not in logs
    first_try = received(tap)
    assert summary(first_try) == [(UPDATED, "MSFT", "2025-07-29")]  # it shared AAPL's request and went through
    refused.gate.on = False

    # Lambda retries from the failed record (the local mapping's checkpoint rule): the events again
    retry = {"Records": event["Records"][1:]}
    response, metrics, _ = call_handler(retry)
    assert response == {"batchItemFailures": []} and metrics[M.SUPERSEDED_REMOVED] == 1
    second_try = received(tap)
    assert sorted(summary(second_try)) == [(RESCHEDULED, "AAPL", "2025-08-01"), (SCHEDULED, "NVDA", "2025-08-27")]
    # and once more, as after a crash: the older date is gone now, so AAPL reads as Scheduled, under the same id
    again = received_after(call_handler(retry), tap)
    ids = Counter(e["detail"]["change_id"] for e in second_try + again)
    assert set(ids) == {e["detail"]["change_id"] for e in second_try} and all(count == 2 for count in ids.values())


def received_after(_: Any, tap: EventTap) -> list[dict[str, Any]]:
    return received(tap)
