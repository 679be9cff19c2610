"""The layers of src/ point down: import-linter's contracts in pyproject.toml, checked on the real tree."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))  # __future__, __version__


def private_imports(source: str) -> list[str]:
    """The imports of a dependency's private names in ``source``: ``from dep import _x``, ``from dep._m import x``,
    ``import dep._m`` (the project's own ``src.`` modules and relative imports are not a dependency's)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] != "src":
            names = [alias.name for alias in node.names]
            if any(map(_private, node.module.split("."))) or any(map(_private, names)):
                found.append(f"line {node.lineno}: from {node.module} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {alias.name}" for alias in node.names
                      if alias.name.split(".")[0] != "src" and any(map(_private, alias.name.split(".")))]
    return found


def test_every_layer_imports_only_from_the_layers_below():
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_the_python_api_imports_no_training_code():
    """``from src import Predictor`` loads what predicting needs (torch, torchvision), not Lightning, Hydra,
    torchmetrics, matplotlib or the training code; and importing ``src`` alone registers nothing."""
    code = ("import sys\nimport src\nassert not any(m.startswith('src.') for m in sys.modules), 'import src'\n"
            "from src import Predictor\n"
            "print(sorted(m for m in ('lightning', 'hydra', 'torchmetrics', 'matplotlib', 'src.runs.builder', "
            "'src.models.classifier_module', 'src.data.datamodule') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


def test_src_imports_no_private_name_of_a_dependency():
    """A private name (``_SubprocessScriptLauncher``) may change in any release of its library."""
    found = {str(path.relative_to(PROJECT_ROOT)): private_imports(path.read_text())
             for path in sorted((PROJECT_ROOT / "src").rglob("*.py"))}
    assert {path: imports for path, imports in found.items() if imports} == {}


def test_private_imports_are_found_in_every_form():
    assert private_imports("from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher") == [
        "line 1: from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher"]
    assert private_imports("import torch._dynamo\nfrom torch._C import Graph") == [
        "line 1: import torch._dynamo", "line 2: from torch._C import Graph"]
    assert private_imports("from __future__ import annotations\nfrom src.data import _x\nfrom . import _y\n"
                           "from lightning.pytorch.strategies import DDPStrategy\nimport torch.nn") == []
