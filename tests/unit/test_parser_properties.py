"""For any input, the parser accounts for every physical line exactly once, or refuses the whole
body before yielding anything; every way of handing it the same bytes gives the same answer."""

from __future__ import annotations

import io
import re
from decimal import Decimal
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from earnings_sync import records
from earnings_sync.records import (
    CANONICAL_ESTIMATE_RE,
    EarningsRecord,
    NotACalendarError,
    ParseStats,
    Rejection,
    canonical_estimate,
    parse_csv,
    record_problem,
    symbols_contiguous,
)
from tests.conftest import HEADER

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADER_LINE = HEADER.encode()


def physical_line_count(body: bytes) -> int:
    """LF-terminated lines, plus a last line without its LF."""
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


def outcome(body: bytes) -> tuple[list[EarningsRecord | Rejection], ParseStats] | None:
    """(items, stats) of a parse, or None when the body was refused before anything was yielded."""
    stats = ParseStats()
    items: list[EarningsRecord | Rejection] = []
    try:
        for item in parse_csv(body, stats=stats):
            items.append(item)
    except NotACalendarError:
        assert items == [], "refused after yielding"
        return None
    return items, stats


def assert_every_line_accounted_for(body: bytes) -> tuple[list[EarningsRecord | Rejection], ParseStats] | None:
    result = outcome(body)
    if result is None:
        return None
    items, stats = result
    lines = physical_line_count(body)
    assert 1 + len(items) + stats.blank_lines == lines
    rejected_lines = [item.line for item in items if isinstance(item, Rejection)]
    assert len(set(rejected_lines)) == len(rejected_lines)
    assert all(2 <= line <= lines for line in rejected_lines)
    assert all(item.detail.isprintable() for item in items if isinstance(item, Rejection))
    assert not any("\ufffd" in item.company_name for item in items if isinstance(item, EarningsRecord))
    return result


@FAST
@given(st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(lambda tail: HEADER_LINE + b"\n" + tail)))
@example(HEADER_LINE + b'\nZ1,"unterminated,2025-08-01,2025-06-30,1,USD\nZ2,b,2025-08-01,2025-06-30,1,USD')
@example(HEADER_LINE + b"\r\n\xff\xfe\r\n\r\r\n\n \n")
def test_any_bytes_are_refused_whole_or_accounted_line_by_line(body: bytes) -> None:
    assert_every_line_accounted_for(body)


# --------------------------------------------------------------------------- structured bodies

VALID = "valid"
LINES = {
    "row": (lambda n: f"S{n},Name {n},2025-08-01,2025-06-30,1.50,USD".encode(), VALID),
    "quoted_row": (lambda n: f'"S{n}","N, ""{n}""","2025-08-01","2025-06-30","","USD"'.encode(), VALID),
    "blank": (lambda n: b" " * (n % 3), "blank"),
    "unterminated": (lambda n: f'S{n},"Broken,2025-08-01,2025-06-30,1,USD'.encode(), "unterminated_quote"),
    "malformed": (lambda n: f'S{n},"A"B,2025-08-01,2025-06-30,1,USD'.encode(), "malformed_quotes"),
    "latin1": (lambda n: f"S{n},Soci\xe9t\xe9,2025-08-01,2025-06-30,1,EUR".encode("cp1252"), "bad_encoding"),
    "replacement": (lambda n: f"S{n},Bad\ufffdName,2025-08-01,2025-06-30,1,EUR".encode(), "bad_encoding"),
    "too_long": (lambda n: f"S{n},{'x' * (70 + n)},2025-08-01,2025-06-30,1,USD".encode(), "line_too_long"),
    "stray_cr": (lambda n: f"S{n},Na\rme,2025-08-01,2025-06-30,1,USD".encode(), "stray_cr"),
    "bad_estimate": (lambda n: f"S{n},Name,2025-08-01,2025-06-30,1e{n},USD".encode(), "bad_estimate"),
}
garbage = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"").replace(b",", b""))
line_kind = st.sampled_from(sorted(LINES))
ending = st.sampled_from([b"\n", b"\r\n"])


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, list[str | None]]:
    """A calendar body and, per data line, the outcome it must get (None: garbage, anything goes)."""
    parts = [draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + HEADER_LINE + draw(ending)]
    expected: list[str | None] = []
    kinds = draw(st.lists(st.one_of(line_kind, st.just("garbage")), max_size=25))
    for number, kind in enumerate(kinds):
        if kind == "garbage":
            content, result = draw(garbage), None
        else:
            make, result = LINES[kind]
            content = make(number)
        last = number == len(kinds) - 1
        parts.append(content + (draw(st.sampled_from([b"", b"\n", b"\r\n"])) if last else draw(ending)))
        expected.append(result)
    return b"".join(parts), expected


