"""Seeded faults at the botocore layer, on the very clients the handlers get from `earnings_sync.aws`.

Every injector decides from its own `random.Random(seed)` in call order, so a scenario replays the
same faults on every run. A `Gate` switches a group of injectors off, e.g. while a concurrent
consumer works, or for the clean-up phase of a scenario.
"""

from __future__ import annotations

import importlib.util
import json
import random
from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import EndpointConnectionError

from consumers import sqs_consumer
from earnings_sync_local.lambda_runtime import InvocationAborted, LambdaContext, invoke
from earnings_sync_local.sqs_mapping import SqsEventSource
from tests.helpers import dynamodb_error, http_response

Reply = Callable[[Any], Any]
Key = tuple[str, str]


class Gate:
    def __init__(self) -> None:
        self.on = True


def throttled(request: Any) -> Any:
    return dynamodb_error("ProvisionedThroughputExceededException")(request)


def server_error(request: Any) -> Any:
    return http_response(500, {"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError", "message": "injected"})


def unavailable(request: Any) -> Any:
    return http_response(503, {"__type": "com.amazonaws.dynamodb.v20120810#ServiceUnavailable", "message": "injected"})


def connection_lost(request: Any) -> Any:
    raise EndpointConnectionError(endpoint_url=request.url)


def access_denied(request: Any) -> Any:
    return http_response(403, {"__type": "com.amazon.coral.service#AccessDeniedException", "message": "injected"})


def request_body(request: Any) -> dict[str, Any]:
    body = request.body
    return json.loads(body.decode() if isinstance(body, bytes) else body or "{}")


def written_keys(params: dict[str, Any]) -> set[Key]:
    """Keys of the items a BatchWriteItem / PutItem request (API parameters or JSON body) writes."""
    items = [r["PutRequest"]["Item"] for requests in (params.get("RequestItems") or {}).values() for r in requests]
    if "Item" in params:
        items.append(params["Item"])
    return {(i["asset_symbol"]["S"], i["earnings_date"]["S"]) for i in items if "asset_symbol" in i}


