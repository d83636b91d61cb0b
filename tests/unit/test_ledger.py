"""The ledger's accounting, pure: manifest + outcome items in, one report out."""

from __future__ import annotations

from typing import Any

import pytest

from earnings_sync.ledger import (
    MessageOutcome,
    _attribute,
    _plain,
    account,
    format_report,
    headline,
    outcome_entry,
    replay_token,
)

SYNC = "20250719T060000000000Z-00000000"


def manifest(counts: list[int], *, duplicates: int = 1, rejected: dict[str, int] | None = None,
             unsent: list[int] | None = None, rows: int | None = None) -> list[dict[str, Any]]:
    rejected = {"bad_estimate": 2} if rejected is None else rejected
    records = sum(counts)
    header = {
        "sync_id": {"S": SYNC},
        "entry": {"S": "manifest"},
        **{name: _attribute(value) for name, value in {
            "synced_at": "2025-07-19T06:00:00.000000Z", "source": "x.csv",
            "rows": records + duplicates + sum(rejected.values()) if rows is None else rows,
            "records": records, "duplicates": duplicates, "rejected": rejected,
            "rejections": [{"line": 7, "reason": "bad_estimate", "detail": "estimate '1.0.0'"}],
            "duplicate_keys": [{"key": ["CAKE", "2025-07-29"], "fiscal_periods": ["2025-04-30", "2025-06-30"]}],
            "messages": len(counts), "unsent_messages": len(unsent or []), "unsent_error": "refused" if unsent else "",
            "chunks": 1, "written_at": "now",
        }.items()},
    }
    chunk = {
        "sync_id": {"S": SYNC}, "entry": {"S": "manifest#000000"}, "first_seq": {"N": "0"},
        "counts": {"S": ",".join(map(str, counts))}, "unsent": {"S": ",".join(map(str, unsent or []))},
    }
    return [header, chunk]


def outcome(seq: int, codes: str, *, replay: str | None = None, positions: list[int] | None = None, at: str = "1") -> dict[str, Any]:
    item = {"sync_id": {"S": SYNC}, "entry": {"S": outcome_entry(seq, replay)}, "seq": {"N": str(seq)},
            "codes": {"S": codes}, "done_at": {"S": at}}
    if positions is not None:
        item["positions"] = {"S": ",".join(map(str, positions))}
    return item


def test_a_clean_sync_is_complete_and_adds_up() -> None:
    report = account(SYNC, [*manifest([3, 2]), outcome(0, "iuc"), outcome(1, "si")])
    assert report.status == "complete" and report.complete and report.accounted
    assert (report.inserted, report.updated, report.unchanged, report.stale) == (2, 1, 1, 1)
    assert report.rows == 8 == report.accounted_rows and report.problems() == []
    text = format_report(report)
    assert "ledger complete: 8 rows = 3 written + 1 unchanged + 1 stale + 2 rejected + 1 duplicate + 0 in the DLQ" in text
    assert "rejected bad_estimate: 2 (lines 7, …)" in text and "duplicate CAKE 2025-07-29" in text and "2025-04-30 → 2025-06-30" in text
    assert report.as_dict()["complete"] is True


def test_missing_outcomes_and_unsent_messages_are_named() -> None:
    report = account(SYNC, [*manifest([3, 2, 4], unsent=[2]), outcome(0, "iii")])
    assert report.status == "incomplete" and not report.accounted
    assert (report.missing, report.missing_seqs, report.not_enqueued, report.unsent_seqs) == (2, [(1, 2)], 4, [(2, 4)])
    problems = " ".join(report.problems())
    assert "never enqueued (refused)" in problems and "seq 2 (4)" in problems and "no outcome yet" in problems
    assert "INCOMPLETE" in headline(report) and "4 not enqueued + 2 missing" in headline(report)


def test_dlq_records_then_a_replay_settles_them() -> None:
    items = [*manifest([4, 3]), outcome(0, "ipip"), outcome(1, "xxx")]
    held = account(SYNC, items)
    assert held.status == "in_dlq" and held.accounted and not held.complete
    assert held.in_dlq == {"poison": 2, "retries_exhausted": 3} and held.dlq_seqs == [(0, 2), (1, 3)]
    assert "wait in the DLQ (poison 2, retries exhausted 3)" in " ".join(held.problems())
    replayed = account(SYNC, [*items, outcome(0, "si", replay="T1#1", positions=[1, 3]), outcome(1, "uuc", replay="T2#1")])
    assert replayed.status == "complete" and replayed.replays == 2
    assert (replayed.inserted, replayed.updated, replayed.unchanged, replayed.stale, replayed.in_dlq_total) == (3, 2, 1, 1, 0)
    assert "accounted, DLQ pending" in headline(held)


