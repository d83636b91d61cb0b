"""The embedded emulator (`earnings_sync_local`), for `earnings-sync local` and the --csv options.

It needs the `local` extra (moto, PyYAML, werkzeug) and takes a while to load, so it is imported
here, when a command runs it, and nowhere else in the command line: every other command starts
fast and works without the extra, and a missing extra is a one-line usage error (exit 2).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import IO, TYPE_CHECKING

from earnings_sync_cli.errors import UsageError
from earnings_sync_cli.progress import Progress

if TYPE_CHECKING:
    from earnings_sync_local.pipeline import LocalSummary, RunningEmulator

LOCAL_EXTRA = ("moto", "yaml", "werkzeug")  # what `earnings-sync[local]` adds to the core's dependencies
INSTALL_HINT = "pip install 'earnings-sync[local]'"


def missing_local_extra() -> str | None:
    """The first module of the `local` extra this interpreter cannot import (found without importing it)."""
    return next((name for name in LOCAL_EXTRA if importlib.util.find_spec(name) is None), None)


def local_pipeline() -> ModuleType:
    """`earnings_sync_local.pipeline`, or a usage error saying to install the `local` extra."""
    missing = missing_local_extra()
    if missing is None:
        try:
            from earnings_sync_local import pipeline  # lazy: needs the `local` extra (see the module docstring)
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] not in LOCAL_EXTRA:
                raise
            missing = exc.name
        else:
            return pipeline
    raise UsageError(f"the embedded emulator needs the local extra ({missing} is not installed): {INSTALL_HINT}")


def run_local(
    csv_paths: Sequence[str],
    *,
    export: str | None = None,
    log_stream: IO[str] | None = None,
    on_ready: Callable[[LocalSummary, RunningEmulator], None] | None = None,
    events: str | None = None,
) -> LocalSummary:
    """The files as successive syncs on the embedded emulator (`earnings_sync_local.pipeline.run_local`),
    its progress on stderr's terminal line, wiped before `on_ready` or anything after it prints."""
    pipeline = local_pipeline()
    display = Progress(sys.stderr)  # silent unless stderr is a terminal

    def ready(summary: LocalSummary, emulator: RunningEmulator) -> None:
        display.done()
        if on_ready is not None:
            on_ready(summary, emulator)

    try:
        return pipeline.run_local(
            csv_paths, export=export, progress=display.show, log_stream=log_stream, on_ready=ready if on_ready else None, events=events
        )
    finally:
        display.done()
