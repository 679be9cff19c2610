"""The last line of ``python -m src.train``: the validation result, or why there is none."""

from __future__ import annotations

import json

from src.train import final_result_line
from tests.conftest import train_tiny_run


def test_a_run_stopped_before_its_first_validation_says_so_instead_of_nan(tmp_path):
    # configuration.md's `+trainer.max_steps=10` on the demo stops inside epoch 1, before any validation
    run = train_tiny_run(tmp_path, ["+trainer.max_steps=1"], classes=2, per_class=20)
    metrics = json.loads((run / "metrics.json").read_text())["final"]  # what train() returns of val/
    line = final_result_line(metrics)
    assert line.startswith("final val/error_rate: none (no validation ran") and "nan" not in line
    assert json.loads((run / "metrics.json").read_text())["best"] == {}  # valid JSON: no NaN
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert final_result_line({"val/error_rate": 0.25, "val/error_rate_best": 0.2}) == \
        "final val/error_rate: 0.2500 (best 0.2000)"
