"""The metric registry, the throttle counter and the memory figures behind the operational metrics."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from earnings_sync.aws import counting_throttles
from earnings_sync.observability import METRICS, Handler, M, add_metric, emit_memory_metrics, memory_used_mb, spec_for
from earnings_sync_local.lambda_runtime import LambdaContext
from tests.helpers import Faults, dynamodb_error, http_response


class Collected:
    """Stands in for Powertools Metrics where only what was added matters (a real recorder)."""

    def __init__(self) -> None:
        self.added: list[tuple[str, str, float]] = []

    def add_metric(self, name: str, unit: Any, value: float) -> None:
        self.added.append((name, unit.value, value))


def test_every_metric_name_is_declared_once_with_an_emitter() -> None:
    assert set(METRICS) == {m.value for m in M}
    assert all(spec.emitted_by and spec.description for spec in METRICS.values())
    assert METRICS[M.MEMORY_UTILIZATION].emitted_by == tuple(Handler)


def test_variants_resolve_to_their_declaration_and_unknown_names_are_refused() -> None:
    assert spec_for("RowsRejected_bad_symbol").name == M.ROWS_REJECTED
    assert spec_for("ValidationFailed_estimate_not_number").name == M.VALIDATION_FAILED
    assert spec_for("StreamDynamoDBRequests_Query").name == M.STREAM_DYNAMODB_REQUESTS
    assert spec_for("DynamoDBRequests_ConditionalCheckFailed").name == M.DYNAMODB_REQUESTS
    for undeclared in ("RowsRead_x", "RowsRejected_", "Throttle", "BatchDurations"):
        with pytest.raises(KeyError, match="not declared"):
            spec_for(undeclared)
    with pytest.raises(KeyError):
        add_metric(Collected(), "SomethingNew", 1)


def test_units_come_from_the_registry() -> None:
    collected = Collected()
    add_metric(collected, M.BATCH_DURATION, 12.5)
    add_metric(collected, "RowsRejected_bad_name", 2)
    assert collected.added == [("BatchDuration", "Milliseconds", 12.5), ("RowsRejected_bad_name", "Count", 2)]


def test_memory_utilization_is_measured_against_the_limit_lambda_gives() -> None:
    collected = Collected()
    context = LambdaContext("F", 30, memory_mb=512)
    context.memory_limit_in_mb = "512"  # the real runtime hands it over as text
    figures = emit_memory_metrics(collected, context)
    used = figures["memory_used_mb"]
    assert 10 < used < 4096 and used == pytest.approx(memory_used_mb(), abs=50)
    assert figures["memory_utilization"] == round(100 * used / 512, 1)
    assert collected.added == [
        ("MemoryUsedMB", "Megabytes", used),
        ("MemoryUtilization", "Percent", figures["memory_utilization"]),
    ]
    without_limit = Collected()
    assert "memory_utilization" not in emit_memory_metrics(without_limit, object())
    assert [name for name, _, _ in without_limit.added] == ["MemoryUsedMB"]


@pytest.fixture
def dynamodb(moto_endpoint: str) -> Any:
    config = Config(retries={"mode": "standard", "total_max_attempts": 3})
    return boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1", config=config)


def test_throttles_are_counted_with_the_ones_the_sdk_retried(dynamodb: Any) -> None:
    Faults(dynamodb, "dynamodb", "ListTables", [dynamodb_error("ProvisionedThroughputExceededException"), dynamodb_error("ThrottlingException")])
    with counting_throttles(dynamodb) as throttles:
        dynamodb.list_tables()  # third attempt succeeds: the caller never sees the two throttles
    assert throttles.count == 2


def test_throttles_that_outlive_the_retries_are_all_counted(dynamodb: Any) -> None:
    Faults(dynamodb, "dynamodb", "ListTables", [dynamodb_error("RequestLimitExceeded")] * 3)
    with counting_throttles(dynamodb, None) as throttles, pytest.raises(ClientError):
        dynamodb.list_tables()
    assert throttles.count == 3


def test_other_errors_and_http_429_are_told_apart(dynamodb: Any) -> None:
    too_many = lambda request: http_response(429, {"__type": "SomethingElse", "message": "slow down"})  # noqa: E731
    Faults(dynamodb, "dynamodb", "ListTables", [dynamodb_error("ValidationException")])
    with counting_throttles(dynamodb) as throttles, pytest.raises(ClientError):
        dynamodb.list_tables()
    assert throttles.count == 0
    Faults(dynamodb, "dynamodb", "ListTables", [too_many, None])
    with counting_throttles(dynamodb) as throttles:
        dynamodb.list_tables()
    assert throttles.count == 1


def test_the_counter_stops_at_the_end_of_the_block(dynamodb: Any) -> None:
    with counting_throttles(dynamodb, dynamodb) as throttles:  # the same client twice counts once
        Faults(dynamodb, "dynamodb", "ListTables", [dynamodb_error("ThrottlingException"), None])
        dynamodb.list_tables()
    Faults(dynamodb, "dynamodb", "ListTables", [dynamodb_error("ThrottlingException"), None])
    dynamodb.list_tables()
    assert throttles.count == 1
