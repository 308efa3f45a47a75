"""The one-way arrow: hyperfit/common never imports the modality packages, and importing hyperfit has no side effects."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

COMMON = Path(__file__).resolve().parents[1] / "hyperfit" / "common"


def test_common_imports_nothing_from_text_image_or_recipes():
    offenders = []
    for path in COMMON.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[:2] in (["hyperfit", "text"], ["hyperfit", "image"], ["hyperfit", "recipes"])
            ]
    assert offenders == []


def test_importing_hyperfit_loads_no_model_and_no_torch():
    code = "import sys, hyperfit, hyperfit.common; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "False"
