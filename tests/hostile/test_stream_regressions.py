"""Hostile case: a regression the stream consumer gave up on is found and repaired.

An older sync's write lands over a newer one on the batch write path (BatchWriteItem takes no
condition) while the stream consumer is down: the mapping gives up on the records and only their
ranges reach StreamFailureQueue. What it must get: the alarm fires, the operator's documented repair
finds the regression and puts the newer item back, and the queue ends empty. The same case runs
through the whole pipeline under a real race in
tests/faults/test_faults.py::test_a_regression_the_stream_consumer_gave_up_on_is_found_and_repaired.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from earnings_sync import consistency
from earnings_sync.audit import find_superseded
from earnings_sync_cli import main as cli
from earnings_sync_local.template import load_template
from tests.integration.redo_support import ALARM_ID, REGRESSED, T1, T2, Scene, failure_alarm_fires

ROOT = Path(__file__).resolve().parents[2]


def test_a_regression_the_stream_consumer_gave_up_on_is_found_and_repaired(
    aws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    scene = Scene(aws)
    scene.regress()
    scene.stream_consumer_gives_up()
    assert scene.estimate_and_sync(REGRESSED) == (Decimal("1"), T1)
    # Nothing in the item says it is older than it should be: the audit's checks pass it.
    assert consistency.validate_item(scene.item(REGRESSED)) == []
    assert REGRESSED not in {s.key for s in find_superseded(list(scene.table.all_items()))[0]}
    assert failure_alarm_fires(scene.sqs, scene.resources)

    target = [scene.queue_url, "--table", scene.table_name, "--json"]
    assert cli.main(["stream", "redo", *target, "--dry-run"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["regressions"] == 1 and found["would_redo"] == found["messages"] > 0
    assert scene.estimate_and_sync(REGRESSED) == (Decimal("1"), T1)  # a dry run writes nothing

    assert cli.main(["stream", "redo", *target]) == 0
    repaired = json.loads(capsys.readouterr().out)
    assert repaired["regressions_restored"] == 1 and repaired["deleted"] == repaired["messages"]
    assert scene.estimate_and_sync(REGRESSED) == (Decimal("2"), T2)
    assert scene.queue_depth() == (0, 0) and not failure_alarm_fires(scene.sqs, scene.resources)


def test_the_alarm_and_the_guide_name_the_repair_not_the_audit() -> None:
    description = " ".join(load_template()["Resources"][ALARM_ID]["Properties"]["AlarmDescription"].split())
    assert "earnings-sync stream redo" in description and "audit cannot see" in description
    guide = (ROOT / "docs" / "operations.md").read_text()
    (row,) = [line for line in guide.splitlines() if line.startswith(f"| `{ALARM_ID}`")]
    assert "`earnings-sync stream redo`" in row and "cannot see" in row
    assert "to redo what was skipped" not in guide
