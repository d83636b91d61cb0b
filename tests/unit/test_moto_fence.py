"""The emulator's moto speedups patch the pinned moto only, in the shape they were written against,
and put every attribute back when the last `installed()` block ends."""

from __future__ import annotations

import importlib.metadata
import re
import threading
import tomllib
from collections.abc import Callable
from typing import Any

import pytest

from earnings_sync_local import moto_speedups
from tests.conftest import ROOT

_MISSING = object()


def _moto_attributes() -> dict[tuple[type, str], Any]:
    """What each patched class holds under each patched name right now (its own dict, not inherited)."""
    return {(owner, name): vars(owner).get(name, _MISSING) for owner, name in moto_speedups.patched_attributes()}


def _unchanged(before: dict[tuple[type, str], Any]) -> list[str]:
    return [f"{owner.__name__}.{name}" for (owner, name), value in before.items() if vars(owner).get(name, _MISSING) is value]


def _changed(before: dict[tuple[type, str], Any]) -> list[str]:
    return [f"{owner.__name__}.{name}" for (owner, name), value in before.items() if vars(owner).get(name, _MISSING) is not value]


def test_the_pin_is_pyprojects_pin() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in ("local", "dev"):
        pins = [m.group(1) for spec in extras[extra] if (m := re.fullmatch(r"moto(?:\[[\w,]+\])?==(\S+)", spec.replace(" ", "")))]
        assert pins == [moto_speedups.PINNED_MOTO_VERSION], f"the `{extra}` extra pins moto {pins}"


def test_the_suite_runs_on_the_patched_emulator() -> None:
    """Whatever else runs first: the comparison tests compare something only if this holds."""
    assert importlib.metadata.version("moto") == moto_speedups.PINNED_MOTO_VERSION
    assert moto_speedups.refusal() is None
    assert moto_speedups.active()
    assert {(patch.owner, patch.name) for patch in moto_speedups._applied or ()} == set(moto_speedups.patched_attributes())
    patched = _moto_attributes()
    with moto_speedups.moto_as_shipped():
        assert not moto_speedups.active()
        assert _unchanged(patched) == []
        stock = _moto_attributes()
    assert moto_speedups.active() and _unchanged(stock) == []


def test_another_moto_version_is_refused_in_one_line_and_moto_stays_stock(moto_uninstalled: pytest.MonkeyPatch) -> None:
    monkeypatch = moto_uninstalled
    stock = _moto_attributes()
    monkeypatch.setattr(moto_speedups, "_installed_moto_version", lambda: "5.3.0")
    with moto_speedups.installed() as refused:
        assert refused is not None and "\n" not in refused
        assert "moto 5.3.0" in refused and moto_speedups.PINNED_MOTO_VERSION in refused and "running on stock moto" in refused
        assert not moto_speedups.active()
        assert _changed(stock) == []
    monkeypatch.setattr(moto_speedups, "_installed_moto_version", lambda: None)
    assert moto_speedups.refusal() == "moto is not installed (the embedded emulator needs the `local` extra)"


def _other_send_message(self: Any, queue_name: str, message_body: str) -> Any:
    raise AssertionError("never called")


def _change_send_message(monkeypatch: pytest.MonkeyPatch) -> str:
    from moto.sqs.models import SQSBackend

    monkeypatch.setattr(SQSBackend, "send_message", _other_send_message)
    return "moto.sqs.models.SQSBackend.send_message takes (self, queue_name, message_body), not (self, queue_name, message_body,"


def _remove_scan(monkeypatch: pytest.MonkeyPatch) -> str:
    from moto.dynamodb.models.table import Table

    monkeypatch.delattr(Table, "scan")
    return "moto.dynamodb.models.table.Table.scan is missing"


def _attributes_become_a_method(monkeypatch: pytest.MonkeyPatch) -> str:
    from moto.sqs.models import Queue

    monkeypatch.setattr(Queue, "attributes", lambda self: {})
    return "moto.sqs.models.Queue.attributes is not a property"


