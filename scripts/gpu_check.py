"""`make gpu-check`: on one CUDA GPU, the GPU tests (`pytest -m gpu`), then the GPU measurements of
docs/performance.md: `python -m src.bench bench=resnet50_224` at 224 px, bf16-mixed, channels_last, batch 256,
once with the loader workers decoding (`data.decode_on=workers`, both `data.augment.on` paths) and once with
nvJPEG (`data.decode_on=device`). Writes benchmarks/gpu-check-<date>.json: the tests' outcome, each run's
images/s (Train and the bare-loop Floor), Train / Floor, and the loader workers' CPU milliseconds per image.

Without a CUDA device it stops at once: one line, exit status 2. Sized for under 8 minutes on one GPU with
16 cores (the accuracy check and the precision variants of the bench are left out).
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JPEGS = ROOT / "data" / "fashion-mnist-jpeg400"  # `make bench-data`; written from the committed sample when absent
SAMPLE = ROOT / "data" / "fashion-mnist-sample"
BENCH = ["bench=resnet50_224", "trainer=gpu", "data.size=224", "data.batch_size=256", "trainer.precision=bf16-mixed",
         "model.channels_last=true", "bench.accuracy.enabled=false", "bench.variants=[]", "bench.data_batches=4"]
DECODE_PATHS = {"workers": ["data.decode_on=workers", "bench.data_paths=[workers,device]"],
                "device": ["data.decode_on=device", "data.augment.on=device", "bench.data_paths=[device]"]}


def no_cuda_reason() -> str | None:
    """Why this machine cannot run the check, or None when torch sees a CUDA device."""
    import torch

    if torch.cuda.is_available():
        return None
    build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return (f"no CUDA device: torch {torch.__version__} ({build}) sees none; make gpu-check needs one CUDA GPU "
            "(docs/testing.md, GPU tests)")


def jpeg_folder(scratch: Path) -> Path:
    """400x400 JPEGs (quality 90) as `make bench-data` writes them; from the committed sample where that
    folder is missing (a GPU machine without Debian's dataset-fashion-mnist)."""
    if JPEGS.is_dir():
        return JPEGS
    from PIL import Image

    out = scratch / "jpeg400"
    for folder in sorted(p for p in SAMPLE.iterdir() if p.is_dir()):
        (out / folder.name).mkdir(parents=True)
        for path in sorted(folder.glob("*.png"))[:300]:
            Image.open(path).convert("RGB").resize((400, 400), Image.BILINEAR).save(
                out / folder.name / f"{path.stem}.jpg", quality=90)
    return out


def summary(bench: dict) -> dict:
    """The figures docs/performance.md reports from one bench.json."""
    return {
        "train_images_per_s": bench["train"]["images_per_s"],
        "floor_images_per_s": bench["floor"]["images_per_s"],
        "train_over_floor": bench["ratios"]["train_over_floor"],
        "data_paths": bench["data_paths"],  # per data.augment.on path: one worker's images/s and CPU ms per image
        "settings": bench["settings"],
    }


def main() -> int:
    reason = no_cuda_reason()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    import torch

    from src.bench.environment import machine, versions

    started = time.monotonic()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "tests"], cwd=ROOT)
    tests_s = time.monotonic() - started
    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = jpeg_folder(Path(scratch))
        for path, overrides in DECODE_PATHS.items():
            out = Path(scratch) / f"bench-{path}"
            command = [sys.executable, "-m", "src.bench", *BENCH, f"data.root={root}", *overrides,
                       f"hydra.run.dir={out}", f"bench.output={out / 'bench.json'}"]
            done = subprocess.run(command, cwd=ROOT)
            runs[f"decode_on={path}"] = (summary(json.loads((out / "bench.json").read_text())) if done.returncode == 0
                                         else {"failed": done.returncode})
    host = machine()
    date = datetime.date.today().isoformat()
    record = {
        "command": "make gpu-check (scripts/gpu_check.py): pytest -m gpu, then python -m src.bench " + " ".join(BENCH)
                   + " with each of " + "; ".join(" ".join(o) for o in DECODE_PATHS.values()),
        "date": date,
        "cpu": host["cpu"],
        "native_bf16": bool(host["cpu_native_bf16"]),
        "gpu": torch.cuda.get_device_name(),
        "machine": host,
        "versions": versions(),
        "tests": {"exit_status": tests.returncode, "seconds": round(tests_s, 1)},
        "runs": runs,
        "seconds": round(time.monotonic() - started, 1),
    }
    output = ROOT / "benchmarks" / f"gpu-check-{date}.json"
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {output} ({record['seconds']} s)")
    failed = tests.returncode != 0 or any("failed" in run for run in runs.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
