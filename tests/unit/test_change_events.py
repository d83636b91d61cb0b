"""Change events: built from stream images as the contract says (schemas/ included), published with
PutEvents in requests of at most 10 entries and 256 KiB, failed entries sent again with backoff."""

from __future__ import annotations

import json
import urllib.request
from decimal import Decimal
from typing import Any

import boto3
import pytest

from earnings_sync.calendar_table import record_to_item
from earnings_sync.change_events import (
    DETAIL_TYPES,
    MAX_REQUEST_BYTES,
    RESCHEDULED,
    SCHEDULED,
    SOURCE,
    UPDATED,
    CalendarChange,
    ChangePublishError,
    EventBridgePublisher,
    Rescheduled,
    Updated,
    arrival,
    chunks,
    entry_size,
    update,
)
from earnings_sync.records import EarningsRecord
from earnings_sync_local.pipeline import EventTap
from tests.change_event_support import SCHEMA_FILES, as_received, assert_valid
from tests.helpers import Faults, http_response

T1, T2 = "2025-07-18T06:00:00.000000Z", "2025-07-19T06:00:00.000000Z"


def item(estimate: str | None = "1.37", *, date: str = "2025-08-19", synced_at: str = T1, **changes: Any) -> dict[str, Any]:
    record = EarningsRecord("A", date, "Agilent Technologies Inc", "2025-07-31", estimate, "USD", **changes)
    return record_to_item(record, f"sync-{synced_at[:10]}", synced_at)


# --------------------------------------------------------------------------- the events


def test_an_insert_is_scheduled_or_rescheduled_with_the_same_change_id() -> None:
    scheduled, rescheduled = arrival(item()), arrival(item(), "2025-08-12")
    assert (scheduled.detail_type, rescheduled.detail_type) == (SCHEDULED, RESCHEDULED)
    detail = as_received(scheduled)["detail"]
    assert detail == {
        "v": 1, "change_id": scheduled.detail.change_id, "sync_id": "sync-2025-07-18", "synced_at": T1,
        "asset_symbol": "A", "earnings_date": "2025-08-19", "fiscal_date_ending": "2025-07-31",
        "company_name": "Agilent Technologies Inc", "estimate": 1.37, "currency": "USD",
    }  # no time_of_the_day: the calendar did not say
    assert isinstance(rescheduled.detail, Rescheduled) and rescheduled.detail.previous_earnings_date == "2025-08-12"
    # one table change, two readings of it: a redelivery that finds the old date gone is a duplicate
    assert rescheduled.detail.change_id == scheduled.detail.change_id
    assert arrival(item(synced_at=T2)).detail.change_id != scheduled.detail.change_id
    assert arrival(item("1.38")).detail.change_id != scheduled.detail.change_id
    assert arrival(item()).detail.change_id == scheduled.detail.change_id


def test_a_content_change_is_updated_with_old_and_new_values() -> None:
    before = item("1.37")
    after = item(None, synced_at=T2, time_of_the_day="post-market")
    event = update(before, after)
    assert event is not None and event.detail_type == UPDATED and isinstance(event.detail, Updated)
    detail = as_received(event)["detail"]
    assert detail["changed"] == {"estimate": {"old": 1.37, "new": None}, "time_of_the_day": {"old": None, "new": "post-market"}}
    assert (detail["estimate"], detail["time_of_the_day"], detail["synced_at"]) == (None, "post-market", T2)
    assert update(before, after).detail.change_id == event.detail.change_id  # deterministic
    assert update(item("1.30"), after).detail.change_id != event.detail.change_id  # another change
    # numbers compare as numbers (DynamoDB hands `1.370` back as `1.37`); bookkeeping is no change
    assert update(before, {**item(synced_at=T2), "estimate": {"N": "1.370"}}) is None


def test_every_event_validates_against_its_schema_and_the_schemas_document_every_field() -> None:
    events = [arrival(item()), arrival(item(None, time_of_the_day="pre-market"), "2025-08-12"), update(item(), item("2", synced_at=T2))]
    assert assert_valid(as_received(e) for e in events if e is not None) == 3
    for detail_type, struct in zip(DETAIL_TYPES, (CalendarChange, Rescheduled, Updated), strict=True):
        schema = json.loads(SCHEMA_FILES[detail_type].read_text())
        documented = schema["properties"]["detail"]["properties"]
        assert set(documented) == set(struct.__struct_fields__), detail_type
        assert schema["properties"]["source"] == {"const": SOURCE}
    broken = as_received(arrival(item()))
    broken["detail"]["estimate"] = "1.37"  # a string where the contract says number or null
    with pytest.raises(AssertionError, match="is not of type"):
        assert_valid([broken])


