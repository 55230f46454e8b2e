"""What the console reads from the bucket and tables itself (the API does not serve it), every read bounded.

Through the layer's own adapters and use cases with the operator's credentials (a :class:`Runtime` built
from :func:`embrec_tools.settings.cli_settings`): the index pointer and the deltas since it, the newest
catalog reports and a page of rejected rows, a user's newest events (one query, newest first), an item's
stored fields (one GetItem), the experiments and their report
(:func:`embrec.app.service.experiment_report`, the same code as ``embrec report``), and the event counts
of the last hour and day (``Select=COUNT`` queries on the interactions table's ``by_time`` index: only that
range is read, never a scan).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from embrec.app import service
from embrec.app.runtime import Runtime
from embrec.aws.artifacts import Pointer
from embrec.aws.clients import aws_errors
from embrec.domain.experiments import Experiment
from embrec.domain.model import Interaction, StoredItem
from embrec.domain.reporting import Report
from embrec.errors import NotFoundError

__all__ = [
    "REJECTED_PREFIX",
    "REPORTS_PREFIX",
    "CatalogReport",
    "EventCounts",
    "RebuildSchedule",
    "StackReads",
]

REPORTS_PREFIX = "catalog/reports/"
REJECTED_PREFIX = "catalog/rejected/"
#: The event counts read at most this many interaction rows (the table is keyed by user, not by time).
#: One S3 listing page: the newest reports are picked from at most this many keys.
REPORT_KEYS_LIMIT = 1_000


@dataclass(frozen=True)
class CatalogReport:
    """One ``catalog/reports/<name>.json``: its counts, and the rejected rows' key when there are any."""

    source: str  # the file's name under catalog/incoming/
    modified: float  # epoch s
    document: dict[str, Any]

    @property
    def rejected_name(self) -> str | None:
        """The rejected rows' name under ``catalog/rejected/`` (first chunk), None without rejected rows."""
        return f"{self.source}.jsonl" if self.document.get("rejected") else None


@dataclass(frozen=True)
class EventCounts:
    """Events stored in the last hour and day; ``note`` says how they were counted."""

    last_hour: int
    last_day: int
    note: str


@dataclass(frozen=True)
class RebuildSchedule:
    """The rebuild's schedule expression, its period when it is a rate, and the next run it implies."""

    expression: str
    period_s: float | None
    next_at: float | None  # epoch s; None when it cannot be told (a cron expression, no rebuild yet)


_RATE = re.compile(r"^rate\((\d+)\s+(second|minute|hour|day)s?\)$")
_UNIT_S = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def rebuild_schedule(expression: str, last_rebuild: float | None, now: float) -> RebuildSchedule:
    """The next rebuild of a ``rate(N unit)`` schedule after ``last_rebuild`` (epoch s), rolled past ``now``.

    A cron expression (or no rebuild yet) gives ``next_at`` None: the console shows the expression.
    """
    match = _RATE.match(expression.strip())
    if match is None:
        return RebuildSchedule(expression, None, None)
    period = float(int(match[1]) * _UNIT_S[match[2]])
    if last_rebuild is None or period <= 0:
        return RebuildSchedule(expression, period, None)
    due = last_rebuild + period
    if due < now:
        due += period * ((now - due) // period + 1)
    return RebuildSchedule(expression, period, due)


class StackReads:
    """Bounded reads of the deployment's bucket and tables (``runtime`` holds the clients and stores)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def bucket(self) -> str:
        return self.runtime.settings.bucket

    def pointer(self) -> Pointer | None:
        """``index/current.json`` (None before the first rebuild)."""
        return self.runtime.artifacts.read_current()

    def deltas_since(self, pointer: Pointer | None) -> int:
        """Ingest deltas published since the live version's items were read (all of them before any index)."""
        since = int(pointer.document.get("items_as_of", 0)) if pointer is not None else 0
        return len(self.runtime.artifacts.list_deltas(since))

    def catalog_reports(self, limit: int = 5) -> tuple[list[CatalogReport], bool]:
        """The ``limit`` newest ingest reports, and whether the listing was cut at one page of keys."""
        s3 = self.runtime.aws.s3
        with aws_errors(f"s3://{self.bucket}/{REPORTS_PREFIX}"):
            page = s3.list_objects_v2(Bucket=self.bucket, Prefix=REPORTS_PREFIX, MaxKeys=REPORT_KEYS_LIMIT)
        entries = sorted(page.get("Contents", []), key=lambda e: e["LastModified"], reverse=True)[:limit]
        reports = []
        for entry in entries:
            source = entry["Key"][len(REPORTS_PREFIX) :].removesuffix(".json")
            try:
                found = self.runtime.artifacts.get_json(entry["Key"])
            except NotFoundError:  # deleted since the listing
                continue
            if found is not None:
                reports.append(CatalogReport(source, entry["LastModified"].timestamp(), found[0]))
        return reports, bool(page.get("IsTruncated"))

    def rejected_rows(self, name: str, limit: int = 200) -> tuple[list[dict[str, Any]], bool] | None:
        """The first ``limit`` rows of ``catalog/rejected/<name>`` (streamed), whether more follow; None if
        there is no such file."""
        s3 = self.runtime.aws.s3
        key = REJECTED_PREFIX + name
        with aws_errors(f"s3://{self.bucket}/{key}"):
            try:
                body = s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            except s3.exceptions.NoSuchKey:
                return None
            rows: list[dict[str, Any]] = []
            more = False
            try:
                for line in body.iter_lines():
                    if not line.strip():
                        continue
                    if len(rows) >= limit:
                        more = True
                        break
                    rows.append(json.loads(line))
            finally:
                body.close()
        return rows, more

    def event_counts(self, now: float | None = None) -> EventCounts:
        """Events stored in the last hour and day: ``by_time`` counts, bounded by the range."""
        clock = time.time() if now is None else now
        interactions = self.runtime.interactions
        hour = interactions.count_since(clock - 3600, now=clock)
        day = interactions.count_since(clock - 86_400, now=clock)
        return EventCounts(hour, day, "counted on the interactions table's time index (by_time)")

    def user_events(self, user_id: str, limit: int = 50) -> list[Interaction]:
        """The user's ``limit`` newest live events (one query, newest first)."""
        return self.runtime.interactions.history(user_id, limit=limit, now=self.runtime.clock())

    def titles(self, item_ids: Iterable[str]) -> dict[str, str]:
        """Titles of these items (BatchGetItem, 100 ids a call): the timeline names what was touched."""
        found = self.runtime.items.batch_get(set(item_ids))
        return {item_id: str(item.fields.get("title") or item_id) for item_id, item in found.items()}

    def item(self, item_id: str) -> StoredItem | None:
        """The item's stored fields (one GetItem), None if the catalog never had it."""
        return self.runtime.items.get(item_id)

    def experiments(self) -> tuple[Experiment, ...]:
        """The experiments of ``config/experiments.json`` (the first enabled one is live)."""
        return self.runtime.experiments().experiments

    def experiment_report(self, name: str) -> Report:
        """The A/B report of ``name``: the same use case as ``embrec report``."""
        return service.experiment_report(self.runtime, name)
