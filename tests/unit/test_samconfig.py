"""samconfig.toml, the SAM CLI's defaults, agrees with template.yaml and the README's deploy steps."""

from __future__ import annotations

import re
import shlex
import tomllib
from typing import Any

import pytest

from earnings_sync_local.template import build_context, load_template
from tests.conftest import ROOT

SAMCONFIG = ROOT / "samconfig.toml"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return tomllib.loads(SAMCONFIG.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def overrides(text: str) -> dict[str, str]:
    """`Key="value" Other="x y"` as the SAM CLI reads it: shell-style words of Key=value."""
    pairs = [word.partition("=") for word in shlex.split(text)]
    assert all(sep == "=" and name for name, sep, _ in pairs), text
    return {name: value for name, _, value in pairs}


def sections(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`default.deploy` -> its parameters, for every environment and command in the file."""
    return {
        f"{environment}.{command}": table["parameters"]
        for environment, commands in config.items()
        if isinstance(commands, dict)
        for command, table in commands.items()
        if isinstance(table, dict) and "parameters" in table
    }


def test_the_file_is_a_version_0_1_sam_config_with_a_deploy_section(config: dict[str, Any]) -> None:
    assert config["version"] == 0.1
    deploy = config["default"]["deploy"]["parameters"]
    assert config["default"]["global"]["parameters"]["stack_name"] == "earnings-sync"
    assert deploy["resolve_s3"] is True and deploy["confirm_changeset"] is True


def test_every_parameter_override_is_a_template_parameter_with_a_value_it_accepts(config: dict[str, Any], template: dict[str, Any]) -> None:
    found = {name: overrides(parameters["parameter_overrides"]) for name, parameters in sections(config).items() if "parameter_overrides" in parameters}
    assert "default.deploy" in found
    for section, values in found.items():
        unknown = sorted(set(values) - set(template["Parameters"]))
        assert unknown == [], f"{section}: not parameters of template.yaml: {unknown}"
        build_context(template, parameter_overrides=values)  # AllowedValues, AllowedPattern, Min/MaxValue


def test_the_deploy_overrides_are_the_templates_defaults(config: dict[str, Any], template: dict[str, Any]) -> None:
    """The file writes the defaults out for editing; a changed template default must change here too."""
    deployed = overrides(config["default"]["deploy"]["parameters"]["parameter_overrides"])
    assert deployed == {name: str(template["Parameters"][name]["Default"]) for name in deployed}


def test_the_api_key_parameter_is_the_one_the_readme_stores_the_key_in(config: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stored = re.search(r"aws ssm put-parameter --name (\S+) --type SecureString", readme)
    assert stored is not None
    assert overrides(config["default"]["deploy"]["parameters"]["parameter_overrides"])["AlphaVantageApiKeyParameter"] == stored.group(1)


def test_iam_capability_is_enough_for_the_templates_roles(config: dict[str, Any], template: dict[str, Any]) -> None:
    """CAPABILITY_IAM covers the roles SAM generates; a named role would need CAPABILITY_NAMED_IAM."""
    assert config["default"]["deploy"]["parameters"]["capabilities"] == "CAPABILITY_IAM"
    named = [
        logical_id
        for logical_id, resource in template["Resources"].items()
        if resource.get("Type", "").startswith("AWS::IAM::") and any(key.endswith("Name") for key in resource.get("Properties", {}))
    ]
    assert named == []


def test_the_readmes_sync_examples_name_the_configured_stack(config: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stacks = set(re.findall(r"earnings-sync sync --stack ([\w-]+)", readme)) - {"NAME"}
    assert stacks == {config["default"]["global"]["parameters"]["stack_name"]}
