"""template.yaml as AWS reads it: cfn-lint, the SAM transform, least-privilege roles, and alarms and a
dashboard that watch metrics the code really emits.

Metric names, units and dimensions come from `observability.METRICS`, the API calls each handler
makes from `iam.OPERATIONS` (itself checked against recorded calls in
tests/integration/test_aws_operations.py): nothing here repeats them by hand.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Metrics

from earnings_sync.calendar_table import INDEX_NAME
from earnings_sync.observability import (
    COLD_START_DIMENSIONS,
    DIMENSIONS,
    METRICS,
    NAMESPACE,
    SERVICE,
    Handler,
    M,
    emit_consumer_metrics,
    emit_memory_metrics,
    emit_producer_metrics,
    emit_stream_metrics,
    emit_sync_watch_metrics,
    emit_upcoming_metrics,
    emit_upcoming_request,
    spec_for,
)
from earnings_sync_local import iam
from earnings_sync_local.lambda_runtime import LambdaContext
from earnings_sync_local.template import DEFAULT_TEMPLATE, SERVERLESS_FUNCTION, build_context, load_template, resolve

ROOT = Path(__file__).resolve().parents[2]
ALARM = "AWS::CloudWatch::Alarm"
MAPPING = "AWS::Lambda::EventSourceMapping"
BASIC_EXECUTION_ROLE = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
DATA_SERVICES = ("dynamodb", "sqs", "s3", "ssm", "events")
# What Lambda's poller does with the function's role, by event source type (AWS Lambda guide,
# "execution role permissions" of the SQS and DynamoDB Streams event sources).
POLLING_ACTIONS = {
    "AWS::SQS::Queue": {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"},
    "AWS::DynamoDB::Table": {"dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"},
}
AWS_METRIC_DIMENSIONS = {  # namespace -> metric names allowed, dimension name, resource type it names
    "AWS/SQS": ({"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"}, "QueueName", "AWS::SQS::Queue"),
    "AWS/Lambda": ({"IteratorAge", "Errors", "Throttles", "Duration"}, "FunctionName", SERVERLESS_FUNCTION),
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def sam_translate(template: dict[str, Any]) -> dict[str, Any]:
    """The SAM transform CloudFormation runs, offline: a fake S3 code location, a fixed region, and a
    managed-policy loader that knows none (the template names no managed policy; SAM's own event
    policies would need one, and there are none)."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    def no_managed_policies() -> dict[str, str]:
        return {}

    document = copy.deepcopy(template)
    document["Globals"]["Function"]["CodeUri"] = "s3://fake-code-bucket/lambda.zip"
    fixed_region = boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    translator = Translator(None, Parser(), boto_session=fixed_region)
    return translator.translate(document, parameter_values={}, get_managed_policy_map=no_managed_policies)


@pytest.fixture(scope="module")
def translated(template: dict[str, Any]) -> dict[str, Any]:
    return sam_translate(template)


def functions(template: dict[str, Any]) -> dict[str, Handler]:
    """Logical id -> the handler module it runs (from its `Handler` property)."""
    found = {}
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") == SERVERLESS_FUNCTION:
            module, _, function = resource["Properties"]["Handler"].rpartition(".")
            assert function == "lambda_handler", logical_id
            found[logical_id] = Handler(module)
    return found


def fake_context(template: dict[str, Any]) -> dict[str, Any]:
    """Default parameters, and a made-up physical id and attributes for every resource."""
    ids = list(template["Resources"])
    attributes = {
        i: {"Arn": f"arn:aws:fake:us-east-1:123456789012:{i}", "QueueName": f"{i}-name", "StreamArn": f"arn:stream:{i}"}
        for i in ids
    }
    return build_context(template, resources={i: f"{i}-id" for i in ids}, attributes=attributes)


# --------------------------------------------------------------------------- cfn-lint and SAM


# Informational checks included (`cfn-lint -c I`): I3011 asks every stateful resource to say what
# happens to it on delete and on replacement.
LINT_CONFIG: dict[str, Any] = {"regions": ["us-east-1"], "include_checks": ["I"]}


def test_cfn_lint_reports_nothing() -> None:
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(DEFAULT_TEMPLATE, config=ManualArgs(**LINT_CONFIG))
    assert [str(match) for match in matches] == []


