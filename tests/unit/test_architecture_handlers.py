"""The entry points stay thin: each `lambda_handler` parses the event, calls the core and returns, in at
most 30 lines (decorators included, read from the source: it holds for code no test runs); and a
function's cold start loads only its own domain code. No function anywhere is over 60 lines:
tests/unit/test_architecture.py."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from earnings_sync.observability import Handler
from tests.unit.test_architecture import functions, length

ROOT = Path(__file__).resolve().parents[2]
ENTRY_PACKAGES = ("producers", "consumers", "queries")
MAX_HANDLER_LINES = 30


def entry_modules() -> list[Path]:
    return sorted(path for package in ENTRY_PACKAGES for path in (ROOT / package).glob("*.py") if path.name != "__init__.py")


def handlers(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [node for node in functions(path) if node.name == "lambda_handler"]


def test_the_entry_modules_are_the_functions_the_template_names() -> None:
    with_handler = {".".join(path.relative_to(ROOT).with_suffix("").parts) for path in entry_modules() if handlers(path)}
    assert with_handler == {handler.value for handler in Handler}


@pytest.mark.parametrize("path", entry_modules(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_lambda_handler_is_at_most_30_lines(path: Path) -> None:
    too_long = {node.lineno: length(node) for node in handlers(path) if length(node) > MAX_HANDLER_LINES}
    assert not too_long, f"{path.name}: lambda_handler over {MAX_HANDLER_LINES} lines (line: length) {too_long}"


def test_the_measure_counts_decorators_and_the_whole_body() -> None:
    source = "@a\n@b(\n  1)\ndef f():\n    x = 1\n\n    return x\n"
    (node,) = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)]
    assert length(node) == 7


# What a function must not load at cold start: another function's domain code, and (outside the two
# batch consumers) Powertools' batch utilities, a large part of a consumer's import time.
NOT_LOADED = {
    Handler.PRODUCER: ("aws_lambda_powertools.utilities.batch", "earnings_sync.consumer", "earnings_sync.stream", "earnings_sync.upcoming"),
    Handler.CONSUMER: ("earnings_sync.producer", "earnings_sync.sources", "earnings_sync.stream", "earnings_sync.upcoming"),
    Handler.STREAM_CONSUMER: ("earnings_sync.producer", "earnings_sync.sources", "earnings_sync.consumer", "earnings_sync.upcoming"),
    Handler.UPCOMING: (
        "aws_lambda_powertools.utilities.batch", "earnings_sync.producer", "earnings_sync.consumer", "earnings_sync.stream",
        "earnings_sync.ledger",
    ),
    Handler.SYNC_MONITOR: (
        "aws_lambda_powertools.utilities.batch", "earnings_sync.producer", "earnings_sync.sources", "earnings_sync.consumer",
        "earnings_sync.stream", "earnings_sync.upcoming",
    ),
}


@pytest.mark.parametrize("handler", list(Handler), ids=lambda handler: handler.value)
def test_a_function_loads_only_its_own_domain_code(handler: Handler) -> None:
    code = f"import json, sys; import {handler.value}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    loaded = set(json.loads(done.stdout))
    assert handler.value in loaded
    assert not loaded & set(NOT_LOADED[handler])
