"""Checksums for published artifacts: one place that hashes files and verifies them.

Every artifact directory (an encoder, an index version, a delta) carries a JSON manifest whose ``files`` maps
a file name to ``{"sha256": hex, "size": bytes}``. Writers call :func:`describe_files`; loaders call
:func:`require_verified` before they trust a byte, and get an :class:`~embrec.errors.IntegrityError` on a
mismatch.

Each file is hashed once per load. A :class:`VerifiedDirectory` is the proof that a directory's files matched
their manifest a moment ago: :func:`verify_files` makes one by hashing the files on disk, and a downloader
that hashed the bytes while writing them makes one from those digests (``VerifiedDirectory.from_digests``).
Either way the constructor compares every expected entry with an observed digest: there is no way to get one
without a comparison. Loaders accept ``Path | VerifiedDirectory``: a plain path (a cache dir, a local build)
is always hashed; a token is trusted for exactly the files it lists with the same sha256 and size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embrec.errors import IntegrityError

__all__ = [
    "MANIFEST_FILE",
    "FileDigest",
    "FileEntry",
    "VerifiedDirectory",
    "check_file_names",
    "describe_files",
    "directory_of",
    "read_json",
    "require_verified",
    "sha256_file",
    "subdirectory",
    "verify_files",
    "write_json",
]

#: The file that names every other file of an artifact directory (encoder, index, signals, version, delta).
MANIFEST_FILE = "manifest.json"

FileEntry = dict[str, Any]  # {"sha256": str, "size": int}
_CHUNK = 1 << 20


def check_file_names(names: Iterable[str]) -> None:
    """:class:`IntegrityError` unless every manifest file name stays inside its directory.

    A name is joined onto a local path (the download target, the cache) before anything is verified, so a
    name that is empty, absolute, or has a ``..``, ``.`` or empty part (or a backslash or NUL) is refused
    before it can reach the file system: a tampered manifest must not write or read outside its directory.
    """
    for name in names:
        if (
            not isinstance(name, str)
            or not name
            or name.startswith("/")
            or "\\" in name
            or "\0" in name
            or any(part in ("", ".", "..") for part in name.split("/"))
        ):
            raise IntegrityError(f"manifest names an unsafe file path {name!r}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(directory: Path, names: Iterable[str]) -> dict[str, FileEntry]:
    """``{name: {"sha256", "size"}}`` for each named file under ``directory`` (names sorted)."""
    directory = Path(directory)
    return {
        name: {"sha256": sha256_file(directory / name), "size": (directory / name).stat().st_size}
        for name in sorted(names)
    }


@dataclass(frozen=True)
class FileDigest:
    """What was observed of one file: its sha256 (hex) and size (bytes)."""

    sha256: str
    size: int


def _compare(name: str, entry: Mapping[str, Any], observed: FileDigest | None) -> None:
    if observed is None:
        raise IntegrityError(f"{name}: listed in the manifest but missing")
    if observed.size != entry["size"]:
        raise IntegrityError(f"{name}: size {observed.size} does not match the manifest's {entry['size']}")
    if observed.sha256 != entry["sha256"]:
        raise IntegrityError(
            f"{name}: sha256 {observed.sha256[:12]}… does not match the manifest's {entry['sha256'][:12]}…"
        )


class VerifiedDirectory:
    """A directory whose listed files matched their manifest entries when this object was made.

    Build one with :func:`verify_files` (hashes the files on disk) or :meth:`from_digests` (digests taken
    while the bytes were written); both compare every entry first and raise :class:`IntegrityError` on a
    mismatch. Hold it only as long as the files cannot have changed (one load): a directory found on disk
    later is a plain path again, and is hashed again. ``os.fspath`` and ``/`` give plain paths (which
    loaders verify), so dropping the token can only cost a hash pass, never skip one.
    """

    __slots__ = ("_files", "path")

    def __init__(
        self, path: Path, files: Mapping[str, Mapping[str, Any]], observed: Mapping[str, FileDigest]
    ) -> None:
        check_file_names(files)
        for name, entry in files.items():
            _compare(name, entry, observed.get(name))
        self.path = Path(path)
        self._files = {name: observed[name] for name in files}

    @classmethod
    def from_digests(
        cls, path: Path, files: Mapping[str, Mapping[str, Any]], observed: Mapping[str, FileDigest]
    ) -> VerifiedDirectory:
        """The token for ``files`` under ``path`` whose bytes hashed to ``observed`` as they were written."""
        return cls(path, files, observed)

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f"VerifiedDirectory({str(self.path)!r}, {len(self._files)} files)"

    def child(self, name: str) -> VerifiedDirectory:
        """The token for sub-directory ``name``: the files listed under ``name/``, relative to it."""
        prefix = name.rstrip("/") + "/"
        observed = {k[len(prefix) :]: d for k, d in self._files.items() if k.startswith(prefix)}
        listed = {k: {"sha256": d.sha256, "size": d.size} for k, d in observed.items()}
        return VerifiedDirectory(self.path / name, listed, observed)

    def covers(self, files: Mapping[str, Mapping[str, Any]]) -> bool:
        """True when every entry of ``files`` was verified here with the same sha256 and size."""
        for name, entry in files.items():
            digest = self._files.get(name)
            if digest is None or digest.sha256 != entry.get("sha256") or digest.size != entry.get("size"):
                return False
        return True


def verify_files(directory: Path, files: Mapping[str, Mapping[str, Any]]) -> VerifiedDirectory:
    """Hash every listed file on disk; :class:`IntegrityError` unless each exists with its size and sha256."""
    check_file_names(files)
    directory = Path(directory)
    observed: dict[str, FileDigest] = {}
    for name, entry in files.items():
        path = directory / name
        if not path.is_file():
            raise IntegrityError(f"{name}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != entry["size"]:  # cheap check first: a truncated file is not hashed
            raise IntegrityError(f"{name}: size {size} does not match the manifest's {entry['size']}")
        observed[name] = FileDigest(sha256_file(path), size)
    return VerifiedDirectory(directory, files, observed)


def directory_of(source: Path | VerifiedDirectory) -> Path:
    return source.path if isinstance(source, VerifiedDirectory) else Path(source)


def subdirectory(source: Path | VerifiedDirectory, name: str) -> Path | VerifiedDirectory:
    """``source / name``, keeping the token (for the files under ``name/``) when ``source`` is one."""
    return source.child(name) if isinstance(source, VerifiedDirectory) else Path(source) / name


def require_verified(source: Path | VerifiedDirectory, files: Mapping[str, Mapping[str, Any]]) -> Path:
    """The directory to read ``files`` from, after making sure they match their manifest entries.

    A :class:`VerifiedDirectory` that lists every one of ``files`` with the same digest is trusted (they were
    hashed a moment ago); anything else (a plain path, a token for other files or other digests) is hashed
    now. Raises :class:`IntegrityError` on a mismatch.
    """
    if isinstance(source, VerifiedDirectory) and source.covers(files):
        return source.path
    directory = directory_of(source)
    verify_files(directory, files)
    return directory


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    Path(path).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise IntegrityError(f"{Path(path).name}: unreadable manifest ({error})") from None
    if not isinstance(document, dict):
        raise IntegrityError(f"{Path(path).name}: manifest is not a JSON object")
    return document
