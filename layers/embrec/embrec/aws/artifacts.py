"""S3 artifacts: publish and load index versions, deltas, encoders and small JSON documents.

Layout (one bucket)::

    index/<version>/<files...>, index/<version>/manifest.json   (manifest written after every file)
    index/current.json                                          (pointer; written last, conditionally)
    deltas/<ms, 13 digits>-<uuid>/delta.npz, .../manifest.json  (ingest publishes, containers apply)
    encoder/<encoder_id>/{model.onnx, tokenizer.json, encoder.json}, encoder/current.json
    catalog/reports/<key>.json, catalog/rejected/<key>.jsonl, config/experiments.json
    interactions/incoming/<key> (history files), interactions/reports/<key>.json,
    interactions/rejected/<key>.jsonl

Version naming: a version is ``v-<24 hex>``, the sha256 of its files' content (JSON files hashed without
volatile timestamps such as ``created_at``), so an identical rebuild derives the same version, collides on
``IfNoneMatch='*'`` and is recognised as already published. Every object is written with ``IfNoneMatch``
and carries its sha256 as user metadata, so a collision can be told apart from a stale partial upload.

Re-runs: some files are not byte-reproducible (hnswlib's graph file), so the same input can build different
bytes. A sub-directory manifest carrying ``input_sha256`` (the index and the signals write one) stands for
the files it lists in :func:`input_identity`; the version manifest and the pointer record that identity,
and a publish whose identity equals the live pointer's is ``"unchanged"``: nothing is uploaded or swapped.

Pointer swap: ``index/current.json`` is written with ``IfMatch`` on the ETag the rebuild read before it
started (``IfNoneMatch='*'`` when there was none). Of two concurrent rebuilds exactly one wins; the other
gets a :class:`ConflictError` internally and a :class:`PublishResult` with ``status == "lost_race"``.

Deltas: each version's manifest records ``items_as_of`` (epoch ms: the rebuild's scan start). Ingest
publishes a delta *after* its DynamoDB writes, named by the time of publishing, so a change missed by a
scan always sits in a delta at or after ``items_as_of``. Containers apply, in name order, every delta at
or after ``items_as_of`` (re-applying an upsert is idempotent); since a delta named earlier can become
visible later (upload time, clock skew), refreshes look back :data:`DELTA_LOOKBACK_MS` before the last
applied one and skip names already applied.

Loading: :class:`ArtifactStore` downloads a version into ``cache_dir``, hashing each file's bytes as they are
written (one pass, overlapping the transfer), compares every sha256 and size with the manifest and returns a
:class:`~embrec.manifest.VerifiedDirectory`: the loaders trust those files without hashing them again, while
a directory they are given as a plain path is always hashed (see :mod:`embrec.manifest`).
:class:`LiveArtifact` keeps the loaded value of a warm container fresh (conditional GET of the pointer at
most every ``refresh_seconds``; a new version is loaded completely, then swapped in by reference; a corrupt
one is refused and reported, the old one kept).
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from embrec.aws.clients import aws_errors
from embrec.errors import (
    ArtifactError,
    ConflictError,
    EmbrecError,
    EncoderMissingError,
    IntegrityError,
    NotFoundError,
    ResourceMissingError,
    ServiceUnavailableError,
)
from embrec.manifest import (
    MANIFEST_FILE,
    FileDigest,
    VerifiedDirectory,
    check_file_names,
    read_json,
    sha256_file,
    verify_files,
)

__all__ = [
    "CURRENT_ENCODER_KEY",
    "CURRENT_INDEX_KEY",
    "DELTA_LOOKBACK_MS",
    "HISTORY_INCOMING_PREFIX",
    "HISTORY_REJECTED_PREFIX",
    "HISTORY_REPORTS_PREFIX",
    "READ_CURRENT",
    "ArtifactStore",
    "DeltaRef",
    "LiveArtifact",
    "LoadedArtifact",
    "Pointer",
    "PruneResult",
    "PublishResult",
    "VersionInfo",
    "WatchedJson",
    "content_version",
    "input_identity",
]

INDEX_PREFIX = "index/"
CURRENT_INDEX_KEY = "index/current.json"
DELTAS_PREFIX = "deltas/"
ENCODER_PREFIX = "encoder/"
CURRENT_ENCODER_KEY = "encoder/current.json"
ENCODER_MANIFEST = "encoder.json"
HISTORY_INCOMING_PREFIX = "interactions/incoming/"
HISTORY_REPORTS_PREFIX = "interactions/reports/"
HISTORY_REJECTED_PREFIX = "interactions/rejected/"
DELTA_LOOKBACK_MS = 5 * 60 * 1000
INCOMPLETE_GRACE_SECONDS = 3600.0  # an unpublished version younger than this may be a rebuild in flight
VOLATILE_KEYS = frozenset({"created_at", "published_at", "built_at", "items_as_of", "version"})
_SHA_META = "sha256"
_PART_SIZE = 64 * 1024 * 1024  # above this, multipart upload (parts in parallel)
_MAX_PUT = _PART_SIZE

T = TypeVar("T")
Event = Callable[[str, Mapping[str, Any]], None]


class _Read(enum.Enum):
    CURRENT = "read-current"


READ_CURRENT = _Read.CURRENT
"""``publish_version(base=READ_CURRENT)``: read the pointer now (prefer passing what was read at start)."""


@dataclass(frozen=True)
class Pointer:
    """``index/current.json`` as read: the live version, the document, and its ETag (for IfMatch)."""

    version: str
    etag: str
    document: dict[str, Any]


@dataclass(frozen=True)
class PublishResult:
    """Outcome of :meth:`ArtifactStore.publish_version`.

    ``status``: ``"published"`` (this call swapped the pointer), ``"unchanged"`` (the pointer already names
    this very content: nothing written), ``"lost_race"`` (another rebuild swapped the pointer first).
    """

    version: str
    status: Literal["published", "unchanged", "lost_race"]
    manifest: dict[str, Any]
    pointer_etag: str | None = None

    @property
    def won(self) -> bool:
        return self.status == "published"


@dataclass(frozen=True)
class VersionInfo:
    version: str
    published_at: int  # epoch ms (0 when the version has no manifest yet)
    items_as_of: int  # epoch ms
    complete: bool


@dataclass(frozen=True)
class PruneResult:
    kept: list[str]
    deleted_versions: list[str]
    deleted_deltas: list[str]


@dataclass(frozen=True)
class DeltaRef:
    """One published delta: ``prefix`` ``deltas/<ms>-<id>/`` and its timestamp (epoch ms)."""

    prefix: str
    timestamp_ms: int

    @property
    def name(self) -> str:
        return self.prefix.rstrip("/").rsplit("/", 1)[-1]


def _normalised_digest(path: Path) -> str:
    """sha256 of a file; for a JSON object, of its canonical form without volatile timestamp keys."""
    if path.suffix == ".json":
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            document = None
        if isinstance(document, dict):
            stable = {k: v for k, v in document.items() if k not in VOLATILE_KEYS}
            return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()
    return sha256_file(path)


def _payload_files(directory: Path) -> list[str]:
    """Relative posix paths of every file under ``directory`` except the top-level manifest, sorted."""
    names = [p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()]
    return sorted(n for n in names if n != MANIFEST_FILE)


def content_version(directory: Path) -> str:
    """``v-<24 hex>``: the sha256 of the (normalised) content of every payload file under ``directory``."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for name in _payload_files(directory):
        digest.update(f"{name}\0{_normalised_digest(directory / name)}\n".encode())
    return f"v-{digest.hexdigest()[:24]}"


