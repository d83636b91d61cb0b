"""Reading an SQS queue to its end without consuming it: the DLQ tools and the stream redo share it.

Each message is handed out once, held invisible (its latest receipt handle kept) until the caller
deletes it (`forget`) or the scan ends (`release` makes every held message visible again at once).
A message whose visibility ran out during a long scan comes back: it is held again with its new
handle, never handed out twice.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

MAX_ENTRIES = 10  # ReceiveMessage / *Batch limit
MAX_STALE_ROUNDS = 50  # receives in a row that bring only messages already handed out end the scan


class QueueScan:
    def __init__(self, sqs: Any, url: str, *, visibility_timeout: int, wait_seconds: int) -> None:
        self.sqs = sqs
        self.url = url
        self.visibility_timeout = max(1, visibility_timeout)  # 0 would hand the same messages back forever
        self.wait_seconds = wait_seconds
        self.seen: set[str] = set()
        self.held: dict[str, str] = {}  # message id -> latest receipt handle

    def _receive(self, count: int, wait: int) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max(1, min(MAX_ENTRIES, count)),
            VisibilityTimeout=self.visibility_timeout,
            WaitTimeSeconds=wait,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return response.get("Messages", [])

    def _visible(self) -> int:
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

    def next(self, count: int = MAX_ENTRIES) -> list[dict[str, Any]]:
        """Up to `count` SQS messages not handed out before, now held; [] when nothing visible is left."""
        for _ in range(MAX_STALE_ROUNDS):
            messages = self._receive(count, 0)
            # A short poll samples a few servers and may miss messages: confirm with a long poll
            # when the queue still reports visible ones.
            if not messages and self.wait_seconds > 0 and self._visible() > 0:
                messages = self._receive(count, self.wait_seconds)
            if not messages:
                return []
            fresh = []
            for message in messages:
                self.held[message["MessageId"]] = message["ReceiptHandle"]
                if message["MessageId"] not in self.seen:
                    self.seen.add(message["MessageId"])
                    fresh.append(message)
            if fresh:
                return fresh
        return []  # only old messages keep coming back: the scan outlasts the visibility timeout

    def handle(self, message_id: str) -> str:
        """The message's latest receipt handle (for a delete)."""
        return self.held[message_id]

    def forget(self, message_id: str) -> None:
        """It left the queue: nothing to release."""
        self.held.pop(message_id, None)

    def release(self) -> tuple[int, int]:
        """Make every held message visible again: (how many SQS accepted, how many it did not)."""
        handles = list(self.held.values())
        self.held.clear()
        released = failed = 0
        for start in range(0, len(handles), MAX_ENTRIES):
            chunk = handles[start : start + MAX_ENTRIES]
            try:
                response = self.sqs.change_message_visibility_batch(
                    QueueUrl=self.url,
                    Entries=[{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0} for i, h in enumerate(chunk)],
                )
            except (ClientError, BotoCoreError):
                failed += len(chunk)  # they reappear anyway when their visibility timeout ends
                continue
            released += len(response.get("Successful", []))
            failed += len(response.get("Failed", []))
        return released, failed
