"""Fuzzing the API from its own OpenAPI document, on the real local stack (issue 8, line 13).

Given the real stack with an index published (the ``stack`` fixture), schemathesis reads ``/openapi.json``
and, for every operation, sends generated requests: valid ones (positive mode) and ones that break the
schema on purpose (negative mode: wrong types, out-of-range ``k``, missing bodies, bad ids...). Then no
answer is a 5xx (not even 503: with an index published, "try again" would be a bug), every status is one
the document declares for that operation, every 4xx body is JSON ``{error, message}``, and every response
matches its documented schema and content type. Bounded: ``MAX_EXAMPLES`` per operation and mode, no
shrinking-time blowups (``deadline=None`` only because the first search pays the encoder's cold start).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from live_stack import Stack
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from embrec.edge.contract import ROUTES

pytestmark = pytest.mark.timeout(300)

MAX_EXAMPLES = 30
# Negative mode needs something to break: operations without parameters or a body are fuzzed positively only.
CASES = [
    (route.method, route.path, mode)
    for route in ROUTES
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or route.query or route.body or "{" in route.path
]


@pytest.fixture(scope="module")
def api_schema(stack: Stack) -> Any:
    """The document the stack serves (not the one in the code), as schemathesis reads it."""
    response = stack.get("/openapi.json")
    assert response.status_code == 200
    return schemathesis.openapi.from_dict(response.json())


def error_body_is_json_error_and_message(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx answers JSON ``{"error": str, "message": str}``, never HTML or a traceback."""
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict), f"{response.status_code} body is not a JSON object: {response.text!r}"
        assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), body
        assert "Traceback" not in response.text
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    error_body_is_json_error_and_message,
]


# schemathesis' own pytest integration (schema.parametrize / from_fixture) does not run under pytest 9, so
# the operations are parametrised here and each one's strategy is driven by hypothesis directly.
@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g}" for m, p, g in CASES])
def test_no_operation_answers_5xx_or_off_contract(
    api_schema: Any, stack: Stack, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    def fuzz(case: Any) -> None:
        case.call_and_validate(base_url=stack.env.api_url, session=stack.http, timeout=60, checks=CHECKS)

    fuzz()
