"""Consistency rules for one item image: every rule, both image forms, bookkeeping comparisons."""

from __future__ import annotations

import csv
from decimal import Decimal
from typing import Any

import pytest

from earnings_sync import consistency as c
from earnings_sync.calendar_table import item_to_plain, record_to_item
from earnings_sync.records import validate_row
from tests.conftest import SAMPLE_CSV

SYNCED = "2025-07-19T06:00:00.000000Z"
SYNC_ID = "20250719T060000000000Z-0a1b2c3d"


def item(**changes: Any) -> dict[str, dict[str, Any]]:
    """A valid attribute-value image; a change of None removes the attribute."""
    image: dict[str, dict[str, Any]] = {
        "asset_symbol": {"S": "AAPL"},
        "earnings_date": {"S": "2025-07-31"},
        "company_name": {"S": "Apple Inc"},
        "fiscal_date_ending": {"S": "2025-06-30"},
        "estimate": {"N": "1.43"},
        "currency": {"S": "USD"},
        "time_of_the_day": {"S": "post-market"},
        "lastSyncDate": {"S": SYNCED},
        "sync_id": {"S": SYNC_ID},
    }
    for name, value in changes.items():
        if value is None:
            image.pop(name)
        else:
            image[name] = value
    return image


def rules(image: dict, keys: dict | None = None) -> list[str]:
    return sorted(v.rule for v in c.validate_item(image, keys))


def test_a_valid_item_passes_in_both_forms() -> None:
    assert c.validate_item(item()) == []
    assert c.validate_item(item_to_plain(item())) == []
    assert c.validate_item(item(estimate={"NULL": True}, time_of_the_day=None)) == []
    plain = item_to_plain(item())
    assert c.validate_item({**plain, "estimate": None}) == []
    assert c.validate_item({**plain, "estimate": 2}) == []
    assert c.validate_item({**plain, "estimate": Decimal("-0.05")}) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"company_name": None}, ["missing_attribute"]),
        ({"sync_id": None}, ["missing_attribute"]),
        ({"estimate": None}, ["missing_attribute"]),  # absent is not null: the codec always writes it
        ({"estimate": {"S": "1.43"}}, ["bad_type"]),
        ({"currency": {"N": "840"}}, ["bad_type"]),
        ({"time_of_the_day": {"NULL": True}}, ["bad_type"]),
        ({"asset_symbol": {"S": "aapl"}}, ["bad_symbol"]),
        ({"asset_symbol": {"S": " AAPL"}}, ["bad_symbol"]),
        ({"asset_symbol": {"S": "A" * 30}}, ["bad_symbol"]),
        ({"earnings_date": {"S": "2025-02-30"}}, ["bad_date"]),
        ({"earnings_date": {"S": "2025-7-31"}}, ["bad_date"]),
        ({"fiscal_date_ending": {"S": "2025/06/30"}}, ["bad_date"]),
        ({"company_name": {"S": "Apple\x07Inc"}}, ["bad_name"]),
        ({"company_name": {"S": " Apple Inc"}}, ["bad_name"]),
        ({"company_name": {"S": "x" * 513}}, ["bad_name"]),
        ({"estimate": {"N": "1000000000"}}, ["bad_estimate"]),
        ({"estimate": {"N": "NaN"}}, ["bad_estimate"]),
        ({"currency": {"S": "usd"}}, ["bad_currency"]),
        ({"currency": {"S": "USDX"}}, ["bad_currency"]),
        ({"time_of_the_day": {"S": "noon"}}, ["bad_time_of_day"]),
        ({"time_of_the_day": {"S": ""}}, ["bad_time_of_day"]),
        ({"lastSyncDate": {"S": "2025-07-19"}}, ["bad_sync_date"]),
        ({"lastSyncDate": {"S": "2025-07-19T06:00:00Z"}}, ["bad_sync_date"]),
        ({"lastSyncDate": {"S": "2025-13-19T06:00:00.000000Z"}}, ["bad_sync_date"]),
        ({"sync_id": {"S": ""}}, ["bad_sync_id"]),
        ({"sync_id": {"S": "has space"}}, ["bad_sync_id"]),
    ],
)
def test_each_rule(changes: dict, expected: list[str]) -> None:
    assert rules(item(**changes)) == expected
    # the same rule holds for the plain form, except where only attribute-value types can differ
    if expected != ["bad_type"]:
        assert rules(item_to_plain(item(**changes))) == expected


