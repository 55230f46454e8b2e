"""Catalog ingest that streams and never loses a file (issue 14 item 5; issue 15 items 2, 5, 9, 14).

Through the real ingest handler under in-process moto, with S3 reads, row validations and SQS calls counted
(not timed): a multi-chunk JSON Lines file is read once, in MiB blocks, each continuation a ranged GET where
the previous chunk ended; the time budget of the Lambda context ends a chunk cleanly; items written before a
crash reach a delta on the retry; one bad row is one rejected row; a new encoder re-encodes; a body that can
never succeed is not retried; a missing encoder is a retry in seconds.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.response import StreamingBody
from deployment import Deployment

from embrec.app import ingest as ingest_module
from embrec.app import service
from embrec.app.runtime import get_runtime
from embrec.aws.artifacts import CURRENT_ENCODER_KEY, ENCODER_MANIFEST
from embrec.domain import catalog
from embrec.errors import CompatibilityError, ServiceUnavailableError
from embrec_tools.local.lambdas import LambdaContext


def _row(i: int) -> dict[str, Any]:
    return {"item_id": f"s-{i:04d}", "title": f"Synthetic item {i}", "category": ["Books", "Games"][i % 2],
            "tags": [f"t{i % 7}"], "price": i % 50}


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def _put(deployment: Deployment, key: str, body: bytes) -> str:
    response = deployment.clients.s3.put_object(Bucket=deployment.env["EMBREC_BUCKET"], Key=key, Body=body)
    return str(response["ETag"]).strip('"')


def _get_json(deployment: Deployment, key: str) -> Any:
    body = deployment.clients.s3.get_object(Bucket=deployment.env["EMBREC_BUCKET"], Key=key)["Body"].read()
    return json.loads(body)


def _lines(deployment: Deployment, key: str) -> list[dict[str, Any]]:
    body = deployment.clients.s3.get_object(Bucket=deployment.env["EMBREC_BUCKET"], Key=key)["Body"].read()
    return [json.loads(line) for line in body.splitlines()]


def _notification(bucket: str, key: str, etag: str) -> str:
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": etag}},
    }]})


def _record(message_id: str, body: str, receipt: str = "", receive_count: int = 1) -> dict[str, Any]:
    return {
        "messageId": message_id, "receiptHandle": receipt or f"rh-{message_id}", "body": body,
        "attributes": {"ApproximateReceiveCount": str(receive_count)}, "messageAttributes": {},
        "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:embrec-ingest", "awsRegion": "us-east-1",
    }


def _failed(deployment: Deployment, *records: dict[str, Any]) -> list[str]:
    """The ingest function's failed message ids (all of them when Powertools raises for a batch that failed
    whole, which Lambda treats the same way: nothing is deleted from the queue)."""
    try:
        result = deployment.function("ingest").invoke({"Records": list(records)})
    except BatchProcessingError:
        return [record["messageId"] for record in records]
    return [failure["itemIdentifier"] for failure in result["batchItemFailures"]]


def _ingest(deployment: Deployment, *bodies: str) -> list[str]:
    return _failed(deployment, *(_record(f"m-{i}", body) for i, body in enumerate(bodies)))


def _deltas(deployment: Deployment) -> list[str]:
    listed = deployment.clients.s3.list_objects_v2(Bucket=deployment.env["EMBREC_BUCKET"], Prefix="deltas/")
    return sorted(o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith("/delta.npz"))


def _delta_items(deployment: Deployment) -> int:
    total = 0
    for key in _deltas(deployment):
        manifest = _get_json(deployment, key.replace("delta.npz", "manifest.json"))
        total += int(manifest["upserts"])
    return total


def _item_count(deployment: Deployment) -> int:
    return int(deployment.clients.dynamodb.scan(TableName=deployment.env["EMBREC_ITEMS_TABLE"],
                                                Select="COUNT")["Count"])


class _Reads:
    """Counts the read calls and bytes on the S3 bodies of catalog objects, the ranges asked, and every row
    validation."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.bytes = 0
        self.validations = 0
        self.ranges: list[str | None] = []
        self._bodies: set[int] = set()
        original_read = StreamingBody.read
        original_validate = catalog.validate_row

        def read(body: StreamingBody, amt: int | None = None) -> bytes:
            data = original_read(body, amt)
            if id(body) in self._bodies:
                self.calls += 1
                self.bytes += len(data)
            return data

        def validate(row: Any) -> Any:
            self.validations += 1
            return original_validate(row)

        def asked(params: dict[str, Any], **_: Any) -> None:
            if str(params.get("Key", "")).startswith("catalog/incoming/"):
                self.ranges.append(params.get("Range"))
                self._catalog = True

        def answered(parsed: dict[str, Any], **_: Any) -> None:
            if getattr(self, "_catalog", False) and "Body" in parsed:
                self._bodies.add(id(parsed["Body"]))
            self._catalog = False

        monkeypatch.setattr(StreamingBody, "read", read)
        monkeypatch.setattr(catalog, "validate_row", validate)
        events = get_runtime().aws.s3.meta.events
        events.register("before-parameter-build.s3.GetObject", asked)
        events.register("after-call.s3.GetObject", answered)


