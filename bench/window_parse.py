"""The client side of the rebuild's window read: ``python -m bench window_parse``.

What reading one ``by_time`` page costs the rebuild's CPU once DynamoDB has answered, per row: botocore's
parse of the Query response (the shape-driven JSON parser every boto3 call runs) and embrec's conversion of a
parsed row into ``(user_id, Interaction)`` (``InteractionStore._live`` + ``_interaction``), on a canned
1 MB page of 5,000 rows shaped as ``InteractionStore._row`` writes them. Baseline in the same process:
``json.loads`` of the same bytes, the least any Python reader of that page must do. CPU time
(``process_time``), median of ``BENCH_REPEATS`` (7) pages: the figure the 1M items + 50M events projection
multiplies (BENCHMARKS.md 5b).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any

import botocore.session
from botocore import parsers

from bench._data import machine_line
from embrec.aws.store import InteractionStore, event_sort_key, time_bucket

__all__ = ["main"]

ROWS = 5_000
NOW_S = 1_780_000_000


def _page() -> bytes:
    items: list[dict[str, Any]] = []
    for n in range(ROWS):
        ts_ms = (NOW_S - n) * 1000
        sort_key = event_sort_key(ts_ms / 1000, f"ev-{n:08d}")
        items.append({
            "user_id": {"S": f"user-{n % 977}"}, "sk": {"S": sort_key},
            "tb": {"S": time_bucket(ts_ms, sort_key)},
            "event_id": {"S": f"ev-{n:08d}"}, "item_id": {"S": f"item-{n % 20_000}"}, "type": {"S": "view"},
            "ts": {"N": str(ts_ms)}, "expires_at": {"N": str(NOW_S + 365 * 86_400)}, "value": {"N": "3.5"},
        })
    return json.dumps({"Items": items, "Count": ROWS, "ScannedCount": ROWS}).encode()


def _cpu_us_per_row(work: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.process_time()
        work()
        times.append(time.process_time() - started)
    return statistics.median(times) / ROWS * 1e6


def main() -> None:
    print(machine_line())
    repeats = int(os.environ.get("BENCH_REPEATS", "7"))
    body = _page()
    shape = botocore.session.get_session().get_service_model("dynamodb").operation_model("Query").output_shape
    parser = parsers.create_parser("json")
    response = {"status_code": 200, "headers": {}, "body": body}
    parsed = parser.parse(response, shape)["Items"]

    def convert() -> list[tuple[str, Any]]:
        return [(row["user_id"]["S"], InteractionStore._interaction(row))
                for row in parsed if InteractionStore._live(row, NOW_S)]

    boto = _cpu_us_per_row(lambda: parser.parse(response, shape), repeats)
    ours = _cpu_us_per_row(convert, repeats)
    floor = _cpu_us_per_row(lambda: json.loads(body), repeats)
    print(f"a by_time page of {ROWS:,} rows, {len(body) / 1e6:.2f} MB; CPU per row, median of {repeats}:")
    print(f"  botocore's Query parse      {boto:6.1f} us   (x{boto / floor:.1f} json.loads)")
    print(f"  embrec row -> Interaction   {ours:6.1f} us")
    print(f"  baseline json.loads         {floor:6.1f} us")
    through, lean = 50e6 * (boto + ours) / 1e6, 50e6 * (floor + ours) / 1e6
    print(f"  50M rows: {through:,.0f} CPU-s through boto3 ({through / 6:,.0f} s on 6 processes); "
          f"{lean:,.0f} CPU-s with a json.loads reader")


if __name__ == "__main__":
    main()
