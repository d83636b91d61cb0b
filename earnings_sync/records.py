"""AlphaVantage EARNINGS_CALENDAR CSV → validated `EarningsRecord`s, streamed line by line.

AlphaVantage never puts a newline inside a field, so the parser reads one *physical* line at a
time (split on LF, one trailing CR dropped) and a record can never span lines: a line with an
unterminated quote is rejected alone and the next line is a row of its own. Every physical line
ends as exactly one of: the header, a record, a `Rejection` (line number + reason) or a blank line
(`ParseStats.blank_lines`), so the producer's row count is the number of non-blank data lines and
the ledger can only call a sync complete when every one of them is accounted for.

Text is strict UTF-8, line by line: a line that is not (a Latin-1/cp1252 export) or that carries a
U+FFFD replacement character (text mis-decoded before it was saved) is rejected as `bad_encoding`;
nothing is ever decoded with replacement. Input is read in `BLOCK_SIZE` blocks and lines longer
than `MAX_LINE_BYTES` are rejected, so a line of any length costs at most one block plus the limit.

A body that is not the calendar at all raises `NotACalendarError` before anything is yielded; for
an AlphaVantage reply (JSON note, HTML page, the quota row) it is the subclass `UpstreamError`,
which quotes the reply with the API key masked. Other sources (a file, an S3 object) are described,
never quoted.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from itertools import chain
from pathlib import Path
from typing import IO, Literal, NamedTuple

import msgspec

HEADER_6 = ("symbol", "name", "reportDate", "fiscalDateEnding", "estimate", "currency")
HEADER_7 = (*HEADER_6, "timeOfTheDay")
EXPECTED_HEADER = ",".join(HEADER_6) + "[,timeOfTheDay]"

SYMBOL_RE = re.compile(r"[A-Z0-9][A-Z0-9._\-]{0,23}")
CURRENCY_RE = re.compile(r"[A-Z]{3}")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
ESTIMATE_RE = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
CANONICAL_ESTIMATE_RE = re.compile(r"-?(?:0|[1-9][0-9]{0,8})(?:\.[0-9]*[1-9])?")  # see `canonical_estimate`
SURROGATE_RE = re.compile("[\ud800-\udfff]")
TIMES_OF_DAY = frozenset({"pre-market", "post-market"})
MAX_NAME_LENGTH = 512
MAX_ESTIMATE_DIGITS = 9  # integer digits: |estimate| < 1e9, no EPS is that large
MAX_SIGNIFICANT_DIGITS = 38  # DynamoDB's number precision
MIN_ADJUSTED_EXPONENT = -130  # DynamoDB's smallest magnitude is 1E-130
MAX_LINE_BYTES = 8192  # a real row is ~100 bytes and a name at most 512 characters
MAX_REPLY_BYTES = 65536  # how much of a JSON/HTML reply is read to classify it
QUOTED_CHARS = 40  # how much of a field a rejection detail quotes
LATIN1_HINT = "the file is not UTF-8 (Latin-1/cp1252?): re-save it as UTF-8"

RejectReason = Literal[
    "column_count",
    "bad_symbol",
    "bad_report_date",
    "bad_fiscal_date",
    "bad_estimate",
    "bad_currency",
    "bad_time_of_day",
    "bad_name",
    "unterminated_quote",
    "malformed_quotes",
    "stray_cr",
    "line_too_long",
    "bad_encoding",
]
REJECT_REASONS: tuple[str, ...] = RejectReason.__args__  # type: ignore[attr-defined]


class EarningsRecord(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One row of the calendar, already validated; the unit every other module works with."""

    asset_symbol: str
    earnings_date: str  # ISO date, the table's sort key
    company_name: str
    fiscal_date_ending: str  # ISO date
    estimate: str | None  # canonical decimal text (`canonical_estimate`), kept as text so no float ever touches it
    currency: str
    time_of_the_day: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.asset_symbol, self.earnings_date)


