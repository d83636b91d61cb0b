from __future__ import annotations

import pytest

from earnings_sync.records import (
    EarningsRecord,
    NotACalendarError,
    ParseStats,
    Rejection,
    UpstreamError,
    canonical_estimate,
    group_by_symbol,
    parse_csv,
    record_problem,
)
from tests.conftest import HEADER, SAMPLE_CSV, csv_text

GOOD = "A,Agilent Technologies Inc,2025-08-19,2025-07-31,1.37,USD"


def parse(text: str | bytes) -> list[EarningsRecord | Rejection]:
    return list(parse_csv(text))


def test_valid_row_becomes_record() -> None:
    [record] = parse(csv_text(GOOD))
    assert record == EarningsRecord("A", "2025-08-19", "Agilent Technologies Inc", "2025-07-31", "1.37", "USD")
    assert record.key == ("A", "2025-08-19")


def test_crlf_and_lf_give_the_same_records() -> None:
    rows = [GOOD, "AABVF,AABVF,2025-09-11,2025-07-31,,USD"]
    assert parse(csv_text(*rows, newline="\r\n")) == parse(csv_text(*rows))


def test_empty_estimate_is_none_and_negative_four_decimals_kept() -> None:
    empty, negative = parse(csv_text("AABVF,AABVF,2025-09-11,2025-07-31,,USD", "X,Y,2025-09-11,2025-07-31,-0.0123,CAD"))
    assert empty.estimate is None
    assert negative.estimate == "-0.0123"
    assert negative.currency == "CAD"


def test_quoted_name_with_commas_and_odd_symbols() -> None:
    rows = parse(csv_text('BRK.B,"Berkshire Hathaway, Inc. (Class B)",2025-08-02,2025-06-30,4.5,USD', "AAM-PA,x,2025-08-02,2025-06-30,,USD", "B_OLD,b,2025-08-02,2025-06-30,,USD"))
    assert [r.asset_symbol for r in rows] == ["BRK.B", "AAM-PA", "B_OLD"]
    assert rows[0].company_name == "Berkshire Hathaway, Inc. (Class B)"


def test_seven_column_file_reads_time_of_the_day() -> None:
    header = HEADER + ",timeOfTheDay"
    pre, empty = parse(csv_text(GOOD + ",pre-market", GOOD.replace("A,", "AA,", 1) + ",", header=header))
    assert pre.time_of_the_day == "pre-market"
    assert empty.time_of_the_day is None


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("A,Agilent,2025-08-19,2025-07-31,1.37", "column_count"),
        ("A,Agilent,2025-08-19,2025-07-31,1.37,USD,extra", "column_count"),
        ("a b,Agilent,2025-08-19,2025-07-31,1.37,USD", "bad_symbol"),
        (",Agilent,2025-08-19,2025-07-31,1.37,USD", "bad_symbol"),
        ("A,Agilent,2025-02-30,2025-07-31,1.37,USD", "bad_report_date"),
        ("A,Agilent,19/08/2025,2025-07-31,1.37,USD", "bad_report_date"),
        ("A,Agilent,2025-08-19,2025-13-01,1.37,USD", "bad_fiscal_date"),
        ("A,Agilent,2025-08-19,2025-07-31,abc,USD", "bad_estimate"),
        ("A,Agilent,2025-08-19,2025-07-31,1e5,USD", "bad_estimate"),
        ("A,Agilent,2025-08-19,2025-07-31,NaN,USD", "bad_estimate"),
        ("A,Agilent,2025-08-19,2025-07-31,99999999999,USD", "bad_estimate"),
        ("A,Agilent,2025-08-19,2025-07-31,1.37,usd", "bad_currency"),
        ("A,Agilent,2025-08-19,2025-07-31,1.37,US", "bad_currency"),
        ("A,Agilent,2025-08-19,2025-07-31,1.37,", "bad_currency"),
        ('A,"Agi\x01lent",2025-08-19,2025-07-31,1.37,USD', "bad_name"),
        ('A,"Agilent,2025-08-19,2025-07-31,1.37,USD', "unterminated_quote"),
        ('A,"Agi"lent,2025-08-19,2025-07-31,1.37,USD', "malformed_quotes"),
        ("A,Agi\rlent,2025-08-19,2025-07-31,1.37,USD", "stray_cr"),
        (f"A,{'x' * 9000},2025-08-19,2025-07-31,1.37,USD", "line_too_long"),
        ("A,Agi\ufffdlent,2025-08-19,2025-07-31,1.37,USD", "bad_encoding"),
        ("A,Agi\udce9lent,2025-08-19,2025-07-31,1.37,USD", "bad_encoding"),  # a lone surrogate (surrogateescape)
        (f"A,Agilent,2025-08-19,2025-07-31,1.{'0' * 37}1,USD", "bad_estimate"),  # 39 significant digits
    ],
)
def test_each_rejection_reason_with_line_number(row: str, reason: str) -> None:
    good, rejected = parse(csv_text(GOOD, row))
    assert isinstance(good, EarningsRecord)
    assert isinstance(rejected, Rejection)
    assert rejected.reason == reason
    assert rejected.line == 3
    assert rejected.detail


