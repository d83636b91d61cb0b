"""template.yaml and its loader: tag parsing, intrinsic resolution, resources built on moto."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from earnings_sync_local.template import (
    CONSUMER_ID,
    DEFAULT_TEMPLATE,
    NO_VALUE,
    STREAM_CONSUMER_ID,
    LocalResources,
    TemplateError,
    build_context,
    create_resources,
    delete_resources,
    event_source,
    function_environment,
    function_timeout,
    load_template,
    resolve,
)

REGION = "us-east-1"
STREAM_MAPPING_ID = "StreamConsumerMapping"  # a plain AWS::Lambda::EventSourceMapping, not a SAM event


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield boto3.client("dynamodb", region_name=REGION), boto3.client("sqs", region_name=REGION)


# --------------------------------------------------------------------------- load_template


def test_default_template_is_the_repository_root_file() -> None:
    assert Path(__file__).resolve().parents[2] / "template.yaml" == DEFAULT_TEMPLATE
    assert DEFAULT_TEMPLATE.is_file()


def test_every_short_form_tag_becomes_its_long_form(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            AWSTemplateFormatVersion: 2010-09-09
            Conditions:
              C1: !Equals [!Ref P, "x"]
              C2: !Not [!Condition C1]
              C3: !And [!Condition C1, !Condition C2]
              C4: !Or [!Condition C1, !Condition C2]
            Resources:
              R:
                Type: Custom::Thing
                Properties:
                  Ref: !Ref P
                  GetAttString: !GetAtt Db.Endpoint.Address
                  GetAttList: !GetAtt [Q, Arn]
                  SubString: !Sub "a-${P}"
                  SubList: !Sub ["${X}", {X: !Ref P}]
                  Join: !Join [",", [a, b]]
                  If: !If [C1, yes-value, !Ref AWS::NoValue]
                  Select: !Select [1, !Split [",", "a,b"]]
                  FindInMap: !FindInMap [M, k1, k2]
                  Base64: !Base64 text
                  GetAZs: !GetAZs ""
                  ImportValue: !ImportValue shared-export
                  Cidr: !Cidr ["10.0.0.0/16", 2, 8]
            """
        )
    )
    doc = load_template(path)
    assert doc["AWSTemplateFormatVersion"] == "2010-09-09"  # not a datetime.date
    assert doc["Conditions"] == {
        "C1": {"Fn::Equals": [{"Ref": "P"}, "x"]},
        "C2": {"Fn::Not": [{"Condition": "C1"}]},
        "C3": {"Fn::And": [{"Condition": "C1"}, {"Condition": "C2"}]},
        "C4": {"Fn::Or": [{"Condition": "C1"}, {"Condition": "C2"}]},
    }
    assert doc["Resources"]["R"]["Properties"] == {
        "Ref": {"Ref": "P"},
        "GetAttString": {"Fn::GetAtt": ["Db", "Endpoint.Address"]},
        "GetAttList": {"Fn::GetAtt": ["Q", "Arn"]},
        "SubString": {"Fn::Sub": "a-${P}"},
        "SubList": {"Fn::Sub": ["${X}", {"X": {"Ref": "P"}}]},
        "Join": {"Fn::Join": [",", ["a", "b"]]},
        "If": {"Fn::If": ["C1", "yes-value", {"Ref": "AWS::NoValue"}]},
        "Select": {"Fn::Select": [1, {"Fn::Split": [",", "a,b"]}]},
        "FindInMap": {"Fn::FindInMap": ["M", "k1", "k2"]},
        "Base64": {"Fn::Base64": "text"},
        "GetAZs": {"Fn::GetAZs": ""},
        "ImportValue": {"Fn::ImportValue": "shared-export"},
        "Cidr": {"Fn::Cidr": ["10.0.0.0/16", 2, 8]},
    }


def test_missing_template_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="template not found"):
        load_template(tmp_path / "nope.yaml")


def test_non_template_yaml_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("just: text\n")
    with pytest.raises(TemplateError, match="no Resources"):
        load_template(path)


