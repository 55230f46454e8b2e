"""ingest λ: S3 catalog uploads arrive through SQS; each record is one object (or one chunk of one)."""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from embrec.app import service
from embrec.app.ingest import IngestDelivery
from embrec.app.runtime import get_runtime, settings_at_start
from embrec.observability import logger, metrics, tracer

settings_at_start()  # a bad setting fails the function's start, named in the log, not a request

processor = BatchProcessor(event_type=EventType.SQS)
# Time kept back from the function's timeout: one more encode batch, the delta, the report, the continuation.
RESERVE_MS = 60_000


def ingest_record(record: SQSRecord, lambda_context: LambdaContext) -> None:
    delivery = IngestDelivery(
        record.body,
        record.receipt_handle,
        int(record.attributes.approximate_receive_count or 1),
        lambda: lambda_context.get_remaining_time_in_millis() < RESERVE_MS,
    )
    service.ingest_message(get_runtime(), delivery)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event, ingest_record, processor, context)  # type: ignore[return-value]