def test_plain_values_of_the_wrong_kind_are_bad_types() -> None:
    plain = item_to_plain(item())
    assert rules({**plain, "estimate": "1.43"}) == ["bad_type"]
    assert rules({**plain, "currency": True}) == ["bad_type"]
    assert rules({**plain, "estimate": float("nan")}) == ["bad_estimate"]


def test_every_broken_attribute_is_reported_at_once() -> None:
    found = c.validate_item(
        item(
            asset_symbol={"S": "bad symbol"},
            currency={"S": "dollars"},
            fiscal_date_ending={"S": "soon"},
            company_name=None,
            lastSyncDate={"S": "yesterday"},
        )
    )
    assert sorted((v.rule, v.attribute) for v in found) == [
        ("bad_currency", "currency"),
        ("bad_date", "fiscal_date_ending"),
        ("bad_symbol", "asset_symbol"),
        ("bad_sync_date", "lastSyncDate"),
        ("missing_attribute", "company_name"),
    ]
    assert all("dollars" not in v.detail and "soon" not in v.detail for v in found)  # details never echo data


def test_stream_keys_must_name_the_image() -> None:
    keys = {"asset_symbol": {"S": "AAPL"}, "earnings_date": {"S": "2025-07-31"}}
    assert rules(item(), keys) == []
    assert rules(item(), {**keys, "earnings_date": {"S": "2025-08-01"}}) == ["key_mismatch"]


def test_rule_names_are_stable_and_unique() -> None:
    assert len(set(c.ALL_RULES)) == len(c.ALL_RULES)
    assert c.ITEM_RULES == (
        "missing_attribute", "bad_type", "bad_symbol", "bad_date", "bad_name", "bad_estimate",
        "bad_currency", "bad_time_of_day", "bad_sync_date", "bad_sync_id", "key_mismatch",
    )
    assert (c.SUPERSEDED, c.AMBIGUOUS_PERIOD) == ("superseded", "ambiguous_fiscal_period")


def test_every_row_the_producer_accepts_makes_a_valid_item() -> None:
    """The item rules are the CSV rules: nothing the pipeline writes can fail them."""
    with open(SAMPLE_CSV, newline="") as handle:
        rows = list(csv.reader(handle))
    width = len(rows[0])
    checked = 0
    for line, fields in enumerate(rows[1:400], start=2):
        record = validate_row(fields, line, width)
        image = record_to_item(record, SYNC_ID, SYNCED)
        assert c.validate_item(image) == [], (line, fields)
        checked += 1
    assert checked == 399


def test_bookkeeping_only_compares_content_not_bookkeeping() -> None:
    old = item()
    bumped = item(lastSyncDate={"S": "2025-07-20T06:00:00.000000Z"}, sync_id={"S": "other"})
    assert c.is_bookkeeping_only(old, bumped)
    assert c.is_bookkeeping_only(old, old)
    assert not c.is_bookkeeping_only(old, item(estimate={"N": "1.44"}))
    assert not c.is_bookkeeping_only(old, item(time_of_the_day=None))  # attribute removed
    assert not c.is_bookkeeping_only(item(time_of_the_day=None), old)  # attribute added
    assert not c.is_bookkeeping_only(item(sync_id=None), item(sync_id=None, company_name={"S": "Apple"}))
    assert c.is_bookkeeping_only(item(sync_id=None), item())  # only bookkeeping appeared


def test_regression_is_an_older_sync_replacing_a_newer_one() -> None:
    newer = item(lastSyncDate={"S": "2025-07-20T06:00:00.000000Z"})
    assert c.is_regression(newer, item())
    assert not c.is_regression(item(), newer)
    assert not c.is_regression(item(), item())
    assert not c.is_regression(newer, item(lastSyncDate=None))  # no bookkeeping: a validation matter
    assert c.item_key(item()) == ("AAPL", "2025-07-31") == c.item_key(item_to_plain(item()))
    assert c.text_attribute(item(), "estimate") is None  # a number is not text