def test_getatt_without_attribute_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("Resources:\n  R:\n    Properties:\n      X: !GetAtt Lonely\n")
    with pytest.raises(TemplateError, match="LogicalId.Attribute"):
        load_template(path)


# --------------------------------------------------------------------------- resolve

MINI = {
    "Parameters": {
        "Name": {"Type": "String", "Default": "base"},
        "Count": {"Type": "Number", "Default": 5, "MinValue": 1},
        "Mode": {"Type": "String", "Default": "a", "AllowedValues": ["a", "b"]},
        "Empty": {"Type": "String", "Default": ""},
    },
    "Mappings": {"M": {"k1": {"k2": "mapped"}}},
    "Conditions": {
        "IsB": {"Fn::Equals": [{"Ref": "Mode"}, "b"]},
        "NotB": {"Fn::Not": [{"Condition": "IsB"}]},
        "HasEmpty": {"Fn::Not": [{"Fn::Equals": [{"Ref": "Empty"}, ""]}]},
        "Both": {"Fn::And": [{"Condition": "NotB"}, {"Fn::Equals": ["1", "1"]}]},
        "Either": {"Fn::Or": [{"Condition": "IsB"}, {"Condition": "HasEmpty"}]},
    },
    "Resources": {"Q": {"Type": "AWS::SQS::Queue"}, "T": {"Type": "AWS::DynamoDB::Table"}},
}


def _ctx(**kwargs):
    kwargs.setdefault("resources", {"Q": "https://queue/url", "T": "table-physical"})
    kwargs.setdefault(
        "attributes", {"Q": {"Arn": "arn:aws:sqs:us-east-1:123456789012:q"}, "T": {"StreamArn": "arn:stream"}}
    )
    return build_context(MINI, **kwargs)


def test_ref_parameters_pseudo_parameters_and_resources() -> None:
    ctx = _ctx(region="eu-west-1", account_id="111122223333", stack_name="s")
    assert resolve({"Ref": "Name"}, ctx) == "base"
    assert resolve({"Ref": "Count"}, ctx) == "5"  # CloudFormation hands Number parameters out as text
    assert resolve({"Ref": "AWS::Region"}, ctx) == "eu-west-1"
    assert resolve({"Ref": "AWS::AccountId"}, ctx) == "111122223333"
    assert resolve({"Ref": "AWS::Partition"}, ctx) == "aws"
    assert resolve({"Ref": "AWS::StackName"}, ctx) == "s"
    assert resolve({"Ref": "Q"}, ctx) == "https://queue/url"
    assert resolve({"Ref": "AWS::NoValue"}, ctx) is NO_VALUE
    assert resolve({"Ref": "AWS::Partition"}, _ctx(region="cn-north-1")) == "aws-cn"


def test_parameter_overrides_and_their_checks() -> None:
    ctx = _ctx(parameter_overrides={"Name": "other", "Count": 7, "Mode": "b"})
    assert resolve({"Ref": "Name"}, ctx) == "other"
    assert resolve({"Ref": "Count"}, ctx) == "7"
    assert ctx["conditions"]["IsB"] is True
    with pytest.raises(TemplateError, match="unknown parameter"):
        _ctx(parameter_overrides={"Nope": 1})
    with pytest.raises(TemplateError, match="AllowedValues"):
        _ctx(parameter_overrides={"Mode": "c"})
    with pytest.raises(TemplateError, match="MinValue"):
        _ctx(parameter_overrides={"Count": 0})
    with pytest.raises(TemplateError, match="not a number"):
        _ctx(parameter_overrides={"Count": "many"})


def test_no_value_drops_keys_and_list_items() -> None:
    value = {
        "keep": 1,
        "drop": {"Ref": "AWS::NoValue"},
        "list": [1, {"Fn::If": ["IsB", 2, {"Ref": "AWS::NoValue"}]}],
    }
    assert resolve(value, _ctx()) == {"keep": 1, "list": [1]}


