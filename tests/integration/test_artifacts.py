"""S3 artifacts against moto: publish, pointer swap races, verified loads, warm refresh, deltas, pruning."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

from embrec.aws.artifacts import (
    CURRENT_INDEX_KEY,
    READ_CURRENT,
    ArtifactStore,
    LiveArtifact,
    Pointer,
    WatchedJson,
    content_version,
)
from embrec.aws.clients import MAX_ATTEMPTS, AwsClients
from embrec.config import Settings
from embrec.errors import EmbrecError, IntegrityError, NotFoundError, ServiceUnavailableError
from embrec.manifest import write_json

T0 = 1_780_000_000_000  # epoch ms


@pytest.fixture
def store(aws_clients: AwsClients, settings: Settings) -> ArtifactStore:
    return ArtifactStore(aws_clients.s3, settings.bucket, settings.cache_dir)


def _build(root: Path, label: str, *, created_at: str = "2026-11-29T20:00:00Z") -> Path:
    """A fake version directory: a few files in sub-directories, one with its own manifest."""
    directory = root / f"build-{label}-{created_at[-9:-1].replace(':', '')}"
    (directory / "index").mkdir(parents=True)
    (directory / "signals").mkdir()
    (directory / "index" / "graph.bin").write_bytes(f"graph {label}".encode() * 100)
    (directory / "signals" / "signals.npz").write_bytes(f"signals {label}".encode())
    write_json(directory / "index" / "manifest.json", {"dim": 8, "label": label, "created_at": created_at})
    return directory


def _keys(aws_clients: AwsClients, settings: Settings, prefix: str = "") -> dict[str, Any]:
    pages = aws_clients.s3.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket, Prefix=prefix)
    return {o["Key"]: o["LastModified"] for page in pages for o in page.get("Contents", [])}


def _load_files(directory: Path, manifest: Mapping[str, Any]) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in manifest["files"]}


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _count_calls(client: Any, operation: str, key: str) -> list[str]:
    calls: list[str] = []

    def hook(params: Mapping[str, Any], **_: Any) -> None:
        if params.get("Key") == key:
            calls.append(str(params.get("IfNoneMatch", "")))

    client.meta.events.register(f"provide-client-params.s3.{operation}", hook)
    return calls


def _raw(body: bytes) -> Any:
    class Raw:
        def stream(self, **_: Any) -> Any:
            yield body

    return Raw()


def _s3_error_response(request: Any, status: int, code: str) -> AWSResponse:
    body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
    return AWSResponse(request.url, status, HTTPHeaders(), _raw(body))


def _flip_byte(aws_clients: AwsClients, settings: Settings, key: str) -> None:
    body = bytearray(aws_clients.s3.get_object(Bucket=settings.bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    aws_clients.s3.put_object(Bucket=settings.bucket, Key=key, Body=bytes(body))


# -------------------------------------------------------------------------------------------- publish


def test_moto_enforces_conditional_puts(
    aws_clients: AwsClients, settings: Settings, store: ArtifactStore
) -> None:
    # The whole publish protocol rests on this (moto >= 5.2.5): IfNoneMatch and IfMatch are checked.
    from embrec.errors import ConflictError

    etag = store.put_json("probe.json", {"a": 1}, if_none_match=True)
    with pytest.raises(ConflictError):
        store.put_json("probe.json", {"a": 2}, if_none_match=True)
    with pytest.raises(ConflictError):
        store.put_json("probe.json", {"a": 2}, if_match='"not-the-etag"')
    store.put_json("probe.json", {"a": 3}, if_match=etag)
    assert store.get_json("probe.json", if_none_match=etag) is not None
    found = store.get_json("probe.json")
    assert found is not None and found[0] == {"a": 3}
    assert store.get_json("probe.json", if_none_match=found[1]) is None  # 304


def test_publish_uploads_every_file_then_manifest_then_pointer(
    tmp_path: Path, store: ArtifactStore, aws_clients: AwsClients, settings: Settings
) -> None:
    build = _build(tmp_path, "one")
    order: list[str] = []
    aws_clients.s3.meta.events.register(
        "provide-client-params.s3.PutObject", lambda params, **_: order.append(params["Key"])
    )

    result = store.publish_version(build, items_as_of=T0, base=None)

    assert result.status == "published" and result.won
    assert result.version == content_version(build)
    prefix = f"index/{result.version}/"
    assert sorted(result.manifest["files"]) == [
        "index/graph.bin",
        "index/manifest.json",
        "signals/signals.npz",
    ]
    assert result.manifest["items_as_of"] == T0
    assert order[-2:] == [prefix + "manifest.json", CURRENT_INDEX_KEY]
    pointer = store.read_current()
    assert pointer is not None and pointer.version == result.version and pointer.etag == result.pointer_etag
    directory, manifest = store.download_version(result.version)
    assert _load_files(directory, manifest) == _load_files(build, result.manifest)


def test_rerun_of_the_same_build_changes_nothing(
    tmp_path: Path, store: ArtifactStore, aws_clients: AwsClients, settings: Settings
) -> None:
    first = store.publish_version(_build(tmp_path, "same"), items_as_of=T0, base=None)
    before = _keys(aws_clients, settings)

    # Same content, built again later: another created_at in the inner manifest, a later scan start
    again = _build(tmp_path, "same", created_at="2026-11-29T21:00:01Z")
    second = store.publish_version(again, items_as_of=T0 + 60_000, base=store.read_current())

    assert second.version == first.version
    assert second.status == "unchanged"
    assert _keys(aws_clients, settings) == before  # no object written or rewritten
    assert second.manifest["items_as_of"] == T0  # the published manifest stands


def test_identical_build_already_uploaded_but_not_current_is_swapped_in_without_reupload(
    tmp_path: Path, store: ArtifactStore, aws_clients: AwsClients, settings: Settings
) -> None:
    old = store.publish_version(_build(tmp_path, "a"), items_as_of=T0, base=None)
    new = store.publish_version(_build(tmp_path, "b"), items_as_of=T0 + 1, base=store.read_current())
    version_keys = _keys(aws_clients, settings, f"index/{old.version}/")

    # Roll back to "a" by publishing the identical build again
    again = store.publish_version(_build(tmp_path / "x", "a"), items_as_of=T0 + 2, base=store.read_current())

    assert again.status == "published" and again.version == old.version != new.version
    assert _keys(aws_clients, settings, f"index/{old.version}/") == version_keys
    pointer = store.read_current()
    assert pointer is not None and pointer.version == old.version


def test_pointer_swap_with_a_stale_base_loses(tmp_path: Path, store: ArtifactStore) -> None:
    first = store.publish_version(_build(tmp_path, "a"), items_as_of=T0, base=None)
    stale = store.read_current()
    winner = store.publish_version(_build(tmp_path, "b"), items_as_of=T0 + 1, base=stale)

    loser = store.publish_version(_build(tmp_path, "c"), items_as_of=T0 + 2, base=stale)

    assert first.won and winner.won
    assert loser.status == "lost_race" and not loser.won
    pointer = store.read_current()
    assert pointer is not None and pointer.version == winner.version
    # A first-ever publish racing an existing pointer loses too (IfNoneMatch)
    assert store.publish_version(_build(tmp_path, "d"), items_as_of=T0, base=None).status == "lost_race"


def test_a_409_conflict_on_the_pointer_swap_is_a_lost_race(
    tmp_path: Path, store: ArtifactStore, aws_clients: AwsClients
) -> None:
    base = store.publish_version(_build(tmp_path, "a"), items_as_of=T0, base=None)

    def conflict(params: Mapping[str, Any], **_: Any) -> Any:
        # S3 answers 409 ConditionalRequestConflict to one of two simultaneous conditional writes.
        if str(params.get("url_path", "")).endswith("/" + CURRENT_INDEX_KEY):  # the serialised request
            error = {"Code": "ConditionalRequestConflict", "Message": "injected"}
            return AWSResponse("", 409, HTTPHeaders(), _raw(b"")), {
                "Error": error,
                "ResponseMetadata": {"HTTPStatusCode": 409},
            }
        return None

    aws_clients.s3.meta.events.register("before-call.s3.PutObject", conflict)
    result = store.publish_version(_build(tmp_path, "b"), items_as_of=T0 + 1, base=store.read_current())

    assert result.status == "lost_race"
    pointer = store.read_current()
    assert pointer is not None and pointer.version == base.version


@pytest.mark.parametrize("existing", [False, True])
def test_two_concurrent_rebuilds_swap_the_pointer_exactly_once(
    tmp_path: Path, store: ArtifactStore, aws_clients: AwsClients, existing: bool
) -> None:
    # S3 makes a conditional write atomic; moto in-process checks then sets, so serialise its PutObject the
    # way the real service does (the race between the two publishers is otherwise untouched).
    put, lock = aws_clients.s3.put_object, threading.Lock()

    def atomic_put(**kwargs: Any) -> Any:
        with lock:
            return put(**kwargs)

    aws_clients.s3.put_object = atomic_put
    base = store.publish_version(_build(tmp_path, "base"), items_as_of=T0, base=None) if existing else None
    pointer = store.read_current() if existing else None
    assert (pointer is None) != existing
    builds = [_build(tmp_path, f"race-{i}") for i in range(2)]
    barrier = threading.Barrier(2)
    results: list[Any] = [None, None]

    def rebuild(i: int) -> None:
        barrier.wait()
        results[i] = store.publish_version(builds[i], items_as_of=T0 + 10, base=pointer)

    threads = [threading.Thread(target=rebuild, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = sorted(r.status for r in results)
    assert statuses == ["lost_race", "published"]
    winner = next(r for r in results if r.won)
    live = store.read_current()
    assert live is not None and live.version == winner.version
    assert live.document["previous"] == (base.version if base else None)


def test_publish_with_read_current_reads_the_pointer(tmp_path: Path, store: ArtifactStore) -> None:
    assert store.publish_version(_build(tmp_path, "a"), items_as_of=T0, base=READ_CURRENT).won
    assert store.publish_version(_build(tmp_path, "b"), items_as_of=T0, base=READ_CURRENT).won


# -------------------------------------------------------------------------------------------- loading


def _live(
    store: ArtifactStore, clock: _Clock, events: list[tuple[str, dict[str, Any]]], **kwargs: Any
) -> Any:
    def load(directory: Path, manifest: Mapping[str, Any]) -> dict[str, bytes]:
        return _load_files(directory, manifest)

    return LiveArtifact(
        store,
        load,
        refresh_seconds=10.0,
        on_event=lambda name, fields: events.append((name, dict(fields))),
        clock=clock,
        **kwargs,
    )


def test_cold_load_verifies_and_serves_the_current_version(tmp_path: Path, store: ArtifactStore) -> None:
    build = _build(tmp_path, "a")
    published = store.publish_version(build, items_as_of=T0, base=None)
    events: list[tuple[str, dict[str, Any]]] = []

    loaded = _live(store, _Clock(), events).get()

    assert loaded.version == published.version
    assert loaded.value == _load_files(build, published.manifest)
    assert loaded.directory.is_dir() and loaded.items_as_of == T0
    assert [name for name, _ in events] == ["loaded"]


def test_cold_load_without_a_published_index_is_not_found(store: ArtifactStore) -> None:
    with pytest.raises(NotFoundError):
        _live(store, _Clock(), []).get()


def test_corrupt_object_is_refused_on_cold_load(
    tmp_path: Path, store: ArtifactStore, aws_clients: AwsClients, settings: Settings
) -> None:
    published = store.publish_version(_build(tmp_path, "a"), items_as_of=T0, base=None)
    _flip_byte(aws_clients, settings, f"index/{published.version}/index/graph.bin")

    with pytest.raises(IntegrityError):
        _live(store, _Clock(), []).get()
    # Nothing unverified is left in the cache for a later load to trust
    assert not (Path(settings.cache_dir) / "index" / published.version).exists()


def test_warm_container_checks_at_most_every_interval_and_swaps_to_a_new_version(
    tmp_path: Path, store: ArtifactStore, aws_clients: AwsClients
) -> None:
    store.publish_version(_build(tmp_path, "a"), items_as_of=T0, base=None)
    clock, events = _Clock(), list[tuple[str, dict[str, Any]]]()
    live = _live(store, clock, events)
    first = live.get()
    pointer_reads = _count_calls(aws_clients.s3, "GetObject", CURRENT_INDEX_KEY)

    clock.now += 5
    assert live.get() is first and pointer_reads == []  # inside the interval: no S3 call at all
    clock.now += 10
    assert live.get() is first and len(pointer_reads) == 1 and pointer_reads[0]  # conditional GET: 304

    new_build = _build(tmp_path, "b")
    second = store.publish_version(new_build, items_as_of=T0 + 1, base=store.read_current())
    clock.now += 10
    served = live.get()

    assert served.version == second.version
    assert served.value == _load_files(new_build, second.manifest)
    assert first.value != served.value  # the old object is untouched: a request holding it finishes fine
    assert [name for name, _ in events] == ["loaded", "loaded"]


def test_warm_container_refuses_a_corrupt_new_version_and_keeps_the_old(
    tmp_path: Path, store: ArtifactStore, aws_clients: AwsClients, settings: Settings
) -> None:
    store.publish_version(_build(tmp_path, "a"), items_as_of=T0, base=None)
    clock, events = _Clock(), list[tuple[str, dict[str, Any]]]()
    applied: list[str] = []
    live = _live(
        store, clock, events, apply_delta=lambda _, d: applied.append((d / "delta.npz").read_text())
    )
    first = live.get()
    bad = store.publish_version(_build(tmp_path, "b"), items_as_of=T0 + 1, base=store.read_current())
    _flip_byte(aws_clients, settings, f"index/{bad.version}/signals/signals.npz")
    store.publish_delta(_delta(tmp_path, "new", "upsert:new-item"), now_ms=T0 + 2)

    clock.now += 11
    served = live.get()

    assert served.version == first.version and served.value is first.value
    assert ("refused", bad.version) in [(n, f.get("version")) for n, f in events]
    assert [f["reason"] for n, f in events if n == "refused"] == ["IntegrityError"]
    # The deltas published for the version it serves keep flowing: a new item, then a tombstone
    assert applied == ["upsert:new-item"]
    store.publish_delta(_delta(tmp_path, "gone", "delete:old-item"), now_ms=T0 + 3)
    clock.now += 11
    served = live.get()
    assert served.version == first.version and applied == ["upsert:new-item", "delete:old-item"]
    # The refused version is not downloaded again at every check
    clock.now += 11
    assert live.get().version == first.version and [n for n, _ in events].count("refused") == 1


def test_a_manifest_naming_a_path_outside_the_version_is_refused_before_download(
    tmp_path: Path, store: ArtifactStore, aws_clients: AwsClients, settings: Settings
) -> None:
    name = "../../escaped.bin"
    published = store.publish_version(_build(tmp_path, "a"), items_as_of=T0, base=None)
    key = f"index/{published.version}/manifest.json"
    manifest = json.loads(aws_clients.s3.get_object(Bucket=settings.bucket, Key=key)["Body"].read())
    manifest["files"][name] = manifest["files"].pop("index/graph.bin")
    aws_clients.s3.put_object(Bucket=settings.bucket, Key=key, Body=json.dumps(manifest).encode())
    gets = _count_calls(aws_clients.s3, "GetObject", f"index/{published.version}/{name}")

    with pytest.raises(IntegrityError, match="unsafe file path"):
        store.download_version(published.version)
    with pytest.raises(IntegrityError, match="unsafe file path"):
        store.download_version("../../elsewhere")
    assert gets == [] and not list(Path(settings.cache_dir).parent.rglob("escaped.bin"))


def test_transient_503s_at_cold_start_are_retried_and_absorbed(
    tmp_path: Path, store: ArtifactStore, aws_clients: AwsClients
) -> None:
    build = _build(tmp_path, "a")
    published = store.publish_version(build, items_as_of=T0, base=None)
    failures = {"left": MAX_ATTEMPTS - 1}  # every retry but the last attempt answered 503 SlowDown

    def slow_down(request: Any, **_: Any) -> AWSResponse | None:
        if failures["left"] > 0 and "graph.bin" in request.url:
            failures["left"] -= 1
            return _s3_error_response(request, 503, "SlowDown")
        return None

    aws_clients.s3.meta.events.register("before-send.s3.GetObject", slow_down)
    loaded = _live(store, _Clock(), []).get()

    assert failures["left"] == 0
    assert loaded.value == _load_files(build, published.manifest)


def test_s3_unavailable_after_retries_is_service_unavailable(
    tmp_path: Path, store: ArtifactStore, aws_clients: AwsClients
) -> None:
    store.publish_version(_build(tmp_path, "a"), items_as_of=T0, base=None)
    aws_clients.s3.meta.events.register(
        "before-send.s3.GetObject", lambda request, **_: _s3_error_response(request, 503, "SlowDown")
    )
    with pytest.raises(ServiceUnavailableError):
        _live(store, _Clock(), []).get()


# -------------------------------------------------------------------------------------------- deltas


def _delta(root: Path, name: str, payload: str) -> Path:
    directory = root / f"delta-{name}"
    directory.mkdir(parents=True)
    (directory / "delta.npz").write_bytes(payload.encode())
    from embrec.manifest import describe_files

    write_json(directory / "manifest.json", {"dim": 8, "files": describe_files(directory, ["delta.npz"])})
    return directory


def test_deltas_publish_list_fetch(tmp_path: Path, store: ArtifactStore) -> None:
    first = store.publish_delta(_delta(tmp_path, "1", "up:a"), now_ms=T0 + 1)
    second = store.publish_delta(_delta(tmp_path, "2", "up:b"), now_ms=T0 + 2)
    store.put_bytes(f"deltas/{T0 + 3:013d}-incomplete/delta.npz", b"no manifest yet")

    assert first.startswith(f"deltas/{T0 + 1:013d}-") and first.endswith("/")
    assert [r.prefix for r in store.list_deltas(T0)] == [first, second]
    assert [r.prefix for r in store.list_deltas(T0 + 2)] == [second]
    assert store.list_deltas(T0 + 3) == []
    fetched = store.fetch_delta(second)
    assert (fetched / "delta.npz").read_text() == "up:b"


def test_corrupt_delta_is_refused(
    tmp_path: Path, store: ArtifactStore, aws_clients: AwsClients, settings: Settings
) -> None:
    prefix = store.publish_delta(_delta(tmp_path, "1", "up:a"), now_ms=T0)
    _flip_byte(aws_clients, settings, prefix + "delta.npz")
    with pytest.raises(IntegrityError):
        store.fetch_delta(prefix)


def test_container_applies_deltas_since_items_as_of_in_order_and_remembers(
    tmp_path: Path, store: ArtifactStore
) -> None:
    store.publish_delta(_delta(tmp_path, "old", "before-the-scan"), now_ms=T0 - 1)
    store.publish_version(_build(tmp_path, "a"), items_as_of=T0, base=None)
    store.publish_delta(_delta(tmp_path, "1", "one"), now_ms=T0)
    store.publish_delta(_delta(tmp_path, "2", "two"), now_ms=T0 + 5)
    applied: list[str] = []

    def apply(value: Any, directory: Path) -> None:
        applied.append((directory / "delta.npz").read_text())

    clock, events = _Clock(), list[tuple[str, dict[str, Any]]]()
    live = _live(store, clock, events, apply_delta=apply)
    loaded = live.get()

    assert applied == ["one", "two"]
    assert len(loaded.applied_deltas) == 2 and loaded.last_delta == loaded.applied_deltas[-1]

    # A new delta is picked up at the next check, even though the pointer answers 304
    store.publish_delta(_delta(tmp_path, "3", "three"), now_ms=T0 + 9)
    clock.now += 11
    assert live.get().last_delta is not None
    assert applied == ["one", "two", "three"]
    clock.now += 11
    live.get()
    assert applied == ["one", "two", "three"]  # nothing re-applied


# -------------------------------------------------------------------------------------------- pruning


def test_prune_keeps_the_newest_and_the_current_and_old_deltas_go(
    tmp_path: Path, store: ArtifactStore, aws_clients: AwsClients, settings: Settings
) -> None:
    versions = []
    for i in range(4):
        published = store.publish_version(
            _build(tmp_path, f"v{i}"), items_as_of=T0 + i * 3_600_000, base=READ_CURRENT, now_ms=T0 + i
        )
        versions.append(published.version)
    # Roll the pointer back to v1: the current version must survive any prune
    pointer = store.read_current()
    assert pointer is not None
    store.put_json(CURRENT_INDEX_KEY, {"version": versions[1], "items_as_of": T0}, if_match=pointer.etag)
    old_delta = store.publish_delta(_delta(tmp_path, "old", "x"), now_ms=T0 - 3_600_000)
    kept_delta = store.publish_delta(_delta(tmp_path, "new", "y"), now_ms=T0 + 3_600_000)
    store.put_bytes("index/v-inflight/index/graph.bin", b"a rebuild still uploading")

    result = store.prune_versions(keep=2)

    assert sorted(result.kept) == sorted([versions[3], versions[2], versions[1]])
    assert result.deleted_versions == [versions[0]]
    assert result.deleted_deltas == [old_delta]
    remaining = _keys(aws_clients, settings)
    assert not any(k.startswith(f"index/{versions[0]}/") for k in remaining)
    assert any(k.startswith(kept_delta) for k in remaining)
    assert "index/v-inflight/index/graph.bin" in remaining  # young incomplete version left alone
    later = store.prune_versions(keep=2, now=4_000_000_000.0)
    assert "v-inflight" in later.deleted_versions


# -------------------------------------------------------------------------------------------- encoder, json


def _encoder_dir(root: Path) -> Path:
    directory = root / "encoder-build"
    directory.mkdir()
    (directory / "model.onnx").write_bytes(b"onnx" * 1000)
    (directory / "tokenizer.json").write_text('{"vocab": {}}')
    from embrec.manifest import describe_files

    files = describe_files(directory, ["model.onnx", "tokenizer.json"])
    write_json(directory / "encoder.json", {"encoder_id": "minilm-fp32-abc", "dim": 384, "files": files})
    return directory


def test_encoder_publish_and_fetch(
    tmp_path: Path, store: ArtifactStore, aws_clients: AwsClients, settings: Settings
) -> None:
    built = _encoder_dir(tmp_path)
    assert store.publish_encoder(built) == "minilm-fp32-abc"
    assert store.publish_encoder(built) == "minilm-fp32-abc"  # re-publish: idempotent
    assert store.current_encoder_id() == "minilm-fp32-abc"

    fetched = store.fetch_encoder()
    assert (fetched / "model.onnx").read_bytes() == (built / "model.onnx").read_bytes()
    assert json.loads((fetched / "encoder.json").read_text())["dim"] == 384

    _flip_byte(aws_clients, settings, "encoder/minilm-fp32-abc/model.onnx")
    (Path(settings.cache_dir) / "encoder" / "minilm-fp32-abc" / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(IntegrityError):
        store.fetch_encoder("minilm-fp32-abc")


@pytest.mark.parametrize(
    ("manifest_key", "fetch"),
    [
        ("index/v-empty/manifest.json", lambda s: s.download_version("v-empty")),
        (f"deltas/{T0:013d}-empty/manifest.json", lambda s: s.fetch_delta(f"deltas/{T0:013d}-empty/")),
        ("encoder/e-empty/encoder.json", lambda s: s.fetch_encoder("e-empty")),
    ],
)
def test_one_fetch_protocol_refuses_a_manifest_listing_no_files(
    store: ArtifactStore, manifest_key: str, fetch: Any
) -> None:
    # Versions, deltas and encoders share one reader: an empty file list is refused for each alike (the
    # version reader used to accept it while the encoder reader refused it), and so is a manifest that is
    # not JSON.
    store.put_json(manifest_key, {"files": {}, "encoder_id": "e-empty"})
    with pytest.raises(IntegrityError, match="lists no files"):
        fetch(store)
    store.put_bytes(manifest_key, b"{not json")
    with pytest.raises(IntegrityError, match="not valid JSON"):
        fetch(store)


def test_watched_json_refreshes_by_etag(store: ArtifactStore, aws_clients: AwsClients) -> None:
    clock = _Clock()
    watched = WatchedJson(
        store, "config/experiments.json", refresh_seconds=30, default={"experiments": []}, clock=clock
    )
    assert watched.get() == {"experiments": []}  # absent: the default

    store.put_json("config/experiments.json", {"experiments": ["a"]})
    assert watched.get() == {"experiments": []}  # inside the interval
    clock.now += 31
    assert watched.get() == {"experiments": ["a"]}
    reads = _count_calls(aws_clients.s3, "GetObject", "config/experiments.json")
    clock.now += 31
    assert watched.get() == {"experiments": ["a"]}
    assert len(reads) == 1 and reads[0]  # a conditional GET, answered 304


def test_json_and_lines_helpers(store: ArtifactStore) -> None:
    key = store.report_key("catalog/incoming/a.jsonl")
    assert key == "catalog/reports/catalog/incoming/a.jsonl.json"
    store.put_json(key, {"rows": 3})
    found = store.get_json(key)
    assert found is not None and found[0] == {"rows": 3}
    rejected = store.rejected_key("catalog/incoming/a.jsonl")
    store.put_lines(rejected, [{"line": 2, "errors": ["title: required"]}, {"line": 5, "errors": []}])
    body = store.get_bytes(rejected)
    assert body is not None and [json.loads(x)["line"] for x in body[0].splitlines()] == [2, 5]
    with pytest.raises(NotFoundError):
        store.get_json("catalog/reports/missing.json")


def test_pointer_type_is_what_read_current_returns(tmp_path: Path, store: ArtifactStore) -> None:
    assert store.read_current() is None
    store.publish_version(_build(tmp_path, "a"), items_as_of=T0, base=None)
    assert isinstance(store.read_current(), Pointer)


_ = Callable  # keep the import for readers of the helper signatures


def test_large_files_go_multipart_with_the_same_guarantees(
    tmp_path: Path, store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import embrec.aws.artifacts as artifacts

    monkeypatch.setattr(artifacts, "_PART_SIZE", 5 * 1024 * 1024)  # S3's smallest part
    monkeypatch.setattr(artifacts, "_MAX_PUT", 5 * 1024 * 1024)
    build = _build(tmp_path, "big")
    payload = bytes(range(256)) * (11 * 1024 * 4)  # 11 MiB: three parts
    (build / "index" / "graph.bin").write_bytes(payload)

    published = store.publish_version(build, items_as_of=T0, base=None)
    directory, _ = store.download_version(published.version)

    assert (directory / "index" / "graph.bin").read_bytes() == payload
    again = store.publish_version(build, items_as_of=T0, base=store.read_current())
    assert again.status == "unchanged"


# ----------------------------------------------------------------------- missing keys under least privilege


def test_a_403_for_a_missing_key_reads_as_absent_and_for_an_existing_one_stays_an_error(
    store: ArtifactStore, aws_clients: AwsClients, settings: Settings
) -> None:
    # Given S3 answering GetObject with 403, as it does for a missing key when the role may list only some
    # prefixes of the bucket (ours: least privilege), not the whole bucket
    def forbidden(request: Any, **_: Any) -> AWSResponse:
        return _s3_error_response(request, 403, "AccessDenied")

    aws_clients.s3.meta.events.register("before-send.s3.GetObject", forbidden)
    try:
        # When the key does not exist, the listing (which the role may do) says so: absent, not an error
        assert store.read_current() is None
        # When the key exists, a 403 is a real permission problem and stays an error
        aws_clients.s3.put_object(Bucket=settings.bucket, Key="config/experiments.json", Body=b"{}")
        with pytest.raises(EmbrecError) as raised:
            store.get_json("config/experiments.json")
        assert not isinstance(raised.value, NotFoundError)
    finally:
        aws_clients.s3.meta.events.unregister("before-send.s3.GetObject", forbidden)
