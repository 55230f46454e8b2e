"""History files: formats, Personalize's header, content-derived ids, and resuming at a byte offset."""

from __future__ import annotations

import gzip
import io

import pytest

from embrec.config import ConfigurationError, Settings
from embrec.domain.profiles import DEFAULT_TYPE_WEIGHTS, declared_type_weights
from embrec.edge import contract as api
from embrec.edge.history_file import HistoryRow, history_format, read_history

NOW = 1_780_000_000.0
TYPES = frozenset(DEFAULT_TYPE_WEIGHTS)
CSV = (
    "user_id,item_id,type,timestamp,value\n"
    + "".join(f"u{n},i{n},like,{NOW - n * 60:.0f},{n}\n" for n in range(50))
).encode()


def _data(rows: list[HistoryRow]) -> list[HistoryRow]:
    return [row for row in rows if not row.columns]


def test_formats_by_name() -> None:
    assert history_format("a/b.csv") == ("csv", False)
    assert history_format("x.JSONL.gz") == ("jsonl", True)
    assert history_format("x.ndjson") == ("jsonl", False)
    with pytest.raises(api.InvalidInputError):
        history_format("x.parquet")


def test_resuming_at_a_row_end_offset_reads_the_rest_exactly() -> None:
    whole = _data(list(read_history(io.BytesIO(CSV), "h.csv", TYPES, NOW)))
    assert len(whole) == 50 and all(row.interaction is not None for row in whole)
    header = next(iter(read_history(io.BytesIO(CSV), "h.csv", TYPES, NOW))).columns
    cut = whole[19]
    rest = list(
        read_history(io.BytesIO(CSV[cut.end_offset :]), "h.csv", TYPES, NOW,
                     offset=cut.end_offset, first_line=cut.line + 1, header=list(header))
    )
    assert [row.interaction for row in rest] == [row.interaction for row in whole[20:]]
    assert [row.line for row in rest] == [row.line for row in whole[20:]]
    # a gzipped file resumes by skipping the uncompressed bytes before the offset
    zipped = list(read_history(io.BytesIO(gzip.compress(CSV)), "h.csv.gz", TYPES, NOW,
                               offset=cut.end_offset, first_line=cut.line + 1, header=list(header)))
    assert [row.interaction for row in zipped] == [row.interaction for row in whole[20:]]


def test_personalize_header_and_content_derived_event_ids() -> None:
    text = f"USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE\nu1,i1,{NOW:.0f},purchase,9.5\n".encode()
    (row,) = _data(list(read_history(io.BytesIO(text), "p.csv", TYPES, NOW)))
    assert row.user_id == "u1" and row.interaction is not None
    assert (row.interaction.type, row.interaction.value, row.interaction.timestamp) == ("purchase", 9.5, NOW)
    (again,) = _data(list(read_history(io.BytesIO(text), "p.csv", TYPES, NOW)))
    assert again.interaction is not None and again.interaction.event_id == row.interaction.event_id


def test_jsonl_rows_each_rejected_with_field_and_reason() -> None:
    lines = [
        '{"user_id": "u1", "item_id": "i1", "type": "click", "timestamp": "2026-05-01T10:00:00Z"}',
        '{"user_id": "u1", "item_id": "i1", "type": "watch", "timestamp": 1}',
        '{"user_id": "u 1", "item_id": "i1", "type": "click", "timestamp": 1}',
        "not json",
        "[1, 2]",
        '{"user_id": "u1", "item_id": "i1", "type": "click"}',
    ]
    rows = list(read_history(io.BytesIO("\n".join(lines).encode()), "e.jsonl", TYPES, NOW))
    assert rows[0].interaction is not None
    assert [(row.line, row.errors[0]["field"]) for row in rows[1:]] == [
        (2, "type"), (3, "user_id"), (4, "row"), (5, "row"), (6, "timestamp"),
    ]
    assert rows[1].unknown_type == "watch" and rows[2].unknown_type is None


def test_a_header_without_the_required_columns_is_one_rejection() -> None:
    movielens = b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n"
    rows = list(read_history(io.BytesIO(movielens), "r.csv", TYPES, NOW))
    assert len(rows) == 1 and rows[0].errors[0]["field"] == "header"


def test_declared_event_types_replace_the_built_ins() -> None:
    settings = Settings.from_env({"EMBREC_EVENT_TYPES": "watch=1, share=2.5,skip=-1"}, local=True)
    weights = declared_type_weights(settings.event_types)
    assert dict(weights) == {"watch": 1.0, "share": 2.5, "skip": -1.0}
    assert declared_type_weights(Settings.from_env({}, local=True).event_types) is DEFAULT_TYPE_WEIGHTS
    accepted, rejected = api.parse_events(
        {"events": [{"event_id": "e1", "user_id": "u", "item_id": "i", "type": "watch"},
                    {"event_id": "e2", "user_id": "u", "item_id": "i", "type": "like"}]},
        NOW, weights.keys(),
    )
    assert [e.type for e in accepted] == ["watch"] and rejected[0].field == "type"
    for bad in ("watch", "Watch=1", "watch=x", "watch=inf", "a=1,a=2"):
        with pytest.raises(ConfigurationError):
            Settings.from_env({"EMBREC_EVENT_TYPES": bad}, local=True)
