"""The layout is the architecture: the layer holds the runtime only, and the floors import downwards.

``make lint`` checks the import directions with import-linter ([tool.importlinter] in pyproject.toml); these
tests check what a contract on module names cannot: what the layer folder ships, and what loading one part of
it drags in at run time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "embrec" / "embrec"
TOOLS = ("cli", "demo", "datasets", "evaluation", "encoder_build", "template", "local", "report", "console")


def test_the_layer_ships_no_operator_tooling() -> None:
    shipped = {p.stem for p in LAYER.rglob("*.py")} | {p.name for p in LAYER.rglob("*") if p.is_dir()}
    assert not shipped & set(TOOLS)
    assert (ROOT / "infra" / "embrec_tools" / "cli.py").is_file()


def test_the_layer_lists_its_roles() -> None:
    roles = {p.name for p in LAYER.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert roles == {"app", "aws", "domain", "edge", "engine"}


def _loaded_after(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(out.split())


@pytest.mark.parametrize(
    ("module", "never"),
    [
        # parsing a request never loads the index backend or the encoder
        ("embrec.edge.contract", {"hnswlib", "onnxruntime", "boto3", "embrec.engine.index"}),
        # the pure domain loads no AWS, ONNX, hnswlib or Powertools
        ("embrec.domain.ranking", {"hnswlib", "onnxruntime", "boto3", "aws_lambda_powertools"}),
        ("embrec.domain.reporting", {"hnswlib", "onnxruntime", "boto3", "aws_lambda_powertools"}),
        # the composition root every function imports loads no tooling, YAML or emulator
        ("embrec.app.service", {"embrec_tools", "yaml", "moto"}),
    ],
)
def test_a_module_loads_only_its_floor(module: str, never: set[str]) -> None:
    loaded = _loaded_after(module)
    assert not {name for name in loaded if name.split(".")[0] in never or name in never}
