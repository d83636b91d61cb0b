"""The sync identity: strict synced_at, its bound against the clock, and sync ids that name their time."""

from __future__ import annotations

import datetime as dt

import pytest

from earnings_sync.messages import RawSyncMessage, metadata_problem
from earnings_sync.sync_identity import (
    MAX_CLOCK_SKEW,
    InvalidSyncMetadata,
    check_identity,
    check_sync_id,
    check_synced_at,
    format_synced_at,
    is_synced_at,
    latest_allowed,
    new_sync_identity,
    parse_synced_at,
    synced_at_of,
)

NOW = dt.datetime(2025, 7, 19, 6, 0, tzinfo=dt.UTC)
SYNCED_AT = "2025-07-19T06:00:00.000000Z"


def clock() -> dt.datetime:
    return NOW


def test_format_and_parse_round_trip_in_utc() -> None:
    moment = dt.datetime(2025, 7, 19, 8, 0, 0, 123, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert format_synced_at(moment) == "2025-07-19T06:00:00.000123Z"
    assert parse_synced_at("2025-07-19T06:00:00.000123Z") == moment


@pytest.mark.parametrize(
    "text",
    [
        "9999-99-99T99:99:99.999999Z",  # the right shape, no such time
        "2025-02-29T00:00:00.000000Z",  # not a leap year
        "2025-07-19T24:00:00.000000Z",
        "0000-01-01T00:00:00.000000Z",
        "~~~",
        "",
        "2025-07-19T06:00:00Z",  # not fixed-width
        "2025-07-19T06:00:00.000000+00:00",
        "2025-07-19 06:00:00.000000Z",
        "２０２５-07-19T06:00:00.000000Z",  # digits that are not ASCII
    ],
)
def test_only_the_strict_form_of_a_real_time_parses(text: str) -> None:
    assert not is_synced_at(text)
    with pytest.raises(InvalidSyncMetadata, match="synced_at"):
        parse_synced_at(text)


@pytest.mark.parametrize("value", [None, 20250719, ["2025-07-19T06:00:00.000000Z"]])
def test_a_synced_at_that_is_not_text_is_refused(value: object) -> None:
    with pytest.raises(InvalidSyncMetadata, match="is not a UTC time"):
        check_synced_at(value, clock)


def test_the_bound_is_now_plus_the_skew_and_there_is_no_lower_bound() -> None:
    limit = format_synced_at(NOW + MAX_CLOCK_SKEW)
    assert latest_allowed(clock) == limit == "2025-07-19T06:05:00.000000Z"
    assert check_synced_at(limit, clock) == limit
    with pytest.raises(InvalidSyncMetadata, match="in the future: later than now plus 5 minutes"):
        check_synced_at("2025-07-19T06:05:00.000001Z", clock)
    assert check_synced_at("1999-01-01T00:00:00.000000Z", clock)  # a backfill of an old snapshot
    with pytest.raises(InvalidSyncMetadata):
        check_synced_at("2999-01-01T00:00:00.000000Z")  # the real clock


def test_a_refused_value_is_quoted_short_on_one_line() -> None:
    with pytest.raises(InvalidSyncMetadata) as raised:
        check_synced_at("x" * 500 + "\n" + "y", clock)
    assert "\n" not in str(raised.value) and len(str(raised.value)) < 160


def test_sync_ids_name_their_time() -> None:
    assert synced_at_of("20250719T060000000000Z-1a2b3c4d") == SYNCED_AT
    assert check_sync_id("20250719T060000000000Z-1a2b3c4d", SYNCED_AT) == "20250719T060000000000Z-1a2b3c4d"
    with pytest.raises(InvalidSyncMetadata, match="does not match synced_at"):
        check_sync_id("20250719T060000000001Z-1a2b3c4d", SYNCED_AT)
    malformed = ("", "sync-new", "20250719T060000000000Z-1A2B3C4D", "20250719T060000000000Z-1a2b3c4", " 20250719T060000000000Z-1a2b3c4d")
    for bad in (*malformed, None):
        assert bad is None or synced_at_of(bad) is None
        with pytest.raises(InvalidSyncMetadata, match="is not a sync id like"):
            check_sync_id(bad, SYNCED_AT)


def test_new_identities_are_checked_bounded_and_unique() -> None:
    sync_id, synced_at = new_sync_identity(now=clock)
    assert synced_at == SYNCED_AT and check_identity(sync_id, synced_at, clock) == (sync_id, synced_at)
    assert len(sync_id) == 31 and new_sync_identity(now=clock)[0] != sync_id
    backfill_id, backfill_at = new_sync_identity("2024-01-02T03:04:05.000006Z", now=clock)
    assert synced_at_of(backfill_id) == backfill_at == "2024-01-02T03:04:05.000006Z"
    for refused in ("9999-99-99T99:99:99.999999Z", "2025-07-19T07:00:00.000000Z", "yesterday"):
        with pytest.raises(InvalidSyncMetadata):
            new_sync_identity(refused, now=clock)


def test_message_metadata_problems_name_the_field() -> None:
    sync_id, synced_at = new_sync_identity(now=clock)

    def problem(**fields: object) -> str | None:
        envelope = RawSyncMessage(**{"sync_id": sync_id, "synced_at": synced_at, "records": [], **fields})  # type: ignore[arg-type]
        return metadata_problem(envelope, clock)

    assert problem() is None
    assert problem(v=99) == "unknown schema version 99 (this consumer reads v1)"
    assert "in the future" in (problem(synced_at="2999-01-01T00:00:00.000000Z") or "")
    assert "is not a UTC time" in (problem(synced_at="~~~") or "")
    assert "is not a sync id" in (problem(sync_id="") or "")
    assert "does not match synced_at" in (problem(synced_at="2025-07-19T05:00:00.000000Z") or "")
