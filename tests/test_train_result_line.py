"""The last line of ``python -m src.train``: the validation result, or why there is none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY_OVERRIDES, copy_sample

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_a_run_stopped_before_its_first_validation_says_so_instead_of_nan(tmp_path):
    # configuration.md's `+trainer.max_steps=10` on the demo stops inside epoch 1, before any validation
    root = copy_sample(tmp_path / "photos", classes=2, per_class=20)
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "src.train", *TINY_OVERRIDES, f"data.root={root}",
                           "+trainer.max_steps=1", f"hydra.run.dir={run_dir}"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("final val/error_rate: none (no validation ran"), last
    assert "nan" not in last
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