def test_getatt_forms_and_unknown_attribute() -> None:
    ctx = _ctx()
    assert resolve({"Fn::GetAtt": ["Q", "Arn"]}, ctx) == "arn:aws:sqs:us-east-1:123456789012:q"
    assert resolve({"Fn::GetAtt": "T.StreamArn"}, ctx) == "arn:stream"
    with pytest.raises(TemplateError, match="Q.QueueName"):
        resolve({"Fn::GetAtt": ["Q", "QueueName"]}, ctx)


def test_sub_string_and_list_forms() -> None:
    ctx = _ctx()
    assert (
        resolve({"Fn::Sub": "arn:${AWS::Partition}:x:${AWS::Region}:${AWS::AccountId}:${Name}/${Q.Arn}"}, ctx)
        == "arn:aws:x:us-east-1:123456789012:base/arn:aws:sqs:us-east-1:123456789012:q"
    )
    assert (
        resolve({"Fn::Sub": ["${A}-${Name}", {"A": {"Ref": "Count"}, "Name": "shadowed"}]}, ctx)
        == "5-shadowed"
    )
    assert resolve({"Fn::Sub": "${!Literal}-${Name}"}, ctx) == "${Literal}-base"


def test_join_select_split_findinmap() -> None:
    ctx = _ctx()
    assert resolve({"Fn::Join": ["-", ["a", {"Ref": "Name"}, 3]]}, ctx) == "a-base-3"
    assert resolve({"Fn::Join": [",", {"Fn::Split": ["/", "x/y"]}]}, ctx) == "x,y"
    assert resolve({"Fn::Select": ["1", {"Fn::Split": [",", "a,b,c"]}]}, ctx) == "b"
    assert resolve({"Fn::Select": [0, {"Fn::Split": ["/", "/lead"]}]}, ctx) == ""
    assert resolve({"Fn::FindInMap": ["M", "k1", "k2"]}, ctx) == "mapped"
    with pytest.raises(TemplateError, match="out of range"):
        resolve({"Fn::Select": [5, ["a"]]}, ctx)


def test_conditions_if_equals_not_and_or() -> None:
    ctx = _ctx()
    assert ctx["conditions"] == {"IsB": False, "NotB": True, "HasEmpty": False, "Both": True, "Either": False}
    assert resolve({"Fn::If": ["NotB", "t", "f"]}, ctx) == "t"
    assert resolve({"Fn::Equals": [{"Ref": "Count"}, 5]}, ctx) is True
    assert resolve({"Fn::Or": [{"Condition": "IsB"}, {"Fn::Equals": ["a", "a"]}]}, ctx) is True
    assert resolve({"Fn::And": [{"Condition": "IsB"}, {"Condition": "NotB"}]}, ctx) is False
    with pytest.raises(TemplateError, match="unknown condition"):
        resolve({"Fn::If": ["Nope", 1, 2]}, ctx)


def test_circular_conditions_are_reported() -> None:
    looped = {
        "Resources": {},
        "Conditions": {"A": {"Fn::Not": [{"Condition": "B"}]}, "B": {"Fn::Not": [{"Condition": "A"}]}},
    }
    with pytest.raises(TemplateError, match="circular"):
        build_context(looped)


@pytest.mark.parametrize(
    "value",
    [
        {"Fn::GetAZs": ""},
        {"Fn::ImportValue": "x"},
        {"Fn::Cidr": ["10.0.0.0/16", 2, 8]},
        {"Ref": "Unknown"},
        {"Fn::Sub": "${Unknown}"},
    ],
)
def test_unsupported_or_unknown_raises(value: dict) -> None:
    with pytest.raises(TemplateError):
        resolve(value, _ctx())


def test_resource_without_physical_id_raises_or_is_kept() -> None:
    strict = build_context(MINI)
    with pytest.raises(TemplateError, match="physical id"):
        resolve({"Ref": "Q"}, strict)
    lenient = build_context(MINI, keep_unresolved=True)
    value = {
        "Queue": {"Fn::GetAtt": ["Q", "Arn"]},
        "Url": {"Fn::Join": ["", [{"Ref": "Q"}]]},
        "N": {"Ref": "Count"},
    }
    assert resolve(value, lenient) == {"Queue": {"Fn::GetAtt": ["Q", "Arn"]}, "Url": value["Url"], "N": "5"}


