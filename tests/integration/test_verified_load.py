"""One hash pass per cold start: a version is hashed while it downloads and loaded without hashing it again.

A directory that was not just downloaded (a cache dir found on disk, a local build) is still hashed before a
byte of it is used, and a corrupted file there is refused.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from embrec import manifest
from embrec.app.build import build_version, load_version
from embrec.aws.artifacts import ArtifactStore, PublishResult
from embrec.aws.clients import AwsClients
from embrec.config import Settings
from embrec.domain.model import Interaction, StoredItem
from embrec.errors import IntegrityError
from embrec.manifest import VerifiedDirectory

T0 = 1_780_000_000_000  # epoch ms
NOW = 1_780_000_000.0
DIM = 16


@pytest.fixture
def store(aws_clients: AwsClients, settings: Settings) -> ArtifactStore:
    return ArtifactStore(aws_clients.s3, settings.bucket, settings.cache_dir)


def _version(root: Path) -> Path:
    rng = np.random.default_rng(7)
    items = [
        StoredItem(f"i{k:02d}", {"item_id": f"i{k:02d}", "title": f"item {k}"}, "", rng.normal(size=DIM))
        for k in range(40)
    ]
    events = [
        (f"u{u}", Interaction(f"i{(u + j) % 40:02d}", "like", NOW - 3600 * j, event_id=f"{u}-{j}"))
        for u in range(30)
        for j in range(5)
    ]
    build_version(items, events, root / "build", encoder_id="enc-test", now=NOW)
    return root / "build"


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_download_hashes_in_flight_and_load_does_not_hash_again(
    tmp_path: Path, store: ArtifactStore, hashed: list[Path]
) -> None:
    # Given: a real version (index + signals) published
    published = store.publish_version(_version(tmp_path), items_as_of=T0, base=None)
    hashed.clear()

    # When: a cold container downloads and loads it
    verified, version_manifest = store.download_version(published.version)
    index, signals = load_version(verified)

    # Then: every file was compared with the manifest, yet no file was read back to hash it
    assert isinstance(verified, VerifiedDirectory) and verified.covers(version_manifest["files"])
    assert hashed == []
    assert len(index) == 40 and len(signals) == 40 and signals.neighbours("i00")


def _published_and_downloaded(
    tmp_path: Path, store: ArtifactStore, hashed: list[Path]
) -> tuple[PublishResult, VerifiedDirectory]:
    """A version published and downloaded once, with the hash log cleared after the download."""
    published = store.publish_version(_version(tmp_path), items_as_of=T0, base=None)
    verified, _ = store.download_version(published.version)
    hashed.clear()
    return published, verified


def test_a_directory_found_on_disk_is_hashed_and_a_corrupted_file_refused(
    tmp_path: Path, store: ArtifactStore, hashed: list[Path]
) -> None:
    published, verified = _published_and_downloaded(tmp_path, store, hashed)

    # A plain path (not a token): every file the loaders read is hashed
    load_version(verified.path)
    assert {p.name for p in hashed} == {"graph.hnsw", "metadata.npz", "signals.npz"}

    # A byte flipped in the cache dir after the download: refused by the loader ...
    for name in ("signals/signals.npz", "index/graph.hnsw"):
        _flip_byte(verified.path / name)
        with pytest.raises(IntegrityError, match=re.escape(Path(name).name)):
            load_version(verified.path)
    # ... and by the store, which hashes an existing cache dir, drops it, and downloads the version again
    again, _ = store.download_version(published.version)
    index, _ = load_version(again)
    assert len(index) == 40


def test_the_token_is_only_trusted_for_the_files_it_lists(
    tmp_path: Path, store: ArtifactStore, hashed: list[Path]
) -> None:
    published, verified = _published_and_downloaded(tmp_path, store, hashed)

    # A token for the index alone says nothing about the signals: those are hashed (and here refused)
    index_only = VerifiedDirectory.from_digests(
        verified.path,
        {k: v for k, v in published.manifest["files"].items() if k.startswith("index/")},
        verified_digests(published.manifest["files"]),
    )
    _flip_byte(verified.path / "signals" / "signals.npz")
    with pytest.raises(IntegrityError, match=r"signals\.npz"):
        load_version(index_only)
    assert [p.name for p in hashed] == ["signals.npz"]


def verified_digests(files: dict[str, dict[str, object]]) -> dict[str, manifest.FileDigest]:
    return {name: manifest.FileDigest(str(e["sha256"]), int(str(e["size"]))) for name, e in files.items()}
