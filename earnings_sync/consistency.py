"""Consistency rules for one `earningsCalendar` item image, shared by the stream consumer and the audit.

An image is either a plain dict (`item_to_plain`, boto3 resource style) or a DynamoDB attribute-value
map (stream images, low-level client). Field rules are the CSV rules of `earnings_sync.records`: an
item passes when `record_problem` accepts the record it encodes, so the table can never hold what the
producer would have rejected. Only when that single check fails is each field probed on its own, so a
report lists every broken attribute, not just the first one.

Rule names are stable strings: they become metric names (`ValidationFailed_<rule>`) and audit keys.
`ITEM_RULES` judge one image; the table-level rules of `ALL_RULES` are the audit's (audit.py).
`bad_sync_date` needs the strict form of a real time (sync_identity.is_synced_at); whether that time
lies in the future, or belongs to a registered sync, takes a clock and the registry: the audit asks.

Bookkeeping (`lastSyncDate`, `sync_id`, and `restoredOver`, the mark of a restored regression) is
checked here too; its *ordering* between two images (`is_regression`), the "nothing but bookkeeping
changed" test (`is_bookkeeping_only`) and "this is the regression guard's restore" (`is_restore`)
are cheap comparisons of two raw images, done before any validation work.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import msgspec

from earnings_sync.calendar_table import DATE, FISCAL_DATE, LAST_SYNC_DATE, RESTORED_OVER, SYMBOL, SYNC_ID
from earnings_sync.records import EarningsRecord, record_problem
from earnings_sync.sync_identity import is_synced_at

MISSING_ATTRIBUTE: Final = "missing_attribute"
BAD_TYPE: Final = "bad_type"
BAD_SYMBOL: Final = "bad_symbol"
BAD_DATE: Final = "bad_date"
BAD_NAME: Final = "bad_name"
BAD_ESTIMATE: Final = "bad_estimate"
BAD_CURRENCY: Final = "bad_currency"
BAD_TIME_OF_DAY: Final = "bad_time_of_day"
BAD_SYNC_DATE: Final = "bad_sync_date"
BAD_SYNC_ID: Final = "bad_sync_id"
KEY_MISMATCH: Final = "key_mismatch"
# Table-level rules (the audit): more than one date for one (symbol, fiscal period).
SUPERSEDED: Final = "superseded"  # older than another date of the same period: safe to delete
AMBIGUOUS_PERIOD: Final = "ambiguous_fiscal_period"  # two dates written by the same newest sync
# Sync metadata the pipeline never writes (the audit, against the clock and the sync registry).
FUTURE_SYNC_DATE: Final = "future_sync_date"  # lastSyncDate later than now + the clock skew: blocks every sync
UNREGISTERED_SYNC: Final = "unregistered_sync"  # sync_id/lastSyncDate of no registered sync

ITEM_RULES: Final = (
    MISSING_ATTRIBUTE,
    BAD_TYPE,
    BAD_SYMBOL,
    BAD_DATE,
    BAD_NAME,
    BAD_ESTIMATE,
    BAD_CURRENCY,
    BAD_TIME_OF_DAY,
    BAD_SYNC_DATE,
    BAD_SYNC_ID,
    KEY_MISMATCH,
)
ALL_RULES: Final = (*ITEM_RULES, SUPERSEDED, AMBIGUOUS_PERIOD, FUTURE_SYNC_DATE, UNREGISTERED_SYNC)

BOOKKEEPING: Final = frozenset({LAST_SYNC_DATE, SYNC_ID, RESTORED_OVER})
# attribute -> accepted DynamoDB types; time_of_the_day is the only optional one.
EXPECTED_TYPES: Final[Mapping[str, tuple[str, ...]]] = {
    SYMBOL: ("S",),
    DATE: ("S",),
    "company_name": ("S",),
    FISCAL_DATE: ("S",),
    "estimate": ("N", "NULL"),
    "currency": ("S",),
    LAST_SYNC_DATE: ("S",),
    SYNC_ID: ("S",),
    "time_of_the_day": ("S",),
}
OPTIONAL: Final = frozenset({"time_of_the_day"})
# record field -> rule reported when `record_problem` refuses that field alone (the item codec,
# calendar_table.record_to_item, names each attribute after its record field).
FIELD_RULES: Final[Mapping[str, str]] = {
    SYMBOL: BAD_SYMBOL,
    DATE: BAD_DATE,
    FISCAL_DATE: BAD_DATE,
    "company_name": BAD_NAME,
    "estimate": BAD_ESTIMATE,
    "currency": BAD_CURRENCY,
    "time_of_the_day": BAD_TIME_OF_DAY,
}
SYNC_ID_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._:\-]{0,127}")
_AV_TYPES = frozenset({"S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"})
# A record every field rule accepts; probing swaps in one field of the item at a time.
_PROBE = EarningsRecord(
    asset_symbol="A",
    earnings_date="2000-01-03",
    company_name="probe",
    fiscal_date_ending="1999-12-31",
    estimate=None,
    currency="USD",
)


@dataclass(frozen=True)
class Violation:
    """One broken rule: `rule` is the stable name, `attribute` where, `detail` short and item-free."""

    rule: str
    attribute: str
    detail: str = ""


Typed = dict[str, tuple[str, Any]]  # attribute -> (DynamoDB type, raw value)


def is_attribute_map(image: Mapping[str, Any]) -> bool:
    """True for a low-level `{"name": {"S": "..."}}` image (an empty image counts as one)."""
    return all(isinstance(v, Mapping) and len(v) == 1 and next(iter(v)) in _AV_TYPES for v in image.values())


def typed(image: Mapping[str, Any]) -> Typed:
    """Either image form → attribute -> (DynamoDB type, value), numbers kept as text."""
    if is_attribute_map(image):
        return {name: next(iter(value.items())) for name, value in image.items()}
    out: Typed = {}
    for name, value in image.items():
        if value is None:
            out[name] = ("NULL", True)
        elif isinstance(value, bool):
            out[name] = ("BOOL", value)
        elif isinstance(value, str):
            out[name] = ("S", value)
        elif isinstance(value, (int, float, Decimal)):
            out[name] = ("N", str(value))
        else:
            out[name] = (type(value).__name__, value)
    return out


def _estimate_text(number: str) -> str | None:
    """DynamoDB hands numbers back normalised (`1.37`, maybe `1E+2` from another writer): plain text."""
    try:
        value = Decimal(number)
    except (InvalidOperation, TypeError):
        return None
    if not value.is_finite():
        return None
    return format(value, "f")


def _record(values: Typed) -> EarningsRecord:
    def text(name: str, default: str = "") -> str:
        kind, value = values.get(name, ("", None))
        return value if kind == "S" else default

    kind, raw = values.get("estimate", ("NULL", True))
    estimate = _estimate_text(raw) if kind == "N" else None
    return EarningsRecord(
        asset_symbol=text(SYMBOL),
        earnings_date=text(DATE),
        company_name=text("company_name"),
        fiscal_date_ending=text(FISCAL_DATE),
        estimate=estimate,
        currency=text("currency"),
        time_of_the_day=text("time_of_the_day") if "time_of_the_day" in values else None,
    )


def validate_item(image: Mapping[str, Any], keys: Mapping[str, Any] | None = None) -> list[Violation]:
    """Every rule `image` breaks (empty list: consistent). `keys`, when given (a stream record's
    `Keys`), must name the same item as the image's own key attributes."""
    values = typed(image)
    violations: list[Violation] = []
    broken: set[str] = set()
    for name, kinds in EXPECTED_TYPES.items():
        if name not in values:
            if name not in OPTIONAL:
                violations.append(Violation(MISSING_ATTRIBUTE, name))
                broken.add(name)
        elif values[name][0] not in kinds:
            violations.append(Violation(BAD_TYPE, name, f"{values[name][0]}, expected {'/'.join(kinds)}"))
            broken.add(name)
    if values.get("estimate", ("", None))[0] == "N" and _estimate_text(values["estimate"][1]) is None:
        violations.append(Violation(BAD_ESTIMATE, "estimate", "not a finite number"))
        broken.add("estimate")

    record = _record(values)
    if record_problem(record) is not None:
        for name, rule in FIELD_RULES.items():
            if name in broken or (name == "time_of_the_day" and name not in values):
                continue
            probe = msgspec.structs.replace(_PROBE, **{name: getattr(record, name)})
            rejection = record_problem(probe)
            if rejection is not None:
                violations.append(Violation(rule, name, rejection.reason))

    if LAST_SYNC_DATE not in broken and not is_synced_at(values[LAST_SYNC_DATE][1]):
        violations.append(Violation(BAD_SYNC_DATE, LAST_SYNC_DATE, "expected 2025-07-19T06:00:00.000000Z"))
    if SYNC_ID not in broken and SYNC_ID_RE.fullmatch(values[SYNC_ID][1]) is None:
        violations.append(Violation(BAD_SYNC_ID, SYNC_ID, "empty or not a sync id"))

    if keys is not None:
        stated = typed(keys)
        for name in (SYMBOL, DATE):
            if name in stated and name in values and stated[name] != values[name]:
                violations.append(Violation(KEY_MISMATCH, name, "stream Keys differ from the image"))
    return violations


