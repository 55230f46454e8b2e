"""The HTTP contract: request parsing with limits, and the route table the OpenAPI document is made from.

Pure functions from raw API Gateway inputs (query-string dicts, JSON bodies) to typed requests. Every
violation is an :class:`~embrec.errors.InvalidInputError` naming the field and the reason, which the API
answers with 400 (422 when well-formed but contradictory, 413 when over a size limit). Nothing here does I/O.

Hostile input is bad input too: a body nested past Python's recursion limit, a 400-digit integer where a
number belongs, a list where a string belongs are each a 400 naming the field (or a per-event rejection),
never a ``RecursionError``, ``OverflowError`` or ``TypeError`` (a generic 500 that trips the 5xx alarm).
Ids follow the one rule of :mod:`embrec.domain.model` (:data:`~embrec.domain.model.ID_PATTERN`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from embrec import __version__
from embrec.domain.model import ID_PATTERN, ID_RULE, Filters, check_id
from embrec.domain.profiles import DEFAULT_TYPE_WEIGHTS
from embrec.errors import InvalidInputError, PayloadTooLargeError, UnprocessableError

__all__ = [
    "DEFAULT_K",
    "EVENT_TYPES",
    "MAX_BODY_BYTES",
    "MAX_EVENTS",
    "MAX_K",
    "MAX_QUERY_CHARS",
    "ROUTES",
    "EventInput",
    "EventRejection",
    "OnboardingInput",
    "RecommendQuery",
    "Route",
    "openapi_document",
    "parse_body",
    "parse_event_type",
    "parse_events",
    "parse_item_id",
    "parse_onboarding",
    "parse_recommend_query",
    "parse_search_query",
    "parse_similar_query",
    "parse_timestamp",
    "parse_user_id",
]

DEFAULT_K = 10
MAX_K = 100
MAX_EVENTS = 100
MAX_BODY_BYTES = 256 * 1024
MAX_QUERY_CHARS = 1000
MAX_FILTER_VALUES = 20
MAX_ONBOARDING_ANSWERS = 20
MAX_ANSWER_CHARS = 200
MAX_FUTURE_SKEW_SECONDS = 300.0
MAX_EVENT_VALUE = 1e9  # |value| bound: DynamoDB numbers overflow past 1e126 (found by fuzzing: a 500)
EVENT_VALUE_DECIMALS = 6  # and underflow below 1e-130: values are kept to 6 decimal places
EVENT_TYPES = frozenset(DEFAULT_TYPE_WEIGHTS)  # the built-ins; a deployment may declare its own

# Filter values: printable, no control characters, bounded. This is the allow-list the API validates filter
# values against (OWASP API4): anything else is rejected with the field named. Ids: embrec.domain.model.
_FILTER_VALUE_PATTERN = re.compile(r"^[^\x00-\x1f\x7f,]{1,100}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class RecommendQuery:
    k: int = DEFAULT_K
    filters: Filters = field(default_factory=Filters)
    diversity: float = 0.0
    explain: bool = False


@dataclass(frozen=True)
class OnboardingInput:
    interests: tuple[str, ...]
    goals: tuple[str, ...]
    experience: str


@dataclass(frozen=True)
class EventInput:
    event_id: str
    user_id: str
    item_id: str
    type: str
    timestamp: float
    value: float | None = None
    recommendation_id: str | None = None


@dataclass(frozen=True)
class EventRejection:
    index: int
    event_id: str | None
    field: str
    reason: str


def parse_user_id(value: object) -> str:
    return check_id(value, "user_id")


def parse_item_id(value: object) -> str:
    return check_id(value, "item_id")


def _known_params(params: Mapping[str, str], allowed: frozenset[str]) -> None:
    for name in params:
        if name not in allowed:
            raise InvalidInputError(name, f"unknown query parameter; allowed: {', '.join(sorted(allowed))}")


def _k(params: Mapping[str, str]) -> int:
    raw = params.get("k")
    if raw is None or raw == "":
        return DEFAULT_K
    try:
        k = int(raw)
    except ValueError:
        raise InvalidInputError("k", f"must be an integer from 1 to {MAX_K}") from None
    if not 1 <= k <= MAX_K:
        raise InvalidInputError("k", f"must be from 1 to {MAX_K}, got {k}")
    return k


def _number(params: Mapping[str, str], name: str, low: float, high: float) -> float | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInputError(name, "must be a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidInputError(name, f"must be a finite number from {low:g} to {high:g}")
    return value


def _bool(params: Mapping[str, str], name: str) -> bool | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidInputError(name, "must be true or false")


def _values(params: Mapping[str, str], name: str) -> frozenset[str] | None:
    """A comma-separated filter list (API Gateway also joins repeated keys with commas)."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    values = [value.strip() for value in raw.split(",") if value.strip()]
    if len(values) > MAX_FILTER_VALUES:
        raise InvalidInputError(name, f"at most {MAX_FILTER_VALUES} values")
    for value in values:
        if not _FILTER_VALUE_PATTERN.match(value):
            raise InvalidInputError(
                name, f"value {value[:40]!r} has control characters or is over 100 characters"
            )
    return frozenset(values) or None


