"""One gateway per table, checked on the source: every module of the core, the entry points and the CLI
is parsed, and item-level DynamoDB calls and `earningsCalendar`'s attribute names are looked for.

The embedded emulator (`earnings_sync_local`: moto patches, the stream and queue mappings) and the
tests are not shipped to Lambda and are exempt.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from earnings_sync.calendar_table import DATE, INDEX_NAME, LAST_SYNC_DATE, SYMBOL

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("earnings_sync", "producers", "consumers", "queries", "earnings_sync_cli")
GATEWAYS = {"earnings_sync/calendar_table.py", "earnings_sync/ledger.py"}  # earningsCalendar's, the ledger table's

# Item-level operations of a DynamoDB client (or resource Table), by their boto3 method names.
ITEM_LEVEL = frozenset(
    {
        "get_item",
        "put_item",
        "update_item",
        "delete_item",
        "batch_get_item",
        "batch_write_item",
        "query",
        "scan",
        "transact_get_items",
        "transact_write_items",
        "execute_statement",
        "batch_execute_statement",
        "execute_transaction",
    }
)

# earningsCalendar's names that only the gateway spells out. `sync_id` is left out: the same word
# names the sync in messages, SQS message attributes, reports and the ledger table's key, and a
# source scan cannot tell those apart; the calendar's attribute is calendar_table.SYNC_ID.
GUARDED = (SYMBOL, DATE, LAST_SYNC_DATE, INDEX_NAME)
# A guarded attribute inside a DynamoDB expression ("lastSyncDate = :seen", "attribute_not_exists(asset_symbol)").
EXPRESSION = re.compile(
    rf"\b({SYMBOL}|{DATE}|{LAST_SYNC_DATE})\b\s*(=|<|>|BETWEEN\b|,)|\(\s*({SYMBOL}|{DATE}|{LAST_SYNC_DATE})\s*\)"
)
# module -> the guarded names it may spell, and why. Each entry must still be needed.
ALLOWED_NAMES: dict[str, set[str]] = {
    "earnings_sync/calendar_table.py": set(GUARDED),  # the owner
    # EarningsRecord's own field names (getattr over the record in record_problem), which messages carry
    # as JSON keys: the record and message schema, not the table's.
    "earnings_sync/records.py": {SYMBOL, DATE},
    # the symbol of a dead-lettered message's record, read from the message's JSON before it is decoded
    "earnings_sync/replay.py": {SYMBOL},
    # prints `upcoming`'s answer, whose items are the query's public output (item_to_plain's keys)
    "earnings_sync_cli/upcoming.py": {SYMBOL, DATE},
}


def modules() -> list[Path]:
    found = sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))
    assert ROOT / "earnings_sync" / "calendar_table.py" in found
    return found


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def item_level_uses(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, operation) of every reference to an item-level operation: a call or a bound method taken
    (`{"BatchGetItem": client.batch_get_item}`), `getattr(client, "put_item")`, a paginator over one,
    or botocore's `_make_api_call` used directly."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ITEM_LEVEL | {"_make_api_call"}:
            yield node.lineno, node.attr
        if not isinstance(node, ast.Call) or not node.args:
            continue
        named = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        constants = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        if named in ("get_paginator", "getattr") and any(value in ITEM_LEVEL for value in constants):
            yield node.lineno, f"{named}({', '.join(repr(v) for v in constants)})"


def docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def spelled_names(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, name) of every guarded name written as a string of its own or inside an expression; prose
    (docstrings, messages that mention an attribute) is not code that names it."""
    prose = docstrings(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in prose:
            continue
        if node.value in GUARDED:
            yield node.lineno, node.value
        for match in EXPRESSION.finditer(node.value):
            yield node.lineno, match.group(1) or match.group(3)


def test_item_level_calls_live_in_the_two_tables_gateways() -> None:
    uses = {relative(path): sorted(set(item_level_uses(parse(path)))) for path in modules()}
    outside = {module: found for module, found in uses.items() if found and module not in GATEWAYS}
    assert outside == {}, f"item-level DynamoDB calls outside calendar_table and ledger: {outside}"
    assert {module for module, found in uses.items() if found} == GATEWAYS


def test_attribute_names_are_spelled_only_where_allowed() -> None:
    spelled = {relative(path): {name for _, name in spelled_names(parse(path))} for path in modules()}
    found = {module: names for module, names in spelled.items() if names}
    assert found == ALLOWED_NAMES, "use calendar_table's names and codec (SYMBOL, DATE, LAST_SYNC_DATE, key_of, ...)"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("client.put_item(TableName=t, Item=i)", ["put_item"]),
        ("self.table.scan()", ["scan"]),
        ('calls = {"BatchGetItem": self.client.batch_get_item}', ["batch_get_item"]),
        ('pages = client.get_paginator("query").paginate(TableName=t)', ["get_paginator('query')"]),
        ('write = getattr(client, "delete_item")', ["getattr('delete_item')"]),
        ('boto3.resource("dynamodb").Table(t).update_item(Key=k)', ["update_item"]),
        ("client.transact_write_items(TransactItems=[])", ["transact_write_items"]),
        ('client._make_api_call("PutItem", {})', ["_make_api_call"]),
        ('sqs.send_message(QueueUrl=q, MessageBody="query")', []),
        ('client.get_paginator("list_queues")', []),
        ("table.all_items(); table.query_day(d, limit=1); client.describe_table(TableName=t)", []),
    ],
)
def test_the_call_finder_sees_every_form(source: str, expected: list[str]) -> None:
    assert [operation for _, operation in item_level_uses(ast.parse(source))] == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('key = {"asset_symbol": {"S": s}}', ["asset_symbol"]),
        ('item["lastSyncDate"]["S"]', ["lastSyncDate"]),
        ('condition = "lastSyncDate = :seen"', ["lastSyncDate"]),
        ('condition = "attribute_not_exists(asset_symbol)"', ["asset_symbol"]),
        ('projection = "asset_symbol, earnings_date"', ["asset_symbol"]),
        ('f"earnings_date BETWEEN {a} AND {b}"', ["earnings_date"]),
        ('index = "upcoming-earnings-index"', ["upcoming-earnings-index"]),
        ('def f():\n    """Moves `lastSyncDate` forward (asset_symbol = the key)."""', []),
        ('raise ValueError("every lastSyncDate of the item is in the future")', []),
        ('help = "one Query per day on upcoming-earnings-index"', []),
        ("key = {SYMBOL: {'S': s}}", []),
    ],
)
def test_the_name_finder_tells_code_from_prose(source: str, expected: list[str]) -> None:
    assert [name for _, name in spelled_names(ast.parse(source))] == expected
