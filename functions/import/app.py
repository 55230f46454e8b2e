"""import λ: history files under interactions/incoming/ arrive through SQS; one file (or chunk) each."""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from embrec.app import service
from embrec.app.runtime import get_runtime, settings_at_start
from embrec.observability import logger, metrics, tracer

settings_at_start()  # a bad setting fails the function's start, named in the log, not a request

processor = BatchProcessor(event_type=EventType.SQS)


def import_record(record: SQSRecord) -> None:
    service.import_message(get_runtime(), record.body)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event, import_record, processor, context)  # type: ignore[return-value]