def item_key(image: Mapping[str, Any]) -> tuple[str, str]:
    """(asset_symbol, earnings_date) as text, whatever the image form; '' for a missing part."""
    values = typed(image)
    return (
        str(values.get(SYMBOL, ("", ""))[1]),
        str(values.get(DATE, ("", ""))[1]),
    )


def text_attribute(image: Mapping[str, Any], name: str) -> str | None:
    """A string attribute's value, None when absent or of another type."""
    kind, value = typed(image).get(name, ("", None))
    return value if kind == "S" else None


def is_bookkeeping_only(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Old and new images differ in `lastSyncDate`/`sync_id` at most (raw comparison, no parsing)."""
    if len(old) - len(BOOKKEEPING & old.keys()) != len(new) - len(BOOKKEEPING & new.keys()):
        return False
    return all(name in BOOKKEEPING or new.get(name) == value for name, value in old.items())


def is_restore(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """The regression guard's own put: the new image is marked as restored over the old image's sync."""
    restored_over = text_attribute(new, RESTORED_OVER)
    return restored_over is not None and restored_over == text_attribute(old, LAST_SYNC_DATE)


def is_regression(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """The new image carries an older sync than the image it replaced (fixed-width text compare)."""
    before = text_attribute(old, LAST_SYNC_DATE)
    after = text_attribute(new, LAST_SYNC_DATE)
    return before is not None and after is not None and after < before
