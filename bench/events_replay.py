"""Sustained ``POST /events`` into the local stack: ``python -m bench events_replay``.

The real template and handlers run in a child process (``LocalEnvironment``, embedded moto server, no
rebuild schedule, no ingest pollers), as ``embrec local up`` runs them; this process replays
``BENCH_EVENTS`` events (default 100,000) through the HTTP API, 100 a request from ``BENCH_CLIENTS`` (2)
client threads, 600 users, and prints the stack's RSS (``/proc/<pid>/status``) and the throughput of each
window of ``BENCH_WINDOW`` events. Issue 14's goal: RSS flat within 2x of the start, throughput not falling
as the tables grow (on moto 5.2.6 unpatched the stack grew ~5 MB per event and died near 4,700).

``BENCH_PRELOAD_EVENTS`` (default 0) first imports that many synthetic events into the same stack through
the bulk import (a CSV copied into ``interactions/incoming/`` with the AWS CLI, the stack's SQS poller and
import function), printing rows/s and the stack's RSS as it goes; the replay then starts on the full table,
and its RSS is compared with the stack's at the start of the replay (issue 14: 1M imported + 100k replayed).
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from bench._data import ROOT, machine_line, rss_mb

__all__ = ["main"]

USERS = 600
ITEMS = 9_742
BATCH = 100


def _serve(api_port: int, aws_port: int, dispatch: bool) -> None:
    """The child: the local stack on the given ports until it is terminated (``dispatch``: SQS pollers)."""
    from embrec_tools.local import LocalEnvironment

    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    env = LocalEnvironment(Path(ROOT), api_port=api_port, aws_port=aws_port, aws_endpoint=None,
                           dispatch=dispatch, schedule=False)
    env.serve_forever()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used (Linux): a cost that load on the machine does not
    inflate, unlike wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _batch(start: int, now: float) -> dict[str, Any]:
    events = []
    for n in range(start, start + BATCH):
        events.append({
            "event_id": f"r-{n:08d}", "user_id": f"user-{(n * 7919) % USERS}",
            "item_id": f"ml-{(n * 104729) % ITEMS + 1}", "type": ("view", "click", "like")[n % 3],
            "timestamp": now - (n % 86_400),
        })
    return {"events": events}


def _wait_ready(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the local stack at {url} did not answer /health within {timeout:.0f} s")


def preload(count: int, aws_port: int, pid: int) -> None:
    """Import ``count`` synthetic events into the running stack through ``interactions/incoming/``."""
    import boto3

    from bench.import_events import copy_to_s3, synthetic_history, wait_for_report
    from embrec.config import Settings

    endpoint = f"http://127.0.0.1:{aws_port}"
    bucket = Settings().bucket
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                      aws_secret_access_key="test")
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "preload.csv"
        synthetic_history(path, count, time.time())
        started = time.monotonic()
        copy_to_s3(path, bucket, "interactions/incoming/preload.csv", endpoint)
        report = wait_for_report(s3, bucket, "preload.csv", started, show=True, rss=lambda: rss_mb(pid))
    elapsed = time.monotonic() - started
    print(f"preload: {report['accepted']:,} of {count:,} events imported in {elapsed:.0f} s "
          f"({count / elapsed:,.0f} rows/s); stack RSS {rss_mb(pid):.0f} MB", flush=True)


def replay(
    total: int, clients: int, window: int, api_port: int, aws_port: int, preloaded: int = 0
) -> list[tuple[int, float, float, float]]:
    """Run the replay; ``(events sent, window events/s, RSS MB, stack CPU ms per event)`` per window; the
    first row is the stack before the replay (0 events, 0 /s)."""
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=_serve, args=(api_port, aws_port, preloaded > 0), daemon=True)
    child.start()
    assert child.pid is not None
    url = f"http://127.0.0.1:{api_port}"
    rows: list[tuple[int, float, float, float]] = []
    try:
        _wait_ready(url)
        print(f"stack pid {child.pid} ready, RSS {rss_mb(child.pid):.0f} MB; {total:,} events, "
              f"{clients} clients")
        if preloaded:
            preload(preloaded, aws_port, child.pid)
        rows.append((0, 0.0, rss_mb(child.pid), 0.0))
        next_batch = iter(range(0, total, BATCH))
        lock = threading.Lock()
        sent = 0
        now = time.time()
        failures: list[str] = []

        def client() -> None:
            nonlocal sent
            session = requests.Session()
            session.trust_env = False
            while True:
                with lock:
                    start = next(next_batch, None)
                if start is None:
                    return
                response = session.post(f"{url}/events", json=_batch(start, now), timeout=300)
                body = response.json()
                if response.status_code != 202 or body.get("accepted") != BATCH:
                    failures.append(f"{response.status_code} {str(body)[:200]}")
                    return
                with lock:
                    sent += BATCH

        threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
        started = last_time = time.monotonic()
        last_sent, last_cpu = 0, cpu_seconds(child.pid)
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            time.sleep(0.2)
            with lock:
                done = sent
            if done - last_sent >= window or not any(t.is_alive() for t in threads):
                clock, cpu = time.monotonic(), cpu_seconds(child.pid)
                rate = (done - last_sent) / max(clock - last_time, 1e-9)
                cpu_ms = 1000.0 * (cpu - last_cpu) / max(done - last_sent, 1)
                rows.append((done, rate, rss_mb(child.pid), cpu_ms))
                print(f"  {done:>9,} events  {clock - started:7.1f} s  {rate:7.1f} events/s  "
                      f"RSS {rows[-1][2]:7.1f} MB  stack CPU {cpu_ms:5.2f} ms/event", flush=True)
                last_sent, last_time, last_cpu = done, clock, cpu
        if failures:
            raise RuntimeError(f"replay stopped: {failures[0]}")
    finally:
        child.terminate()
        child.join(30)
    return rows


def main() -> None:
    print(machine_line())
    total = int(os.environ.get("BENCH_EVENTS", "100000"))
    clients = int(os.environ.get("BENCH_CLIENTS", "2"))
    window = int(os.environ.get("BENCH_WINDOW", "10000"))
    api_port = int(os.environ.get("EMBREC_PORT", "3000"))
    aws_port = int(os.environ.get("EMBREC_AWS_PORT", "4566"))
    preloaded = int(os.environ.get("BENCH_PRELOAD_EVENTS", "0"))
    rows = replay(total, clients, window, api_port, aws_port, preloaded)
    start_rss, rows = rows[0][2], rows[1:]
    partial = len(rows) > 1 and rows[-1][0] - rows[-2][0] < window
    full = rows[:-1] if partial else rows
    first, last = full[0], full[-1]
    rss = [start_rss] + [r[2] for r in rows]
    slope_kb = 1024.0 * (rss[-1] - rss[0]) / max(rows[-1][0], 1)
    print(
        f"sustained POST /events onto {preloaded:,} imported: {rows[-1][0]:,} events. Throughput first "
        f"window {first[1]:.0f}/s, last "
        f"{last[1]:.0f}/s (x{last[1] / first[1]:.2f}); stack CPU per event {first[3]:.2f} -> "
        f"{last[3]:.2f} ms "
        f"(x{last[3] / first[3]:.2f}); RSS {rss[0]:.0f} -> {rss[-1]:.0f} MB (x{rss[-1] / rss[0]:.2f}), "
        f"{slope_kb:.1f} KB per stored event (the tables moto holds in memory)"
    )

if __name__ == "__main__":
    main()
