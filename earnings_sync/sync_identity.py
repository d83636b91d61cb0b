"""A sync's identity: its `synced_at` time and its `sync_id`, made and checked in one place.

`synced_at` is fixed-width UTC text (`2025-07-19T06:00:00.000000Z`), so DynamoDB conditions on
`lastSyncDate` compare times as text. It decides which sync wins a key (README, "Conflict
resolution"), so wherever it is trusted it is parsed strictly, as a real calendar date and time,
and bounded: never later than now plus `MAX_CLOCK_SKEW`. A time from the future would make every
real sync look older than it, and be skipped as stale. There is no lower bound: backfilling an old
snapshot as an old sync, or replaying an old sync's message from the DLQ, stays possible.

`sync_id` is `<synced_at compacted>-<8 lowercase hex>`
(`20250719T060000000000Z-1a2b3c4d`): it sorts like the time, is unique within one microsecond, and
must name the same time as the `synced_at` it travels with.

The clock is always passed in (`now`), so callers and tests decide what "now" is.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Callable

SYNCED_AT_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
SYNCED_AT_EXAMPLE = "2025-07-19T06:00:00.000000Z"
# ASCII digits only (`\d` would take any script's): the form must compare as text.
SYNCED_AT_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
SYNC_ID_RE = re.compile(r"([0-9]{8}T[0-9]{12}Z)-[0-9a-f]{8}")
SYNC_ID_EXAMPLE = "20250719T060000000000Z-1a2b3c4d"
SYNC_ID_LENGTH = 31
# Producer and consumer clocks are NTP-synchronised (Lambda); 5 minutes covers any honest drift.
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)
MAX_QUOTED = 64  # characters of a refused value quoted in a reason

Clock = Callable[[], dt.datetime]


class InvalidSyncMetadata(ValueError):
    """A `synced_at`, `sync_id` or schema version that cannot be trusted; the message says why."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def quoted(value: object) -> str:
    """A refused value for a one-line reason: repr, cut short."""
    text = repr(value)
    return text if len(text) <= MAX_QUOTED else text[: MAX_QUOTED - 1] + "…"


def format_synced_at(moment: dt.datetime) -> str:
    """Fixed-width UTC text, so `lastSyncDate` comparisons in DynamoDB conditions are text compares."""
    return moment.astimezone(dt.UTC).strftime(SYNCED_AT_FORMAT)


def parse_synced_at(text: object) -> dt.datetime:
    """The UTC moment `text` names; raises InvalidSyncMetadata unless it is the strict form of a real time."""
    if not isinstance(text, str) or SYNCED_AT_RE.fullmatch(text) is None:
        raise InvalidSyncMetadata(f"synced_at {quoted(text)} is not a UTC time like {SYNCED_AT_EXAMPLE}")
    try:
        return dt.datetime.strptime(text, SYNCED_AT_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        raise InvalidSyncMetadata(f"synced_at {quoted(text)} is not a real date and time") from None


def is_synced_at(text: object) -> bool:
    """The strict form of a real time (no bound): what a stored `lastSyncDate` must look like."""
    try:
        parse_synced_at(text)
    except InvalidSyncMetadata:
        return False
    return True


def latest_allowed(now: Clock = utc_now, skew: dt.timedelta = MAX_CLOCK_SKEW) -> str:
    """The newest `synced_at` trusted at this moment, as text (compares with any `synced_at`)."""
    return format_synced_at(now() + skew)


def check_synced_at(text: object, now: Clock = utc_now, skew: dt.timedelta = MAX_CLOCK_SKEW) -> str:
    """`text` when it is a real time no later than now + skew; raises InvalidSyncMetadata otherwise."""
    moment = parse_synced_at(text)
    limit = now() + skew
    if moment > limit:
        raise InvalidSyncMetadata(
            f"synced_at {quoted(text)} is in the future: later than now plus {_minutes(skew)} ({format_synced_at(limit)})"
        )
    return str(text)


def compact(synced_at: str) -> str:
    """`2025-07-19T06:00:00.000000Z` → `20250719T060000000000Z`, the first part of a sync id."""
    return synced_at.replace("-", "").replace(":", "").replace(".", "")


def synced_at_of(sync_id: str) -> str | None:
    """The `synced_at` a well-formed sync id encodes (None when it is not one)."""
    match = SYNC_ID_RE.fullmatch(sync_id)
    if match is None:
        return None
    c = match.group(1)
    return f"{c[0:4]}-{c[4:6]}-{c[6:8]}T{c[9:11]}:{c[11:13]}:{c[13:15]}.{c[15:21]}Z"


def check_sync_id(sync_id: object, synced_at: str) -> str:
    """`sync_id` when it has the producer's form and names `synced_at`; raises InvalidSyncMetadata otherwise."""
    if not isinstance(sync_id, str) or SYNC_ID_RE.fullmatch(sync_id) is None:
        raise InvalidSyncMetadata(f"sync_id {quoted(sync_id)} is not a sync id like {SYNC_ID_EXAMPLE}")
    if synced_at_of(sync_id) != synced_at:
        raise InvalidSyncMetadata(f"sync_id {quoted(sync_id)} does not match synced_at {quoted(synced_at)}")
    return sync_id


def check_identity(
    sync_id: object, synced_at: object, now: Clock = utc_now, skew: dt.timedelta = MAX_CLOCK_SKEW
) -> tuple[str, str]:
    """(sync_id, synced_at) of a message that may be trusted; raises InvalidSyncMetadata otherwise."""
    checked = check_synced_at(synced_at, now, skew)
    return check_sync_id(sync_id, checked), checked


def new_sync_identity(synced_at: str | None = None, *, now: Clock = utc_now) -> tuple[str, str]:
    """(sync_id, synced_at) for a new sync: now, or the given time (a backfill), checked and bounded."""
    if synced_at is None:
        synced_at = format_synced_at(now())
    else:
        check_synced_at(synced_at, now)
    return f"{compact(synced_at)}-{secrets.token_hex(4)}", synced_at


def _minutes(skew: dt.timedelta) -> str:
    minutes = skew.total_seconds() / 60
    return f"{minutes:g} minute{'' if minutes == 1 else 's'}"
