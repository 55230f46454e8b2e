"""The HTTP edge shared by the API functions: one resolver factory, one error mapping, response shapes.

Every :class:`~embrec.errors.EmbrecError` becomes JSON ``{error, message[, field, reason]}`` with the status
its class declares; anything else becomes a generic 500 with no internals (the traceback goes to the log).
Personal responses carry ``Cache-Control: private, no-store``; shared ones (trending, similar items) may be
cached briefly by clients and CDNs.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

from embrec.edge.auth import caller_from_event, require_user
from embrec.edge.contract import parse_user_id
from embrec.errors import EmbrecError, InvalidInputError

__all__ = ["PERSONAL", "SHARED", "api_resolver", "json_response", "request_body"]

#: Every route under /users/{user_id} is the user's own: the one path shape the middleware guards. The path is
#: the one API Gateway's HTTP API hands over, already percent-decoded (``%7C`` arrives as ``|``): it is read
#: as it is, never decoded a second time, so the middleware and the route see the same id.
_USER_PATH = re.compile(r"^/users/(?P<user_id>[^/]+)")
PERSONAL = "private, no-store"
SHARED = "public, max-age=30"


def json_response(body: Any, status: int = 200, cache_control: str = PERSONAL) -> Response[str]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        headers={"Cache-Control": cache_control},
    )


def request_body(event: BaseProxyEvent) -> str | None:
    """The request body as text (base64 undone); a body that is not UTF-8 is a 400, not a crash.

    API Gateway base64-encodes bodies it cannot pass as text; Powertools' ``decoded_body`` then raises
    ``UnicodeDecodeError`` on them (found by fuzzing: a 500 for 5 stray bytes).
    """
    body = event.body
    if body is None or not event.is_base64_encoded:
        return body
    try:
        return base64.b64decode(body, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidInputError("body", "is not UTF-8 text") from None


def api_resolver(logger: Logger) -> APIGatewayHttpResolver:
    """A Powertools HTTP API (payload v2) resolver with embrec's error mapping registered once.

    CORS is answered by API Gateway itself (the HttpApi's CorsConfiguration in template.yaml).
    """
    app = APIGatewayHttpResolver()

    def _own_user_only(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[str]:
        # Object-level authorisation for every route with a {user_id}, before the route runs
        # (embrec.edge.auth). The id is read from the public request path, the segment Powertools matched,
        # and checked against the id rule first: a malformed id is a 400 naming user_id, not a 403.
        found = _USER_PATH.match(app.current_event.path)
        if found is not None:
            require_user(caller_from_event(app.current_event.raw_event), parse_user_id(found["user_id"]))
        return next_middleware(app)

    app.use(middlewares=[_own_user_only])

    @app.exception_handler(EmbrecError)
    def _known(error: EmbrecError) -> Response[str]:
        if error.status >= 500:
            logger.exception("request failed", extra={"error_code": error.code})
            body = {"error": error.code, "message": "the service could not answer; try again"}
            return json_response(body if error.status == 503 else _GENERIC, error.status, "no-store")
        logger.info("request rejected", extra={"error_code": error.code, "status": error.status})
        return json_response(error.to_dict(), error.status, "no-store")

    @app.exception_handler(Exception)
    def _unexpected(error: Exception) -> Response[str]:
        logger.exception("unexpected error")
        return json_response(_GENERIC, 500, "no-store")

    @app.not_found
    def _not_found(error: Exception) -> Response[str]:
        return json_response({"error": "not_found", "message": "no such route"}, 404, "no-store")

    return app


_GENERIC = {"error": "internal_error", "message": "internal error"}
