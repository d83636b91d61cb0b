"""Deterministic fault injection at the botocore layer: the real client, the real retry logic."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.awsrequest import AWSResponse


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any):
        yield self._body


def http_response(status: int, body: dict[str, Any], url: str = "http://fault") -> AWSResponse:
    raw = json.dumps(body).encode()
    return AWSResponse(url, status, {"Content-Type": "application/x-amz-json-1.0", "Content-Length": str(len(raw))}, _Raw(raw))


def dynamodb_error(code: str, message: str = "injected") -> Callable[[Any], AWSResponse]:
    return lambda request: http_response(400, {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message})


class Faults:
    """Answer the next N calls of an operation with a canned reply instead of sending them.

    `plan` is a list of reply factories (request → AWSResponse) or None (send the call for real).
    Every call is counted, so tests can assert how many attempts were made.
    """

    def __init__(self, client: Any, service: str, operation: str, plan: list[Callable[[Any], AWSResponse] | None]) -> None:
        self.plan = list(plan)
        self.calls = 0
        self.injected = 0
        client.meta.events.register(f"before-send.{service}.{operation}", self._before_send)

    def _before_send(self, request: Any, **_: Any) -> AWSResponse | None:
        self.calls += 1
        if not self.plan:
            return None
        reply = self.plan.pop(0)
        if reply is None:
            return None
        self.injected += 1
        return reply(request)


class FakeClock:
    """Time that only moves when the code under test sleeps."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def sync_id_for(synced_at: str, n: int = 0) -> str:
    """A real sync id for `synced_at` (what the producer would generate), told apart by `n`."""
    from earnings_sync.sync_identity import compact

    return f"{compact(synced_at)}-{n:08x}"


class FakeAlphaVantage:
    """AlphaVantage's query endpoint on 127.0.0.1 (a real HTTP server, for handlers that fetch by
    URL): every GET is answered with `body`, and its query string is kept."""

    def __init__(self, body: bytes) -> None:
        import http.server

        self.body = body
        self.queries: list[dict[str, list[str]]] = []
        fake = self

        class Answer(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                import urllib.parse

                fake.queries.append(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-download")
                self.end_headers()
                self.wfile.write(fake.body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/query"

    def __enter__(self) -> FakeAlphaVantage:
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
