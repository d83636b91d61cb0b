"""The embedded emulator's speedups answer exactly what moto's own code answers, every one of them
is off under the comparison switch, and the emulator leaves moto stock when it stops."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from earnings_sync_cli.main import main
from earnings_sync_local import emulator, moto_speedups
from earnings_sync_local.pipeline import run_local
from tests.conftest import csv_text


def _page_through(client: Any, **request: Any) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    while True:
        response = client.query(**request)
        found.extend((i["asset_symbol"]["S"], i["earnings_date"]["S"]) for i in response["Items"])
        if "LastEvaluatedKey" not in response:
            return found
        request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def test_queries_answer_the_same_with_and_without_the_speedup(aws: dict[str, Any]) -> None:
    client, name = aws["dynamodb"], aws["resources"].table_name
    for symbol in ("A", "B", "C"):
        for day in ("2025-08-03", "2025-08-01", "2025-08-02"):
            client.put_item(
                TableName=name,
                Item={"asset_symbol": {"S": symbol}, "earnings_date": {"S": day}, "fiscal_date_ending": {"S": "2025-06-30" if day != "2025-08-02" else "2025-03-31"}},
            )
    requests = [
        {"KeyConditionExpression": "asset_symbol = :s", "ExpressionAttributeValues": {":s": {"S": "B"}}, "Limit": 2},
        {
            "KeyConditionExpression": "asset_symbol = :s AND earnings_date > :d",
            "ExpressionAttributeValues": {":s": {"S": "B"}, ":d": {"S": "2025-08-01"}},
            "ScanIndexForward": False,
        },
        {
            "KeyConditionExpression": "asset_symbol = :s",
            "FilterExpression": "fiscal_date_ending = :f",
            "ExpressionAttributeValues": {":s": {"S": "C"}, ":f": {"S": "2025-06-30"}},
            "ConsistentRead": True,
        },
        {"KeyConditionExpression": "asset_symbol = :s", "ExpressionAttributeValues": {":s": {"S": "nobody"}}},
        {"IndexName": "upcoming-earnings-index", "KeyConditionExpression": "earnings_date = :d", "ExpressionAttributeValues": {":d": {"S": "2025-08-02"}}, "Limit": 2},
    ]
    answers = [_page_through(client, TableName=name, **dict(request)) for request in requests]
    with moto_speedups.moto_as_shipped():
        assert [_page_through(client, TableName=name, **dict(request)) for request in requests] == answers
    assert answers == [
        [("B", "2025-08-01"), ("B", "2025-08-02"), ("B", "2025-08-03")],
        [("B", "2025-08-03"), ("B", "2025-08-02")],
        [("C", "2025-08-01"), ("C", "2025-08-03")],
        [],
        [("A", "2025-08-02"), ("B", "2025-08-02"), ("C", "2025-08-02")],
    ]
    scanned = client.scan(TableName=name)["Count"]
    assert scanned == 9  # everything else still sees the whole table


def _index_window(client: Any, name: str, day: str, **extra: Any) -> list[tuple[str, str]]:
    return _page_through(
        client,
        TableName=name,
        IndexName="upcoming-earnings-index",
        KeyConditionExpression="earnings_date = :d" + extra.pop("and_range", ""),
        ExpressionAttributeValues={":d": {"S": day}, **extra.pop("values", {})},
        **extra,
    )


def test_index_queries_read_only_the_matching_items_in_index_order(aws: dict[str, Any]) -> None:
    client, name = aws["dynamodb"], aws["resources"].table_name
    for symbol in ("MSFT", "AAPL", "IBM", "ZZ", "A"):
        for day in ("2025-08-02", "2025-08-01"):
            client.put_item(TableName=name, Item={"asset_symbol": {"S": symbol}, "earnings_date": {"S": day}, "fiscal_date_ending": {"S": "2025-06-30"}})
    assert _index_window(client, name, "2025-08-02", Limit=2) == [(s, "2025-08-02") for s in ("A", "AAPL", "IBM", "MSFT", "ZZ")]
    assert _index_window(client, name, "2025-08-01", ScanIndexForward=False) == [(s, "2025-08-01") for s in ("ZZ", "MSFT", "IBM", "AAPL", "A")]
    assert _index_window(client, name, "2025-08-01", and_range=" AND asset_symbol > :s", values={":s": {"S": "B"}}) == [
        ("IBM", "2025-08-01"),
        ("MSFT", "2025-08-01"),
        ("ZZ", "2025-08-01"),
    ]
    assert _index_window(client, name, "2025-08-03") == []


def _raw_bodies(client: Any) -> list[Any]:
    """Every response body this client receives, as JSON, in order."""
    bodies: list[Any] = []
    client.meta.events.register("after-call.*.*", lambda http_response, **_: bodies.append(json.loads(http_response.content or b"{}")))
    return bodies


def _read_everything(dynamodb: Any, streams: Any, name: str) -> None:
    key = {"asset_symbol": {"S": "ACME"}, "earnings_date": {"S": "2025-08-01"}}
    dynamodb.get_item(TableName=name, Key=key, ReturnConsumedCapacity="TOTAL")
    dynamodb.batch_get_item(RequestItems={name: {"Keys": [key, {**key, "asset_symbol": {"S": "NONE"}}], "ConsistentRead": True}}, ReturnConsumedCapacity="INDEXES")
    dynamodb.query(TableName=name, KeyConditionExpression="asset_symbol = :s", ExpressionAttributeValues={":s": {"S": "ACME"}}, ReturnConsumedCapacity="TOTAL")
    dynamodb.query(TableName=name, IndexName="upcoming-earnings-index", KeyConditionExpression="earnings_date = :d", ExpressionAttributeValues={":d": {"S": "2025-08-01"}}, Limit=1)
    dynamodb.scan(TableName=name, Limit=1)
    dynamodb.scan(TableName=name, Select="COUNT")
    dynamodb.describe_table(TableName=name)  # timestamps and nested structures
    stream_arn = dynamodb.describe_table(TableName=name)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    streams.get_records(ShardIterator=iterator)


def test_direct_json_answers_what_the_serializer_answers(aws: dict[str, Any]) -> None:
    import boto3

    dynamodb, name = aws["dynamodb"], aws["resources"].table_name
    streams = boto3.client("dynamodbstreams", region_name="us-east-1", endpoint_url=aws["endpoint"])
    every_type = {
        "asset_symbol": {"S": "ACME"},
        "earnings_date": {"S": "2025-08-01"},
        "estimate": {"N": "1.370"},
        "nothing": {"NULL": True},
        "flag": {"BOOL": False},
        "blob": {"B": b"\x00\xffbytes"},
        "blobs": {"BS": [b"a", b"b"]},
        "names": {"SS": ["x", "y"]},
        "numbers": {"NS": ["1", "2.5"]},
        "nested": {"M": {"list": {"L": [{"S": "v"}, {"N": "3"}, {"M": {}}]}, "empty": {"S": ""}}},
    }
    dynamodb.put_item(TableName=name, Item=every_type)
    old = dynamodb.put_item(TableName=name, Item={**every_type, "estimate": {"N": "2"}}, ReturnValues="ALL_OLD", ReturnConsumedCapacity="TOTAL")
    assert old["Attributes"]["blob"] == {"B": b"\x00\xffbytes"}
    dynamodb.put_item(TableName=name, Item={"asset_symbol": {"S": "BETA"}, "earnings_date": {"S": "2025-08-01"}})
    dynamodb.delete_item(TableName=name, Key={"asset_symbol": {"S": "BETA"}, "earnings_date": {"S": "2025-08-01"}})

    bodies = _raw_bodies(dynamodb)
    stream_bodies = _raw_bodies(streams)
    _read_everything(dynamodb, streams, name)
    direct, bodies[:], stream_bodies[:] = bodies + stream_bodies, [], []
    with moto_speedups.moto_as_shipped():
        _read_everything(dynamodb, streams, name)
    serialized = bodies + stream_bodies
    assert len(direct) == len(serialized) == 11
    for answer in (direct[-1], serialized[-1], direct[-2], serialized[-2]):
        assert answer.pop("NextShardIterator" if "Records" in answer else "ShardIterator").startswith("arn:aws:dynamodb:")  # fresh each call
    assert direct == serialized
    records = direct[-1]["Records"]
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "INSERT", "REMOVE"]
    assert isinstance(records[0]["dynamodb"]["ApproximateCreationDateTime"], (int, float))


def test_sqs_retention_and_content_deduplication_still_apply(aws: dict[str, Any]) -> None:
    from moto.sqs.models import sqs_backends

    sqs = aws["sqs"]
    queues = sqs_backends["123456789012"]["us-east-1"].queues

    def dedup_and_retention(name: str) -> tuple[Any, ...]:
        fifo = sqs.create_queue(QueueName=f"{name}.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
        for _ in range(2):
            sqs.send_message(QueueUrl=fifo, MessageBody="same body", MessageGroupId="g")
        fifo_count = sqs.get_queue_attributes(QueueUrl=fifo, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"]
        plain = sqs.create_queue(QueueName=name, Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        sqs.send_message(QueueUrl=plain, MessageBody="old")
        sqs.send_message(QueueUrl=plain, MessageBody="new")
        queues[name]._messages[0].sent_timestamp -= 61_000  # sent 61 s ago: past its retention period
        bodies = [m["Body"] for m in sqs.receive_message(QueueUrl=plain, MaxNumberOfMessages=10).get("Messages", [])]
        counts = sqs.get_queue_attributes(QueueUrl=plain, AttributeNames=["All"])["Attributes"]
        return fifo_count, bodies, counts["ApproximateNumberOfMessages"], counts["ApproximateNumberOfMessagesNotVisible"]

    patched = dedup_and_retention("patched")
    # one deduplicated; moto stops at the first expired message, as it always did; both still counted
    assert patched == ("1", [], "1", "1")
    with moto_speedups.moto_as_shipped():
        assert dedup_and_retention("shipped") == patched


def test_rule_targets_and_receipt_handles_answer_as_moto_does(aws: dict[str, Any]) -> None:
    """Events delivered through a rule to a queue carry what moto's own code delivers, and receipt
    handles keep moto's alphabet and length."""
    import boto3
    import jsonpath_ng.ext

    events = boto3.client("events", region_name="us-east-1", endpoint_url=aws["endpoint"])
    sqs = aws["sqs"]

    def deliver(name: str) -> tuple[list[dict[str, Any]], list[str]]:
        events.create_event_bus(Name=name)
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name=name, EventBusName=name, EventPattern=json.dumps({"source": ["earnings-sync"]}))
        events.put_targets(Rule=name, EventBusName=name, Targets=[{"Id": "q", "Arn": arn}])
        entries = [
            {"EventBusName": name, "Source": "earnings-sync", "DetailType": "Earnings Updated", "Detail": json.dumps({"n": n, "s": "é"})}
            for n in range(5)
        ]
        assert events.put_events(Entries=entries)["FailedEntryCount"] == 0
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        bodies = [json.loads(m["Body"]) for m in received]
        for body in bodies:  # which run delivered it
            for field in ("id", "time"):
                body.pop(field)
        return sorted(bodies, key=lambda b: b["detail"]["n"]), [m["ReceiptHandle"] for m in received]

    patched, handles = deliver("patched")
    assert jsonpath_ng.ext.parse("$.detail") is jsonpath_ng.ext.parse("$.detail")  # parsed once
    with moto_speedups.moto_as_shipped():
        shipped, shipped_handles = deliver("shipped")
        assert jsonpath_ng.ext.parse("$.detail") is not jsonpath_ng.ext.parse("$.detail")
    assert [b["detail"] for b in patched] == [{"n": n, "s": "é"} for n in range(5)]
    assert patched == shipped
    for run in (handles, shipped_handles):
        assert len(set(run)) == len(run) == 5
        assert all(len(h) == 185 and h.isascii() and h.isalpha() and h.islower() for h in run)


