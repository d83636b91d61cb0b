"""The AWS API operations each Lambda's code path calls, and the IAM actions they need.

Written down once so least privilege can be proven rather than eyeballed: template.yaml must grant
each function exactly these actions, plus what its event source mapping needs
(tests/unit/test_template_checks.py), and tests/integration/test_aws_operations.py runs every
handler path against the emulator, records the calls it makes, and fails on any call not listed
here (or any listed call no path makes). A new boto3 call therefore needs a line here and a
statement in template.yaml, or the suite says so.
"""

from __future__ import annotations

from collections.abc import Mapping

from earnings_sync.observability import Handler

# "<service>:<API operation>" per handler, with where the call is made. The ledger's reads (Query,
# Scan) are the CLI's, run with the operator's credentials.
OPERATIONS: Mapping[Handler, frozenset[str]] = {
    Handler.PRODUCER: frozenset(
        {
            "sqs:SendMessageBatch",  # producer.SyncProducer._send_batch
            "s3:GetObject",  # sources.read_s3_object, for {"s3": ...} events and S3 notifications
            "ssm:GetParameter",  # sources.resolve_api_key, the AlphaVantage key (SecureString)
            "dynamodb:PutItem",  # ledger.SyncLedger.write_manifest (ledger table)
            "dynamodb:UpdateItem",  # ledger.SyncLedger.register_sync (ledger table)
        }
    ),
    Handler.CONSUMER: frozenset(
        {
            "dynamodb:BatchGetItem",  # calendar_table.CalendarTable.batch_get: the stored items, one read per message
            "dynamodb:BatchWriteItem",  # calendar_table.batch_put: WriteMode batch
            "dynamodb:PutItem",  # calendar_table.put_if_sync: WriteMode conditional, content writes; ledger.record_outcome
            "dynamodb:UpdateItem",  # calendar_table.confirm: WriteMode conditional, lastSyncDate-only confirmations
            "dynamodb:GetItem",  # calendar_table.get: re-read after a lost race that returned no item
            "sqs:SendMessage",  # dlq.send_dead_letter
        }
    ),
    Handler.STREAM_CONSUMER: frozenset(
        {
            "dynamodb:Query",  # calendar_table.symbol_items: the symbol's dates (base table)
            "dynamodb:DeleteItem",  # calendar_table.delete_if_unchanged: superseded dates
            "dynamodb:PutItem",  # calendar_table.restore: regressions
            "dynamodb:GetItem",  # ledger.SyncLedger.sole_sync: the sync registry (ledger table)
            "events:PutEvents",  # change_events.EventBridgePublisher: change events, on the one bus
        }
    ),
    Handler.UPCOMING: frozenset(
        {
            "dynamodb:Query",  # calendar_table.query_day: on upcoming-earnings-index only
            "dynamodb:Scan",  # calendar_table.scan_dates: the upcoming fallback, base table
        }
    ),
    Handler.SYNC_MONITOR: frozenset(
        {
            "dynamodb:Query",  # ledger.SyncLedger.registrations_since and .entries (ledger table)
            "dynamodb:UpdateItem",  # ledger.SyncLedger.mark_completed (ledger table)
        }
    ),
}

# API operations authorised by an IAM action of another name.
_IAM_ACTION = {"sqs:SendMessageBatch": "sqs:SendMessage"}


def iam_action(operation: str) -> str:
    """The IAM action that authorises an API operation ("sqs:SendMessageBatch" → "sqs:SendMessage")."""
    return _IAM_ACTION.get(operation, operation)


def iam_actions(handler: Handler) -> frozenset[str]:
    return frozenset(iam_action(operation) for operation in OPERATIONS[handler])
