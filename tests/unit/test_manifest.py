"""Checksums: a VerifiedDirectory exists only after a comparison; loaders hash whatever it does not cover."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from embrec import manifest
from embrec.errors import IntegrityError
from embrec.manifest import (
    FileDigest,
    VerifiedDirectory,
    describe_files,
    require_verified,
    subdirectory,
    verify_files,
)


def _tree(root: Path) -> dict[str, manifest.FileEntry]:
    (root / "index").mkdir(parents=True)
    (root / "signals").mkdir()
    (root / "index" / "graph.bin").write_bytes(b"graph" * 100)
    (root / "signals" / "signals.npz").write_bytes(b"signals")
    return describe_files(root, ["index/graph.bin", "signals/signals.npz"])


def test_verify_files_returns_a_token_covering_exactly_what_it_hashed(
    tmp_path: Path, hashed: list[Path]
) -> None:
    files = _tree(tmp_path)
    hashed.clear()

    token = verify_files(tmp_path, files)

    assert len(hashed) == 2 and token.path == tmp_path and token.covers(files)
    assert not token.covers({"index/other.bin": files["index/graph.bin"]})
    assert not token.covers({"index/graph.bin": {**files["index/graph.bin"], "sha256": "0" * 64}})
    # os.fspath and "/" give plain paths: dropping the token can only cost a hash pass, never skip one
    assert os.fspath(token) == str(tmp_path) and token / "index" == tmp_path / "index"


def test_no_token_without_a_matching_digest(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    good = {name: FileDigest(entry["sha256"], entry["size"]) for name, entry in files.items()}
    graph = "index/graph.bin"

    with pytest.raises(IntegrityError, match="sha256"):
        VerifiedDirectory.from_digests(tmp_path, files, {**good, graph: FileDigest("0" * 64, 500)})
    with pytest.raises(IntegrityError, match="size"):
        VerifiedDirectory.from_digests(tmp_path, files, {**good, graph: FileDigest("0" * 64, 1)})
    with pytest.raises(IntegrityError, match="missing"):
        VerifiedDirectory.from_digests(tmp_path, files, {"index/graph.bin": good["index/graph.bin"]})


def test_require_verified_trusts_a_covering_token_and_hashes_anything_else(
    tmp_path: Path, hashed: list[Path]
) -> None:
    files = _tree(tmp_path)
    token = verify_files(tmp_path, files)
    hashed.clear()
    index_files = {"graph.bin": files["index/graph.bin"]}

    # Given the token of the whole version, the index sub-directory is trusted: nothing hashed again
    assert require_verified(subdirectory(token, "index"), index_files) == tmp_path / "index"
    assert hashed == []
    # A plain path is always hashed
    assert require_verified(subdirectory(tmp_path, "index"), index_files) == tmp_path / "index"
    assert hashed == [tmp_path / "index" / "graph.bin"]
    # A token that lists other digests than the loader's manifest is no proof for them: hashed, and refused
    other = {"graph.bin": {**files["index/graph.bin"], "sha256": "0" * 64}}
    with pytest.raises(IntegrityError):
        require_verified(subdirectory(token, "index"), other)


def test_a_corrupted_file_in_a_directory_on_disk_is_refused(tmp_path: Path) -> None:
    # Given: a directory verified once (e.g. by an earlier download), then changed on disk
    files = _tree(tmp_path)
    verify_files(tmp_path, files)
    graph = tmp_path / "index" / "graph.bin"
    data = bytearray(graph.read_bytes())
    data[7] ^= 0xFF
    graph.write_bytes(bytes(data))

    # Then: found on disk again (a plain path), it is hashed and refused
    with pytest.raises(IntegrityError, match=r"graph\.bin"):
        require_verified(tmp_path / "index", {"graph.bin": files["index/graph.bin"]})
    with pytest.raises(IntegrityError):
        verify_files(tmp_path, files)


@pytest.mark.parametrize(
    "name", ["../outside.bin", "index/../../outside.bin", "/etc/passwd", "./x", "a//b", ""]
)
def test_a_file_name_that_leaves_its_directory_is_refused_before_any_read(tmp_path: Path, name: str) -> None:
    # Given a real file outside the artifact directory, listed in the manifest under a path that escapes it
    inside = tmp_path / "artifact"
    inside.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"not part of the artifact")
    entry = describe_files(tmp_path, ["outside.bin"])["outside.bin"]

    with pytest.raises(IntegrityError, match="unsafe file path"):
        verify_files(inside, {name: entry})
    with pytest.raises(IntegrityError, match="unsafe file path"):
        observed = {name: FileDigest(entry["sha256"], entry["size"])}
        VerifiedDirectory.from_digests(inside, {name: entry}, observed)
