"""AlphaVantage EARNINGS_CALENDAR CSV → validated `EarningsRecord`s, streamed row by row.

The parser never materialises the file: it walks the lines, validates each row into a msgspec
Struct and hands rejected rows back as `Rejection`s (line number + reason) so the caller can
log, count and report them. A body that is not the CSV (AlphaVantage answers errors and rate
limits with HTTP 200 and JSON or junk) raises `UpstreamError` before anything is yielded.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Literal

import msgspec

HEADER_6 = ("symbol", "name", "reportDate", "fiscalDateEnding", "estimate", "currency")
HEADER_7 = (*HEADER_6, "timeOfTheDay")

SYMBOL_RE = re.compile(r"[A-Z0-9][A-Z0-9._\-]{0,23}")
CURRENCY_RE = re.compile(r"[A-Z]{3}")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
ESTIMATE_RE = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
TIMES_OF_DAY = frozenset({"pre-market", "post-market"})
MAX_NAME_LENGTH = 512
MAX_ESTIMATE_DIGITS = 9

RejectReason = Literal[
    "column_count",
    "bad_symbol",
    "bad_report_date",
    "bad_fiscal_date",
    "bad_estimate",
    "bad_currency",
    "bad_time_of_day",
    "bad_name",
]


class EarningsRecord(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One row of the calendar, already validated; the unit every other module works with."""

    asset_symbol: str
    earnings_date: str  # ISO date, the table's sort key
    company_name: str
    fiscal_date_ending: str  # ISO date
    estimate: str | None  # canonical decimal text, kept as text so no float ever touches it
    currency: str
    time_of_the_day: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.asset_symbol, self.earnings_date)


class Rejection(msgspec.Struct, frozen=True):
    """A row that cannot become a record: where it was, why, and (trimmed) what it said."""

    line: int
    reason: RejectReason
    detail: str


