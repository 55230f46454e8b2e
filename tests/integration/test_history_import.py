"""Bulk history import through the import function (S3 -> SQS -> λ on moto), and reads bounded by time."""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from typing import Any

import pytest
from deployment import Deployment

from embrec.app import service
from embrec.aws.clients import AwsClients
from embrec.aws.store import TIME_SHARDS, ImpressionStore, InteractionStore, UserEvent, event_sort_key
from embrec.config import Settings
from embrec.domain.model import Impression, Interaction

DAY = 86_400.0


def _put(deployment: Deployment, name: str, body: bytes) -> str:
    put = deployment.clients.s3.put_object(
        Bucket=deployment.env["EMBREC_BUCKET"], Key=f"interactions/incoming/{name}", Body=body
    )
    return str(put["ETag"])


def _report(deployment: Deployment, name: str) -> dict[str, Any]:
    body = deployment.clients.s3.get_object(
        Bucket=deployment.env["EMBREC_BUCKET"], Key=f"interactions/reports/{name}.json"
    )["Body"].read()
    return dict(json.loads(body))


def _rejected(deployment: Deployment, name: str) -> list[dict[str, Any]]:
    body = deployment.clients.s3.get_object(
        Bucket=deployment.env["EMBREC_BUCKET"], Key=f"interactions/rejected/{name}.jsonl"
    )["Body"].read()
    return [json.loads(line) for line in body.decode().splitlines()]


def _stored_rows(deployment: Deployment) -> int:
    table = deployment.env["EMBREC_INTERACTIONS_TABLE"]
    pages = deployment.clients.dynamodb.get_paginator("scan").paginate(TableName=table)
    return sum(page["Count"] for page in pages)


def _calls(clients: AwsClients, service_name: str) -> Counter[str]:
    """Operation names of every call the client makes from now on."""
    seen: Counter[str] = Counter()
    clients_of = {"dynamodb": clients.dynamodb, "s3": clients.s3}
    clients_of[service_name].meta.events.register(
        f"before-call.{service_name}", lambda model, **_: seen.update([model.name])
    )
    return seen


def test_every_row_is_accounted_for_and_unknown_types_are_reported(deployment: Deployment) -> None:
    # Given a CSV with good rows and every kind of bad one, including a type the deployment never declared
    now = time.time()
    lines = ["user_id,item_id,type,timestamp,value,event_id"]
    lines += [f"u{n % 7},ml-{n},like,{now - n * 60:.0f},4.5," for n in range(60)]
    lines += [
        f",ml-1,like,{now:.0f},,",  # missing user
        "u1,ml-1,like,yesterday,,",  # bad timestamp
        f"u1,ml-1,watch,{now:.0f},,",  # undeclared type
        f"u2,ml-2,watch,{now:.0f},,",  # undeclared type
        f"u1,ml-1,share,{now:.0f},,",  # undeclared type
        f"u1,ml-1,like,{now + 10 * DAY:.0f},,",  # in the future
        f"u1,ml-1,like,{now - 400 * DAY:.0f},,",  # older than the 365-day retention
        f"u1,ml-1,like,{now:.0f},NaN,",  # not a finite value
    ]
    calls = _calls(_runtime(deployment).aws, "dynamodb")
    etag = _put(deployment, "history.csv", ("\n".join(lines) + "\n").encode())

    # When the import function runs
    (outcome,) = deployment.drain_import_queue()

    # Then every row is counted, each rejection names its line, field and reason, and unknown types are listed
    assert outcome == {"batchItemFailures": []}
    report = _report(deployment, "history.csv")
    assert report["etag"].strip('"') == etag.strip('"') and report["status"] == "complete"
    assert (report["total"], report["accepted"], report["rejected"], report["expired"]) == (68, 60, 7, 1)
    assert report["total"] == report["accepted"] + report["rejected"] + report["expired"]
    assert report["unknown_types"] == {"watch": 2, "share": 1}
    rejected = _rejected(deployment, "history.csv")
    assert [(row["line"], row["errors"][0]["field"]) for row in rejected] == [
        (62, "user_id"), (63, "timestamp"), (64, "type"), (65, "type"), (66, "type"), (67, "timestamp"),
        (69, "value"),
    ]
    assert _stored_rows(deployment) == 60
    # And the rows went in with BatchWriteItem (25 a call), never a transaction per event
    assert calls["TransactWriteItems"] == 0
    assert calls["BatchWriteItem"] == 3


