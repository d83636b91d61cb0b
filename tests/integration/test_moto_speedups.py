"""The embedded emulator's partition-scoped Query returns exactly what moto's full-table Query did."""

from __future__ import annotations

from typing import Any

from earnings_sync import moto_speedups


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
    moto_speedups.install()  # idempotent; run_local may already have installed it in this process
    assert moto_speedups.install() is False
    answers = [_page_through(client, TableName=name, **request) for request in requests]
    assert answers == [
        [("B", "2025-08-01"), ("B", "2025-08-02"), ("B", "2025-08-03")],
        [("B", "2025-08-03"), ("B", "2025-08-02")],
        [("C", "2025-08-01"), ("C", "2025-08-03")],
        [],
        [("A", "2025-08-02"), ("B", "2025-08-02"), ("C", "2025-08-02")],
    ]
    scanned = client.scan(TableName=name)["Count"]
    assert scanned == 9  # everything else still sees the whole table
