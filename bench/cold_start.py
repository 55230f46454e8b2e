"""Cold start: ``python -m bench cold_start``.

A version (index + signals, ``BENCH_COLD_ITEMS`` PyPI items, default 100,000; built by ``bench rebuild`` or
here) is published with ``ArtifactStore.publish_version`` to a local S3 endpoint (moto server over HTTP on
127.0.0.1). Then, each in a fresh Python process, timed from spawn to exit by the parent:

- ours: import embrec, read index/current.json, ``download_version`` (each file sha256-hashed as it is
  written, then compared with the manifest), ``load_version`` (trusts that just-verified directory: no second
  hash pass; hnswlib graph loaded), first ``ranking.recommend`` for a 20-event user;
- baseline: boto3 alone downloads the same objects to disk (list + get, 8 threads, like ours).

``BENCH_COLD_CF_MATRIX=m``: the published signals carry a CF model's whole matrix over ``m`` solved items
(seeded random values, ``bench._data.seeded_cf_matrix``) in place of the version's own (10,000 is the cap a
deployment can carry, 200 MB; the 100k version's own is 2,227 items); the version is otherwise the same.

Best of ``BENCH_REPEATS`` (default 3) runs each, ours and the baseline interleaved so a busy machine slows
both alike. Also: artifact bytes per item against raw float32 vector bytes, and the child's resident memory
after load: its own peak (VmHWM). Not ``ru_maxrss``: Linux carries the parent's peak into a child across
fork + exec, and the parent here holds the moto server with every object in memory (it read ~1.1 GB).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench._data import ROOT, machine_line, peak_rss_mb, pypi_texts, pypi_vectors, seeded_cf_matrix

__all__ = ["main"]

BUCKET = "embrec-bench"
NOW = 1_790_000_000.0


def _s3(url: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )



def _child_ours(url: str, cache: str) -> None:
    started = time.perf_counter()
    from embrec.app.build import load_version
    from embrec.aws.artifacts import ArtifactStore
    from embrec.domain.model import Interaction
    from embrec.domain.ranking import RankParams, recommend

    imported = time.perf_counter()
    store = ArtifactStore(_s3(url), BUCKET, cache)
    pointer = store.read_current()
    assert pointer is not None
    verified, _ = store.download_version(pointer.version)
    downloaded = time.perf_counter()
    index, signals = load_version(verified)
    loaded = time.perf_counter()
    rss = peak_rss_mb()
    history = [Interaction(f"pypi-{i}", "click", NOW - 3600 * i, event_id=str(i)) for i in range(20)]
    result = recommend(index, signals, history, None, RankParams(k=10), NOW)
    assert len(result.items) == 10
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "import_s": imported - started,
                "download_verify_s": downloaded - imported,
                "load_s": loaded - downloaded,
                "first_rec_s": done - loaded,
                "rss_after_load_mb": rss,
                "items": len(index),
            }
        )
    )


def _child_download(url: str, cache: str) -> None:
    s3 = _s3(url)
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="index/")
        for o in page.get("Contents", [])
    ]
    target = Path(cache)

    def get(key: str) -> int:
        path = target / key
        path.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(BUCKET, key, str(path))
        return path.stat().st_size

    with ThreadPoolExecutor(max_workers=8) as pool:
        total = sum(pool.map(get, keys))
    print(json.dumps({"bytes": total}))


def _spawn(mode: str, url: str) -> tuple[float, dict[str, float]]:
    cache = tempfile.mkdtemp(prefix="embrec-cold-")
    try:
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "bench.cold_start", "--child", mode, url, cache],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        return time.perf_counter() - started, dict(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _replace_cf_matrix(directory: Path, m: int) -> None:
    """Re-save the signals under ``directory`` with a seeded ``m``-item whole CF matrix."""
    from embrec.domain.signals import Signals

    signals = Signals.load(directory)
    signals = replace(signals, cf_matrix=seeded_cf_matrix(len(signals), m))
    shutil.rmtree(directory)
    signals.save(directory)


def main() -> None:
    from bench._data import version_dir
    from bench.rebuild import build_bench_version
    from embrec.app.build import SIGNALS_DIR
    from embrec.aws.artifacts import ArtifactStore
    from embrec_tools.local.aws_endpoint import AwsEndpoint

    print(machine_line())
    n = int(os.environ.get("BENCH_COLD_ITEMS", "100000"))
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    solved = int(os.environ.get("BENCH_COLD_CF_MATRIX", "0"))
    vectors, encoder_id = pypi_vectors()
    version = version_dir(n, encoder_id)
    if not (version / "index" / "manifest.json").is_file():
        print(f"  building the {n:,}-item version (bench rebuild keeps it cached)", flush=True)
        build_bench_version(vectors[:n], pypi_texts()[:n], encoder_id, version)
    endpoint = AwsEndpoint(port=0)
    url = endpoint.start()
    try:
        s3 = _s3(url)
        s3.create_bucket(Bucket=BUCKET)
        with tempfile.TemporaryDirectory() as tmp:
            publish_dir = Path(tmp) / "v"
            shutil.copytree(version, publish_dir)
            if solved:
                _replace_cf_matrix(publish_dir / SIGNALS_DIR, solved)
            result = ArtifactStore(s3, BUCKET, Path(tmp) / "cache").publish_version(
                publish_dir, items_as_of=0
            )
        files = result.manifest["files"]
        artifact_bytes = sum(int(f["size"]) for f in files.values())
        index_bytes = sum(int(f["size"]) for name, f in files.items() if name.startswith("index/"))
        dim = vectors.shape[1]
        runs: dict[str, list[tuple[float, dict[str, float]]]] = {"ours": [], "download": []}
        for _ in range(repeats):
            for mode, done in runs.items():
                done.append(_spawn(mode, url))
        ours = min(runs["ours"], key=lambda r: r[0])
        base = min(runs["download"], key=lambda r: r[0])
    finally:
        endpoint.stop()
    phases = ours[1]
    print(
        f"  {n:,} items, {artifact_bytes / 1e6:.1f} MB in {len(files)} files"
        f"{f' (a seeded whole CF matrix over {solved:,} items)' if solved else ''} "
        f"(moto server on 127.0.0.1, not S3)\n"
        f"  ours  fresh process -> first recommendation {ours[0]:6.2f} s (import {phases['import_s']:.2f}, "
        f"download+verify {phases['download_verify_s']:.2f}, load {phases['load_s']:.2f}, "
        f"first recommend {phases['first_rec_s'] * 1e3:.0f} ms)\n"
        f"  base  fresh process, boto3 download only    {base[0]:6.2f} s ({base[1]['bytes'] / 1e6:.1f} MB)\n"
        f"  ratio ours/download x{ours[0] / base[0]:.2f} (goal <= 1.5); "
        f"overhead over the download {ours[0] - base[0]:.2f} s\n"
        f"  artifact bytes per item {artifact_bytes / n:,.0f} (index only {index_bytes / n:,.0f}); "
        f"raw vector {dim * 4:,} -> x{artifact_bytes / n / (dim * 4):.2f} "
        f"(index only x{index_bytes / n / (dim * 4):.2f}; goal <= 1.3)\n"
        f"  resident memory after load (peak, VmHWM) {phases['rss_after_load_mb']:.0f} MB"
    )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        (_child_ours if sys.argv[2] == "ours" else _child_download)(sys.argv[3], sys.argv[4])
    else:
        main()
