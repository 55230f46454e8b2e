"""What AWS does between the resources and the functions, done locally.

:class:`QueuePoller` is the SQS event source mapping (S3 → SQS → Lambda): it long-polls a queue, invokes the
function with Lambda's exact SQS event, and deletes the records that succeeded (all of them, unless the
function reports ``batchItemFailures``); failed records stay on the queue and come back after the visibility
timeout, and the queue's redrive policy moves them to the dead-letter queue, as in AWS.
:class:`Scheduler` is EventBridge Scheduler, which moto never fires.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from embrec_tools.local.lambdas import DEFAULT_ACCOUNT_ID, LambdaFunction, ScheduleTrigger

__all__ = ["QueuePoller", "Scheduler", "deletable_receipts", "scheduler_event", "sqs_event"]

logger = logging.getLogger(__name__)


def _message_attributes(raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    # boto3 gives {"StringValue", "BinaryValue" (bytes), "DataType"}; Lambda camelCase, binary base64.
    out: dict[str, dict[str, Any]] = {}
    for name, attr in raw.items():
        entry: dict[str, Any] = {
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": attr.get("DataType"),
        }
        if "StringValue" in attr:
            entry["stringValue"] = attr["StringValue"]
        if "BinaryValue" in attr:
            value = attr["BinaryValue"]
            entry["binaryValue"] = base64.b64encode(value).decode() if isinstance(value, bytes) else value
        out[name] = entry
    return out


def sqs_event(messages: Sequence[Mapping[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """Lambda's SQS event for messages as ``ReceiveMessage`` returned them (attribute names ``All``)."""
    records = []
    for message in messages:
        attributes = {k: str(v) for k, v in (message.get("Attributes") or {}).items()}
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message.get("Body", ""),
            "attributes": attributes,
            "messageAttributes": _message_attributes(message.get("MessageAttributes") or {}),
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        }
        if message.get("MD5OfMessageAttributes"):
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        records.append(record)
    return {"Records": records}


def deletable_receipts(
    messages: Sequence[Mapping[str, Any]], result: Any, report_failures: bool
) -> list[str]:
    """Receipt handles of the records the event source mapping deletes after a successful invocation.

    Without ReportBatchItemFailures every record succeeded. With it, records named in ``batchItemFailures``
    stay; a malformed response (an unknown or empty ``itemIdentifier``) fails the whole batch, as in AWS.
    """
    handles = [m["ReceiptHandle"] for m in messages]
    if not report_failures or not isinstance(result, Mapping):
        return handles
    failures = result.get("batchItemFailures") or []
    ids = {m["MessageId"] for m in messages}
    failed: set[str] = set()
    for failure in failures:
        item = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
        if not item or item not in ids:
            logger.warning("malformed batchItemFailures: whole batch fails", extra={"failure": failure})
            return []
        failed.add(item)
    return [m["ReceiptHandle"] for m in messages if m["MessageId"] not in failed]


def scheduler_event(
    trigger: ScheduleTrigger, region: str, account_id: str = DEFAULT_ACCOUNT_ID, now: float | None = None
) -> Any:
    """The event a schedule delivers: its constant ``Input`` when set, else the scheduled-event envelope."""
    if trigger.input is not None:
        return json.loads(trigger.input)
    now = time.time() if now is None else now
    source, resource = (
        ("aws.scheduler", f"arn:aws:scheduler:{region}:{account_id}:schedule/default/{trigger.name}")
        if trigger.scheduler
        else ("aws.events", f"arn:aws:events:{region}:{account_id}:rule/{trigger.name}")
    )
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": source,
        "account": account_id,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "region": region,
        "resources": [resource],
        "detail": {},
    }


class QueuePoller:
    """One SQS event source mapping: a daemon thread from :meth:`start` to :meth:`stop`.

    ``sqs`` is a boto3 SQS client for the local endpoint; ``wait_seconds`` is the long-poll time (it also
    bounds how long :meth:`stop` takes).
    """

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        function: LambdaFunction,
        *,
        batch_size: int = 10,
        report_failures: bool = False,
        region: str = "us-east-1",
        wait_seconds: int = 1,
    ) -> None:
        self._sqs = sqs
        self.queue_url = queue_url
        self.function = function
        self.batch_size = max(1, batch_size)
        self.report_failures = report_failures
        self.region = region
        self.wait_seconds = wait_seconds
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self.invocations = 0
        self.errors = 0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"embrec-sqs-{self.function.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and wait for the batch in flight to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @property
    def busy(self) -> bool:
        """True while a batch is being received or handled."""
        return not self._idle.is_set()

    def _receive(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        wait = self.wait_seconds
        while len(messages) < self.batch_size and not self._stop.is_set():
            response = self._sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.batch_size - len(messages)),
                WaitTimeSeconds=wait,
                AttributeNames=["All"],  # older endpoints (LocalStack) know only this spelling
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            got = response.get("Messages") or []
            if not got:
                break
            self._idle.clear()
            messages.extend(got)
            wait = 0  # fill the batch with what is already there, do not wait for more
        return messages

    def poll_once(self) -> int:
        """Receive one batch and dispatch it; returns the number of records handed to the function."""
        messages = self._receive()
        if not messages:
            return 0
        self._idle.clear()
        try:
            event = sqs_event(messages, self.queue_arn, self.region)
            self.invocations += 1
            try:
                result = self.function.invoke(event)
            except Exception:
                self.errors += 1
                logger.exception(
                    "SQS-triggered function failed; batch left for redrive",
                    extra={"function": self.function.name, "records": len(messages)},
                )
                return len(messages)
            handles = deletable_receipts(messages, result, self.report_failures)
            for start in range(0, len(handles), 10):
                entries = [
                    {"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(handles[start : start + 10])
                ]
                self._sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            return len(messages)
        finally:
            self._idle.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                # The endpoint went away or hiccuped: back off briefly, keep the mapping alive.
                self._idle.set()
                logger.exception("SQS poll failed", extra={"queue": self.queue_url})
                self._stop.wait(1.0)


class Scheduler:
    """Runs ``function`` every ``interval`` seconds with ``trigger``'s event; :meth:`trigger` runs it now."""

    def __init__(
        self,
        function: LambdaFunction,
        trigger: ScheduleTrigger,
        interval: float,
        *,
        region: str = "us-east-1",
    ) -> None:
        self.function = function
        self.trigger_spec = trigger
        self.interval = interval
        self.region = region
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"embrec-schedule-{self.function.name}", daemon=True
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def stop(self) -> None:
        """Stop the timer; a run in progress finishes first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def trigger(self) -> Any:
        """Invoke the function now, synchronously, with a scheduled event; its result (or its error)."""
        self.runs += 1
        return self.function.invoke(scheduler_event(self.trigger_spec, self.region, self.function.account_id))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.trigger()
            except Exception:
                logger.exception("scheduled run failed", extra={"function": self.function.name})
