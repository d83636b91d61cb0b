"""`earnings-sync local` end to end: two successive syncs, then a replay of the older one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from earnings_sync_cli.local import format_summary
from earnings_sync_cli.main import main
from earnings_sync_local.pipeline import run_local
from tests.conftest import csv_text

T1, T2 = "2025-07-18T06:00:00.000000Z", "2025-07-19T06:00:00.000000Z"
QUOTA = "Thank you for using Alpha Vantage! 25 requests per day."

OLDER = [
    "AAPL,Apple Inc,2025-07-31,2025-06-30,1.42,USD",
    "MSFT,Microsoft Corp,2025-07-29,2025-06-30,3.35,USD",
    "SHOP,Shopify Inc,2025-08-06,2025-06-30,0.29,CAD",
    "ZZZ,Zed Co,2025-08-01,2025-06-30,,USD",
]
NEWER = [
    "AAPL,Apple Inc,2025-07-31,2025-06-30,1.45,USD",  # estimate revised
    "MSFT,Microsoft Corp,2025-07-29,2025-06-30,3.35,USD",  # unchanged
    "SHOP,Shopify Inc,2025-08-06,2025-06-30,0.29,CAD",  # unchanged
    "NVDA,NVIDIA Corp,2025-08-27,2025-07-31,1.00,USD",  # new
    "OOPS,Broken,2025-08-27,2025-07-31,1.0.0,USD",  # rejected
]


def read_jsonl(path: Path) -> dict[tuple[str, str], dict]:
    return {(r["asset_symbol"], r["earnings_date"]): r for r in map(json.loads, path.read_text().splitlines())}


def test_newer_sync_wins_and_a_replay_of_the_older_changes_nothing(tmp_path: Path) -> None:
    older, newer = tmp_path / "older.csv", tmp_path / "newer.csv"
    older.write_text(csv_text(*OLDER))
    newer.write_text(csv_text(*NEWER, newline="\r\n"))
    two = tmp_path / "two.jsonl"
    progress: list[str] = []
    summary = run_local([str(older), str(newer)], export=str(two), synced_at=[T1, T2], progress=progress.append)
    assert summary.ok
    # what the run is doing, as text for whoever shows it: each sync's file, then its records consumed
    assert progress[0] == "sync 1/2: reading older.csv" and "sync 2/2: reading newer.csv" in progress
    assert progress[progress.index("sync 2/2: reading newer.csv") - 1] == "sync 1/2: 4/4 records consumed"
    assert progress[-1] == "sync 2/2: 4/4 records consumed"  # one of its five rows is rejected
    first, second = summary.syncs
    assert (first.inserted, first.updated, first.unchanged) == (4, 0, 0)
    assert (second.inserted, second.updated, second.unchanged, second.stale_skipped) == (1, 1, 2, 0)
    assert second.rejected == {"bad_estimate": 1} and second.rejections[0]["line"] == 6
    table = read_jsonl(two)
    assert table[("AAPL", "2025-07-31")]["estimate"] == 1.45
    assert table[("AAPL", "2025-07-31")]["lastSyncDate"] == T2
    assert table[("MSFT", "2025-07-29")]["lastSyncDate"] == T2  # confirmed by the newer sync
    assert table[("ZZZ", "2025-08-01")]["lastSyncDate"] == T1  # only the older sync listed it
    assert table[("ZZZ", "2025-08-01")]["estimate"] is None
    assert set(table[("SHOP", "2025-08-06")]) == {
        "asset_symbol", "earnings_date", "company_name", "fiscal_date_ending", "estimate", "currency", "lastSyncDate", "sync_id",
    }

    # The older sync delivered again after the newer one (a DLQ replay, a late duplicate): all stale.
    three = tmp_path / "three.jsonl"
    replayed = run_local([str(older), str(newer), str(older)], export=str(three), synced_at=[T1, T2, T1])
    assert replayed.syncs[2].stale_skipped == 3 and replayed.syncs[2].written == 0
    after = read_jsonl(three)
    for key, row in table.items():
        assert {k: v for k, v in after[key].items() if k != "sync_id"} == {k: v for k, v in row.items() if k != "sync_id"}
    assert "stale" in format_summary(replayed)


def test_cli_json_summary_export_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    older, quota = tmp_path / "older.csv", tmp_path / "quota.csv"
    older.write_text(csv_text(*OLDER))
    quota.write_text(json.dumps({"Information": QUOTA}))
    export, log = tmp_path / "out.jsonl", tmp_path / "handlers.log"
    assert main(["local", str(older), "--json", "--export", str(export), "--log-file", str(log)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] and summary["table_items"] == 4 and summary["syncs"][0]["written"] == 4
    assert len(export.read_text().splitlines()) == 4
    assert '"message":"sync enqueued"' in log.read_text()

    # A quota reply saved in place of the calendar is refused before anything runs, naming the file.
    assert main(["local", str(older), str(quota)]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # refused before anything runs
    assert "quota.csv holds an AlphaVantage JSON 'Information' reply" in err  # described, never quoted: a file is no upstream
    assert "25 requests per day" not in err and "upstream" not in err and err.count("\n") == 1

    assert main(["local", str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err


def test_console_script_runs_as_a_module(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "earnings_sync_cli", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "local" in done.stdout


def test_an_unchanged_resync_confirms_every_item_without_a_content_write(tmp_path: Path) -> None:
    from tests.conftest import SAMPLE_CSV

    part = tmp_path / "part.csv"
    part.write_text("".join(SAMPLE_CSV.read_text().splitlines(keepends=True)[:1201]))  # 1,200 real rows
    export = tmp_path / "table.jsonl"
    summary = run_local([str(part), str(part)], export=str(export), synced_at=[T1, T2])
    first, second = summary.syncs
    assert summary.ok and first.written == summary.table_items > 1000
    assert (second.written, second.unchanged, second.stale_skipped) == (0, first.written, 0)
    assert second.bookkeeping_only == second.stream_records == first.written  # the stream saw confirmations only
    assert {row["lastSyncDate"] for row in read_jsonl(export).values()} == {T2}
    assert first.ledger.complete and second.ledger.complete