class SeededFaults:
    """Answer a seeded share of some operations' calls with `reply` instead of sending them.

    `where(request)` narrows the calls considered (e.g. one table); `rate` is the share answered.
    """

    def __init__(
        self,
        client: Any,
        service: str,
        operations: Iterable[str],
        reply: Reply,
        *,
        rate: float,
        seed: int,
        gate: Gate | None = None,
        where: Callable[[Any], bool] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.reply = reply
        self.rate = rate
        self.gate = gate or Gate()
        self.where = where
        self.calls = 0
        self.injected = 0
        for operation in operations:
            client.meta.events.register(f"before-send.{service}.{operation}", self._before_send)

    def _before_send(self, request: Any, **_: Any) -> Any:
        if not self.gate.on or (self.where is not None and not self.where(request)):
            return None
        self.calls += 1
        if self.rng.random() >= self.rate:
            return None
        self.injected += 1
        return self.reply(request)


class PartialBatch:
    """Let a batch call through with only part of its entries and report the rest as not done:
    BatchWriteItem → UnprocessedItems, BatchGetItem → UnprocessedKeys, SendMessageBatch → Failed.
    When no entry is let through, the call is answered without being sent.

    `always(entry)` may make an entry fail every time (a persistent failure); otherwise each entry
    fails with probability `rate`.
    """

    def __init__(
        self,
        client: Any,
        service: str,
        operation: str,
        *,
        rate: float,
        seed: int,
        gate: Gate | None = None,
        always: Callable[[Any], bool] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.gate = gate or Gate()
        self.always = always
        self.operation = operation
        self.held: list[tuple[str, Any]] = []  # (table, entry); table is "" for SQS
        self.none_kept = False
        self.injected = 0
        client.meta.events.register(f"before-parameter-build.{service}.{operation}", self._before)
        client.meta.events.register(f"before-send.{service}.{operation}", self._before_send)
        client.meta.events.register(f"after-call.{service}.{operation}", self._after)

    def _fails(self, entry: Any) -> bool:
        return (self.always is not None and self.always(entry)) or self.rng.random() < self.rate

    def _split(self, table: str, entries: list[Any]) -> list[Any]:
        kept = []
        for entry in entries:
            if self._fails(entry):
                self.held.append((table, entry))
            else:
                kept.append(entry)
        return kept

    def _before(self, params: dict[str, Any], **_: Any) -> None:
        self.held, self.none_kept = [], False
        if not self.gate.on:
            return
        if self.operation == "SendMessageBatch":
            kept = self._split("", params["Entries"])
            if kept:
                params["Entries"] = kept
            self.none_kept = not kept
        else:
            kept_any = False
            for table, request in params["RequestItems"].items():
                entries = request["Keys"] if self.operation == "BatchGetItem" else request
                kept = self._split(table, entries)
                if kept and self.operation == "BatchGetItem":
                    request["Keys"] = kept
                elif kept:
                    params["RequestItems"][table] = kept
                kept_any = kept_any or bool(kept)
            self.none_kept = not kept_any
        self.injected += len(self.held)

    def _not_done(self) -> dict[str, Any]:
        if self.operation == "SendMessageBatch":
            return {"Failed": [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "injected"} for _, e in self.held]}
        if self.operation == "BatchGetItem":
            keys: dict[str, Any] = {}
            for table, entry in self.held:
                keys.setdefault(table, {"Keys": [], "ConsistentRead": True})["Keys"].append(entry)
            return {"UnprocessedKeys": keys}
        items: dict[str, list[Any]] = {}
        for table, entry in self.held:
            items.setdefault(table, []).append(entry)
        return {"UnprocessedItems": items}

    def _before_send(self, request: Any, **_: Any) -> Any:
        if not self.none_kept:
            return None
        body = {"Successful": []} if self.operation == "SendMessageBatch" else {"Responses": {}}
        return http_response(200, {**body, **self._not_done()})

    def _after(self, parsed: dict[str, Any], **_: Any) -> None:
        held, none_kept, self.held, self.none_kept = self.held, self.none_kept, [], False
        if not held or none_kept:
            return
        for name, value in self._not_done_of(held).items():
            if isinstance(value, list):
                parsed.setdefault(name, []).extend(value)
            else:
                for table, request in value.items():
                    target = parsed.setdefault(name, {})
                    if isinstance(request, dict):
                        target.setdefault(table, {"Keys": [], "ConsistentRead": True})["Keys"].extend(request["Keys"])
                    else:
                        target.setdefault(table, []).extend(request)

    def _not_done_of(self, held: list[tuple[str, Any]]) -> dict[str, Any]:
        saved, self.held = self.held, held
        try:
            return self._not_done()
        finally:
            self.held = saved


class FailedEntries:
    """PutEvents sends only some of its entries and reports the others failed at their positions
    (`FailedEntryCount`), as EventBridge does: `fails(entry)` picks them, or a seeded share `rate`.
    When no entry is left to send, the call is answered without being sent."""

    def __init__(
        self,
        client: Any,
        *,
        rate: float = 0.0,
        seed: int = 0,
        fails: Callable[[dict[str, Any]], bool] | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.fails = fails
        self.gate = gate or Gate()
        self.flags: list[bool] = []  # per entry of the current call: True = reported failed
        self.injected = 0
        client.meta.events.register("before-parameter-build.events.PutEvents", self._before)
        client.meta.events.register("before-send.events.PutEvents", self._before_send)
        client.meta.events.register("after-call.events.PutEvents", self._after)

    def _before(self, params: dict[str, Any], **_: Any) -> None:
        entries = params["Entries"]
        self.flags = [self.gate.on and ((self.fails is not None and self.fails(e)) or self.rng.random() < self.rate) for e in entries]
        self.injected += sum(self.flags)
        if not all(self.flags):  # all failed: the request is answered before it is sent (see _before_send)
            params["Entries"] = [e for e, failed in zip(entries, self.flags, strict=True) if not failed]

    def _failed(self) -> dict[str, str]:
        return {"ErrorCode": "InternalFailure", "ErrorMessage": "injected"}

    def _before_send(self, request: Any, **_: Any) -> Any:
        if not self.flags or not all(self.flags):
            return None
        return http_response(200, {"FailedEntryCount": len(self.flags), "Entries": [self._failed() for _ in self.flags]})

    def _after(self, parsed: dict[str, Any], **_: Any) -> None:
        flags, self.flags = self.flags, []
        if not any(flags) or all(flags):
            return
        sent = iter(parsed.get("Entries", []))
        parsed["Entries"] = [self._failed() if failed else next(sent) for failed in flags]
        parsed["FailedEntryCount"] = parsed.get("FailedEntryCount", 0) + sum(flags)


class CrashAfterWrite:
    """The invocation dies right after some BatchWriteItem calls returned: the records are written,
    the message's outcome is not, and Lambda makes every message of the batch visible again."""

    def __init__(self, client: Any, *, crash_on: set[int], gate: Gate | None = None) -> None:
        self.crash_on = crash_on  # 1-based numbers of the calls after which the invocation dies
        self.gate = gate or Gate()
        self.calls = 0
        self.crashes = 0
        client.meta.events.register("after-call.dynamodb.BatchWriteItem", self._after)

    def _after(self, **_: Any) -> None:
        if not self.gate.on:
            return
        self.calls += 1
        if self.calls in self.crash_on:
            self.crashes += 1
            raise InvocationAborted(f"crashed after BatchWriteItem call {self.calls}")


class TimingOut:
    """A `LocalPipeline(wrap_consumer=...)`: the first `invocations` batches of two or more messages
    do the first half of their messages, then the runtime kills them (Task timed out)."""

    def __init__(self, invocations: int) -> None:
        self.left = invocations
        self.timeouts = 0

    def __call__(self, handler: Callable[[dict, Any], Any]) -> Callable[[dict, Any], Any]:
        def handler_with_timeouts(event: dict, context: Any) -> Any:
            records = event["Records"]
            if self.left <= 0 or len(records) < 2:
                return handler(event, context)
            self.left -= 1
            self.timeouts += 1
            handler({"Records": records[: len(records) // 2]}, context)
            raise InvocationAborted(f"Task timed out after {context.get_remaining_time_in_millis() / 1000:.2f} seconds")

        return handler_with_timeouts


class ConcurrentConsumer:
    """A second execution environment of the consumer, polling its own queue: the same handler
    code loaded again as a module of its own (its own batch processor, logger and metrics), so it
    can run while the first one is in the middle of a message."""

    def __init__(self, sqs: Any, queue_url: str, queue_arn: str, resources: Any) -> None:
        spec = importlib.util.spec_from_file_location("sqs_consumer_second_environment", sqs_consumer.__file__)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.sqs = sqs
        self.source = SqsEventSource(
            sqs, queue_url, queue_arn, module.lambda_handler,
            batch_size=resources.consumer_batch_size, report_batch_item_failures=True,
            function_name="ConsumerFunction", timeout_seconds=resources.consumer_timeout,
        )
        self.delivered = 0

    def take(self, keys: set[Key]) -> int:
        """Deliver, in one invocation, the queued messages that write any of these keys."""
        messages: list[dict] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.source.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600,
                AttributeNames=["All"], MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                break
            messages.extend(batch)
        wanted = [m for m in messages if keys & {(r["asset_symbol"], r["earnings_date"]) for r in json.loads(m["Body"])["records"]}]
        others = [m for m in messages if m not in wanted]
        for start in range(0, len(others), 10):
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.source.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0} for i, m in enumerate(others[start : start + 10])],
            )
        for start in range(0, len(wanted), 10):
            chunk = wanted[start : start + 10]
            result, _, error = invoke(self.source.handler, self.source.build_event(chunk), LambdaContext("ConsumerFunction", 30))
            assert error is None and result == {"batchItemFailures": []}, (error, result)
            self.sqs.delete_message_batch(
                QueueUrl=self.source.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        self.delivered += len(wanted)
        return len(wanted)


class RaceBeforeWrite:
    """Open the batch path's race window: just before a BatchWriteItem of the older sync that
    touches a target key, the concurrent consumer writes the newer sync's messages for the same
    keys, so the older write lands on newer items (the stream consumer must restore them)."""

    def __init__(self, client: Any, instance: ConcurrentConsumer, *, older: str, targets: set[Key], gates: Iterable[Gate]) -> None:
        self.instance = instance
        self.older = older
        self.targets = targets
        self.gates = list(gates)
        self.busy = False
        self.races = 0
        client.meta.events.register("before-parameter-build.dynamodb.BatchWriteItem", self._before)

    def _before(self, params: dict[str, Any], **_: Any) -> None:
        if self.busy:
            return
        items = [r["PutRequest"]["Item"] for requests in params["RequestItems"].values() for r in requests]
        keys = written_keys(params)
        if not items or items[0]["lastSyncDate"]["S"] != self.older or not keys & self.targets:
            return
        self.busy = True
        saved = [gate.on for gate in self.gates]
        for gate in self.gates:
            gate.on = False
        try:
            self.races += bool(self.instance.take(keys))
        finally:
            for gate, on in zip(self.gates, saved, strict=True):
                gate.on = on
            self.busy = False


class StreamConsumerDown:
    """The stream consumer fails every invocation until `recover()` (a bad deployment, a dependency
    gone): the stream mapping retries, bisects and then gives up on each record, sending its range
    to the on-failure queue, and its checkpoint moves past it for good."""

    def __init__(self, source: Any) -> None:
        self.source = source  # local_streams.DynamoDBStreamEventSource
        self.handler = source.handler
        self.invocations = 0
        source.handler = self._down

    def _down(self, event: dict, context: Any) -> Any:
        self.invocations += 1
        raise RuntimeError("stream consumer down")

    def recover(self) -> None:
        self.source.handler = self.handler