def test_values_the_direct_encoder_does_not_understand_go_to_the_serializer() -> None:
    import botocore.session
    import pytest

    model = botocore.session.get_session().get_service_model("dynamodb")
    output = model.operation_model("GetItem").output_shape
    for value in (
        {"item": {}},  # a snake_case key: moto's attribute picker may map it
        {"Item": {"a": None}},  # a map value of None: the serializer drops the key
        {"Item": {"a": {"L": [None]}}},  # a list item of None
    ):
        with pytest.raises(moto_speedups._Fallback):
            moto_speedups._encode(_FakeSerializer(), value, output)
    serializer = _FakeSerializer()
    encoded = moto_speedups._encode(serializer, {"Item": {"a": {"S": "x"}}, "ConsumedCapacity": {"TableName": "t", "CapacityUnits": 1.5}}, output)
    assert encoded == {"Item": {"a": {"S": "x"}}, "ConsumedCapacity": {"TableName": "t", "CapacityUnits": 1.5}}
    assert serializer.calls == 1  # the double went to the serializer's own code
    with pytest.raises(moto_speedups._Fallback):  # ...which may decline to write it
        moto_speedups._encode(_FakeSerializer(store=False), {"ConsumedCapacity": {"CapacityUnits": 1.5}}, output)


def test_outputs_whose_members_the_picker_may_read_from_a_sibling_key_keep_the_serializer() -> None:
    from moto.core.responses import get_service_model
    from moto.core.serialize import JSONSerializer, XFormedAttributePicker

    def output(service: str, operation: str) -> Any:
        return get_service_model(service).operation_model(operation)

    for service in ("dynamodb", "dynamodbstreams", "sqs"):
        model = get_service_model(service)
        assert all(moto_speedups._picks_own_keys(model.operation_model(name).output_shape) for name in model.operation_names if model.operation_model(name).output_shape)
    # CloudWatch Logs' LogGroup: moto reads `logGroupArn` from an `arn` key (prefix alias "Arn", snake_cased)
    describe = output("logs", "DescribeLogGroups")
    assert not moto_speedups._picks_own_keys(describe.output_shape)
    answer = {"logGroups": [{"logGroupName": "g", "arn": "arn:aws:logs:us-east-1:123456789012:log-group:g"}]}

    def body() -> Any:
        return json.loads(JSONSerializer(describe, value_picker=XFormedAttributePicker()).serialize(answer)["body"])

    patched = body()
    with moto_speedups.moto_as_shipped():
        assert body() == patched
    assert patched["logGroups"][0]["logGroupArn"] == answer["logGroups"][0]["arn"]


