"""The sync registry: the first sync ever needs no settling Query; later syncs still settle."""

from __future__ import annotations

import json
from pathlib import Path

from earnings_sync.local import run_local
from tests.conftest import csv_text

T1, T2 = "2025-07-18T06:00:00.000000Z", "2025-07-19T06:00:00.000000Z"


def test_initial_load_skips_queries_and_the_next_sync_still_cleans_up(tmp_path: Path) -> None:
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text(csv_text("AAPL,Apple Inc,2025-07-31,2025-06-30,1.42,USD", "MSFT,Microsoft,2025-07-29,2025-06-30,3.35,USD"))
    # AAPL's report moves from 07-31 to 08-01 for the same fiscal period
    second.write_text(csv_text("AAPL,Apple Inc,2025-08-01,2025-06-30,1.42,USD", "MSFT,Microsoft,2025-07-29,2025-06-30,3.35,USD"))
    export = tmp_path / "table.jsonl"
    summary = run_local([str(first), str(second)], export=str(export), synced_at=[T1, T2])
    one, two = summary.syncs
    assert "Query" not in one.dynamodb_requests  # the only sync ever: nothing older to supersede
    assert one.validation_passed == 2
    assert two.dynamodb_requests.get("Query", 0) >= 1 and two.superseded_removed == 1
    keys = [(r["asset_symbol"], r["earnings_date"]) for r in map(json.loads, export.read_text().splitlines())]
    assert keys == [("AAPL", "2025-08-01"), ("MSFT", "2025-07-29")]
