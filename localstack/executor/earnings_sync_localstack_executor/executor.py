"""Runs each Lambda execution environment as a local process instead of a Docker container.

LocalStack's ExecutorEndpoint does the LocalStack side of the runtime protocol; the process side is
runtime.py (stdlib only), started with the project's Python so functions see the project's deps.
"""

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import CancelledError, Future
from pathlib import Path

import requests
from localstack import config
from localstack.aws.api.lambda_ import PackageType
from localstack.services.lambda_.invocation.executor_endpoint import (
    ExecutorEndpoint,
    InvokeSendError,
    ShutdownDuringStartup,
)
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.runtime_executor import (
    LambdaRuntimeException,
    RuntimeExecutor,
)
from localstack.utils.net import get_free_tcp_port

LOG = logging.getLogger(__name__)
HOST = "127.0.0.1"
RUNTIME_SCRIPT = Path(__file__).with_name("runtime.py")
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


def lambda_python() -> str:
    """The interpreter that runs functions: the project's, never LocalStack's own venv."""
    if explicit := os.environ.get("EARNINGS_SYNC_LAMBDA_PYTHON"):
        return explicit
    venv = os.environ.get("EARNINGS_SYNC_PROJECT_VENV")
    if venv and os.access(f"{venv}/bin/python", os.X_OK):
        return f"{venv}/bin/python"
    own_bin = Path(sys.prefix, "bin").resolve()
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != own_bin
    )
    found = shutil.which("python3", path=path)
    if not found:
        raise LambdaRuntimeException("no Python for Lambda functions: set EARNINGS_SYNC_LAMBDA_PYTHON")
    return found


class SubprocessRuntimeExecutor(RuntimeExecutor):
    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id=id, function_version=function_version)
        self.endpoint = ExecutorEndpoint(id, container_address=HOST)
        self.process: subprocess.Popen | None = None
        self.env_vars: dict[str, str] = {}
        self.log_path = Path(tempfile.gettempdir(), "lambda-processes", f"{id}.log")

    # --- lifecycle -------------------------------------------------------------------------
    def start(self, env_vars: dict[str, str]) -> None:
        cfg = self.function_version.config
        if cfg.package_type != PackageType.Zip or not str(cfg.runtime or "").startswith("python"):
            raise LambdaRuntimeException(
                f"the local-subprocess executor runs only Zip python functions, not {cfg.package_type} {cfg.runtime}"
            )
        self.env_vars = {key: str(value) for key, value in env_vars.items()}
        self.endpoint.start()
        self._spawn()

    def _spawn(self) -> None:
        """Start the runtime process and block until it reported ready (or failed)."""
        self.endpoint.startup_future = Future()
        self.endpoint.container_port = get_free_tcp_port()
        code_dir = self.function_version.config.code.get_unzipped_code_location()
        env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
        env.update(self.env_vars)
        env.update(
            LAMBDA_TASK_ROOT=str(code_dir),
            LAMBDA_RUNTIME_DIR=str(RUNTIME_SCRIPT.parent),
            LOCALSTACK_RUNTIME_ADDRESS=f"{HOST}:{self.endpoint.container_port}",
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        python = lambda_python()
        LOG.debug("Starting Lambda runtime %s with %s in %s", self.id, python, code_dir)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [python, str(RUNTIME_SCRIPT)],
                cwd=code_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            started = self._await(self.endpoint.startup_future)
        except CancelledError as e:
            raise ShutdownDuringStartup("Execution environment stopped during startup") from e
        if started is None:
            raise LambdaRuntimeException(
                f"Lambda runtime exited with code {self.process.returncode} during startup:\n{self.get_logs()}"
            )

    def _await(self, future: Future, timeout: float | None = None):
        """Wait for a future, but give up (return None) when the runtime process is gone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return future.result(timeout=0.05)
            except TimeoutError:
                pass
            if self.process.poll() is not None:
                return future.result() if future.done() else None
            if deadline is not None and time.monotonic() > deadline:
                self._kill()
                return None

    def _kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stop(self) -> None:
        self._kill()
        self.log_path.unlink(missing_ok=True)
        try:
            self.endpoint.shutdown()
        except Exception as e:
            LOG.debug("Error shutting down executor endpoint %s: %s", self.id, e)

    # --- addresses -------------------------------------------------------------------------
    def get_address(self) -> str:
        return HOST

    def get_endpoint_from_executor(self) -> str:
        return HOST

    def get_runtime_endpoint(self) -> str:
        port = config.GATEWAY_LISTEN[0].port
        return f"http://{HOST}:{port}{self.endpoint.get_endpoint_prefix()}"

    # --- invocations -----------------------------------------------------------------------
    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        if self.process is None or self.process.poll() is not None:
            LOG.debug("Lambda runtime %s is gone (timeout or crash); starting a fresh one", self.id)
            self._spawn()
        endpoint = self.endpoint
        endpoint.invocation_future = Future()
        endpoint.logs = None
        url = f"http://{HOST}:{endpoint.container_port}/invoke"
        response = requests.post(url, json=payload, proxies={"http": "", "https": ""}, timeout=30)
        if not response.ok:
            raise InvokeSendError(f"Invoke to {url} failed with status {response.status_code}")
        timeout = int(self.function_version.config.timeout) + 10  # the runtime enforces the real one
        result = self._await(endpoint.invocation_future, timeout=timeout)
        if result is None:
            request_id = payload["invoke-id"]
            error = {
                "errorType": "Runtime.ExitError",
                "errorMessage": f"RequestId: {request_id} Error: Runtime exited with status {self.process.returncode}",
            }
            return InvocationResult(request_id, json.dumps(error).encode(), is_error=True, logs=endpoint.logs or "")
        if result.is_error and b"Sandbox.Timedout" in (result.payload or b""):
            self._kill()  # its handler thread is still running: the next invoke gets a fresh process
        return result

    def get_logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-65536:]
        except OSError:
            return ""

    # --- versions --------------------------------------------------------------------------
    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        cfg = function_version.config
        if cfg.layers:
            LOG.warning("Lambda layers are ignored by the local-subprocess executor (%s)", function_version.qualified_arn)
        if cfg.code and cfg.package_type == PackageType.Zip:
            cfg.code.prepare_for_execution()

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        pass

    @classmethod
    def validate_environment(cls) -> bool:
        try:
            LOG.info("Lambda functions run as local processes with %s", lambda_python())
        except LambdaRuntimeException as e:
            LOG.warning("%s", e)
            return False
        return True
