"""The layout is the architecture: the layer holds the runtime only, and the floors import downwards.

``make lint`` checks the import directions with import-linter ([tool.importlinter] in pyproject.toml); these
tests check what a contract on module names cannot: what the layer folder ships, and what loading one part of
it drags in at run time.
"""

from __future__ import annotations

import re
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


def test_the_sasrec_anchor_stays_outside_the_product() -> None:
    # bench/anchors runs in its own venv (torch, RecTools): no product or test module imports it or its
    # libraries, no runtime requirement names them, and `python -m bench` does not run it
    from bench.__main__ import available

    assert "anchors" not in available()
    imports = re.compile(r"^\s*(?:import|from)\s+(?:torch|rectools|pytorch_lightning|anchor_files)\b", re.M)
    product = [*(ROOT / "layers").rglob("*.py"), *(ROOT / "infra").rglob("*.py"),
               *(ROOT / "functions").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    assert [p for p in product if imports.search(p.read_text())] == []
    assert not re.search(r"^(torch|rectools)\b", (ROOT / "layers/embrec/requirements.txt").read_text(), re.M)
