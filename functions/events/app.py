"""events λ: interaction batches and user erasure (HTTP), and the erasure job's steps (SQS). DynamoDB only."""

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from embrec.app import service
from embrec.app.runtime import get_runtime, settings_at_start
from embrec.edge.auth import caller_from_event
from embrec.edge.resolver import api_resolver, json_response, request_body
from embrec.observability import logger, metrics, tracer

settings_at_start()  # a bad setting fails the function's start, named in the log, not a request

app = api_resolver(logger)
processor = BatchProcessor(event_type=EventType.SQS)


@app.post("/events")
def events() -> Response[str]:
    caller = caller_from_event(app.current_event.raw_event)
    return json_response(service.record_events(get_runtime(), request_body(app.current_event), caller), 202)


@app.delete("/users/<user_id>")
def delete_user(user_id: str) -> Response[str]:
    return json_response(service.delete_user(get_runtime(), user_id), 202)


@app.get("/users/<user_id>/erasure")
def erasure(user_id: str) -> Response[str]:
    return json_response(service.erasure_status(get_runtime(), user_id))


def erase_record(record: SQSRecord) -> None:
    service.erase_step(get_runtime(), record.body)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "Records" in event:  # the erasure queue
        return process_partial_response(event, erase_record, processor, context)  # type: ignore[return-value]
    return app.resolve(event, context)
