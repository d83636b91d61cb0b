from __future__ import annotations

import msgspec
import pytest

from earnings_sync.messages import (
    MAX_RECORDS_PER_MESSAGE,
    SyncMessage,
    batch_entries,
    build_messages,
    decode_envelope,
    decode_record,
    message_size,
    pack_records,
)
from earnings_sync.records import EarningsRecord


def records(symbol: str, count: int, name: str = "Co") -> list[EarningsRecord]:
    return [EarningsRecord(symbol, f"2025-08-{day + 1:02d}", name, "2025-06-30", "1.5", "USD") for day in range(count)]


def test_messages_hold_at_most_25_records_and_keep_symbols_together() -> None:
    groups = [records(f"S{i}", n) for i, n in enumerate([3, 10, 10, 4, 1, 24, 2])]
    packed = list(pack_records(groups))
    assert all(len(m) <= MAX_RECORDS_PER_MESSAGE for m in packed)
    assert sum(len(m) for m in packed) == sum(len(g) for g in groups)
    for group in groups:
        holders = [i for i, m in enumerate(packed) if any(r.asset_symbol == group[0].asset_symbol for r in m)]
        assert len(holders) == 1, group[0].asset_symbol
    assert [len(m) for m in packed] == [23, 5, 24, 2]


def test_a_symbol_larger_than_a_message_is_split() -> None:
    packed = list(pack_records([records("BIG", 60)]))
    assert [len(m) for m in packed] == [25, 25, 10]


def test_message_body_roundtrip_and_size_limit_halves() -> None:
    long_name = "N" * 400
    groups = [records(f"S{i}", 1, long_name) for i in range(25)]
    bodies = list(build_messages(groups, "sync-1", "2025-07-19T06:00:00.000000Z", max_bytes=4000))
    assert len(bodies) > 1
    assert all(len(body.encode()) <= 4000 for body, _ in bodies)
    assert sum(count for _, count in bodies) == 25
    decoded = [msgspec.json.decode(body, type=SyncMessage) for body, _ in bodies]
    assert all(m.sync_id == "sync-1" for m in decoded)
    assert [r.asset_symbol for m in decoded for r in m.records] == [f"S{i}" for i in range(25)]


def test_a_single_record_over_the_limit_is_an_error() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        list(build_messages([records("S", 1, "N" * 500)], "s", "t", max_bytes=300))


def test_batches_respect_entry_count_and_payload_size() -> None:
    attrs = {"sync_id": {"DataType": "String", "StringValue": "x"}}
    bodies = [("b" * 100, attrs)] * 23
    batches = list(batch_entries(bodies))
    assert [len(b) for b in batches] == [10, 10, 3]
    size_limited = list(batch_entries(bodies, max_bytes=3 * message_size("b" * 100, attrs)))
    assert all(len(b) <= 3 for b in size_limited)
    assert sum(len(b) for b in size_limited) == 23


def test_envelope_tolerates_a_bad_record_and_record_decode_names_the_problem() -> None:
    body = '{"sync_id":"s","synced_at":"t","records":[{"asset_symbol":"A","earnings_date":"2025-08-32","company_name":"n","fiscal_date_ending":"2025-06-30","estimate":null,"currency":"USD"},{"nope":1}]}'
    envelope = decode_envelope(body)
    assert len(envelope.records) == 2
    with pytest.raises(msgspec.ValidationError, match="bad_report_date"):
        decode_record(envelope.records[0])
    with pytest.raises(msgspec.ValidationError, match="missing required field"):
        decode_record(envelope.records[1])
    with pytest.raises(msgspec.DecodeError):
        decode_envelope("not json")
