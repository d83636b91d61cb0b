"""What Lambda gives a handler, locally: the context object, the environment, and how a call ends.

`invoke` calls a handler as Lambda does (its stdout holds the EMF metric lines, read back as metric
totals), and `InvocationAborted` stands for a runtime that ends an invocation midway.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from earnings_sync.observability import parse_emf

FAKE_ACCOUNT = "123456789012"


REGION = "us-east-1"


@contextlib.contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class LambdaContext:
    """The attributes Powertools and our handlers read from Lambda's context object."""

    def __init__(self, function_name: str, timeout_seconds: int, memory_mb: int = 512) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{FAKE_ACCOUNT}:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class InvocationAborted(BaseException):
    """The runtime ended an invocation midway: a timeout, running out of memory, a crash.

    A BaseException, so neither the handler's error handling nor the batch processor can catch it,
    as nothing in a function survives a real timeout; `invoke` turns it into a failed invocation.
    The fault-injection tests raise it from a botocore hook or a handler wrapper.
    """


def invoke(handler: Callable[[dict, Any], Any], event: dict, context: LambdaContext) -> tuple[Any, Counter[str], BaseException | None]:
    """Call a handler like Lambda does; returns (result, metrics it emitted, exception)."""
    captured = io.StringIO()
    result: Any = None
    error: BaseException | None = None
    with contextlib.redirect_stdout(captured):
        try:
            result = handler(event, context)
        except (Exception, InvocationAborted) as exc:  # noqa: BLE001 - a failed invocation is an outcome, as on Lambda
            error = exc
    return result, parse_emf(captured.getvalue().splitlines()), error


Handler = Callable[[dict, Any], Any]
