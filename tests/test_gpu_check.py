"""`make gpu-check` on a machine without CUDA: it stops at once with one line naming why, exit status 2
(on a GPU it runs the `gpu` tests and the measurements: docs/testing.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import PROJECT_ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: make gpu-check would run the whole check")
def test_make_gpu_check_without_cuda_fails_at_once_with_one_line():
    # As a user runs it: not as a sub-make of `make test` (whose MAKEFLAGS would reach this make).
    no_gpu = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    no_gpu["CUDA_VISIBLE_DEVICES"] = ""
    script = subprocess.run([sys.executable, "scripts/gpu_check.py"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=120, env=no_gpu)
    assert script.returncode == 2 and script.stdout == "", (script.stdout, script.stderr)  # the script's own status
    done = subprocess.run(["make", "--no-print-directory", "gpu-check"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120, env=no_gpu)
    assert done.returncode == 2, (done.stdout, done.stderr)  # make's status for a failed recipe
    lines = [line for line in done.stderr.splitlines() if not re.match(r"make(\[\d+\])?: ", line)]  # make's "Error 2"
    assert len(lines) == 1 and lines[0].startswith("no CUDA device: torch "), done.stderr
    assert "make gpu-check needs one CUDA GPU" in lines[0] and "written" not in done.stdout


def test_the_gpu_measurements_compose_as_docs_performance_describes():
    """ResNet50 at 224 px, bf16-mixed, channels_last, batch 256 on one GPU, for each decode path."""
    import importlib.util

    from tests.conftest import compose_config

    spec = importlib.util.spec_from_file_location("gpu_check", PROJECT_ROOT / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    for decode_on, overrides in gpu_check.DECODE_PATHS.items():
        cfg = compose_config([*gpu_check.BENCH, "data.root=/photos", *overrides], config_name="bench")
        assert (cfg.model.backbone.name, cfg.data.size, cfg.data.batch_size) == ("resnet50", 224, 256)
        assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.precision) == ("gpu", 1, "bf16-mixed")
        assert cfg.model.channels_last is True and cfg.data.decode_on == decode_on
        assert not cfg.bench.accuracy.enabled and list(cfg.bench.variants) == []  # the minutes-long parts left out