def test_bad_time_of_day_rejected() -> None:
    [rejected] = parse(csv_text(GOOD + ",lunchtime", header=HEADER + ",timeOfTheDay"))
    assert isinstance(rejected, Rejection) and rejected.reason == "bad_time_of_day"


def test_a_quoted_field_never_spans_lines() -> None:
    rows = parse(csv_text('A,"two', 'lines",2025-08-19,2025-07-31,1,USD', "B,b,bad,2025-07-31,1,USD", GOOD))
    assert [(r.line, r.reason) for r in rows if isinstance(r, Rejection)] == [
        (2, "unterminated_quote"), (3, "column_count"), (4, "bad_report_date"),
    ]
    assert rows[-1] == EarningsRecord("A", "2025-08-19", "Agilent Technologies Inc", "2025-07-31", "1.37", "USD")


@pytest.mark.parametrize(
    ("body", "kind", "fragment"),
    [
        ('{"Note": "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute."}', "Note", "call frequency"),
        ('{"Information": "We have detected your API key as DEMOKEY123 and our standard API rate limit is 25 requests per day."}', "Information", "25 requests per day"),
        ('{"Error Message": "Invalid API call. Please retry or visit the documentation (https://x/?apikey=DEMOKEY123)."}', "Error Message", "Invalid API call"),
        ("", "empty", "no data"),
        ("   \r\n", "empty", "no data"),
        ("<html><body><h1>502 Bad Gateway</h1></body></html>", "HTML", "502 Bad Gateway"),
        ('{"weird": 1}', "JSON instead of CSV", "weird"),
        ("{not json", "malformed JSON", "not json"),
        ("date,open,close\n2025-01-01,1,2\n", "unexpected header", "date,open,close"),
        (HEADER + "\nI,n,f,o,r,m,a\n", "I,n,f,o,r,m,a", "quota"),
    ],
)
def test_upstream_error_shapes_are_detected_without_leaking_the_key(body: str, kind: str, fragment: str) -> None:
    with pytest.raises(UpstreamError) as caught:
        list(parse_csv(body.encode(), secrets=["DEMOKEY123"], from_alphavantage=True))
    message = str(caught.value)
    assert kind in caught.value.kind
    assert fragment in message
    assert "DEMOKEY123" not in message