class UpstreamError(Exception):
    """The body is not an EARNINGS_CALENDAR CSV; nothing from it may be enqueued."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"upstream returned {kind}: {message}")
        self.kind = kind
        self.message = message


def _scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Never echo an API key that AlphaVantage may quote back in its error text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = re.sub(r"(apikey=)[^&\s\"']+", r"\1***", text, flags=re.IGNORECASE)
    return " ".join(text.split())[:300]


def detect_upstream_error(head: str, secrets: Iterable[str] = ()) -> UpstreamError | None:
    """Classify the first bytes of a reply; None means it looks like our CSV."""
    stripped = head.lstrip("\ufeff \t\r\n")
    if not stripped:
        return UpstreamError("an empty body", "no data at all")
    if stripped[0] in "{[":
        try:
            payload = json.loads(stripped)
        except ValueError:
            return UpstreamError("malformed JSON", _scrub(stripped, secrets))
        if isinstance(payload, dict):
            for field in ("Error Message", "Note", "Information"):
                if field in payload:
                    return UpstreamError(f"a JSON '{field}'", _scrub(str(payload[field]), secrets))
        return UpstreamError("JSON instead of CSV", _scrub(stripped, secrets))
    if stripped[0] == "<":
        return UpstreamError("HTML instead of CSV", _scrub(re.sub(r"<[^>]*>", " ", stripped), secrets))
    first_line = stripped.splitlines()[0]
    header = tuple(field.strip() for field in first_line.split(","))
    if header not in (HEADER_6, HEADER_7):
        return UpstreamError("an unexpected header", _scrub(first_line, secrets))
    return None


def _is_information_row(fields: list[str]) -> bool:
    """The quota reply AlphaVantage sometimes sends as a valid header plus `I,n,f,o,r,m,a`."""
    return all(len(f) <= 1 for f in fields) and "".join(fields).lower().startswith("inform")


_VALID_DATES: dict[str, str] = {}  # a calendar holds a few hundred distinct dates: parse each once


def _iso_date(text: str) -> str | None:
    known = _VALID_DATES.get(text)
    if known is not None:
        return known
    if len(text) != 10:
        return None
    try:
        parsed = dt.date.fromisoformat(text).isoformat()
    except ValueError:
        return None
    if parsed != text:  # pragma: no cover - 10-character ISO input always round-trips
        return None
    if len(_VALID_DATES) < 100_000:
        _VALID_DATES[text] = parsed
    return parsed


def _estimate(text: str) -> str | None | Literal[False]:
    """Canonical decimal text, None for empty, False when it is not a plain finite number."""
    if text == "":
        return None
    if ESTIMATE_RE.fullmatch(text) is None:
        return False
    integer_digits = len(text.lstrip("-").partition(".")[0].lstrip("0"))
    if integer_digits > MAX_ESTIMATE_DIGITS:  # |estimate| < 1e9: no EPS is that large
        return False
    return text


def validate_row(fields: list[str], line: int, width: int) -> EarningsRecord | Rejection:
    """One CSV row → record or rejection; `width` is the header's column count (6 or 7)."""
    if len(fields) != width:
        return Rejection(line, "column_count", f"expected {width} columns, got {len(fields)}")
    symbol = fields[0].strip()
    if SYMBOL_RE.fullmatch(symbol) is None:
        return Rejection(line, "bad_symbol", f"symbol {symbol[:40]!r}")
    report = _iso_date(fields[2].strip())
    if report is None:
        return Rejection(line, "bad_report_date", f"reportDate {fields[2][:40]!r}")
    fiscal = _iso_date(fields[3].strip())
    if fiscal is None:
        return Rejection(line, "bad_fiscal_date", f"fiscalDateEnding {fields[3][:40]!r}")
    estimate = _estimate(fields[4].strip())
    if estimate is False:
        return Rejection(line, "bad_estimate", f"estimate {fields[4][:40]!r}")
    currency = fields[5].strip()
    if CURRENCY_RE.fullmatch(currency) is None:
        return Rejection(line, "bad_currency", f"currency {currency[:40]!r}")
    name = fields[1].strip()
    if len(name) > MAX_NAME_LENGTH or CONTROL_RE.search(name) is not None:
        return Rejection(line, "bad_name", f"name of {len(name)} characters or with control characters")
    time_of_day = None
    if width == 7:
        time_of_day = fields[6].strip() or None
        if time_of_day is not None and time_of_day not in TIMES_OF_DAY:
            return Rejection(line, "bad_time_of_day", f"timeOfTheDay {time_of_day[:40]!r}")
    return EarningsRecord(
        asset_symbol=symbol,
        earnings_date=report,
        company_name=name,
        fiscal_date_ending=fiscal,
        estimate=estimate,
        currency=currency,
        time_of_the_day=time_of_day,
    )


def _lines(source: str | bytes | Iterable[str]) -> Iterator[str]:
    if isinstance(source, bytes):
        source = source.decode("utf-8-sig", errors="replace")
    if isinstance(source, str):
        return iter(io.StringIO(source, newline=""))
    return iter(source)


def parse_csv(
    source: str | bytes | Iterable[str], secrets: Iterable[str] = ()
) -> Iterator[EarningsRecord | Rejection]:
    """Stream records and rejections from a CSV body or an iterable of lines (CRLF or LF).

    Raises `UpstreamError` for a body that is not the calendar, before yielding anything, and
    also if the quota row `I,n,f,o,r,m,a` shows up as the first data row.
    """
    lines = _lines(source)
    first = next(lines, "")
    error = detect_upstream_error(first, secrets)
    if error is not None:
        if first.lstrip().startswith(("{", "[", "<")):
            rest = "".join(lines)  # a JSON/HTML reply is small: read it whole to quote it
            error = detect_upstream_error(first + rest, secrets) or error
        raise error
    width = len(next(csv.reader([first])))
    reader = csv.reader(lines)
    line = 1
    for fields in reader:
        line = reader.line_num + 1
        if not fields or fields == [""]:
            continue  # blank line (a trailing newline, a CRLF pair split oddly)
        if line == 2 and _is_information_row(fields):
            raise UpstreamError("the quota row 'I,n,f,o,r,m,a'", "request quota exhausted (Information)")
        yield validate_row(fields, line, width)


class ParseStats(msgspec.Struct):
    rows: int = 0
    records: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = msgspec.field(default_factory=dict)


