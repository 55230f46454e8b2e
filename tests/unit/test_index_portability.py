"""The hnswlib we import must be the portable chroma-hnswlib manylinux wheel, not a local build.

hnswlib 0.8 built from source compiles with ``-march=native``: it runs on the build machine and dies with
SIGILL on a Lambda host whose CPU lacks an instruction the build machine had. chroma-hnswlib 0.7.6 ships
manylinux wheels built for the x86-64 baseline. These tests fail if the environment drifts: another
distribution providing ``hnswlib``, a locally built wheel (tagged ``linux_x86_64``), an extension module
replaced after installation, or (where objdump exists) an extension that uses AVX/AVX-512 registers.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import shutil
import subprocess
from pathlib import Path

import hnswlib
import pytest

from embrec.engine.index import LIBRARY, library_version

PINNED = "0.7.6"


def _distribution() -> importlib.metadata.Distribution:
    return importlib.metadata.distribution(LIBRARY)


def _extension() -> Path:
    return Path(hnswlib.__file__).resolve()


def test_the_pinned_distribution_is_installed() -> None:
    assert library_version() == PINNED
    requirements = Path(__file__).resolve().parents[2] / "layers" / "embrec" / "requirements.txt"
    assert f"{LIBRARY}=={PINNED}" in requirements.read_text().split()


def test_it_was_installed_from_a_manylinux_wheel() -> None:
    wheel = _distribution().read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")]
    platforms = {tag.split("-")[2] for tag in tags}
    assert platforms, "no wheel tags: not installed from a wheel"
    # a wheel built here from the sdist is tagged linux_x86_64; only auditwheel-repaired wheels are manylinux
    assert all(platform.startswith("manylinux") for platform in platforms), platforms
    files = [str(path) for path in _distribution().files or []]
    assert any(path.startswith("chroma_hnswlib.libs/") for path in files), "no auditwheel-vendored libraries"


def test_the_imported_module_is_the_file_that_wheel_installed() -> None:
    distribution = _distribution()
    for path in distribution.files or []:
        if Path(str(distribution.locate_file(path))).resolve() == _extension():
            break
    else:
        pytest.fail(f"{_extension()} is not part of {LIBRARY}: another hnswlib shadows it")
    assert path.hash is not None and path.hash.mode == "sha256"
    digest = (
        base64.urlsafe_b64encode(hashlib.sha256(_extension().read_bytes()).digest()).rstrip(b"=").decode()
    )
    assert digest == path.hash.value, "the extension module was replaced after installation"
    others = {
        d.metadata["Name"]
        for d in importlib.metadata.distributions()
        if "hnswlib" in (d.read_text("top_level.txt") or "").split() and d.metadata["Name"] != LIBRARY
    }
    assert not others, f"other distributions also provide the hnswlib module: {others}"


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump not installed")
def test_the_extension_uses_no_avx_registers() -> None:
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(_extension())], capture_output=True, text=True, check=True
    ).stdout
    assert "xmm" in listing  # the disassembly worked and SSE code is there
    assert "%ymm" not in listing and "%zmm" not in listing, "AVX/AVX-512 code: built for a specific CPU"