def _finite(value: int | float) -> float | None:
    """``value`` as a float; None when NaN, infinite or an integer too large for a float (400 digits)."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def parse_timestamp(raw: object, name: str) -> float:
    """ISO 8601 (with or without offset; naive means UTC) or epoch seconds/milliseconds -> epoch seconds.

    Only numbers are read as milliseconds (above 1e11): an ISO date is never rescaled, so a date in the year
    9999 stays in the future instead of turning into 1978.
    """
    if isinstance(raw, str):
        try:
            number: int | float = float(raw)
        except ValueError:
            return _iso_timestamp(raw, name)
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        number = raw
    else:
        raise InvalidInputError(name, "must be ISO 8601 or epoch seconds")
    value = _finite(number)
    if value is None or value < 0:
        raise InvalidInputError(name, "must be a non-negative finite time")
    return value / 1000.0 if value > 1e11 else value


def _iso_timestamp(raw: str, name: str) -> float:
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(name, "must be ISO 8601 or epoch seconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    value = parsed.timestamp()
    if value < 0:
        raise InvalidInputError(name, "must be a non-negative finite time")
    return value


def _filters(params: Mapping[str, str]) -> Filters:
    min_price = _number(params, "min_price", 0.0, 1e12)
    max_price = _number(params, "max_price", 0.0, 1e12)
    if min_price is not None and max_price is not None and min_price > max_price:
        raise UnprocessableError("min_price", f"must not exceed max_price ({min_price:g} > {max_price:g})")
    created_after_raw = params.get("created_after")
    created_after = parse_timestamp(created_after_raw, "created_after") if created_after_raw else None
    available = _bool(params, "available")
    return Filters(
        categories=_values(params, "category"),
        exclude_categories=_values(params, "exclude_category"),
        tags_any=_values(params, "tags"),
        min_price=min_price,
        max_price=max_price,
        available=True if available is None else available,
        created_after=created_after,
    )


_FILTER_PARAMS = frozenset(
    {"category", "exclude_category", "tags", "min_price", "max_price", "available", "created_after"}
)
_RECOMMEND_PARAMS = _FILTER_PARAMS | {"k", "diversity", "explain"}
_SIMILAR_PARAMS = _FILTER_PARAMS | {"k", "explain"}
_SEARCH_PARAMS = _FILTER_PARAMS | {"q", "k"}


def parse_recommend_query(params: Mapping[str, str] | None) -> RecommendQuery:
    params = params or {}
    _known_params(params, _RECOMMEND_PARAMS)
    diversity = _number(params, "diversity", 0.0, 1.0)
    return RecommendQuery(
        k=_k(params),
        filters=_filters(params),
        diversity=0.0 if diversity is None else diversity,
        explain=bool(_bool(params, "explain")),
    )


def parse_similar_query(params: Mapping[str, str] | None) -> RecommendQuery:
    params = params or {}
    _known_params(params, _SIMILAR_PARAMS)
    return RecommendQuery(k=_k(params), filters=_filters(params), explain=bool(_bool(params, "explain")))


def parse_search_query(params: Mapping[str, str] | None) -> tuple[str, RecommendQuery]:
    params = params or {}
    _known_params(params, _SEARCH_PARAMS)
    text = (params.get("q") or "").strip()
    if not text:
        raise InvalidInputError("q", "is required and must not be blank")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidInputError("q", f"at most {MAX_QUERY_CHARS} characters, got {len(text)}")
    return text, RecommendQuery(k=_k(params), filters=_filters(params))


def parse_body(raw: str | bytes | None) -> Any:
    """The JSON body of a request, with the size limit checked before parsing."""
    if raw is None or raw == "" or raw == b"":
        raise InvalidInputError("body", "a JSON body is required")
    size = len(raw.encode("utf-8") if isinstance(raw, str) else raw)
    if size > MAX_BODY_BYTES:
        raise PayloadTooLargeError("body", f"{size} bytes is over the {MAX_BODY_BYTES} byte limit")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidInputError("body", f"is not valid JSON ({error})") from None
    except RecursionError:  # e.g. 100 KB of "[": the C decoder gives up cleanly at the recursion limit
        raise InvalidInputError("body", "is nested too deeply") from None


def _answers(body: Mapping[str, Any], name: str) -> tuple[str, ...]:
    raw = body.get(name, [])
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(value, str) for value in raw):
        raise InvalidInputError(name, "must be a list of strings")
    if len(raw) > MAX_ONBOARDING_ANSWERS:
        raise InvalidInputError(name, f"at most {MAX_ONBOARDING_ANSWERS} answers")
    answers = tuple(value.strip() for value in raw if value.strip())
    for value in answers:
        if len(value) > MAX_ANSWER_CHARS:
            raise InvalidInputError(name, f"each answer at most {MAX_ANSWER_CHARS} characters")
    return answers


def parse_onboarding(body: Any) -> OnboardingInput:
    if not isinstance(body, dict):
        raise InvalidInputError("body", "must be a JSON object with interests, goals and experience")
    experience = body.get("experience", "")
    if not isinstance(experience, str) or len(experience) > MAX_ANSWER_CHARS:
        raise InvalidInputError("experience", f"must be a string of at most {MAX_ANSWER_CHARS} characters")
    answers = OnboardingInput(_answers(body, "interests"), _answers(body, "goals"), experience.strip())
    if not answers.interests and not answers.goals and not answers.experience:
        raise UnprocessableError("interests", "give at least one interest, goal or experience")
    return answers


def parse_event_type(value: object, event_types: Collection[str]) -> str:
    """An event's ``type``: one of the deployment's declared types (``EMBREC_EVENT_TYPES``)."""
    if not isinstance(value, str) or value not in event_types:
        raise InvalidInputError("type", f"must be one of {', '.join(sorted(event_types))}")
    return value


def _event(raw: Any, now: float, event_types: Collection[str]) -> EventInput:
    if not isinstance(raw, dict):
        raise InvalidInputError("event", "must be a JSON object")
    event_id = check_id(raw.get("event_id"), "event_id")
    user_id = parse_user_id(raw.get("user_id"))
    item_id = parse_item_id(raw.get("item_id"))
    kind = parse_event_type(raw.get("type"), event_types)
    timestamp = now if raw.get("timestamp") in (None, "") else parse_timestamp(raw["timestamp"], "timestamp")
    if timestamp > now + MAX_FUTURE_SKEW_SECONDS:
        raise InvalidInputError("timestamp", "is in the future")
    raw_value = raw.get("value")
    value = None
    if raw_value is not None:
        if isinstance(raw_value, int | float) and not isinstance(raw_value, bool):
            value = _finite(raw_value)
        if value is None or abs(value) > MAX_EVENT_VALUE:
            raise InvalidInputError("value", f"must be a finite number within +-{MAX_EVENT_VALUE:g}")
    recommendation_id = raw.get("recommendation_id")
    if recommendation_id is not None:
        recommendation_id = check_id(recommendation_id, "recommendation_id")
    return EventInput(
        event_id,
        user_id,
        item_id,
        str(kind),
        timestamp,
        None if value is None else round(value, EVENT_VALUE_DECIMALS),
        recommendation_id,
    )


def parse_events(
    body: Any, now: float, event_types: Collection[str] = EVENT_TYPES
) -> tuple[list[EventInput], list[EventRejection]]:
    """Validate a batch: every event is either accepted or rejected with its index, field and reason.

    ``event_types``: the deployment's declared types (default the built-ins).
    """
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise InvalidInputError("events", 'the body must be {"events": [...]}')
    raw_events = body["events"]
    if not raw_events:
        raise InvalidInputError("events", "must contain at least one event")
    if len(raw_events) > MAX_EVENTS:
        raise PayloadTooLargeError("events", f"at most {MAX_EVENTS} events a batch, got {len(raw_events)}")
    accepted: list[EventInput] = []
    rejected: list[EventRejection] = []
    seen: set[str] = set()
    for position, raw in enumerate(raw_events):
        event_id = raw.get("event_id") if isinstance(raw, dict) else None
        try:
            event = _event(raw, now, event_types)
        except InvalidInputError as error:
            rejected.append(
                EventRejection(
                    position, event_id if isinstance(event_id, str) else None, error.field, error.reason
                )
            )
            continue
        if event.event_id in seen:
            rejected.append(EventRejection(position, event.event_id, "event_id", "repeated within the batch"))
            continue
        seen.add(event.event_id)
        accepted.append(event)
    return accepted, rejected


@dataclass(frozen=True)
class Route:
    """One HTTP route: the function that serves it and what the OpenAPI document says of it."""

    method: str
    path: str
    function: str
    summary: str
    query: tuple[str, ...] = ()
    body: str | None = None
    auth: bool = True
    accepted: bool = False  # answers 202: written or queued, finished later


_FILTER_QUERY = (
    "category",
    "exclude_category",
    "tags",
    "min_price",
    "max_price",
    "available",
    "created_after",
)

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/users/{user_id}/recommendations",
        "recommend",
        "Personalised recommendations",
        ("k", "diversity", "explain", *_FILTER_QUERY),
    ),
    Route(
        "POST",
        "/users/{user_id}/onboarding",
        "cold_start",
        "Store a cold-start profile, get first picks",
        body="Onboarding",
    ),
    Route(
        "GET",
        "/items/{item_id}/similar",
        "recommend",
        "Items similar to an item",
        ("k", "explain", *_FILTER_QUERY),
    ),
    Route("GET", "/search", "cold_start", "Free-text semantic search", ("q", "k", *_FILTER_QUERY)),
    Route("POST", "/events", "events", "Record a batch of interactions", body="EventBatch", accepted=True),
    Route(
        "DELETE",
        "/users/{user_id}",
        "events",
        "Erase a user: hidden at once, deleted by a job (202)",
        accepted=True,
    ),
    Route("GET", "/users/{user_id}/erasure", "events", "Progress of the user's erasure"),
    Route("GET", "/health", "recommend", "Index version, item count, encoder id", auth=False),
    Route("GET", "/openapi.json", "recommend", "This document", auth=False),
)

_QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": DEFAULT_K},
    "diversity": {"type": "number", "minimum": 0, "maximum": 1, "default": 0},
    "explain": {"type": "boolean", "default": False},
    "q": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS},
    "category": {"type": "string", "description": "comma-separated categories to keep"},
    "exclude_category": {"type": "string", "description": "comma-separated categories to drop"},
    "tags": {"type": "string", "description": "comma-separated tags, any of"},
    "min_price": {"type": "number", "minimum": 0},
    "max_price": {"type": "number", "minimum": 0},
    "available": {"type": "boolean", "default": True},
    "created_after": {"type": "string", "description": "ISO 8601 or epoch seconds"},
}

_ID_SCHEMA = {"type": "string", "pattern": ID_PATTERN, "description": f"an id: {ID_RULE}"}

_COMPONENTS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string"},
            "message": {"type": "string"},
            "field": {"type": "string"},
            "reason": {"type": "string"},
        },
    },
    "Onboarding": {
        "type": "object",
        "properties": {
            "interests": {
                "type": "array",
                "items": {"type": "string", "maxLength": MAX_ANSWER_CHARS},
                "maxItems": MAX_ONBOARDING_ANSWERS,
            },
            "goals": {
                "type": "array",
                "items": {"type": "string", "maxLength": MAX_ANSWER_CHARS},
                "maxItems": MAX_ONBOARDING_ANSWERS,
            },
            "experience": {"type": "string", "maxLength": MAX_ANSWER_CHARS},
        },
    },
    "EventBatch": {
        "type": "object",
        "required": ["events"],
        "properties": {
            "events": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_EVENTS,
                "items": {
                    "type": "object",
                    "required": ["event_id", "user_id", "item_id", "type"],
                    "properties": {
                        "event_id": _ID_SCHEMA,
                        "user_id": _ID_SCHEMA,
                        "item_id": _ID_SCHEMA,
                        "type": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 40,
                            "description": "one of the deployment's event types (EMBREC_EVENT_TYPES; "
                            f"default {', '.join(sorted(EVENT_TYPES))})",
                        },
                        "timestamp": {"type": ["string", "number"]},
                        "recommendation_id": _ID_SCHEMA,
                        "value": {"type": "number", "minimum": -MAX_EVENT_VALUE, "maximum": MAX_EVENT_VALUE},
                    },
                },
            }
        },
    },
}


def openapi_document(title: str = "embrec", version: str = __version__) -> dict[str, Any]:
    """An OpenAPI 3.1 document generated from :data:`ROUTES` (served at ``GET /openapi.json``)."""
    paths: dict[str, dict[str, Any]] = {}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for route in ROUTES:
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": _ID_SCHEMA}
            for name in re.findall(r"{(\w+)}", route.path)
        ]
        parameters += [
            {"name": name, "in": "query", "required": name == "q", "schema": _QUERY_SCHEMAS[name]}
            for name in route.query
        ]
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": f"{route.method.lower()}_{re.sub(r'[^a-z]+', '_', route.path.lower()).strip('_')}",
            "parameters": parameters,
            "responses": {
                "202" if route.accepted else "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "400": {"description": "Invalid input", "content": error},
                "404": {"description": "Not found", "content": error},
                "413": {"description": "Too large", "content": error},
                "422": {"description": "Unprocessable", "content": error},
                "503": {"description": "Try again", "content": error},
            },
        }
        if route.body:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.body}"}}},
            }
        if not route.auth:
            operation["security"] = []
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": _COMPONENTS},
    }