class _FakeSerializer:
    """Stands in for moto's serializer on the values the direct encoder hands over."""

    def __init__(self, store: bool = True) -> None:
        self.calls, self.store = 0, store

    def _serialize(self, wrapper: dict, value: Any, shape: Any, key: str) -> None:
        self.calls += 1
        if self.store:
            wrapper[key] = value


def test_scans_and_queries_page_as_moto_does(aws: dict[str, Any]) -> None:
    client, name = aws["dynamodb"], aws["resources"].table_name
    for n in range(60):
        symbol = f"S{n % 7}" if n % 5 else f"Z{n}"
        client.put_item(TableName=name, Item={"asset_symbol": {"S": symbol}, "earnings_date": {"S": f"2025-{8 + n // 28:02d}-{n % 28 + 1:02d}"}, "n": {"N": str(n)}})

    def scan_pages(**request: Any) -> list[Any]:
        pages = []
        while True:
            response = client.scan(TableName=name, **request)
            pages.append((response.get("Items"), response["Count"], response["ScannedCount"], response.get("LastEvaluatedKey")))
            if "LastEvaluatedKey" not in response:
                return pages
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    requests = [
        {"Limit": 7},
        {"Limit": 11, "FilterExpression": "n > :n", "ExpressionAttributeValues": {":n": {"N": "20"}}},
        {"Select": "COUNT"},
        {"Limit": 5, "Segment": 1, "TotalSegments": 2},
        {"Limit": 9, "ExclusiveStartKey": {"asset_symbol": {"S": "S3"}, "earnings_date": {"S": "2025-08-04"}}},
    ]
    patched = [scan_pages(**dict(r)) for r in requests]
    windows = [_index_window(client, name, f"2025-08-{d:02d}", Limit=2) for d in (1, 2, 28)]
    with moto_speedups.moto_as_shipped():
        assert [scan_pages(**dict(r)) for r in requests] == patched
        assert [_index_window(client, name, f"2025-08-{d:02d}", Limit=2) for d in (1, 2, 28)] == windows
    assert sum(len(items or []) for items, *_ in patched[0]) == 60
    assert len(patched[0]) == 9  # 60 items, 7 a page


