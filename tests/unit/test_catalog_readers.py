"""embrec.domain.catalog readers: JSON Lines, JSON arrays and CSV on small inline files; bad rows reported."""

from __future__ import annotations

import gzip
import io
import json

import pytest

import embrec.domain.catalog as catalog
from embrec.domain.catalog import RowResult, detect_format, read_catalog, read_catalog_named
from embrec.errors import InvalidInputError


def read(data: bytes, fmt: str, **kwargs: int) -> list[RowResult]:
    return list(read_catalog(io.BytesIO(data), fmt, **kwargs))  # type: ignore[arg-type]


def summary(results: list[RowResult]) -> list[tuple[int, str | None, list[str]]]:
    return [(r.line, r.item.item_id if r.item else None, [e.field for e in r.errors]) for r in results]


# --- detect_format -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.jsonl", "jsonl"), ("dir/A.NDJSON", "jsonl"), ("x.json", "json"), ("x.csv", "csv"),
     ("x.csv.gz", "csv"), ("x.jsonl.gz", "jsonl")],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt


@pytest.mark.parametrize("name", ["x.txt", "x.gz", "jsonl", "x.parquet"])
def test_detect_format_rejects_unknown(name: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        detect_format(name)
    assert info.value.field == "format"


def test_unknown_fmt_rejected() -> None:
    with pytest.raises(InvalidInputError):
        read(b"", "xml")


# --- JSON Lines ----------------------------------------------------------------------------------------


def test_jsonl_good_and_bad_rows_accounted_for() -> None:
    data = (
        b'\xef\xbb\xbf{"item_id": "a", "title": "A"}\r\n'  # BOM + CRLF
        b"\r\n"  # blank line: not a row
        b'{"item_id": "b", "title": "B \xff"}\n'  # bad UTF-8
        b"not json\n"
        b"[1, 2]\n"
        b'{"item_id": "a", "title": "again"}\n'  # duplicate
        b'{"item_id": "c", "price": -1}\n'
        b'{"item_id": "d", "title": "D", "tags": "x,y"}'  # no trailing newline
    )
    results = read(data, "jsonl")
    assert summary(results) == [
        (1, "a", []),
        (3, None, ["row"]),
        (4, None, ["row"]),
        (5, None, ["row"]),
        (6, None, ["item_id"]),
        (7, None, ["title", "price"]),
        (8, "d", []),
    ]
    assert "UTF-8" in results[1].errors[0].reason
    assert "\ufffd" in results[1].raw
    assert "invalid JSON" in results[2].errors[0].reason
    assert "duplicate" in results[4].errors[0].reason and "line 1" in results[4].errors[0].reason
    assert results[6].item is not None and results[6].item.tags == ("x", "y")
    assert results[0].raw == '{"item_id": "a", "title": "A"}'


def test_jsonl_duplicate_of_a_rejected_row_is_accepted() -> None:
    data = b'{"item_id": "a"}\n{"item_id": "a", "title": "A"}\n'
    assert summary(read(data, "jsonl")) == [(1, None, ["title"]), (2, "a", [])]


def test_jsonl_huge_field_is_rejected_by_validation() -> None:
    big = json.dumps({"item_id": "big", "title": "T", "description": "x" * 200_000}).encode()
    data = big + b'\n{"item_id": "next", "title": "N"}\n'
    results = read(data, "jsonl")
    assert summary(results) == [(1, None, ["description"]), (2, "next", [])]
    assert len(results[0].raw) <= catalog.RAW_MAX_CHARS


def test_jsonl_oversized_row_skipped_unparsed() -> None:
    big = json.dumps({"item_id": "big", "title": "T", "description": "x" * 5000}).encode()
    data = b'{"item_id": "a", "title": "A"}\n' + big + b'\n{"item_id": "b", "title": "B"}\n'
    results = read(data, "jsonl", max_row_bytes=1000)
    assert summary(results) == [(1, "a", []), (2, None, ["row"]), (3, "b", [])]
    assert "larger than 1000 bytes" in results[1].errors[0].reason


def test_empty_inputs_have_no_rows() -> None:
    for fmt in ("jsonl", "json", "csv"):
        assert read(b"", fmt) == []
        assert read(b"  \n\n", fmt) == []


# --- JSON arrays ---------------------------------------------------------------------------------------

ARRAY = (
    b'\xef\xbb\xbf[\r\n'
    b'  {"item_id": "a",\r\n'
    b'   "title": "A", "tags": ["x",\r\n "y"]},\r\n'
    b'  {"item_id": "b", "title": "caf\xc3\xa9 \xff"},\r\n'
    b'  {"item_id": "c", "title": [1, 2},\r\n'
    b'  "just a string", 12,\r\n'
    b'  {"item_id": "a", "title": "dup"},\r\n'
    b'  {"item_id": "d", "title": "D \xc3\xa9", "extra": {"k": [1, {"z": "]}"}]}}\r\n'
    b']\r\n'
)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 16])
def test_json_array_spread_over_lines(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given tiny read sizes, every element and multi-byte character is split across buffer refills
    monkeypatch.setattr(catalog, "_JSON_CHUNK_BYTES", chunk)
    results = read(ARRAY, "json")
    assert summary(results) == [
        (2, "a", []),
        (5, None, ["row"]),
        (6, None, ["row"]),
        (7, None, ["row"]),
        (7, None, ["row"]),
        (8, None, ["item_id"]),
        (9, "d", []),
    ]
    assert results[0].item is not None and results[0].item.tags == ("x", "y")
    assert "UTF-8" in results[1].errors[0].reason
    assert "invalid JSON" in results[2].errors[0].reason
    assert "must be a JSON object" in results[3].errors[0].reason
    last = results[-1].item
    assert last is not None and last.title == "D é" and last.extra == {"k": [1, {"z": "]}"}]}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"[]", []),
        (b'[{"item_id": "a", "title": "A"},]', [(1, "a", [])]),  # trailing comma tolerated
        (b'{"item_id": "a"}', [(1, None, ["row"])]),  # not an array
        (b'[{"item_id": "a", "title": "A"}', [(1, "a", []), (1, None, ["row"])]),  # truncated file
        (b'[{"item_id": "a", "title": "A"} {"item_id": "b"}]', [(1, "a", []), (1, None, ["row"])]),
        (b'[\n{"item_id": "a", "title": "unterminated', [(2, None, ["row"])]),
    ],
)
def test_json_array_edge_cases(data: bytes, expected: list[tuple[int, str | None, list[str]]]) -> None:
    assert summary(read(data, "json")) == expected


