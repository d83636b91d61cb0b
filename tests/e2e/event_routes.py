"""Rules on a deployed stack's change-event bus, as a subscriber would put them: the README's example
rule (deployed verbatim through CloudFormation) and a catch-all rule, each delivering to an SQS queue."""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from earnings_sync_local.template import CloudFormationLoader
from tests.e2e.localstack_stack import DeployedStack

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE_RULE_BUS = "earnings-sync"  # what the README's rule names: the bus the stack creates by default


def readme_rule() -> dict[str, Any]:
    """The resources of the README's example rule (its YAML block that declares `RescheduledRule`)."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (block,) = [b for b in blocks if "RescheduledRule:" in b]
    return yaml.load(block, Loader=CloudFormationLoader)  # noqa: S506 - a SafeLoader subclass


@dataclass
class EventRoutes:
    """Where the bus's events end up: `rescheduled_url` (the README's rule), `all_url` (every event of
    source earnings-sync); `received` keeps every event taken so far, by queue."""

    stack: DeployedStack
    rule_stack: str
    rescheduled_url: str
    all_url: str
    all_rule: str
    received: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"rescheduled": [], "all": []})

    @classmethod
    def create(cls, stack: DeployedStack, timeout: float = 60) -> EventRoutes:
        bus = stack.outputs["EventBusName"]
        assert bus == EXAMPLE_RULE_BUS, bus  # the README's rule routes from the default bus
        cloudformation, sqs, events = stack.client("cloudformation"), stack.client("sqs"), stack.client("events")
        resources = readme_rule()
        template = {"Resources": resources, "Outputs": {"RescheduledQueueUrl": {"Value": {"Ref": "RescheduledQueue"}}}}
        name = f"earnings-sync-e2e-rule-{uuid.uuid4().hex[:8]}"
        cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(template))
        deadline = time.monotonic() + timeout
        while True:
            description = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
            if description["StackStatus"] == "CREATE_COMPLETE":
                break
            assert "FAILED" not in description["StackStatus"] and "ROLLBACK" not in description["StackStatus"], description
            assert time.monotonic() < deadline, f"the rule stack is still {description['StackStatus']}"
            time.sleep(0.5)
        outputs = {o["OutputKey"]: o["OutputValue"] for o in description["Outputs"]}

        all_url = sqs.create_queue(QueueName=f"{name}-all")["QueueUrl"]
        all_arn = sqs.get_queue_attributes(QueueUrl=all_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        rule_arn = events.put_rule(Name=f"{name}-all", EventBusName=bus, EventPattern=json.dumps({"source": ["earnings-sync"]}))["RuleArn"]
        policy = {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "events.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": all_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
                }
            ]
        }
        sqs.set_queue_attributes(QueueUrl=all_url, Attributes={"Policy": json.dumps(policy)})
        events.put_targets(Rule=f"{name}-all", EventBusName=bus, Targets=[{"Id": "all", "Arn": all_arn}])
        return cls(stack, name, outputs["RescheduledQueueUrl"], all_url, f"{name}-all")

    def take(self, which: str) -> list[dict[str, Any]]:
        """Every event waiting in one of the queues (`rescheduled`, `all`), deleted once read."""
        url = self.rescheduled_url if which == "rescheduled" else self.all_url
        sqs = self.stack.client("sqs")
        taken: list[dict[str, Any]] = []
        while True:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
            if not messages:
                break
            taken.extend(json.loads(m["Body"]) for m in messages)
            sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
        self.received[which].extend(taken)
        return taken

    def delete(self) -> None:
        events, sqs = self.stack.client("events"), self.stack.client("sqs")
        bus = self.stack.outputs["EventBusName"]
        events.remove_targets(Rule=self.all_rule, EventBusName=bus, Ids=["all"])
        events.delete_rule(Name=self.all_rule, EventBusName=bus)
        sqs.delete_queue(QueueUrl=self.all_url)
        cloudformation = self.stack.client("cloudformation")
        cloudformation.delete_stack(StackName=self.rule_stack)  # before the bus goes with the main stack
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if cloudformation.describe_stacks(StackName=self.rule_stack)["Stacks"][0]["StackStatus"] in {"DELETE_COMPLETE", "DELETE_FAILED"}:
                    break
            except cloudformation.exceptions.ClientError:
                break
            time.sleep(0.5)