def test_cfn_lint_s_informational_checks_are_on() -> None:
    """A table without its deletion policies is reported: `-c I` is really in force above."""
    from cfnlint.api import ManualArgs, lint

    text = DEFAULT_TEMPLATE.read_text()
    bare = text.replace("    DeletionPolicy: Retain\n    UpdateReplacePolicy: Retain\n", "", 1)
    assert bare != text
    assert any("I3011" in str(match) for match in lint(bare, config=ManualArgs(**LINT_CONFIG)))


def test_cfn_lint_would_catch_a_broken_alarm() -> None:
    """The check above is not vacuous: a reference to a queue that does not exist is reported."""
    from cfnlint.api import ManualArgs, lint

    text = DEFAULT_TEMPLATE.read_text()
    broken = text.replace("Value: !GetAtt EarningsDLQ.QueueName", "Value: !GetAtt NoSuchQueue.QueueName", 1)
    assert broken != text
    assert any("NoSuchQueue" in str(match) for match in lint(broken, config=ManualArgs(**LINT_CONFIG)))


def test_every_parameter_has_a_default_so_a_guided_deploy_needs_no_edit(template: dict[str, Any]) -> None:
    assert all("Default" in spec for spec in template["Parameters"].values())
    context = build_context(template)  # the defaults pass their own AllowedValues / patterns
    assert context["conditions"]["HasAlarmEmail"] is False
    assert build_context(template, parameter_overrides={"AlarmEmail": "ops@example.com"})["conditions"]["HasAlarmEmail"]


def test_the_sam_transform_yields_one_role_per_function_and_only_the_declared_mappings(
    template: dict[str, Any], translated: dict[str, Any]
) -> None:
    resources = translated["Resources"]
    for logical_id in functions(template):
        function = resources[logical_id]
        assert function["Type"] == "AWS::Lambda::Function"
        assert function["Properties"]["Role"] == {"Fn::GetAtt": [f"{logical_id}Role", "Arn"]}
        assert resources[f"{logical_id}Role"]["Type"] == "AWS::IAM::Role"
    mappings = {i for i, r in resources.items() if r["Type"] == MAPPING}
    assert mappings == {i for i, r in template["Resources"].items() if r["Type"] == MAPPING}
    assert mappings == {"ConsumerQueueMapping", "StreamConsumerMapping"}
    # No SAM-made policy resource to wait for: the polling actions sit in the roles' inline policies.
    assert not [i for i, r in resources.items() if r["Type"] == "AWS::IAM::Policy"]


# --------------------------------------------------------------------------- least privilege


