"""Bench inputs: cached encoders, the 100k PyPI summary vectors, covariance-matched synthetic vectors.

Everything heavy is cached under ``.cache/bench`` (gitignored, outside the package): the first run encodes the
100k PyPI summaries once (several minutes on 2 cores with the int8 encoder), later runs load the .npy file.
``../shared`` is read only here, only as benchmark input.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embrec.domain.model import Interaction
from embrec.engine.encoder import TextEncoder

if TYPE_CHECKING:
    from embrec.domain.signals import CFMatrix

__all__ = [
    "BENCH_CACHE",
    "CATEGORIES",
    "HISTORY",
    "NOW",
    "ROOT",
    "SEED",
    "TYPES",
    "cached_encoder_dir",
    "cpu_model",
    "encode_pypi_parts",
    "load_encoder",
    "local_aws",
    "machine_line",
    "peak_rss_mb",
    "percentiles_ms",
    "pypi_texts",
    "pypi_vectors",
    "rss_mb",
    "seeded_cf_matrix",
    "synthetic_history",
    "synthetic_interactions",
    "synthetic_like",
    "synthetic_local_like",
    "version_dir",
]

ROOT = Path(__file__).resolve().parents[1]
BENCH_CACHE = ROOT / ".cache" / "bench"
PART_ROWS = 5000
PYPI_TSV = ROOT.parent / "shared" / "datasets" / "pypi-summaries" / "summaries-100k.tsv"


def cached_encoder_dir(quantize: str = "none") -> Path:
    """The encoder build the tests also use, cached under .cache/encoders (cache key: ``cached_build``)."""
    from embrec_tools.encoder_build import cached_build

    return cached_build(ROOT / ".cache" / "encoders", quantize)[0]


def version_dir(n: int, encoder_id: str) -> Path:
    """Where the bench keeps a built index version of ``n`` PyPI items."""
    return BENCH_CACHE / f"version-{n}-{encoder_id}"


def load_encoder(quantize: str = "none", threads: int | None = None) -> TextEncoder:
    """A loaded TextEncoder (threads default: every core this process may use)."""
    return TextEncoder.load(cached_encoder_dir(quantize), threads=threads or len(os.sched_getaffinity(0)))


def pypi_texts() -> list[str]:
    """The 100k PyPI texts, "name: summary" (catalog-like short texts), in file order."""
    with open(PYPI_TSV, encoding="utf-8", newline="") as stream:
        reader = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        return [f"{row[0]}: {row[1]}" for row in reader if len(row) >= 2]


def _part_dir(encoder_id: str) -> Path:
    return BENCH_CACHE / f"pypi-100k-{encoder_id}.parts"


def encode_pypi_parts(quantize: str = "int8", worker: int = 0, workers: int = 1, threads: int = 1) -> None:
    """Encode the PyPI texts in 5,000-row parts (part i handled by worker i % workers), each cached as .npy.

    Parts make the several-minute encode resumable and splittable across processes.
    """
    encoder = load_encoder(quantize, threads=threads)
    texts = pypi_texts()
    parts = _part_dir(encoder.encoder_id)
    parts.mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, len(texts), PART_ROWS)):
        path = parts / f"{start:06d}.npy"
        if number % workers != worker or path.is_file():
            continue
        started = time.perf_counter()
        vectors = encoder.encode(texts[start : start + PART_ROWS], batch_size=128)
        _save_atomic(path, vectors)
        rate = len(vectors) / (time.perf_counter() - started)
        print(f"  part {start:06d}: {len(vectors)} texts ({rate:.0f} texts/s)", flush=True)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy", delete=False) as tmp:
        np.save(tmp, array)
    os.replace(tmp.name, path)


def pypi_vectors(quantize: str = "int8") -> tuple[np.ndarray, str]:
    """float32 (100000, 384) L2-normalised vectors of the PyPI texts and the encoder id, cached as .npy.

    int8 by default: its vectors agree with fp32 at cosine >= 0.99 (bench/encoder.py), far closer than the
    spread between neighbours, and it encodes faster; the ANN figures compare hnswlib with exact search on
    the same vectors, so they do not depend on which encoder produced them. Encodes missing parts first.
    ``BENCH_VECTORS_FILE`` overrides the file (dry runs).
    """
    encoder_id = str(json.loads((cached_encoder_dir(quantize) / "encoder.json").read_text())["encoder_id"])
    override = os.environ.get("BENCH_VECTORS_FILE")  # another (n, dim) float32 .npy, e.g. a quick dry run
    if override:
        return np.load(override, allow_pickle=False), f"{encoder_id}-{Path(override).stem}"
    path = BENCH_CACHE / f"pypi-100k-{encoder_id}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False), encoder_id
    files = sorted(_part_dir(encoder_id).glob("[0-9]*.npy"))
    if os.environ.get("BENCH_PYPI_PARTIAL") and files:
        # A loaded machine can make the full encode take far longer than a run allows: use the parts that
        # exist and fill the rest with covariance-matched synthetic vectors (printed; never cached).
        real = np.concatenate([np.load(f, allow_pickle=False) for f in files])
        total = len(pypi_texts())
        fill = synthetic_like(real, total - real.shape[0], seed=1) if real.shape[0] < total else real[:0]
        print(
            f"  BENCH_PYPI_PARTIAL: {real.shape[0]:,} real PyPI vectors + {fill.shape[0]:,} synthetic "
            "(same covariance) in the middle; the first and the last 1,000 rows are real",
            flush=True,
        )
        return np.concatenate([real[:-1000], fill, real[-1000:]]), encoder_id
    encode_pypi_parts(quantize, threads=len(os.sched_getaffinity(0)))
    files = sorted(_part_dir(encoder_id).glob("[0-9]*.npy"))
    vectors = np.concatenate([np.load(f, allow_pickle=False) for f in files])
    _save_atomic(path, vectors)
    return vectors, encoder_id


def seeded_cf_matrix(n_items: int, m: int, seed: int = 0) -> CFMatrix:
    """A CF model's whole matrix over ``m`` of ``n_items`` signals positions, seeded random values (what it
    costs to store, load and read depends on its shape only). Imported here, not at the top: the cold start
    bench's child imports this module before it starts its clock."""
    from embrec.domain.signals import CFMatrix

    rng = np.random.default_rng(seed)
    items = np.sort(rng.choice(n_items, size=m, replace=False)).astype(np.int64)
    weights = (rng.standard_normal((m, m), dtype=np.float32) * 0.01).astype(np.float16)
    return CFMatrix(items, weights, n_items)


