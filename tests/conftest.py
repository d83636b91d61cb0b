"""Shared fixtures: fake AWS credentials, moto-backed clients, the table and queues from template.yaml."""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from earnings_sync_local import moto_speedups

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CSV = ROOT / "samples" / "earnings_calendar_2025-07.csv"
HEADER = "symbol,name,reportDate,fiscalDateEnding,estimate,currency"


XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # set in pytest-xdist's workers (`make test` runs two)


LOCALSTACK_MODULES = "tests/e2e/test_localstack_"  # the LocalStack tier: one worker runs all of it


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With several workers, a module's tests stay together (its module fixtures are set up once) and
    the LocalStack tier is one unit, so one worker starts LocalStack and runs all of it."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "localstack" if module.startswith(LOCALSTACK_MODULES) else module

    return ModuleScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def emulator_speedups() -> Iterator[contextlib.ExitStack]:
    """Every test runs on moto as `earnings-sync local` runs it, speedups installed, whatever the order
    or the selection of tests. A test that compares with moto's own answers asks for them with
    `moto_speedups.moto_as_shipped()`; one that installs and restores the speedups itself asks for
    `moto_uninstalled`."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(moto_speedups.installed())
        yield stack


@pytest.fixture
def moto_uninstalled(emulator_speedups: contextlib.ExitStack) -> Iterator[pytest.MonkeyPatch]:
    """Stock moto with no `installed()` block open for the test; the session's block again after it.

    Yields a MonkeyPatch for changing moto's version or shape: it is undone before the session's
    block is reopened (the `monkeypatch` fixture would be undone after, and the fence would refuse).
    """
    session_refusal = moto_speedups.refusal()
    emulator_speedups.close()
    try:
        with pytest.MonkeyPatch.context() as moto_changes:
            yield moto_changes
    finally:
        reopened = emulator_speedups.enter_context(moto_speedups.installed())
        assert reopened == session_refusal, f"the rest of the session would run on another emulator: {reopened}"


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never reach a real account: fake credentials, fixed region, no endpoint leaking in."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "earnings-sync")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "EarningsSync")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto server for the session, on a free loopback port.

    Server mode (not `mock_aws`) so that faults injected at botocore's `before-send` replace the
    HTTP exchange for real: in-process moto would still apply the request it was stubbing.
    """
    from moto.server import ThreadedMotoServer

    from earnings_sync_local.emulator import free_port

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A clean moto state with the queue, DLQ and table created from template.yaml."""
    from earnings_sync import aws as aws_clients
    from earnings_sync_local.template import create_resources, load_template

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).read()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    aws_clients._cached_client.cache_clear()
    dynamodb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=moto_endpoint)
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_endpoint)
    resources = create_resources(load_template(), dynamodb, sqs)
    yield {"dynamodb": dynamodb, "sqs": sqs, "resources": resources, "endpoint": moto_endpoint}
    aws_clients._cached_client.cache_clear()


@pytest.fixture
def handler_env(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The environment template.yaml gives the functions, resolved against the moto resources."""
    resources = aws["resources"]
    for function in ("ProducerFunction", "ConsumerFunction"):
        for name, value in resources.environments.get(function, {}).items():
            monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("ALLOW_PATH_EVENTS", "true")  # as the local runner: the tests hand the producer files
    return aws


def csv_text(*rows: str, header: str = HEADER, newline: str = "\n") -> str:
    return newline.join([header, *rows]) + newline
