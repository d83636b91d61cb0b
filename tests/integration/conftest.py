"""Fixtures of the stream consumer's tests: the table written through the conflict rules, and its stream."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.stream_support import StreamReader, Table


@pytest.fixture
def table(handler_env: dict[str, Any]) -> Table:
    return Table(handler_env)


@pytest.fixture
def stream(handler_env: dict[str, Any]) -> StreamReader:
    return StreamReader(handler_env)
