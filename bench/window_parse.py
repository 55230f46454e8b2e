"""The client side of the rebuild's window read: ``python -m bench window_parse``.

What one ``by_time`` page costs the rebuild's CPU per event once DynamoDB has answered, from the response's
bytes to the event in :class:`~embrec.domain.signals.EventColumns`, two ways in the same process:

- **before** (session 13's reader): every attribute of the row travels (9), botocore's shape-driven parser
  reads the page, each row becomes an ``(user_id, Interaction)`` (``InteractionStore._live`` +
  ``_interaction``) and ``EventColumns.extend`` takes them one by one;
- **now** (``InteractionStore.read_window``): the four attributes the signals use travel (a projection),
  ``json.loads`` reads the page (``_raw_query``: botocore's parser gets an empty document), the page becomes
  one ``EventPage`` of columns (``InteractionStore._event_page``) and ``EventColumns`` takes it whole.

On canned pages of 5,000 rows shaped as ``InteractionStore._row`` writes them (20,000 items, 977 users, the
columns filled as a rebuild fills them). CPU time (``process_time``), median of ``BENCH_REPEATS`` (7) pages,
each step apart: the figures the 1M items + 50M events projection multiplies (BENCHMARKS.md 5b). Then the
same for the item scan (``ItemStore.scan_for_index``), per item.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import botocore.session
import numpy as np
from botocore import parsers

from bench._data import machine_line
from embrec.aws.store import InteractionStore, ItemStore, event_sort_key, time_bucket
from embrec.domain.profiles import DEFAULT_TYPE_WEIGHTS
from embrec.domain.signals import EventColumns

__all__ = ["main"]

ROWS = 5_000
ITEMS = 20_000
NOW_S = 1_780_000_000
_WINDOW_ATTRIBUTES = ("user_id", "item_id", "type", "ts")  # read_window's projection


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for n in range(ROWS):
        ts_ms = (NOW_S - n) * 1000
        sort_key = event_sort_key(ts_ms / 1000, f"ev-{n:08d}")
        rows.append({
            "user_id": {"S": f"user-{n % 977}"}, "sk": {"S": sort_key},
            "tb": {"S": time_bucket(ts_ms, sort_key)},
            "event_id": {"S": f"ev-{n:08d}"}, "item_id": {"S": f"item-{n % ITEMS}"},
            "type": {"S": ("view", "click", "like")[n % 3]},
            "ts": {"N": str(ts_ms)}, "expires_at": {"N": str(NOW_S + 365 * 86_400)}, "value": {"N": "3.5"},
        })
    return rows


def _page(rows: list[dict[str, Any]]) -> bytes:
    return json.dumps({"Items": rows, "Count": len(rows), "ScannedCount": len(rows)}).encode()


def _cpu_us_per_row(work: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.process_time()
        work()
        times.append(time.process_time() - started)
    return statistics.median(times) / ROWS * 1e6


def main() -> None:
    print(machine_line())
    repeats = int(os.environ.get("BENCH_REPEATS", "7"))
    rows = _rows()
    full = _page(rows)
    projected = _page([{key: row[key] for key in _WINDOW_ATTRIBUTES} for row in rows])
    shape = botocore.session.get_session().get_service_model("dynamodb").operation_model("Query").output_shape
    parser = parsers.create_parser("json")
    response = {"status_code": 200, "headers": {}, "body": full}
    parsed = parser.parse(response, shape)["Items"]
    pairs = [(row["user_id"]["S"], InteractionStore._interaction(row))
             for row in parsed if InteractionStore._live(row, NOW_S)]
    loaded = json.loads(projected)["Items"]
    page = InteractionStore._event_page(loaded)
    item_ids = [f"item-{i}" for i in range(ITEMS)]

    def columns() -> EventColumns:
        return EventColumns(item_ids, DEFAULT_TYPE_WEIGHTS)

    before = {
        "botocore's Query parse (9 attributes)": lambda: parser.parse(response, shape),
        "row -> (user_id, Interaction)": lambda: [
            (row["user_id"]["S"], InteractionStore._interaction(row))
            for row in parsed if InteractionStore._live(row, NOW_S)
        ],
        "EventColumns.extend, one by one": lambda: columns().extend(pairs),
    }
    now = {
        "json.loads (4 attributes)": lambda: json.loads(projected),
        "rows -> EventPage": lambda: InteractionStore._event_page(loaded),
        "EventColumns.extend, the page": lambda: columns().extend([page]),
    }
    print(f"a by_time page of {ROWS:,} rows ({len(full) / 1e6:.2f} MB with every attribute, "
          f"{len(projected) / 1e6:.2f} MB projected); CPU per event, median of {repeats}:")
    totals = []
    for name, steps in (("before", before), ("now", now)):
        total = 0.0
        for step, work in steps.items():
            cost = _cpu_us_per_row(work, repeats)
            total += cost
            print(f"  {name:6s} {step:38s} {cost:6.2f} us")
        print(f"  {name:6s} {'total':38s} {total:6.2f} us")
        totals.append(total)
    print(f"  now / before: x{totals[1] / totals[0]:.3f}")
    print(f"  50M events: before {50 * totals[0]:,.0f} CPU-s, now {50 * totals[1]:,.0f} CPU-s")
    _items_page(repeats)


def _items_page(repeats: int) -> None:
    """The other read of the rebuild, per item: a ``scan_for_index`` page (the projection's ten attributes,
    a 384-d float32 vector as Binary), before through botocore's Scan parse, now through ``json.loads``
    (``_raw_page``), each then ``ItemStore._from_row``."""
    def row(n: int) -> dict[str, Any]:
        vector = np.random.default_rng(n).random(384, np.float32).tobytes()
        return {
            "item_id": {"S": f"item-{n:08d}"},
            "title": {"S": f"Synthetic catalog item number {n} of the bench"},
            "category": {"S": f"category-{n % 20}"}, "tags": {"L": [{"S": "a"}, {"S": "b"}]},
            "price": {"N": str(n % 500)}, "available": {"BOOL": True}, "created_at": {"N": "1780000000"},
            "encoder_id": {"S": "minilm-l6-int8"}, "vector": {"B": base64.b64encode(vector).decode()},
        }

    rows = [row(n) for n in range(ROWS // 5)]
    body = json.dumps({"Items": rows, "Count": len(rows), "ScannedCount": len(rows)}).encode()
    shape = botocore.session.get_session().get_service_model("dynamodb").operation_model("Scan").output_shape
    parser = parsers.create_parser("json")
    response = {"status_code": 200, "headers": {}, "body": body}
    parsed = parser.parse(response, shape)["Items"]
    loaded = json.loads(body)["Items"]
    parse = _cpu_us_per_row(lambda: parser.parse(response, shape), repeats) * 5
    convert = _cpu_us_per_row(lambda: [ItemStore._from_row(row) for row in parsed], repeats) * 5
    raw = _cpu_us_per_row(lambda: json.loads(body), repeats) * 5
    raw_convert = _cpu_us_per_row(lambda: [ItemStore._from_row(row) for row in loaded], repeats) * 5
    before, now = parse + convert, raw + raw_convert
    print(f"a scan_for_index page of {len(rows):,} items ({len(body) / 1e6:.2f} MB); CPU per item:")
    print(f"  before botocore's Scan parse {parse:.1f} us + row -> StoredItem {convert:.1f} us "
          f"= {before:.1f} us")
    print(f"  now    json.loads {raw:.1f} us + row (base64 vector) -> StoredItem {raw_convert:.1f} us = "
          f"{now:.1f} us (x{now / before:.3f}); 1M items {before:,.0f} -> {now:,.0f} CPU-s")


if __name__ == "__main__":
    main()
