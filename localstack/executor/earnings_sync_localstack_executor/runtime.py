"""Lambda runtime for one execution environment. Standard library only: it runs under the
project's Python (not LocalStack's), with the function's unzipped code as working directory.

Protocol (LocalStack's ExecutorEndpoint): load the handler, POST {endpoint}/status/{id}/ready
(or .../error), serve POST /invoke, and answer each invocation with
{endpoint}/invocations/<request id>/logs, then .../response or .../error.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import threading
import time
import traceback
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

ENDPOINT = os.environ["LOCALSTACK_RUNTIME_ENDPOINT"]
RUNTIME_ID = os.environ["LOCALSTACK_RUNTIME_ID"]
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
current_request_id = ""


def post(path: str, body) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        ENDPOINT + path, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    OPENER.open(request, timeout=30).close()


class Capture:
    """Replaces sys.stdout/sys.stderr: passes output through and keeps it for the invocation logs."""

    lock = threading.Lock()
    chunks: list = []

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        with Capture.lock:
            Capture.chunks.append(text)
        self.stream.write(text)
        self.stream.flush()
        return len(text)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return False

    def __getattr__(self, name):
        return getattr(self.stream, name)

    @classmethod
    def take(cls) -> str:
        with cls.lock:
            text = "".join(cls.chunks)
            cls.chunks.clear()
        return text


class LambdaLogHandler(logging.StreamHandler):
    """Root logger handler formatted like the AWS Python runtime's."""

    def __init__(self, stream):
        super().__init__(stream)
        self.setFormatter(logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s", "%Y-%m-%dT%H:%M:%S"))

    def emit(self, record):
        record.aws_request_id = current_request_id
        super().emit(record)


class LambdaContext:
    def __init__(self, invocation: dict, deadline: float):
        self.aws_request_id = invocation["invoke-id"]
        self.invoked_function_arn = invocation.get("invoked-function-arn")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def error_body(exc: BaseException, error_type: str | None = None) -> dict:
    return {
        "errorMessage": str(exc),
        "errorType": error_type or type(exc).__name__,
        "requestId": current_request_id,
        "stackTrace": traceback.format_list(
            [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename != __file__]
        ),
    }


def load_handler():
    """Import `module.sub.function` from the code directory, as the AWS Python runtime does."""
    module_name, _, function_name = os.environ["_HANDLER"].rpartition(".")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except SyntaxError as e:
        raise RuntimeError(error_body(e, "Runtime.UserCodeSyntaxError")) from e
    except ImportError as e:
        raise RuntimeError({"errorType": "Runtime.ImportModuleError", "stackTrace": [],
                            "errorMessage": f"Unable to import module '{module_name}': {e}"}) from e
    handler = getattr(module, function_name, None)
    if handler is None:
        body = {"errorType": "Runtime.HandlerNotFound", "stackTrace": [],
                "errorMessage": f"Handler '{function_name}' missing on module '{module_name}'"}
        raise RuntimeError(body)
    return handler


def invoke(handler, invocation: dict) -> None:
    global current_request_id
    request_id = current_request_id = invocation["invoke-id"]
    os.environ["_X_AMZN_TRACE_ID"] = invocation.get("trace-id") or ""
    timeout = float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT") or 3)
    started = time.monotonic()
    context = LambdaContext(invocation, started + timeout)
    outcome = {}

    def run():
        try:
            outcome["result"] = handler(json.loads(invocation.get("payload") or "{}"), context)
        except BaseException as e:  # noqa: BLE001 - SystemExit from user code is an error too
            outcome["error"] = error_body(e)

    print(f"START RequestId: {request_id} Version: {context.function_version}")
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    timed_out = worker.is_alive()
    body = b""
    if timed_out:
        error = {"errorType": "Sandbox.Timedout",
                 "errorMessage": f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds"}
    elif "error" in outcome:
        error = outcome["error"]
    else:
        error = None
        try:
            body = json.dumps(outcome.get("result")).encode()
        except (TypeError, ValueError) as e:
            error = {"errorType": "Runtime.MarshalError", "stackTrace": [],
                     "errorMessage": f"Unable to marshal response: {e}"}
    if error:
        print(f"[ERROR] {error['errorType']}: {error['errorMessage']}", *error.get("stackTrace", []), sep="\n")
    elapsed_ms = (time.monotonic() - started) * 1000
    print(f"END RequestId: {request_id}")
    print(f"REPORT RequestId: {request_id}\tDuration: {elapsed_ms:.2f} ms\t"
          f"Billed Duration: {int(elapsed_ms) + 1} ms\tMemory Size: {context.memory_limit_in_mb} MB")
    post(f"/invocations/{request_id}/logs", {"logs": Capture.take()})
    if error:
        post(f"/invocations/{request_id}/error", error)
    else:
        post(f"/invocations/{request_id}/response", body)
    if timed_out:
        os._exit(1)  # the handler thread cannot be stopped; the executor starts a fresh process


class InvokeRequestHandler(BaseHTTPRequestHandler):
    handler = None

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/invoke":
            self.send_error(404)
            return
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.wfile.flush()
        invoke(type(self).handler, json.loads(body))

    def log_message(self, format, *args):
        pass


def main() -> None:
    sys.path[0] = os.environ["LAMBDA_TASK_ROOT"]  # not this file's directory
    sys.stdout, sys.stderr = Capture(sys.stdout), Capture(sys.stderr)
    logging.getLogger().addHandler(LambdaLogHandler(sys.stdout))

    host, port = os.environ["LOCALSTACK_RUNTIME_ADDRESS"].rsplit(":", 1)
    try:
        InvokeRequestHandler.handler = load_handler()
    except RuntimeError as e:
        post(f"/status/{RUNTIME_ID}/error", e.args[0])
        sys.exit(1)
    except Exception as e:  # error raised by the module's own init code
        post(f"/status/{RUNTIME_ID}/error", error_body(e))
        sys.exit(1)
    server = HTTPServer((host, int(port)), InvokeRequestHandler)
    post(f"/status/{RUNTIME_ID}/ready", {})
    server.serve_forever()


if __name__ == "__main__":
    main()
