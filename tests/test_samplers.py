"""The training order and each image's augmentation are functions of (seed, epoch, index): not of the
global generators, the worker that loads the image, or when the loader's iterator was created."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from torch.utils.data import Dataset

from src.data.loading.dataset import ImageDataset
from src.data.labels.sources import index_folder
from src.data.loading.samplers import EpochDataLoader, EpochShuffleSampler
from src.data.transforms.presets import TrainTransform
from src.runs.builder import build_datamodule
from src.core.random_state import random_states
from tests.conftest import IMAGENET_STATS, TINY_OVERRIDES, compose_config


def _order(sampler: EpochShuffleSampler, epoch: int) -> list[tuple[int, int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_the_order_is_a_function_of_seed_and_epoch_and_covers_every_index():
    sampler = EpochShuffleSampler(50, seed=42)
    first = _order(sampler, 0)
    torch.manual_seed(123)  # the global generator plays no part
    torch.rand(1000)
    assert _order(EpochShuffleSampler(50, seed=42), 0) == first
    assert [epoch for epoch, _ in first] == [0] * 50
    assert sorted(index for _, index in first) == list(range(50)) and len(sampler) == 50
    second = _order(sampler, 1)
    assert sorted(index for _, index in second) == list(range(50))
    assert [i for _, i in second] != [i for _, i in first]  # a new order every epoch
    assert [i for _, i in _order(EpochShuffleSampler(50, seed=43), 0)] != [i for _, i in first]
    assert _order(sampler, 0) == first  # going back gives the same epoch again


def test_a_bad_seed_or_length_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"seed=None: expected a whole number"):
        EpochShuffleSampler(5, seed=None)
    with pytest.raises(ValueError, match=r"num_samples=-1"):
        EpochShuffleSampler(-1, seed=0)


class _Keys(Dataset):
    def __len__(self) -> int:
        return 12

    def __getitem__(self, key):
        return torch.tensor(key)


def test_the_loader_serves_the_epoch_set_after_its_iterator_was_created():
    # As Lightning at resume: the iterator is created while setting up, set_epoch comes after.
    loader = EpochDataLoader(_Keys(), batch_size=4, sampler=EpochShuffleSampler(12, seed=1), num_workers=1,
                             persistent_workers=True)
    iterator = iter(loader)
    loader.sampler.set_epoch(3)
    batches = list(iterator)
    assert len(iterator) == 3 and len(batches) == 3
    assert torch.cat(batches).tolist() == [list(pair) for pair in _order(EpochShuffleSampler(12, seed=1), 3)]


def _photo_dataset(image_root, seed):
    samples = index_folder(image_root, 0.2, 0).train
    transform = TrainTransform(32, **IMAGENET_STATS, max_rotate=10.0, max_zoom=1.2, max_warp=0.2, max_lighting=0.3)
    return ImageDataset(samples, transform, seed=seed)


def test_a_sample_is_the_same_tensor_in_a_worker_and_in_the_main_process(image_root):
    dataset = _photo_dataset(image_root, seed=7)
    sampler = EpochShuffleSampler(len(dataset), seed=7)
    sampler.set_epoch(2)
    loader = EpochDataLoader(dataset, batch_size=4, sampler=sampler, num_workers=1)
    images, _ = next(iter(loader))
    pairs = list(sampler)[:4]

    before = random_states()
    in_main = torch.stack([dataset[pair][0] for pair in pairs])
    after = random_states()
    assert torch.equal(before["torch"], after["torch"]) and before["numpy"] == after["numpy"]  # put back
    assert before["python"] == after["python"]
    assert torch.equal(images, in_main)  # the fused warp and lighting draw from the seeded generator
    # torch's generator is the only one seeded (src/core/random_state.py): Python's and NumPy's states change nothing
    random.seed(1)
    np.random.seed(2)
    assert torch.equal(torch.stack([dataset[pair][0] for pair in pairs]), in_main)

    epoch, index = pairs[0]
    assert not torch.equal(dataset[(epoch + 1, index)][0], in_main[0])  # another epoch, another augmentation
    assert not torch.equal(_photo_dataset(image_root, seed=8)[pairs[0]][0], in_main[0])  # another seed
    assert torch.equal(dataset[index][0], dataset[(0, index)][0])  # a bare index: epoch 0's draw


def test_the_datamodules_first_batch_is_the_same_with_loader_workers_or_without(image_root):
    batches, processes = [], []
    for workers in ("auto", 0):  # the default (a process per core) against the main process alone
        cfg = compose_config([*TINY_OVERRIDES, f"data.root={image_root}", f"data.num_workers={workers}"])
        with open_dict(cfg):
            cfg.data.split_csv = cfg.data.bad_files_csv = None
        datamodule = build_datamodule(cfg.data)
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        loader.sampler.set_epoch(1)
        batches.append(next(iter(loader)))
        processes.append(datamodule.num_workers)
    assert processes[0] >= 1 and processes[1] == 0
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])
