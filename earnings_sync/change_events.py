"""Change events: the calendar's public contract with other services, published to EventBridge.

The stream consumer is the one place that knows what really changed (it tells content from
bookkeeping, repairs regressions and settles rescheduled dates), so it publishes each change once,
with `Source` `earnings-sync` and one of three detail-types (README, "Change events"; one JSON
Schema per detail-type in schemas/):

* `Earnings Scheduled`: a new item whose fiscal period had no other live date;
* `Earnings Rescheduled`: a new item whose period's older date the stream consumer removed
  (`previous_earnings_date`);
* `Earnings Updated`: the same key with changed content (`changed`: attribute -> old and new).

`change_id` is derived from the table change itself (key, sync, content before and after), never
from when or how often it is published: a stream record handled again publishes the same id, and
consumers deduplicate on it. An INSERT's Scheduled and Rescheduled readings share one id, so the
rare redelivery that finds the older date already gone is a duplicate too.

`ChangePublisher` is what the stream consumer needs; `EventBridgePublisher` is the adapter over a
boto3 `events` client (PutEvents in requests of at most 10 entries and 256 KiB, entries reported in
`FailedEntryCount` retried with backoff, `ChangePublishError` for what still failed).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

import msgspec
from botocore.exceptions import BotoCoreError, ClientError

from earnings_sync.backoff import backoff_delays
from earnings_sync.calendar_table import (
    CONTENT_FIELDS,
    DATE,
    FISCAL_DATE,
    LAST_SYNC_DATE,
    SYMBOL,
    SYNC_ID,
    Item,
    item_to_plain,
)

SOURCE = "earnings-sync"
SCHEMA_VERSION = 1  # detail `v`: raised only for a change a consumer could trip over
SCHEDULED = "Earnings Scheduled"
RESCHEDULED = "Earnings Rescheduled"
UPDATED = "Earnings Updated"
DETAIL_TYPES = (SCHEDULED, RESCHEDULED, UPDATED)
# detail-type -> the key of its `ChangeEventsPublished_<key>` metric
METRIC_KEYS: Mapping[str, str] = {SCHEDULED: "Scheduled", RESCHEDULED: "Rescheduled", UPDATED: "Updated"}

MAX_ENTRIES = 10  # PutEvents' limit per request
MAX_REQUEST_BYTES = 256 * 1024  # PutEvents' limit per request, as AWS measures entries
Value = str | Decimal | None


class FieldChange(msgspec.Struct, frozen=True):
    old: Value
    new: Value


class CalendarChange(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What every detail carries: the change's identity and the item's current calendar attributes.
    `estimate` is a JSON number or null; `time_of_the_day` is left out when the calendar has none."""

    v: int
    change_id: str
    sync_id: str
    synced_at: str
    asset_symbol: str
    earnings_date: str
    fiscal_date_ending: str
    company_name: str
    estimate: Decimal | None
    currency: str
    time_of_the_day: str | None = None


class Scheduled(CalendarChange, frozen=True, kw_only=True, omit_defaults=True):
    pass


class Rescheduled(CalendarChange, frozen=True, kw_only=True, omit_defaults=True):
    previous_earnings_date: str


class Updated(CalendarChange, frozen=True, kw_only=True, omit_defaults=True):
    changed: dict[str, FieldChange]


class ChangeEvent(msgspec.Struct, frozen=True):
    detail_type: str
    detail: CalendarChange


_encoder = msgspec.json.Encoder(decimal_format="number")


def encode_detail(event: ChangeEvent) -> str:
    return _encoder.encode(event.detail).decode()


# -- from stream images to events ----------------------------------------------------------------
def _content(plain: Mapping[str, Any]) -> list[Value]:
    """The item's calendar content in a fixed order, numbers normalised (`1.370` and `1.37` are one value)."""
    values: list[Value] = []
    for name in CONTENT_FIELDS:
        value = plain.get(name)
        values.append(format(value.normalize(), "f") if isinstance(value, Decimal) else value)
    return values