# --------------------------------------------------------------------------- the template itself


def test_consumer_timeout_times_six_fits_in_the_queue_visibility_timeout(template: dict) -> None:
    queue = template["Resources"]["EarningsQueue"]["Properties"]
    assert function_timeout(template, CONSUMER_ID) * 6 <= queue["VisibilityTimeout"]


def test_sqs_event_reports_batch_item_failures(template: dict) -> None:
    event = event_source(template, CONSUMER_ID, "SQS")
    assert "ReportBatchItemFailures" in event["FunctionResponseTypes"]
    assert event["Queue"] == {"Fn::GetAtt": ["EarningsQueue", "Arn"]}  # no resources yet: kept


def test_ssm_parameter_arn_has_exactly_one_slash(template: dict) -> None:
    statements = template["Resources"]["ProducerFunction"]["Properties"]["Policies"][0]["Statement"]
    attributes = {"EarningsQueue": {"Arn": "arn:q"}, "SyncLedgerTable": {"Arn": "arn:ledger"}}
    for name, expected in [
        ("/earnings-sync/alphavantage-api-key", "parameter/earnings-sync/alphavantage-api-key"),
        ("plain-name", "parameter/plain-name"),
    ]:
        ctx = build_context(
            template, parameter_overrides={"AlphaVantageApiKeyParameter": name}, attributes=attributes
        )
        resolved = resolve(statements, ctx)
        ssm = next(s for s in resolved if s["Action"] == "ssm:GetParameter")
        assert ssm["Resource"] == f"arn:aws:ssm:us-east-1:123456789012:{expected}"