def test_redelivery_and_reimport_change_nothing(deployment: Deployment) -> None:
    now = time.time()
    rows = [
        {"user_id": f"u{n % 5}", "item_id": f"ml-{n % 11}", "type": "view", "timestamp": now - n * 3600}
        for n in range(120)
    ]
    body = "".join(json.dumps(row) + "\n" for row in rows).encode()
    _put(deployment, "events.jsonl", body)
    deployment.drain_import_queue()
    first = _report(deployment, "events.jsonl")

    # The same S3 notification delivered again: the claim makes it a duplicate, the report is not recounted
    bucket = deployment.env["EMBREC_BUCKET"]
    head = deployment.clients.s3.head_object(Bucket=bucket, Key="interactions/incoming/events.jsonl")
    etag = head["ETag"].strip('"')  # as S3 notifications carry it
    notification = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": bucket}, "object": {"key": "interactions/incoming/events.jsonl", "eTag": etag}}}]}
    runtime_result = service.import_message(_runtime(deployment), json.dumps(notification))
    assert runtime_result == [{"key": "interactions/incoming/events.jsonl", "status": "duplicate"}]
    assert _report(deployment, "events.jsonl") == first

    # The same rows uploaded again as a new file (no event_id: the key is derived from the content)
    _put(deployment, "events-again.jsonl", body)
    deployment.drain_import_queue()
    assert _report(deployment, "events-again.jsonl")["accepted"] == 120
    assert _stored_rows(deployment) == 120


def _runtime(deployment: Deployment) -> Any:
    from embrec.app.runtime import get_runtime

    return get_runtime()


