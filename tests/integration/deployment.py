"""The deployment the integration tests drive: the template's functions, in-process, under moto.

A :class:`World` (one per test module) holds the moto state that is costly to make: the bucket, queues and
tables created from template.yaml, and the 90 MB encoder published to S3 and fetched once. Each test gets a
fresh :class:`Deployment` over it: every table, queue and S3 object but the encoder is wiped, the runtime
and clients are reset, and the encoder is linked into the test's own artifact cache (verified on load, as a
warm container would). So tests stay independent while the encoder is uploaded once per module, not per test.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from embrec.aws import clients as aws
from embrec.aws.artifacts import ArtifactStore
from embrec.config import Settings
from embrec_tools.local.lambdas import LambdaFunction, function_specs
from embrec_tools.template import create_local_resources, load_template, settings_env

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"


class Deployment:
    """The template's functions, invoked in-process with events shaped as AWS sends them."""

    def __init__(self, env: dict[str, str], clients: aws.AwsClients) -> None:
        self.env = env
        self.clients = clients
        self.functions = {
            logical_id: LambdaFunction(spec)
            for logical_id, spec in function_specs(load_template(), ROOT).items()
        }
        self.base_http = json.loads((EVENTS / "http_api_v2.json").read_text())

    def function(self, directory: str) -> LambdaFunction:
        for fn in self.functions.values():
            if fn.spec.module_file.parent.name == directory:
                return fn
        raise KeyError(directory)

    def http(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None,
             function: str = "recommend") -> tuple[int, dict[str, Any], dict[str, str]]:
        event = copy.deepcopy(self.base_http)
        event["routeKey"] = event["requestContext"]["routeKey"] = f"{method} {path}"
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        event["requestContext"]["http"]["method"] = method
        if params:
            event["rawQueryString"] = urlencode(params)
            event["queryStringParameters"] = {k: str(v) for k, v in params.items()}
        if body is not None:
            event["body"] = json.dumps(body)
        response = self.function(function).invoke(event)
        return response["statusCode"], json.loads(response["body"]), response.get("headers", {})

    def drain_ingest_queue(self) -> list[dict[str, Any]]:
        """Receive what S3 delivered to the ingest queue and feed it to the ingest handler, as Lambda does."""
        return self._drain_into("EMBREC_INGEST_QUEUE_URL", "ingest")

    def drain_import_queue(self) -> list[dict[str, Any]]:
        """Receive what S3 (or a continuation) put on the import queue and feed it to the import handler."""
        return self._drain_into("EMBREC_IMPORT_QUEUE_URL", "import")

    def drain_erasure_queue(self) -> list[dict[str, Any]]:
        """Run the queued erasure steps (and the steps they queue) through the events handler."""
        return self._drain_into("EMBREC_ERASURE_QUEUE_URL", "events")

    def _drain_into(self, queue_variable: str, function: str) -> list[dict[str, Any]]:
        url = self.env[queue_variable]
        outcomes = []
        while True:
            received = self.clients.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            messages = received.get("Messages", [])
            if not messages:
                return outcomes
            event = {"Records": [
                {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                 "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                 "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
                 "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{url.rsplit('/', 1)[-1]}",
                 "awsRegion": "us-east-1"}
                for m in messages
            ]}
            result = self.function(function).invoke(event)
            failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
            assert not failed, f"{function} failed for {failed}"
            for m in messages:
                self.clients.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            outcomes.append(result)

    def discard_queued(self) -> None:
        """Drop what S3 has queued for ingestion (PurgeQueue is allowed once a minute, so drain instead)."""
        _drain(self.clients.sqs, self.env["EMBREC_INGEST_QUEUE_URL"])

    def rebuild(self) -> dict[str, Any]:
        return self.function("rebuild").invoke(json.loads((EVENTS / "scheduled_rebuild.json").read_text()))


@dataclass
class World:
    """Module-wide moto state: resources from the template and the published, fetched encoder."""

    clients: aws.AwsClients
    env: dict[str, str]
    encoder_id: str
    encoder_copy: Path  # a verified local copy of encoder/<id>/, hard-linked into each test's cache

    @classmethod
    def create(cls, encoder_dir: Path, scratch: Path) -> World:
        clients = aws.clients(Settings())
        template = load_template()
        env = settings_env(template, create_local_resources(template, clients))
        store = ArtifactStore(clients.s3, env["EMBREC_BUCKET"], scratch)
        encoder_id = store.publish_encoder(encoder_dir)
        return cls(clients, env, encoder_id, store.fetch_encoder(encoder_id))

    def wipe(self) -> None:
        """Back to an empty deployment (but for the published encoder)."""
        bucket = self.env["EMBREC_BUCKET"]
        s3 = self.clients.s3
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            doomed = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
                if not v["Key"].startswith("encoder/")
            ]
            if doomed:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
        dynamodb = self.clients.dynamodb
        for table in dynamodb.list_tables()["TableNames"]:
            dynamodb.delete_table(TableName=table)
        create_local_resources(load_template(), self.clients)  # the tables again, from the template
        for url in self.clients.sqs.list_queues().get("QueueUrls", []):
            _drain(self.clients.sqs, url)

    def link_encoder(self, cache_dir: Path) -> None:
        target = cache_dir / "encoder" / self.encoder_id
        target.mkdir(parents=True)
        for path in self.encoder_copy.iterdir():
            os.link(path, target / path.name)


def _drain(sqs: Any, url: str) -> None:
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        sqs.delete_message_batch(QueueUrl=url, Entries=entries)
