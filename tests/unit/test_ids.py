"""Issue 15 item 11: one id rule, the same at every door (catalog rows, events, paths, JWT subjects).

Before it, the catalog took 256 characters with spaces, '#' or any Unicode while the API took 128 of
[A-Za-z0-9._:@+=/-]: such items were recommended but no client could send an event for them or ask for their
similar items; subjects like 'auth0|123' could not reach their own data; '/' was accepted in events but no
DELETE /users/{id} could address it; and 'u1\\n' passed ('$' matches before a trailing newline).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from embrec.domain.catalog import RowError, validate_row
from embrec.domain.model import ID_PATTERN, ID_RULE, check_id, is_valid_id
from embrec.edge import contract as api
from embrec.edge.auth import Caller, require_user
from embrec.errors import ForbiddenError, InvalidInputError

NOW = 1_790_000_000.0

VALID = [
    "u1",
    "auth0|123",  # Auth0 subjects
    "google-oauth2|104",
    "ml-1",
    "B00004TV2Z",
    "user@example.com",
    "a+b=c:d_e.f",
    "_pairwise-sub",
    "-leading-dash",
    "x" * 128,
]
INVALID = [
    "",
    ".",
    "..",
    ".hidden",
    "a/b",  # API Gateway decodes %2F before routing: never one path segment
    "SKU 12",
    "sku#12",
    "café",
    "a%7Cb",
    "u1\n",
    "a\x00b",
    "x\udcff",
    "x" * 129,
]


@pytest.mark.parametrize("value", VALID)
def test_the_rule_takes_ids_from_identity_providers_and_catalogs(value: str) -> None:
    assert is_valid_id(value) and check_id(value, "user_id") == value


@pytest.mark.parametrize("value", [*INVALID, None, 42, ["u1"]])
def test_the_rule_refuses_what_a_url_or_a_key_would_mangle(value: Any) -> None:
    assert not is_valid_id(value)
    with pytest.raises(InvalidInputError) as raised:
        check_id(value, "item_id")
    assert (raised.value.field, raised.value.reason) == ("item_id", ID_RULE)


def _catalog_accepts(value: str) -> bool:
    try:
        return validate_row({"item_id": value, "title": "A title"}).item_id == value
    except RowError:
        return False


def _events_accept(value: str) -> bool:
    event = {name: value for name in ("event_id", "user_id", "item_id", "recommendation_id")}
    event["type"] = "view"
    accepted, _ = api.parse_events({"events": [event]}, NOW)
    return len(accepted) == 1


def _path_accepts(parse: Any, value: str) -> bool:
    try:
        return bool(parse(value) == value)
    except InvalidInputError:
        return False


@pytest.mark.parametrize("value", [*VALID, *INVALID])
def test_every_door_applies_the_same_rule(value: str) -> None:
    # Given one id, when the catalog, POST /events and the path parameters see it, then all agree.
    doors = {
        "catalog row": _catalog_accepts(value),
        "events": _events_accept(value),
        "user path": _path_accepts(api.parse_user_id, value),
        "item path": _path_accepts(api.parse_item_id, value),
    }
    assert doors == dict.fromkeys(doors, is_valid_id(value))


def test_catalog_rejects_an_id_outside_the_rule_with_the_rule_as_reason() -> None:
    with pytest.raises(RowError) as raised:
        validate_row({"item_id": "SKU 12", "title": "Shoe"})
    assert [(e.field, e.reason) for e in raised.value.errors] == [("item_id", ID_RULE)]


def test_a_tombstone_may_name_an_id_stored_before_the_rule_so_it_can_be_removed() -> None:
    assert validate_row({"item_id": "SKU 12", "deleted": True}).deleted
    with pytest.raises(RowError):
        validate_row({"item_id": "a\x00b", "deleted": True})  # never a stored id: control characters


def test_a_subject_with_a_pipe_reaches_its_own_user() -> None:
    require_user(Caller("auth0|123", frozenset()), api.parse_user_id("auth0|123"))
    with pytest.raises(ForbiddenError):
        require_user(Caller("auth0|123", frozenset()), "auth0|124")


def test_a_subject_outside_the_rule_is_told_why_it_names_no_user() -> None:
    with pytest.raises(ForbiddenError) as raised:
        require_user(Caller("tenant/alice", frozenset()), "alice")
    assert "not a valid user id" in raised.value.message


def test_the_openapi_document_publishes_the_rule_for_every_id() -> None:
    document = api.openapi_document()
    path_ids = [
        parameter["schema"]
        for operations in document["paths"].values()
        for operation in operations.values()
        for parameter in operation["parameters"]
        if parameter["in"] == "path"
    ]
    event = document["components"]["schemas"]["EventBatch"]["properties"]["events"]["items"]["properties"]
    schemas = [*path_ids, *(event[name] for name in ("event_id", "user_id", "item_id", "recommendation_id"))]
    # recommendations, onboarding, similar, delete user, erasure status
    assert len(path_ids) == 5
    assert all(s["pattern"] == ID_PATTERN and ID_RULE in s["description"] for s in schemas)
    # the published (ECMA-262) pattern says what the code enforces: '$' there is the end of the string
    for value in [*VALID, *INVALID]:
        assert (re.fullmatch(ID_PATTERN[1:-1], value) is not None) == is_valid_id(value)
