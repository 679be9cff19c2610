"""Every entry point: a user's error is its own message on stderr and exit status 2; a bug keeps its traceback."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import src.evaluate
import src.export
import src.train
from src.core.user_errors import missing_plugin_hint, user_error_message

# every python -m src.X: the modules at the top of src/ with a Hydra main, and src/bench/__main__.py
ENTRY_POINTS = sorted(p.stem for p in Path(src.evaluate.__file__).parent.glob("*.py")
                      if "@hydra.main(" in p.read_text()) + ["bench/__main__"]


def as_command(module, monkeypatch, tmp_path: Path, *overrides: str) -> None:
    """``python -m module overrides``, in this process."""
    monkeypatch.setattr(sys, "argv", [module.__name__, *overrides, f"hydra.run.dir={tmp_path / 'run'}"])
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "__main__")  # conf/ found from the file, as under python -m
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)


def run_main(module, monkeypatch, tmp_path: Path, *overrides: str) -> SystemExit:
    as_command(module, monkeypatch, tmp_path, *overrides)
    with pytest.raises(SystemExit) as stopped:
        module.main()
    assert "HYDRA_FULL_ERROR" not in os.environ  # put back as it was
    return stopped.value


@pytest.mark.parametrize("module, overrides, message", [
    (src.evaluate, ["ckpt_path=missing.ckpt"], "FileNotFoundError: ckpt_path='missing.ckpt' is missing; expected"),
    (src.export, ["ckpt_path=missing.ckpt", "format=torchscript"], "ValueError: "),
])
def test_a_users_error_is_one_message_on_stderr_and_exit_status_2(module, overrides, message, monkeypatch,
                                                                   tmp_path, capsys):
    stopped = run_main(module, monkeypatch, tmp_path, *overrides)
    err = capsys.readouterr().err
    assert stopped.code == 2, err
    assert "Traceback" not in err and message in err
    assert len([line for line in err.splitlines() if not line.startswith("Error executing job")]) == 1


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    def broken(cfg):
        return json.loads("{")  # a ValueError, raised inside a library: not the user's input

    monkeypatch.setattr(src.evaluate, "evaluate", broken)
    as_command(src.evaluate, monkeypatch, tmp_path, "ckpt_path=x.ckpt")
    with pytest.raises(json.JSONDecodeError):
        src.evaluate.main()


def test_a_hydra_command_line_error_is_one_line_too(monkeypatch, tmp_path, capsys):
    stopped = run_main(src.evaluate, monkeypatch, tmp_path, "no_such_group=x")
    err = capsys.readouterr().err
    assert stopped.code == 2 and "Traceback" not in err and "no_such_group" in err


def test_a_sweeper_or_launcher_of_a_missing_extra_names_the_install_command(monkeypatch):
    from hydra.errors import MissingConfigException

    # Hydra's words when the plugin is not installed (its config group option is then unknown).
    optuna = MissingConfigException("In 'hparams_search/optuna': Could not find 'hydra/sweeper/optuna'\n\n"
                                    "Available options in 'hydra/sweeper':\n\tbasic")
    slurm = MissingConfigException("Could not find 'hydra/launcher/submitit_slurm'")
    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_optuna_sweeper", None)  # hidden, as if not installed
    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_submitit_launcher", None)
    assert 'the optuna extra, not installed: pip install -e ".[optuna]"' in user_error_message(optuna)
    assert 'the slurm extra, not installed: pip install -e ".[slurm]"' in user_error_message(slurm)
    # one line, as every missing extra gets: not the search path listing with the hint at its end
    assert user_error_message(optuna) == ("Could not find 'hydra/sweeper/optuna': it comes with the optuna extra, "
                                          'not installed: pip install -e ".[optuna]"')
    assert len(user_error_message(slurm).splitlines()) == 1
    monkeypatch.undo()  # installed: the message stays Hydra's
    assert missing_plugin_hint(str(optuna)) == ""


def test_every_entry_point_is_wrapped():
    root = Path(src.evaluate.__file__).parent
    for name in ENTRY_POINTS:
        text = (root / f"{name}.py").read_text()
        assert "@one_line_user_errors\n@hydra.main(" in text, name


def test_imagenet_weights_offline_are_one_line_not_hydras_wrapping(monkeypatch, tmp_path, capsys):
    # the backbone's OSError reaches the wrapper inside Hydra's InstantiationException ("Error in call to
    # target ...", the error's repr, full_key): the user sees the OSError's own message, one line
    from tests.conftest import copy_sample

    root = copy_sample(tmp_path / "photos", classes=2, per_class=4)
    closed_port = "http://127.0.0.1:9"  # every download fails at once, as without a network
    for name in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, closed_port)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    stopped = run_main(src.train, monkeypatch, tmp_path, "experiment=demo", f"data.root={root}",
                       "model.backbone.weights=imagenet", f"paths.cache_dir={tmp_path / 'cache'}")
    err = capsys.readouterr().err
    assert stopped.code == 2, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("Error executing job")]
    assert len(lines) == 1, err
    assert lines[0].startswith("OSError: could not fetch torchvision's ImageNet weights for resnet18"), err
    assert "model.backbone.weights=null" in lines[0]


def test_the_slurm_launcher_off_a_cluster_is_one_line_that_says_where_to_run_it(monkeypatch, tmp_path, capsys):
    # The command of docs/lr-find-sweeps-and-scaling.md on a machine without SLURM: submitit stops while it
    # sets the launcher up (before anything is submitted or trained), which is where it was run, not a bug.
    from tests.conftest import require_extra

    require_extra("submitit", "slurm")
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))  # no srun, whatever this machine has
    monkeypatch.setattr(sys, "argv", ["src.train", "-m", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                                      "experiment=demo", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "__main__")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as stopped:
        src.train.main()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("Error executing job")]
    assert stopped.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "no srun" in lines[0] and "login node" in lines[0] and "hydra/launcher=submitit_local" in lines[0]
    assert not (tmp_path / "sweep" / "0").exists()  # nothing ran
