from __future__ import annotations

import io
import urllib.error
from typing import Any

import pytest

from earnings_sync.producer import new_sync_identity
from earnings_sync.settings import Settings
from earnings_sync.sources import SourceError, fetch_alphavantage, resolve_api_key


class Flaky:
    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self, url: str, timeout: float) -> io.BytesIO:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return io.BytesIO(outcome)


def http_error(code: int) -> urllib.error.HTTPError:
    return urllib.error.HTTPError("https://x/?apikey=KEY123", code, "err", {}, None)  # type: ignore[arg-type]


def test_transient_failures_are_retried_with_backoff() -> None:
    sleeps: list[float] = []
    opener = Flaky(urllib.error.URLError("connection refused"), http_error(503), TimeoutError("slow"), b"csv")
    assert fetch_alphavantage("KEY123", attempts=4, opener=opener, sleep=sleeps.append) == b"csv"
    assert opener.calls == 4 and len(sleeps) == 3


def test_giving_up_names_the_problem_without_the_key() -> None:
    opener = Flaky(*[urllib.error.URLError("bad KEY123 host")] * 3)
    with pytest.raises(SourceError) as caught:
        fetch_alphavantage("KEY123", attempts=3, opener=opener, sleep=lambda _: None)
    assert "after 3 attempts" in str(caught.value) and "KEY123" not in str(caught.value)


def test_client_errors_are_not_retried() -> None:
    opener = Flaky(http_error(403))
    with pytest.raises(SourceError, match="HTTP 403"):
        fetch_alphavantage("KEY123", opener=opener, sleep=lambda _: None)
    assert opener.calls == 1


def test_rate_limited_http_429_is_retried() -> None:
    opener = Flaky(http_error(429), b"ok")
    assert fetch_alphavantage("K", opener=opener, sleep=lambda _: None) == b"ok"


def test_horizon_is_checked() -> None:
    with pytest.raises(SourceError, match="horizon"):
        fetch_alphavantage("K", horizon="1week", opener=Flaky())


def test_api_key_sources() -> None:
    assert resolve_api_key(Settings(alphavantage_api_key="direct"), None) == "direct"
    with pytest.raises(SourceError, match="ALPHAVANTAGE_API_KEY"):
        resolve_api_key(Settings(), None)

    class BrokenSsm:
        def get_parameter(self, **_: Any) -> dict:
            raise RuntimeError("AccessDenied")

    with pytest.raises(SourceError, match="/p/key"):
        resolve_api_key(Settings(alphavantage_api_key_parameter="/p/key"), BrokenSsm())


def test_settings_from_environment_are_typed_and_checked() -> None:
    settings = Settings.from_env({"MAX_RECEIVE_COUNT": "3", "TABLE_NAME": "t", "UNRELATED": "x"})
    assert settings.max_receive_count == 3 and settings.table_name == "t"
    with pytest.raises(ValueError, match="invalid configuration"):
        Settings.from_env({"MAX_RECEIVE_COUNT": "many"})


def test_sync_identity_is_sortable_and_checked() -> None:
    sync_id, synced_at = new_sync_identity("2025-07-19T06:00:00.000000Z")
    assert sync_id.startswith("20250719T060000000000Z-") and synced_at == "2025-07-19T06:00:00.000000Z"
    first, _ = new_sync_identity("2025-07-19T06:00:00.000000Z")
    assert first != sync_id
    with pytest.raises(ValueError, match="synced_at"):
        new_sync_identity("yesterday")


def test_a_body_cut_short_is_retried_like_a_connection_error() -> None:
    import http.client

    opener = Flaky(http.client.IncompleteRead(b"symbol,na"), b"csv")
    assert fetch_alphavantage("K", opener=opener, sleep=lambda _: None) == b"csv" and opener.calls == 2


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://www.alphavantage.co/query", None),
        ("http://127.0.0.1:8080/query", None),
        ("https://www.alphavantage.co/qu ery", "whitespace"),
        ("https://www.alphavantage.co/query\n", "whitespace"),
        ("ftp://www.alphavantage.co/query", "http:// or https://"),
        ("https:///query", "http:// or https://"),
    ],
)
def test_the_url_setting_is_checked_before_any_request(url: str, problem: str | None) -> None:
    from earnings_sync.sources import url_problem

    found = url_problem(url)
    assert (found is None) if problem is None else (problem in found and url not in found)
    if problem is not None:
        opener = Flaky()
        with pytest.raises(SourceError, match="ALPHAVANTAGE_URL"):
            fetch_alphavantage("KEY123", base_url=url, opener=opener)
        assert opener.calls == 0