class Rejection(msgspec.Struct, frozen=True):
    """A line that cannot become a record: where it was, why, and (trimmed, escaped) what it said."""

    line: int
    reason: RejectReason
    detail: str


class Unreadable(NamedTuple):
    """A physical line that never became text (too long, not UTF-8): rejected as it stands."""

    reason: RejectReason
    detail: str


class NotACalendarError(Exception):
    """The input is not an EARNINGS_CALENDAR CSV; nothing from it may be enqueued.

    `kind` is a short machine-readable class (empty, json, html, header, encoding, binary,
    quota_row, ...); the message names the source and describes what it holds without quoting it.
    """

    def __init__(self, kind: str, message: str, *, text: str | None = None) -> None:
        super().__init__(message if text is None else text)
        self.kind = kind
        self.message = message


class UpstreamError(NotACalendarError):
    """AlphaVantage answered something other than the calendar; its reply is quoted, key masked."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(kind, message, text=f"upstream returned {kind}: {message}")


class ParseStats(msgspec.Struct):
    rows: int = 0  # non-blank data lines: records + duplicates + rejections
    records: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = msgspec.field(default_factory=dict)
    blank_lines: int = 0  # empty or whitespace-only lines: not rows, but accounted for

    @property
    def lines(self) -> int:
        """Physical lines read so far, the header included."""
        return 1 + self.rows + self.blank_lines


# --------------------------------------------------------------------------- text for humans


def printable(text: str) -> str:
    """Control and other non-printable characters escaped (`\\x1b`, `\\u200b`): safe for a terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def scrub(text: str, secrets: Iterable[str] = (), limit: int = 300) -> str:
    """Never echo an API key (AlphaVantage may quote it back), never a raw control character."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = re.sub(r"(apikey=)[^&\s\"']+", r"\1***", text, flags=re.IGNORECASE)
    return printable(" ".join(text.split()))[:limit]


def _quote(text: str, secrets: Iterable[str]) -> str:
    """A field as a rejection detail quotes it: key masked before trimming, escaped by repr."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    if "apikey=" in text.lower():
        text = re.sub(r"(apikey=)[^&\s\"']+", r"\1***", text, flags=re.IGNORECASE)
    return repr(text[:QUOTED_CHARS])


# --------------------------------------------------------------------------- physical lines


def _too_long(size: int) -> Unreadable:
    return Unreadable("line_too_long", f"line of {size:,} bytes, over the {MAX_LINE_BYTES:,}-byte limit (a calendar row is ~100)")


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> Unreadable:
    return Unreadable("bad_encoding", f"byte {exc.start + 1} of the line (0x{raw[exc.start]:02X}) is not UTF-8: {LATIN1_HINT}")


REPLACEMENT = Unreadable(
    "bad_encoding", "line holds U+FFFD (a replacement character: the text was mis-decoded before it was saved)"
)


def _text_problem(line: str) -> Unreadable | None:
    """What is wrong with a line already held as text (its length in UTF-8, its characters)."""
    if len(line) > MAX_LINE_BYTES // 4:
        size = len(line.encode("utf-8", "surrogatepass"))
        if size > MAX_LINE_BYTES:
            return _too_long(size)
    if "\ufffd" in line:
        return REPLACEMENT
    found = SURROGATE_RE.search(line)
    if found is not None:
        return Unreadable("bad_encoding", f"character {found.start() + 1} of the line is a lone surrogate, not text: {LATIN1_HINT}")
    return None


def _decode(raw: bytes) -> str | Unreadable:
    """One line of bytes (line ending removed) → text, or why not."""
    if len(raw) > MAX_LINE_BYTES:
        return _too_long(len(raw))
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _not_utf8(raw, exc)
    return REPLACEMENT if "\ufffd" in line else line