def test_json_array_large_file_streams_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "_JSON_CHUNK_BYTES", 4096)
    rows = [{"item_id": f"i{i}", "title": f"Item {i}", "description": "é" * (i % 50)} for i in range(2000)]
    data = json.dumps(rows, indent=1, ensure_ascii=False).encode()

    class CountingStream(io.BytesIO):
        largest = 0

        def read(self, size: int | None = -1) -> bytes:
            assert size is not None and size > 0, "the parser must never read the whole file"
            CountingStream.largest = max(CountingStream.largest, size)
            return super().read(size)

    results = list(read_catalog(CountingStream(data), "json"))
    assert [r.item.item_id for r in results if r.item] == [f"i{i}" for i in range(2000)]
    assert CountingStream.largest < len(data) // 10


def test_json_array_huge_element_rejected_then_parsing_continues() -> None:
    big = {"item_id": "big", "title": "T", "description": "x" * 200_000}
    data = json.dumps([{"item_id": "a", "title": "A"}, big, {"item_id": "b", "title": "B"}]).encode()
    assert summary(read(data, "json")) == [(1, "a", []), (1, None, ["description"]), (1, "b", [])]


def test_json_array_element_over_row_limit_stops_with_a_reason() -> None:
    data = json.dumps([{"item_id": "a", "title": "A"}, {"item_id": "big", "title": "x" * 5000}]).encode()
    results = read(data, "json", max_row_bytes=1000)
    assert summary(results) == [(1, "a", []), (1, None, ["row"])]
    assert "larger than 1000 bytes" in results[1].errors[0].reason


# --- CSV -----------------------------------------------------------------------------------------------


def test_csv_rows_with_quotes_crlf_bom_and_bad_rows() -> None:
    data = (
        "\ufeffitem_id,title,tags,price,available,image_embedding,brand\r\n"
        '1,Shoe,"trail, road",12.5,true,"[0.5, 1]",Acme\r\n'
        '2,"Two\r\nline title",,,,,\r\n'  # quoted newline: the record starts on line 3
        "\r\n"
        '3,Three,"[""a"", ""b""]",cheap,maybe,,\r\n'
    ).encode() + b"4,Bad \xff byte,,,,,\r\n" + b"5,Five,,,,,,surplus\r\n" + b"6,Six\r\n"
    results = read(data, "csv")
    assert summary(results) == [
        (2, "1", []),
        (3, "2", []),
        (6, None, ["price", "available"]),
        (7, None, ["row"]),
        (8, None, ["row"]),
        (9, "6", []),
    ]
    first = results[0].item
    assert first is not None
    assert first.tags == ("trail", "road")
    assert first.price == 12.5 and first.available is True
    assert first.image_embedding == (0.5, 1.0)
    assert first.extra == {"brand": "Acme"}
    assert results[1].item is not None and results[1].item.title == "Two line title"
    assert "UTF-8" in results[3].errors[0].reason
    assert "8 fields" in results[4].errors[0].reason


