"""Shared fixtures: encoders built once per machine and cached under .cache/encoders/<key>.

The key hashes the weights, the build parameters and the builder version, so a change to any of them builds a
fresh directory. Builds go to a temporary sibling and are renamed into place, so concurrent test runs are safe
(the loser of a race discards its copy).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from embrec import manifest
from embrec.engine.encoder import TextEncoder
from embrec_tools.encoder_build import cached_build

REPO_ROOT = Path(__file__).resolve().parents[1]
ENCODER_CACHE = REPO_ROOT / ".cache" / "encoders"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def cached_encoder(quantize: str = "none") -> Path:
    """Path of a built encoder directory for the default weights, building it on first use."""
    return cached_build(ENCODER_CACHE, quantize)[0]


@pytest.fixture(scope="session")
def encoder_dir() -> Path:
    """fp32 encoder directory (built once per machine; treat as read-only, copy before modifying)."""
    return cached_encoder("none")


@pytest.fixture(scope="session")
def int8_encoder_dir() -> Path:
    """int8 encoder directory (built once per machine; read-only)."""
    return cached_encoder("int8")


@pytest.fixture(scope="session")
def encoder(encoder_dir: Path) -> TextEncoder:
    """The fp32 encoder, loaded once per session (2 threads: the test machine is shared)."""
    return TextEncoder.load(encoder_dir, threads=2)


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file hashed on disk, in order (wraps manifest.sha256_file, which every verification of a
    directory calls): lets a test tell a verified load from one that reads files back to hash them."""
    calls: list[Path] = []
    original = manifest.sha256_file

    def counting(path: Path) -> str:
        calls.append(Path(path))
        return original(path)

    monkeypatch.setattr(manifest, "sha256_file", counting)
    return calls
