"""rebuild λ: on the EventBridge schedule, rebuild the index and signals and publish them atomically, then
write the live A/B experiment's report as CloudWatch EMF metrics per variant."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from embrec.app import service
from embrec.app.runtime import get_runtime, settings_at_start
from embrec.observability import logger, metrics, tracer

settings_at_start()  # a bad setting fails the function's start, named in the log, not a request


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return service.rebuild(get_runtime(), report_experiment=True)