@pytest.fixture
def counted_queue_scans(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """One entry per time moto counts a queue's visible messages (what every full attribute read does)."""
    from moto.sqs.models import Queue

    counts: list[str] = []
    count_visible = Queue.approximate_number_of_messages.fget

    def counted(queue: Any) -> int:
        counts.append(queue.name)
        return count_visible(queue)

    monkeypatch.setattr(Queue, "approximate_number_of_messages", property(counted))
    yield counts


def test_the_switch_turns_the_sqs_patch_off_too(aws: dict[str, Any], counted_queue_scans: list[str]) -> None:
    sqs = aws["sqs"]

    def send_twice_and_receive(name: str) -> list[Any]:
        """Content-based deduplication on a FIFO queue, plain delivery on a standard one."""
        fifo = sqs.create_queue(QueueName=f"{name}.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
        plain = sqs.create_queue(QueueName=name)["QueueUrl"]
        for url, extra in ((fifo, {"MessageGroupId": "g"}), (plain, {})):
            for _ in range(2):
                sqs.send_message(QueueUrl=url, MessageBody="same body", **extra)
        return [[m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])] for url in (fifo, plain)]

    assert send_twice_and_receive("patched") == [["same body"], ["same body", "same body"]]
    assert counted_queue_scans == []  # patched: sending and receiving count nothing
    with moto_speedups.moto_as_shipped():
        assert send_twice_and_receive("shipped") == [["same body"], ["same body", "same body"]]
    assert {"shipped", "shipped.fifo"} <= set(counted_queue_scans)  # moto's own code read every attribute
    assert "patched" not in counted_queue_scans