@FAST
@given(bodies(), st.sampled_from([5, 64, 1 << 18]))
def test_every_line_of_a_calendar_gets_its_own_outcome_whatever_the_input_form(
    case: tuple[bytes, list[str | None]], block_size: int
) -> None:
    body, expected = case
    with mock.patch.object(records, "MAX_LINE_BYTES", 64), mock.patch.object(records, "BLOCK_SIZE", block_size):
        result = assert_every_line_accounted_for(body)
        assert result is not None
        items, stats = result
        lines = [line for line in re.split(b"(?<=\n)", body) if line]
        forms: list[object] = [io.BytesIO(body), lines]  # a file object; an iterable of lines
        try:
            forms.append(body.decode("utf-8"))
        except UnicodeDecodeError:
            pass
        for form in forms:
            again = ParseStats()
            assert list(parse_csv(form, stats=again)) == items  # type: ignore[arg-type]
            assert again.blank_lines == stats.blank_lines
    found = {item.line: item.reason for item in items if isinstance(item, Rejection)}
    symbols = iter(item.asset_symbol for item in items if isinstance(item, EarningsRecord))
    for number, result in enumerate(expected, start=2):
        if result == VALID:
            assert next(symbols) == f"S{number - 2}" and number not in found
        elif result == "blank":
            assert number not in found
        elif result is not None:  # garbage (None) is a blank line or a rejection: counted above
            assert found.get(number) == result
    assert next(symbols, None) is None


@FAST
@given(bodies())
def test_a_file_reads_like_its_bytes(tmp_path_factory: object, case: tuple[bytes, list[str | None]]) -> None:
    body, _ = case
    path = Path(tmp_path_factory.mktemp("body")) / "calendar.csv"  # type: ignore[attr-defined]
    path.write_bytes(body)
    assert list(parse_csv(path)) == list(parse_csv(body))


@FAST
@given(st.lists(st.sampled_from(["A", "B", "C", " A", '"B"', '"C" ', "", "D,"]), max_size=12))
def test_the_contiguity_pre_pass_never_says_yes_when_parsed_symbols_repeat(symbols: list[str]) -> None:
    body = HEADER + "\n" + "".join(f"{s},n,2025-08-01,2025-06-30,1,USD\n" for s in symbols)
    parsed = [item.asset_symbol for item in parse_csv(body) if isinstance(item, EarningsRecord)]
    runs = [s for i, s in enumerate(parsed) if i == 0 or parsed[i - 1] != s]
    if symbols_contiguous(records.physical_lines(body)):
        assert len(runs) == len(set(runs))


# --------------------------------------------------------------------------- estimates


plain_decimals = st.builds(
    lambda sign, whole, frac, dot: f"{sign}{whole}{'.' if dot or frac else ''}{frac}",
    st.sampled_from(["", "-"]),
    st.text("0123456789", max_size=12),
    st.text("0123456789", max_size=30),
    st.booleans(),
).filter(lambda text: any(ch.isdigit() for ch in text))


@FAST
@given(plain_decimals)
@example("1.")
@example(".5")
@example("-0.00")
@example("007.50")
def test_canonical_estimate_is_idempotent_and_numerically_equal(text: str) -> None:
    canonical = canonical_estimate(text)
    value = Decimal(text)
    significant = len("".join(map(str, value.as_tuple().digits)).strip("0"))
    if canonical is None:  # out of DynamoDB's range or too precise: so is every other way of writing it
        assert abs(value) >= 10**9 or significant > 38 or (value != 0 and value.adjusted() < -130)
        return
    assert canonical_estimate(canonical) == canonical
    assert Decimal(canonical) == Decimal(text)
    assert CANONICAL_ESTIMATE_RE.fullmatch(canonical) and "e" not in canonical.lower() and canonical != "-0"
    record = EarningsRecord("A", "2025-08-19", "n", "2025-07-31", text, "USD")
    assert record_problem(record) is None  # a queued message may carry any plain form of the number