def test_personalize_header_gzip_and_declared_types(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a deployment that declares its own types, and an Amazon Personalize interactions export
    monkeypatch.setenv("EMBREC_EVENT_TYPES", "watch=1,share=2,skip=-1")
    from embrec.app.runtime import reset_runtime

    reset_runtime()
    now = int(time.time())
    csv_text = "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE\n" + "".join(
        f"user-{n % 4},item-{n},{now - n * 60},{('watch', 'share', 'skip')[n % 3]},{n % 5}\n"
        for n in range(30)
    ) + f"user-1,item-1,{now},like,\n"  # a built-in type, not declared here
    _put(deployment, "personalize.csv.gz", gzip.compress(csv_text.encode()))

    deployment.drain_import_queue()

    report = _report(deployment, "personalize.csv.gz")
    assert (report["total"], report["accepted"], report["rejected"]) == (31, 30, 1)
    assert report["unknown_types"] == {"like": 1}
    history = _runtime(deployment).interactions.history("user-0", now=now + 1)
    assert {event.type for event in history} <= {"watch", "share", "skip"} and len(history) == 8
    assert all(event.event_id.startswith("h-") for event in history)


def test_a_large_file_continues_at_a_byte_offset_and_reports_once(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "ROWS_PER_IMPORT", 40)
    now = time.time()
    lines = ["user_id,item_id,type,timestamp"] + [f"u{n % 9},i{n},click,{now - n:.0f}" for n in range(100)]
    _put(deployment, "big.csv", ("\n".join(lines) + "\n").encode())
    ranges: list[str | None] = []
    _runtime(deployment).aws.s3.meta.events.register(
        "before-call.s3.GetObject",
        lambda params, **_: ranges.append(params.get("headers", {}).get("Range"))
        if "big.csv" in params.get("url_path", "") else None,
    )

    outcomes = deployment.drain_import_queue()

    assert len(outcomes) == 3  # the notification, then two continuations
    report = _report(deployment, "big.csv")
    counts = (report["status"], report["chunks"], report["total"], report["accepted"])
    assert counts == ("complete", 3, 100, 100)
    assert _stored_rows(deployment) == 100
    # each continuation starts where the last one stopped: a ranged GET, the earlier rows never read again
    assert ranges[0] is None and all(r is not None and r.startswith("bytes=") for r in ranges[1:])
    offsets = [int(r.removeprefix("bytes=").rstrip("-")) for r in ranges[1:]]
    assert offsets == sorted(offsets) and offsets[0] == len(("\n".join(lines[:41]) + "\n").encode())


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_file_of_exactly_two_chunks_completes_without_reading_past_its_end(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, gzipped: bool
) -> None:
    # Given a file of exactly twice the rows one invocation takes (S3 answers a ranged GET from the file's
    # end with 416: a continuation there would fail five times into the DLQ)
    monkeypatch.setattr(service, "ROWS_PER_IMPORT", 40)
    now = time.time()
    body = ("user_id,item_id,type,timestamp\n" + "".join(f"u{n % 9},i{n},click,{now - n:.0f}\n"
                                                          for n in range(80))).encode()
    name = "exact.csv.gz" if gzipped else "exact.csv"
    _put(deployment, name, gzip.compress(body) if gzipped else body)

    # When the import queue drains
    outcomes = deployment.drain_import_queue()

    # Then two invocations imported it whole and the report is complete
    assert len(outcomes) == 2
    report = _report(deployment, name)
    counts = (report["status"], report["chunks"], report["total"], report["accepted"])
    assert counts == ("complete", 2, 80, 80)


# ---------------------------------------------------------------------------------- reads bounded by time


@pytest.fixture
def events(aws_clients: AwsClients, settings: Settings) -> InteractionStore:
    return InteractionStore(aws_clients.dynamodb, settings.interactions_table, settings.idempotency_table)


NOW = 1_780_000_000.0


def _history(n: int, age_days: float, user: str = "u", recommendation: str | None = None) -> list[UserEvent]:
    return [
        UserEvent(f"{user}{i % 13}", Interaction(f"i{i % 17}", "view", NOW - age_days * DAY + i, None,
                                                 f"{user}-{age_days}-{i}", recommendation))
        for i in range(n)
    ]


def _count_reads(aws_clients: AwsClients) -> tuple[Counter[str], list[int]]:
    """(DynamoDB operations called, ``ScannedCount`` of each Query) from here on. The count is read on the
    wire, before the rebuild's window read takes the body from botocore's parser (test_store)."""
    operations: Counter[str] = Counter()
    scanned: list[int] = []
    events = aws_clients.dynamodb.meta.events
    events.register("after-call.dynamodb", lambda model, **_: operations.update([model.name]))
    events.register_first(
        "before-parse.dynamodb.Query",
        lambda response_dict, **_: scanned.append(json.loads(response_dict["body"]).get("ScannedCount", 0)),
    )
    return operations, scanned


def test_the_window_read_never_returns_events_outside_the_window(
    events: InteractionStore, aws_clients: AwsClients
) -> None:
    # Given 300 events 200 days old, 80 from 20 days ago and 50 from yesterday
    rows = _history(300, 200, "old") + _history(80, 20, "mid") + _history(50, 1, "new")
    events.import_events(rows, now=NOW)
    operations, scanned = _count_reads(aws_clients)

    # When the rebuild reads a 30-day window
    window = [row for page in events.read_window(NOW - 30 * DAY, now=NOW) for row in page.rows()]

    # Then DynamoDB read exactly the 130 events inside it: the 300 old ones were never read, not filtered out
    assert len(window) == 130 and {user[:3] for user, *_ in window} == {"mid", "new"}
    assert sum(scanned) == 130
    assert set(operations) == {"Query"}  # no Scan
    # one query per (week, shard) of the window (5 or 6 weeks): bounded by the window, not the table
    assert operations["Query"] in (5 * TIME_SHARDS, 6 * TIME_SHARDS)


def test_attributed_reads_start_at_the_given_time(events: InteractionStore) -> None:
    events.import_events(
        _history(40, 100, "old", recommendation="r-old") + _history(10, 3, "new", recommendation="r-new")
        + _history(25, 2, "plain"),
        now=NOW,
    )
    found = list(events.read_attributed(NOW - 7 * DAY, now=NOW))
    assert len(found) == 10 and {event.recommendation_id for _, event in found} == {"r-new"}


def test_counting_recent_events_reads_only_their_range(
    events: InteractionStore, aws_clients: AwsClients
) -> None:
    # Given 300 events 200 days old and 50 from yesterday (the console's "events of the last day"); the
    # module's table may hold other tests' events, so the counts are compared before and after
    day_before = events.count_since(NOW - 3 * DAY, now=NOW)
    hour_before = events.count_since(NOW - 3600, now=NOW)
    events.import_events(_history(300, 200, "cnt-old") + _history(50, 1, "cnt-new"), now=NOW)
    operations, scanned = _count_reads(aws_clients)
    # When the events of the last 3 days are counted, then only those are read: Select=COUNT queries, no Scan
    day = events.count_since(NOW - 3 * DAY, now=NOW)
    assert day - day_before == 50
    assert sum(scanned) == day and set(operations) == {"Query"}  # the 300 old events were never read
    assert events.count_since(NOW - 3600, now=NOW) == hour_before


def test_the_time_index_backfill_makes_rows_written_before_it_visible_to_the_window_read(
    events: InteractionStore, aws_clients: AwsClients, settings: Settings
) -> None:
    # Given 60 events stored before the by_time index existed (rows without `tb`), 40 stored with it, an
    # erasure marker (no `ts`), and 30 old rows without `tb` outside the window
    client, table = aws_clients.dynamodb, settings.interactions_table
    events.import_events(_history(40, 2, "bf-new"), now=NOW)
    for event in _history(60, 3, "bf-pre") + _history(30, 300, "bf-old"):
        sort_key = event_sort_key(event.interaction.timestamp, event.interaction.event_id)
        row = {"user_id": {"S": event.user_id}, "sk": {"S": sort_key},
               "event_id": {"S": event.interaction.event_id}, "item_id": {"S": event.interaction.item_id},
               "type": {"S": "view"},
               "ts": {"N": str(round(event.interaction.timestamp * 1000))},
               "expires_at": {"N": str(int(NOW) + 400 * 86_400)}}
        client.put_item(TableName=table, Item=row)
    client.put_item(TableName=table, Item={"user_id": {"S": "bf-pre0"}, "sk": {"S": "~erasure"}})
    users = ("bf-new", "bf-pre")

    def in_window() -> int:
        pages = events.read_window(NOW - 30 * DAY, now=NOW)
        return sum(1 for page in pages for user in page.users if user.startswith(users))

    assert in_window() == 40  # the 60 older rows are invisible to the rebuild

    # When the one-off backfill runs, twice
    progress: list[tuple[int, int]] = []
    first = events.backfill_time_buckets(segments=3, on_progress=lambda *counts: progress.append(counts))
    second = events.backfill_time_buckets(segments=3)

    # Then every row with a timestamp got the bucket a new write would give it (the old ones too, outside
    # this window), the marker was left alone, and the second run found nothing to do
    assert first == (90, 90) and progress[-1] == (90, 90)
    assert second == (0, 0)
    assert in_window() == 100
    marker = client.get_item(TableName=table, Key={"user_id": {"S": "bf-pre0"}, "sk": {"S": "~erasure"}})
    assert "tb" not in marker["Item"]


def test_the_experiment_report_reads_only_its_experiments_lists_from_their_start(
    aws_clients: AwsClients, settings: Settings
) -> None:
    # Given 30 lists of experiment "ab" from yesterday, 20 from 40 days ago, 50 lists of another experiment
    # and 80 lists served outside any experiment, 6 of "ab"'s lists stored before the by_experiment index
    impressions = ImpressionStore(aws_clients.dynamodb, settings.impressions_table)
    served = (
        [Impression(f"ab-new-{n}", f"u{n}", "ab", "v1" if n % 2 else "control", NOW - DAY + n, 10)
         for n in range(30)]
        + [Impression(f"ab-old-{n}", f"u{n}", "ab", "control", NOW - 40 * DAY + n, 10) for n in range(20)]
        + [Impression(f"other-{n}", f"u{n}", "other", "control", NOW - DAY + n, 10) for n in range(50)]
        + [Impression(f"plain-{n}", f"u{n}", None, "default", NOW - DAY + n, 10) for n in range(80)]
    )
    for impression in served:
        impressions.put(impression)
    for n in range(6):
        key = {"recommendation_id": {"S": f"ab-new-{n}"}}
        aws_clients.dynamodb.update_item(TableName=settings.impressions_table, Key=key,
                                         UpdateExpression="REMOVE xs")
    operations, scanned = _count_reads(aws_clients)

    # When the report reads "ab" from a week ago
    week = list(impressions.experiment_impressions("ab", NOW - 7 * DAY, now=NOW))

    # Then DynamoDB read that experiment's lists of the week and nothing else: one query per shard, no Scan
    assert sorted(i.recommendation_id for i in week) == sorted(f"ab-new-{n}" for n in range(6, 30))
    assert sum(scanned) == 24 and dict(operations) == {"Query": ImpressionStore.EXPERIMENT_SHARDS}
    assert {(i.experiment, i.items) for i in week} == {("ab", 10)}
    assert len(list(impressions.experiment_impressions("ab", now=NOW))) == 44  # all of "ab" since its start

    # And the one-off backfill puts the 6 older rows into the index (only those: lists outside experiments
    # stay out of it), once
    assert impressions.backfill_experiment_index(segments=2) == (6, 6)
    assert impressions.backfill_experiment_index(segments=2) == (0, 0)
    assert len(list(impressions.experiment_impressions("ab", NOW - 7 * DAY, now=NOW))) == 30
