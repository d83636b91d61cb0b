"""`earnings-sync local A.csv B.csv B.csv --events FILE` on two snapshots of the real sample: the
second sync publishes exactly one event per new, moved and changed item, the third (unchanged) none,
and every event validates against its schema."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from earnings_sync_cli.main import main
from tests.change_event_support import assert_valid
from tests.conftest import SAMPLE_CSV

ROWS = 400  # of the real snapshot: a few seconds per sync
NEW = [["ZNEWA", "Znew A Holdings", "2025-09-15", "2025-06-30", "0.12", "USD"], ["ZNEWB", "Znew B Corp", "2025-09-16", "2025-07-31", "", "EUR"]]


def snapshots(directory: Path) -> tuple[Path, Path, dict[str, Any]]:
    """The first ROWS rows of the sample, and a copy of them with known differences."""
    header, *rows = list(csv.reader(io.StringIO(SAMPLE_CSV.read_text(encoding="utf-8"))))
    rows = rows[:ROWS]
    once = [r for r in rows if sum(other[0] == r[0] for other in rows) == 1]  # one date per symbol: a move is a move
    moved, revised, renamed, dropped = once[10:13], once[20:23], once[30], once[40:42]
    changes: dict[str, Any] = {"moved": {}, "revised": {}, "renamed": renamed, "dropped": [r[0] for r in dropped]}
    second = []
    for row in rows:
        row = list(row)
        if row in dropped:
            continue
        if row in moved:
            new_date = (dt.date.fromisoformat(row[2]) + dt.timedelta(days=7)).isoformat()
            changes["moved"][row[0]] = (row[2], new_date)
            row[2] = new_date
        elif row in revised:
            new_estimate = "9.99" if row[4] != "9.99" else "1.11"
            changes["revised"][row[0]] = (row[4], new_estimate)
            row[4] = new_estimate
        elif row == renamed:
            row[1] = row[1] + " Holdings"
        second.append(row)
    second += NEW

    def write(path: Path, data: list[list[str]]) -> Path:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([header, *data])
        path.write_text(buffer.getvalue(), encoding="utf-8")
        return path

    return write(directory / "A.csv", rows), write(directory / "B.csv", second), changes


def number(text: str) -> float | None:
    return float(text) if text else None


def test_the_second_sync_publishes_one_event_per_new_moved_and_changed_item_and_the_third_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first_csv, second_csv, changes = snapshots(tmp_path)
    events_file = tmp_path / "ev.jsonl"
    assert main(["local", str(first_csv), str(second_csv), str(second_csv), "--events", str(events_file), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    first, second, third = summary["syncs"]
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert assert_valid(events) == len(events) == sum(s["events_total"] for s in summary["syncs"])
    assert all(s["events_received"] == s["events_total"] for s in summary["syncs"])  # what was published arrived

    assert first["events"] == {"Earnings Scheduled": first["written"]} and first["written"] == ROWS - first["duplicates"]
    assert third["events"] == {} and third["written"] == 0  # unchanged: bookkeeping only
    by_sync = Counter(e["detail"]["synced_at"] for e in events)
    assert by_sync == {first["synced_at"]: first["events_total"], second["synced_at"]: second["events_total"]}

    published = [e for e in events if e["detail"]["synced_at"] == second["synced_at"]]
    kinds = Counter(e["detail-type"] for e in published)
    assert kinds == {"Earnings Scheduled": len(NEW), "Earnings Rescheduled": len(changes["moved"]), "Earnings Updated": len(changes["revised"]) + 1}
    assert second["events"] == dict(sorted(kinds.items()))
    by_symbol = {e["detail"]["asset_symbol"]: e for e in published}
    assert len(by_symbol) == len(published)  # one event per item
    for symbol, (old_date, new_date) in changes["moved"].items():
        detail = by_symbol[symbol]["detail"]
        assert (by_symbol[symbol]["detail-type"], detail["earnings_date"], detail["previous_earnings_date"]) == ("Earnings Rescheduled", new_date, old_date)
    for symbol, (old, new) in changes["revised"].items():
        assert by_symbol[symbol]["detail"]["changed"] == {"estimate": {"old": number(old), "new": number(new)}}
    renamed = changes["renamed"]
    assert by_symbol[renamed[0]]["detail"]["changed"] == {"company_name": {"old": renamed[1], "new": renamed[1] + " Holdings"}}
    for row in NEW:
        detail = by_symbol[row[0]]["detail"]
        assert (detail["earnings_date"], detail["fiscal_date_ending"], detail["estimate"], detail["currency"]) == (row[2], row[3], number(row[4]), row[5])
    assert not set(changes["dropped"]) & set(by_symbol)  # no longer listed: history, nothing published
    assert second["superseded_removed"] == len(changes["moved"])
