"""The layers of src/ point down: import-linter's contracts in pyproject.toml, checked on the real tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

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
