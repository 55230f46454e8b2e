"""cold_start λ: onboarding profiles and free-text search — the only API function that loads the encoder."""

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from embrec.app import service
from embrec.app.runtime import get_runtime, settings_at_start
from embrec.edge.resolver import SHARED, api_resolver, json_response, request_body
from embrec.observability import logger, metrics, tracer

settings_at_start()  # a bad setting fails the function's start, named in the log, not a request

app = api_resolver(logger)


@app.post("/users/<user_id>/onboarding")
def onboarding(user_id: str) -> Response[str]:
    return json_response(service.onboard(get_runtime(), user_id, request_body(app.current_event)))


@app.get("/search")
def search() -> Response[str]:
    body = service.search(get_runtime(), app.current_event.query_string_parameters)
    return json_response(body, cache_control=SHARED)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
