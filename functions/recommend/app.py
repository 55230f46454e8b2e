"""recommend λ: personalised lists, similar items, health and the OpenAPI document. No encoder here."""

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from embrec.app import service
from embrec.app.runtime import get_runtime, settings_at_start
from embrec.edge.contract import openapi_document
from embrec.edge.resolver import SHARED, api_resolver, json_response
from embrec.observability import logger, metrics, tracer

settings_at_start()  # a bad setting fails the function's start, named in the log, not a request

app = api_resolver(logger)


@app.get("/users/<user_id>/recommendations")
def recommendations(user_id: str) -> Response[str]:
    return json_response(
        service.recommendations(get_runtime(), user_id, app.current_event.query_string_parameters)
    )


@app.get("/items/<item_id>/similar")
def similar(item_id: str) -> Response[str]:
    body = service.similar(get_runtime(), item_id, app.current_event.query_string_parameters)
    return json_response(body, cache_control=SHARED)


@app.get("/health")
def health() -> Response[str]:
    body, status = service.health(get_runtime())
    return json_response(body, status, "no-store")


@app.get("/openapi.json")
def openapi() -> Response[str]:
    return json_response(openapi_document(), cache_control=SHARED)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