# --------------------------------------------------------------------------- publishing on moto


@pytest.fixture
def bus(moto_endpoint: str) -> tuple[Any, EventTap, str]:
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).read()
    events = boto3.client("events", region_name="us-east-1", endpoint_url=moto_endpoint)
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_endpoint)
    events.create_event_bus(Name="earnings-sync")
    return events, EventTap(events, sqs, "earnings-sync"), "earnings-sync"


def many(count: int) -> list[Any]:
    return [arrival(item(f"{n}.01", date=f"2025-09-{1 + n % 28:02d}")) for n in range(count)]


def test_events_reach_a_rule_target_in_requests_of_at_most_ten(bus: tuple[Any, EventTap, str]) -> None:
    events, tap, name = bus
    sent = Faults(events, "events", "PutEvents", [])  # counts requests, injects nothing
    published = many(23)
    EventBridgePublisher(events, name).publish(published)
    assert sent.calls == 3
    received = tap.take()
    assert [e["detail"]["change_id"] for e in received] == [e.detail.change_id for e in published]
    assert {(e["source"], e["detail-type"]) for e in received} == {(SOURCE, SCHEDULED)}
    assert assert_valid(received) == 23


def test_requests_also_stay_under_256_kib() -> None:
    entries = [{"Source": SOURCE, "DetailType": SCHEDULED, "Detail": "x" * (100 * 1024)} for _ in range(5)]
    assert entry_size(entries[0]) == len(SOURCE) + len(SCHEDULED) + 100 * 1024
    assert list(chunks(entries)) == [[0, 1], [2, 3], [4]]
    small = [{"Source": SOURCE, "DetailType": SCHEDULED, "Detail": "{}"}] * 21
    assert [len(c) for c in chunks(small)] == [10, 10, 1]
    assert all(sum(entry_size(entries[i]) for i in chunk) <= MAX_REQUEST_BYTES for chunk in chunks(entries))


def failed_entries(*positions: int, count: int) -> Any:
    """A PutEvents answer: these positions failed (InternalFailure), the others were accepted."""
    entries = [{"ErrorCode": "InternalFailure", "ErrorMessage": "injected"} if i in positions else {"EventId": f"id-{i}"} for i in range(count)]
    return lambda request: http_response(200, {"FailedEntryCount": len(positions), "Entries": entries})


def test_failed_entries_are_sent_again_alone_with_backoff(bus: tuple[Any, EventTap, str]) -> None:
    events, tap, name = bus
    published = many(3)
    # the first answer reports entries 0 and 2 failed (nothing was really sent); then the real service
    calls = Faults(events, "events", "PutEvents", [failed_entries(0, 2, count=3), None])
    sleeps: list[float] = []
    publisher = EventBridgePublisher(events, name, sleep=sleeps.append)
    publisher.publish(published)
    assert calls.calls == 2 and len(sleeps) == 1 and publisher.retries == 2
    # only the failed ones went again (the accepted one was taken at its word)
    assert [e["detail"]["change_id"] for e in tap.take()] == [published[0].detail.change_id, published[2].detail.change_id]


def test_what_still_fails_is_raised_with_what_went_out(bus: tuple[Any, EventTap, str]) -> None:
    events, tap, name = bus
    published = many(13)
    # the first request (10 entries) goes through; entry 1 of the second fails on the first try and
    # on both retries
    plan = [None, failed_entries(1, count=3), failed_entries(0, count=1), failed_entries(0, count=1)]
    calls = Faults(events, "events", "PutEvents", plan)
    with pytest.raises(ChangePublishError, match=r"event bus earnings-sync: 1 of 13 event\(s\) not published") as raised:
        EventBridgePublisher(events, name, attempts=2, sleep=lambda _: None).publish(published)
    assert calls.calls == 4
    assert raised.value.published == [*published[:10], published[10], published[12]]
    assert raised.value.unpublished == [published[11]]
    assert len(tap.take()) == 10  # the canned answers sent nothing


def test_a_bus_that_does_not_exist_fails_the_whole_publish(bus: tuple[Any, EventTap, str]) -> None:
    events, _, _ = bus
    published = many(12)
    with pytest.raises(ChangePublishError, match="no-such-bus: 12 of 12") as raised:
        EventBridgePublisher(events, "no-such-bus").publish(published)
    assert raised.value.published == [] and raised.value.unpublished == published
    assert Decimal("1.01") == raised.value.unpublished[1].detail.estimate
