"""An API Gateway HTTP API (payload format 2.0) emulator in front of the template's functions.

Pure parts, tested without a socket: :class:`RouteTable` matches a request to a route the way API Gateway does
(literal segment before ``{param}`` before ``{proxy+}``, an exact method before ``ANY``, ``$default`` last,
on the percent-decoded path, so ``%2F`` separates segments as ``/`` does);
:func:`build_event` builds the exact v2.0 event; :func:`translate_response` turns what a handler returned into
status, headers and body, including API Gateway's inference for a return value without ``statusCode``.
:class:`ApiGatewayServer` puts them behind a ``ThreadingHTTPServer``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from embrec.errors import AuthenticationError, ForbiddenError
from embrec_tools.http_server import BackgroundHttpServer
from embrec_tools.local.lambdas import DEFAULT_ACCOUNT_ID, HttpRoute, LambdaFunction

__all__ = [
    "MAX_BODY_BYTES",
    "ApiGatewayServer",
    "HttpResponse",
    "RouteMatch",
    "RouteTable",
    "build_event",
    "error_response",
    "translate_response",
]

logger = logging.getLogger(__name__)

#: Request bodies above this are refused with 413 before any handler runs.
MAX_BODY_BYTES = 256 * 1024

_TEXT_TYPES = re.compile(
    r"^(text/.*|application/(json|xml|javascript|x-www-form-urlencoded|graphql|ld\+json|.*\+json|.*\+xml))$"
)
_PARAM = re.compile(r"^\{([A-Za-z0-9_.-]+)(\+?)\}$")


@dataclass(frozen=True)
class RouteMatch:
    """The route a request matched, and its decoded path parameters (empty for routes without any)."""

    route: HttpRoute
    target: str  # logical id of the function
    path_parameters: dict[str, str]


@dataclass(frozen=True)
class _CompiledRoute:
    route: HttpRoute
    target: str
    segments: tuple[tuple[int, str], ...]  # (kind, text): 0 literal, 1 {param}, 2 {greedy+}

    def match(self, parts: Sequence[str]) -> dict[str, str] | None:
        params: dict[str, str] = {}
        for i, (kind, text) in enumerate(self.segments):
            if kind == 2:
                rest = parts[i:]
                if not rest or rest == [""]:
                    return None
                params[text] = "/".join(rest)
                return params
            if i >= len(parts):
                return None
            if kind == 0 and parts[i] != text:
                return None
            if kind == 1:
                if parts[i] == "":
                    return None
                params[text] = parts[i]
        return params if len(parts) == len(self.segments) else None

    def priority(self) -> tuple[tuple[int, ...], int]:
        # Lower sorts first: literal beats {param} beats {greedy+}, segment by segment; then an exact method.
        return tuple(kind for kind, _ in self.segments), 1 if self.route.method == "ANY" else 0


def _split(path: str) -> list[str]:
    return path.strip("/").split("/") if path.strip("/") else []


class RouteTable:
    """The routes of the API, matched with API Gateway's precedence."""

    def __init__(self, routes: Iterable[tuple[HttpRoute, str]]) -> None:
        self._routes: list[_CompiledRoute] = []
        self._default: tuple[HttpRoute, str] | None = None
        for route, target in routes:
            if route.path == "$default":
                self._default = (HttpRoute("ANY", "$default"), target)
                continue
            segments = []
            for part in _split(route.path):
                param = _PARAM.match(part)
                segments.append((2 if param.group(2) else 1, param.group(1)) if param else (0, part))
            self._routes.append(_CompiledRoute(route, target, tuple(segments)))
        self._routes.sort(key=_CompiledRoute.priority)

    @classmethod
    def from_functions(cls, functions: Iterable[LambdaFunction]) -> RouteTable:
        return cls((route, fn.name) for fn in functions for route in fn.spec.http_routes)

    def __len__(self) -> int:
        return len(self._routes) + (self._default is not None)

    def route_keys(self) -> list[str]:
        keys = [r.route.route_key for r in self._routes]
        return [*keys, "$default"] if self._default else keys

    def match(self, method: str, raw_path: str) -> RouteMatch | None:
        """The best route for ``method`` and the (URL-encoded) ``raw_path``; None when nothing matches.

        Like API Gateway's HTTP API, the path is decoded before it is matched: ``/users/a%2Fb`` has three
        segments and matches no ``/users/{user_id}`` route.
        """
        parts = _split(unquote(raw_path))
        for compiled in self._routes:
            if compiled.route.method not in (method.upper(), "ANY"):
                continue
            params = compiled.match(parts)
            if params is not None:
                return RouteMatch(compiled.route, compiled.target, params)
        if self._default:
            return RouteMatch(self._default[0], self._default[1], {})
        return None


