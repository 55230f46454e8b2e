"""Regression tests for what fuzzing /openapi.json found (tests/e2e/test_fuzz_openapi.py): each was a 500.

- ``POST /events`` with ``value`` 3.07e225: DynamoDB's number type overflows (and 1e-260 underflows), so the
  write raised ``decimal.Overflow``. Now |value| <= 1e9 (else rejected with the field) and values are kept
  to 6 decimal places.
- ``POST /events`` (and onboarding) with a body that is not UTF-8: API Gateway base64-encodes it and
  Powertools' ``decoded_body`` raised ``UnicodeDecodeError``. Now a 400 on ``body``.
"""

from __future__ import annotations

import base64
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
