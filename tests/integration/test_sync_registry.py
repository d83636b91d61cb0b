"""The sync registry: the first sync ever needs no settling Query; later syncs still settle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from earnings_sync.ledger import RegisteredSyncs, SyncLedger
from earnings_sync_local.lambda_runtime import LambdaContext, invoke
from earnings_sync_local.pipeline import run_local
from producers import app
from tests.conftest import csv_text
from tests.helpers import sync_id_for

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


def test_the_producer_registers_each_sync_id_before_sending(handler_env: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "calendar.csv"
    path.write_text(csv_text("AAPL,Apple Inc,2025-07-31,2025-06-30,1.42,USD"))
    ledger = SyncLedger(handler_env["dynamodb"], handler_env["resources"].tables["SyncLedgerTable"])
    reports = []
    for synced_at in (T1, T2):
        event = {"path": str(path), "synced_at": synced_at}
        report, _, error = invoke(app.lambda_handler, event, LambdaContext("ProducerFunction", 300))
        assert error is None
        reports.append(report)
    registry = ledger.registered_syncs()
    assert registry.ids == {r["sync_id"] for r in reports} == ledger.registered_sync_ids()
    assert registry.since is not None and ledger.sole_sync() is None  # two syncs: the counter agrees
    assert ledger.recent_syncs() == sorted(((r["synced_at"], r["sync_id"]) for r in reports), reverse=True)  # not a sync itself


def test_registering_a_sync_again_changes_nothing_the_audit_relies_on(aws: dict[str, Any]) -> None:
    clock = [1_752_904_800.0]  # 2025-07-19T06:00:00Z
    ledger = SyncLedger(aws["dynamodb"], aws["resources"].tables["SyncLedgerTable"], clock=lambda: clock[0])
    first = sync_id_for(T1)
    ledger.register_sync(first, T1)
    assert ledger.registered_syncs() == RegisteredSyncs(frozenset({first}), "2025-07-19T06:00:00.000000Z")
    assert ledger.sole_sync() == T1
    clock[0] += 3600
    ledger.register_sync(first, T1)  # a retried registration
    ledger.register_sync(sync_id_for(T2), T2)
    assert ledger.registered_syncs() == RegisteredSyncs(frozenset({first, sync_id_for(T2)}), "2025-07-19T06:00:00.000000Z")
