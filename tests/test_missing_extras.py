"""Every optional extra, missing: the command that needs it ends in one line naming the extra and its install
command, with exit status 2 and no traceback, before any heavy work (no checkpoint read, nothing written).

Each command runs as the user runs it (``python -m src.X``), in a subprocess whose importer cannot see the
extra's modules (tests/hidden_modules/sitecustomize.py): as if the extra were not installed, without
uninstalling anything.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from src.core.extras import EXTRA_MODULES, install_command
from tests.conftest import PROJECT_ROOT, TINY_OVERRIDES, copy_sample, require_extra, train_tiny_run

HIDER = Path(__file__).resolve().parent / "hidden_modules"
# What the hidden packages of an extra bring besides the modules the project imports.
ALSO_HIDDEN = {"optuna": ("optuna",), "slurm": ("submitit",), "litdata": ("boto3",)}
TIMEOUT_S = 300  # two cores shared with other jobs: a command imports torch, Lightning and Hydra first


def run_without(extra: str, *command: str) -> subprocess.CompletedProcess:
    """``python -m command`` with the modules of ``extra`` hidden from its importer."""
    hidden = EXTRA_MODULES[extra] + ALSO_HIDDEN.get(extra, ())
    env = {**os.environ, "HIDDEN_MODULES": ",".join(hidden),
           "PYTHONPATH": os.pathsep.join([str(HIDER), str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", *command], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def ckpt(module_tmp_path) -> Path:
    return train_tiny_run(module_tmp_path / "trained", [], classes=3, per_class=4) / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def root(module_tmp_path) -> Path:
    return copy_sample(module_tmp_path / "images", classes=2, per_class=4)


TRAIN = ["src.train", *TINY_OVERRIDES]
# extra -> (the command, as its arguments after `python -m`, with {ckpt}, {root} and {out}; what must not exist after)
COMMANDS = {
    "export": (["src.export", "ckpt_path={ckpt}", "format=onnx", "hydra.run.dir={out}"], "{out}/model.onnx"),
    "export backend=onnx": (["src.serve", "ckpt_path={ckpt}", "backend=onnx", "port=0", "hydra.run.dir={out}"],
                            "{out}/model.onnx"),
    "serve": (["src.serve", "ckpt_path={ckpt}", "port=0", "hydra.run.dir={out}"], "{out}/model.onnx"),
    "serve inspect": (["src.inspect", "serve=true", "data.root={root}", "model.backbone.weights=null", "port=0",
                       "hydra.run.dir={out}"], "{out}/summary.txt"),
    "timm": ([*TRAIN, "model.backbone.name=timm/resnet18", "data.root={root}", "hydra.run.dir={out}"], "{out}"),
    "wandb": ([*TRAIN, "logger=wandb", "data.root={root}", "hydra.run.dir={out}"], "{out}"),
    "mlflow": ([*TRAIN, "logger=mlflow", "data.root={root}", "hydra.run.dir={out}"], "{out}"),
    "litdata": (["src.prepare", "data.root={root}", "output={out}/shards", "hydra.run.dir={out}"], "{out}/shards"),
    "optuna": ([*TRAIN, "hparams_search=optuna", "data.root={root}", "hydra.run.dir={out}"], "{out}"),
    "slurm": (["src.train", "-m", *TINY_OVERRIDES, "hydra/launcher=submitit_slurm", "data.root={root}", "hydra.sweep.dir={out}"], "{out}"),
    "audit": (["src.audit", "data.root={root}", "hydra.run.dir={out}"], "{out}/report.html"),
}


def test_every_extra_has_a_test_and_its_modules():
    extras = set(tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert set(EXTRA_MODULES) == extras - {"dev"}
    assert {case.split()[0] for case in COMMANDS} | {"heif"} == set(EXTRA_MODULES)  # heif: its own test below


@pytest.mark.parametrize("case", sorted(COMMANDS))
def test_a_command_without_its_extra_ends_in_one_line_naming_the_install_command(case, ckpt, root, tmp_path):
    extra = case.split()[0]
    arguments, left_out = COMMANDS[case]
    fill = {"{ckpt}": ckpt, "{root}": root, "{out}": tmp_path / "out"}

    def filled(argument: str) -> str:
        for field, value in fill.items():
            argument = argument.replace(field, str(value))
        return argument

    done = run_without(extra, *map(filled, arguments))
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert f"the {extra} extra" in last and install_command(extra) in last, last
    assert not Path(filled(left_out)).exists()  # refused before its work: no run directory, no export


def test_a_heic_photo_without_the_heif_extra_is_an_error_row_naming_the_install_command(ckpt, tmp_path):
    pillow_heif = require_extra("pillow_heif", "heif")  # writes the HEIC file the command then reads without it
    from PIL import Image

    pillow_heif.register_heif_opener()
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (32, 32), "red").save(photos / "phone.heic")
    Image.new("RGB", (32, 32), "blue").save(photos / "camera.png")
    output = tmp_path / "predictions.csv"
    # predictions go on for the other files (a photo that cannot be read is a row with its reason, and
    # the status is 1, as for any file that failed): one HEIC photo does not stop a folder's predictions
    done = run_without("heif", "src.predict", f"ckpt_path={ckpt}", f"input={photos}", f"output={output}",
                       f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 1, (done.stdout + done.stderr)[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    rows = {Path(r["path"]).name: r for r in csv.DictReader(output.open())}
    assert rows["camera.png"]["error"] == "" and rows["camera.png"]["prediction"]
    assert "the heif extra" in rows["phone.heic"]["error"] and install_command("heif") in rows["phone.heic"]["error"]
