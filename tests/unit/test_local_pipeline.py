"""The emulator runs the functions template.yaml's `Handler` properties name, as Lambda would."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

import consumers.sqs_consumer
import consumers.stream_consumer
import producers.app
import queries.sync_monitor
import queries.upcoming_query
from earnings_sync_local.pipeline import LocalPipeline, RunningEmulator, import_handler
from earnings_sync_local.template import (
    CONSUMER_ID,
    PRODUCER_ID,
    STREAM_CONSUMER_ID,
    LocalResources,
    StreamMapping,
    TemplateError,
    function_properties,
    load_template,
)

CALLS: list[tuple[str, dict[str, Any]]] = []


def recording_producer(event: dict[str, Any], context: Any) -> dict[str, Any]:
    CALLS.append((context.function_name, event))
    return {"sync_id": "s1"}


def recording_consumer(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"batchItemFailures": []}


def resources(**handlers: str) -> LocalResources:
    """Resources that exist nowhere: enough to wire a pipeline, which calls no AWS API until it drains."""
    return LocalResources(
        table_name="t",
        table_arn="arn:aws:dynamodb:us-east-1:123456789012:table/t",
        stream_arn=None,
        queue_url="http://127.0.0.1:1/123456789012/q",
        queue_arn="arn:aws:sqs:us-east-1:123456789012:q",
        dlq_url="http://127.0.0.1:1/123456789012/dlq",
        dlq_arn="arn:aws:sqs:us-east-1:123456789012:dlq",
        max_receive_count=3,
        consumer_batch_size=10,
        consumer_function_response_types=("ReportBatchItemFailures",),
        consumer_timeout=30,
        queue_visibility_timeout=30,
        handlers=MappingProxyType(handlers),
    )


def test_the_template_s_handlers_are_the_entry_points() -> None:
    template = load_template()
    named = {
        logical_id: function_properties(template, logical_id)["Handler"]
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    expected = {
        PRODUCER_ID: producers.app.lambda_handler,
        CONSUMER_ID: consumers.sqs_consumer.lambda_handler,
        STREAM_CONSUMER_ID: consumers.stream_consumer.lambda_handler,
        "UpcomingFunction": queries.upcoming_query.lambda_handler,
        "SyncMonitorFunction": queries.sync_monitor.lambda_handler,
    }
    assert set(named) == set(expected)
    for logical_id, handler in expected.items():
        assert import_handler(resources(**named), logical_id)[1] is handler


def test_the_pipeline_invokes_what_the_template_names() -> None:
    here = __name__
    pipeline = LocalPipeline(
        resources(**{PRODUCER_ID: f"{here}.recording_producer", CONSUMER_ID: f"{here}.recording_consumer"}), sqs=None
    )
    CALLS.clear()
    report, error = pipeline.produce("calendar.csv", "2025-07-18T06:00:00.000000Z")
    assert (report, error) == ({"sync_id": "s1"}, None)
    assert CALLS == [(PRODUCER_ID, {"path": "calendar.csv", "synced_at": "2025-07-18T06:00:00.000000Z"})]
    assert pipeline.source.handler is recording_consumer and pipeline.source.function_name == CONSUMER_ID
    assert pipeline.producer_module is sys.modules[here]


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        ("producers.app.handler", "ProducerFunction: Handler producers.app.handler: no such function"),
        ("producers.app.MAX_LOGGED_REJECTIONS", "ProducerFunction: Handler producers.app.MAX_LOGGED_REJECTIONS: no such function"),
        ("producers.gone.lambda_handler", "ProducerFunction: Handler producers.gone.lambda_handler: no module producers.gone"),
        ("nowhere.app.lambda_handler", "ProducerFunction: Handler nowhere.app.lambda_handler: no module nowhere"),
        ("lambda_handler", "ProducerFunction: Handler lambda_handler: no such function"),
    ],
)
def test_a_renamed_or_missing_handler_is_named(handler: str, message: str) -> None:
    with pytest.raises(TemplateError) as raised:
        import_handler(resources(**{PRODUCER_ID: handler}), PRODUCER_ID)
    assert str(raised.value) == message


def test_a_function_without_a_handler_is_named() -> None:
    with pytest.raises(TemplateError, match="^ConsumerFunction has no Handler in the template$"):
        LocalPipeline(resources(**{PRODUCER_ID: "producers.app.lambda_handler"}), sqs=None)


def test_a_handler_module_missing_a_dependency_is_not_reported_as_a_missing_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "broken_entry"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "app.py").write_text("import not_installed_anywhere\n\ndef lambda_handler(event, context):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ModuleNotFoundError) as raised:
            import_handler(resources(**{PRODUCER_ID: "broken_entry.app.lambda_handler"}), PRODUCER_ID)
    finally:
        for name in ("broken_entry", "broken_entry.app"):
            sys.modules.pop(name, None)
    assert raised.value.name == "not_installed_anywhere"


def _stream_mapping() -> StreamMapping:
    return StreamMapping(
        function_logical_id=STREAM_CONSUMER_ID,
        stream_arn="arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2025-01-01T00:00:00.000",
        starting_position="TRIM_HORIZON",
        batch_size=100,
        bisect_on_error=True,
        maximum_retry_attempts=3,
        maximum_record_age_seconds=-1,
        function_response_types=("ReportBatchItemFailures",),
        function_timeout=60,
    )


def test_the_stream_consumer_comes_from_its_mapping_s_function() -> None:
    template_handlers = {
        PRODUCER_ID: "producers.app.lambda_handler",
        CONSUMER_ID: "consumers.sqs_consumer.lambda_handler",
        STREAM_CONSUMER_ID: f"{__name__}.recording_consumer",
    }
    mapping = _stream_mapping()
    wired = dataclasses.replace(resources(**template_handlers), stream_arn=mapping.stream_arn, stream_mapping=mapping)
    pipeline = LocalPipeline(wired, sqs=None, streams=object())
    assert pipeline.streams is not None and pipeline.streams.handler is recording_consumer
    assert pipeline.streams.function_name == STREAM_CONSUMER_ID


def test_serve_tells_other_terminals_the_region_plain_boto3_reads() -> None:
    """boto3 and the AWS CLI read AWS_DEFAULT_REGION; AWS_REGION alone leaves a plain script without a region."""
    queues = resources(**{PRODUCER_ID: "producers.app.lambda_handler"})
    text = RunningEmulator("http://127.0.0.1:4566", queues, source=None).describe()
    (export,) = [line.strip() for line in text.splitlines() if line.strip().startswith("export ")]
    assert export.split()[1:] == [
        "AWS_ENDPOINT_URL=http://127.0.0.1:4566", "AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing",
        "AWS_DEFAULT_REGION=us-east-1", "AWS_REGION=us-east-1",
    ]