def _is_text(content_type: str | None) -> bool:
    if not content_type:
        return False
    return bool(_TEXT_TYPES.match(content_type.split(";", 1)[0].strip().lower()))


def build_event(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    match: RouteMatch,
    source_ip: str = "127.0.0.1",
    api_id: str = "local",
    account_id: str = DEFAULT_ACCOUNT_ID,
    request_id: str | None = None,
    now: float | None = None,
    protocol: str = "HTTP/1.1",
) -> dict[str, Any]:
    """The API Gateway HTTP API payload v2.0 event for one request.

    ``raw_path`` is the request's (URL-encoded) path; the event carries it percent-decoded in ``rawPath`` and
    ``requestContext.http.path``, as API Gateway's HTTP API does (``/users/auth0%7C1`` arrives as
    ``/users/auth0|1``), so a function reads the same id here as in AWS. Header names are lower-cased and
    repeated headers comma-joined; ``Cookie`` headers become ``cookies``
    (a list); repeated query keys are comma-joined in ``queryStringParameters``; ``body`` is omitted when
    empty, text for textual content types (valid UTF-8), base64 otherwise (``isBase64Encoded``). ``now`` is
    epoch seconds (defaults to the current time).
    """
    now = time.time() if now is None else now
    path = unquote(raw_path)
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    request_id = request_id or base64.urlsafe_b64encode(uuid.uuid4().bytes[:12]).decode().rstrip("=")
    route_key = match.route.route_key if match.route.path != "$default" else "$default"
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = merged
    if raw_query:
        query: dict[str, str] = {}
        for key, value in parse_qsl(raw_query, keep_blank_values=True):
            query[key] = f"{query[key]},{value}" if key in query else value
        event["queryStringParameters"] = query
    domain = merged.get("host", f"{api_id}.execute-api.localhost")
    event["requestContext"] = {
        "accountId": account_id,
        "apiId": api_id,
        "domainName": domain,
        "domainPrefix": domain.split(".", 1)[0],
        "http": {
            "method": method.upper(),
            "path": path,
            "protocol": protocol,
            "sourceIp": source_ip,
            "userAgent": merged.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": route_key,
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }
    if match.path_parameters:
        event["pathParameters"] = dict(match.path_parameters)
    event["isBase64Encoded"] = False
    if body:
        text: str | None = None
        if _is_text(merged.get("content-type")):
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is None:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
        else:
            event["body"] = text
    return event


@dataclass
class HttpResponse:
    """What goes back on the wire: ``headers`` as (name, value) pairs, so Set-Cookie may repeat."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def error_response(status: int, error: str, message: str) -> HttpResponse:
    """A JSON ``{error, message}`` response, the shape of every embrec error."""
    payload = json.dumps({"error": error, "message": message}).encode()
    return HttpResponse(status, [("content-type", "application/json")], payload)


def translate_response(result: Any) -> HttpResponse:
    """Turn a payload v2.0 handler result into an HTTP response, as API Gateway does.

    A dict with ``statusCode`` is used as given (``headers``, ``multiValueHeaders``, ``cookies``, ``body``,
    ``isBase64Encoded``). Anything else (a dict without ``statusCode``, a string, a number, None) is taken as
    the JSON body of a 200 ``application/json`` response. Raises ``ValueError`` for a malformed response
    (API Gateway answers 500 then).
    """
    if not (isinstance(result, Mapping) and "statusCode" in result):
        return HttpResponse(200, [("content-type", "application/json")], json.dumps(result).encode())
    try:
        status = int(result["statusCode"])
    except (TypeError, ValueError):
        raise ValueError(f"statusCode {result['statusCode']!r} is not an integer") from None
    if not 100 <= status <= 599:
        raise ValueError(f"statusCode {status} out of range")
    headers: list[tuple[str, str]] = []
    for name, value in (result.get("headers") or {}).items():
        headers.append((str(name), "" if value is None else str(value)))
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(v)) for v in values or ())
    headers.extend(("set-cookie", str(cookie)) for cookie in result.get("cookies") or ())
    raw = result.get("body")
    if raw is None:
        body = b""
    elif result.get("isBase64Encoded"):
        try:
            body = base64.b64decode(str(raw), validate=True)
        except binascii.Error:
            raise ValueError("isBase64Encoded body is not valid base64") from None
    elif isinstance(raw, str):
        body = raw.encode("utf-8")
    else:
        body = json.dumps(raw).encode()
    if not any(name.lower() == "content-type" for name, _ in headers) and body:
        headers.append(("content-type", "application/json"))
    return HttpResponse(status, headers, body)


_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})
_REQUEST_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding"})


class ApiGatewayServer(BackgroundHttpServer):
    """A ``ThreadingHTTPServer`` on ``host:port`` (0 = a free port) dispatching to in-process functions.

    ``resolve`` maps a function logical id to its :class:`LambdaFunction`. Every response carries an
    ``apigw-requestid`` header; a handler exception is logged and answered with a generic 500 JSON body.
    """

    def __init__(
        self,
        routes: RouteTable,
        resolve: Callable[[str], LambdaFunction],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_id: str = "local",
        max_body_bytes: int = MAX_BODY_BYTES,
        authorizer: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.routes = routes
        # ``event -> requestContext.authorizer`` (raises AuthenticationError: 401, ForbiddenError: 403): the
        # API's default authorizer, applied to every route but the public ones, as API Gateway's JWT or IAM
        # authorizer does (embrec_tools.local.jwt, embrec_tools.local.iam).
        self._authorizer = authorizer
        self._resolve = resolve
        self._api_id = api_id
        self._max_body = max_body_bytes
        super().__init__(
            host,
            port,
            self._handler_class(),
            thread_name="embrec-api-gateway",
            busy_hint="; set EMBREC_PORT to a free port",
        )

    def handle(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str,
        protocol: str,
    ) -> HttpResponse:
        """One request, end to end (no socket): route, build the event, invoke, translate."""
        split = urlsplit(target)
        raw_path = split.path or "/"
        match = self.routes.match(method, raw_path)
        request_id = base64.urlsafe_b64encode(uuid.uuid4().bytes[:12]).decode().rstrip("=")
        if match is None:
            response = error_response(404, "not_found", f"no route for {method} {raw_path}")
        else:
            event = build_event(
                method=method,
                raw_path=raw_path,
                raw_query=split.query,
                headers=headers,
                body=body,
                match=match,
                source_ip=source_ip,
                api_id=self._api_id,
                request_id=request_id,
                protocol=protocol,
            )
            if self._authorizer is not None and not match.route.public:
                try:
                    event["requestContext"]["authorizer"] = self._authorizer(event)
                except (AuthenticationError, ForbiddenError) as refused:
                    response = (
                        error_response(401, "unauthorized", "Unauthorized")
                        if isinstance(refused, AuthenticationError)
                        else error_response(403, "forbidden", refused.message)
                    )
                    response.headers.append(("apigw-requestid", request_id))
                    return response
            try:
                function = self._resolve(match.target)
                response = translate_response(function.invoke(event, request_id=str(uuid.uuid4())))
            except Exception:
                logger.exception(
                    "handler failed",
                    extra={
                        "route": match.route.route_key,
                        "function": match.target,
                        "request_id": request_id,
                    },
                )
                response = error_response(500, "internal_error", "Internal Server Error")
        response.headers.append(("apigw-requestid", request_id))
        return response

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "embrec-local"
            # Headers and body leave in two writes: with Nagle on, a keep-alive client's delayed ACK held
            # every response's body back ~40 ms (the local request path's "API emulator" share, issue 14).
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length_header = self.headers.get("content-length")
                try:
                    length = int(length_header) if length_header else 0
                except ValueError:
                    length = -1
                if self.headers.get("transfer-encoding", "").lower() == "chunked" or length < 0:
                    self.close_connection = True
                    self._send(
                        error_response(
                            411 if length >= 0 else 400,
                            "invalid_input",
                            "a Content-Length header is required",
                        )
                    )
                    return
                if length > gateway._max_body:
                    self.close_connection = True  # the unread body makes the connection unusable
                    self._send(
                        error_response(
                            413, "payload_too_large", f"request body over {gateway._max_body} bytes"
                        )
                    )
                    return
                body = self.rfile.read(length) if length else b""
                headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _REQUEST_HOP_BY_HOP]
                # what API Gateway adds in front of every integration
                headers += [
                    ("x-forwarded-for", self.client_address[0]),
                    ("x-forwarded-port", str(gateway.port)),
                    ("x-forwarded-proto", "http"),
                ]
                response = gateway.handle(
                    self.command, self.path, headers, body, self.client_address[0], self.request_version
                )
                self._send(response)

            def _send(self, response: HttpResponse) -> None:
                self.send_response(response.status)
                for name, value in response.headers:
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                send_body = self.command != "HEAD"
                self.send_header("content-length", str(len(response.body)))
                if self.close_connection:
                    self.send_header("connection", "close")
                self.end_headers()
                if send_body and response.body:
                    self.wfile.write(response.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve

            def log_message(self, format: str, *args: Any) -> None:
                logger.info("%s %s", self.address_string(), format % args)

        return _Handler
