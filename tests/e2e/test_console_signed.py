"""``embrec console --aws`` signs its requests with SigV4, checked by the local API's real signature check.

Given the real stack (template.yaml, real handlers) with ``EMBREC_AUTH=iam``, no catalog and no index: the
API Gateway emulator verifies each request's Signature Version 4 with the local credentials, as API Gateway
does with the caller's. Requests signed by the console's client pass (and meet the handlers: 202, or 503
while no index exists); unsigned ones, ones signed with another secret and ones changed after signing are
refused with 403. The console's pages say which happened: no index yet, or credentials refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from botocore.credentials import Credentials
from live_stack import ROOT

from embrec.app.runtime import Runtime
from embrec_tools.console import Console, ConsoleConfig
from embrec_tools.console.api import ApiClient, SigV4
from embrec_tools.console.reads import StackReads
from embrec_tools.local import LocalEnvironment

LOCAL = Credentials("test", "test")  # embrec_tools.local.aws_endpoint.LOCAL_CREDENTIALS


@pytest.fixture(scope="module")
def iam_stack() -> Iterator[LocalEnvironment]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMBREC_AUTH", "iam")
        for name, value in {"POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_TRACE_DISABLED": "true",
                            "POWERTOOLS_LOG_LEVEL": "WARNING"}.items():
            patch.setenv(name, value)
        patch.delenv("EMBREC_AWS_ENDPOINT", raising=False)
        env = LocalEnvironment(ROOT, api_port=0, aws_port=0, aws_endpoint=None, dispatch=False,
                               schedule=False)
        with env:
            yield env


def _event(event_id: str) -> dict[str, list[dict[str, str]]]:
    return {"events": [{"event_id": event_id, "user_id": "signed-1", "item_id": "ml-1", "type": "like"}]}


def test_signed_requests_pass_and_unsigned_or_altered_ones_are_refused(iam_stack: LocalEnvironment) -> None:
    signed = ApiClient(iam_stack.api_url, SigV4(LOCAL, iam_stack.region))
    # Signed: the handlers answer (the event is written; recommendations wait for an index)
    written = signed.post("/events", _event("e-signed"))
    assert (written.status, written.body["accepted"]) == (202, 1)
    assert signed.get("/users/signed-1/recommendations", {"k": "3", "category": "a b"}).status == 503
    # Unsigned, or signed with another secret, or another region: 403 from the gateway
    assert ApiClient(iam_stack.api_url).post("/events", _event("e-unsigned")).status == 403
    assert ApiClient(iam_stack.api_url, SigV4(Credentials("test", "wrong"), iam_stack.region)).get(
        "/users/signed-1/recommendations").status == 403
    other_region = ApiClient(iam_stack.api_url, SigV4(LOCAL, "eu-west-1"))
    assert other_region.get("/users/x/recommendations").status == 403
    # Changed after signing: the body, then the query string
    auth = SigV4(LOCAL, iam_stack.region)
    request = auth(requests.Request("POST", iam_stack.api_url + "/events", json=_event("e-1")).prepare())
    request.prepare_body(None, None, _event("e-2"))  # another body, the old signature
    with requests.Session() as session:
        session.trust_env = False
        assert session.send(request, timeout=60).status_code == 403
    query = auth(requests.Request("GET", iam_stack.api_url + "/users/u/recommendations?k=3").prepare())
    query.prepare_url(iam_stack.api_url + "/users/u/recommendations?k=100", None)
    with requests.Session() as session:
        session.trust_env = False
        assert session.send(query, timeout=60).status_code == 403
    # Public routes need no signature
    assert ApiClient(iam_stack.api_url).get("/health").status == 200


def test_the_console_signs_with_aws_and_says_what_went_wrong(iam_stack: LocalEnvironment) -> None:
    reads = StackReads(Runtime(iam_stack.settings))
    config = ConsoleConfig("rate(1 hour)", Path("/nonexistent"))
    signed = Console(ApiClient(iam_stack.api_url, SigV4(LOCAL, iam_stack.region)), reads, config)
    page = signed.handle("GET", "/users/signed-1")
    text = page.body.decode()
    assert page.status == 503 and 'data-problem="no-index"' in text
    assert "like" in text and "ml-1" in text  # the signed write of the first test is in the timeline
    overview = signed.handle("GET", "/").body.decode()
    assert 'data-problem="no-index"' in overview and "index/current.json does not exist yet" in overview
    unsigned = Console(ApiClient(iam_stack.api_url), reads, config).handle("GET", "/users/signed-1")
    assert unsigned.status == 502 and "refused the console&#x27;s credentials (403" in unsigned.body.decode()