def input_identity(directory: Path) -> str:
    """sha256 hex naming what a built version is a function of (its inputs), not its bytes.

    Like :func:`content_version`, except that a ``manifest.json`` below the top level whose document carries
    a string ``input_sha256`` and a ``files`` mapping stands, by that digest, for itself and the files it
    lists. Files no such manifest covers count by their (normalised) content.
    """
    directory = Path(directory)
    names = _payload_files(directory)
    covered: dict[str, str] = {}
    for name in names:
        if name.rsplit("/", 1)[-1] != MANIFEST_FILE:
            continue
        try:
            document = json.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not (isinstance(document, dict) and isinstance(document.get("input_sha256"), str)
                and isinstance(document.get("files"), dict)):
            continue
        folder = name[: -len(MANIFEST_FILE)]
        covered[name] = f"input:{document['input_sha256']}"
        covered.update({folder + str(listed): "listed" for listed in document["files"]})
    digest = hashlib.sha256()
    for name in names:
        entry = covered.get(name) or _normalised_digest(directory / name)
        digest.update(f"{name}\0{entry}\n".encode())
    return digest.hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


class _HashingSink(io.RawIOBase):
    """A write-only, non-seekable file that hashes what it writes, in order.

    Non-seekable on purpose: s3transfer then still fetches a large object in parallel ranged parts, but
    hands them to ``write`` in file order (its non-seekable output manager), so one sha256 pass runs while
    the transfer is in flight instead of a second read of the file afterwards.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._stream = open(path, "wb")  # noqa: SIM115 (closed in close())
        self._digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._digest.update(view)
        self._stream.write(view)
        self.size += view.nbytes
        return view.nbytes

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()

    def observed(self) -> FileDigest:
        return FileDigest(self._digest.hexdigest(), self.size)


def _etag(value: Any) -> str:
    return str(value or "")


class ArtifactStore:
    """Every S3 read and write of artifacts: an injected S3 client, the bucket, and a local cache dir."""

    def __init__(self, s3: Any, bucket: str, cache_dir: Path | str, *, concurrency: int = 8) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._cache = Path(cache_dir)
        self._concurrency = max(1, concurrency)

    @property
    def bucket(self) -> str:
        return self._bucket

    # ------------------------------------------------------------------------------------------ objects

    def put_bytes(
        self,
        key: str,
        body: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Write one object; ConflictError if the condition fails. Returns the new ETag."""
        kwargs: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": key,
            "Body": body,
            "ContentType": content_type,
        }
        kwargs["Metadata"] = {_SHA_META: hashlib.sha256(body).hexdigest()}
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        with aws_errors(f"s3://{self._bucket}/{key}"):
            return _etag(self._s3.put_object(**kwargs).get("ETag"))

    def get_bytes(self, key: str, *, if_none_match: str | None = None) -> tuple[bytes, str] | None:
        """``(body, etag)``; None when ``if_none_match`` is the current ETag (304). NotFoundError: absent."""
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": key}
        if if_none_match:
            kwargs["IfNoneMatch"] = if_none_match
        from botocore.exceptions import ClientError

        with aws_errors(f"s3://{self._bucket}/{key}"):
            try:
                response = self._s3.get_object(**kwargs)
            except ClientError as error:
                status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 304:
                    return None  # Not Modified: the caller's copy is current
                if status == 403 and not self._exists(key):
                    # S3 answers a missing key with 403, not 404, unless the caller may list the whole
                    # bucket; our roles may list only their own prefixes (least privilege), so ask the
                    # listing, which they may: absent is NotFound (e.g. no index published yet).
                    raise ResourceMissingError(f"s3://{self._bucket}/{key}: no such key") from None
                raise
            return response["Body"].read(), _etag(response.get("ETag"))

    def _exists(self, key: str) -> bool:
        with aws_errors(f"s3://{self._bucket}/{key}"):
            listed = self._s3.list_objects_v2(Bucket=self._bucket, Prefix=key, MaxKeys=1)
        return any(entry.get("Key") == key for entry in listed.get("Contents", []))

    def put_json(
        self,
        key: str,
        document: Mapping[str, Any],
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        body = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
        return self.put_bytes(
            key, body, if_match=if_match, if_none_match=if_none_match, content_type="application/json"
        )

    def get_json(self, key: str, *, if_none_match: str | None = None) -> tuple[dict[str, Any], str] | None:
        """``(document, etag)``, None on 304; NotFoundError if absent, IntegrityError if not a JSON object."""
        found = self.get_bytes(key, if_none_match=if_none_match)
        if found is None:
            return None
        body, etag = found
        try:
            document = json.loads(body)
        except ValueError:
            raise IntegrityError(f"{key}: not valid JSON") from None
        if not isinstance(document, dict):
            raise IntegrityError(f"{key}: not a JSON object")
        return document, etag

    def put_lines(self, key: str, rows: Iterable[Mapping[str, Any]]) -> str:
        """Write JSON Lines (e.g. ``catalog/rejected/<key>.jsonl``); returns the ETag."""
        body = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()
        return self.put_bytes(key, body, content_type="application/x-ndjson")

    def report_key(self, source_key: str) -> str:
        return f"catalog/reports/{source_key}.json"

    def rejected_key(self, source_key: str) -> str:
        return f"catalog/rejected/{source_key}.jsonl"

    @staticmethod
    def history_report_key(name: str) -> str:
        """The report of the history file ``interactions/incoming/<name>``."""
        return f"{HISTORY_REPORTS_PREFIX}{name}.json"

    @staticmethod
    def history_rejected_key(name: str, chunk: int) -> str:
        """The rejected rows of one chunk of the history file ``interactions/incoming/<name>``."""
        return f"{HISTORY_REJECTED_PREFIX}{name}{'' if chunk == 0 else f'.part{chunk:04d}'}.jsonl"

    def _list(
        self, prefix: str, *, delimiter: str | None = None, start_after: str | None = None
    ) -> Iterable[Any]:
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if start_after:
            kwargs["StartAfter"] = start_after
        while True:
            with aws_errors(f"s3://{self._bucket}/{prefix}"):
                response = self._s3.list_objects_v2(**kwargs)
            yield response
            if not response.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = response["NextContinuationToken"]
            kwargs.pop("StartAfter", None)

    def _delete_prefix(self, prefix: str) -> int:
        keys = [o["Key"] for page in self._list(prefix) for o in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": k} for k in keys[start : start + 1000]]
            with aws_errors(f"s3://{self._bucket}/{prefix}"):
                self._s3.delete_objects(Bucket=self._bucket, Delete={"Objects": chunk, "Quiet": True})
        return len(keys)

    def _remote_sha(self, key: str) -> str | None:
        try:
            with aws_errors(f"s3://{self._bucket}/{key}"):
                head = self._s3.head_object(Bucket=self._bucket, Key=key)
        except NotFoundError:
            return None
        return str(head.get("Metadata", {}).get(_SHA_META, "")) or None

    def _upload_file(self, path: Path, key: str, sha256: str, *, replace_stale: bool) -> None:
        """Upload with IfNoneMatch; an existing object with the same sha256 is accepted as is.

        One with another sha256 is a stale partial upload (``replace_stale``: overwrite it) or a conflict.
        """
        try:
            self._put_file(path, key, sha256, if_none_match=True)
        except ConflictError:
            if self._remote_sha(key) == sha256:
                return
            if not replace_stale:
                raise
            self._put_file(path, key, sha256, if_none_match=False)

    def _put_file(self, path: Path, key: str, sha256: str, *, if_none_match: bool) -> None:
        resource = f"s3://{self._bucket}/{key}"
        extra: dict[str, Any] = {"Metadata": {_SHA_META: sha256}}
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        size = path.stat().st_size
        if size <= _MAX_PUT:
            with open(path, "rb") as stream, aws_errors(resource):
                self._s3.put_object(Bucket=self._bucket, Key=key, Body=stream, **extra)
            return
        # Multipart (files past 64 MiB, e.g. a 2M-item graph): parts in parallel, condition on completion.
        with aws_errors(resource):
            upload_id = self._s3.create_multipart_upload(
                Bucket=self._bucket, Key=key, Metadata=extra["Metadata"]
            )["UploadId"]
        try:
            offsets = list(range(0, size, _PART_SIZE))

            def part(number: int) -> dict[str, Any]:
                with open(path, "rb") as stream:
                    stream.seek(offsets[number - 1])
                    data = stream.read(_PART_SIZE)
                with aws_errors(resource):
                    response = self._s3.upload_part(
                        Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                    )
                return {"PartNumber": number, "ETag": response["ETag"]}

            with ThreadPoolExecutor(max_workers=self._concurrency) as pool:
                parts = list(pool.map(part, range(1, len(offsets) + 1)))
            complete: dict[str, Any] = {"MultipartUpload": {"Parts": parts}}
            if if_none_match:
                complete["IfNoneMatch"] = "*"
            with aws_errors(resource):
                self._s3.complete_multipart_upload(
                    Bucket=self._bucket, Key=key, UploadId=upload_id, **complete
                )
        except BaseException:
            with aws_errors(resource):
                self._s3.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)
            raise

    def _download(self, key: str, path: Path) -> FileDigest:
        """Download one object to ``path``; the sha256 and size of the bytes written (hashed in flight)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with _HashingSink(path) as sink, aws_errors(f"s3://{self._bucket}/{key}"):
            self._s3.download_fileobj(self._bucket, key, sink)
        return sink.observed()

    def _download_verified(
        self, prefix: str, files: Mapping[str, Mapping[str, Any]], target: Path
    ) -> VerifiedDirectory:
        """Download ``files`` from ``prefix`` into ``target`` via a temporary sibling, verified, then renamed.

        Each file is hashed once, as it is written; nothing is renamed into place unless every digest and
        size matches. An existing ``target`` is reused only after hashing it on disk (a warm container
        re-loading, or a shared cache): a directory that was not just written is never trusted as is.
        """
        check_file_names(files)  # names are joined onto local paths below: none may leave ``target``
        if target.is_dir():
            try:
                return verify_files(target, files)
            except IntegrityError:
                shutil.rmtree(target, ignore_errors=True)
        work = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}"
        try:
            names = sorted(files)
            with ThreadPoolExecutor(max_workers=self._concurrency) as pool:
                digests = list(pool.map(lambda name: self._download(prefix + name, work / name), names))
            observed = dict(zip(names, digests, strict=True))
            VerifiedDirectory.from_digests(work, files, observed)  # IntegrityError before the rename
            try:
                work.rename(target)
            except OSError:  # a concurrent download won the rename: use its copy, hashed on disk
                return verify_files(target, files)
            return VerifiedDirectory.from_digests(target, files, observed)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ index

    def read_current(self) -> Pointer | None:
        """The live index pointer, or None before the first publish."""
        try:
            found = self.get_json(CURRENT_INDEX_KEY)
        except NotFoundError:
            return None
        assert found is not None
        document, etag = found
        version = document.get("version")
        if not isinstance(version, str) or not version:
            raise IntegrityError(f"{CURRENT_INDEX_KEY}: names no version")
        return Pointer(version, etag, document)

    def _read_manifest(self, prefix: str, name: str = MANIFEST_FILE) -> tuple[dict[str, Any], bytes]:
        """The manifest ``prefix + name`` of a published directory and its exact bytes; it must list files.

        The one reader for versions, deltas and encoders: NotFoundError when absent, IntegrityError when it
        is not JSON or lists no files.
        """
        found = self.get_bytes(prefix + name)
        assert found is not None
        try:
            document = json.loads(found[0])
        except ValueError:
            raise IntegrityError(f"{prefix}{name}: not valid JSON") from None
        files = document.get("files") if isinstance(document, dict) else None
        if not isinstance(files, dict) or not files:
            raise IntegrityError(f"{prefix}{name}: lists no files")
        return document, found[0]

    def _fetch_directory(self, prefix: str, target: Path, name: str = MANIFEST_FILE) -> VerifiedDirectory:
        """Download the directory at ``prefix`` into ``target``, verified; its manifest is written last."""
        document, raw = self._read_manifest(prefix, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        verified = self._download_verified(prefix, document["files"], target)
        (target / name).write_bytes(raw)
        return verified

    @staticmethod
    def _local_files(local_dir: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """A local directory's manifest and its ``files``, verified on disk before anything is uploaded."""
        document = read_json(local_dir / name)
        files = document.get("files")
        if not isinstance(files, dict) or not files:
            raise IntegrityError(f"{local_dir / name}: lists no files")
        verify_files(local_dir, files)
        return document, files

    def _upload_directory(
        self, local_dir: Path, prefix: str, files: Mapping[str, Any], name: str, *, replace_stale: bool
    ) -> None:
        """Upload the listed files, then the manifest ``name`` last: a reader that sees it sees them all."""
        for file in sorted(files):
            sha256 = files[file]["sha256"]
            self._upload_file(local_dir / file, prefix + file, sha256, replace_stale=replace_stale)
        self._upload_file(
            local_dir / name, prefix + name, sha256_file(local_dir / name), replace_stale=replace_stale
        )

    def publish_version(
        self,
        local_dir: Path,
        *,
        items_as_of: int,
        base: Pointer | _Read | None = READ_CURRENT,
        version: str | None = None,
        extra: Mapping[str, Any] | None = None,
        now_ms: int | None = None,
    ) -> PublishResult:
        """Upload a built version, then swap ``index/current.json`` to it (last, conditionally).

        ``local_dir``: every file under it (sub-directories included) is published; a top-level
        ``manifest.json`` there, if any, is the base of the version manifest, which adds ``version``,
        ``items_as_of`` (epoch ms, the rebuild's scan start), ``published_at`` (epoch ms) and ``files``
        (``{relative path: {sha256, size}}``), and is written back to ``local_dir``. ``base``: the pointer
        read *before the build started* (None if there was none) — the swap only succeeds if it is still
        the live one. ``version`` defaults to :func:`content_version`. When the live pointer records the same
        :func:`input_identity` (a re-run with no change), the result is ``"unchanged"`` with the live version,
        and nothing is written.
        """
        local_dir = Path(local_dir)
        if base is READ_CURRENT:
            base = self.read_current()
        assert not isinstance(base, _Read)
        names = _payload_files(local_dir)
        if not names:
            raise ArtifactError(f"{local_dir}: nothing to publish")
        version = version or content_version(local_dir)
        identity = input_identity(local_dir)
        if base is not None and base.version != version and base.document.get("input_sha256") == identity:
            live_manifest = self._read_manifest(f"{INDEX_PREFIX}{base.version}/")[0]
            return PublishResult(base.version, "unchanged", live_manifest, base.etag)
        prefix = f"{INDEX_PREFIX}{version}/"
        top = local_dir / MANIFEST_FILE
        manifest: dict[str, Any] = read_json(top) if top.is_file() else {}
        manifest.update(extra or {})
        manifest.update(
            version=version,
            items_as_of=int(items_as_of),
            published_at=_now_ms() if now_ms is None else now_ms,
            input_sha256=identity,
            files={
                name: {"sha256": sha256_file(local_dir / name), "size": (local_dir / name).stat().st_size}
                for name in names
            },
        )
        if base is not None and base.version == version:
            return PublishResult(version, "unchanged", self._read_manifest(prefix)[0], base.etag)
        try:
            manifest = self._read_manifest(prefix)[0]  # published before (an identical build): reuse it
        except NotFoundError:
            with ThreadPoolExecutor(max_workers=self._concurrency) as pool:
                list(
                    pool.map(
                        lambda name: self._upload_file(
                            local_dir / name,
                            prefix + name,
                            manifest["files"][name]["sha256"],
                            replace_stale=True,
                        ),
                        names,
                    )
                )
            try:
                self.put_json(prefix + MANIFEST_FILE, manifest, if_none_match=True)
            except ConflictError:  # a concurrent identical build finished first: its manifest stands
                manifest = self._read_manifest(prefix)[0]
        pointer = {
            "version": version,
            "manifest": prefix + MANIFEST_FILE,
            "items_as_of": manifest["items_as_of"],
            "published_at": _now_ms() if now_ms is None else now_ms,
            "previous": base.version if base is not None else None,
            "input_sha256": manifest.get("input_sha256", identity),
        }
        try:
            if base is None:
                etag = self.put_json(CURRENT_INDEX_KEY, pointer, if_none_match=True)
            else:
                etag = self.put_json(CURRENT_INDEX_KEY, pointer, if_match=base.etag)
        except (ConflictError, NotFoundError):
            live = self.read_current()
            if live is not None and live.version == version:
                return PublishResult(version, "unchanged", manifest, live.etag)
            if live is not None and live.document.get("input_sha256") == identity:
                # a concurrent rebuild of the same input won: its (equivalent) version stands
                live_manifest = self._read_manifest(f"{INDEX_PREFIX}{live.version}/")[0]
                return PublishResult(live.version, "unchanged", live_manifest, live.etag)
            return PublishResult(version, "lost_race", manifest, None)
        return PublishResult(version, "published", manifest, etag)

    def download_version(self, version: str) -> tuple[VerifiedDirectory, dict[str, Any]]:
        """Download ``index/<version>/`` into ``cache_dir/index/<version>/``, verified; ``(dir, manifest)``.

        The directory comes back as a :class:`VerifiedDirectory` (``.path`` is the ``Path``), which
        :func:`embrec.app.build.load_version` trusts without hashing the files again. Raises
        :class:`IntegrityError` (and leaves nothing behind) when any file does not match the manifest.
        """
        check_file_names([version])  # the pointer's version names a cache directory too
        target = self._cache / "index" / version
        verified = self._fetch_directory(f"{INDEX_PREFIX}{version}/", target)
        return verified, read_json(target / MANIFEST_FILE)

    def list_versions(self) -> list[VersionInfo]:
        """Every version prefix, newest published first (incomplete ones last)."""
        versions: list[VersionInfo] = []
        for page in self._list(INDEX_PREFIX, delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(INDEX_PREFIX) :].rstrip("/")
                try:
                    manifest = self._read_manifest(f"{INDEX_PREFIX}{name}/")[0]
                except (NotFoundError, IntegrityError):
                    versions.append(VersionInfo(name, 0, 0, complete=False))
                    continue
                versions.append(
                    VersionInfo(
                        name, int(manifest.get("published_at", 0)), int(manifest.get("items_as_of", 0)), True
                    )
                )
        return sorted(versions, key=lambda v: (not v.complete, -v.published_at, v.version))

    def prune_versions(
        self, keep: int, *, grace_seconds: float = INCOMPLETE_GRACE_SECONDS, now: float | None = None
    ) -> PruneResult:
        """Delete versions beyond the ``keep`` newest (never the current one) and deltas no longer needed.

        Incomplete versions (no manifest) are deleted only when all their objects are older than
        ``grace_seconds`` (a rebuild may be uploading). Deltas older than the oldest kept version's
        ``items_as_of`` (minus :data:`DELTA_LOOKBACK_MS`) are deleted.
        """
        clock = time.time() if now is None else now
        current = self.read_current()
        versions = self.list_versions()
        complete = [v for v in versions if v.complete]
        kept = [v for v in complete[: max(keep, 0)]]
        if current is not None and all(v.version != current.version for v in kept):
            kept += [v for v in complete if v.version == current.version]
        kept_names = {v.version for v in kept}
        deleted: list[str] = []
        for info in versions:
            if info.version in kept_names:
                continue
            if not info.complete and not self._older_than(
                f"{INDEX_PREFIX}{info.version}/", clock - grace_seconds
            ):
                continue
            self._delete_prefix(f"{INDEX_PREFIX}{info.version}/")
            deleted.append(info.version)
        deleted_deltas: list[str] = []
        if kept:
            horizon = min(v.items_as_of for v in kept) - DELTA_LOOKBACK_MS
            for ref in self.list_deltas(0, complete_only=False):
                if ref.timestamp_ms >= horizon:
                    break
                self._delete_prefix(ref.prefix)
                deleted_deltas.append(ref.prefix)
        return PruneResult(sorted(kept_names), deleted, deleted_deltas)

    def _older_than(self, prefix: str, cutoff: float) -> bool:
        for page in self._list(prefix):
            for entry in page.get("Contents", []):
                if entry["LastModified"].timestamp() >= cutoff:
                    return False
        return True

    # ------------------------------------------------------------------------------------------ deltas

    def publish_delta(self, local_dir: Path, *, now_ms: int | None = None) -> str:
        """Upload a delta directory (its files, then its manifest.json) as ``deltas/<ms>-<uuid>/``.

        Call it *after* the DynamoDB writes the delta reflects (see the module docstring). The directory's
        ``manifest.json`` (as :meth:`IndexDelta.save` writes it) must list its files. Returns the prefix.
        """
        local_dir = Path(local_dir)
        _, files = self._local_files(local_dir, MANIFEST_FILE)
        stamp = _now_ms() if now_ms is None else now_ms
        prefix = f"{DELTAS_PREFIX}{stamp:013d}-{uuid.uuid4().hex}/"
        self._upload_directory(local_dir, prefix, files, MANIFEST_FILE, replace_stale=False)
        return prefix

    def list_deltas(self, since_ms: int, *, complete_only: bool = True) -> list[DeltaRef]:
        """Deltas with timestamp >= ``since_ms``, oldest first (complete ones: their manifest is written)."""
        seen: dict[str, DeltaRef] = {}
        start = f"{DELTAS_PREFIX}{max(since_ms, 0):013d}"
        for page in self._list(DELTAS_PREFIX, start_after=start if since_ms > 0 else None):
            for entry in page.get("Contents", []):
                key: str = entry["Key"]
                prefix, _, name = key.rpartition("/")
                if complete_only and name != MANIFEST_FILE:
                    continue
                stamp = prefix[len(DELTAS_PREFIX) :].split("-", 1)[0]
                if stamp.isdigit() and int(stamp) >= since_ms:
                    seen.setdefault(prefix + "/", DeltaRef(prefix + "/", int(stamp)))
        return sorted(seen.values(), key=lambda r: r.prefix)

    def fetch_delta(self, prefix: str) -> Path:
        """Download a delta into ``cache_dir/deltas/<name>/``, verified against its manifest; that dir."""
        prefix = prefix if prefix.endswith("/") else prefix + "/"
        target = self._cache / "deltas" / prefix.rstrip("/").rsplit("/", 1)[-1]
        self._fetch_directory(prefix, target)
        return target

    # ------------------------------------------------------------------------------------------ encoder

    def publish_encoder(self, local_dir: Path, encoder_id: str | None = None) -> str:
        """Upload an encoder to ``encoder/<id>/`` (files, then encoder.json); point current.json at it.

        The local files are verified against ``encoder.json`` first. Returns the encoder id.
        """
        local_dir = Path(local_dir)
        document, files = self._local_files(local_dir, ENCODER_MANIFEST)
        encoder_id = encoder_id or str(document.get("encoder_id") or "")
        if not encoder_id:
            raise IntegrityError(f"{local_dir / ENCODER_MANIFEST}: names no encoder_id")
        prefix = f"{ENCODER_PREFIX}{encoder_id}/"
        self._upload_directory(local_dir, prefix, files, ENCODER_MANIFEST, replace_stale=True)
        self.put_json(CURRENT_ENCODER_KEY, {"encoder_id": encoder_id, "published_at": _now_ms()})
        return encoder_id

    def current_encoder_id(self) -> str:
        """The encoder id ``encoder/current.json`` names (:class:`EncoderMissingError` before the first
        publish)."""
        try:
            found = self.get_json(CURRENT_ENCODER_KEY)
        except NotFoundError:
            raise EncoderMissingError(f"{CURRENT_ENCODER_KEY}: no encoder published yet") from None
        assert found is not None
        encoder_id = found[0].get("encoder_id")
        if not isinstance(encoder_id, str) or not encoder_id:
            raise IntegrityError(f"{CURRENT_ENCODER_KEY}: names no encoder_id")
        return encoder_id

    def fetch_encoder(self, encoder_id: str | None = None) -> Path:
        """Download an encoder (default: the current one) into ``cache_dir/encoder/<id>/``, verified."""
        encoder_id = encoder_id or self.current_encoder_id()
        target = self._cache / "encoder" / encoder_id
        self._fetch_directory(f"{ENCODER_PREFIX}{encoder_id}/", target, ENCODER_MANIFEST)
        return target


# ---------------------------------------------------------------------------------------------- live loading


@dataclass(frozen=True)
class LoadedArtifact(Generic[T]):
    """What a container serves from: a verified version, its loaded value, and the deltas applied to it."""

    version: str
    directory: Path
    manifest: dict[str, Any]
    value: T
    loaded_at: float  # epoch s
    pointer_etag: str
    applied_deltas: tuple[str, ...] = ()

    @property
    def items_as_of(self) -> int:
        return int(self.manifest.get("items_as_of", 0))

    @property
    def last_delta(self) -> str | None:
        return self.applied_deltas[-1] if self.applied_deltas else None


class LiveArtifact(Generic[T]):
    """The current index version of one container, loaded once and kept fresh without dropping requests.

    ``load(directory, manifest) -> T`` builds the in-memory value from a verified directory (a
    :class:`~embrec.manifest.VerifiedDirectory`: the loaders need not hash it again; e.g. the index and
    signals); ``apply_delta(value, delta_dir) -> T | None`` applies one verified delta (returning
    a new value, or None after mutating in place). ``on_event(name, fields)`` hears ``"loaded"``,
    ``"refused"`` (a new version or delta failed verification or loading: the old one is kept) and
    ``"delta_applied"``; wire it to metrics.

    :meth:`get` loads on first use (errors propagate: a cold container with no usable index must fail), then
    re-checks the pointer at most every ``refresh_seconds`` with a conditional GET (304: only new deltas).
    A newer version is downloaded, verified and loaded completely, and only then swapped in by reference.
    """

    def __init__(
        self,
        store: ArtifactStore,
        load: Callable[[VerifiedDirectory, Mapping[str, Any]], T],
        *,
        refresh_seconds: float,
        apply_delta: Callable[[T, Path], T | None] | None = None,
        on_event: Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._load = load
        self._apply = apply_delta
        self._refresh_s = refresh_seconds
        self._on_event = on_event
        self._clock = clock
        self._loaded: LoadedArtifact[T] | None = None
        self._checked_at = 0.0
        self._refused: set[str] = set()
        self._lock = threading.Lock()

    def _emit(self, name: str, **fields: Any) -> None:
        if self._on_event is not None:
            self._on_event(name, fields)

    @property
    def loaded(self) -> LoadedArtifact[T] | None:
        return self._loaded

    def get(self) -> LoadedArtifact[T]:
        """The value to serve this request from (cold: load now; warm: maybe refresh first)."""
        loaded = self._loaded
        if loaded is None:
            with self._lock:
                if self._loaded is None:
                    pointer = self._store.read_current()
                    if pointer is None:
                        raise NotFoundError("no index has been published yet")
                    try:
                        self._loaded = self._load_version(pointer)
                    except ArtifactError as error:
                        self._refused.add(pointer.version)
                        reason = type(error).__name__
                        self._emit("refused", version=pointer.version, reason=reason, message=str(error))
                        self._loaded = self._load_fallback(pointer, error)
                    self._checked_at = self._clock()
                return self._loaded
        if self._clock() - self._checked_at >= self._refresh_s:
            self.refresh()
        return self._loaded or loaded

    def refresh(self) -> bool:
        """Check the pointer now; swap to a new version or apply new deltas. True if anything changed.

        Never raises for a bad new version or a transient S3 failure while a version is loaded: it reports
        ``"refused"`` and keeps serving the old one.
        """
        with self._lock:
            self._checked_at = self._clock()
            current = self._loaded
            if current is None:
                return False
            try:
                found = self._store.get_json(CURRENT_INDEX_KEY, if_none_match=current.pointer_etag)
                if found is None:  # 304: same version; maybe new deltas
                    updated = self._apply_new_deltas(current)
                    self._loaded = updated
                    return updated is not current
                document, etag = found
                version = str(document.get("version", ""))
                if version == current.version:
                    self._loaded = replace(self._apply_new_deltas(current), pointer_etag=etag)
                    return True
                if version in self._refused:
                    return self._keep_serving(current)
                pointer = Pointer(version, etag, document)
            except EmbrecError as error:
                self._emit(
                    "refused", version=current.version, reason=type(error).__name__, message=str(error)
                )
                return False
            try:
                self._loaded = self._load_version(pointer)
            except (ArtifactError, ServiceUnavailableError, NotFoundError) as error:
                if isinstance(error, ArtifactError):
                    self._refused.add(pointer.version)
                self._emit(
                    "refused", version=pointer.version, reason=type(error).__name__, message=str(error)
                )
                return self._keep_serving(current)
            self._forget_old_dirs(current)
            return True

    def _keep_serving(self, current: LoadedArtifact[T]) -> bool:
        """The pointer names a version this container refused: keep serving ``current``, but with the deltas
        published since (new items, tombstones), which do not depend on the refused version. True if any."""
        try:
            self._loaded = self._apply_new_deltas(current)
        except EmbrecError as error:  # listing the deltas failed: try again at the next refresh
            self._emit("refused", version=current.version, reason=type(error).__name__, message=str(error))
            return False
        return self._loaded is not current

    def _load_fallback(self, pointer: Pointer, error: ArtifactError) -> LoadedArtifact[T]:
        """Cold start with a current version that fails verification: serve the newest older one that passes.

        Only complete versions published before the refused one qualify (older data, never unverified data);
        the pointer's ETag is kept, so the next refresh waits for a new pointer instead of retrying the bad
        version. Re-raises ``error`` when no version verifies: the container then answers 503.
        """
        refused_at = int(pointer.document.get("published_at", 0) or 0)
        for info in self._store.list_versions():
            if not info.complete or info.version in self._refused:
                continue
            if refused_at and info.published_at > refused_at:
                continue
            try:
                loaded = self._load_version(Pointer(info.version, pointer.etag, pointer.document))
            except ArtifactError as older:
                self._refused.add(info.version)
                self._emit("refused", version=info.version, reason=type(older).__name__, message=str(older))
                continue
            self._emit("fallback", version=info.version, refused=pointer.version)
            return loaded
        raise error

    def _load_version(self, pointer: Pointer) -> LoadedArtifact[T]:
        started = time.monotonic()
        verified, manifest = self._store.download_version(pointer.version)
        value = self._load(verified, manifest)
        loaded: LoadedArtifact[T] = LoadedArtifact(
            pointer.version, verified.path, manifest, value, time.time(), pointer.etag
        )
        loaded = self._apply_new_deltas(loaded)
        self._emit(
            "loaded",
            version=pointer.version,
            seconds=time.monotonic() - started,
            deltas=len(loaded.applied_deltas),
        )
        return loaded

    def _apply_new_deltas(self, loaded: LoadedArtifact[T]) -> LoadedArtifact[T]:
        if self._apply is None:
            return loaded
        since = loaded.items_as_of
        if loaded.applied_deltas:
            last = int(loaded.applied_deltas[-1].split("-", 1)[0])
            since = max(since, last - DELTA_LOOKBACK_MS)
        applied = list(loaded.applied_deltas)
        done = set(applied)
        value = loaded.value
        for ref in self._store.list_deltas(since):
            if ref.name in done or ref.name in self._refused:
                continue
            try:
                delta_dir = self._store.fetch_delta(ref.prefix)
                result = self._apply(value, delta_dir)
            except EmbrecError as error:
                if isinstance(error, ArtifactError):
                    self._refused.add(ref.name)
                self._emit("refused", delta=ref.name, reason=type(error).__name__, message=str(error))
                if not isinstance(error, ArtifactError):
                    break  # transient: retry this delta (and the ones after it) at the next refresh
                continue
            value = loaded.value if result is None else result
            applied.append(ref.name)
            done.add(ref.name)
            shutil.rmtree(delta_dir, ignore_errors=True)
            self._emit("delta_applied", version=loaded.version, delta=ref.name)
        if len(applied) == len(loaded.applied_deltas):
            return loaded
        # Keep the names inside the look-back window only: older ones can never be listed again.
        horizon = int(applied[-1].split("-", 1)[0]) - 2 * DELTA_LOOKBACK_MS
        recent = tuple(a for a in applied if int(a.split("-", 1)[0]) >= horizon)
        return replace(loaded, value=value, applied_deltas=recent)

    def _forget_old_dirs(self, previous: LoadedArtifact[T]) -> None:
        # Keep the previous version's files for one more swap (its value may still be serving a request).
        parent = previous.directory.parent
        live = {previous.version, self._loaded.version if self._loaded else ""}
        for child in parent.iterdir() if parent.is_dir() else ():
            if child.is_dir() and child.name not in live and not child.name.startswith("."):
                shutil.rmtree(child, ignore_errors=True)


@dataclass
class WatchedJson:
    """A small JSON document (e.g. ``config/experiments.json``) re-read at most every ``refresh_seconds``.

    Uses a conditional GET on the last ETag (304: unchanged). A missing object gives ``default``; a failure
    after the first successful read keeps the last good document.
    """

    store: ArtifactStore
    key: str
    refresh_seconds: float
    default: Mapping[str, Any] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    _document: dict[str, Any] | None = None
    _etag: str | None = None
    _checked_at: float = 0.0

    def get(self) -> dict[str, Any]:
        if self._document is not None and self.clock() - self._checked_at < self.refresh_seconds:
            return self._document
        self._checked_at = self.clock()
        try:
            found = self.store.get_json(self.key, if_none_match=self._etag)
        except NotFoundError:
            self._document, self._etag = dict(self.default), None
            return self._document
        except EmbrecError:
            if self._document is None:
                raise
            return self._document
        if found is not None:
            self._document, self._etag = found
        assert self._document is not None
        return self._document
