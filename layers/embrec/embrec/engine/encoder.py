"""The runtime text encoder: tokenizers + ONNX Runtime + numpy pooling. No torch.

``TextEncoder.load(directory)`` verifies every file against ``encoder.json`` (sha256 and size) before opening
it, then ``encode(texts)`` returns L2-normalised float32 sentence vectors. Texts are batched by token length
(less padding, same results) and returned in the caller's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embrec.errors import CompatibilityError, InvalidInputError
from embrec.manifest import read_json, verify_files

__all__ = ["TextEncoder", "l2_normalize", "pool"]

ENCODER_MANIFEST = "encoder.json"
_POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str = "mean") -> np.ndarray:
    """Sentence vectors from token vectors.

    hidden: float32 (batch, seq, dim); mask: int (batch, seq), 1 for real tokens, 0 for padding.
    Returns float32 (batch, dim). Every row has at least one real token ([CLS]), so no division by zero.
    """
    if mode == "cls":
        return np.ascontiguousarray(hidden[:, 0, :], dtype=np.float32)
    weights = mask.astype(np.float32)[:, :, None]
    if mode == "max":
        return np.where(weights > 0, hidden, np.float32(-1e9)).max(axis=1).astype(np.float32)
    summed = np.einsum("bsd,bs->bd", hidden, weights[:, :, 0], dtype=np.float32)
    counts = np.maximum(weights.sum(axis=1), 1e-9)
    if mode == "mean_sqrt_len":
        return (summed / np.sqrt(counts)).astype(np.float32)
    return (summed / counts).astype(np.float32)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32 (n, dim) -> float32 (n, dim)); zero rows stay zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class TextEncoder:
    """A loaded encoder directory. Construct with :meth:`load`; cheap to keep for the process lifetime."""

    def __init__(self, session: Any, tokenizer: Any, manifest: dict[str, Any]) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self.manifest = manifest
        self.encoder_id: str = str(manifest["encoder_id"])
        self.dim: int = int(manifest["dim"])
        self.max_seq_length: int = int(manifest["max_seq_length"])
        self.pooling: str = str(manifest.get("pooling", "mean"))
        if self.pooling not in _POOLING_MODES:
            raise CompatibilityError(f"encoder.json: unsupported pooling {self.pooling!r}")
        self._input_names = {item.name for item in session.get_inputs()}

    @classmethod
    def load(cls, directory: Path, threads: int | None = None) -> TextEncoder:
        """Verify ``directory`` against its encoder.json and open it.

        ``threads``: ONNX Runtime intra-op threads (default ``Settings.encoder_threads``).
        Raises IntegrityError when a file is missing or its size/sha256 differs from encoder.json.
        """
        import onnxruntime as ort
        from tokenizers import Tokenizer

        directory = Path(directory)
        manifest = read_json(directory / ENCODER_MANIFEST)
        files = manifest.get("files")
        if not isinstance(files, dict) or "model.onnx" not in files or "tokenizer.json" not in files:
            raise CompatibilityError("encoder.json: files must list model.onnx and tokenizer.json")
        verify_files(directory, files)
        if threads is None:
            from embrec.config import get_settings

            threads = get_settings().encoder_threads
        if threads < 1:
            raise InvalidInputError("threads", f"must be >= 1, got {threads}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(
            str(directory / "model.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
        )
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=int(manifest["max_seq_length"]))
        return cls(session, tokenizer, manifest)

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, *, sort_by_length: bool = True
    ) -> np.ndarray:
        """Sentence vectors for ``texts``: float32 (len(texts), dim), each row L2-normalised.

        Texts are truncated at ``max_seq_length`` tokens; empty or blank strings encode as [CLS][SEP].
        Batches group texts of similar token length (less padding); rows come back in the order of ``texts``.
        ``sort_by_length=False`` batches in the given order (for benchmarks; results are the same).
        """
        if isinstance(texts, str):
            raise InvalidInputError("texts", "must be a sequence of strings, not one string")
        if batch_size < 1:
            raise InvalidInputError("batch_size", f"must be >= 1, got {batch_size}")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch([str(text) for text in texts], add_special_tokens=True)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(lengths, kind="stable") if sort_by_length else np.arange(len(texts))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._encode_batch([encodings[i] for i in rows], int(lengths[rows].max()))
        return out

    def _encode_batch(self, encodings: Sequence[Any], width: int) -> np.ndarray:
        """(batch, dim) float32 normalised vectors for tokenised texts, padded to ``width`` tokens."""
        n = len(encodings)
        ids = np.zeros((n, width), dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            length = len(encoding.ids)
            ids[row, :length] = encoding.ids
            mask[row, :length] = 1
            types[row, :length] = encoding.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feeds = {name: value for name, value in feeds.items() if name in self._input_names}
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        return l2_normalize(pool(hidden, mask, self.pooling))