def test_a_poison_record_that_fails_again_stays_in_the_dlq_until_a_later_replay() -> None:
    items = [*manifest([2]), outcome(0, "ip"), outcome(0, "p", replay="T1#1", positions=[1], at="2")]
    assert account(SYNC, items).in_dlq == {"poison": 1}
    fixed = account(SYNC, [*items, outcome(0, "u", replay="T2#2", positions=[1], at="3")])
    assert fixed.complete and fixed.updated == 1


def test_settled_records_are_never_counted_again() -> None:
    """Two copies of one DLQ message replayed, a replay of a record already settled: once each."""
    items = [*manifest([2]), outcome(0, "xx"),
             outcome(0, "ic", replay="T1#1", at="2"), outcome(0, "cc", replay="T1b#1", at="3")]
    report = account(SYNC, items)
    assert report.complete and (report.inserted, report.unchanged) == (1, 1) and report.accounted_rows == report.rows


def test_a_message_moved_by_the_queue_redrive_is_seen_through_its_replay() -> None:
    """No original outcome (a crash on the last receive), then a replay: counted from the replay."""
    report = account(SYNC, [*manifest([3, 1]), outcome(1, "i"), outcome(0, "cxs", replay="-#1")])
    assert report.status == "in_dlq" and report.in_dlq == {"retries_exhausted": 1}
    assert (report.unchanged, report.stale, report.inserted) == (1, 1, 1)


def test_no_manifest_yet_and_unknown_syncs() -> None:
    partial = account(SYNC, [outcome(0, "ii")])
    assert partial.status == "incomplete" and "no manifest" in partial.problems()[0]
    assert partial.records == 2
    unknown = account("nope", [])
    assert unknown.status == "unknown" and headline(unknown) == "ledger: unknown sync"
    assert "no ledger entries" in format_report(unknown)


@pytest.mark.parametrize(
    ("items", "found"),
    [
        ([*manifest([2]), outcome(0, "i?")], "unknown outcome '?'"),
        ([*manifest([2]), outcome(0, "ii"), outcome(5, "i")], "which the manifest does not list"),
        ([*manifest([2]), outcome(0, "i", replay="-#1", positions=[7])], "positions [7]"),
        ([*manifest([2]), outcome(0, "ii", positions=[0])], "2 outcomes for 1 positions"),
        ([*manifest([2], unsent=[0]), outcome(0, "ii")], "reported unsent but has an outcome"),
        ([*manifest([2], rows=99), outcome(0, "ii")], "99 rows read"),
    ],
)
def test_inconsistencies_are_reported_not_hidden(items: list[dict[str, Any]], found: str) -> None:
    report = account(SYNC, items)
    assert report.status == "incomplete" and any(found in a for a in report.anomalies), report.anomalies


def test_manifest_chunks_must_follow_on() -> None:
    header, chunk = manifest([2, 2])
    late = {**chunk, "entry": {"S": "manifest#000005"}, "first_seq": {"N": "5"}}
    report = account(SYNC, [header, late, outcome(0, "ii"), outcome(1, "ii")])
    assert any("does not follow on" in a for a in report.anomalies)


def test_replay_token_and_entries() -> None:
    assert replay_token({}) is None
    assert replay_token({"replay_count": {"stringValue": "0", "dataType": "Number"}}) is None
    assert replay_token({"replay_count": {"StringValue": "2"}, "failed_at": {"StringValue": "T"}}) == "T#2"
    assert replay_token({"failure_kind": {"stringValue": "poison"}}) == "-#0"  # a native move of a DLQ message
    assert MessageOutcome(SYNC, 7, "i", replay="T#1").entry == "m#000007#r#T#1"
    assert _plain(_attribute({"a": [1, None, "x", True]})) == {"a": [1, None, "x", True]}


def test_an_aborted_sync_is_incomplete_even_when_every_sent_message_settled() -> None:
    items = manifest([3, 2], rows=40)  # 40 rows read, 5 records sent, the rest never packed
    items[0]["aborted"] = {"S": "stopped after line 41 of x.csv, 2 message(s) sent: RuntimeError: boom"}
    report = account(SYNC, [*items, outcome(0, "iii"), outcome(1, "ii")])
    assert report.status == "incomplete" and not report.accounted and not report.anomalies
    assert report.problems() == [
        "sync aborted by the producer: stopped after line 41 of x.csv, 2 message(s) sent: RuntimeError: boom; "
        "the rest of the input was never read: run the sync again"
    ]
    assert report.as_dict()["aborted"].startswith("stopped after line 41") and "INCOMPLETE" in headline(report)
