"""The local stack: the whole serverless deployment on a laptop, with no AWS account and no Docker.

It lives inside the package (not under ``infra/``) so the ``embrec`` CLI can import it. One process runs:

- an AWS endpoint: moto's server on 127.0.0.1:``EMBREC_AWS_PORT`` (4566), or ``EMBREC_AWS_ENDPOINT``;
- the resources template.yaml declares (bucket, queues, tables, S3 → SQS notification);
- an API Gateway HTTP API emulator on 127.0.0.1:``EMBREC_PORT`` (3000), payload format 2.0;
- the SQS event source mapping (S3 → SQS → ingest function) and the rebuild schedule.

Usage::

    from embrec_tools.local import LocalEnvironment

    with LocalEnvironment() as env:          # or env.start() ... env.stop()
        print(env.api_url, env.endpoint_url)
        env.wait_for_ingest()                # after a catalog upload to catalog/incoming/
        env.trigger_rebuild()                # the scheduled rebuild, now
        env.serve_forever()                  # until Ctrl-C / SIGTERM
"""

from embrec_tools.local.api_gateway import (
    MAX_BODY_BYTES,
    ApiGatewayServer,
    HttpResponse,
    RouteMatch,
    RouteTable,
    build_event,
    translate_response,
)
from embrec_tools.local.aws_endpoint import AwsEndpoint
from embrec_tools.local.dispatch import QueuePoller, Scheduler, scheduler_event, sqs_event
from embrec_tools.local.lambdas import FunctionSpec, HttpRoute, LambdaContext, LambdaFunction, function_specs
from embrec_tools.local.stack import LocalEnvironment, Provisioner, default_project_root

__all__ = [
    "MAX_BODY_BYTES",
    "ApiGatewayServer",
    "AwsEndpoint",
    "FunctionSpec",
    "HttpResponse",
    "HttpRoute",
    "LambdaContext",
    "LambdaFunction",
    "LocalEnvironment",
    "Provisioner",
    "QueuePoller",
    "RouteMatch",
    "RouteTable",
    "Scheduler",
    "build_event",
    "default_project_root",
    "function_specs",
    "scheduler_event",
    "sqs_event",
    "translate_response",
]
