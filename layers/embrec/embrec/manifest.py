"""Checksums for published artifacts: one place that hashes files and verifies them.

Every artifact directory (an encoder, an index version, a delta) carries a JSON manifest whose ``files`` maps
a file name to ``{"sha256": hex, "size": bytes}``. Writers call :func:`describe_files`; loaders call
:func:`verify_files` before they trust a byte, and get an :class:`~embrec.errors.IntegrityError` on mismatch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from embrec.errors import IntegrityError

__all__ = ["FileEntry", "describe_files", "read_json", "sha256_file", "verify_files", "write_json"]

FileEntry = dict[str, Any]  # {"sha256": str, "size": int}
_CHUNK = 1 << 20


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


def verify_files(directory: Path, files: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise :class:`IntegrityError` unless every listed file exists with the listed size and sha256."""
    directory = Path(directory)
    for name, entry in files.items():
        path = directory / name
        if not path.is_file():
            raise IntegrityError(f"{name}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != entry["size"]:
            raise IntegrityError(f"{name}: size {size} does not match the manifest's {entry['size']}")
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise IntegrityError(
                f"{name}: sha256 {digest[:12]}… does not match the manifest's {entry['sha256'][:12]}…"
            )


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
