"""Fixtures for the local stack over HTTP: a throwaway project (template + handlers) and a running stack.

The project is written to a temp dir: a minimal SAM template in the shape of the real one (HTTP API
routes, an SQS-triggered ingest function with ReportBatchItemFailures, a ScheduleV2 rebuild, a bucket whose
``catalog/incoming/`` prefix notifies the queue, a table) and handlers that record what they receive in
``<function dir>/seen.jsonl``. The stack runs on free ports (moto included) and is stopped at teardown.
"""

from __future__ import annotations

import json
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from live_stack import Stack, start_stack

from embrec_tools.local import LocalEnvironment

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.12
    Handler: app.handler
    Timeout: 5
    MemorySize: 256
    Environment:
      Variables:
        EMBREC_BUCKET: !Ref ArtifactBucket
        EMBREC_ITEMS_TABLE: !Ref ItemsTable
        EMBREC_INGEST_QUEUE_URL: !Ref IngestQueue
Resources:
  ApiFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/api
      MemorySize: 512
      Events:
        Similar:
          Type: HttpApi
          Properties: {Method: GET, Path: "/items/{item_id}/similar"}
        Echo:
          Type: HttpApi
          Properties: {Method: POST, Path: /echo}
        Boom:
          Type: HttpApi
          Properties: {Method: GET, Path: /boom}
        Files:
          Type: HttpApi
          Properties: {Method: ANY, Path: "/files/{proxy+}"}
  PowertoolsFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/powertools
      Events:
        Hello:
          Type: HttpApi
          Properties: {Method: GET, Path: "/users/{user_id}/hello"}
  IngestFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/ingest
      Events:
        CatalogFile:
          Type: SQS
          Properties:
            Queue: !GetAtt IngestQueue.Arn
            BatchSize: 10
            FunctionResponseTypes: [ReportBatchItemFailures]
  RebuildFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/rebuild
      Events:
        Schedule:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: rate(5 minutes)
  IngestQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 1
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt IngestDeadLetterQueue.Arn
        maxReceiveCount: 3
  IngestDeadLetterQueue:
    Type: AWS::SQS::Queue
  ArtifactBucket:
    Type: AWS::S3::Bucket
    Properties:
      NotificationConfiguration:
        QueueConfigurations:
          - Event: s3:ObjectCreated:*
            Queue: !GetAtt IngestQueue.Arn
            Filter:
              S3Key:
                Rules:
                  - Name: prefix
                    Value: catalog/incoming/
  ItemsTable:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: item_id, AttributeType: S}]
      KeySchema: [{AttributeName: item_id, KeyType: HASH}]
"""

HANDLERS = {
    "api": """
        import base64
        import json
        import os

        def handler(event, context):
            if event["rawPath"] == "/boom":
                raise RuntimeError("internal detail that must not leak")
            if event["rawPath"].startswith("/files/"):
                data = base64.b64decode(event["body"]) if event.get("isBase64Encoded") else b""
                return {"statusCode": 200, "isBase64Encoded": True,
                        "headers": {"content-type": "application/octet-stream"},
                        "body": base64.b64encode(data[::-1]).decode()}
            names = ("EMBREC_BUCKET", "EMBREC_ITEMS_TABLE", "EMBREC_INGEST_QUEUE_URL", "EMBREC_AWS_ENDPOINT",
                     "AWS_ACCESS_KEY_ID")
            env = {k: os.environ.get(k) for k in names}
            headers = {"content-type": "application/json", "x-function": context.function_name}
            return {"statusCode": 200, "headers": headers,
                    "cookies": ["seen=1; Path=/"],
                    "body": json.dumps({"event": event, "env": env, "memory": context.memory_limit_in_mb})}
    """,
    "powertools": """
        from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

        app = APIGatewayHttpResolver()

        @app.get("/users/<user_id>/hello")
        def hello(user_id: str):
            return {"hello": user_id, "k": app.current_event.get_query_string_value("k")}

        def handler(event, context):
            return app.resolve(event, context)
    """,
    "ingest": """
        import json
        from pathlib import Path

        SEEN = Path(__file__).with_name("seen.jsonl")

        def handler(event, context):
            failures = []
            for record in event["Records"]:
                with SEEN.open("a") as out:
                    out.write(json.dumps(record) + "\\n")
                body = json.loads(record["body"])
                keys = [r["s3"]["object"]["key"] for r in body.get("Records", [])]
                # a file named fail-once fails on its first delivery and succeeds on the redrive
                first = record["attributes"]["ApproximateReceiveCount"] == "1"
                if first and any("fail-once" in k for k in keys):
                    failures.append({"itemIdentifier": record["messageId"]})
            return {"batchItemFailures": failures}
    """,
    "rebuild": """
        import json
        from pathlib import Path

        SEEN = Path(__file__).with_name("seen.jsonl")

        def handler(event, context):
            with SEEN.open("a") as out:
                out.write(json.dumps(event) + "\\n")
            return {"rebuilt": True}
    """,
}


def write_project(root: Path) -> Path:
    """Write the throwaway project under ``root``; returns the template path."""
    (root / "template.yaml").write_text(TEMPLATE)
    for name, source in HANDLERS.items():
        code = root / "functions" / name
        code.mkdir(parents=True)
        (code / "app.py").write_text(textwrap.dedent(source))
    return root / "template.yaml"


def seen(project: Path, function: str) -> list[dict[str, Any]]:
    """What a recording handler has received so far."""
    path = project / "functions" / function / "seen.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("local_project")
    write_project(root)
    return root


@pytest.fixture(scope="module")
def local_env(project: Path) -> Iterator[LocalEnvironment]:
    env = LocalEnvironment(project, api_port=0, aws_port=0, aws_endpoint=None, rebuild_seconds=0.3)
    with env:
        yield env
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("embrec-")]
    assert not leftover, f"threads left running: {leftover}"


@pytest.fixture(scope="module")
def stack(encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The real stack (template.yaml, real handlers) with the MovieLens slice ingested and rebuilt."""
    with start_stack(encoder_dir, tmp_path_factory.mktemp("live_stack")) as live:
        yield live


@pytest.fixture()
def read_seen() -> Callable[[Path, str], list[dict[str, Any]]]:
    """``read_seen(project, function)``: what a recording handler has received so far."""
    return seen


@pytest.fixture()
def make_project() -> Callable[[Path], Path]:
    """``make_project(root)``: write the throwaway project under ``root``; returns the template path."""
    return write_project


@pytest.fixture()
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False  # never route 127.0.0.1 through a proxy from the environment
    yield session
    session.close()


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium driven through Debian's chromedriver (selenium; no browser download)."""
    from browser import start_browser

    driver = start_browser(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()
