"""The embedded AWS emulator: a moto server on a free loopback port, with boto3 pointed at it."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import urllib.request
from collections.abc import Iterator

from earnings_sync_local.lambda_runtime import REGION, patched_environ

_told: set[str] = set()  # why moto runs stock, said once per process
_told_lock = threading.Lock()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _say_once(reason: str) -> None:
    """One line on stderr the first time: a run on stock moto is slower but not wrong, so it goes on."""
    with _told_lock:
        if reason in _told:
            return
        _told.add(reason)
    print(f"embedded emulator: {reason}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def embedded_emulator() -> Iterator[str]:
    """A moto server on a free loopback port; yields its endpoint and points boto3 at it.

    moto runs with the speedups (costs closer to the real services, same answers; see
    moto_speedups) while the server is up, and is stock again once it has stopped.
    """
    from moto.server import ThreadedMotoServer

    from earnings_sync_local import moto_speedups

    with moto_speedups.installed() as refused:
        if refused is not None:
            _say_once(refused)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per request
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        endpoint = f"http://127.0.0.1:{port}"
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
        }
        try:
            # moto keeps its state per process, shared by every server in it: start from a clean slate.
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).read()
            with patched_environ(env):
                yield endpoint
        finally:
            server.stop()  # before the speedups are undone: no request is in flight when moto changes back