def test_csv_empty_cells_are_absent_and_tombstones_work() -> None:
    data = b"item_id,title,deleted,price\na,,true,\nb,B,,\n"
    results = read(data, "csv")
    assert summary(results) == [(2, "a", []), (3, "b", [])]
    assert results[0].item is not None and results[0].item.deleted
    assert results[1].item is not None and results[1].item.price is None


def test_csv_duplicate_item_id_and_duplicate_header() -> None:
    assert summary(read(b"item_id,title\na,A\na,B\n", "csv")) == [(2, "a", []), (3, None, ["item_id"])]
    assert summary(read(b"item_id,title,title\na,A,B\n", "csv")) == [(1, None, ["header"])]


def test_csv_huge_description_is_a_row_error() -> None:
    data = b"item_id,title,description\nbig,T," + b"x" * 300_000 + b"\nok,OK,\n"
    assert summary(read(data, "csv")) == [(2, None, ["description"]), (3, "ok", [])]


def test_gzipped_catalog_by_name() -> None:
    data = gzip.compress(b'{"item_id": "a", "title": "A"}\n{"item_id": "b", "title": "B"}\n')
    results = list(read_catalog_named(io.BytesIO(data), "catalog/incoming/items.jsonl.gz"))
    assert summary(results) == [(1, "a", []), (2, "b", [])]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_reader_leaves_the_callers_stream_open(fmt: str) -> None:
    data = {"jsonl": b'{"item_id": "a", "title": "A"}\n', "json": b'[{"item_id": "a", "title": "A"}]',
            "csv": b"item_id,title\na,A\n"}[fmt]
    stream = io.BytesIO(data)
    assert [r.ok for r in read_catalog(stream, fmt)] == [True]
    assert not stream.closed


def test_csv_broken_quoting_is_reported_not_merged() -> None:
    results = read(b'item_id,title\na,"x"y\nb,B\nc,"unterminated\nd,D\n', "csv")
    assert summary(results) == [(2, None, ["row"]), (3, "b", []), (4, None, ["row"])]
    assert all("invalid CSV" in r.errors[0].reason for r in (results[0], results[2]))


def test_csv_row_over_limit_rejected() -> None:
    data = b"item_id,title,description\na,A," + b"x" * 3000 + b"\nb,B,\n"
    results = read(data, "csv", max_row_bytes=1000)
    assert summary(results) == [(2, None, ["row"]), (3, "b", [])]
    assert "larger than 1000 bytes" in results[0].errors[0].reason


# --- rows that would crash a parser, and resuming at a byte offset ----------------------------------------


def test_brackets_nested_too_deep_to_parse_are_one_rejected_row_in_every_format() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    good = b'{"item_id": "a", "title": "A"}'
    jsonl = read(good + b"\n" + deep + b"\n" + good.replace(b'"a"', b'"b"') + b"\n", "jsonl")
    assert summary(jsonl) == [(1, "a", []), (2, None, ["row"]), (3, "b", [])]
    assert "nested too deeply" in jsonl[1].errors[0].reason
    array = read(b"[" + good + b"," + deep + b"," + good.replace(b'"a"', b'"b"') + b"]", "json")
    assert [r.item.item_id if r.item else None for r in array] == ["a", None, "b"]


def test_jsonl_rows_carry_their_end_offset_and_a_resume_point_continues_there() -> None:
    lines = [json.dumps({"item_id": f"i{k}", "title": f"T{k}"}).encode() for k in range(5)]
    data = b"\n".join(lines[:2]) + b"\n\n" + b"\n".join(lines[2:]) + b"\n"  # a blank line 3
    rows = read(data, "jsonl")
    assert [r.line for r in rows] == [1, 2, 4, 5, 6]
    assert [r.end for r in rows] == [data.index(line) + len(line) + 1 for line in lines]

    resume = catalog.ResumePoint(offset=rows[1].end or 0, line=rows[1].line)
    tail = list(read_catalog(io.BytesIO(data[resume.offset:]), "jsonl", resume=resume))
    assert [(r.line, r.item.item_id if r.item else None, r.end) for r in tail] == [
        (r.line, r.item.item_id if r.item else None, r.end) for r in rows[2:]
    ]
    gz = list(read_catalog(io.BytesIO(gzip.compress(data)), "jsonl", gzipped=True, resume=resume))
    assert [(r.line, r.end) for r in gz] == [(r.line, r.end) for r in rows[2:]]


def test_only_json_lines_resume_at_a_byte_offset() -> None:
    assert catalog.resumable("a.jsonl") and catalog.resumable("a.ndjson.gz")
    assert not catalog.resumable("a.csv") and not catalog.resumable("a.json")
    with pytest.raises(InvalidInputError):
        list(read_catalog(io.BytesIO(b"item_id,title\n"), "csv", resume=catalog.ResumePoint(10, 1)))
