"""embrec.domain.catalog: field validation (a failing and a passing case per rule), item_text, hashes."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embrec.domain.catalog import (
    ITEM_TEXT_VERSION,
    MAX_DESCRIPTION_CHARS,
    TEXT_DESCRIPTION_CHARS,
    FieldError,
    Item,
    RowError,
    content_hash,
    item_text,
    validate_row,
)
from embrec.errors import InvalidInputError


def row(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"item_id": "sku-1", "title": "Trail running shoe"}
    base.update(fields)
    return base


def errors_of(data: Any) -> dict[str, str]:
    with pytest.raises(RowError) as info:
        validate_row(data)
    return {e.field: e.reason for e in info.value.errors}


# --- item_id -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("sku-1", "sku-1"), ("  sku-1  ", "sku-1"), (42, "42"), ("x" * 128, "x" * 128), ("auth0|1", "auth0|1")],
)
def test_item_id_accepted(value: Any, expected: str) -> None:
    assert validate_row(row(item_id=value)).item_id == expected


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [
        (None, "required"),
        ("   ", "required"),
        ("x" * 129, "1-128 characters"),
        ("é" * 10, "ASCII"),
        ("a\x00b", "1-128 characters"),
        ("a\nb", "1-128 characters"),
        (True, "bool"),
        (1.5, "float"),
        (["a"], "list"),
    ],
)
def test_item_id_rejected(value: Any, reason_part: str) -> None:
    assert reason_part in errors_of(row(item_id=value))["item_id"]


def test_missing_item_id_key() -> None:
    assert "item_id" in errors_of({"title": "x"})


# --- title ---------------------------------------------------------------------------------------------


def test_title_whitespace_collapsed() -> None:
    assert validate_row(row(title="  Trail \n running\tshoe ")).title == "Trail running shoe"


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [(None, "required"), ("", "required"), ("t" * 501, "longer than 500"), (5, "string"),
     ("a\x07b", "control")],
)
def test_title_rejected(value: Any, reason_part: str) -> None:
    assert reason_part in errors_of(row(title=value))["title"]


def test_title_at_limit_accepted() -> None:
    assert len(validate_row(row(title="t" * 500)).title) == 500


# --- description ---------------------------------------------------------------------------------------


def test_description_kept_whole_up_to_cap() -> None:
    text = "Para one.\n\nPara two. " + "x" * (MAX_DESCRIPTION_CHARS - 30)
    item = validate_row(row(description=text))
    assert item.description == text.strip()


def test_huge_description_is_a_row_error_not_a_crash() -> None:
    errors = errors_of(row(description="x" * 10_000_000))
    assert "longer than" in errors["description"]


def test_description_byte_cap_for_wide_characters() -> None:
    # 60,000 four-byte characters are under the character cap but over the 200 KB byte cap
    assert "bytes" in errors_of(row(description="\U0001f600" * 60_000))["description"]
    assert validate_row(row(description="\U0001f600" * 50_000)).description


@pytest.mark.parametrize("value", [["a", "b"], 3, "bad\x00byte"])
def test_description_rejected(value: Any) -> None:
    assert "description" in errors_of(row(description=value))


# --- category ------------------------------------------------------------------------------------------


def test_category_accepted() -> None:
    assert validate_row(row(category=" Running  Shoes ")).category == "Running Shoes"


@pytest.mark.parametrize("value", [["a"], "c" * 201, 7])
def test_category_rejected(value: Any) -> None:
    assert "category" in errors_of(row(category=value))


# --- tags ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["trail", " Road ", "trail", "TRAIL", ""], ("trail", "Road")),
        ("trail, road,,  ,Trail", ("trail", "road")),
        ([], ()),
        (("a", "b"), ("a", "b")),
    ],
)
def test_tags_normalised(value: Any, expected: tuple[str, ...]) -> None:
    assert validate_row(row(tags=value)).tags == expected


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [
        (["ok", 3], "string"),
        ({"a": 1}, "list"),
        (["t" * 101], "longer than 100"),
        ([f"t{i}" for i in range(51)], "more than 50"),
        (["a\x00"], "control"),
    ],
)
def test_tags_rejected(value: Any, reason_part: str) -> None:
    assert reason_part in errors_of(row(tags=value))["tags"]


# --- price ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), (12.5, 12.5), ("12.50", 12.5), (" 3 ", 3.0)])
def test_price_accepted(value: Any, expected: float) -> None:
    assert validate_row(row(price=value)).price == expected


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [(-1, ">= 0"), (math.nan, "finite"), (math.inf, "finite"), ("nan", "finite"), (True, "bool"),
     ("cheap", "number"), ([1], "number"), (10**400, "range"), (1e300, "range"), (1e-200, "range")],
)
def test_price_rejected(value: Any, reason_part: str) -> None:
    assert reason_part in errors_of(row(price=value))["price"]


def test_empty_price_string_is_absent() -> None:
    assert validate_row(row(price="  ")).price is None


# --- available -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("true", True), ("FALSE", False), ("0", False), (1, True), (0, False),
     ("yes", True), (None, True)],
)
def test_available_accepted(value: Any, expected: bool) -> None:
    assert validate_row(row(available=value)).available is expected


@pytest.mark.parametrize("value", ["maybe", 2, 0.5, [True]])
def test_available_rejected(value: Any) -> None:
    assert "true or false" in errors_of(row(available=value))["available"]


# --- created_at ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020-01-01T00:00:00Z", 1577836800.0),
        ("2020-01-01T01:00:00+01:00", 1577836800.0),
        ("2020-01-01", 1577836800.0),  # naive means UTC
        (1577836800, 1577836800.0),
        (1577836800123, 1577836800.123),  # milliseconds
        ("1577836800", 1577836800.0),
        (1577836800.5, 1577836800.5),
    ],
)
def test_created_at_accepted(value: Any, expected: float) -> None:
    created = validate_row(row(created_at=value)).created_at
    assert created == pytest.approx(expected)


@pytest.mark.parametrize("value", ["yesterday", "2020-13-01", -5, True, math.inf, [2020], 1e20])
def test_created_at_rejected(value: Any) -> None:
    assert "created_at" in errors_of(row(created_at=value))


# --- image_embedding -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [([0.5, -1, 2], (0.5, -1.0, 2.0)), ("[0.25, 0.75]", (0.25, 0.75)), ((1.0,), (1.0,))],
)
def test_image_embedding_accepted(value: Any, expected: tuple[float, ...]) -> None:
    assert validate_row(row(image_embedding=value)).image_embedding == expected


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [([], "1..4096"), ([0.0] * 4097, "1..4096"), ([1, "2"], "number"), ([1, True], "number"),
     ([math.nan], "finite"), ("[1, 2", "JSON"), ("1 2 3", "list"), ({"x": 1}, "list"),
     ([1.0, 10**400], "range"), ([1e-200], "range"), ("[" * 5000 + "]" * 5000, "JSON")],
)
def test_image_embedding_rejected(value: Any, reason_part: str) -> None:
    assert reason_part in errors_of(row(image_embedding=value))["image_embedding"]


# --- deleted (tombstones) ------------------------------------------------------------------------------


def test_tombstone_needs_only_item_id() -> None:
    item = validate_row({"item_id": "sku-9", "deleted": "true", "price": -5})
    assert item == Item(item_id="sku-9", title="", deleted=True)


def test_tombstone_still_needs_item_id() -> None:
    assert "item_id" in errors_of({"deleted": True})


def test_deleted_false_is_a_normal_row() -> None:
    assert validate_row(row(deleted=False)).deleted is False
    assert "title" in errors_of({"item_id": "x", "deleted": "no"})


def test_deleted_rejected_value() -> None:
    assert "deleted" in errors_of(row(deleted="perhaps"))


# --- extra ---------------------------------------------------------------------------------------------


def test_unknown_fields_kept_in_extra() -> None:
    item = validate_row(row(brand="Acme", sizes=[40, 41], extra={"color": "red"}))
    assert item.extra == {"color": "red", "brand": "Acme", "sizes": [40, 41]}


def _nested(depth: int) -> Any:
    """A JSON value nested ``depth`` levels deep: [[...["leaf"]...]]."""
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"weight": math.nan}, "weight"),
        ({"blob": b"bytes"}, "blob"),
        ({"extra": "not an object"}, "extra"),
        ({f"k{i}": i for i in range(65)}, "extra"),
        ({"notes": "n" * 20_000}, "extra"),
        ({"sku": 10**50}, "sku"),  # DynamoDB numbers: 38 digits
        ({"ratio": 1e-200}, "ratio"),
        ({"specs": _nested(17)}, "specs"),  # DynamoDB refuses a document nested deeper than 32 levels
        ({"extra": {"specs": _nested(900)}}, "specs"),
    ],
)
def test_extra_rejected(fields: dict[str, Any], bad_field: str) -> None:
    assert bad_field in errors_of(row(**fields))


def test_extra_nested_up_to_the_limit_and_numbers_dynamodb_stores_are_kept() -> None:
    item = validate_row(row(specs=_nested(16), sku=10**37, ratio=1e-120))
    assert item.extra["sku"] == 10**37 and item.extra["ratio"] == 1e-120


# --- whole row -----------------------------------------------------------------------------------------


def test_every_bad_field_reported_together() -> None:
    with pytest.raises(RowError) as info:
        validate_row({"item_id": "", "price": -1, "available": "maybe", "tags": 5, "created_at": "soon"})
    fields = [e.field for e in info.value.errors]
    assert fields == ["item_id", "title", "tags", "price", "available", "created_at"]
    err = info.value
    assert isinstance(err, InvalidInputError)
    assert err.status == 400
    assert (err.field, err.reason) == ("item_id", "is required")
    assert err.to_dict()["errors"] == [{"field": e.field, "reason": e.reason} for e in err.errors]


@pytest.mark.parametrize("data", [["item_id", "x"], "text", 5, None])
def test_non_object_row_rejected(data: Any) -> None:
    assert errors_of(data).keys() == {"row"}


def test_row_error_requires_errors() -> None:
    with pytest.raises(ValueError):
        RowError([])
    assert FieldError("a", "b").to_dict() == {"field": "a", "reason": "b"}


# --- item_text -----------------------------------------------------------------------------------------


def test_item_text_template() -> None:
    item = validate_row(row(title="Toy Story", category="Animation", tags=["pixar", "fun"],
                            description="A cowboy doll\nis jealous."))
    assert item_text(item) == "Toy Story. Category: Animation. Tags: pixar, fun. A cowboy doll is jealous."


def test_item_text_leaves_out_empty_parts_and_keeps_title_punctuation() -> None:
    assert item_text(validate_row(row(title="Why?"))) == "Why?"


def test_item_text_truncates_long_description_only_for_encoding() -> None:
    description = "word " * 2000
    item = validate_row(row(description=description))
    text = item_text(item)
    assert len(item.description) == len(description.strip())
    assert text.startswith("Trail running shoe. word word")
    assert text.endswith("…")
    assert len(text) <= len("Trail running shoe. ") + TEXT_DESCRIPTION_CHARS + 1


# --- content_hash --------------------------------------------------------------------------------------


def test_content_hash_ignores_spelling_but_not_content() -> None:
    a = validate_row({"item_id": "x", "title": "Shoe", "price": "12.5", "tags": "a, b", "available": "1"})
    b = validate_row({"item_id": " x ", "title": " Shoe ", "price": 12.5, "tags": ["a", "b"],
                      "available": True})
    c = validate_row({"item_id": "x", "title": "Shoe", "price": 12.6, "tags": ["a", "b"]})
    d = validate_row({"item_id": "x", "title": "Shoe", "price": 12.5, "tags": ["a", "b"], "extra": {"k": 1}})
    assert content_hash(a) == content_hash(b)
    assert len({content_hash(a), content_hash(c), content_hash(d)}) == 3
    assert len(content_hash(a)) == 64 and ITEM_TEXT_VERSION >= 1


# --- to_dict / from_dict round trip ---------------------------------------------------------------------

_text = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40).filter(
    lambda s: s.strip() != "")
_json_scalar = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False,
                                                                                 allow_infinity=False) | _text
_rows = st.fixed_dictionaries(
    {"item_id": st.from_regex(r"[A-Za-z0-9_:@+=|-][A-Za-z0-9_.:@+=|-]{0,40}", fullmatch=True)
     | st.integers(0, 10**9), "title": _text},
    optional={
        "description": st.text(max_size=200),
        "category": _text,
        "tags": st.lists(_text.filter(lambda s: "," not in s), max_size=8),
        "price": st.floats(min_value=0, max_value=1e9),
        "available": st.booleans(),
        "created_at": st.floats(min_value=0, max_value=4e9),
        "image_embedding": st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1,
                                    max_size=16),
        "deleted": st.booleans(),
        "brand": _json_scalar,
        "attrs": st.dictionaries(st.text(max_size=5), _json_scalar, max_size=3),
    },
)


@settings(max_examples=200, deadline=None)
@given(_rows)
def test_to_dict_from_dict_round_trip(data: dict[str, Any]) -> None:
    try:
        item = validate_row(data)
    except RowError:
        return  # generated text can hit a rule (e.g. control characters); the round trip is the point
    again = Item.from_dict(item.to_dict())
    assert again == item
    assert again.extra == item.extra
    assert content_hash(again) == content_hash(item)
    assert again.to_dict() == item.to_dict()


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"title": "bad \ud800 surrogate"}, "title"),
        ({"tags": ["ok", "\udc80"]}, "tags"),
        ({"notes": ["nested \udfff"]}, "notes"),
    ],
)
def test_lone_surrogates_rejected(fields: dict[str, Any], bad_field: str) -> None:
    # json.loads('"\\ud800"') yields a lone surrogate, which cannot be encoded to UTF-8 (hash, DynamoDB)
    assert "UTF-8" in errors_of(row(**fields))[bad_field]


_anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["item_id", "title", "description", "category", "tags", "price", "available",
                     "created_at", "image_embedding", "deleted", "extra", "other"]),
    _anything,
))
def test_validate_row_only_ever_raises_row_error(data: dict[str, Any]) -> None:
    try:
        item = validate_row(data)
    except RowError as err:
        assert err.errors
        return
    # whatever is accepted can be hashed and serialised as UTF-8 JSON
    assert len(content_hash(item)) == 64
    json.dumps(item.to_dict(), ensure_ascii=False, allow_nan=False).encode("utf-8")
    item_text(item).encode("utf-8")