def _branches(value: Any) -> Iterator[Any]:
    """Both sides of an Fn::If (a conditional statement may be granted), without AWS::NoValue."""
    if isinstance(value, dict) and "Fn::If" in value:
        _, when_true, when_false = value["Fn::If"]
        yield from _branches(when_true)
        yield from _branches(when_false)
    elif value != {"Ref": "AWS::NoValue"}:
        yield value


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements(translated: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    """Every Allow statement the role gets: its inline policies and the policies attached to it."""
    resources = translated["Resources"]
    documents = [p["PolicyDocument"] for p in resources[role_id]["Properties"].get("Policies", [])]
    documents += [
        r["Properties"]["PolicyDocument"]
        for r in resources.values()
        if r["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in r["Properties"]["Roles"]
    ]
    statements = [s for d in documents for raw in d["Statement"] for s in _branches(raw)]
    assert all(s["Effect"] == "Allow" for s in statements)
    return statements


def mapping_needs(template: dict[str, Any], function_id: str) -> set[str]:
    """The actions Lambda itself takes with the function's role: the event source mappings' polling
    and on-failure sends, and the on-failure destination of asynchronous invocations."""
    needed: set[str] = set()
    invoke_config = template["Resources"][function_id]["Properties"].get("EventInvokeConfig") or {}
    if (invoke_config.get("DestinationConfig") or {}).get("OnFailure", {}).get("Type") == "SQS":
        needed.add("sqs:SendMessage")
    for resource in template["Resources"].values():
        properties = resource.get("Properties") or {}
        if resource["Type"] != MAPPING or properties["FunctionName"] != {"Ref": function_id}:
            continue
        source_id = properties["EventSourceArn"]["Fn::GetAtt"][0]
        needed |= POLLING_ACTIONS[template["Resources"][source_id]["Type"]]
        if "OnFailure" in (properties.get("DestinationConfig") or {}):
            needed.add("sqs:SendMessage")
    return needed


def _resource_text(resource: Any, template: dict[str, Any]) -> str:
    """A statement's Resource as text, checked to name something of this template or a parameter."""
    known = set(template["Resources"]) | set(template["Parameters"])
    if isinstance(resource, dict) and set(resource) == {"Ref"}:  # a parameter that holds an ARN
        assert resource["Ref"] in template["Parameters"], resource
        return "${%s}" % resource["Ref"]
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        assert resource["Fn::GetAtt"][0] in known, resource
        return "${%s}" % ".".join(resource["Fn::GetAtt"])
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        text = resource["Fn::Sub"]
        names = {name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text)} - {"AWS::Partition", "AWS::Region", "AWS::AccountId"}
        assert names and names <= known, resource
        return text
    raise AssertionError(f"resource {resource!r} does not name a template resource or parameter")


def test_each_function_is_granted_exactly_what_its_code_and_its_mapping_use(
    template: dict[str, Any], translated: dict[str, Any]
) -> None:
    for function_id, handler in functions(template).items():
        statements = role_statements(translated, f"{function_id}Role")
        granted = {action for s in statements for action in _listed(s["Action"])}
        assert granted == iam.iam_actions(handler) | mapping_needs(template, function_id), function_id
        for statement in statements:
            for action in _listed(statement["Action"]):
                assert "*" not in action and action.split(":")[0] in DATA_SERVICES, (function_id, action)
            for resource in (r for listed in _listed(statement["Resource"]) for r in _branches(listed)):
                text = _resource_text(resource, template)
                # A wildcard may only end a path under a named resource (objects of the input
                # bucket, the table's streams): never in the service, region or account part.
                assert "*" not in text.split("/")[0], (function_id, text)


def test_roles_carry_no_managed_policy_beyond_basic_logging(template: dict[str, Any], translated: dict[str, Any]) -> None:
    """SAM adds AWSLambdaBasicExecutionRole (CloudWatch Logs only) to every role it makes; the
    SQS/DynamoDB execution roles with Resource "*" would come from SAM `Events`, which is why the
    mappings are plain resources."""
    for function_id in functions(template):
        role = translated["Resources"][f"{function_id}Role"]["Properties"]
        assert role["ManagedPolicyArns"] == [BASIC_EXECUTION_ROLE], function_id


def test_the_upcoming_reader_may_query_only_the_index_and_scan_only_the_table(template: dict[str, Any], translated: dict[str, Any]) -> None:
    statements = role_statements(translated, "UpcomingFunctionRole")
    by_action = {action: _listed(s["Resource"]) for s in statements for action in _listed(s["Action"])}
    assert by_action == {
        "dynamodb:Query": [{"Fn::Sub": "${EarningsTable.Arn}/index/" + INDEX_NAME}],
        "dynamodb:Scan": [{"Fn::GetAtt": ["EarningsTable", "Arn"]}],
    }
    indexes = template["Resources"]["EarningsTable"]["Properties"]["GlobalSecondaryIndexes"]
    assert [index["IndexName"] for index in indexes] == [INDEX_NAME]


def test_the_polling_actions_name_the_one_queue_and_the_one_stream(translated: dict[str, Any]) -> None:
    def grants(role_id: str, actions: set[str]) -> dict[str, list[Any]]:
        statements = role_statements(translated, role_id)
        return {a: _listed(s["Resource"]) for s in statements for a in _listed(s["Action"]) if a in actions}

    sqs_polling = POLLING_ACTIONS["AWS::SQS::Queue"]
    queue = [{"Fn::GetAtt": ["EarningsQueue", "Arn"]}]
    assert grants("ConsumerFunctionRole", sqs_polling) == dict.fromkeys(sqs_polling, queue)
    stream = [{"Fn::GetAtt": ["EarningsTable", "StreamArn"]}]
    assert grants("StreamConsumerFunctionRole", POLLING_ACTIONS["AWS::DynamoDB::Table"]) == {
        "dynamodb:DescribeStream": stream,
        "dynamodb:GetRecords": stream,
        "dynamodb:GetShardIterator": stream,
        "dynamodb:ListStreams": [{"Fn::Sub": "${EarningsTable.Arn}/stream/*"}],
    }


# --------------------------------------------------------------------------- data protection, encryption, failures


def test_both_tables_outlive_the_stack_with_deletion_protection_and_backups(template: dict[str, Any]) -> None:
    for table_id in ("EarningsTable", "SyncLedgerTable"):
        resource = template["Resources"][table_id]
        assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain", table_id
        properties = resource["Properties"]
        assert properties["DeletionProtectionEnabled"] == {"Ref": "TableDeletionProtection"}, table_id
        assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, table_id
    assert build_context(template)["parameters"]["TableDeletionProtection"] == "true"  # on unless a test stack says so
    off = build_context(template, parameter_overrides={"TableDeletionProtection": "false"})
    assert off["parameters"]["TableDeletionProtection"] == "false"


def test_the_localstack_tier_can_delete_what_the_template_retains(template: dict[str, Any]) -> None:
    """Its stacks turn deletion protection off and delete the retained tables after the stack."""
    from tests.e2e.localstack_stack import RETAINED_TABLE_OUTPUTS, TEST_STACK_PARAMETERS, DeployedStack

    assert build_context(template, parameter_overrides=TEST_STACK_PARAMETERS)["parameters"]["TableDeletionProtection"] == "false"
    retained = {i for i, r in template["Resources"].items() if r.get("DeletionPolicy") == "Retain"}
    assert {template["Outputs"][output]["Value"]["Ref"] for output in RETAINED_TABLE_OUTPUTS} == retained
    failed_early = DeployedStack("http://x", "s", {"TableName": "t-1"}, {}, "b", 0.0, None)  # type: ignore[arg-type]
    assert failed_early.retained_tables() == ["t-1", "t-1-sync-ledger"]
    assert template["Resources"]["SyncLedgerTable"]["Properties"]["TableName"] == {"Fn::Sub": "${TableName}-sync-ledger"}


def test_the_alarm_topic_is_encrypted_with_a_key_cloudwatch_may_use(template: dict[str, Any]) -> None:
    """Not the AWS-managed alias/aws/sns: its policy does not let CloudWatch use it, and cannot be
    edited, so alarms could not publish."""
    resources = template["Resources"]
    assert resources["AlarmTopic"]["Properties"]["KmsMasterKeyId"] == {"Ref": "AlarmTopicKey"}
    key = resources["AlarmTopicKey"]["Properties"]
    assert resources["AlarmTopicKey"]["Type"] == "AWS::KMS::Key" and key["EnableKeyRotation"] is True
    statements = key["KeyPolicy"]["Statement"]
    (grant,) = [s for s in statements if s["Principal"].get("Service") == "cloudwatch.amazonaws.com"]
    assert grant["Effect"] == "Allow" and sorted(grant["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert all("*" not in json.dumps(s["Principal"]) for s in statements)


def test_failed_asynchronous_producer_invocations_go_to_a_queue_of_their_own(
    template: dict[str, Any], translated: dict[str, Any]
) -> None:
    config = template["Resources"]["ProducerFunction"]["Properties"]["EventInvokeConfig"]
    failure_queue = {"Fn::GetAtt": ["ProducerFailureQueue", "Arn"]}
    assert config["DestinationConfig"]["OnFailure"] == {"Type": "SQS", "Destination": failure_queue}
    assert template["Resources"]["ProducerFailureQueue"]["Properties"]["SqsManagedSseEnabled"] is True
    (invoke_config,) = [r for r in translated["Resources"].values() if r["Type"] == "AWS::Lambda::EventInvokeConfig"]
    assert invoke_config["Properties"]["FunctionName"] == {"Ref": "ProducerFunction"}
    statements = role_statements(translated, "ProducerFunctionRole")
    sends = [s["Resource"] for s in statements if "sqs:SendMessage" in _listed(s["Action"])]
    assert sorted(sends, key=json.dumps) == sorted([{"Fn::GetAtt": ["EarningsQueue", "Arn"]}, failure_queue], key=json.dumps)


def test_the_sync_monitor_runs_at_least_hourly_and_only_reads_and_marks_the_ledger(
    template: dict[str, Any], translated: dict[str, Any]
) -> None:
    default = template["Parameters"]["SyncMonitorSchedule"]["Default"]
    number, unit = re.fullmatch(r"rate\((\d+) (minutes?|hours?)\)", default).groups()
    assert int(number) * (60 if unit.startswith("hour") else 1) <= 60
    statements = role_statements(translated, "SyncMonitorFunctionRole")
    assert [(sorted(_listed(s["Action"])), s["Resource"]) for s in statements] == [
        (["dynamodb:Query", "dynamodb:UpdateItem"], {"Fn::GetAtt": ["SyncLedgerTable", "Arn"]})
    ]


# --------------------------------------------------------------------------- metrics and alarms


def emitted_blobs(emit: Any) -> list[dict[str, Any]]:
    """The EMF JSON lines a real Powertools Metrics object prints for `emit(metrics)`."""
    metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        emit(metrics)
        metrics.flush_metrics()
    return [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]


def _tallies() -> tuple[Any, Any]:
    from earnings_sync.consumer import ConsumerTally
    from earnings_sync.stream import StreamTally

    consumer = ConsumerTally(messages=3, requests={"BatchGetItem": 1})
    stream = StreamTally(records=2)
    stream.violations.update(["bad_currency"])
    stream.requests.update({"Query": 1})
    return consumer, stream


def test_the_registry_states_the_dimensions_and_emitters_the_emf_really_carries() -> None:
    """Dimension sets are read from real Powertools output, not assumed: an alarm must name
    exactly the set a blob declares. (That every declared metric is really emitted by its handlers
    is checked on real invocations, tests/integration/test_aws_operations.py.)"""
    from earnings_sync.upcoming import UpcomingResult

    consumer, stream = _tallies()
    report = {
        "rows": 3, "rejected_total": 1, "rejected": {"bad_symbol": 1}, "duplicates": 0, "records_enqueued": 2,
        "messages_sent": 1, "failed_messages": [], "send_retries": 0, "duration_ms": 5.0,
    }
    from earnings_sync.sync_watch import SyncWatch, WatchedSync

    watch = SyncWatch("2025-07-19T08:00:00.000000Z", "2025-07-18T06:00:00.000000Z")
    watch.syncs.append(WatchedSync("s", "2025-07-19T06:00:00.000000Z", 120.0, "complete", "complete", newly_complete=True))
    context = LambdaContext("AnyFunction", 30)
    by_handler = {
        Handler.PRODUCER: lambda m: (emit_producer_metrics(m, report, 1), emit_memory_metrics(m, context)),
        Handler.CONSUMER: lambda m: (emit_consumer_metrics(m, consumer, 1.0, 2), emit_memory_metrics(m, context)),
        Handler.STREAM_CONSUMER: lambda m: (emit_stream_metrics(m, stream, 1.0, 0), emit_memory_metrics(m, context)),
        Handler.UPCOMING: lambda m: (
            emit_upcoming_request(m, failed=False, throttles=0),
            emit_upcoming_metrics(m, UpcomingResult(queries=2)),
            emit_memory_metrics(m, context),
        ),
        Handler.SYNC_MONITOR: lambda m: (emit_sync_watch_metrics(m, watch), emit_memory_metrics(m, context)),
    }
    seen: dict[Handler, set[str]] = {}
    for handler, emit in by_handler.items():
        (blob,) = emitted_blobs(emit)
        (directive,) = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == NAMESPACE
        assert [sorted(d) for d in directive["Dimensions"]] == [sorted(DIMENSIONS)]
        assert blob["service"] == SERVICE
        for metric in directive["Metrics"]:
            spec = spec_for(metric["Name"])
            assert metric["Unit"] == spec.unit.value and handler in spec.emitted_by, metric
        seen[handler] = {spec_for(m["Name"]).name for m in directive["Metrics"]}
    assert all(M.MEMORY_UTILIZATION in names for names in seen.values())


def test_the_cold_start_blob_carries_function_name_and_service(monkeypatch: pytest.MonkeyPatch) -> None:
    from aws_lambda_powertools.metrics.provider import cold_start

    monkeypatch.setattr(cold_start, "is_cold_start", True)  # as in a fresh execution environment
    metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

    @metrics.log_metrics(capture_cold_start_metric=True)
    def handler(event: dict, context: Any) -> None:
        emit_upcoming_request(metrics, failed=False)

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        handler({}, LambdaContext("UpcomingFunction", 30))
    blobs = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    (cold,) = [b for b in blobs if M.COLD_START in b]
    (directive,) = cold["_aws"]["CloudWatchMetrics"]
    assert [sorted(d) for d in directive["Dimensions"]] == [sorted(COLD_START_DIMENSIONS)]
    assert METRICS[M.COLD_START].dimensions == COLD_START_DIMENSIONS


def test_the_functions_publish_under_the_namespace_and_service_the_code_declares(template: dict[str, Any]) -> None:
    context = fake_context(template)
    variables = resolve(template["Globals"]["Function"]["Environment"]["Variables"], context)
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE
    assert variables["POWERTOOLS_SERVICE_NAME"] == SERVICE


def alarm_metrics(alarm: dict[str, Any]) -> list[tuple[str, dict[str, Any], Any]]:
    """(metric id, Metric with Namespace/MetricName/Dimensions, stat) for a plain or metric-math alarm."""
    properties = alarm["Properties"]
    if "MetricName" in properties:
        metric = {k: properties[k] for k in ("Namespace", "MetricName", "Dimensions")}
        return [("", metric, properties["Statistic"])]
    found = []
    ids = {query["Id"] for query in properties["Metrics"]}
    for query in properties["Metrics"]:
        if "Expression" in query:
            used = set(re.findall(r"\b[a-z][A-Za-z0-9_]*\b", query["Expression"])) - {"MAX", "MIN", "SUM", "AVG"}
            assert used and used <= ids, (query["Expression"], ids)
            assert query.get("ReturnData", True) is True
        else:
            found.append((query["Id"], query["MetricStat"]["Metric"], query["MetricStat"]["Stat"]))
            assert query["ReturnData"] is False
    assert sum(1 for q in properties["Metrics"] if q.get("ReturnData", True)) == 1
    return found


def test_every_alarm_watches_a_metric_that_is_really_published(template: dict[str, Any]) -> None:
    context = fake_context(template)
    deployed = set(functions(template).values())
    resources = template["Resources"]
    alarms = {i: r for i, r in resources.items() if r["Type"] == ALARM}
    assert len(alarms) >= 9
    for alarm_id, alarm in alarms.items():
        for _, metric, _ in alarm_metrics(alarm):
            namespace = resolve(metric["Namespace"], context)
            dimensions = metric.get("Dimensions") or []
            if namespace == NAMESPACE:
                spec = spec_for(resolve(metric["MetricName"], context))
                assert sorted(d["Name"] for d in dimensions) == sorted(spec.dimensions), alarm_id
                values = {d["Name"]: resolve(d["Value"], context) for d in dimensions}
                assert values == {"service": SERVICE}, alarm_id
                assert deployed & set(spec.emitted_by), f"{alarm_id}: no deployed function emits {spec.name}"
            else:
                allowed, dimension, resource_type = AWS_METRIC_DIMENSIONS[namespace]
                assert metric["MetricName"] in allowed, alarm_id
                (only,) = dimensions
                assert only["Name"] == dimension, alarm_id
                reference = only["Value"]
                target = reference["Fn::GetAtt"][0] if "Fn::GetAtt" in reference else reference["Ref"]
                assert resources[target]["Type"] == resource_type, alarm_id


# The one alarm whose silence is the incident: no completion published means no sync completed (or
# the monitor did not run).
MISSING_DATA_BREACHES = {"NoCompletedSyncAlarm"}


def test_every_alarm_notifies_the_topic_and_stays_quiet_without_data(template: dict[str, Any]) -> None:
    for alarm_id, alarm in template["Resources"].items():
        if alarm["Type"] != ALARM:
            continue
        properties = alarm["Properties"]
        assert properties["AlarmActions"] == [{"Ref": "AlarmTopic"}], alarm_id
        assert properties["OKActions"] == [{"Ref": "AlarmTopic"}], alarm_id
        expected = "breaching" if alarm_id in MISSING_DATA_BREACHES else "notBreaching"
        assert properties["TreatMissingData"] == expected, alarm_id
    subscription = template["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}


_GT, _GE, _LT = "GreaterThanThreshold", "GreaterThanOrEqualToThreshold", "LessThanThreshold"
ALARM_SET = [
    ("WriteFailureRateAlarm", {M.WRITE_FAILURES, M.RECORDS_WRITTEN, M.RECORDS_UNCHANGED, M.STALE_SYNC_SKIPPED}, _GT, 5),
    ("BatchDurationAlarm", {M.BATCH_DURATION, M.STREAM_BATCH_DURATION}, _GT, 45000),
    ("UpcomingQueryFailureRateAlarm", {M.UPCOMING_INDEX_FAILURES, M.UPCOMING_REQUEST_FAILURES, M.UPCOMING_REQUESTS}, _GT, 10),
    ("ConsistencyFailureRateAlarm", {M.VALIDATION_FAILED, M.VALIDATION_PASSED}, _GT, 5),
    ("MemoryUtilizationAlarm", {M.MEMORY_UTILIZATION}, _GT, 80),
    ("RetryExhaustedAlarm", {M.RETRY_EXHAUSTED}, _GT, 0),
    ("DlqNotEmptyAlarm", {"ApproximateNumberOfMessagesVisible"}, _GT, 0),
    ("StreamFailureQueueNotEmptyAlarm", {"ApproximateNumberOfMessagesVisible"}, _GT, 0),
    ("StreamIteratorAgeAlarm", {"IteratorAge"}, _GT, 300000),
    ("ChangeEventPublishFailuresAlarm", {M.CHANGE_EVENT_PUBLISH_FAILURES}, _GT, 0),
    # the start of the pipeline: a sync that fails, never happens or never completes
    ("ProducerErrorsAlarm", {"Errors"}, _GE, 1),
    ("UpstreamErrorsAlarm", {M.UPSTREAM_ERRORS}, _GE, 1),
    ("EnqueueFailuresAlarm", {M.ENQUEUE_FAILURES}, _GE, 1),
    ("ProducerFailureQueueNotEmptyAlarm", {"ApproximateNumberOfMessagesVisible"}, _GT, 0),
    ("NoCompletedSyncAlarm", {M.SYNC_COMPLETIONS}, _LT, 1),
    ("SyncIncompleteAlarm", {M.SYNCS_INCOMPLETE}, _GE, 1),
]


@pytest.mark.parametrize(("alarm_id", "metrics", "operator", "threshold"), ALARM_SET)
def test_the_alarm_set(template: dict[str, Any], alarm_id: str, metrics: set[str], operator: str, threshold: float) -> None:
    alarm = template["Resources"][alarm_id]
    assert {m["MetricName"] for _, m, _ in alarm_metrics(alarm)} == metrics
    assert alarm["Properties"]["Threshold"] == threshold
    assert alarm["Properties"]["ComparisonOperator"] == operator


def test_the_alarm_set_is_every_alarm(template: dict[str, Any]) -> None:
    assert {alarm_id for alarm_id, *_ in ALARM_SET} == {i for i, r in template["Resources"].items() if r["Type"] == ALARM}


def test_the_sync_alarms_watch_the_producer_and_the_monitor(template: dict[str, Any]) -> None:
    """Which function or queue each AWS-metric alarm names, and the missing-sync alarm's 26 hours:
    hourly periods, all of them breaching, as wide as the monitor's window."""
    from earnings_sync.sync_watch import DEFAULT_GRACE, DEFAULT_WINDOW

    resources = template["Resources"]
    assert resources["ProducerErrorsAlarm"]["Properties"]["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "ProducerFunction"}}]
    (queue,) = resources["ProducerFailureQueueNotEmptyAlarm"]["Properties"]["Dimensions"]
    assert queue["Value"] == {"Fn::GetAtt": ["ProducerFailureQueue", "QueueName"]}
    missing = resources["NoCompletedSyncAlarm"]["Properties"]
    assert missing["Period"] * missing["EvaluationPeriods"] == DEFAULT_WINDOW.total_seconds() == 26 * 3600
    assert missing["DatapointsToAlarm"] == missing["EvaluationPeriods"] and missing["Statistic"] == "Sum"
    # CloudWatch refuses an evaluation range over one day for periods under an hour, and over 7 days.
    assert missing["Period"] >= 3600 and missing["Period"] * missing["EvaluationPeriods"] <= 7 * 86400
    incomplete = resources["SyncIncompleteAlarm"]["Properties"]
    assert incomplete["Period"] == DEFAULT_GRACE.total_seconds() and incomplete["Statistic"] == "Maximum"


def test_the_rate_alarms_compute_the_documented_ratios(template: dict[str, Any]) -> None:
    def expression(alarm_id: str) -> tuple[str, dict[str, str]]:
        alarm = template["Resources"][alarm_id]
        names = {i: m["MetricName"] for i, m, _ in alarm_metrics(alarm)}
        (text,) = [q["Expression"] for q in alarm["Properties"]["Metrics"] if "Expression" in q]
        return text, names

    def evaluate(alarm_id: str, values: dict[str, float]) -> float:
        text, names = expression(alarm_id)
        return eval(text, {"__builtins__": {}, "MAX": lambda xs: max(xs)}, {i: values[n] for i, n in names.items()})  # noqa: S307

    assert evaluate("WriteFailureRateAlarm", {M.WRITE_FAILURES: 6, M.RECORDS_WRITTEN: 50, M.RECORDS_UNCHANGED: 40, M.STALE_SYNC_SKIPPED: 4}) == 6
    assert evaluate("ConsistencyFailureRateAlarm", {M.VALIDATION_FAILED: 1, M.VALIDATION_PASSED: 19}) == 5
    assert evaluate("UpcomingQueryFailureRateAlarm", {M.UPCOMING_INDEX_FAILURES: 1, M.UPCOMING_REQUEST_FAILURES: 1, M.UPCOMING_REQUESTS: 10}) == 20
    assert evaluate("BatchDurationAlarm", {M.BATCH_DURATION: 29000, M.STREAM_BATCH_DURATION: 51000}) == 51000


def test_the_dashboard_shows_every_alarm_and_only_published_metrics(template: dict[str, Any]) -> None:
    context = fake_context(template)
    body = json.loads(resolve(template["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"], context))
    alarms = {i for i, r in template["Resources"].items() if r["Type"] == ALARM}
    arns = [arn for w in body["widgets"] if w["type"] == "alarm" for arn in w["properties"]["alarms"]]
    assert sorted(arns) == sorted(context["attributes"][i]["Arn"] for i in alarms)
    names: set[str] = set()
    for widget in body["widgets"]:
        for row in widget["properties"].get("metrics", []):
            namespace, name, dimension, value = row[:4]
            if namespace == NAMESPACE:
                assert (dimension, value) == ("service", SERVICE)
                names.add(spec_for(name).name)
            else:
                allowed, expected_dimension, resource_type = AWS_METRIC_DIMENSIONS[namespace]
                assert name in allowed and dimension == expected_dimension
                owners = [i for i in template["Resources"] if value in (f"{i}-id", f"{i}-name")]
                assert owners and template["Resources"][owners[0]]["Type"] == resource_type, value
    for must in (
        M.RECORDS_WRITTEN, M.WRITE_FAILURES, M.BATCH_DURATION, M.THROTTLES, M.VALIDATION_FAILED, M.UPCOMING_SCAN_FALLBACKS,
        M.MEMORY_UTILIZATION, M.INVALID_MESSAGES, M.CHANGE_EVENTS_PUBLISHED, M.CHANGE_EVENT_PUBLISH_FAILURES,
    ):
        assert must in names


# --------------------------------------------------------------------------- docs


def test_the_readme_and_the_template_give_the_conditional_path_the_same_cost(template: dict[str, Any]) -> None:
    description = " ".join(template["Parameters"]["WriteMode"]["Description"].split())
    (factor,) = re.findall(r"about (\d+)x the requests", description)
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert re.findall(r"about (\d+)× the requests", readme) == [factor]


PERMISSION_ROWS = {
    Handler.PRODUCER: "producer",
    Handler.CONSUMER: "consumer",
    Handler.STREAM_CONSUMER: "stream consumer",
    Handler.UPCOMING: "upcoming reader",
    Handler.SYNC_MONITOR: "sync monitor",
}


def test_the_operations_guide_lists_every_action_each_role_is_granted(template: dict[str, Any]) -> None:
    """docs/operations.md, "Permissions": one row per function naming every action its role has."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    section = guide[guide.index("## Permissions") :]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    for function_id, handler in functions(template).items():
        row = rows[PERMISSION_ROWS[handler]]
        for action in sorted(iam.iam_actions(handler) | mapping_needs(template, function_id)):
            assert f"`{action}`" in row or f"`{action.split(':')[1]}`" in row, (handler, action)


def test_the_operations_guide_covers_every_metric_and_alarm(template: dict[str, Any]) -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    for name in METRICS:
        assert f"`{name}`" in guide, name
    for alarm_id, resource in template["Resources"].items():
        if resource["Type"] == ALARM:
            assert f"`{alarm_id}`" in guide, alarm_id

