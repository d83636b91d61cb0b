"""LocalStack for the end-to-end tier (tests marked `e2e`).

* `LOCALSTACK_ENDPOINT` set (`make e2e`, docker compose, your own instance): the tests use it.
* Otherwise, unless `EARNINGS_SYNC_E2E=0`: when e2e tests are selected, `localstack/hostmode.sh
  start` runs in the background on a free loopback port while the other tests run (e2e tests are
  moved to the end of the run), and is stopped when the run ends. The first install takes about a
  minute and is cached (localstack/README.md).
* When it cannot start (no Python 3.13, no network for the first install, ...), the e2e tests are
  skipped and the reason is printed in the summary.

Nothing here touches AWS_ENDPOINT_URL: the moto-based tests keep monkeypatching it per test, and
the e2e tests build their clients for the LocalStack endpoint explicitly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from earnings_sync_local.emulator import free_port
from tests.conftest import LOCALSTACK_MODULES, XDIST_WORKER

ROOT = Path(__file__).resolve().parents[2]
HOSTMODE = ROOT / "localstack" / "hostmode.sh"
SWITCH = "EARNINGS_SYNC_E2E"
# First install (pip, npm, maybe apt-get) plus start; a cached install starts in about 10 s.
START_TIMEOUT = float(os.environ.get("EARNINGS_SYNC_E2E_START_TIMEOUT", "420"))
# LocalStack's idle event source mappings wait up to 10 s between polls by default.
POLL_BACKOFF = "LAMBDA_EVENT_SOURCE_MAPPING_MAX_BACKOFF_ON_EMPTY_POLL_SEC"


class HostModeLocalStack:
    """One `hostmode.sh start` in the background for this test run, on its own port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        fd, log = tempfile.mkstemp(prefix="earnings-sync-e2e-localstack-", suffix=".log")
        os.close(fd)
        self.log = Path(log)
        self.env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
        self.env["LOCALSTACK_PORT"] = str(self.port)
        self.env.setdefault(POLL_BACKOFF, "1")
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.finished_at: float | None = None
        self.seconds: float | None = None  # launch → healthy
        self.waited = 0.0  # how long the first e2e test waited for it
        self.error: str | None = None

    def launch(self) -> None:
        self.started_at = time.monotonic()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["bash", str(HOSTMODE), "start"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stoppable as a unit if interrupted
            )
        threading.Thread(target=self._watch, name="localstack-start", daemon=True).start()

    def _watch(self) -> None:
        assert self.process is not None
        self.process.wait()
        self.finished_at = time.monotonic()

    def wait(self) -> str:
        """The endpoint once healthy; raises RuntimeError with the reason when it did not start."""
        if self.error is not None:
            raise RuntimeError(self.error)
        if self.seconds is not None:
            return self.endpoint
        assert self.process is not None
        waiting = time.monotonic()
        try:
            code = self.process.wait(timeout=max(1.0, self.started_at + START_TIMEOUT - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._kill_starter()
            self.error = f"not healthy after {START_TIMEOUT:.0f}s (log: {self.log})"
            raise RuntimeError(self.error) from None
        if code != 0:
            self.error = f"`hostmode.sh start` exited with {code}: {self._reason()} (log: {self.log})"
            raise RuntimeError(self.error)
        now = time.monotonic()
        self.waited = now - waiting
        self.seconds = (self.finished_at or now) - self.started_at
        return self.endpoint

    def _reason(self) -> str:
        lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        return (errors or lines or ["no output"])[-1][:300]

    def _kill_starter(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def stop(self, *, keep_logs: bool) -> None:
        self._kill_starter()
        subprocess.run(["bash", str(HOSTMODE), "stop"], env=self.env, capture_output=True, timeout=60, check=False)
        if not keep_logs:  # a clean run leaves nothing behind; a failed one keeps LocalStack's log
            self.log.unlink(missing_ok=True)
            shutil.rmtree(self.run_dir, ignore_errors=True)

    @property
    def run_dir(self) -> Path:
        cache = Path(os.environ.get("EARNINGS_SYNC_CACHE") or Path.home() / ".cache" / "earnings-sync")
        return cache / "localstack" / f"run-{self.port}"


_instance: HostModeLocalStack | None = None
_skip_reason: str | None = None


def _terminal(config: pytest.Config):
    return config.pluginmanager.get_plugin("terminalreporter")


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: only the tests that will run count
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    global _instance, _skip_reason
    e2e = [item for item in items if item.get_closest_marker("e2e")]
    if not e2e:
        return
    strays = [item.nodeid for item in e2e if not item.nodeid.startswith(LOCALSTACK_MODULES)]
    if strays:  # the scheduler keeps the tier on one worker by module name
        raise pytest.UsageError(f"e2e tests belong in {LOCALSTACK_MODULES}*.py modules: {strays[0]}")
    others = [item for item in items if not item.get_closest_marker("e2e")]
    # One process: e2e last, LocalStack starting meanwhile. Several (xdist): every worker collects
    # the e2e tests, but the scheduler (tests/conftest.py) hands all of them to one worker, first,
    # while the others work; that worker starts LocalStack when its first e2e test asks for it.
    items[:] = e2e + others if XDIST_WORKER else others + e2e
    if config.getoption("collectonly") or os.environ.get("LOCALSTACK_ENDPOINT"):
        return
    if os.environ.get(SWITCH) == "0":
        _skip_reason = f"e2e tier off ({SWITCH}=0)"
        return
    _instance = HostModeLocalStack()
    if XDIST_WORKER:
        return
    _instance.launch()
    reporter = _terminal(config)
    if reporter is not None:
        reporter.write_line(
            f"e2e: starting LocalStack (host mode) on {_instance.endpoint} in the background for "
            f"{len(e2e)} e2e test(s); log {_instance.log}"
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _instance is not None and _instance.process is None:  # a worker that ran no e2e test
        _instance.log.unlink(missing_ok=True)
    elif _instance is not None:
        _instance.stop(keep_logs=exitstatus != 0 or _instance.error is not None)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _instance is not None:
        if _instance.seconds is not None:
            kept = f"; its log: {_instance.run_dir / 'localstack.log'}" if _instance.run_dir.exists() else ""
            terminalreporter.write_line(
                f"e2e: LocalStack host mode (port {_instance.port}) was healthy {_instance.seconds:.1f}s after launch, "
                f"the e2e tests waited {_instance.waited:.1f}s for it; stopped{kept}"
            )
        elif _instance.error is not None:
            terminalreporter.write_line(f"e2e: SKIPPED the e2e tier: LocalStack could not start: {_instance.error}", yellow=True)
    elif _skip_reason is not None:
        terminalreporter.write_line(f"e2e: SKIPPED the e2e tier: {_skip_reason}", yellow=True)


def _healthy(endpoint: str) -> dict:
    with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=5) as response:
        return json.load(response).get("services", {})


@pytest.fixture(scope="session")
def localstack_endpoint() -> str:
    """The LocalStack endpoint for this run, or a skip with the reason there is none."""
    explicit = os.environ.get("LOCALSTACK_ENDPOINT", "").rstrip("/")
    if explicit:
        try:
            _healthy(explicit)
        except OSError as exc:
            pytest.fail(f"LOCALSTACK_ENDPOINT={explicit} does not answer: {exc}", pytrace=False)
        return explicit
    if _skip_reason is not None:
        pytest.skip(_skip_reason)
    if _instance is None:  # pragma: no cover - the collection hook always launches one
        pytest.skip("LocalStack was not started for this run")
    if _instance.process is None:
        _instance.launch()
    try:
        return _instance.wait()
    except RuntimeError as exc:
        pytest.skip(f"e2e tier skipped: LocalStack could not start: {exc}")
