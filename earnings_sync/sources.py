"""Where a snapshot comes from: AlphaVantage over HTTPS, an S3 object, or a local file."""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from earnings_sync.backoff import backoff_delays
from earnings_sync.records import printable, scrub
from earnings_sync.settings import Settings

HORIZONS = ("3month", "6month", "12month")


class SourceError(Exception):
    """The snapshot could not be obtained (network, HTTP status, missing object or file, an event
    naming a source this function does not read); the text never holds the API key."""


def resolve_api_key(settings: Settings, ssm: Any | None) -> str:
    """The key from ALPHAVANTAGE_API_KEY, else from the SSM SecureString parameter."""
    if settings.alphavantage_api_key:
        return settings.alphavantage_api_key
    if settings.alphavantage_api_key_parameter and ssm is not None:
        try:
            response = ssm.get_parameter(Name=settings.alphavantage_api_key_parameter, WithDecryption=True)
        except Exception as exc:  # noqa: BLE001 - the message names the parameter, never the value
            raise SourceError(f"cannot read SSM parameter {settings.alphavantage_api_key_parameter}: {exc}") from exc
        return response["Parameter"]["Value"]
    raise SourceError("no AlphaVantage API key: set ALPHAVANTAGE_API_KEY or ALPHAVANTAGE_API_KEY_PARAMETER")


def url_problem(url: str) -> str | None:
    """Why ALPHAVANTAGE_URL cannot be requested, or None; never quotes it (it may carry a key)."""
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "ALPHAVANTAGE_URL contains whitespace or control characters"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "ALPHAVANTAGE_URL must be an http:// or https:// URL with a host"
    return None


def _masked(text: str, api_key: str, url: str) -> str:
    """An error text with the request URL and the key taken out."""
    if url:
        text = text.replace(url, "<url>")
    return scrub(text, [api_key] if api_key else [])


def fetch_alphavantage(
    api_key: str,
    *,
    horizon: str = "3month",
    symbol: str | None = None,
    base_url: str = "https://www.alphavantage.co/query",
    timeout: float = 20.0,
    attempts: int = 3,
    opener: Callable[..., Any] = urllib.request.urlopen,
    sleep: Callable[[float], None] = time.sleep,
) -> bytes:
    """GET the EARNINGS_CALENDAR CSV; retries connection errors and 5xx, never echoes the key.

    Whatever the opener raises ends as a `SourceError` whose text holds neither the key nor the
    URL; a URL the HTTP client refuses (`http.client.InvalidURL`) is not retried.
    """
    if horizon not in HORIZONS:
        raise SourceError(f"horizon must be one of {', '.join(HORIZONS)}, got {printable(repr(horizon))[:40]}")
    bad_url = url_problem(base_url)
    if bad_url is not None:
        raise SourceError(bad_url)
    query = {"function": "EARNINGS_CALENDAR", "horizon": horizon, "apikey": api_key}
    if symbol:
        query["symbol"] = symbol
    url = f"{base_url}?{urllib.parse.urlencode(query)}"
    delays = iter(backoff_delays(attempts - 1, base=1.0, cap=10.0))
    while True:
        try:
            with opener(url, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
            if exc.code < 500 and exc.code != 429:
                raise SourceError(f"AlphaVantage answered {problem}") from None
        except http.client.InvalidURL:
            raise SourceError("ALPHAVANTAGE_URL is refused by the HTTP client (invalid URL)") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            problem = f"{type(exc).__name__}: {_masked(str(reason), api_key, url)}"
        except Exception as exc:  # noqa: BLE001 - anything else from the opener: a clear error, never the URL
            raise SourceError(f"cannot fetch from AlphaVantage ({type(exc).__name__}: {_masked(str(exc), api_key, url)})") from None
        delay = next(delays, None)
        if delay is None:
            raise SourceError(f"AlphaVantage unreachable after {attempts} attempts ({problem})")
        sleep(delay)


def read_s3_object(s3: Any, bucket: str, key: str) -> bytes:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:  # noqa: BLE001 - botocore's text names the error code, never the content
        raise SourceError(f"cannot read {printable(f's3://{bucket}/{key}')}: {printable(str(exc))}") from exc