def _split_text(text: str, checked: bool) -> list[str | Unreadable]:
    """Complete lines (`text` ends with LF) without their endings; one CR before each LF dropped."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines: list[str | Unreadable] = text.split("\n")
    lines.pop()  # what follows the last LF: nothing
    wide = not text.isascii()
    if max(map(len, lines)) > (MAX_LINE_BYTES // 4 if wide else MAX_LINE_BYTES) or (
        wide and ("\ufffd" in text or (checked and SURROGATE_RE.search(text) is not None))
    ):
        lines = [_text_problem(line) or line for line in lines]  # type: ignore[arg-type]
    return lines


def _split_bytes(data: bytes) -> list[str | Unreadable]:
    """Complete lines of bytes (`data` ends with LF), decoded as a whole when UTF-8, else one by one."""
    try:
        return _split_text(data.decode("utf-8"), False)
    except UnicodeDecodeError:
        pass
    pieces = data.split(b"\n")
    pieces.pop()
    return [_decode(piece[:-1] if piece[-1:] == b"\r" else piece) for piece in pieces]


def _blocks_to_lines(blocks: Iterable[str | bytes]) -> Iterator[list[str | Unreadable]]:
    """Lists of physical lines from blocks of a text or byte stream, cut anywhere.

    A line is carried from one block to the next until its LF arrives; a line that grows past the
    limit is dropped and the rest of it skipped (only its length is kept), so memory stays at one
    block plus `MAX_LINE_BYTES` whatever the input holds.
    """
    carry: str | bytes = ""
    skipping = 0  # length so far of an over-long line being skipped
    ends_cr = False  # whether what was skipped so far ends with CR (not part of the line if LF follows)
    for block in blocks:
        if not block:
            continue
        is_bytes = isinstance(block, (bytes, bytearray))
        newline, cr = (b"\n", b"\r") if is_bytes else ("\n", "\r")
        if skipping:
            cut = block.find(newline)  # type: ignore[arg-type]
            if cut < 0:
                skipping, ends_cr = skipping + len(block), block[-1:] == cr
                continue
            yield [_too_long(skipping + cut - (block[cut - 1 : cut] == cr if cut else ends_cr))]
            skipping, block = 0, block[cut + 1 :]
        last = block.rfind(newline)  # type: ignore[arg-type]
        if last < 0:
            carry = carry + block if carry else block  # type: ignore[operator]
        else:
            whole = carry + block[: last + 1] if carry else block[: last + 1]  # type: ignore[operator]
            carry = block[last + 1 :]
            yield _split_bytes(bytes(whole)) if is_bytes else _split_text(whole, True)  # type: ignore[arg-type]
        if len(carry) > MAX_LINE_BYTES + 1:
            skipping, ends_cr, carry = len(carry), carry[-1:] == cr, ""
    if skipping:
        yield [_too_long(skipping - ends_cr)]
    elif carry:  # the last line, without a line ending
        last_line = carry[:-1] if carry[-1:] in ("\r", b"\r") else carry
        yield [_decode(bytes(last_line)) if isinstance(last_line, (bytes, bytearray)) else (_text_problem(last_line) or last_line)]


BLOCK_SIZE = 1 << 16  # 64 KiB of input per block


def _slices(body: str | bytes) -> Iterator[str | bytes]:
    for start in range(0, len(body), BLOCK_SIZE):
        yield body[start : start + BLOCK_SIZE]


def _reads(handle: IO[bytes] | IO[str]) -> Iterator[str | bytes]:
    while True:
        block = handle.read(BLOCK_SIZE)
        if not block:
            return
        yield block


def _path_blocks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        yield from _reads(handle)  # type: ignore[misc]


Source = str | bytes | Path | IO[bytes] | IO[str] | Iterable[str] | Iterable[bytes]


def physical_lines(source: Source) -> Iterator[str | Unreadable]:
    """Each physical line of `source`, without its line ending, as text or as `Unreadable`.

    str and bytes are whole bodies; a Path is opened and read in binary; a file object is read in
    blocks. Any other iterable holds lines: each item ends a line (with or without its LF) and an
    item holding more LFs is more lines.
    """
    blocks: Iterable[str | bytes]
    if isinstance(source, (str, bytes, bytearray)):
        blocks = _slices(source)
    elif isinstance(source, Path):
        blocks = _path_blocks(source)
    elif isinstance(source, io.IOBase):
        blocks = _reads(source)  # type: ignore[arg-type]
    else:
        blocks = map(_ended, source)
    return chain.from_iterable(_blocks_to_lines(blocks))


def _ended(item: str | bytes) -> str | bytes:
    newline = b"\n" if isinstance(item, (bytes, bytearray)) else "\n"
    return item if item.endswith(newline) else item + newline  # type: ignore[operator,arg-type]


# --------------------------------------------------------------------------- the first line


def _header_fields(line: str) -> list[str] | None:
    try:
        return [field.strip() for field in next(csv.reader([line], strict=True), [])]
    except csv.Error:
        return None


def _reply_text(first: str, lines: Iterator[str | Unreadable]) -> str | None:
    """A JSON/HTML reply, first line and what follows, up to `MAX_REPLY_BYTES`; None if unreadable."""
    parts, size = [first], len(first)
    for line in lines:
        if not isinstance(line, str):
            return None
        parts.append(line)
        size += len(line) + 1
        if size > MAX_REPLY_BYTES:
            break
    return "\n".join(parts)[:MAX_REPLY_BYTES]


def _json_field(text: str | None) -> tuple[str | None, object]:
    """(the AlphaVantage reply field it holds, its value) of a JSON text; ('', None) for other JSON,
    (None, None) when it is not JSON at all."""
    if text is None:
        return None, None
    try:
        payload = json.loads(text)
    except ValueError:
        return None, None
    if isinstance(payload, dict):
        for field in ("Error Message", "Note", "Information"):
            if field in payload:
                return field, payload[field]
    return "", payload


def _not_a_calendar(
    first: str | Unreadable,
    lines: Iterator[str | Unreadable],
    source_name: str,
    from_alphavantage: bool,
    secrets: tuple[str, ...],
) -> NotACalendarError | None:
    """Why the first non-blank line is not the calendar header, or None when it is."""
    if isinstance(first, Unreadable):
        if first.reason == "line_too_long":
            what = f"the first line is over {MAX_LINE_BYTES:,} bytes, not the calendar header (CR-only line endings? re-save with LF)"
        else:
            what = "the first line is not UTF-8 text (a Latin-1/cp1252 export? re-save it as UTF-8)"
        if from_alphavantage:
            return UpstreamError("a body that is not the calendar", what)
        return NotACalendarError("header" if first.reason == "line_too_long" else "encoding", f"{source_name}: {what}")
    stripped = first.lstrip()
    if stripped[:1] in ("{", "["):
        text = _reply_text(stripped, lines)
        field, value = _json_field(text)
        if from_alphavantage:
            if field:
                return UpstreamError(f"a JSON '{field}'", scrub(str(value), secrets))
            if field is None:
                return UpstreamError("malformed JSON", scrub(text or stripped, secrets))
            return UpstreamError("JSON instead of CSV", scrub(text or stripped, secrets))
        if field:
            return NotACalendarError("json", f"{source_name} holds an AlphaVantage JSON '{field}' reply (an error or quota answer), not the calendar CSV")
        return NotACalendarError("json", f"{source_name} starts like JSON, not the calendar CSV")
    if stripped[:1] == "<":
        if from_alphavantage:
            text = _reply_text(stripped, lines) or stripped
            return UpstreamError("HTML instead of CSV", scrub(re.sub(r"<[^>]*>", " ", text), secrets))
        return NotACalendarError("html", f"{source_name} starts like HTML, not the calendar CSV")
    fields = _header_fields(first)
    if fields is not None and tuple(fields) in (HEADER_6, HEADER_7):
        return None
    if from_alphavantage:
        return UpstreamError("an unexpected header", scrub(first, secrets))
    if "\x00" in first:
        return NotACalendarError("binary", f"{source_name} looks binary (NUL bytes in the first line), not the calendar CSV")
    if "\r" in first:
        return NotACalendarError(
            "header", f"{source_name}: the first line holds carriage returns (classic Mac line endings?): re-save it with LF or CRLF"
        )
    count = "unparsable quoting" if fields is None else f"{len(fields)} field{'' if len(fields) == 1 else 's'}"
    return NotACalendarError("header", f"{source_name}: the first line is not the calendar header ({count}; expected {EXPECTED_HEADER})")


def _is_information_row(fields: list[str]) -> bool:
    """The quota reply AlphaVantage sometimes sends as a valid header plus `I,n,f,o,r,m,a`."""
    return all(len(f) <= 1 for f in fields) and "".join(fields).lower().startswith("inform")


# --------------------------------------------------------------------------- rows


_VALID_DATES: dict[str, str] = {}  # a calendar holds a few hundred distinct dates: parse each once
_ESTIMATES: dict[str, str] = {}  # estimate text → canonical text, for the values that repeat


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


def canonical_estimate(text: str) -> str | None:
    """The one text an estimate is stored and sent as, or None when it is not acceptable.

    Plain decimal (`-?digits[.digits]`, no exponent, no sign `+`), then normalized the way DynamoDB
    normalizes numbers: no leading or trailing zeros, no exponent, no negative zero (`1.` → `1`,
    `.5` → `0.5`, `-0.00` → `0`, `007.50` → `7.5`, `1.370` → `1.37`). Refused: |estimate| ≥ 1e9,
    more than 38 significant digits, or a magnitude below 1E-130 (DynamoDB's number limits).
    """
    if ESTIMATE_RE.fullmatch(text) is None:
        return None
    if len(text) <= MAX_SIGNIFICANT_DIGITS and text != "-0" and CANONICAL_ESTIMATE_RE.fullmatch(text) is not None:
        return text
    sign, digits, exponent = Decimal(text).as_tuple()
    assert isinstance(exponent, int)  # a finite number: the pattern admits nothing else
    kept = len(digits)
    while kept and digits[kept - 1] == 0:
        kept -= 1
    if not kept:
        return "0"
    exponent += len(digits) - kept
    digits = digits[:kept]
    adjusted = exponent + kept - 1
    if kept > MAX_SIGNIFICANT_DIGITS or adjusted >= MAX_ESTIMATE_DIGITS or adjusted < MIN_ADJUSTED_EXPONENT:
        return None
    return format(Decimal((sign, digits, exponent)), "f")


def _estimate(text: str) -> str | None | Literal[False]:
    """Canonical decimal text, None for empty, False when it is not an acceptable number."""
    if text == "":
        return None
    known = _ESTIMATES.get(text)
    if known is not None:
        return known
    canonical = canonical_estimate(text)
    if canonical is None:
        return False
    if len(_ESTIMATES) < 100_000:
        _ESTIMATES[text] = canonical
    return canonical


def validate_row(fields: list[str], line: int, width: int, secrets: Iterable[str] = ()) -> EarningsRecord | Rejection:
    """One CSV row → record or rejection; `width` is the header's column count (6 or 7).

    `secrets` (the API key) are masked in a rejection's detail before it is trimmed.
    """
    if len(fields) != width:
        return Rejection(line, "column_count", f"expected {width} columns, got {len(fields)}")
    symbol = fields[0].strip()
    if SYMBOL_RE.fullmatch(symbol) is None:
        return Rejection(line, "bad_symbol", f"symbol {_quote(symbol, secrets)}")
    report = _iso_date(fields[2].strip())
    if report is None:
        return Rejection(line, "bad_report_date", f"reportDate {_quote(fields[2], secrets)}")
    fiscal = _iso_date(fields[3].strip())
    if fiscal is None:
        return Rejection(line, "bad_fiscal_date", f"fiscalDateEnding {_quote(fields[3], secrets)}")
    estimate = _estimate(fields[4].strip())
    if estimate is False:
        return Rejection(line, "bad_estimate", f"estimate {_quote(fields[4], secrets)}")
    currency = fields[5].strip()
    if CURRENCY_RE.fullmatch(currency) is None:
        return Rejection(line, "bad_currency", f"currency {_quote(currency, secrets)}")
    name = fields[1].strip()
    if len(name) > MAX_NAME_LENGTH or CONTROL_RE.search(name) is not None:
        return Rejection(line, "bad_name", f"name of {len(name)} characters or with control characters")
    time_of_day = None
    if width == 7:
        time_of_day = fields[6].strip() or None
        if time_of_day is not None and time_of_day not in TIMES_OF_DAY:
            return Rejection(line, "bad_time_of_day", f"timeOfTheDay {_quote(time_of_day, secrets)}")
    return EarningsRecord(
        asset_symbol=symbol,
        earnings_date=report,
        company_name=name,
        fiscal_date_ending=fiscal,
        estimate=estimate,
        currency=currency,
        time_of_the_day=time_of_day,
    )


def _quoted_fields(line: str) -> list[str] | Unreadable:
    """A line holding a quote, through the csv module (strict), on its own: it cannot run on."""
    try:
        return next(csv.reader([line], strict=True), [""])
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            return Unreadable("unterminated_quote", "a quoted field is not closed on this line (no field spans lines)")
        return Unreadable("malformed_quotes", f"malformed quoting: {exc}")


STRAY_CR = "carriage return inside the line (a line ending is LF or CRLF)"


def parse_csv(
    source: Source,
    secrets: Iterable[str] = (),
    *,
    source_name: str = "input",
    from_alphavantage: bool = False,
    stats: ParseStats | None = None,
) -> Iterator[EarningsRecord | Rejection]:
    """Stream records and rejections from a calendar, one per non-blank data line.

    Raises `NotACalendarError` (`UpstreamError` with `from_alphavantage`) before yielding anything
    when the first non-blank line is not the header (6 or 7 columns, quoted or not, an optional
    UTF-8 BOM) or the first data row is the quota row `I,n,f,o,r,m,a`. Blank lines are counted in
    `stats.blank_lines`. No `csv.Error` escapes a row: a line the csv module refuses is a rejection.
    """
    secret_list = tuple(s for s in secrets if s)
    counts = stats if stats is not None else ParseStats()
    lines = physical_lines(source)
    number = 0
    for line in lines:
        number += 1
        if isinstance(line, str):
            if number == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                counts.blank_lines += 1
                continue
        error = _not_a_calendar(line, lines, source_name, from_alphavantage, secret_list)
        if error is not None:
            raise error
        break
    else:
        if from_alphavantage:
            raise UpstreamError("an empty body", "no data at all")
        what = "is empty" if number == 0 else "holds only blank lines, no calendar header"
        raise NotACalendarError("empty", f"{source_name} {what}")
    assert isinstance(line, str)
    width = len(_header_fields(line) or ())
    for line in lines:  # the first data row: the quota reply must fail the sync before anything is sent
        number += 1
        if isinstance(line, str):
            if not line.strip():
                counts.blank_lines += 1
                continue
            if _is_information_row(line.split(",")):
                message = "request quota exhausted (Information)"
                if from_alphavantage:
                    raise UpstreamError("the quota row 'I,n,f,o,r,m,a'", message)
                raise NotACalendarError("quota_row", f"{source_name} holds AlphaVantage's quota row 'I,n,f,o,r,m,a' ({message})")
        lines = chain((line,), lines)
        number -= 1
        break
    yield from _rows(lines, number, width, secret_list, counts)


def detect_upstream_error(
    head: str | bytes, secrets: Iterable[str] = (), *, source_name: str = "input", from_alphavantage: bool = False
) -> NotACalendarError | None:
    """Why a body starting with `head` is not the calendar, or None: the checks `parse_csv` makes
    before it yields anything (a file or object is described; `from_alphavantage` quotes the reply)."""
    try:
        next(parse_csv(head, secrets, source_name=source_name, from_alphavantage=from_alphavantage), None)
    except NotACalendarError as exc:
        return exc
    return None


def _rows(
    lines: Iterator[str | Unreadable], number: int, width: int, secrets: tuple[str, ...], counts: ParseStats
) -> Iterator[EarningsRecord | Rejection]:
    """The hot loop: a line without a quote is split on commas, only quoted lines see the csv module."""
    split_quoted = _quoted_fields
    for line in lines:
        number += 1
        if line.__class__ is not str:
            yield Rejection(number, line.reason, line.detail)  # type: ignore[union-attr]
            continue
        if "\r" in line:  # type: ignore[operator]
            yield Rejection(number, "stray_cr", STRAY_CR)
            continue
        if '"' in line:  # type: ignore[operator]
            fields = split_quoted(line)  # type: ignore[arg-type]
            if fields.__class__ is Unreadable:
                yield Rejection(number, fields.reason, fields.detail)  # type: ignore[union-attr]
                continue
        else:
            fields = line.split(",")  # type: ignore[union-attr]
        if len(fields) != width and not line.strip():  # type: ignore[union-attr]
            counts.blank_lines += 1
            continue
        yield validate_row(fields, number, width, secrets)  # type: ignore[arg-type]


def symbols_contiguous(lines: Iterable[str | bytes | Unreadable]) -> bool:
    """Cheap pre-pass: does every symbol's rows form one run (true of AlphaVantage's sorted files)?

    Looks only at each line's text before its first comma, spaces and one pair of quotes removed,
    which for every row that validates is exactly its symbol; lines that cannot validate may only
    make it answer False, which costs memory (the caller then buffers), never correctness.
    """
    finished: set[str | bytes] = set()
    current: str | bytes | None = None
    iterator = iter(lines)
    next(iterator, None)  # header
    for line in iterator:
        if isinstance(line, Unreadable):
            continue
        symbol = line.split("," if isinstance(line, str) else b",", 1)[0].strip()  # type: ignore[arg-type]
        if symbol[:1] in ('"', b'"') and len(symbol) >= 2 and symbol[-1:] == symbol[:1]:
            symbol = symbol[1:-1].strip()
        if not symbol:
            continue
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


_FIELD_REASONS: tuple[tuple[str, RejectReason], ...] = (
    ("asset_symbol", "bad_symbol"),
    ("company_name", "bad_name"),
    ("earnings_date", "bad_report_date"),
    ("fiscal_date_ending", "bad_fiscal_date"),
    ("estimate", "bad_estimate"),
    ("currency", "bad_currency"),
    ("time_of_the_day", "bad_time_of_day"),
)


def record_problem(record: EarningsRecord) -> Rejection | None:
    """Re-apply the CSV rules to a record that arrived some other way (a message, a replay).

    Every field must be exactly what parsing would have produced, except the estimate: a plain
    decimal that is numerically equal to its canonical form (`1.40` for `1.4`, as messages queued
    before estimates were normalized carry) is accepted as it is.
    """
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
    if checked == record:
        return None
    for name, reason in _FIELD_REASONS:
        ours, theirs = getattr(checked, name), getattr(record, name)
        if ours == theirs:
            continue
        if name == "estimate" and theirs is not None and ESTIMATE_RE.fullmatch(theirs) is not None:
            continue  # canonical_estimate(theirs) == ours: the same number, written another way
        return Rejection(0, reason, f"{name} is not in canonical form")
    return None
