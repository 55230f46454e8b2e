"""Loading a saved index: the vectors read back out of hnswlib's file, whatever order it stored them in."""

from __future__ import annotations

from pathlib import Path

import hnswlib
import numpy as np
import pytest

from embrec.engine.index import VectorIndex, read_graph_vectors
from embrec.errors import IntegrityError


def _graph_file(path: Path, vectors: np.ndarray, labels: np.ndarray) -> None:
    graph = hnswlib.Index(space="ip", dim=vectors.shape[1])
    graph.init_index(max_elements=vectors.shape[0], M=8, ef_construction=32, random_seed=1)
    graph.add_items(vectors, labels, num_threads=1)  # records are stored in insertion order
    graph.save_index(str(path))


@pytest.mark.parametrize("order", ["labels ascending", "labels shuffled"])
def test_read_graph_vectors_orders_rows_by_label(tmp_path: Path, order: str) -> None:
    rng = np.random.default_rng(3)
    n, dim = 300, 12
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.arange(n) if order == "labels ascending" else rng.permutation(n)
    _graph_file(tmp_path / "graph.hnsw", vectors, labels)
    on_disk = (tmp_path / "graph.hnsw").read_bytes()

    read = read_graph_vectors(tmp_path / "graph.hnsw", dim, n)

    expected = np.empty_like(vectors)
    expected[labels] = vectors
    np.testing.assert_array_equal(read, expected)
    # rows moved into label order in a private mapping: the verified file itself is never written
    assert not read.flags.writeable
    del read
    assert (tmp_path / "graph.hnsw").read_bytes() == on_disk


def test_read_graph_vectors_refuses_a_layout_it_does_not_understand(tmp_path: Path) -> None:
    vectors = np.eye(20, 8, dtype=np.float32) + 0.1
    _graph_file(tmp_path / "graph.hnsw", vectors, np.arange(20))
    with pytest.raises(IntegrityError, match="layout"):
        read_graph_vectors(tmp_path / "graph.hnsw", 16, 20)  # wrong dim
    with pytest.raises(IntegrityError, match="layout"):
        read_graph_vectors(tmp_path / "graph.hnsw", 8, 21)  # wrong count
    data = (tmp_path / "graph.hnsw").read_bytes()
    (tmp_path / "short.hnsw").write_bytes(data[: len(data) // 2])
    with pytest.raises(IntegrityError):
        read_graph_vectors(tmp_path / "short.hnsw", 8, 20)
    (tmp_path / "tiny.hnsw").write_bytes(data[:10])
    with pytest.raises(IntegrityError, match="header"):
        read_graph_vectors(tmp_path / "tiny.hnsw", 8, 20)


def test_read_graph_vectors_refuses_labels_that_are_not_the_positions(tmp_path: Path) -> None:
    vectors = np.eye(20, 8, dtype=np.float32) + 0.1
    _graph_file(tmp_path / "graph.hnsw", vectors, np.arange(20))
    data = bytearray((tmp_path / "graph.hnsw").read_bytes())
    header = np.frombuffer(bytes(data[:48]), dtype="<u8")
    record, label_offset = int(header[3]), int(header[4])
    first_label = 96 + label_offset  # record 0 gets the label of record 1: a duplicate
    data[first_label : first_label + 8] = np.asarray([1], dtype="<u8").tobytes()
    (tmp_path / "dup.hnsw").write_bytes(bytes(data))
    assert record > label_offset
    with pytest.raises(IntegrityError, match="labels"):
        read_graph_vectors(tmp_path / "dup.hnsw", 8, 20)


def test_a_loaded_index_searches_from_the_mapped_file_and_still_takes_upserts(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(200, 16)).astype(np.float32)
    ids = [f"item-{i:03d}" for i in range(200)]
    built = VectorIndex.build(ids, vectors, num_threads=1)
    built.save(tmp_path / "v")

    loaded = VectorIndex.load(tmp_path / "v")

    # The vectors were not copied out of the graph file (read-only view on its memory map) ...
    assert not loaded._vectors.flags.writeable and not loaded._vectors.flags.c_contiguous
    np.testing.assert_array_equal(loaded.vectors_for(ids[:5]), built.vectors_for(ids[:5]))
    query = rng.normal(size=16).astype(np.float32)
    exclude = ids[:150]  # a small allowed set: the exact path over the stored vectors
    assert loaded.search(query, 10) == built.search(query, 10)
    assert loaded.search(query, 10, exclude=exclude) == built.search(query, 10, exclude=exclude)
    # ... and an upsert moves them into memory instead of writing into the file
    loaded.upsert(["new"], query.reshape(1, -1))
    assert loaded.search(query, 1) == [("new", pytest.approx(1.0))]
    assert VectorIndex.load(tmp_path / "v").search(query, 10) == built.search(query, 10)
