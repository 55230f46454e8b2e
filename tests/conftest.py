"""Shared fixtures: encoders built once per machine and cached under .cache/encoders/<key>.

The key hashes the weights, the build parameters and the builder version, so a change to any of them builds a
fresh directory. Builds go to a temporary sibling and are renamed into place, so concurrent test runs are safe
(the loser of a race discards its copy).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from embrec.encoder import TextEncoder
from embrec.encoder_build import BUILDER_VERSION, INT8_EXCLUDE_DEFAULT, build_encoder, default_weights_dir
from embrec.manifest import sha256_file

REPO_ROOT = Path(__file__).resolve().parents[1]
ENCODER_CACHE = REPO_ROOT / ".cache" / "encoders"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def cached_encoder(quantize: str = "none") -> Path:
    """Path of a built encoder directory for the default weights, building it on first use."""
    weights = default_weights_dir()
    params = {
        "weights": sha256_file(weights / "model.safetensors"),
        "tokenizer": sha256_file(weights / "tokenizer.json"),
        "quantize": quantize,
        "int8_exclude": list(INT8_EXCLUDE_DEFAULT) if quantize == "int8" else [],
        "builder": BUILDER_VERSION,
    }
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    target = ENCODER_CACHE / f"{quantize}-{key}"
    if (target / "encoder.json").is_file():
        return target
    ENCODER_CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=ENCODER_CACHE))
    try:
        build_encoder(staging / "encoder", weights, quantize=quantize)
        try:
            os.rename(staging / "encoder", target)
        except OSError:
            if not (target / "encoder.json").is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


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
