"""History import: rows of a history file in, every row accounted for, valid ones batch-written.

:func:`import_rows` is the use case with its write injected; the S3 and SQS edges live in
:mod:`embrec.app.service`. Counts always add up: ``total == accepted + rejected + expired``, where *accepted*
rows are stored (a row whose key — user, timestamp, event id — is already stored overwrites it: a re-delivered
file changes nothing), *rejected* rows carry their line and reasons (an undeclared event type among them,
also counted per type in ``unknown_types``), and *expired* rows are older than the retention
(``EMBREC_EVENT_TTL_DAYS``), which applies to an import as to live events.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from embrec.app.ingest import parse_ingest_message
from embrec.aws.store import ImportWriteResult, UserEvent
from embrec.edge.history_file import HistoryRow
from embrec.errors import InvalidInputError

__all__ = ["HistoryObject", "ImportCounts", "ImportOutcome", "import_rows", "parse_import_message"]

# Rows per write call: the store splits them into BatchWriteItem calls of 25; one call in flight at a time.
WRITE_BATCH = 1000
# At most this many distinct unknown type names are listed in a report (the rest are summed under "...").
MAX_UNKNOWN_TYPES = 100
_CONTINUATION = "embrec_import"


@dataclass
class ImportCounts:
    total: int = 0
    accepted: int = 0
    rejected: int = 0
    expired: int = 0

    def add(self, other: ImportCounts) -> ImportCounts:
        return ImportCounts(**{name: getattr(self, name) + getattr(other, name) for name in asdict(self)})

    def adds_up(self) -> bool:
        return self.total == self.accepted + self.rejected + self.expired


@dataclass(frozen=True)
class HistoryObject:
    """One version of one uploaded history file, and where a continuation resumes (uncompressed bytes)."""

    bucket: str
    key: str
    etag: str
    offset: int = 0
    line: int = 1
    chunk: int = 0
    header: tuple[str, ...] | None = None
    counts: dict[str, int] | None = None  # totals of the chunks before this one
    unknown_types: dict[str, int] | None = None

    def to_message(self) -> str:
        return json.dumps({_CONTINUATION: asdict(self)})


def parse_import_message(body: str) -> list[HistoryObject]:
    """The history files an SQS message names: an S3 notification, our continuation, or nothing."""
    try:
        message = json.loads(body)
    except ValueError:
        raise InvalidInputError("message", "SQS message body is not JSON") from None
    if isinstance(message, dict) and _CONTINUATION in message:
        fields = dict(message[_CONTINUATION])
        if fields.get("header") is not None:
            fields["header"] = tuple(fields["header"])
        return [HistoryObject(**fields)]
    return [HistoryObject(found.bucket, found.key, found.etag) for found in parse_ingest_message(body)]


@dataclass
class ImportOutcome:
    counts: ImportCounts
    rejected_rows: list[dict[str, Any]] = field(default_factory=list)
    unknown_types: Counter[str] = field(default_factory=Counter)
    finished: bool = True
    offset: int = 0  # where the next chunk starts (uncompressed bytes), when not finished
    line: int = 1
    header: tuple[str, ...] | None = None


def import_rows(
    rows: Iterable[HistoryRow],
    write: Callable[[list[UserEvent]], ImportWriteResult],
    *,
    max_rows: int,
    header: tuple[str, ...] | None = None,
    on_progress: Callable[[ImportCounts], None] | None = None,
    progress_every: int = 20_000,
) -> ImportOutcome:
    """Count, reject and write ``rows``, stopping after ``max_rows`` data rows (a continuation goes on).

    Valid rows are written ``WRITE_BATCH`` at a time; the write of a batch runs in a background thread while
    the next batch is parsed (one write in flight), and every write has finished before this returns (a
    failed write raises here: the caller releases its claim and the message is retried; re-written rows land
    on the same keys). ``on_progress`` gets the counts every ``progress_every`` rows.
    """
    outcome = ImportOutcome(ImportCounts(), header=header)
    counts = outcome.counts
    batch: list[UserEvent] = []
    pending: list[tuple[Future[ImportWriteResult], int]] = []

    def settle() -> None:
        future, size = pending.pop()
        result = future.result()
        counts.accepted += size - result.expired
        counts.expired += result.expired

    def flush(writer: ThreadPoolExecutor) -> None:
        if pending:
            settle()
        pending.append((writer.submit(write, list(batch)), len(batch)))
        batch.clear()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embrec-import-write") as writer:
        for row in rows:
            if row.columns:
                outcome.offset, outcome.line = row.end_offset, row.line + 1
                outcome.header = row.columns
                continue
            if counts.total >= max_rows:
                # This row is left for the continuation, which resumes before it. Stopping only once a row is
                # known to be left means a file of exactly max_rows x n rows ends without an empty
                # continuation (a ranged GET from the end of the file is refused by S3: 416)
                outcome.finished = False
                break
            outcome.offset, outcome.line = row.end_offset, row.line + 1
            counts.total += 1
            if row.interaction is None or row.user_id is None:
                counts.rejected += 1
                outcome.rejected_rows.append({"line": row.line, "errors": row.errors, "raw": row.raw})
                unknown = row.unknown_type
                if unknown is not None:
                    seen = outcome.unknown_types
                    listed = unknown in seen or len(seen) < MAX_UNKNOWN_TYPES
                    seen[unknown if listed else "..."] += 1
            else:
                batch.append(UserEvent(row.user_id, row.interaction))
                if len(batch) >= WRITE_BATCH:
                    flush(writer)
            if on_progress is not None and counts.total % progress_every == 0:
                on_progress(replace(counts))
        else:
            outcome.finished = True
        if batch:
            flush(writer)
        if pending:
            settle()
    return outcome