@pytest.mark.parametrize(
    ("body", "kind", "description"),
    [
        ('{"Information": "We have detected your API key as DEMOKEY123, 25 requests per day."}', "json", "JSON 'Information' reply"),
        ('{"weird": 1}', "json", "starts like JSON"),
        ("<html><body><h1>502 Bad Gateway</h1></body></html>", "html", "starts like HTML"),
        ("", "empty", "snapshot.csv is empty"),
        ("   \r\n\n", "empty", "snapshot.csv holds only blank lines, no calendar header"),
        ("date,open,close\n2025-01-01,1,2\n", "header", "not the calendar header (3 fields; expected symbol,name,"),
        ("root:x:0:0:root:/root:/bin/bash\n", "header", "(1 field; expected"),
        ("\x7fELF\x02\x01\x00\x00\x00", "binary", "looks binary"),
        (HEADER + "\nI,n,f,o,r,m,a\n", "quota_row", "quota row"),
        ("symbol,name,reportDate\rA,b,c\r", "header", "carriage returns (classic Mac line endings?)"),
        ('"unclosed,header\n', "header", "(unparsable quoting; expected"),
        ("x" * 9000, "header", "the first line is over 8,192 bytes"),
    ],
)
def test_other_sources_are_described_never_quoted(body: str, kind: str, description: str) -> None:
    with pytest.raises(NotACalendarError) as caught:
        list(parse_csv(body.encode(), secrets=["DEMOKEY123"], source_name="snapshot.csv"))
    message = str(caught.value)
    assert not isinstance(caught.value, UpstreamError) and caught.value.kind == kind
    assert description in message and "snapshot.csv" in message
    for content in ("DEMOKEY123", "Bad Gateway", "weird", "date,open", "root", "ELF", "upstream"):
        assert content not in message


@pytest.mark.parametrize(
    ("body", "kind", "fragment"),
    [
        (b"Soci\xe9t\xe9 DEMOKEY123\n", "not the calendar", "not UTF-8"),
        (b"x" * 9000, "not the calendar", "over 8,192 bytes"),
        (b'{"Note":\n"caf\xe9 DEMOKEY123"}', "malformed JSON", '{"Note":'),  # a reply line that is not UTF-8
        (  # cut at 64 KiB, so not JSON
            b'{"Information": "quota",\n' + b"".join(b'"k%d": "%s",\n' % (i, b"y" * 1000) for i in range(70)) + b'"end": 1}',
            "malformed JSON",
            '{"Information": "quota",',
        ),
        (b"[1, 2]", "JSON instead of CSV", "[1, 2]"),
    ],
)
def test_an_alphavantage_reply_that_cannot_be_read_is_still_an_upstream_error(body: bytes, kind: str, fragment: str) -> None:
    with pytest.raises(UpstreamError) as caught:
        list(parse_csv(body, secrets=["DEMOKEY123"], from_alphavantage=True))
    assert kind in caught.value.kind and fragment in str(caught.value) and "DEMOKEY123" not in str(caught.value)
    assert len(str(caught.value)) < 400 and str(caught.value).isprintable()


def test_duplicate_key_later_row_wins_and_is_counted() -> None:
    stats = ParseStats()
    seen: list[tuple[str, str]] = []
    groups = group_by_symbol(
        parse_csv(csv_text(
            "CAKE,Cheesecake Factory Inc,2025-07-29,2025-04-30,0.879,USD",
            "CAKE,Cheesecake Factory Inc,2025-07-29,2025-06-30,1.05,USD",
            "A,bad,2025-99-01,2025-06-30,1,USD",
        )),
        stats,
        on_duplicate=lambda a, b: seen.append((a.fiscal_date_ending, b.fiscal_date_ending)),
    )
    assert groups["CAKE"]["2025-07-29"].fiscal_date_ending == "2025-06-30"
    assert stats.rows == 3 and stats.records == 1 and stats.duplicates == 1
    assert stats.rejected == {"bad_report_date": 1}
    assert seen == [("2025-04-30", "2025-06-30")]


def test_real_sample_parses_completely() -> None:
    stats = ParseStats()
    with open(SAMPLE_CSV, newline="") as handle:
        groups = group_by_symbol(parse_csv(handle), stats)
    assert stats.rows == 10286
    assert stats.rejected == {}
    assert stats.duplicates == 1  # CAKE 2025-07-29, two fiscal periods
    assert stats.records == sum(len(g) for g in groups.values()) == 10285


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("1.", "1"),
        (".5", "0.5"),
        ("-.25", "-0.25"),
        ("-0", "0"),
        ("-0.00", "0"),
        ("007.50", "7.5"),
        ("1.370", "1.37"),
        ("100", "100"),
        ("0.0001000", "0.0001"),
        ("-999999999.99", "-999999999.99"),
        ("0." + "0" * 40 + "25", "0." + "0" * 40 + "25"),
    ],
)
def test_estimate_canonical_forms(text: str, canonical: str) -> None:
    [record] = parse(csv_text(f"A,n,2025-08-19,2025-07-31,{text},USD"))
    assert isinstance(record, EarningsRecord) and record.estimate == canonical == canonical_estimate(text)
    assert canonical_estimate(canonical) == canonical


