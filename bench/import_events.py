"""Bulk history import through the local stack: MovieLens's ratings, then N synthetic events, RSS over time.

``python -m bench import_events`` (env: ``BENCH_IMPORT_EVENTS`` synthetic rows, default 1,000,000;
``BENCH_IMPORT_SKIP_MOVIELENS=1``; ports ``EMBREC_PORT`` / ``EMBREC_AWS_PORT``). The local stack (moto server,
SQS poller, import function) runs in this process, so its RSS is the stack's. Steps:

1. MovieLens ml-latest-small ratings.csv (100,836 rows) converted to the import format (ratings as
   like/view/dislike with ``embrec_tools.datasets.rating_to_type``, timestamps mapped linearly into the last
   180 days, as the demo does), copied into ``interactions/incoming/`` with ``aws s3 cp``; timed from the
   copy to the complete report, then the rebuild's window read (what the next rebuild sees) counted.
2. N synthetic events (CSV, 50k users x 20k items, the last 180 days) imported the same way; every report
   update (each 20k rows) prints rows done, rows/s over the interval and the process RSS.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._data import rss_mb

ROOT = Path(__file__).resolve().parents[1]
RATINGS = ROOT / "data" / "ml-latest-small" / "ratings.csv"
DAY = 86_400.0


def movielens_history(path: Path, now: float) -> int:
    """Write MovieLens's ratings as an import CSV at ``path``; returns the row count."""
    from embrec_tools.datasets import rating_to_type

    with RATINGS.open(newline="") as source:
        rows = list(csv.DictReader(source))
    first = min(int(r["timestamp"]) for r in rows)
    last = max(int(r["timestamp"]) for r in rows)
    start, end = now - 180 * DAY, now - 60
    scale = (end - start) / (last - first)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["user_id", "item_id", "type", "timestamp", "value"])
        for r in rows:
            ts = start + (int(r["timestamp"]) - first) * scale
            rating = float(r["rating"])
            writer.writerow([r["userId"], f"ml-{r['movieId']}", rating_to_type(rating), f"{ts:.3f}", rating])
    return len(rows)


def synthetic_history(path: Path, count: int, now: float, seed: int = 7) -> None:
    rng = random.Random(seed)
    kinds = ("view", "view", "view", "click", "like", "add_to_cart", "purchase")
    with path.open("w") as out:
        out.write("user_id,item_id,type,timestamp\n")
        for _ in range(count):
            ts = now - rng.random() * 180 * DAY
            out.write(f"s{rng.randrange(50_000)},item-{rng.randrange(20_000)},{rng.choice(kinds)},{ts:.3f}\n")


def copy_to_s3(local: Path, bucket: str, key: str, endpoint: str) -> None:
    aws = shutil.which("aws") or str(Path(sys.executable).with_name("aws"))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    subprocess.run([aws, "s3", "cp", str(local), f"s3://{bucket}/{key}", "--endpoint-url", endpoint,
                    "--only-show-errors"], check=True, env=env)


def wait_for_report(
    s3: Any, bucket: str, name: str, started: float, show: bool, rss: Callable[[], float] | None = None
) -> dict[str, Any]:
    """Poll the file's report until it is complete; with ``show``, print rows, rows/s and ``rss()`` (MB,
    this process by default) at each update."""
    from embrec.aws.artifacts import ArtifactStore

    measure = rss or rss_mb

    key = ArtifactStore.history_report_key(name)
    last_total, last_time = 0, started
    while True:
        try:
            report = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            report = {}
        total = int(report.get("total", 0))
        if show and total > last_total:
            now = time.monotonic()
            rate = (total - last_total) / max(now - last_time, 1e-9)
            print(f"  {now - started:7.1f}s rows {total:>9,}  {rate:8,.0f} rows/s  RSS {measure():7.0f} MB",
                  flush=True)
            last_total, last_time = total, now
        if report.get("status") == "complete":
            return dict(report)
        time.sleep(1.0)


def main() -> None:
    from embrec.app.runtime import Runtime
    from embrec_tools.local.stack import LocalEnvironment

    count = int(os.environ.get("BENCH_IMPORT_EVENTS", "1000000"))
    print(f"machine: {os.cpu_count()} CPUs (shared); python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as scratch, LocalEnvironment(serve_api=False, schedule=False) as stack:
        settings = stack.settings
        runtime = Runtime(settings)
        s3 = runtime.aws.s3
        print(f"stack up; RSS {rss_mb():.0f} MB")
        if os.environ.get("BENCH_IMPORT_SKIP_MOVIELENS") != "1":
            path = Path(scratch) / "movielens.csv"
            now = time.time()
            rows = movielens_history(path, now)
            started = time.monotonic()
            copy_to_s3(path, settings.bucket, "interactions/incoming/movielens.csv", stack.endpoint_url)
            report = wait_for_report(s3, settings.bucket, "movielens.csv", started, show=True)
            imported = time.monotonic() - started
            read_started = time.monotonic()
            window = runtime.interactions.read_window(now - settings.signal_window_days * DAY)
            seen = sum(len(page) for page in window)
            read_seconds = time.monotonic() - read_started
            print(f"movielens: {rows:,} rows, accepted {report['accepted']:,}, "
                  f"rejected {report['rejected']}, "
                  f"imported in {imported:.1f}s ({rows / imported:,.0f} rows/s); the rebuild's window read "
                  f"sees {seen:,} events in {read_seconds:.1f}s; RSS {rss_mb():.0f} MB", flush=True)
        if count:
            path = Path(scratch) / "synthetic.csv"
            synthetic_history(path, count, time.time())
            print(f"synthetic: {count:,} rows, {path.stat().st_size / 1e6:.0f} MB; RSS {rss_mb():.0f} MB")
            started = time.monotonic()
            copy_to_s3(path, settings.bucket, "interactions/incoming/synthetic.csv", stack.endpoint_url)
            report = wait_for_report(s3, settings.bucket, "synthetic.csv", started, show=True)
            elapsed = time.monotonic() - started
            rate = count / elapsed
            print(f"synthetic: accepted {report['accepted']:,} in {elapsed:.0f}s ({rate:,.0f} rows/s), "
                  f"{report['chunks']} chunks; RSS {rss_mb():.0f} MB", flush=True)


if __name__ == "__main__":
    main()
