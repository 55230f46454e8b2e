"""The API Gateway HTTP API emulator's pure parts: route matching, the v2.0 event, response translation.

No sockets: the gateway's ``handle`` is called directly with throwaway handlers written to a temp dir.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from embrec_tools.local.api_gateway import (
    MAX_BODY_BYTES,
    ApiGatewayServer,
    RouteMatch,
    RouteTable,
    build_event,
    translate_response,
)
from embrec_tools.local.dispatch import deletable_receipts, scheduler_event, sqs_event
from embrec_tools.local.lambdas import (
    FunctionSpec,
    HttpRoute,
    LambdaContext,
    LambdaFunction,
    ScheduleTrigger,
    function_specs,
    rate_seconds,
)

ROUTES = RouteTable(
    [
        (HttpRoute("GET", "/users/{user_id}/recommendations"), "Recommend"),
        (HttpRoute("GET", "/items/{item_id}/similar"), "Recommend"),
        (HttpRoute("GET", "/items/special/similar"), "Special"),
        (HttpRoute("ANY", "/items/{proxy+}"), "Proxy"),
        (HttpRoute("DELETE", "/users/{user_id}"), "Events"),
        (HttpRoute("ANY", "/users/{user_id}"), "AnyUser"),
        (HttpRoute("GET", "/health"), "Recommend"),
    ]
)


def _match(method: str, path: str) -> RouteMatch:
    match = ROUTES.match(method, path)
    assert match is not None, f"{method} {path} should match"
    return match


# ---- route matching ---------------------------------------------------------------------------------------


def test_path_parameters_are_extracted_and_url_decoded() -> None:
    match = _match("GET", "/users/u%20%C3%A9/recommendations")
    assert match.route.route_key == "GET /users/{user_id}/recommendations"
    assert match.path_parameters == {"user_id": "u é"}


def test_an_encoded_slash_separates_segments_as_in_api_gateway() -> None:
    # API Gateway's HTTP API decodes the path before matching: an id with '/' is never one segment, which
    # is why the id rule (embrec.domain.model) leaves '/' out
    assert ROUTES.match("DELETE", "/users/a%2Fb") is None
    assert _match("GET", "/users/a%2Frecommendations").path_parameters == {"user_id": "a"}


def test_literal_segment_beats_parameter_and_parameter_beats_greedy() -> None:
    assert _match("GET", "/items/special/similar").target == "Special"
    assert _match("GET", "/items/i1/similar").target == "Recommend"
    greedy = _match("GET", "/items/i1/other/deep")
    assert greedy.target == "Proxy"
    assert greedy.path_parameters == {"proxy": "i1/other/deep"}


def test_exact_method_beats_any_and_any_catches_other_methods() -> None:
    assert _match("DELETE", "/users/u1").target == "Events"
    assert _match("PUT", "/users/u1").target == "AnyUser"


def test_unknown_path_or_method_does_not_match() -> None:
    assert ROUTES.match("GET", "/nope") is None
    assert ROUTES.match("POST", "/health") is None
    assert ROUTES.match("GET", "/users//recommendations") is None  # an empty segment fills no parameter


def test_default_route_catches_everything_else() -> None:
    table = RouteTable([(HttpRoute("GET", "/health"), "A"), (HttpRoute("ANY", "$default"), "Fallback")])
    assert table.match("GET", "/health").target == "A"  # type: ignore[union-attr]
    fallback = table.match("POST", "/anything/at/all")
    assert fallback is not None and fallback.target == "Fallback"
    event = build_event(method="POST", raw_path="/x", raw_query="", headers=[], body=b"", match=fallback)
    assert event["routeKey"] == "$default"


# ---- the payload v2.0 event -------------------------------------------------------------------------------


def _event(**kwargs: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "method": "GET",
        "raw_path": "/items/i%201/similar",
        "raw_query": "",
        "headers": [("Host", "127.0.0.1:3000"), ("User-Agent", "pytest")],
        "body": b"",
        "now": 1_700_000_000.123,
        "request_id": "req-1",
    }
    defaults.update(kwargs)
    match = _match(defaults["method"], defaults["raw_path"])
    return build_event(match=match, **defaults)


def test_event_has_the_v2_shape() -> None:
    event = _event()
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /items/{item_id}/similar"
    assert event["rawPath"] == "/items/i 1/similar"  # decoded, as API Gateway's HTTP API delivers it
    assert event["rawQueryString"] == ""
    assert event["pathParameters"] == {"item_id": "i 1"}
    assert event["isBase64Encoded"] is False
    assert "body" not in event
    assert "queryStringParameters" not in event
    assert "cookies" not in event
    ctx = event["requestContext"]
    assert ctx["http"] == {
        "method": "GET",
        "path": "/items/i 1/similar",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "pytest",
    }
    assert ctx["stage"] == "$default"
    assert ctx["routeKey"] == event["routeKey"]
    assert ctx["requestId"] == "req-1"
    assert ctx["timeEpoch"] == 1_700_000_000_123
    assert ctx["time"] == "14/Nov/2023:22:13:20 +0000"
    assert ctx["domainName"] == "127.0.0.1:3000"
    assert {"accountId", "apiId", "domainPrefix"} <= set(ctx)


def test_the_event_carries_the_path_decoded_as_the_function_reads_it_in_aws() -> None:
    # Given a client that percent-encodes '|' (browsers, urllib), the function sees the id it would in AWS:
    # the resolver matches rawPath, and its user guard reads the id from there too
    event = _event(raw_path="/users/auth0%7C123/recommendations")
    assert event["rawPath"] == event["requestContext"]["http"]["path"] == "/users/auth0|123/recommendations"
    assert event["pathParameters"] == {"user_id": "auth0|123"}


def test_route_without_parameters_has_no_path_parameters() -> None:
    assert "pathParameters" not in _event(raw_path="/health")


def test_headers_are_lower_cased_repeats_joined_and_cookies_split_out() -> None:
    event = _event(
        headers=[
            ("X-Trace", "a"),
            ("x-trace", "b"),
            ("Cookie", "session=abc; theme=dark"),
            ("Content-Type", "text/plain"),
        ]
    )
    assert event["headers"] == {"x-trace": "a,b", "content-type": "text/plain"}
    assert event["cookies"] == ["session=abc", "theme=dark"]


def test_query_string_repeated_keys_are_comma_joined_and_decoded() -> None:
    event = _event(raw_query="k=5&tags=a&tags=b%20c&empty=&q=caf%C3%A9+latte")
    assert event["rawQueryString"] == "k=5&tags=a&tags=b%20c&empty=&q=caf%C3%A9+latte"
    assert event["queryStringParameters"] == {"k": "5", "tags": "a,b c", "empty": "", "q": "café latte"}


def test_json_body_is_text_and_binary_body_is_base64() -> None:
    text = _event(
        method="DELETE",
        raw_path="/users/u1",
        body=b'{"a": 1}',
        headers=[("Content-Type", "application/json; charset=utf-8")],
    )
    assert text["body"] == '{"a": 1}'
    assert text["isBase64Encoded"] is False

    raw = bytes(range(256))
    binary = _event(
        method="DELETE",
        raw_path="/users/u1",
        body=raw,
        headers=[("Content-Type", "application/octet-stream")],
    )
    assert binary["isBase64Encoded"] is True
    assert base64.b64decode(binary["body"]) == raw


def test_text_content_type_with_invalid_utf8_falls_back_to_base64() -> None:
    event = _event(
        method="DELETE", raw_path="/users/u1", body=b"\xff\xfe", headers=[("Content-Type", "text/csv")]
    )
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\xfe"


# ---- response translation ---------------------------------------------------------------------------------


def test_structured_response_is_used_as_given() -> None:
    response = translate_response(
        {
            "statusCode": 201,
            "headers": {"Content-Type": "application/json", "X-Id": 7},
            "multiValueHeaders": {"X-Multi": ["1", "2"]},
            "cookies": ["a=1; Path=/", "b=2"],
            "body": '{"ok": true}',
        }
    )
    assert response.status == 201
    assert response.body == b'{"ok": true}'
    assert ("Content-Type", "application/json") in response.headers
    assert ("X-Id", "7") in response.headers
    assert [v for k, v in response.headers if k == "X-Multi"] == ["1", "2"]
    assert [v for k, v in response.headers if k == "set-cookie"] == ["a=1; Path=/", "b=2"]


def test_base64_response_body_is_decoded() -> None:
    payload = b"\x00\x01binary"
    response = translate_response(
        {
            "statusCode": 200,
            "isBase64Encoded": True,
            "body": base64.b64encode(payload).decode(),
            "headers": {"content-type": "image/png"},
        }
    )
    assert response.body == payload
    assert response.headers == [("content-type", "image/png")]


@pytest.mark.parametrize("result", [{"items": [1, 2]}, "hello", 42, None, [1, "a"]])
def test_return_value_without_status_code_becomes_a_json_200(result: Any) -> None:
    response = translate_response(result)
    assert response.status == 200
    assert response.headers == [("content-type", "application/json")]
    assert json.loads(response.body) == result


@pytest.mark.parametrize(
    "result",
    [{"statusCode": "abc"}, {"statusCode": 99}, {"statusCode": 200, "isBase64Encoded": True, "body": "%%%"}],
)
def test_malformed_response_is_rejected(result: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        translate_response(result)


# ---- the gateway end to end (no socket), with throwaway handlers -----------------------------------------

HANDLER = """
import json

