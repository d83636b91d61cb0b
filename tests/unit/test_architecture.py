"""The shape of the house, checked: layers, what ships, function sizes (docs/architecture.md).

The layer contracts live in pyproject.toml (`[tool.importlinter]`) and run here, so `make test`
fails as soon as the core imports the CLI or the emulator, an entry point imports another, code
that ships imports moto/yaml/werkzeug, or two modules of one package import each other.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("earnings_sync", "earnings_sync_cli", "earnings_sync_local", "producers", "consumers", "queries", "bench")
ENTRY_POINTS = ("producers", "consumers", "queries")
MAX_FUNCTION_LINES = 60


def _modules(*packages: str) -> Iterator[Path]:
    for package in packages:
        yield from sorted((ROOT / package).rglob("*.py"))


def functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text(), str(path))
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first decorator (or the `def`) to the last line of the body."""
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return (node.end_lineno or node.lineno) - first + 1


def test_import_linter_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert re.search(r"Contracts: (\d+) kept, 0 broken", done.stdout)


def test_the_contracts_name_every_first_party_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    roots = set(config["tool"]["importlinter"]["root_packages"])
    packaged = set(config["tool"]["setuptools"]["packages"])
    assert roots == packaged == set(FIRST_PARTY) - {"bench"}


def test_no_function_is_over_60_lines_outside_tests() -> None:
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length(node)} lines)"
        for path in _modules(*FIRST_PARTY)
        for node in functions(path)
        if length(node) > MAX_FUNCTION_LINES
    ]
    assert long == []


def _makefile_variable(name: str) -> list[str]:
    match = re.search(rf"^{name} := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, name
    return match.group(1).split()


def test_make_package_ships_the_core_and_the_entry_points_only() -> None:
    shipped = _makefile_variable("LAMBDA_PACKAGES")
    assert shipped == ["earnings_sync", *ENTRY_POINTS]
    assert "cp -r $(LAMBDA_PACKAGES) build/lambda/" in (ROOT / "Makefile").read_text()
    # every Handler template.yaml names lives in a shipped package
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=_IgnoringTags)
    handlers = [
        resource["Properties"]["Handler"]
        for resource in template["Resources"].values()
        if resource.get("Type") == "AWS::Serverless::Function"
    ]
    assert handlers and {handler.split(".")[0] for handler in handlers} <= set(ENTRY_POINTS)
    from tests.e2e.localstack_stack import CODE_PACKAGES

    assert list(CODE_PACKAGES) == shipped  # LocalStack deploys what `make package` ships


def test_shipped_code_never_imports_the_cli_the_emulator_or_their_libraries() -> None:
    """Belt and braces for the forbidden contract: lazy imports inside functions included."""
    banned = re.compile(r"^\s*(from|import)\s+(earnings_sync_cli|earnings_sync_local|moto|yaml|werkzeug)\b", re.M)
    offenders = [
        str(path.relative_to(ROOT))
        for path in _modules("earnings_sync", *ENTRY_POINTS)
        if banned.search(path.read_text())
    ]
    assert offenders == []


class _IgnoringTags(yaml.SafeLoader):
    """template.yaml's short-form intrinsics (!Ref, !Sub, ...) read as plain values."""


_IgnoringTags.add_multi_constructor("!", lambda loader, suffix, node: None)