@pytest.mark.usefixtures("moto_uninstalled")
def test_the_embedded_emulator_patches_while_up_and_leaves_moto_stock() -> None:
    import boto3

    stock = {(owner, name): vars(owner).get(name) for owner, name in moto_speedups.patched_attributes()}
    with emulator.embedded_emulator() as endpoint:
        assert moto_speedups.active()
        assert boto3.client("dynamodb", endpoint_url=endpoint).list_tables()["TableNames"] == []
    assert not moto_speedups.active()
    assert all(vars(owner).get(name) is value for (owner, name), value in stock.items())


@pytest.mark.usefixtures("moto_uninstalled")
def test_run_local_leaves_moto_stock(tmp_path: Path) -> None:
    stock = {(owner, name): vars(owner).get(name) for owner, name in moto_speedups.patched_attributes()}
    path = tmp_path / "calendar.csv"
    path.write_text(csv_text("AAPL,Apple Inc,2025-07-31,2025-06-30,1.42,USD", "MSFT,Microsoft Corp,2025-07-29,2025-06-30,3.35,USD"))
    summary = run_local([str(path)])
    assert summary.ok and summary.table_items == 2
    assert not moto_speedups.active()
    assert all(vars(owner).get(name) is value for (owner, name), value in stock.items())


def test_local_on_another_moto_runs_stock_and_says_so_once(
    moto_uninstalled: pytest.MonkeyPatch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    moto_uninstalled.setattr(moto_speedups, "_installed_moto_version", lambda: "9.9.9")
    monkeypatch.setattr(emulator, "_told", set())
    seen_active: list[bool] = []
    monkeypatch.setattr(emulator, "patched_environ", _spy_on_active(emulator.patched_environ, seen_active))
    path = tmp_path / "calendar.csv"
    path.write_text(csv_text("AAPL,Apple Inc,2025-07-31,2025-06-30,1.42,USD"))
    assert main(["local", str(path), "--json"]) == 0
    assert main(["local", str(path), "--json"]) == 0
    assert seen_active == [False, False]
    out, err = capsys.readouterr()
    first, end = json.JSONDecoder().raw_decode(out)
    assert first["table_items"] == 1 and json.loads(out[end:])["table_items"] == 1
    notes = [line for line in err.splitlines() if "9.9.9" in line]
    pinned = moto_speedups.PINNED_MOTO_VERSION
    assert notes == [
        f"embedded emulator: moto 9.9.9 is installed but the speedups are written for moto {pinned} (the pinned version): running on stock moto (slower, same answers)"
    ]


def _spy_on_active(patched_environ: Any, seen: list[bool]) -> Any:
    """`patched_environ` as the emulator calls it once its server is up, noting whether moto is patched then."""

    def spy(env: dict[str, str]) -> Any:
        seen.append(moto_speedups.active())
        return patched_environ(env)

    return spy