def handler(event, context):
    if event["rawPath"] == "/boom":
        raise RuntimeError("secret internals /etc/passwd")
    if event["rawPath"] == "/plain":
        return {"plain": True}
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"event": event, "function": context.function_name,
                            "memory": context.memory_limit_in_mb,
                            "remaining_positive": context.get_remaining_time_in_millis() > 0}),
    }
"""


def _spec(tmp_path: Path, name: str, source: str, routes: tuple[HttpRoute, ...]) -> FunctionSpec:
    code = tmp_path / name
    code.mkdir()
    (code / "app.py").write_text(source)
    return FunctionSpec(
        logical_id=name, code_dir=code, handler="app.handler", memory_mb=256, timeout_s=5, http_routes=routes
    )


@pytest.fixture()
def gateway(tmp_path: Path) -> Iterator[ApiGatewayServer]:
    spec = _spec(
        tmp_path,
        "EchoFunction",
        HANDLER,
        (HttpRoute("ANY", "/echo/{name}"), HttpRoute("GET", "/boom"), HttpRoute("GET", "/plain")),
    )
    functions = {spec.logical_id: LambdaFunction(spec)}
    server = ApiGatewayServer(RouteTable.from_functions(functions.values()), functions.__getitem__)
    yield server
    server.stop()


def test_gateway_invokes_the_handler_with_the_event_and_a_context(gateway: ApiGatewayServer) -> None:
    response = gateway.handle(
        "POST",
        "/echo/bob?x=1&x=2",
        [("Content-Type", "application/json")],
        b'{"k": "v"}',
        "10.0.0.1",
        "HTTP/1.1",
    )
    assert response.status == 200
    seen = json.loads(response.body)
    assert seen["function"] == "EchoFunction"
    assert seen["memory"] == 256
    assert seen["remaining_positive"] is True
    event = seen["event"]
    assert event["routeKey"] == "ANY /echo/{name}"
    assert event["pathParameters"] == {"name": "bob"}
    assert event["queryStringParameters"] == {"x": "1,2"}
    assert event["body"] == '{"k": "v"}'
    assert event["requestContext"]["http"]["sourceIp"] == "10.0.0.1"
    assert any(name == "apigw-requestid" for name, _ in response.headers)


def test_gateway_unknown_route_is_a_json_404(gateway: ApiGatewayServer) -> None:
    response = gateway.handle("GET", "/missing", [], b"", "127.0.0.1", "HTTP/1.1")
    assert response.status == 404
    assert json.loads(response.body)["error"] == "not_found"


def test_gateway_handler_exception_is_a_generic_500(gateway: ApiGatewayServer) -> None:
    response = gateway.handle("GET", "/boom", [], b"", "127.0.0.1", "HTTP/1.1")
    assert response.status == 500
    body = json.loads(response.body)
    assert body["error"] == "internal_error"
    assert b"passwd" not in response.body and b"Traceback" not in response.body


def test_gateway_plain_dict_return_is_a_json_200(gateway: ApiGatewayServer) -> None:
    response = gateway.handle("GET", "/plain", [], b"", "127.0.0.1", "HTTP/1.1")
    assert response.status == 200
    assert json.loads(response.body) == {"plain": True}


def test_handler_module_is_loaded_once_per_function(tmp_path: Path) -> None:
    counter = "import itertools\n_n = itertools.count()\ndef handler(event, context):\n    return next(_n)\n"
    fn = LambdaFunction(_spec(tmp_path, "Counter", counter, ()))
    assert [fn.invoke({}), fn.invoke({}), fn.invoke({})] == [0, 1, 2]  # module state survives: warm container


def test_body_limit_constant_is_256_kib() -> None:
    assert MAX_BODY_BYTES == 256 * 1024


# ---- template, SQS and schedule shapes --------------------------------------------------------------------


def test_function_specs_read_routes_queues_and_schedules(tmp_path: Path) -> None:
    template = {
        "Globals": {"Function": {"Handler": "app.handler", "Timeout": 10, "MemorySize": 512}},
        "Resources": {
            "Api": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "CodeUri": "functions/api",
                    "MemorySize": 1024,
                    "Events": {
                        "Get": {
                            "Type": "HttpApi",
                            "Properties": {"Method": "get", "Path": "/items/{item_id}"},
                        }
                    },
                },
            },
            "Ingest": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "CodeUri": "functions/ingest",
                    "Events": {
                        "Q": {
                            "Type": "SQS",
                            "Properties": {
                                "Queue": {"Fn::GetAtt": ["IngestQueue", "Arn"]},
                                "BatchSize": 1,
                                "FunctionResponseTypes": ["ReportBatchItemFailures"],
                            },
                        }
                    },
                },
            },
            "Rebuild": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "CodeUri": "functions/rebuild",
                    "Events": {
                        "Schedule": {
                            "Type": "ScheduleV2",
                            "Properties": {"ScheduleExpression": {"Ref": "RebuildRate"}},
                        }
                    },
                },
            },
            "IngestQueue": {"Type": "AWS::SQS::Queue"},
        },
    }
    specs = function_specs(template, tmp_path)
    assert set(specs) == {"Api", "Ingest", "Rebuild"}
    assert specs["Api"].http_routes == (HttpRoute("GET", "/items/{item_id}"),)
    assert specs["Api"].memory_mb == 1024 and specs["Api"].timeout_s == 10
    assert specs["Api"].module_file == (tmp_path / "functions/api/app.py").resolve()
    assert specs["Ingest"].queues[0].queue == "IngestQueue"
    assert specs["Ingest"].queues[0].batch_size == 1
    assert specs["Ingest"].queues[0].report_batch_item_failures is True
    assert specs["Rebuild"].schedules[0].name == "Schedule"
    assert rate_seconds("rate(5 minutes)") == 300 and rate_seconds("cron(0 * * * ? *)") is None


def _message(i: int) -> dict[str, Any]:
    return {
        "MessageId": f"m{i}",
        "ReceiptHandle": f"r{i}",
        "Body": f"body{i}",
        "MD5OfBody": "md5",
        "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"},
        "MessageAttributes": {
            "kind": {"DataType": "String", "StringValue": "x"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x01"},
        },
    }


def test_sqs_event_has_lambdas_record_shape() -> None:
    event = sqs_event([_message(1)], "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1")
    (record,) = event["Records"]
    assert record == {
        "messageId": "m1",
        "receiptHandle": "r1",
        "body": "body1",
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"},
        "messageAttributes": {
            "kind": {
                "stringValue": "x",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "String",
            },
            "blob": {
                "binaryValue": "AQ==",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "Binary",
            },
        },
        "md5OfBody": "md5",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
        "awsRegion": "us-east-1",
    }


def test_batch_item_failures_keep_only_the_failed_records() -> None:
    messages = [_message(i) for i in range(3)]
    assert deletable_receipts(messages, {"batchItemFailures": [{"itemIdentifier": "m1"}]}, True) == [
        "r0",
        "r2",
    ]
    assert deletable_receipts(messages, {"batchItemFailures": []}, True) == ["r0", "r1", "r2"]
    assert deletable_receipts(messages, None, True) == ["r0", "r1", "r2"]
    # a malformed response fails the whole batch; without ReportBatchItemFailures the response is ignored
    assert deletable_receipts(messages, {"batchItemFailures": [{"itemIdentifier": "zz"}]}, True) == []
    assert deletable_receipts(messages, {"batchItemFailures": [{"itemIdentifier": "m1"}]}, False) == [
        "r0",
        "r1",
        "r2",
    ]


def test_scheduler_event_is_an_eventbridge_scheduled_event() -> None:
    event = scheduler_event(ScheduleTrigger("Schedule"), "eu-west-1", now=0)
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.scheduler"
    assert event["time"] == "1970-01-01T00:00:00Z"
    assert event["resources"] == ["arn:aws:scheduler:eu-west-1:123456789012:schedule/default/Schedule"]
    assert scheduler_event(ScheduleTrigger("S", input='{"full": true}'), "eu-west-1") == {"full": True}


def test_context_remaining_time_counts_down_from_the_timeout() -> None:
    spec = FunctionSpec(logical_id="F", code_dir=Path("."), handler="app.handler", timeout_s=2)
    context = LambdaContext(spec, "us-east-1")
    assert 0 < context.get_remaining_time_in_millis() <= 2000
    assert context.invoked_function_arn == "arn:aws:lambda:us-east-1:123456789012:function:F"
