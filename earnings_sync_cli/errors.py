"""How every `earnings-sync` command fails: an exit code and one line on stderr, never a traceback.

Exit codes: 0 success; 1 the work ran and a sync or a check failed (an incomplete ledger, audit
findings, a failed sync or replay, an AWS error while working); 2 bad usage or input (arguments,
files, output paths, an endpoint that cannot be reached, no credentials, a missing table or queue,
access denied), found before any work starts wherever it can be; 130 interrupted. `--debug`
re-raises instead, for the stack. Anything `describe` does not know is a bug and keeps its traceback.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

MAX_MESSAGE_LENGTH = 600
CREDENTIALS_HINT = "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (any values for an emulator at --endpoint-url)"
ENDPOINT_HINT = "check --endpoint-url, AWS_ENDPOINT_URL and AWS_REGION"

# Codes AWS answers when the credentials themselves are refused (unknown key, expired token, bad secret).
CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "MissingAuthenticationToken",
    }
)


class UsageError(Exception):
    """Bad command-line input or an unusable target (file, table, queue, endpoint): exit code 2."""


def one_line(text: str) -> str:
    """Whitespace runs become one space and every other unprintable character is escaped: a message
    quoting a file's bytes can never move the cursor, ring the bell or span lines."""
    flat = " ".join(text.split())
    escaped = "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii") for c in flat)
    return escaped if len(escaped) <= MAX_MESSAGE_LENGTH else escaped[: MAX_MESSAGE_LENGTH - 1] + "…"


def endpoint_of(url: str | None) -> str:
    """`scheme://host:port` of a request URL: the queue path or query string says nothing more."""
    if not url:
        return "the endpoint"
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else url


def where(client: Any) -> str:
    """A client's endpoint and region, to say where a table or queue was looked for."""
    return f"{endpoint_of(client.meta.endpoint_url)} ({client.meta.region_name})"


def error_code(exc: BaseException) -> str:
    return str(((getattr(exc, "response", None) or {}).get("Error") or {}).get("Code", ""))


def error_message(exc: BaseException) -> str:
    return str(((getattr(exc, "response", None) or {}).get("Error") or {}).get("Message", "")) or str(exc)


def is_missing_queue(exc: BaseException) -> bool:
    code = error_code(exc)
    return "NonExistentQueue" in code or code == "QueueDoesNotExist"


def _client_error(exc: Any) -> tuple[int, str]:
    code, message, operation = error_code(exc), error_message(exc), getattr(exc, "operation_name", "the request")
    if code == "ResourceNotFoundException":
        return EXIT_USAGE, f"not found ({operation}): {message}"
    if is_missing_queue(exc):
        return EXIT_USAGE, f"queue does not exist ({operation}): {message}"
    if "AccessDenied" in code:
        return EXIT_USAGE, f"access denied ({code} on {operation}): {message}"
    if code in CREDENTIAL_CODES:
        return EXIT_USAGE, f"AWS refused the credentials ({code}): {message}; {CREDENTIALS_HINT}"
    return EXIT_FAILED, f"{operation} failed: {code or 'error'}: {message}"


def describe(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, message) for an error a user can cause or fix; None for a bug."""
    from botocore import exceptions as boto

    from earnings_sync.replay import DlqError  # lazy: loads botocore; keeps the CLI's start fast

    if isinstance(exc, (UsageError, DlqError)):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, boto.NoCredentialsError):
        return EXIT_USAGE, f"no AWS credentials: {CREDENTIALS_HINT}"
    if isinstance(exc, boto.PartialCredentialsError):
        return EXIT_USAGE, f"incomplete AWS credentials ({exc}): {CREDENTIALS_HINT}"
    if isinstance(exc, (boto.ProfileNotFound, boto.NoRegionError)):
        return EXIT_USAGE, f"{exc}: check AWS_PROFILE, AWS_REGION and the AWS config files"
    if isinstance(exc, boto.EndpointConnectionError):
        return EXIT_USAGE, f"cannot reach {endpoint_of(exc.kwargs.get('endpoint_url'))}: {ENDPOINT_HINT}"
    if isinstance(exc, boto.ConnectTimeoutError):
        return EXIT_USAGE, f"cannot reach {endpoint_of(exc.kwargs.get('endpoint_url'))}: the connection timed out; {ENDPOINT_HINT}"
    if isinstance(exc, boto.ReadTimeoutError):
        return EXIT_USAGE, f"cannot reach {endpoint_of(exc.kwargs.get('endpoint_url'))}: no answer in time; {ENDPOINT_HINT}"
    if isinstance(exc, boto.ClientError):
        return _client_error(exc)
    if isinstance(exc, boto.BotoCoreError):
        return EXIT_FAILED, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):
        if exc.filename is not None:
            return EXIT_USAGE, f"{exc.filename}: {exc.strerror or exc}"
        return EXIT_USAGE, str(exc)
    return None
