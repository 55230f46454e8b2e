"""The local JWT authorizer: what API Gateway's would accept, and the context it would pass on."""

from __future__ import annotations

import pytest

from embrec.edge.auth import Caller, caller_from_event
from embrec.errors import AuthenticationError
from embrec_tools.local.jwt import LocalJwt

NOW = 1_800_000_000.0


def test_a_valid_token_becomes_the_jwt_context_the_function_reads() -> None:
    jwt = LocalJwt(b"k" * 32)
    token = jwt.issue("alice", ["embrec/admin"], now=NOW)
    context = jwt.authorize({"authorization": f"Bearer {token}"}, now=NOW + 1)
    assert caller_from_event({"requestContext": {"authorizer": context}}) == Caller(
        "alice", frozenset({"embrec/admin"})
    )


@pytest.mark.parametrize("case", ["missing", "garbage", "other_key", "expired", "tampered", "other_audience"])
def test_bad_tokens_are_refused(case: str) -> None:
    jwt = LocalJwt(b"k" * 32)
    token = jwt.issue("alice", now=NOW)
    header = {
        "missing": "",
        "garbage": "Bearer abc.def",
        "other_key": "Bearer " + LocalJwt(b"z" * 32).issue("alice", now=NOW),
        "expired": "Bearer " + jwt.issue("alice", now=NOW - 7200),
        "tampered": "Bearer " + token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        "other_audience": "Bearer " + LocalJwt(b"k" * 32, audience="x").issue("alice", now=NOW),
    }[case]
    with pytest.raises(AuthenticationError):
        jwt.authorize({"authorization": header}, now=NOW + 1)


def test_no_jwt_context_is_the_trusted_backend_and_a_subjectless_token_is_refused() -> None:
    assert caller_from_event({"requestContext": {}}) is None
    with pytest.raises(AuthenticationError):
        caller_from_event({"requestContext": {"authorizer": {"jwt": {"claims": {}}}}})