# ------------------------------------------------------------------------ issue 14 item 5: streaming reads
def test_a_multi_chunk_jsonl_file_resumes_by_byte_range_and_never_rereads_earlier_rows(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a 250-row JSON Lines file and invocations that take 100 rows each
    monkeypatch.setattr(service, "ROWS_PER_INVOCATION", 100)
    rows = [_row(i) for i in range(250)]
    body = _jsonl(rows)
    offsets = [len(_jsonl(rows[:k])) for k in (0, 100, 200)]
    reads = _Reads(monkeypatch)

    # When it is uploaded and the queue is drained (continuations included)
    _put(deployment, "catalog/incoming/big.jsonl", body)
    deployment.drain_ingest_queue()

    # Then three chunks ingested every row once
    report = _get_json(deployment, "catalog/reports/big.jsonl.json")
    assert (report["chunks"], report["total"], report["accepted"], report["rejected"]) == (3, 250, 250, 0)
    assert _item_count(deployment) == 250
    # each continuation was a ranged GET starting exactly where the previous chunk's rows ended
    assert reads.ranges == [None, f"bytes={offsets[1]}-", f"bytes={offsets[2]}-"]
    # so no byte before a chunk's start was read again, in a few 1 MiB reads (not one call per byte)
    assert reads.bytes == sum(len(body) - start for start in offsets)
    assert reads.calls <= 2 * len(offsets)
    # and each row was validated once (+1 per continued chunk: the row it stopped before), not from row 0
    assert reads.validations == 250 + 2
    assert len(_deltas(deployment)) == 3


def test_a_gzipped_file_resumes_at_its_uncompressed_offset_without_revalidating(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "ROWS_PER_INVOCATION", 100)
    rows = [_row(i) for i in range(250)]
    reads = _Reads(monkeypatch)

    _put(deployment, "catalog/incoming/big.jsonl.gz", gzip.compress(_jsonl(rows)))
    deployment.drain_ingest_queue()

    report = _get_json(deployment, "catalog/reports/big.jsonl.gz.json")
    assert (report["chunks"], report["total"], report["accepted"]) == (3, 250, 250)
    assert reads.ranges == [None, None, None]  # gzip cannot seek: decompressed again, skipped unparsed
    assert reads.validations == 250 + 2


def test_the_time_budget_of_the_lambda_context_ends_a_chunk_cleanly(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given batches of 40 rows and an invocation with less time left than the ingest function keeps back
    monkeypatch.setattr(ingest_module, "ENCODE_BATCH", 40)
    rows = [_row(i) for i in range(100)]
    bucket = deployment.env["EMBREC_BUCKET"]
    etag = _put(deployment, "catalog/incoming/budget.jsonl", _jsonl(rows))
    deployment.discard_queued()
    function = deployment.function("ingest")
    handler = function.handler()
    short = dataclasses.replace(function.spec, timeout_s=59.0)  # the handler keeps 60 s back

    # When one message is handled with that context
    event = {"Records": [_record("m-0", _notification(bucket, "catalog/incoming/budget.jsonl", etag))]}
    result = handler(event, LambdaContext(short, "us-east-1"))

    # Then it stopped after its first batch, acknowledged, and handed the rest on; the rest completes
    assert result["batchItemFailures"] == []
    assert _item_count(deployment) == 40
    deployment.drain_ingest_queue()
    report = _get_json(deployment, "catalog/reports/budget.jsonl.json")
    assert (report["chunks"], report["total"], report["accepted"]) == (2, 100, 100)
    assert _item_count(deployment) == 100


# --------------------------------------------------------------- issue 14 item 5: a delta after a crash
def test_items_written_before_a_crash_reach_a_delta_on_the_retry(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an invocation that writes its items and then dies publishing the delta
    rows = [_row(i) for i in range(30)]
    bucket = deployment.env["EMBREC_BUCKET"]
    etag = _put(deployment, "catalog/incoming/crash.jsonl", _jsonl(rows))
    deployment.discard_queued()
    body = _notification(bucket, "catalog/incoming/crash.jsonl", etag)
    artifacts = get_runtime().artifacts
    publish = artifacts.publish_delta
    failures = iter([ServiceUnavailableError("s3 down")])

    def flaky_publish(*args: Any, **kwargs: Any) -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return publish(*args, **kwargs)

    monkeypatch.setattr(artifacts, "publish_delta", flaky_publish)
    assert _ingest(deployment, body) == ["m-0"]
    assert _item_count(deployment) == 30 and _deltas(deployment) == []

    # When SQS delivers the message again
    assert _ingest(deployment, body) == []

    # Then every item written under the claim is in a delta, counted accepted, not "unchanged"
    report = _get_json(deployment, "catalog/reports/crash.jsonl.json")
    assert (report["accepted"], report["unchanged"], report["encoded"]) == (30, 0, 0)
    assert len(_deltas(deployment)) == 1 and _delta_items(deployment) == 30


def test_a_duplicate_id_in_a_later_chunk_is_rejected_like_one_in_the_same_chunk(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "ROWS_PER_INVOCATION", 10)
    rows = [_row(i) for i in range(20)]
    rows[15] = {**_row(3), "title": "the same id again, other content"}
    _put(deployment, "catalog/incoming/dups.jsonl", _jsonl(rows))
    deployment.drain_ingest_queue()

    report = _get_json(deployment, "catalog/reports/dups.jsonl.json")
    assert (report["total"], report["accepted"], report["rejected"]) == (20, 19, 1)
    rejected = _lines(deployment, "catalog/rejected/dups.jsonl.part0001.jsonl")
    assert [r["line"] for r in rejected] == [16]
    assert "first at line 4" in rejected[0]["errors"][0]["reason"]
    stored = get_runtime().items.get("s-0003")
    assert stored is not None and stored.fields["title"] == "Synthetic item 3"


# ------------------------------------------------------------------- issue 15 item 2: one bad row, one row
def test_rows_that_would_crash_the_reader_or_the_batch_write_are_each_one_rejected_row(
    deployment: Deployment,
) -> None:
    deep_extra: Any = "leaf"
    for _ in range(40):
        deep_extra = [deep_extra]
    lines = [
        json.dumps(_row(0)).encode(),
        b'{"item_id": "big-price", "title": "t", "price": ' + b"9" * 400 + b"}",          # OverflowError
        b"[" * 5000 + b"]" * 5000,                                                         # RecursionError
        json.dumps({"item_id": "deep", "title": "t", "specs": deep_extra}).encode(),        # > DynamoDB depth
        json.dumps({"item_id": "wide-int", "title": "t", "sku": 10**50}).encode(),         # > 38 digits
        json.dumps({"item_id": "huge", "title": "t", "price": 1e300}).encode(),            # > 1e126
        json.dumps({"item_id": "tiny", "title": "t", "image_embedding": [1e-200, 1.0]}).encode(),
        json.dumps(_row(1)).encode(),
    ]
    bucket = deployment.env["EMBREC_BUCKET"]
    etag = _put(deployment, "catalog/incoming/hostile.jsonl", b"\n".join(lines) + b"\n")
    deployment.discard_queued()

    assert _ingest(deployment, _notification(bucket, "catalog/incoming/hostile.jsonl", etag)) == []
    report = _get_json(deployment, "catalog/reports/hostile.jsonl.json")
    assert (report["total"], report["accepted"], report["rejected"]) == (8, 2, 6)
    rejected = {r["line"]: r["errors"] for r in _lines(deployment, "catalog/rejected/hostile.jsonl.jsonl")}
    assert sorted(rejected) == [2, 3, 4, 5, 6, 7]
    assert rejected[2][0]["field"] == "price" and "range" in rejected[2][0]["reason"]
    assert "nested too deeply" in rejected[3][0]["reason"]
    assert rejected[4][0]["field"] == "specs" and "deeper" in rejected[4][0]["reason"]
    assert rejected[5][0]["field"] == "sku"
    assert rejected[6][0]["field"] == "price" and rejected[7][0]["field"] == "image_embedding"
    assert _item_count(deployment) == 2 and len(_deltas(deployment)) == 1


# ------------------------------------------------------------------ issue 15 item 5: encoder per item
def _publish_encoder_copy(deployment: Deployment, encoder_id: str, scratch: Path) -> None:
    """Publish the current encoder's files again under another id (same model, same dim) and make it
    current; the copy is linked into the runtime's cache so the test does not download 90 MB."""
    runtime = get_runtime()
    source = runtime.artifacts.fetch_encoder()
    copy = scratch / encoder_id
    copy.mkdir(parents=True)
    for path in source.iterdir():
        if path.name != ENCODER_MANIFEST:
            os.link(path, copy / path.name)
    document = json.loads((source / ENCODER_MANIFEST).read_text())
    document["encoder_id"] = encoder_id
    (copy / ENCODER_MANIFEST).write_text(json.dumps(document))
    runtime.artifacts.publish_encoder(copy)
    shutil.copytree(copy, Path(deployment.env["EMBREC_CACHE_DIR"]) / "encoder" / encoder_id,
                    copy_function=os.link)


def test_a_new_encoder_of_the_same_dim_re_encodes_an_unchanged_catalog_and_the_rebuild_refuses_mixing(
    deployment: Deployment, tmp_path: Path
) -> None:
    rows = [_row(i) for i in range(12)]
    _put(deployment, "catalog/incoming/a.jsonl", _jsonl(rows))
    deployment.drain_ingest_queue()
    original = get_runtime().artifacts.current_encoder_id()
    first = get_runtime().items.get("s-0000")
    assert first is not None and first.encoder_id == original
    try:
        # Given another encoder of the same dimension becomes current
        _publish_encoder_copy(deployment, "minilm-copy", tmp_path)

        # Then a rebuild refuses to label the old model's vectors with the new encoder's id
        with pytest.raises(CompatibilityError, match="other encoders"):
            deployment.rebuild()

        # When the same catalog is uploaded again
        _put(deployment, "catalog/incoming/b.jsonl", _jsonl(rows))
        deployment.drain_ingest_queue()

        # Then it is re-encoded (not "unchanged"), the items record the new encoder, and the rebuild runs
        report = _get_json(deployment, "catalog/reports/b.jsonl.json")
        assert (report["accepted"], report["unchanged"], report["encoded"]) == (12, 0, 12)
        again = get_runtime().items.get("s-0000")
        assert again is not None and again.encoder_id == "minilm-copy"
        assert deployment.rebuild()["items"] == 12
    finally:
        get_runtime().artifacts.put_json(CURRENT_ENCODER_KEY, {"encoder_id": original})


# ------------------------------------------------------------ issue 15 item 9: a message that never succeeds
def test_a_body_that_can_never_succeed_is_acknowledged_at_once_with_a_metric(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = _ingest(deployment, "{not json", json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}),
                     json.dumps({"embrec_continuation": {"nonsense": 1}}))

    assert failed == []  # not retried 5 times into the DLQ: nothing would change
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert sum(sum(doc.get("IngestMessagesRefused", [])) for doc in emf) == 3


# ---------------------------------------------------------- issue 15 item 14: an encoder not published yet
def test_a_missing_encoder_makes_the_message_visible_again_in_seconds(deployment: Deployment) -> None:
    # Given a stack whose encoder pointer is not there yet, and an upload in the queue
    s3, sqs = deployment.clients.s3, deployment.clients.sqs
    bucket, url = deployment.env["EMBREC_BUCKET"], deployment.env["EMBREC_INGEST_QUEUE_URL"]
    pointer = s3.get_object(Bucket=bucket, Key=CURRENT_ENCODER_KEY)["Body"].read()
    s3.delete_object(Bucket=bucket, Key=CURRENT_ENCODER_KEY)
    calls: list[dict[str, Any]] = []
    get_runtime().aws.sqs.meta.events.register(
        "before-parameter-build.sqs.ChangeMessageVisibility", lambda params, **_: calls.append(params)
    )
    try:
        _put(deployment, "catalog/incoming/early.jsonl", _jsonl([_row(0)]))
        message = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"][0]

        # When the ingest function receives it (a second time)
        record = _record("m-0", message["Body"], message["ReceiptHandle"], receive_count=2)
        failed = _failed(deployment, record)

        # Then it fails and comes back in 20 s, not after the queue's 30 minutes
        assert failed == ["m-0"]
        changed = [(call["ReceiptHandle"], call["VisibilityTimeout"]) for call in calls]
        assert changed == [(message["ReceiptHandle"], 20)]
        assert [service.encoder_retry_seconds(n) for n in (1, 2, 3, 6, 9)] == [10, 20, 40, 300, 300]
    finally:
        s3.put_object(Bucket=bucket, Key=CURRENT_ENCODER_KEY, Body=pointer)