def test_s3_statement_only_with_an_input_bucket(template: dict) -> None:
    statements = template["Resources"]["ProducerFunction"]["Properties"]["Policies"][0]["Statement"]
    attributes = {"EarningsQueue": {"Arn": "arn:q"}, "SyncLedgerTable": {"Arn": "arn:ledger"}}
    without = resolve(statements, build_context(template, attributes=attributes))
    assert all(s["Action"] != "s3:GetObject" for s in without)
    with_bucket = resolve(
        statements,
        build_context(template, parameter_overrides={"InputBucketName": "in"}, attributes=attributes),
    )
    assert {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::in/*"} in with_bucket


def test_environment_merges_globals(template: dict) -> None:
    ctx = build_context(
        template,
        parameter_overrides={"LogLevel": "DEBUG"},
        resources={"EarningsQueue": "https://q", "SyncLedgerTable": "ledger"},
    )
    env = function_environment(template, "ProducerFunction", ctx)
    assert env == {
        "POWERTOOLS_SERVICE_NAME": "earnings-sync",
        "POWERTOOLS_METRICS_NAMESPACE": "EarningsSync",
        "POWERTOOLS_LOG_LEVEL": "DEBUG",
        "QUEUE_URL": "https://q",
        "LEDGER_TABLE": "ledger",
        "ALPHAVANTAGE_API_KEY_PARAMETER": "/earnings-sync/alphavantage-api-key",
        "ALPHAVANTAGE_HORIZON": "3month",
    }


def test_event_source_reads_a_dynamodb_stream_mapping_the_same_way(template: dict) -> None:
    extended = copy.deepcopy(template)
    mapping = extended["Resources"].pop("StreamConsumerMapping")  # the SAM event replaces it here
    extended["Resources"]["StreamConsumerFunction"] = {
        "Type": "AWS::Serverless::Function",
        "Properties": {
            "Handler": "consumers.stream.lambda_handler",
            "Events": {
                "Changes": {
                    "Type": "DynamoDB",
                    "Properties": {
                        "Stream": {"Fn::GetAtt": ["EarningsTable", "StreamArn"]},
                        "StartingPosition": "LATEST",
                        "BatchSize": 100,
                    },
                }
            },
        },
    }
    ctx = build_context(extended, attributes={"EarningsTable": {"StreamArn": "arn:stream"}})
    assert event_source(extended, "StreamConsumerFunction", "DynamoDB", context=ctx) == {
        "Stream": "arn:stream",
        "StartingPosition": "LATEST",
        "BatchSize": 100,
    }
    with pytest.raises(TemplateError, match="exactly one DynamoDB event"):
        event_source(extended, CONSUMER_ID, "DynamoDB")
    extended["Resources"]["StreamConsumerMapping"] = mapping  # both: Lambda would get two mappings
    with pytest.raises(TemplateError, match="exactly one DynamoDB event, found 2"):
        event_source(extended, "StreamConsumerFunction", "DynamoDB", context=ctx)


# --------------------------------------------------------------------------- create_resources on moto


def test_create_resources_builds_what_the_template_says(template: dict, aws) -> None:
    dynamodb, sqs = aws
    res = create_resources(template, dynamodb, sqs, name_prefix="unit-")
    assert isinstance(res, LocalResources)
    queue_props = template["Resources"]["EarningsQueue"]["Properties"]
    max_receive = template["Parameters"]["MaxReceiveCount"]["Default"]

    attrs = sqs.get_queue_attributes(QueueUrl=res.queue_url, AttributeNames=["All"])["Attributes"]
    assert res.queue_url.endswith("/unit-earnings-queue")
    assert json.loads(attrs["RedrivePolicy"]) == {
        "deadLetterTargetArn": res.dlq_arn,
        "maxReceiveCount": max_receive,
    }
    assert int(attrs["VisibilityTimeout"]) == queue_props["VisibilityTimeout"] == res.queue_visibility_timeout
    assert int(attrs["MessageRetentionPeriod"]) == queue_props["MessageRetentionPeriod"]
    assert attrs["SqsManagedSseEnabled"] == "true"
    dlq = sqs.get_queue_attributes(QueueUrl=res.dlq_url, AttributeNames=["All"])["Attributes"]
    assert dlq["QueueArn"] == res.dlq_arn and res.dlq_url.endswith("/unit-earnings-dlq")
    assert (
        int(dlq["MessageRetentionPeriod"])
        == template["Resources"]["EarningsDLQ"]["Properties"]["MessageRetentionPeriod"]
    )

    table = dynamodb.describe_table(TableName=res.table_name)["Table"]
    assert res.table_name == "unit-earningsCalendar" and table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [
        {"AttributeName": "asset_symbol", "KeyType": "HASH"},
        {"AttributeName": "earnings_date", "KeyType": "RANGE"},
    ]
    (gsi,) = table["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "upcoming-earnings-index"
    assert gsi["KeySchema"] == [
        {"AttributeName": "earnings_date", "KeyType": "HASH"},
        {"AttributeName": "asset_symbol", "KeyType": "RANGE"},
    ]
    assert gsi["Projection"]["ProjectionType"] == "INCLUDE"
    assert "lastSyncDate" not in gsi["Projection"]["NonKeyAttributes"]  # confirmations cost no index write
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert table["LatestStreamArn"] == res.stream_arn and res.table_arn == table["TableArn"]
    for table_name in res.tables.values():  # both tables: point-in-time recovery, deletion protection
        backups = dynamodb.describe_continuous_backups(TableName=table_name)["ContinuousBackupsDescription"]
        assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED", table_name
        assert dynamodb.describe_table(TableName=table_name)["Table"]["DeletionProtectionEnabled"] is True, table_name
    with pytest.raises(ClientError, match="DeletionProtectionEnabled"):
        dynamodb.delete_table(TableName=res.table_name)
    # every queue of the template, the producer's failure destination included, as the template says
    assert set(res.queues) == {i for i, r in template["Resources"].items() if r["Type"] == "AWS::SQS::Queue"}
    failures = sqs.get_queue_attributes(QueueUrl=res.queues["ProducerFailureQueue"], AttributeNames=["All"])["Attributes"]
    assert res.queues["ProducerFailureQueue"].endswith("/unit-earnings-producer-failure-queue")
    assert int(failures["MessageRetentionPeriod"]) == 1209600 and failures["SqsManagedSseEnabled"] == "true"

    assert res.max_receive_count == max_receive
    assert res.consumer_batch_size == 10
    assert res.consumer_function_response_types == ("ReportBatchItemFailures",)
    assert res.consumer_timeout == 30
    consumer_env = res.environments[CONSUMER_ID]
    assert consumer_env["TABLE_NAME"] == res.table_name
    assert consumer_env["DLQ_URL"] == res.dlq_url
    assert res.environments["ProducerFunction"]["QUEUE_URL"] == res.queue_url


def test_each_function_handler_comes_from_the_template_globals_included(template: dict, aws) -> None:
    dynamodb, sqs = aws
    changed = copy.deepcopy(template)
    changed["Globals"]["Function"]["Handler"] = "shared.entry.handle"  # SAM: the function's own wins
    del changed["Resources"]["ConsumerFunction"]["Properties"]["Handler"]
    res = create_resources(changed, dynamodb, sqs, name_prefix="h-")
    functions = {k: r for k, r in template["Resources"].items() if r.get("Type") == "AWS::Serverless::Function"}
    assert set(res.handlers) == set(functions) >= {"ProducerFunction", CONSUMER_ID, STREAM_CONSUMER_ID}
    assert res.handlers[CONSUMER_ID] == "shared.entry.handle"
    assert all(res.handlers[k] == r["Properties"]["Handler"] for k, r in functions.items() if k != CONSUMER_ID)


def test_max_receive_count_override_reaches_redrive_policy_and_consumer_env(template: dict, aws) -> None:
    dynamodb, sqs = aws
    res = create_resources(
        template, dynamodb, sqs, name_prefix="ovr-", parameter_overrides={"MaxReceiveCount": 2}
    )
    attrs = sqs.get_queue_attributes(QueueUrl=res.queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    assert json.loads(attrs["RedrivePolicy"])["maxReceiveCount"] == 2
    assert res.max_receive_count == 2
    assert res.environments[CONSUMER_ID]["MAX_RECEIVE_COUNT"] == "2"


def test_runs_with_different_prefixes_share_an_endpoint_and_reruns_reuse(template: dict, aws) -> None:
    dynamodb, sqs = aws
    first = create_resources(template, dynamodb, sqs, name_prefix="a-")
    second = create_resources(template, dynamodb, sqs, name_prefix="b-")
    assert len({first.table_name, second.table_name}) == 2
    assert len({first.queue_url, second.queue_url, first.dlq_url, second.dlq_url}) == 4
    again = create_resources(template, dynamodb, sqs, name_prefix="a-")
    assert (again.table_name, again.queue_url, again.dlq_url) == (
        first.table_name,
        first.queue_url,
        first.dlq_url,
    )

    delete_resources(first, dynamodb, sqs)
    assert sorted(dynamodb.list_tables()["TableNames"]) == sorted(second.tables.values())
    assert second.tables == {"EarningsTable": "b-earningsCalendar", "SyncLedgerTable": "b-earningsCalendar-sync-ledger"}
    assert sorted(sqs.list_queues()["QueueUrls"]) == sorted(second.queues.values())
    assert set(second.queues) == {"EarningsDLQ", "EarningsQueue", "StreamFailureQueue", "ProducerFailureQueue"}


def test_deletion_protection_follows_its_parameter(template: dict, aws) -> None:
    dynamodb, sqs = aws
    res = create_resources(template, dynamodb, sqs, name_prefix="off-", parameter_overrides={"TableDeletionProtection": "false"})
    assert {dynamodb.describe_table(TableName=name)["Table"]["DeletionProtectionEnabled"] for name in res.tables.values()} == {False}
    changed = copy.deepcopy(template)
    changed["Resources"]["EarningsTable"]["Properties"]["DeletionProtectionEnabled"] = "yes"
    with pytest.raises(TemplateError, match="EarningsTable.DeletionProtectionEnabled: expected true or false"):
        create_resources(changed, dynamodb, sqs, name_prefix="bad-")


def test_table_name_override(template: dict, aws) -> None:
    dynamodb, sqs = aws
    res = create_resources(
        template, dynamodb, sqs, name_prefix="x-", parameter_overrides={"TableName": "other"}
    )
    assert res.table_name == "x-other"
    assert res.environments[CONSUMER_ID]["TABLE_NAME"] == "x-other"


def test_an_unknown_table_property_is_not_silently_ignored(template: dict, aws) -> None:
    dynamodb, sqs = aws
    changed = copy.deepcopy(template)
    changed["Resources"]["EarningsTable"]["Properties"]["KinesisStreamSpecification"] = {"StreamArn": "arn:k"}
    with pytest.raises(TemplateError, match="KinesisStreamSpecification"):
        create_resources(changed, dynamodb, sqs)


# --------------------------------------------------------------------------- the stream consumer


def test_stream_mapping_settings_come_from_the_template(template: dict, aws) -> None:
    dynamodb, sqs = aws
    res = create_resources(template, dynamodb, sqs, name_prefix="s-")
    event = template["Resources"][STREAM_MAPPING_ID]["Properties"]
    mapping = res.stream_mapping
    assert mapping is not None and mapping.stream_arn == res.stream_arn
    assert mapping.starting_position == event["StartingPosition"] == "TRIM_HORIZON"
    assert mapping.batch_size == event["BatchSize"]
    assert mapping.bisect_on_error is event["BisectBatchOnFunctionError"] is True
    assert mapping.maximum_retry_attempts == event["MaximumRetryAttempts"]
    assert mapping.maximum_record_age_seconds == event["MaximumRecordAgeInSeconds"]
    assert mapping.function_response_types == ("ReportBatchItemFailures",)
    assert mapping.function_timeout == template["Resources"][STREAM_CONSUMER_ID]["Properties"]["Timeout"]
    assert mapping.on_failure_arn == res.stream_failure_queue_arn
    assert mapping.on_failure_url == res.stream_failure_queue_url
    assert res.stream_failure_queue_url.endswith("/s-earnings-stream-failures")
    attrs = sqs.get_queue_attributes(QueueUrl=res.stream_failure_queue_url, AttributeNames=["All"])["Attributes"]
    props = template["Resources"]["StreamFailureQueue"]["Properties"]
    assert int(attrs["MessageRetentionPeriod"]) == props["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert attrs["SqsManagedSseEnabled"] == "true"
    assert res.environments[STREAM_CONSUMER_ID]["TABLE_NAME"] == res.table_name


def test_a_changed_batch_size_reaches_the_mapping(template: dict, aws) -> None:
    dynamodb, sqs = aws
    changed = copy.deepcopy(template)
    event = changed["Resources"][STREAM_MAPPING_ID]["Properties"]
    event["BatchSize"] = 7
    del event["BisectBatchOnFunctionError"], event["MaximumRetryAttempts"]
    mapping = create_resources(changed, dynamodb, sqs).stream_mapping
    assert mapping.batch_size == 7
    assert mapping.bisect_on_error is False and mapping.maximum_retry_attempts == -1  # Lambda's defaults


def test_stream_consumer_policy_is_least_privilege(template: dict) -> None:
    props = template["Resources"][STREAM_CONSUMER_ID]["Properties"]
    ctx = build_context(
        template,
        resources={"EarningsTable": "t"},
        attributes={
            "EarningsTable": {"Arn": "arn:table", "StreamArn": "arn:stream"},
            "StreamFailureQueue": {"Arn": "arn:failures"},
            "SyncLedgerTable": {"Arn": "arn:ledger"},
            "ChangeEventBus": {"Arn": "arn:bus"},
        },
    )
    statements = resolve(props["Policies"], ctx)[0]["Statement"]
    granted = {}
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for action in actions:
            granted.setdefault(action, set()).add(statement["Resource"])
    assert granted == {
        "dynamodb:Query": {"arn:table"},
        "dynamodb:DeleteItem": {"arn:table"},
        "dynamodb:PutItem": {"arn:table"},
        "dynamodb:GetItem": {"arn:ledger"},  # the sync registry
        "sqs:SendMessage": {"arn:failures"},
        "events:PutEvents": {"arn:bus"},  # change events, on the one bus
        # the stream mapping's reads (a plain mapping resource: no SAM-attached Resource "*" policy)
        "dynamodb:DescribeStream": {"arn:stream"},
        "dynamodb:GetRecords": {"arn:stream"},
        "dynamodb:GetShardIterator": {"arn:stream"},
        "dynamodb:ListStreams": {"arn:table/stream/*"},
    }
    event = event_source(template, STREAM_CONSUMER_ID, "DynamoDB", context=ctx)
    assert event["DestinationConfig"]["OnFailure"]["Destination"] == "arn:failures"
    assert event["Stream"] == "arn:stream"
    assert "StreamConsumerLogGroup" in template["Resources"]


def test_the_change_event_bus_is_created_unless_an_existing_one_is_named(template: dict, aws) -> None:
    dynamodb, sqs = aws
    events = boto3.client("events", region_name=REGION)
    res = create_resources(template, dynamodb, sqs, name_prefix="ev-", events_client=events)
    bus = events.describe_event_bus(Name="ev-earnings-sync")
    assert res.event_bus_created and res.event_bus_name == bus["Name"] == "ev-earnings-sync"
    assert res.environments[STREAM_CONSUMER_ID]["EVENT_BUS_NAME"] == "ev-earnings-sync"
    assert create_resources(template, dynamodb, sqs, name_prefix="ev-").event_bus_name == "ev-earnings-sync"  # a rerun reuses it
    events.put_rule(Name="someone-elses", EventBusName="ev-earnings-sync", EventPattern='{"source": ["earnings-sync"]}')
    delete_resources(res, dynamodb, sqs, events)  # with the rules on it
    assert [b["Name"] for b in events.list_event_buses()["EventBuses"]] == ["default"]

    by_name = create_resources(template, dynamodb, sqs, name_prefix="x-", parameter_overrides={"ExistingEventBus": "shared-bus"})
    assert not by_name.event_bus_created and by_name.event_bus_name == "shared-bus"
    assert [b["Name"] for b in events.list_event_buses()["EventBuses"]] == ["default"]
    arn = "arn:aws:events:us-east-1:123456789012:event-bus/shared-bus"
    ctx = build_context(template, parameter_overrides={"ExistingEventBus": arn}, keep_unresolved=True)
    statements = resolve(template["Resources"][STREAM_CONSUMER_ID]["Properties"]["Policies"], ctx)[0]["Statement"]
    assert [s["Resource"] for s in statements if s["Action"] == "events:PutEvents"] == [arn]
    ctx = build_context(template, parameter_overrides={"ExistingEventBus": "shared-bus"}, keep_unresolved=True)
    statements = resolve(template["Resources"][STREAM_CONSUMER_ID]["Properties"]["Policies"], ctx)[0]["Statement"]
    assert [s["Resource"] for s in statements if s["Action"] == "events:PutEvents"] == [arn]
    with pytest.raises(TemplateError, match="ExistingEventBus"):
        build_context(template, parameter_overrides={"ExistingEventBus": "no spaces, please"})


def test_a_template_without_stream_consumer_has_no_mapping(template: dict, aws) -> None:
    dynamodb, sqs = aws
    trimmed = copy.deepcopy(template)
    for logical_id in (STREAM_CONSUMER_ID, "StreamFailureQueue", "StreamConsumerLogGroup"):
        del trimmed["Resources"][logical_id]
    res = create_resources(trimmed, dynamodb, sqs)
    assert res.stream_mapping is None and res.stream_failure_queue_url is None


def test_scan_fallback_projects_what_the_index_projects() -> None:
    from earnings_sync.calendar_table import INDEX_ATTRIBUTES

    gsi = load_template()["Resources"]["EarningsTable"]["Properties"]["GlobalSecondaryIndexes"][0]
    keys = [k["AttributeName"] for k in gsi["KeySchema"]]
    assert set(INDEX_ATTRIBUTES) == set(keys) | set(gsi["Projection"]["NonKeyAttributes"])
