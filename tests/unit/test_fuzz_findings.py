"""Regression tests for what fuzzing /openapi.json found (tests/e2e/test_fuzz_openapi.py): each was a 500.

- ``POST /events`` with ``value`` 3.07e225: DynamoDB's number type overflows (and 1e-260 underflows), so the
  write raised ``decimal.Overflow``. Now |value| <= 1e9 (else rejected with the field) and values are kept
  to 6 decimal places.
- ``POST /events`` (and onboarding) with a body that is not UTF-8: API Gateway base64-encodes it and
  Powertools' ``decoded_body`` raised ``UnicodeDecodeError``. Now a 400 on ``body``.

And what the audit of issue 15 (item 8) found by hand, each a 500 that tripped the 5xx alarm:

- a body of 120 KB of nested brackets: ``json.loads`` raised ``RecursionError``. Now a 400 on ``body``.
- a 400-digit integer ``timestamp`` or ``value``: ``float()`` raised ``OverflowError``. Now the event is
  rejected naming the field.
- a list as the event ``type``: ``kind in EVENT_TYPES`` raised ``TypeError`` (unhashable). Now rejected.
- an ISO ``timestamp`` in the year 9999 was read as epoch milliseconds (1978) and accepted: now "in the
  future".
"""

from __future__ import annotations

import base64
import json
import math

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from embrec.edge import contract as api
from embrec.edge.resolver import request_body
from embrec.errors import InvalidInputError

NOW = 1_790_000_000.0


def _event(value: float) -> dict[str, object]:
    return {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "click", "value": value}


@pytest.mark.parametrize("value", [3.0744333711671e225, -1e10, 1e9 + 1])
def test_event_values_dynamodb_cannot_store_are_rejected_with_the_field(value: float) -> None:
    accepted, rejected = api.parse_events({"events": [_event(value)]}, NOW)
    assert not accepted and [r.field for r in rejected] == ["value"]


def test_tiny_event_values_are_kept_to_six_decimals_not_underflowed() -> None:
    events = [_event(-8.58e-260), {**_event(2.5), "event_id": "e2"}]
    accepted, rejected = api.parse_events({"events": events}, NOW)
    assert not rejected and [e.value for e in accepted] == [0.0, 2.5]
    assert all(e.value is not None and math.isfinite(e.value) for e in accepted)


def _http(body: str | None, encoded: bool) -> APIGatewayProxyEventV2:
    return APIGatewayProxyEventV2({"body": body, "isBase64Encoded": encoded, "rawPath": "/events"})


def test_a_body_that_is_not_utf8_is_invalid_input_not_a_crash() -> None:
    with pytest.raises(InvalidInputError) as raised:
        request_body(_http(base64.b64encode(b"\x97\xfeV\xd0\x02").decode(), True))
    assert raised.value.field == "body"


def test_request_body_decodes_base64_text_and_passes_plain_text() -> None:
    assert request_body(_http(base64.b64encode('{"a": "é"}'.encode()).decode(), True)) == '{"a": "é"}'
    assert request_body(_http('{"a": 1}', False)) == '{"a": 1}'
    assert request_body(_http(None, False)) is None


NESTED = "[" * 60_000 + "]" * 60_000  # 120 KB, under the 256 KB body limit


@pytest.mark.parametrize("body", [NESTED, '{"events": ' + NESTED + "}", '{"interests": ' + NESTED + "}"])
def test_a_body_nested_past_the_recursion_limit_is_invalid_input_on_body(body: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        api.parse_body(body)
    assert (raised.value.field, raised.value.status) == ("body", 400)


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("timestamp", 10**400),
        ("timestamp", -(10**400)),
        ("timestamp", "9" * 400),
        ("value", 10**400),
        ("value", -(10**400)),
        ("type", ["view"]),
        ("type", {"a": 1}),
        ("timestamp", "9999-12-31T23:59:59-14:00"),
    ],
    ids=["ts-400-digits", "ts-minus-400-digits", "ts-400-digit-string", "value-400-digits",
         "value-minus-400-digits", "type-list", "type-object", "ts-iso-year-9999"],
)
def test_hostile_event_fields_are_rejected_with_the_field(field: str, raw: object) -> None:
    # json.loads gives Python ints of any size: a 400-digit integer reaches the parser as it is
    body = api.parse_body(json.dumps({"events": [{**_event(1.0), field: raw}]}))
    accepted, rejected = api.parse_events(body, NOW)
    assert not accepted and [r.field for r in rejected] == [field]


def test_numbers_at_the_edge_of_a_float_are_still_read() -> None:
    events = [{**_event(1e9), "timestamp": 10**12}, {**_event(-1e9), "event_id": "e2", "timestamp": "1e9"}]
    accepted, rejected = api.parse_events({"events": events}, NOW)
    assert not rejected and [(e.timestamp, e.value) for e in accepted] == [(1e9, 1e9), (1e9, -1e9)]
