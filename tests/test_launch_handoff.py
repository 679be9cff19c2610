"""What rank 0 hands to the DDP processes Lightning launches: the scanned index, lr_find's choice."""

from __future__ import annotations

import json

import lightning as L
from lightning.pytorch.plugins.environments import LightningEnvironment
import pytest

from src.data.datamodule import ImageFolderDataModule
from src.data.labels.index_payload import index_from_payload
from src.core import launch_handoff
from tests.conftest import IMAGENET_STATS


def test_the_payload_gives_back_the_index_and_bad_files_and_refuses_other_settings(messy_root):
    datamodule = ImageFolderDataModule(messy_root, size=32, **IMAGENET_STATS)
    payload = datamodule.handoff()["scan"]
    index, bad, kept = index_from_payload(payload, datamodule.source.index_settings())
    assert index == datamodule.index and bad == datamodule.scan.bad and kept == datamodule.scan.kept == 44
    other = ImageFolderDataModule(messy_root, size=32, seed=7, **IMAGENET_STATS)
    with pytest.raises(ValueError, match=r"other data settings \(seed: \[42\] there, \[7\] here\)"):
        index_from_payload(payload, other.source.index_settings())


def test_a_launched_process_uses_the_handed_index_without_opening_a_file(image_root, tmp_path, monkeypatch):
    rank0 = ImageFolderDataModule(image_root, size=32, **IMAGENET_STATS)
    handoff = tmp_path / "handoff.json"
    handoff.write_text(json.dumps(rank0.handoff()))
    monkeypatch.setenv(launch_handoff.HANDOFF_ENV, str(handoff))
    for image in image_root.rglob("*.png"):
        image.write_bytes(b"")  # were this process to check the files, every one would be bad
    rank1 = ImageFolderDataModule(image_root, size=32, **IMAGENET_STATS)
    assert rank1.index == rank0.index and rank1.scan.opened == 0 and not rank1.scan.unreadable


def test_a_handoff_that_cannot_be_read_says_where_it_came_from(tmp_path, monkeypatch):
    monkeypatch.setenv(launch_handoff.HANDOFF_ENV, str(tmp_path / "gone.json"))
    with pytest.raises(RuntimeError, match="IFC_RANK0_HANDOFF=.*gone.json.*start the run again"):
        launch_handoff.received()


def test_a_single_process_run_hands_nothing_over(monkeypatch):
    monkeypatch.delenv(launch_handoff.HANDOFF_ENV, raising=False)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)

    def payload():
        raise AssertionError("the payload is only built when processes are launched")

    with launch_handoff.handed_over(trainer, payload):
        assert launch_handoff.received() is None


class _ExternalLauncher(LightningEnvironment):
    """A cluster environment that starts every process itself (as torchrun and SLURM's srun do)."""

    @property
    def creates_processes_externally(self) -> bool:
        return True


@pytest.mark.parametrize("kwargs, launches", [
    ({"strategy": "ddp", "devices": 2}, True),  # Lightning runs this command again for rank 1
    ({"strategy": "ddp_spawn", "devices": 2}, True),  # new interpreters too
    ({"strategy": "ddp_fork", "devices": 2}, False),  # forked: they have rank 0's memory
    ({"strategy": "ddp", "devices": 2, "plugins": [_ExternalLauncher()]}, False),  # all started already
    ({"devices": 1}, False),
])
def test_a_handoff_is_written_only_for_processes_that_trainer_fit_starts(kwargs, launches, tmp_path):
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        **kwargs)
    assert launch_handoff.launches_processes(trainer) is launches
