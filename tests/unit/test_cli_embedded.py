"""The command line's side of the embedded emulator: loaded only when a command runs it, a missing
`local` extra said in one line, and the run's progress on one terminal line that is wiped before
anything else prints."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import earnings_sync_local
from earnings_sync_cli import embedded
from earnings_sync_cli.errors import UsageError
from earnings_sync_cli.progress import Progress
from earnings_sync_local import pipeline

ROOT = Path(__file__).resolve().parents[2]
CLEAR = "\r\033[K"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal_only() -> None:
    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        shown = Progress(stream)
        shown.show("sync 1/2: reading a.csv")
        shown.show("sync 1/2: 10/20 records consumed")
        shown.done()
    assert terminal.getvalue() == f"{CLEAR}sync 1/2: reading a.csv{CLEAR}sync 1/2: 10/20 records consumed{CLEAR}"
    assert pipe.getvalue() == ""
    Progress(None).show("nowhere")  # no stream at all: nothing to do, nothing raised


def test_the_run_s_progress_is_wiped_before_on_ready_and_at_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    seen: list[str] = []

    def run_local(paths: list[str], *, progress: Any, on_ready: Any, **_: Any) -> str:
        progress("sync 1/1: reading a.csv")
        on_ready("summary", "emulator")
        progress("sync 1/1: after the ready callback")
        return "summary"

    def ready(summary: str, emulator: str) -> None:
        seen.append(terminal.getvalue())

    monkeypatch.setattr(pipeline, "run_local", run_local)
    assert embedded.run_local(["a.csv"], on_ready=ready) == "summary"
    assert seen == [f"{CLEAR}sync 1/1: reading a.csv{CLEAR}"]
    assert terminal.getvalue().endswith(f"{CLEAR}sync 1/1: after the ready callback{CLEAR}")


def test_the_progress_line_is_wiped_when_the_run_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)

    def interrupted(paths: list[str], *, progress: Any, **_: Any) -> Any:
        progress("sync 1/1: reading a.csv")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_local", interrupted)
    with pytest.raises(KeyboardInterrupt):
        embedded.run_local(["a.csv"])
    assert terminal.getvalue() == f"{CLEAR}sync 1/1: reading a.csv{CLEAR}"


@pytest.mark.parametrize("missing", embedded.LOCAL_EXTRA)
def test_a_missing_local_extra_is_a_usage_error_naming_what_to_install(missing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # what an interpreter without it answers
    assert embedded.missing_local_extra() == missing
    with pytest.raises(UsageError) as raised:
        embedded.local_pipeline()
    assert str(raised.value) == (
        f"the embedded emulator needs the local extra ({missing} is not installed): pip install 'earnings-sync[local]'"
    )


def test_an_import_error_of_the_emulator_itself_is_not_blamed_on_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "earnings_sync_local.pipeline")
    monkeypatch.delattr(earnings_sync_local, "pipeline")
    monkeypatch.setitem(sys.modules, "earnings_sync_local.sqs_mapping", None)  # a bug in the emulator, not a missing extra
    with pytest.raises(ModuleNotFoundError):
        embedded.local_pipeline()


def test_with_the_extra_installed_the_pipeline_is_the_emulator_s() -> None:
    assert embedded.missing_local_extra() is None
    assert embedded.local_pipeline() is pipeline


def test_a_fresh_command_line_without_the_extra(tmp_path: Path) -> None:
    """In a new interpreter that cannot import moto, PyYAML or werkzeug: the other commands work and
    never load the emulator; `local` says what to install, in one line."""
    calendar = tmp_path / "calendar.csv"
    calendar.write_text("symbol,name,reportDate,fiscalDateEnding,estimate,currency\nAAPL,Apple Inc,2025-07-31,2025-06-30,1.42,USD\n")
    script = (
        "import sys\n"
        "for name in ('moto', 'yaml', 'werkzeug'):\n"
        "    sys.modules[name] = None\n"
        "from earnings_sync_cli.main import main\n"
        "codes = [main(['audit', '--endpoint-url', 'not a url']), main(['local', sys.argv[1]])]\n"
        "loaded = {name.split('.')[0] for name, module in sys.modules.items() if module is not None}\n"
        "print(codes, sorted(loaded & {'earnings_sync_local', 'moto', 'yaml', 'werkzeug'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(calendar)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[2, 2] []"
    audit, local = done.stderr.splitlines()
    assert audit.startswith("earnings-sync audit: invalid endpoint URL 'not a url'")  # boto3 and the core loaded
    assert local == (
        "earnings-sync local: the embedded emulator needs the local extra (moto is not installed): pip install 'earnings-sync[local]'"
    )