def _a_called_function_changes(monkeypatch: pytest.MonkeyPatch) -> str:
    import moto.core.utils

    monkeypatch.setattr(moto.core.utils, "unix_time", lambda: 0.0)
    return "moto.core.utils.unix_time takes (), not (dt)"


@pytest.mark.parametrize("change", [_change_send_message, _remove_scan, _attributes_become_a_method, _a_called_function_changes])
def test_a_moto_of_another_shape_is_refused_and_stays_stock(change: Callable[[pytest.MonkeyPatch], str], moto_uninstalled: pytest.MonkeyPatch) -> None:
    expected = change(moto_uninstalled)
    changed = _moto_attributes()
    with moto_speedups.installed() as refused:
        assert refused is not None and expected in refused and "\n" not in refused
        assert refused.startswith(f"moto {moto_speedups.PINNED_MOTO_VERSION} is not the shape")
        assert not moto_speedups.active()
        assert _changed(changed) == []


@pytest.mark.usefixtures("moto_uninstalled")
def test_every_patched_attribute_is_motos_own_after_the_last_block() -> None:
    stock = _moto_attributes()
    from moto.dynamodb.models.table import Table

    owners = {owner for owner, _ in stock}
    whole_classes = {owner: dict(vars(owner)) for owner in owners}
    assert not moto_speedups.active()
    with moto_speedups.installed() as refused:
        assert refused is None and moto_speedups.active()
        assert _unchanged(stock) == []  # every listed attribute is replaced...
        touched = {(owner, name) for owner in owners for name in set(vars(owner)) | set(whole_classes[owner]) if vars(owner).get(name, _MISSING) is not whole_classes[owner].get(name, _MISSING)}
        assert touched == set(stock)  # ...and nothing else on those classes
        with moto_speedups.installed():
            patched_query = Table.query
        assert Table.query is patched_query and moto_speedups.active()  # the outer block still holds
    assert not moto_speedups.active()
    assert _changed(stock) == []
    assert {owner: dict(vars(owner)) for owner in owners} == whole_classes
    assert "_serialize_result" not in vars(next(owner for owner, name in stock if name == "_serialize_result"))  # inherited again


@pytest.mark.usefixtures("moto_uninstalled")
def test_blocks_in_two_threads_count_together() -> None:
    stock = _moto_attributes()
    entered, leave = threading.Event(), threading.Event()

    def other_thread() -> None:
        with moto_speedups.installed():
            entered.set()
            leave.wait(10)

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        assert entered.wait(10)
        with moto_speedups.installed():
            assert moto_speedups.active()
        assert moto_speedups.active() and _unchanged(stock) == []  # the other thread's block is open
    finally:
        leave.set()
        thread.join(10)
    assert not moto_speedups.active() and _changed(stock) == []


@pytest.mark.usefixtures("moto_uninstalled")
def test_moto_as_shipped_puts_every_patch_back_for_its_block_whatever_is_open() -> None:
    stock = _moto_attributes()
    with moto_speedups.installed(), moto_speedups.installed():
        with moto_speedups.moto_as_shipped():
            assert _changed(stock) == [] and not moto_speedups.active()
            with moto_speedups.installed() as refused, moto_speedups.moto_as_shipped():  # nested either way: still stock
                assert refused is None and _changed(stock) == []
            assert _changed(stock) == []
        assert moto_speedups.active() and _unchanged(stock) == []
    assert _changed(stock) == []
    with moto_speedups.moto_as_shipped():  # nothing installed: a no-op
        assert _changed(stock) == []
    assert not moto_speedups.active()


@pytest.mark.usefixtures("moto_uninstalled")
def test_a_failed_block_still_restores() -> None:
    stock = _moto_attributes()
    with pytest.raises(RuntimeError, match="inside"), moto_speedups.installed():
        assert moto_speedups.active()
        raise RuntimeError("inside")
    assert not moto_speedups.active() and _changed(stock) == []
