"""The one-way arrow: hyperfit/common never imports or mentions a modality, no module imports itself back through
another, and importing hyperfit has no side effects."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hyperfit"
COMMON = PACKAGE / "common"
# Words that only a modality package has any business saying. Architecture names (Llama, GPT-2, ImageGPT) are
# not modalities: generic code may know how such a model attends or where its blocks are.
MODALITY_WORDS = re.compile(
    r"\b(images?|pixels?|stripes?|stripe_score|psnr|palettes?|vq-?vae|cifar\w*|"
    r"text side|text runs?|text only|texts? and images?|fit-text|fit-image)\b",
    re.IGNORECASE,
)


def imports(path: Path) -> list[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_common_imports_nothing_from_text_image_or_recipes():
    offenders = [
        f"{path.relative_to(COMMON)}: {name}"
        for path in COMMON.rglob("*.py")
        for name in imports(path)
        if name.split(".")[:2] in (["hyperfit", "text"], ["hyperfit", "image"], ["hyperfit", "recipes"])
    ]
    assert offenders == []


# Known exceptions, each with its reason. runs.py recognises which command made a run whose config.json predates
# the recorded "command" field by a field only that command has; those lines name the commands.
EXCEPTIONS = {("runs.py", "_recorded_command")}


def _enclosing_function(path: Path, number: int) -> str | None:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef) and node.lineno <= number <= (node.end_lineno or node.lineno):
            return node.name
    return None


def test_common_mentions_no_modality():
    files = [*COMMON.rglob("*.py"), *COMMON.rglob("*.html"), *COMMON.rglob("*.md")]
    offenders = [
        f"{path.relative_to(COMMON)}:{number}: {match.group(0)}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for match in MODALITY_WORDS.finditer(line)
        if path.suffix != ".py" or (path.name, _enclosing_function(path, number)) not in EXCEPTIONS
    ]
    assert offenders == []


def test_no_import_cycle_between_hyperfit_modules():
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {
        name: {target for target in imports(path) if target in modules and target != name}
        for name, path in modules.items()
    }

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), list(graph[start])
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo += graph[node]
        return False

    # A package's __init__ re-exporting its modules is not a cycle; a module importing back its importer is.
    cycles = [
        f"{a} <-> {b}"
        for a in graph
        for b in graph[a]
        if reaches(b, a) and not (a.startswith(b + ".") or b.startswith(a + "."))
    ]
    assert cycles == []


def test_importing_hyperfit_loads_no_model_and_no_torch():
    code = "import sys, hyperfit, hyperfit.common; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "False"