def test_record_problem_accepts_a_queued_estimate_written_another_way_and_nothing_else() -> None:
    import msgspec

    record = EarningsRecord("A", "2025-08-19", "n", "2025-07-31", "1.4", "USD")
    for estimate in ("1.40", "01.4", "1.4000", "1.4"):  # what producers sent before estimates were normalized
        assert record_problem(msgspec.structs.replace(record, estimate=estimate)) is None
    for estimate in (" 1.4", "1.4e0", "", "+1.4", "1.4.0"):
        assert record_problem(msgspec.structs.replace(record, estimate=estimate)).reason == "bad_estimate"
    for field, value, reason in (
        ("company_name", " n", "bad_name"),
        ("asset_symbol", "A ", "bad_symbol"),
        ("currency", " USD", "bad_currency"),
        ("time_of_the_day", "", "bad_time_of_day"),
    ):
        assert record_problem(msgspec.structs.replace(record, **{field: value})).reason == reason


def test_record_problem_rechecks_records_from_messages() -> None:
    assert record_problem(EarningsRecord("A", "2025-08-19", "n", "2025-07-31", "1", "USD")) is None
    assert record_problem(EarningsRecord("A", "2025-08-32", "n", "2025-07-31", "1", "USD")).reason == "bad_report_date"
    assert record_problem(EarningsRecord(" A", "2025-08-19", "n", "2025-07-31", "1", "USD")) is not None


def test_contiguity_check_and_streaming_groups() -> None:
    from earnings_sync.records import iter_symbol_groups, symbols_contiguous

    runs = csv_text("A,a,2025-08-01,2025-06-30,1,USD", "A,a,2025-08-01,2025-06-30,2,USD", "B,b,2025-08-02,2025-06-30,1,USD")
    scattered = csv_text("A,a,2025-08-01,2025-06-30,1,USD", "B,b,2025-08-02,2025-06-30,1,USD", "A,a,2025-08-01,2025-06-30,2,USD")
    assert symbols_contiguous(runs.splitlines()) is True
    assert symbols_contiguous(scattered.splitlines()) is False
    for text, contiguous in ((runs, True), (scattered, False)):
        stats = ParseStats()
        groups = list(iter_symbol_groups(parse_csv(text), stats, contiguous=contiguous))
        assert [[r.asset_symbol for r in g] for g in groups] == [["A"], ["B"]]
        assert groups[0][0].estimate == "2" and stats.duplicates == 1 and stats.records == 2


def test_the_readme_explains_every_rejection_reason() -> None:
    from earnings_sync.records import REJECT_REASONS
    from tests.conftest import ROOT

    producer_section = (ROOT / "README.md").read_text().split("### The producer", 1)[1].split("\n### ", 1)[0]
    table = [line for line in producer_section.splitlines() if line.startswith("| `")]
    documented = {reason.strip().strip("`") for line in table for reason in line.split("|")[1].split(",")}
    assert documented == set(REJECT_REASONS)


def test_detect_upstream_error_makes_the_checks_a_parse_makes_first() -> None:
    from earnings_sync.records import detect_upstream_error

    assert detect_upstream_error(csv_text(GOOD)) is None and detect_upstream_error(HEADER) is None
    described = detect_upstream_error('{"Information": "25 requests per day"}', source_name="q.csv")
    assert isinstance(described, NotACalendarError) and described.kind == "json" and "25 requests" not in str(described)
    quoted = detect_upstream_error(b'{"Note": "slow down, KEY9"}', ["KEY9"], from_alphavantage=True)
    assert isinstance(quoted, UpstreamError) and str(quoted) == "upstream returned a JSON 'Note': slow down, ***"