def change_id(kind: str, new: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> str:
    """Deterministic id of one table change (`new`, `old`: `item_to_plain` images)."""
    identity = [kind, new[SYMBOL], new[DATE], new.get(SYNC_ID), new.get(LAST_SYNC_DATE), _content(new)]
    if old is not None:
        identity.append(_content(old))
    return hashlib.sha256(_encoder.encode(identity)).hexdigest()[:32]


def _common(plain: Mapping[str, Any], identity: str) -> dict[str, Any]:
    """The detail's common fields (named as the item's attributes: SYMBOL, DATE, ...) from an item."""
    return {
        "v": SCHEMA_VERSION,
        "change_id": identity,
        "sync_id": plain[SYNC_ID],
        "synced_at": plain[LAST_SYNC_DATE],
        SYMBOL: plain[SYMBOL],
        DATE: plain[DATE],
        FISCAL_DATE: plain[FISCAL_DATE],
        "company_name": plain["company_name"],
        "estimate": plain.get("estimate"),
        "currency": plain["currency"],
        "time_of_the_day": plain.get("time_of_the_day"),
    }


def arrival(new_image: Item, previous_date: str | None = None) -> ChangeEvent:
    """An INSERT: Scheduled, or Rescheduled when the period's older date `previous_date` was removed."""
    plain = item_to_plain(new_image)
    common = _common(plain, change_id("arrival", plain))
    if previous_date is None:
        return ChangeEvent(SCHEDULED, Scheduled(**common))
    return ChangeEvent(RESCHEDULED, Rescheduled(**common, previous_earnings_date=previous_date))


def update(old_image: Item, new_image: Item) -> ChangeEvent | None:
    """A MODIFY of the same key: Updated with each changed content attribute; None when no content changed."""
    old, new = item_to_plain(old_image), item_to_plain(new_image)
    before, after = _content(old), _content(new)
    changed = {
        name: FieldChange(old.get(name), new.get(name))
        for name, was, now in zip(CONTENT_FIELDS, before, after, strict=True)
        if was != now
    }
    if not changed:
        return None
    return ChangeEvent(UPDATED, Updated(**_common(new, change_id("update", new, old)), changed=changed))


# -- publishing ----------------------------------------------------------------------------------
class ChangePublishError(Exception):
    """Some events could not be published after the retries; `published` went out before it failed."""

    def __init__(self, message: str, *, published: Sequence[ChangeEvent], unpublished: Sequence[ChangeEvent]) -> None:
        super().__init__(message)
        self.published = list(published)
        self.unpublished = list(unpublished)


class ChangePublisher(Protocol):
    def publish(self, events: Sequence[ChangeEvent]) -> None:
        """Publish every event, in order, or raise `ChangePublishError` saying which did not go out."""


def entry_size(entry: Mapping[str, Any]) -> int:
    """An entry's size as PutEvents counts it against the 256 KiB limit (AWS EventBridge guide)."""
    size = 14 if "Time" in entry else 0
    for name in ("Source", "DetailType", "Detail"):
        size += len(str(entry.get(name, "")).encode())
    return size + sum(len(r.encode()) for r in entry.get("Resources", []))


def chunks(entries: Sequence[Mapping[str, Any]]) -> Iterator[list[int]]:
    """Indexes of `entries` in consecutive requests of at most 10 entries and 256 KiB."""
    chunk: list[int] = []
    size = 0
    for index, entry in enumerate(entries):
        weight = entry_size(entry)
        if chunk and (len(chunk) == MAX_ENTRIES or size + weight > MAX_REQUEST_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(index)
        size += weight
    if chunk:
        yield chunk


class EventBridgePublisher:
    """PutEvents on one bus (name or ARN) over a boto3 `events` client, which is passed in.

    The SDK retries a throttled or failed request; the entries a successful request reports as failed
    (`FailedEntryCount`) are sent again, alone, with backoff, up to `attempts` times. A request that
    still fails stops the publishing: the later events are not attempted (the stream record is
    retried from the first of them, so they would only go out twice).
    """

    def __init__(self, client: Any, bus_name: str, *, attempts: int = 5, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.bus_name = bus_name
        self.attempts = attempts
        self.sleep = sleep
        self.retries = 0  # entries sent again after a FailedEntryCount

    def entry(self, event: ChangeEvent) -> dict[str, Any]:
        return {"Source": SOURCE, "DetailType": event.detail_type, "Detail": encode_detail(event), "EventBusName": self.bus_name}

    def publish(self, events: Sequence[ChangeEvent]) -> None:
        entries = [self.entry(event) for event in events]
        published: list[ChangeEvent] = []
        for chunk in chunks(entries):
            failure = self._put(chunk, entries)
            if failure is None:
                published.extend(events[i] for i in chunk)
                continue
            failed, reason = failure
            published.extend(events[i] for i in chunk if i not in failed)
            unpublished = [events[i] for i in failed] + list(events[chunk[-1] + 1 :])
            raise ChangePublishError(
                f"PutEvents on event bus {self.bus_name}: {len(unpublished)} of {len(events)} event(s) not published: {reason}",
                published=published,
                unpublished=unpublished,
            )

    def _put(self, chunk: list[int], entries: Sequence[Mapping[str, Any]]) -> tuple[list[int], str] | None:
        """Send one request's entries until all went out: None, or (the indexes that did not, why)."""
        pending = list(chunk)
        delays = iter(backoff_delays(self.attempts))
        while True:
            try:
                response = self.client.put_events(Entries=[entries[i] for i in pending])
            except (ClientError, BotoCoreError) as exc:
                return pending, f"{type(exc).__name__}: {exc}"[:300]
            results = response.get("Entries", [])
            failed = [index for index, result in zip(pending, results, strict=False) if result.get("ErrorCode")]
            failed += pending[len(results) :]  # an answer shorter than the request: the rest did not go out
            if not failed:
                return None
            reason = next((r.get("ErrorCode", "") for r in results if r.get("ErrorCode")), "no result")
            delay = next(delays, None)
            if delay is None:
                return failed, f"{len(failed)} entries failed ({reason}) after {self.attempts} attempts"
            self.retries += len(failed)
            self.sleep(delay)
            pending = failed
