"""The local stack over real HTTP and a real (moto) AWS endpoint, with throwaway handlers.

Given the throwaway project of conftest.py, when the stack runs on free ports, then HTTP requests reach the
right handler with API Gateway's v2.0 event, and an S3 upload to catalog/incoming/ reaches the ingest handler
through SQS with Lambda's record shape.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
import requests

from embrec.errors import NotFoundError, ServiceUnavailableError
from embrec_tools.local import ApiGatewayServer, AwsEndpoint, LocalEnvironment, RouteTable

pytestmark = pytest.mark.timeout(120)

Seen = Callable[[Path, str], list[dict[str, Any]]]


def _eventually(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def _s3(env: LocalEnvironment) -> Any:
    return boto3.client("s3", endpoint_url=env.endpoint_url, region_name=env.region)


def test_route_dispatch_with_v2_event_and_resource_env(
    local_env: LocalEnvironment, http: requests.Session
) -> None:
    response = http.get(f"{local_env.api_url}/items/sku%201/similar?k=3&tags=a&tags=b", timeout=10)
    assert response.status_code == 200
    assert response.headers["x-function"] == "ApiFunction"
    assert response.cookies.get("seen") == "1"
    payload = response.json()
    event = payload["event"]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /items/{item_id}/similar"
    assert event["pathParameters"] == {"item_id": "sku 1"}
    assert event["queryStringParameters"] == {"k": "3", "tags": "a,b"}
    assert event["requestContext"]["http"]["method"] == "GET"
    assert event["requestContext"]["stage"] == "$default"
    assert payload["memory"] == 512
    # the handlers see the local resources and the local endpoint, with dummy credentials
    assert payload["env"] == {
        "EMBREC_BUCKET": local_env.resource_env["EMBREC_BUCKET"],
        "EMBREC_ITEMS_TABLE": local_env.resource_env["EMBREC_ITEMS_TABLE"],
        "EMBREC_INGEST_QUEUE_URL": local_env.resource_env["EMBREC_INGEST_QUEUE_URL"],
        "EMBREC_AWS_ENDPOINT": local_env.endpoint_url,
        "AWS_ACCESS_KEY_ID": "test",
    }
    assert local_env.settings.aws_endpoint == local_env.endpoint_url


def test_powertools_resolver_handler_works_behind_the_emulator(
    local_env: LocalEnvironment, http: requests.Session
) -> None:
    response = http.get(f"{local_env.api_url}/users/alice/hello?k=7", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"hello": "alice", "k": "7"}


def test_json_post_body_reaches_the_handler_as_text(
    local_env: LocalEnvironment, http: requests.Session
) -> None:
    response = http.post(f"{local_env.api_url}/echo", json={"events": [1, 2]}, timeout=10)
    event = response.json()["event"]
    assert event["isBase64Encoded"] is False
    assert json.loads(event["body"]) == {"events": [1, 2]}
    assert event["headers"]["content-type"] == "application/json"
    assert event["headers"]["content-length"] == str(len(response.request.body or b""))
    assert event["headers"]["x-forwarded-for"] == "127.0.0.1"


def test_binary_body_round_trips_through_base64(local_env: LocalEnvironment, http: requests.Session) -> None:
    data = bytes(range(256))
    response = http.put(
        f"{local_env.api_url}/files/a/b.bin",
        data=data,
        headers={"content-type": "application/octet-stream"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.content == data[::-1]


def test_errors_are_json_without_internals(local_env: LocalEnvironment, http: requests.Session) -> None:
    missing = http.get(f"{local_env.api_url}/nowhere", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"

    boom = http.get(f"{local_env.api_url}/boom", timeout=10)
    assert boom.status_code == 500
    assert boom.json()["error"] == "internal_error"
    assert "internal detail" not in boom.text and "Traceback" not in boom.text

    too_big = http.post(f"{local_env.api_url}/echo", data=b"x" * (256 * 1024 + 1), timeout=10)
    assert too_big.status_code == 413
    assert too_big.json()["error"] == "payload_too_large"


def test_s3_upload_reaches_the_ingest_handler_through_sqs(
    local_env: LocalEnvironment, project: Path, read_seen: Seen
) -> None:
    # Given the bucket notifies the queue for catalog/incoming/ only
    s3 = _s3(local_env)
    bucket = local_env.resource_env["EMBREC_BUCKET"]
    # When a catalog file and an unrelated object are uploaded
    s3.put_object(Bucket=bucket, Key="catalog/rejected/not-a-trigger.jsonl", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="catalog/incoming/items.jsonl", Body=b'{"item_id": "1", "title": "t"}\n')
    assert local_env.wait_for_ingest(timeout=30)

    # Then the ingest handler got the upload as an SQS record, in Lambda's shape
    def keys() -> list[str]:
        out = []
        for record in read_seen(project, "ingest"):
            # S3 event keys are URL-encoded (AWS: form encoding; moto also encodes "/")
            out += [
                unquote_plus(r["s3"]["object"]["key"]) for r in json.loads(record["body"]).get("Records", [])
            ]
        return out

    assert _eventually(lambda: "catalog/incoming/items.jsonl" in keys())
    assert "catalog/rejected/not-a-trigger.jsonl" not in keys()
    record = next(r for r in read_seen(project, "ingest") if "items.jsonl" in r["body"])
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].endswith(":embrec-ingest")
    assert record["awsRegion"] == local_env.region
    assert {"messageId", "receiptHandle", "md5OfBody", "messageAttributes"} <= set(record)
    assert {"ApproximateReceiveCount", "SentTimestamp"} <= set(record["attributes"])
    # s3:TestEvent (sent when the notification is configured) passes through to the handler, as in AWS
    assert any(json.loads(r["body"]).get("Event") == "s3:TestEvent" for r in read_seen(project, "ingest"))


def test_failed_record_is_redriven_and_then_deleted(
    local_env: LocalEnvironment, project: Path, read_seen: Seen
) -> None:
    s3 = _s3(local_env)
    s3.put_object(
        Bucket=local_env.resource_env["EMBREC_BUCKET"], Key="catalog/incoming/fail-once.jsonl", Body=b"{}"
    )

    def deliveries() -> list[str]:
        return [
            r["attributes"]["ApproximateReceiveCount"]
            for r in read_seen(project, "ingest")
            if "fail-once" in r["body"]
        ]

    # first delivery reported as failed, left on the queue; after the visibility timeout it comes back
    assert _eventually(lambda: deliveries()[:2] == ["1", "2"], timeout=30)
    assert local_env.wait_for_ingest(timeout=30)  # the second delivery succeeded and was deleted
    assert deliveries() == ["1", "2"]


def test_schedule_runs_the_rebuild_and_trigger_runs_it_now(
    local_env: LocalEnvironment, project: Path, read_seen: Seen
) -> None:
    assert local_env.trigger_rebuild() == {"rebuilt": True}
    assert _eventually(lambda: len(read_seen(project, "rebuild")) >= 3)  # the timer runs every 0.3 s here
    event = read_seen(project, "rebuild")[0]
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.scheduler"
    assert event["resources"][0].endswith(":schedule/default/Schedule")


def test_stop_releases_ports_threads_and_environment(
    tmp_path: Path, make_project: Callable[[Path], Path]
) -> None:
    make_project(tmp_path)
    before = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "EMBREC_BUCKET", "EMBREC_AWS_ENDPOINT")}
    threads_before = set(threading.enumerate())
    env = LocalEnvironment(tmp_path, api_port=0, aws_port=0, aws_endpoint=None, schedule=False)
    assert not env.ready
    env.start()
    assert env.ready
    assert env.api is not None and env.endpoint is not None
    ports = [env.api.port, env.endpoint.port]
    assert os.environ["AWS_ACCESS_KEY_ID"] == "test"
    env.stop()
    env.stop()  # idempotent
    assert not env.ready
    assert {k: os.environ.get(k) for k in before} == before
    assert not [t.name for t in set(threading.enumerate()) - threads_before if t.name.startswith("embrec-")]
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"


def test_prepare_runs_once_the_resources_exist_and_before_the_api_or_the_pollers(
    tmp_path: Path, make_project: Callable[[Path], Path]
) -> None:
    # `embrec local up` publishes the encoder here: a stack that answers /health can take an upload at once
    make_project(tmp_path)
    seen: list[tuple[bool, int, bool]] = []

    def prepare(settings: Any) -> None:
        s3 = boto3.client("s3", endpoint_url=settings.aws_endpoint, region_name=settings.region)
        s3.put_object(Bucket=settings.bucket, Key="encoder/current.json", Body=b'{"encoder_id": "e"}')
        # moto's state is per process: earlier tests' objects may share the bucket, so look for ours
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=settings.bucket)["Contents"]}
        seen.append((env.api is None, len(env.pollers), "encoder/current.json" in keys))

    env = LocalEnvironment(
        tmp_path, api_port=0, aws_port=0, aws_endpoint=None, schedule=False, prepare=prepare
    )
    with env:
        assert env.ready and env.api is not None and env.pollers
    assert seen == [(True, 0, True)]


def test_start_without_template_fails_cleanly(tmp_path: Path) -> None:
    threads_before = set(threading.enumerate())
    env = LocalEnvironment(tmp_path, api_port=0, aws_port=0, aws_endpoint=None)
    with pytest.raises(NotFoundError):
        env.start()
    assert not env.ready
    assert set(threading.enumerate()) <= threads_before


def test_failure_after_the_endpoint_started_tears_everything_down(
    tmp_path: Path, make_project: Callable[[Path], Path]
) -> None:
    make_project(tmp_path)
    threads_before = set(threading.enumerate())
    key_before = os.environ.get("AWS_ACCESS_KEY_ID")

    def broken_provisioner(template: Any, clients: Any, region: str) -> Any:
        raise RuntimeError("provisioning failed")

    env = LocalEnvironment(tmp_path, api_port=0, aws_port=0, aws_endpoint=None, provision=broken_provisioner)
    with pytest.raises(RuntimeError, match="provisioning failed"):
        env.start()
    assert not env.ready
    assert os.environ.get("AWS_ACCESS_KEY_ID") == key_before
    # Per-connection handler threads of a stopped server end when their client closes (keep-alive); what
    # must not survive is anything the environment itself started (its threads are named "embrec-...").
    def lingering() -> list[str]:
        return [t.name for t in set(threading.enumerate()) - threads_before if t.name.startswith("embrec-")]

    assert _eventually(lambda: not lingering(), timeout=5), lingering()


def test_busy_ports_fail_with_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServiceUnavailableError, match="EMBREC_PORT"):
            ApiGatewayServer(RouteTable([]), lambda name: None, port=port)  # type: ignore[arg-type,return-value]
        with pytest.raises(ServiceUnavailableError, match="EMBREC_AWS_PORT"):
            AwsEndpoint(port=port).start()


@pytest.mark.parametrize(
    ("signum", "sigint_ignored"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["ctrl-c", "sigterm", "ctrl-c-started-with-sigint-ignored"],
)
def test_serve_forever_stops_cleanly_on_ctrl_c_and_sigterm(
    tmp_path: Path, make_project: Callable[[Path], Path], signum: int, sigint_ignored: bool
) -> None:
    make_project(tmp_path)
    # A background job (or a parent that ignores SIGINT) hands the process SIGINT ignored, and then Python
    # never raises KeyboardInterrupt: serve_forever must still stop on Ctrl-C.
    ignore = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n" if sigint_ignored else ""
    script = ignore + (
        "import sys\n"
        "from pathlib import Path\n"
        "from embrec_tools.local import LocalEnvironment\n"
        "env = LocalEnvironment(Path(sys.argv[1]), api_port=0, aws_port=0, aws_endpoint=None).start()\n"
        "env.serve_forever(lambda: print(env.api_url, flush=True))\n"
        "print('stopped', env.ready, flush=True)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        api_url = child.stdout.readline().strip()
        assert api_url.startswith("http://127.0.0.1:")  # printed once Ctrl-C / SIGTERM stop it cleanly
        child.send_signal(signum)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert out.strip() == "stopped False"