def synthetic_like(real: np.ndarray, n: int, seed: int = 7, chunk: int = 100_000) -> np.ndarray:
    """float32 (n, dim) unit vectors drawn from N(mean, cov) of ``real`` (float32 (m, dim)), then normalised.

    Matches the real vectors' anisotropy (low intrinsic dimension), which is what makes HNSW work on real
    embeddings; isotropic random vectors are far harder and give misleading recall.
    """
    real64 = real.astype(np.float64)
    mean = real64.mean(axis=0)
    cov = np.cov(real64, rowvar=False)
    eigval, eigvec = np.linalg.eigh(cov)
    transform = (eigvec * np.sqrt(np.clip(eigval, 0.0, None))).T.astype(np.float32)  # (dim, dim)
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        z = rng.standard_normal((rows, real.shape[1]), dtype=np.float32)
        block = z @ transform + mean.astype(np.float32)
        out[start : start + rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def synthetic_local_like(real: np.ndarray, n: int, seed: int = 7, chunk: int = 100_000) -> np.ndarray:
    """float32 (n, dim) unit vectors: each a random row of ``real`` (float32 (m, dim), unit rows) moved by
    N(0, h^2 cov(real)) noise, then normalised (a smoothed bootstrap: a kernel density estimate of ``real``).

    ``h`` makes the mean squared move equal to the median squared distance from a real row to its nearest
    real neighbour (on a 2,000-row sample), so a drawn vector sits as far from its source as real neighbours
    sit from each other. The covariance is ``(1 + h^2)`` times the real one before normalising, and unlike
    :func:`synthetic_like` the neighbourhoods keep the real data's local structure: a single Gaussian with
    the real covariance has none (every point is nearly equidistant from the others in 384-d), which makes
    HNSW recall collapse in a way real catalogues do not.
    """
    rng = np.random.default_rng(seed)
    real64 = real.astype(np.float64)
    cov = np.cov(real64, rowvar=False)
    eigval, eigvec = np.linalg.eigh(cov)
    transform = (eigvec * np.sqrt(np.clip(eigval, 0.0, None))).T  # z @ transform ~ N(0, cov)
    sample = real[rng.choice(real.shape[0], size=min(2000, real.shape[0]), replace=False)]
    similarity = sample @ real.T
    similarity[similarity > 1.0 - 1e-6] = -np.inf  # the row itself (and exact duplicates)
    nearest_sq = 2.0 - 2.0 * similarity.max(axis=1).astype(np.float64)
    h = float(np.sqrt(np.median(nearest_sq) / np.trace(cov)))
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        source = real[rng.integers(0, real.shape[0], size=rows)]
        z = rng.standard_normal((rows, real.shape[1]), dtype=np.float32)
        block = source + (h * z) @ transform.astype(np.float32)
        out[start : start + rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


@contextmanager
def local_aws() -> Iterator[Any]:
    """In-process moto (``mock_aws``) with template.yaml's bucket, queues and tables; yields the clients.

    Figures measured against it are moto's, not AWS's: they show our client-side cost plus moto's.
    """
    from moto import mock_aws

    from embrec.aws import clients as aws
    from embrec.config import Settings
    from embrec_tools.template import create_local_resources, load_template, local_names

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    settings = Settings(region="us-east-1", aws_endpoint=None)
    with mock_aws():
        aws.clients.cache_clear()
        bundle = aws.clients(settings)
        create_local_resources(load_template(), bundle, local_names(settings), region=settings.region)
        try:
            yield bundle
        finally:
            aws.clients.cache_clear()


def percentiles_ms(seconds: list[float] | np.ndarray) -> tuple[float, float]:
    """(p50, p99) in milliseconds of a list of durations in seconds."""
    values = np.asarray(seconds, dtype=np.float64) * 1e3
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _openblas_config() -> str:
    """numpy's bundled OpenBLAS config string with the kernel it chose (ctypes; no threadpoolctl needed)."""
    import ctypes
    import glob

    for path in glob.glob(str(Path(np.__file__).parent) + ".libs/*openblas*"):
        library = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_config64_", "openblas_get_config64_", "openblas_get_config"):
            getter = getattr(library, name, None)
            if getter is not None:
                getter.restype = ctypes.c_char_p
                return bytes(getter()).decode(errors="replace")
    return "unknown"


def machine_line() -> str:
    """CPU model, usable cores, and the BLAS kernel numpy runs (threadpoolctl when installed)."""
    blas = "unknown"
    try:
        from threadpoolctl import threadpool_info

        infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if infos:
            blas = ", ".join(
                f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}" for i in infos
            )
    except ImportError:
        blas = _openblas_config()
    coretype = os.environ.get("OPENBLAS_CORETYPE", "")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    cores = len(os.sched_getaffinity(0))
    return f"cpu: {cpu_model()}, {cores} cores (load average {load}); numpy BLAS: {blas}" + (
        f"; OPENBLAS_CORETYPE={coretype}" if coretype else ""
    )


if __name__ == "__main__":  # python -m bench._data [WORKER WORKERS]: encode PyPI parts (resumable)
    if len(sys.argv) == 3:
        encode_pypi_parts(worker=int(sys.argv[1]), workers=int(sys.argv[2]))
    else:
        print(pypi_vectors()[0].shape)


def rss_mb(pid: int | None = None) -> float:
    """Resident set size (VmRSS) of process ``pid`` (default: this one), MB (Linux /proc); NaN without it."""
    for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), MB; ru_maxrss only where /proc is missing: Linux
    carries a parent's peak into a child it starts, so a child's ru_maxrss can be the parent's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------ synthetic users (request path, rebuild)

