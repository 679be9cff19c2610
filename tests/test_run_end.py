"""The end of a run does no repeated work: the interpretation figures reuse the last validation's outputs."""

from __future__ import annotations

import json

import pytest
import torch

import src.callbacks.interpretation_logger as interpretation_logger
from tests.conftest import train_tiny_run

pytestmark = pytest.mark.precision  # the logged loss depends on what `auto` picks


def test_interpretation_reuses_the_last_validation_instead_of_a_second_pass(tmp_path, monkeypatch):
    def second_pass(*args, **kwargs):
        raise AssertionError("the validation set was run again at the end of the run")

    seen = {}
    original = interpretation_logger.Interpretation

    def capture(classes, log_probs, targets):
        seen.update(log_probs=log_probs, targets=targets)
        return original(classes, log_probs, targets)

    monkeypatch.setattr(interpretation_logger, "run_loader", second_pass)
    monkeypatch.setattr(interpretation_logger, "Interpretation", capture)
    run = train_tiny_run(tmp_path, [])
    logged = json.loads((run / "metrics.json").read_text())
    split = (run / "split.csv").read_text().splitlines()[1:]
    assert len(seen["log_probs"]) == len(seen["targets"]) == sum(line.endswith(",valid") for line in split)
    # the final model's outputs: their mean cross-entropy is the loss the last validation logged (to
    # rounding: under bf16 autocast the logged loss was computed from the same bf16 logits another way;
    # 3e-4 apart seen, a different model's loss is ~1e-2 or more away)
    loss = -seen["log_probs"].gather(1, seen["targets"].view(-1, 1)).mean()
    assert float(loss) == pytest.approx(logged["final"]["val/loss"], abs=1e-3)
    assert (run / "tensorboard").is_dir() and torch.isfinite(seen["log_probs"]).all()
