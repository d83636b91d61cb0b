"""Reads the SAM `template.yaml` so the local emulator builds exactly what CloudFormation deploys.

The template is the single source of truth: queue attributes, the redrive policy, the table's
keys, index and stream, the consumer's batch size and timeout all come from its Properties, so a
change there reaches local runs and tests without a second copy to keep in step. Only the logical
IDs of the resources are known here.

Three layers:
* `load_template` parses the YAML, turning CloudFormation short-form tags into long-form dicts;
* `build_context` / `resolve` evaluate the intrinsic functions the template uses;
* `create_resources` creates the queues, the tables and the change-event bus through boto3 clients
  (moto, LocalStack or a real account) and returns their physical ids as `LocalResources`.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from botocore.exceptions import ClientError

DEFAULT_TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"

# Logical IDs in template.yaml; every property value is read from the template itself.
DLQ_ID = "EarningsDLQ"
QUEUE_ID = "EarningsQueue"
TABLE_ID = "EarningsTable"
PRODUCER_ID = "ProducerFunction"
CONSUMER_ID = "ConsumerFunction"
STREAM_CONSUMER_ID = "StreamConsumerFunction"
STREAM_FAILURE_QUEUE_ID = "StreamFailureQueue"
EVENT_BUS_ID = "ChangeEventBus"
SERVERLESS_FUNCTION = "AWS::Serverless::Function"

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "123456789012"


class TemplateError(Exception):
    """The template is missing, malformed, or uses something this loader cannot evaluate."""


class _NoValue:
    """`Ref: AWS::NoValue`: removes the enclosing property or list item, as CloudFormation does."""

    _instance: _NoValue | None = None

    def __new__(cls) -> _NoValue:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE: Any = _NoValue()


# --------------------------------------------------------------------------- YAML loading


class CloudFormationLoader(yaml.SafeLoader):
    """SafeLoader that understands `!Ref`, `!GetAtt`, `!Sub`… and keeps dates as strings.

    CloudFormation reads `2010-09-09` as text, so YAML's implicit timestamp type is removed.
    """


CloudFormationLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_FN_TAGS = (
    "Sub",
    "Join",
    "If",
    "Equals",
    "Not",
    "And",
    "Or",
    "Select",
    "Split",
    "FindInMap",
    "Base64",
    "GetAZs",
    "ImportValue",
    "Cidr",
)


def _node_value(loader: yaml.Loader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


def _fn_constructor(key: str):
    def construct(loader: yaml.Loader, node: yaml.Node) -> dict[str, Any]:
        return {key: _node_value(loader, node)}

    return construct


def _construct_getatt(loader: yaml.Loader, node: yaml.Node) -> dict[str, Any]:
    value = _node_value(loader, node)
    if isinstance(value, str):
        logical_id, sep, attribute = value.partition(".")
        if not sep:
            raise TemplateError(f"!GetAtt {value!r}: expected 'LogicalId.Attribute'")
        value = [logical_id, attribute]
    return {"Fn::GetAtt": value}


CloudFormationLoader.add_constructor("!Ref", _fn_constructor("Ref"))
CloudFormationLoader.add_constructor("!Condition", _fn_constructor("Condition"))
CloudFormationLoader.add_constructor("!GetAtt", _construct_getatt)
for _name in _FN_TAGS:
    CloudFormationLoader.add_constructor(f"!{_name}", _fn_constructor(f"Fn::{_name}"))


def load_template(path: str | Path = DEFAULT_TEMPLATE) -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML template into plain long-form dicts."""
    path = Path(path)
    if not path.is_file():
        raise TemplateError(
            f"template not found: {path} (the SAM template lives at the repository root; "
            "pass its path explicitly when running from elsewhere)"
        )
    with path.open(encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=CloudFormationLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise TemplateError(f"{path}: not a CloudFormation template (no Resources mapping)")
    return document


# --------------------------------------------------------------------------- intrinsic functions


def partition_for(region: str) -> str:
    """The ARN partition of a region, as `AWS::Partition` would report it."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _parameter_value(name: str, spec: Mapping[str, Any], value: Any) -> Any:
    """Coerce and check one parameter the way CloudFormation does (Ref of a Number is text)."""
    kind = spec.get("Type", "String")
    if kind == "CommaDelimitedList" or kind.startswith("List<"):
        items = value if isinstance(value, list) else str(value).split(",")
        return [str(item).strip() for item in items]
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if kind == "Number":
        try:
            number = float(text)
        except ValueError:
            raise TemplateError(f"parameter {name}: {text!r} is not a number") from None
        if "MinValue" in spec and number < float(spec["MinValue"]):
            raise TemplateError(f"parameter {name}: {text} < MinValue {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            raise TemplateError(f"parameter {name}: {text} > MaxValue {spec['MaxValue']}")
    allowed = spec.get("AllowedValues")
    if allowed is not None and text not in [str(a) for a in allowed]:
        raise TemplateError(f"parameter {name}: {text!r} not in AllowedValues {allowed}")
    pattern = spec.get("AllowedPattern")
    if pattern is not None and not re.fullmatch(pattern, text):
        raise TemplateError(f"parameter {name}: {text!r} does not match {pattern!r}")
    return text


def _parameters(template: Mapping[str, Any], parameter_overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every template parameter's value: its override, else its Default, coerced and checked."""
    specs: Mapping[str, Any] = template.get("Parameters") or {}
    overrides = dict(parameter_overrides or {})
    unknown = sorted(set(overrides) - set(specs))
    if unknown:
        raise TemplateError(f"unknown parameter override(s): {', '.join(unknown)}")
    parameters: dict[str, Any] = {}
    for name, spec in specs.items():
        if name in overrides:
            raw = overrides[name]
        elif "Default" in spec:
            raw = spec["Default"]
        else:
            raise TemplateError(f"parameter {name} has no Default and no override")
        parameters[name] = _parameter_value(name, spec, raw)
    return parameters


def _pseudo_parameters(region: str, account_id: str, stack_name: str) -> dict[str, Any]:
    """`AWS::Region`, `AWS::AccountId`… as CloudFormation would set them for this stack."""
    partition = partition_for(region)
    return {
        "AWS::Region": region,
        "AWS::AccountId": account_id,
        "AWS::Partition": partition,
        "AWS::StackName": stack_name,
        "AWS::StackId": (
            f"arn:{partition}:cloudformation:{region}:{account_id}:"
            f"stack/{stack_name}/00000000-0000-0000-0000-000000000000"
        ),
        "AWS::URLSuffix": "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com",
        "AWS::NotificationARNs": [],
    }


def _evaluate_conditions(template: Mapping[str, Any], context: dict[str, Any]) -> None:
    """Fill `context["conditions"]`: each condition once, in any order (one may use another), a
    cycle refused."""
    pending: dict[str, Any] = dict(template.get("Conditions") or {})
    conditions: dict[str, bool] = context["conditions"]

    def evaluate(name: str, stack: tuple[str, ...]) -> bool:
        if name in conditions:
            return conditions[name]
        if name not in pending:
            raise TemplateError(f"unknown condition {name!r}")
        if name in stack:
            raise TemplateError(f"circular condition: {' -> '.join((*stack, name))}")
        previous = context.get("_condition_hook")
        context["_condition_hook"] = lambda inner: evaluate(inner, (*stack, name))
        try:
            result = resolve(pending[name], context)
        finally:
            context["_condition_hook"] = previous
        if not isinstance(result, bool):
            raise TemplateError(f"condition {name!r} did not evaluate to a boolean: {result!r}")
        conditions[name] = result
        return result

    for name in pending:
        evaluate(name, ())
    context.pop("_condition_hook", None)


def build_context(
    template: Mapping[str, Any],
    *,
    parameter_overrides: Mapping[str, Any] | None = None,
    region: str = DEFAULT_REGION,
    account_id: str = DEFAULT_ACCOUNT_ID,
    stack_name: str = "earnings-sync",
    resources: Mapping[str, Any] | None = None,
    attributes: Mapping[str, Mapping[str, Any]] | None = None,
    keep_unresolved: bool = False,
) -> dict[str, Any]:
    """Everything `resolve` needs: parameters (defaults + overrides), pseudo parameters, mappings,
    evaluated conditions, and the physical ids / attributes of resources created so far.

    With `keep_unresolved`, a Ref/GetAtt to a template resource that is not in `resources` /
    `attributes` is left as its intrinsic instead of raising (for reading a template before, or
    without, creating anything).
    """
    context: dict[str, Any] = {
        "parameters": _parameters(template, parameter_overrides),
        "pseudo": _pseudo_parameters(region, account_id, stack_name),
        "mappings": template.get("Mappings") or {},
        "resource_ids": frozenset(template.get("Resources") or {}),
        "resources": dict(resources or {}),
        "attributes": {key: dict(value) for key, value in (attributes or {}).items()},
        "keep_unresolved": keep_unresolved,
        "conditions": {},
    }
    _evaluate_conditions(template, context)
    return context


class _Unresolved(Exception):
    """A resource reference not known yet (only raised with keep_unresolved)."""


def _scalar_text(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise TemplateError(f"{where}: expected a string, got {value!r}")


def _ref(name: Any, context: Mapping[str, Any]) -> Any:
    if not isinstance(name, str):
        raise TemplateError(f"Ref: expected a name, got {name!r}")
    if name == "AWS::NoValue":
        return NO_VALUE
    if name in context.get("pseudo", {}):
        return context["pseudo"][name]
    if name in context.get("parameters", {}):
        return context["parameters"][name]
    if name in context.get("resources", {}):
        return context["resources"][name]
    if name in context.get("resource_ids", ()):
        if context.get("keep_unresolved"):
            raise _Unresolved(name)
        raise TemplateError(f"Ref {name}: resource has no physical id in this context")
    raise TemplateError(f"Ref {name}: not a parameter, pseudo parameter or known resource")


def _getatt(args: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(args, str):
        args = args.split(".", 1)
    if not isinstance(args, list) or len(args) != 2:
        raise TemplateError(f"Fn::GetAtt: expected [LogicalId, Attribute], got {args!r}")
    logical_id = args[0]
    attribute = _scalar_text(_eval(args[1], context), "Fn::GetAtt attribute")
    known = context.get("attributes", {}).get(logical_id)
    if known is not None and attribute in known:
        return known[attribute]
    if logical_id in context.get("resource_ids", ()) and context.get("keep_unresolved"):
        raise _Unresolved(f"{logical_id}.{attribute}")
    available = sorted(known) if known else []
    raise TemplateError(f"Fn::GetAtt {logical_id}.{attribute}: unknown in this context (known: {available})")


_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def _sub(args: Any, context: Mapping[str, Any]) -> str:
    if isinstance(args, str):
        text, variables = args, {}
    elif isinstance(args, list) and len(args) == 2 and isinstance(args[0], str):
        text, variables = args[0], {k: _eval(v, context) for k, v in (args[1] or {}).items()}
    else:
        raise TemplateError(f"Fn::Sub: expected a string or [string, {{vars}}], got {args!r}")

    def replace(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if name.startswith("!"):  # ${!Literal} is the escape for a literal ${Literal}
            return "${" + name[1:] + "}"
        if name in variables:
            value = variables[name]
        elif "." in name and not name.startswith("AWS::"):
            value = _getatt(name.split(".", 1), context)
        else:
            value = _ref(name, context)
        return _scalar_text(value, f"Fn::Sub ${{{name}}}")

    return _SUB_VARIABLE.sub(replace, text)


def _args(name: str, value: Any, count: int) -> list[Any]:
    if not isinstance(value, list) or len(value) != count:
        raise TemplateError(f"{name}: expected a list of {count} arguments, got {value!r}")
    return value


def _as_condition(value: Any, context: Mapping[str, Any], where: str) -> bool:
    result = _eval(value, context)
    if not isinstance(result, bool):
        raise TemplateError(f"{where}: expected a condition, got {result!r}")
    return result


def _condition(name: Any, context: Mapping[str, Any]) -> bool:
    if not isinstance(name, str):
        raise TemplateError(f"Condition: expected a name, got {name!r}")
    conditions = context.get("conditions", {})
    if name in conditions:
        return conditions[name]
    hook = context.get("_condition_hook")
    if hook is not None:  # while build_context evaluates the Conditions section
        return hook(name)
    raise TemplateError(f"unknown condition {name!r}")


def _comparable(value: Any) -> Any:
    return value if isinstance(value, list) else _scalar_text(value, "Fn::Equals")


def _intrinsic(key: str, args: Any, context: Mapping[str, Any]) -> Any:
    if key == "Ref":
        return _ref(args, context)
    if key == "Condition":
        return _condition(args, context)
    if key == "Fn::GetAtt":
        return _getatt(args, context)
    if key == "Fn::Sub":
        return _sub(args, context)
    if key == "Fn::Join":
        delimiter, items = _args(key, args, 2)
        items = _eval(items, context)
        if not isinstance(items, list):
            raise TemplateError(f"Fn::Join: expected a list of values, got {items!r}")
        return _scalar_text(delimiter, key).join(_scalar_text(i, key) for i in items)
    if key == "Fn::If":
        name, when_true, when_false = _args(key, args, 3)
        return _eval(when_true if _condition(name, context) else when_false, context)
    if key == "Fn::Equals":
        left, right = _args(key, args, 2)
        return _comparable(_eval(left, context)) == _comparable(_eval(right, context))
    if key == "Fn::Not":
        (inner,) = _args(key, args, 1)
        return not _as_condition(inner, context, key)
    if key in ("Fn::And", "Fn::Or"):
        if not isinstance(args, list) or not 2 <= len(args) <= 10:
            raise TemplateError(f"{key}: expected 2 to 10 conditions, got {args!r}")
        results = [_as_condition(item, context, key) for item in args]
        return all(results) if key == "Fn::And" else any(results)
    if key == "Fn::Select":
        index, items = _args(key, args, 2)
        index, items = _eval(index, context), _eval(items, context)
        try:
            position = int(index)
        except (TypeError, ValueError):
            raise TemplateError(f"Fn::Select: index {index!r} is not an integer") from None
        if not isinstance(items, list) or not 0 <= position < len(items):
            raise TemplateError(f"Fn::Select: index {position} out of range for {items!r}")
        return items[position]
    if key == "Fn::Split":
        delimiter, source = _args(key, args, 2)
        return _scalar_text(_eval(source, context), key).split(_scalar_text(delimiter, key))
    if key == "Fn::FindInMap":
        names = [_scalar_text(_eval(a, context), key) for a in _args(key, args, 3)]
        try:
            return context.get("mappings", {})[names[0]][names[1]][names[2]]
        except KeyError:
            raise TemplateError(f"Fn::FindInMap: no entry {names}") from None
    raise TemplateError(f"{key}: not supported by the local template resolver")


def _is_intrinsic(value: Mapping[str, Any]) -> bool:
    if len(value) != 1:
        return False
    (key,) = value
    return key in ("Ref", "Condition") or (isinstance(key, str) and key.startswith("Fn::"))


def _resolve(value: Any, context: Mapping[str, Any], keep: bool) -> Any:
    """Recursive worker. `keep`: leave unknown resource references in place; it is only honoured
    in plain data, so an intrinsic whose argument cannot be resolved is kept whole."""
    if isinstance(value, dict):
        if _is_intrinsic(value):
            ((key, args),) = value.items()
            return _intrinsic(key, args, context)
        resolved = {}
        for key, item in value.items():
            item = _resolve_item(item, context, keep)
            if item is not NO_VALUE:
                resolved[key] = item
        return resolved
    if isinstance(value, list):
        items = [_resolve_item(item, context, keep) for item in value]
        return [item for item in items if item is not NO_VALUE]
    return value


def _resolve_item(value: Any, context: Mapping[str, Any], keep: bool) -> Any:
    if not keep:
        return _resolve(value, context, False)
    try:
        return _resolve(value, context, True)
    except _Unresolved:
        return value


def _eval(value: Any, context: Mapping[str, Any]) -> Any:
    """Resolve an intrinsic's argument: an unknown reference there makes the whole call unknown."""
    return _resolve(value, context, False)


def resolve(value: Any, context: Mapping[str, Any]) -> Any:
    """Evaluate the intrinsic functions in `value` against a `build_context` context.

    Supports Ref (parameters, pseudo parameters, resources), Fn::GetAtt, Fn::Sub, Fn::Join,
    Fn::If/Equals/Not/And/Or, Condition, Fn::Select, Fn::Split and Fn::FindInMap; anything
    else raises `TemplateError`. `AWS::NoValue` drops the enclosing key or list item.
    """
    return _resolve_item(value, context, bool(context.get("keep_unresolved")))


# --------------------------------------------------------------------------- template queries


def _resource(template: Mapping[str, Any], logical_id: str, expected_type: str | None = None) -> dict:
    resource = (template.get("Resources") or {}).get(logical_id)
    if not isinstance(resource, dict):
        raise TemplateError(f"resource {logical_id!r} not found in the template")
    if expected_type is not None and resource.get("Type") != expected_type:
        raise TemplateError(f"{logical_id}: expected {expected_type}, found {resource.get('Type')}")
    return resource


def _merge_globals(base: Any, override: Any) -> Any:
    """SAM's Globals rule: maps merge, lists append, scalars are replaced."""
    if isinstance(base, dict) and isinstance(override, dict) and not _is_intrinsic(override):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge_globals(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list):
        return [*base, *override]
    return override


def function_properties(template: Mapping[str, Any], function_logical_id: str) -> dict[str, Any]:
    """A Serverless function's Properties with `Globals.Function` merged in (unresolved)."""
    resource = _resource(template, function_logical_id, SERVERLESS_FUNCTION)
    globals_ = ((template.get("Globals") or {}).get("Function")) or {}
    return _merge_globals(globals_, resource.get("Properties") or {})


EVENT_SOURCE_MAPPING = "AWS::Lambda::EventSourceMapping"
# SAM event type -> (the source's resource type and ARN attribute, SAM's name for the source ARN)
_MAPPING_SOURCES = {
    "SQS": ("AWS::SQS::Queue", "Arn", "Queue"),
    "DynamoDB": ("AWS::DynamoDB::Table", "StreamArn", "Stream"),
}
_ARN_MARKERS = {"SQS": ":sqs:", "DynamoDB": "/stream/"}


def _mapping_source_type(template: Mapping[str, Any], source: Any) -> str | None:
    """SQS or DynamoDB for an EventSourceArn (a GetAtt of a template resource, or a literal ARN)."""
    if isinstance(source, dict) and "Fn::GetAtt" in source:
        target = source["Fn::GetAtt"]
        logical_id, attribute = target if isinstance(target, list) else str(target).split(".", 1)
        resource_type = ((template.get("Resources") or {}).get(logical_id) or {}).get("Type")
        for event_type, (source_type, arn_attribute, _) in _MAPPING_SOURCES.items():
            if (resource_type, attribute) == (source_type, arn_attribute):
                return event_type
        return None
    if isinstance(source, str):
        return next((t for t, marker in _ARN_MARKERS.items() if marker in source), None)
    return None


def _standalone_mappings(template: Mapping[str, Any], function_logical_id: str, event_type: str) -> list[dict[str, Any]]:
    """The function's AWS::Lambda::EventSourceMapping resources of `event_type`, as SAM event Properties.

    The template declares the consumers' mappings as plain resources rather than SAM `Events`: for
    an event SAM attaches a managed policy granting the polling actions on every queue/stream
    (Resource "*"); a plain mapping lets the template grant them on the one queue/stream.
    """
    found = []
    function_refs = ({"Ref": function_logical_id}, {"Fn::GetAtt": [function_logical_id, "Arn"]})
    for resource in (template.get("Resources") or {}).values():
        if not isinstance(resource, dict) or resource.get("Type") != EVENT_SOURCE_MAPPING:
            continue
        properties = resource.get("Properties") or {}
        if properties.get("FunctionName") not in function_refs:
            continue
        source = properties.get("EventSourceArn")
        if _mapping_source_type(template, source) != event_type:
            continue
        event = {k: v for k, v in properties.items() if k not in ("FunctionName", "EventSourceArn")}
        event[_MAPPING_SOURCES[event_type][2]] = source
        found.append(event)
    return found


def event_source(
    template: Mapping[str, Any],
    function_logical_id: str,
    event_type: str,
    *,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Resolved Properties of the function's single event of `event_type` (SQS, DynamoDB, …).

    The event is either a SAM `Events` entry of the function or an AWS::Lambda::EventSourceMapping
    resource naming it; the latter is returned in SAM's shape (`Queue` / `Stream` for
    EventSourceArn). Without a context, parameters take their defaults and references to resources
    that do not exist yet (e.g. `Queue: !GetAtt EarningsQueue.Arn`) are left as intrinsics.
    """
    events = function_properties(template, function_logical_id).get("Events") or {}
    matches = [
        e.get("Properties") or {}
        for e in events.values()
        if isinstance(e, dict) and e.get("Type") == event_type
    ]
    if event_type in _MAPPING_SOURCES:
        matches.extend(_standalone_mappings(template, function_logical_id, event_type))
    if len(matches) != 1:
        raise TemplateError(
            f"{function_logical_id}: expected exactly one {event_type} event, found {len(matches)}"
        )
    if context is None:
        context = build_context(template, keep_unresolved=True)
    return resolve(matches[0], context)


def function_timeout(
    template: Mapping[str, Any], function_logical_id: str, context: Mapping[str, Any] | None = None
) -> int:
    """The function's Timeout in seconds (3, Lambda's default, when neither it nor Globals set one)."""
    timeout = function_properties(template, function_logical_id).get("Timeout", 3)
    return int(resolve(timeout, context if context is not None else build_context(template)))


def function_environment(
    template: Mapping[str, Any], function_logical_id: str, context: Mapping[str, Any]
) -> dict[str, str]:
    """The function's resolved environment (Globals merged), values as Lambda sees them: text."""
    variables = (function_properties(template, function_logical_id).get("Environment") or {}).get(
        "Variables"
    ) or {}
    try:
        resolved = resolve(variables, context)
    except TemplateError as exc:
        raise TemplateError(f"{function_logical_id} environment: {exc}") from exc
    return {name: _scalar_text(value, f"{function_logical_id}.{name}") for name, value in resolved.items()}


# --------------------------------------------------------------------------- local resources


@dataclass(frozen=True)
class StreamMapping:
    """The stream consumer's DynamoDB event source mapping, as the template configures it.

    Absent properties take Lambda's documented defaults (BatchSize 100, no bisect, retries and
    record age -1 = unlimited).
    """

    function_logical_id: str
    stream_arn: str
    starting_position: str
    batch_size: int
    bisect_on_error: bool
    maximum_retry_attempts: int
    maximum_record_age_seconds: int
    function_response_types: tuple[str, ...]
    function_timeout: int
    on_failure_arn: str | None = None
    on_failure_url: str | None = None  # the queue behind on_failure_arn, when it is a template queue


@dataclass(frozen=True)
class LocalResources:
    """Physical ids of what `create_resources` built, plus the settings the emulator needs."""

    table_name: str
    table_arn: str
    stream_arn: str | None
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str
    max_receive_count: int
    consumer_batch_size: int
    consumer_function_response_types: tuple[str, ...]
    consumer_timeout: int
    queue_visibility_timeout: int
    # logical id -> resolved Environment.Variables (Globals merged), for every Serverless function
    environments: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    # The stream consumer's mapping and its on-failure queue; None when the template has none.
    stream_mapping: StreamMapping | None = None
    stream_failure_queue_url: str | None = None
    stream_failure_queue_arn: str | None = None
    # logical id -> physical name of every AWS::DynamoDB::Table (EarningsTable, SyncLedgerTable, …)
    tables: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    # logical id -> the function's `Handler` (`module.function`), for every Serverless function
    handlers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    # Where the stream consumer publishes change events (its EVENT_BUS_NAME), and whether this run
    # created that bus (ChangeEventBus) or the template names an existing one (ExistingEventBus).
    event_bus_name: str | None = None
    event_bus_created: bool = False
    # logical id -> URL of every AWS::SQS::Queue (the four above, and any other the template declares)
    queues: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)


# CloudFormation AWS::SQS::Queue property -> SQS attribute name. Anything else is rejected, so a
# new property in the template is never silently ignored locally.
_QUEUE_ATTRIBUTES = {
    "ContentBasedDeduplication": "ContentBasedDeduplication",
    "DeduplicationScope": "DeduplicationScope",
    "DelaySeconds": "DelaySeconds",
    "FifoQueue": "FifoQueue",
    "FifoThroughputLimit": "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds": "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId": "KmsMasterKeyId",
    "MaximumMessageSize": "MaximumMessageSize",
    "MessageRetentionPeriod": "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds": "ReceiveMessageWaitTimeSeconds",
    "RedriveAllowPolicy": "RedriveAllowPolicy",
    "RedrivePolicy": "RedrivePolicy",
    "SqsManagedSseEnabled": "SqsManagedSseEnabled",
    "VisibilityTimeout": "VisibilityTimeout",
}
# Encryption settings: applied when the endpoint accepts them, dropped when it does not.
_OPTIONAL_QUEUE_ATTRIBUTES = frozenset(
    {"SqsManagedSseEnabled", "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds"}
)


def _queue_attributes(properties: Mapping[str, Any], logical_id: str) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for name, value in properties.items():
        if name in ("QueueName", "Tags"):
            continue
        if name not in _QUEUE_ATTRIBUTES:
            raise TemplateError(f"{logical_id}: property {name} is not supported locally")
        if name == "RedrivePolicy":
            value = dict(value)
            if "maxReceiveCount" in value:
                value["maxReceiveCount"] = int(value["maxReceiveCount"])
            text = json.dumps(value, separators=(",", ":"))
        elif isinstance(value, dict):
            text = json.dumps(value, separators=(",", ":"))
        else:
            text = _scalar_text(value, f"{logical_id}.{name}")
        attributes[_QUEUE_ATTRIBUTES[name]] = text
    return attributes


def _client_error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code", ""))


def _create_queue(
    sqs_client: Any, name: str, properties: Mapping[str, Any], logical_id: str
) -> tuple[str, str]:
    attributes = _queue_attributes(properties, logical_id)
    kwargs: dict[str, Any] = {"QueueName": name, "Attributes": attributes}
    tags = {t["Key"]: str(t["Value"]) for t in properties.get("Tags") or []}
    if tags:
        kwargs["tags"] = tags
    try:
        url = sqs_client.create_queue(**kwargs)["QueueUrl"]
    except ClientError as exc:
        if "InvalidAttribute" not in _client_error_code(exc) or not (
            _OPTIONAL_QUEUE_ATTRIBUTES & set(attributes)
        ):
            raise
        kwargs["Attributes"] = {k: v for k, v in attributes.items() if k not in _OPTIONAL_QUEUE_ATTRIBUTES}
        url = sqs_client.create_queue(**kwargs)["QueueUrl"]
    arn = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


# Table properties handled after CreateTable, each with its own API call.
_TABLE_POST_CREATE = frozenset({"PointInTimeRecoverySpecification", "TimeToLiveSpecification"})
_TABLE_DIRECT = frozenset(
    {
        "AttributeDefinitions",
        "KeySchema",
        "BillingMode",
        "ProvisionedThroughput",
        "LocalSecondaryIndexes",
        "TableClass",
    }
)
_TABLE_BOOLEANS = frozenset({"DeletionProtectionEnabled"})  # CloudFormation takes "true"/"false" text too
_INDEX_KEYS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput", "OnDemandThroughput")


def _table_request(properties: Mapping[str, Any], table_name: str, logical_id: str = TABLE_ID) -> dict[str, Any]:
    """CreateTable arguments from AWS::DynamoDB::Table Properties (renaming where the API differs)."""
    request: dict[str, Any] = {"TableName": table_name}
    for name, value in properties.items():
        if name == "TableName" or name in _TABLE_POST_CREATE:
            continue
        if name in _TABLE_DIRECT:
            request[name] = value
        elif name in _TABLE_BOOLEANS:
            request[name] = _boolean(value, f"{logical_id}.{name}")
        elif name == "GlobalSecondaryIndexes":
            request[name] = [{k: index[k] for k in _INDEX_KEYS if k in index} for index in value]
        elif name == "StreamSpecification":
            # CloudFormation implies StreamEnabled; the API wants it spelled out.
            request[name] = {"StreamEnabled": True, "StreamViewType": value["StreamViewType"]}
        elif name == "SSESpecification":
            sse = {"Enabled": bool(value.get("SSEEnabled", False))}
            if "SSEType" in value:
                sse["SSEType"] = value["SSEType"]
            if "KMSMasterKeyId" in value:
                sse["KMSMasterKeyId"] = value["KMSMasterKeyId"]
            request[name] = sse
        elif name == "Tags":
            request[name] = [{"Key": t["Key"], "Value": str(t["Value"])} for t in value]
        else:
            raise TemplateError(f"{logical_id}: property {name} is not supported locally")
    return request


def _boolean(value: Any, where: str) -> bool:
    """A CloudFormation Boolean: true/false, or its text (what a `Ref` to a String parameter gives)."""
    text = _scalar_text(value, where).lower()
    if text not in ("true", "false"):
        raise TemplateError(f"{where}: expected true or false, got {value!r}")
    return text == "true"


def _unsupported(exc: Exception) -> bool:
    code = _client_error_code(exc)
    return code in ("UnknownOperationException", "UnrecognizedClientException", "NotImplemented") or (
        "not" in str(exc).lower() and "support" in str(exc).lower()
    )


def _key_set(key_schema: list[Mapping[str, str]]) -> set[tuple[str, str]]:
    return {(key["AttributeName"], key["KeyType"]) for key in key_schema}


def _create_table(
    dynamodb_client: Any, properties: Mapping[str, Any], table_name: str, logical_id: str = TABLE_ID
) -> dict[str, Any]:
    request = _table_request(properties, table_name, logical_id)
    try:
        dynamodb_client.create_table(**request)
    except dynamodb_client.exceptions.ResourceInUseException:
        # Re-running against the same endpoint: reuse the table if its keys are the template's.
        existing = dynamodb_client.describe_table(TableName=table_name)["Table"]
        if _key_set(existing["KeySchema"]) != _key_set(request["KeySchema"]):
            raise TemplateError(
                f"table {table_name} already exists with a different key schema; delete it first"
            ) from None
    except ClientError as exc:
        if "SSESpecification" not in request or not _unsupported(exc):
            raise
        request.pop("SSESpecification")
        dynamodb_client.create_table(**request)
    dynamodb_client.get_waiter("table_exists").wait(
        TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )

    pitr = properties.get("PointInTimeRecoverySpecification")
    if pitr is not None:
        try:
            dynamodb_client.update_continuous_backups(
                TableName=table_name,
                PointInTimeRecoverySpecification={
                    "PointInTimeRecoveryEnabled": bool(pitr.get("PointInTimeRecoveryEnabled", False))
                },
            )
        except ClientError as exc:
            if not _unsupported(exc):
                raise
    ttl = properties.get("TimeToLiveSpecification")
    if ttl is not None and ttl.get("Enabled"):
        dynamodb_client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
        )
    return dynamodb_client.describe_table(TableName=table_name)["Table"]


def _create_template_queue(
    template: Mapping[str, Any], context: dict[str, Any], sqs_client: Any, logical_id: str, name: str
) -> tuple[str, str, dict[str, Any]]:
    """One AWS::SQS::Queue from its resolved Properties: (URL, ARN, Properties). Its URL and
    attributes join the context, so later resources can refer to it."""
    properties = resolve(_resource(template, logical_id, "AWS::SQS::Queue").get("Properties") or {}, context)
    url, arn = _create_queue(sqs_client, name, properties, logical_id)
    context["resources"][logical_id] = url
    context["attributes"][logical_id] = {"Arn": arn, "QueueName": name, "QueueUrl": url}
    return url, arn, properties


def _create_template_tables(
    template: Mapping[str, Any], context: dict[str, Any], dynamodb_client: Any, name_prefix: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """Every AWS::DynamoDB::Table, EarningsTable first: (EarningsTable's description, logical id ->
    name). Each table's name, ARN and stream ARN join the context."""
    resources = template.get("Resources") or {}
    others = [
        logical_id
        for logical_id, resource in resources.items()
        if logical_id != TABLE_ID and isinstance(resource, dict) and resource.get("Type") == "AWS::DynamoDB::Table"
    ]
    first = _resource(template, TABLE_ID, "AWS::DynamoDB::Table")
    tables: dict[str, str] = {}
    descriptions: dict[str, dict[str, Any]] = {}
    for logical_id, resource in [(TABLE_ID, first), *((other, resources[other]) for other in others)]:
        properties = resolve(resource.get("Properties") or {}, context)
        name = f"{name_prefix}{properties.get('TableName', logical_id)}"
        descriptions[logical_id] = created = _create_table(dynamodb_client, properties, name, logical_id)
        context["resources"][logical_id] = tables[logical_id] = name
        context["attributes"][logical_id] = {"Arn": created["TableArn"]}
        if created.get("LatestStreamArn"):
            context["attributes"][logical_id]["StreamArn"] = created["LatestStreamArn"]
    return descriptions[TABLE_ID], tables


def sibling_client(client: Any, service: str) -> Any:
    """A client of another service on the same endpoint and region as `client` (credentials from the
    environment, as the test and emulator clients get theirs)."""
    import boto3

    endpoint = client.meta.endpoint_url
    if ".amazonaws.com" in endpoint:  # the service's own AWS endpoint: the other service has its own
        endpoint = None
    return boto3.client(service, region_name=client.meta.region_name, endpoint_url=endpoint)


def _create_event_bus(template: Mapping[str, Any], context: dict[str, Any], events_client: Any, name_prefix: str) -> bool:
    """ChangeEventBus, when the template has one and its Condition holds (reused when it exists).
    Its name and ARN join the context; False when there is nothing to create."""
    resource = (template.get("Resources") or {}).get(EVENT_BUS_ID)
    if not isinstance(resource, dict):
        return False
    if "Condition" in resource and not _condition(resource["Condition"], context):
        return False
    properties = resolve(resource.get("Properties") or {}, context)
    unknown = sorted(set(properties) - {"Name", "Description", "Tags"})
    if unknown:
        raise TemplateError(f"{EVENT_BUS_ID}: property {unknown[0]} is not supported locally")
    name = f"{name_prefix}{properties['Name']}"
    try:
        arn = events_client.create_event_bus(Name=name)["EventBusArn"]
    except ClientError as exc:
        if _client_error_code(exc) != "ResourceAlreadyExistsException":
            raise
        arn = events_client.describe_event_bus(Name=name)["Arn"]
    context["resources"][EVENT_BUS_ID] = name
    context["attributes"][EVENT_BUS_ID] = {"Arn": arn, "Name": name}
    return True


_KNOWN_QUEUE_STEMS = {DLQ_ID: "earnings-dlq", QUEUE_ID: "earnings-queue", STREAM_FAILURE_QUEUE_ID: "earnings-stream-failures"}


def _other_queue_stem(logical_id: str) -> str:
    """`ProducerFailureQueue` → `earnings-producer-failure-queue`."""
    return "earnings-" + re.sub(r"(?<!^)(?=[A-Z])", "-", logical_id).lower()


def _template_queues(template: Mapping[str, Any]) -> list[str]:
    return [i for i, r in (template.get("Resources") or {}).items() if isinstance(r, dict) and r.get("Type") == "AWS::SQS::Queue"]


def _create_other_queues(template: Mapping[str, Any], context: dict[str, Any], sqs_client: Any, name_prefix: str) -> None:
    """Every AWS::SQS::Queue but the queue and its DLQ: the stream failure queue, and any other (a
    failure destination, say), created from its Properties so the local stack holds what the
    template says."""
    for logical_id in _template_queues(template):
        if logical_id not in (DLQ_ID, QUEUE_ID):
            stem = _KNOWN_QUEUE_STEMS.get(logical_id) or _other_queue_stem(logical_id)
            _create_template_queue(template, context, sqs_client, logical_id, f"{name_prefix}{stem}")


def _consumer_event(
    template: Mapping[str, Any], context: Mapping[str, Any], queue_arn: str, queue_properties: Mapping[str, Any]
) -> tuple[dict[str, Any], int]:
    """The consumer's SQS event, which must read EarningsQueue, and the queue's maxReceiveCount."""
    sqs_event = event_source(template, CONSUMER_ID, "SQS", context=context)
    if sqs_event.get("Queue") != queue_arn:
        raise TemplateError(f"{CONSUMER_ID}'s SQS event does not read {QUEUE_ID}")
    redrive = queue_properties.get("RedrivePolicy") or {}
    if "maxReceiveCount" not in redrive:
        raise TemplateError(f"{QUEUE_ID} has no RedrivePolicy.maxReceiveCount")
    return sqs_event, int(redrive["maxReceiveCount"])


def _functions(template: Mapping[str, Any], context: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Every Serverless function's resolved environment, and its `Handler` (`module.function`)."""
    environments: dict[str, Any] = {}
    handlers: dict[str, str] = {}
    for logical_id, resource in (template.get("Resources") or {}).items():
        if not isinstance(resource, dict) or resource.get("Type") != SERVERLESS_FUNCTION:
            continue
        environments[logical_id] = MappingProxyType(function_environment(template, logical_id, context))
        handler = function_properties(template, logical_id).get("Handler")
        if handler is not None:
            handlers[logical_id] = _scalar_text(resolve(handler, context), f"{logical_id}.Handler")
    return environments, handlers


def create_resources(
    template: Mapping[str, Any],
    dynamodb_client: Any,
    sqs_client: Any,
    *,
    name_prefix: str = "",
    parameter_overrides: Mapping[str, Any] | None = None,
    region: str = DEFAULT_REGION,
    account_id: str = DEFAULT_ACCOUNT_ID,
    events_client: Any = None,
) -> LocalResources:
    """Every table, queue (`LocalResources.queues`) and the change-event bus of the template, from
    their own Properties, and the mappings' settings. Names are `name_prefix` + a fixed stem
    (`earnings-dlq`, `earnings-queue`, `earnings-<logical id in kebab case>`, the resolved table and
    bus names) so runs can share one endpoint. `events_client`: by default on the SQS endpoint.
    """
    context = build_context(
        template,
        parameter_overrides=parameter_overrides,
        region=region,
        account_id=account_id,
        stack_name=f"{name_prefix}earnings-sync",
    )
    dlq_url, dlq_arn, _ = _create_template_queue(template, context, sqs_client, DLQ_ID, f"{name_prefix}{_KNOWN_QUEUE_STEMS[DLQ_ID]}")
    queue_url, queue_arn, queue_properties = _create_template_queue(
        template, context, sqs_client, QUEUE_ID, f"{name_prefix}{_KNOWN_QUEUE_STEMS[QUEUE_ID]}"
    )
    table, tables = _create_template_tables(template, context, dynamodb_client, name_prefix)
    sqs_event, max_receive_count = _consumer_event(template, context, queue_arn, queue_properties)
    _create_other_queues(template, context, sqs_client, name_prefix)
    bus_created = _create_event_bus(template, context, events_client or sibling_client(sqs_client, "events"), name_prefix)
    stream_mapping = _stream_mapping(template, context, table.get("LatestStreamArn"))
    environments, handlers = _functions(template, context)
    return LocalResources(
        table_name=tables[TABLE_ID],
        table_arn=table["TableArn"],
        stream_arn=table.get("LatestStreamArn"),
        queue_url=queue_url,
        queue_arn=queue_arn,
        dlq_url=dlq_url,
        dlq_arn=dlq_arn,
        max_receive_count=max_receive_count,
        # 10 is the SQS event's documented default when the template leaves BatchSize out.
        consumer_batch_size=int(sqs_event.get("BatchSize", 10)),
        consumer_function_response_types=tuple(sqs_event.get("FunctionResponseTypes") or ()),
        consumer_timeout=function_timeout(template, CONSUMER_ID, context),
        # 30 s is SQS's own default visibility timeout.
        queue_visibility_timeout=int(queue_properties.get("VisibilityTimeout", 30)),
        environments=MappingProxyType(environments),
        stream_mapping=stream_mapping,
        stream_failure_queue_url=context["resources"].get(STREAM_FAILURE_QUEUE_ID),
        stream_failure_queue_arn=context["attributes"].get(STREAM_FAILURE_QUEUE_ID, {}).get("Arn"),
        tables=MappingProxyType(tables),
        handlers=MappingProxyType(handlers),
        event_bus_name=environments.get(STREAM_CONSUMER_ID, {}).get("EVENT_BUS_NAME") or context["resources"].get(EVENT_BUS_ID),
        event_bus_created=bus_created,
        queues=MappingProxyType({i: context["resources"][i] for i in _template_queues(template) if i in context["resources"]}),
    )


def _stream_mapping(template: Mapping[str, Any], context: Mapping[str, Any], stream_arn: str | None) -> StreamMapping | None:
    """The stream consumer's DynamoDB event, resolved against what was created (None without one)."""
    if STREAM_CONSUMER_ID not in (template.get("Resources") or {}):
        return None
    event = event_source(template, STREAM_CONSUMER_ID, "DynamoDB", context=context)
    if not stream_arn or event.get("Stream") != stream_arn:
        raise TemplateError(f"{STREAM_CONSUMER_ID}'s DynamoDB event does not read {TABLE_ID}'s stream")
    on_failure_arn = ((event.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
    on_failure_url = None
    if on_failure_arn is not None:
        queues = [attrs for attrs in context["attributes"].values() if attrs.get("Arn") == on_failure_arn]
        if queues and "QueueUrl" in queues[0]:
            on_failure_url = queues[0]["QueueUrl"]
    return StreamMapping(
        function_logical_id=STREAM_CONSUMER_ID,
        stream_arn=stream_arn,
        starting_position=str(event.get("StartingPosition", "TRIM_HORIZON")),
        batch_size=int(event.get("BatchSize", 100)),
        bisect_on_error=str(event.get("BisectBatchOnFunctionError", False)).lower() == "true",
        maximum_retry_attempts=int(event.get("MaximumRetryAttempts", -1)),
        maximum_record_age_seconds=int(event.get("MaximumRecordAgeInSeconds", -1)),
        function_response_types=tuple(event.get("FunctionResponseTypes") or ()),
        function_timeout=function_timeout(template, STREAM_CONSUMER_ID, context),
        on_failure_arn=on_failure_arn,
        on_failure_url=on_failure_url,
    )


def delete_resources(resources: LocalResources, dynamodb_client: Any, sqs_client: Any, events_client: Any = None) -> None:
    """Remove what `create_resources` made (for runs sharing a long-lived endpoint); the bus goes
    with the rules put on it. The template protects its tables from deletion; a local run's tables
    are throwaway, so the protection is lifted first, as an operator would before deleting a table
    by hand."""
    if resources.event_bus_created and resources.event_bus_name:
        _delete_event_bus(events_client or sibling_client(sqs_client, "events"), resources.event_bus_name)
    urls = [resources.queue_url, resources.dlq_url, resources.stream_failure_queue_url, *resources.queues.values()]
    for url in dict.fromkeys(url for url in urls if url is not None):
        with contextlib.suppress(sqs_client.exceptions.QueueDoesNotExist):
            sqs_client.delete_queue(QueueUrl=url)
    for table_name in dict.fromkeys([resources.table_name, *resources.tables.values()]):
        try:
            if dynamodb_client.describe_table(TableName=table_name)["Table"].get("DeletionProtectionEnabled"):
                dynamodb_client.update_table(TableName=table_name, DeletionProtectionEnabled=False)
            dynamodb_client.delete_table(TableName=table_name)
        except dynamodb_client.exceptions.ResourceNotFoundException:
            continue
        dynamodb_client.get_waiter("table_not_exists").wait(
            TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )


def _delete_event_bus(events_client: Any, name: str) -> None:
    try:
        rules = events_client.list_rules(EventBusName=name).get("Rules", [])
    except events_client.exceptions.ResourceNotFoundException:
        return
    for rule in rules:
        targets = events_client.list_targets_by_rule(Rule=rule["Name"], EventBusName=name).get("Targets", [])
        if targets:
            events_client.remove_targets(Rule=rule["Name"], EventBusName=name, Ids=[t["Id"] for t in targets])
        events_client.delete_rule(Name=rule["Name"], EventBusName=name)
    events_client.delete_event_bus(Name=name)