SEED = 11
HISTORY = 200
NOW = 1_790_000_000.0
TYPES = ("view", "view", "view", "click", "click", "add_to_cart", "like", "purchase")
CATEGORIES = [f"cat{i:02d}" for i in range(20)]


def synthetic_history(
    vectors: np.ndarray, ids: list[str], n: int = HISTORY, seed: int = SEED
) -> list[Interaction]:
    """``n`` events on items clustered around 4 anchor items (a user with a few interests), newest last."""
    rng = np.random.default_rng(seed)
    anchors = rng.choice(len(ids), size=4, replace=False)
    picked: list[int] = []
    for anchor in anchors:
        scores = vectors @ vectors[anchor]
        near = np.argpartition(-scores, 3 * n)[: 3 * n]
        picked.extend(int(i) for i in rng.choice(near, size=n // 4, replace=False) if int(i) not in picked)
    picked = list(dict.fromkeys(picked))[:n]
    times = np.sort(NOW - rng.uniform(0, 60 * 86_400, size=len(picked)))
    return [
        Interaction(ids[i], str(rng.choice(TYPES)), float(t), event_id=f"e{j}")
        for j, (i, t) in enumerate(zip(picked, times, strict=True))
    ]


def synthetic_interactions(
    ids: list[str], users: int = 3000, per_user: int = 30, seed: int = SEED
) -> list[tuple[str, Interaction]]:
    """Zipf-popular events (``users`` x ``per_user``) over the last 30 days, for CF and trending signals."""
    rng = np.random.default_rng(seed)
    ranks = rng.zipf(1.3, size=users * per_user) % len(ids)
    order = rng.permutation(len(ids))
    times = NOW - rng.uniform(0, 30 * 86_400, size=users * per_user)
    return [
        (
            f"u{k // per_user}",
            Interaction(ids[int(order[r])], str(rng.choice(TYPES)), float(t), event_id=f"s{k}"),
        )
        for k, (r, t) in enumerate(zip(ranks, times, strict=True))
    ]