def symbols_contiguous(lines: Iterable[str]) -> bool:
    """Cheap pre-pass: does every symbol's rows form one run (true of AlphaVantage's sorted files)?

    Looks only at the text before the first comma of each line; a quoted name spanning lines may
    make it answer False, which only costs memory (the caller then buffers), never correctness.
    """
    finished: set[str] = set()
    current = None
    iterator = iter(lines)
    next(iterator, None)  # header
    for line in iterator:
        symbol = line.split(",", 1)[0]
        if symbol != current:
            if symbol in finished:
                return False
            if current is not None:
                finished.add(current)
            current = symbol
    return True


def _collect(
    items: Iterable[EarningsRecord | Rejection],
    stats: ParseStats,
    on_rejection: Callable[[Rejection], None] | None,
) -> Iterator[tuple[str, EarningsRecord]]:
    for item in items:
        stats.rows += 1
        if isinstance(item, Rejection):
            stats.rejected[item.reason] = stats.rejected.get(item.reason, 0) + 1
            if on_rejection is not None:
                on_rejection(item)
            continue
        yield item.asset_symbol, item


def _add(
    by_date: dict[str, EarningsRecord],
    record: EarningsRecord,
    stats: ParseStats,
    on_duplicate: Callable[[EarningsRecord, EarningsRecord], None] | None,
) -> None:
    previous = by_date.get(record.earnings_date)
    if previous is not None:
        stats.duplicates += 1
        if on_duplicate is not None:
            on_duplicate(previous, record)
    else:
        stats.records += 1
    by_date[record.earnings_date] = record


def iter_symbol_groups(
    items: Iterable[EarningsRecord | Rejection],
    stats: ParseStats,
    on_rejection: Callable[[Rejection], None] | None = None,
    on_duplicate: Callable[[EarningsRecord, EarningsRecord], None] | None = None,
    *,
    contiguous: bool = False,
) -> Iterator[list[EarningsRecord]]:
    """Each symbol's records, keyed rows deduplicated (a later row with the same key replaces the
    earlier one, counted in `stats.duplicates`), so a symbol's rows can travel in one message.

    With `contiguous=True` (see `symbols_contiguous`) a group is yielded as soon as its run ends:
    memory stays at one group. Otherwise every group is held until the end of the input.
    """
    if contiguous:
        current: str | None = None
        by_date: dict[str, EarningsRecord] = {}
        for symbol, record in _collect(items, stats, on_rejection):
            if symbol != current:
                if by_date:
                    yield list(by_date.values())
                current, by_date = symbol, {}
            _add(by_date, record, stats, on_duplicate)
        if by_date:
            yield list(by_date.values())
        return
    groups: dict[str, dict[str, EarningsRecord]] = {}
    for symbol, record in _collect(items, stats, on_rejection):
        by_date = groups.get(symbol)
        if by_date is None:
            groups[symbol] = by_date = {}
        _add(by_date, record, stats, on_duplicate)
    for by_date in groups.values():
        yield list(by_date.values())


def group_by_symbol(
    items: Iterable[EarningsRecord | Rejection],
    stats: ParseStats,
    on_rejection: Callable[[Rejection], None] | None = None,
    on_duplicate: Callable[[EarningsRecord, EarningsRecord], None] | None = None,
) -> dict[str, dict[str, EarningsRecord]]:
    """All groups at once, by symbol then date (for callers that want the whole snapshot)."""
    grouped: dict[str, dict[str, EarningsRecord]] = {}
    for group in iter_symbol_groups(items, stats, on_rejection, on_duplicate):
        grouped[group[0].asset_symbol] = {r.earnings_date: r for r in group}
    return grouped


def record_problem(record: EarningsRecord) -> Rejection | None:
    """Re-apply the CSV rules to a record that arrived some other way (a message, a replay)."""
    fields = [
        record.asset_symbol,
        record.company_name,
        record.earnings_date,
        record.fiscal_date_ending,
        record.estimate if record.estimate is not None else "",
        record.currency,
        record.time_of_the_day or "",
    ]
    checked = validate_row(fields, 0, 7)
    if isinstance(checked, Rejection):
        return checked
    if checked != record:  # e.g. padded text or a non-canonical date that validation would rewrite
        return Rejection(0, "bad_symbol" if checked.asset_symbol != record.asset_symbol else "bad_name",
                         "fields are not in canonical form")
    return None
