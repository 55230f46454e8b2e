"""``ingest_rows`` writes each batch in the background while the next one is encoded: every write has
finished when it returns, a failed write is raised (never swallowed), and one write at most is in flight."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import cast

import numpy as np
import pytest

from embrec.app.ingest import IngestOutcome, ingest_rows
from embrec.aws.store import ItemStore
from embrec.domain.catalog import read_catalog
from embrec.domain.model import ItemState, StoredItem


class SlowStore:
    """An items table whose writes take a while (network wait in AWS); ``fail_on``: the write that fails."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.rows: dict[str, StoredItem] = {}
        self.writes = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def states_for(self, item_ids: Iterable[str]) -> dict[str, ItemState]:
        return {i: ItemState(self.rows[i].content_hash) for i in item_ids if i in self.rows}

    def upsert(self, items: Iterable[StoredItem]) -> int:
        with self._lock:
            self.writes += 1
            number = self.writes
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(0.05)
            if number == self.fail_on:
                raise ConnectionError(f"write {number} failed")
            records = list(items)
            self.rows.update((record.item_id, record) for record in records)
            return len(records)
        finally:
            with self._lock:
                self.in_flight -= 1


def _rows(n: int) -> io.BytesIO:
    lines = [json.dumps({"item_id": f"i{j}", "title": f"Item {j}"}) for j in range(n)]
    return io.BytesIO("\n".join(lines).encode())


def _encode(texts: Sequence[str]) -> np.ndarray:
    return np.ones((len(texts), 4), dtype=np.float32)


def _ingest(store: SlowStore, encode: Callable[[Sequence[str]], np.ndarray]) -> IngestOutcome:
    """50 rows in batches of 8: seven writes."""
    return ingest_rows(read_catalog(_rows(50), "jsonl"), cast(ItemStore, store), encode, encoder_id="e",
                       batch_size=8)


def test_writes_overlap_encoding_and_all_finish_before_ingest_returns() -> None:
    store = SlowStore()
    overlapped: list[bool] = []

    def encode(texts: Sequence[str]) -> np.ndarray:
        overlapped.append(store.in_flight > 0)  # is the previous batch's write still under way?
        return _encode(texts)

    outcome = _ingest(store, encode,)
    assert outcome.counts.accepted == 50 and outcome.counts.adds_up()
    assert sorted(store.rows) == sorted(f"i{j}" for j in range(50))  # the last batch too
    assert store.writes == 7 and store.max_in_flight == 1
    assert not overlapped[0] and any(overlapped[1:])  # batch n + 1 encoded while batch n was written


def test_a_failed_background_write_is_raised() -> None:
    store = SlowStore(fail_on=3)
    with pytest.raises(ConnectionError, match="write 3 failed"):
        _ingest(store, _encode,)


def test_a_failed_last_write_is_raised_too() -> None:
    store = SlowStore(fail_on=7)
    with pytest.raises(ConnectionError, match="write 7 failed"):
        _ingest(store, _encode,)
