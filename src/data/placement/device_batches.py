"""The DataModule's side of ``data.augment.on`` / ``data.decode_on`` (:mod:`src.data.placement.choice`): which
transforms the loader workers run, and the batch hooks that finish the batch on the training device.

:class:`DeviceBatchHooks` is mixed into :class:`~src.data.datamodule.ImageFolderDataModule`; it reads
the ``placement``, ``batch_augment``, ``device_reader``, ``train_transform``,
``loader_eval_transform`` and ``datasets`` that :func:`placed_transforms` and the DataModule set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from src.data.transforms.batch_augment import BatchAugment, ModelBatches, NormalizedItems
from src.data.placement.gpu_decode import CropUnlessEncoded, DeviceDecodeReader, collate_encoded, decode_batch
from src.data.placement.choice import DataPlacement
from src.data.transforms.presets import EvalCropTransform, EvalTransform, TrainCropTransform, TrainTransform
from src.core.random_state import derived_seed

log = logging.getLogger(__name__)


@dataclass
class PlacedTransforms:
    """What the workers run for training and evaluation, and what finishes the batch on the device."""

    train: Callable
    loader_eval: Callable
    batch_augment: BatchAugment | None
    device_reader: DeviceDecodeReader | None

    @property
    def collate_fn(self) -> Callable | None:
        """The loaders' collate (None: PyTorch's default)."""
        return collate_encoded if self.device_reader is not None else None


def placed_transforms(placement: DataPlacement, size: int, mean: Sequence[float], std: Sequence[float],
                      resize_method: str, interpolation: str, eval_transform: EvalTransform,
                      augment: dict[str, Any], max_pixels: int) -> PlacedTransforms:
    """The transforms of ``placement`` (``augment``: ``TrainTransform``'s keyword arguments; ``max_pixels``:
    the decompression-bomb limit of the files the device path's workers decode)."""
    if placement.augment_on == "device":  # workers stop at uint8; the rest in on_after_batch_transfer
        placed = PlacedTransforms(TrainCropTransform(size, resize_method, interpolation),
                                  EvalCropTransform(size, resize_method, interpolation),
                                  BatchAugment(mean, std, **augment), None)
    else:
        placed = PlacedTransforms(TrainTransform(size, mean, std, resize_method, interpolation, **augment),
                                  eval_transform, None, None)
    if placement.decode_on == "device":  # JPEGs pass the workers as bytes; the crops then run on the GPU
        placed.device_reader = DeviceDecodeReader(max_pixels)
        placed.train, placed.loader_eval = CropUnlessEncoded(placed.train), CropUnlessEncoded(placed.loader_eval)
    return placed


class DeviceBatchHooks:
    """Lightning's batch-transfer hooks, and the same for loops outside the Trainer (see the module docstring).

    A training batch's augmentation on the device is drawn with a seed mixed from (the DataModule's
    ``loader_seed``, the rank, the epoch, the batch's place in the epoch), as the worker path seeds each
    image by (seed, epoch, index) (:class:`~src.data.loading.dataset.ImageDataset`): a resumed run draws what the
    uninterrupted run drew, and the draws take nothing from the generators the model's dropout uses.
    The place in the epoch goes into checkpoints (``state_dict``) for a resume from the middle of one.
    """

    _draw_position: tuple[int, int] = (-1, 0)  # (epoch, training batches augmented in it)

    def model_input(self, images: torch.Tensor, train: bool, draw_seed: int | None = None) -> torch.Tensor:
        """A loader batch's images as the network takes them: with ``augment.on=device`` the uint8
        batch augmented (``train``; with ``draw_seed``, drawn from it) and normalised on its device;
        with ``workers`` unchanged."""
        if self.placement.augment_on == "workers":
            return images
        return self.batch_augment(images, draw_seed) if train else self.batch_augment.normalize(images)

    def next_draw_seed(self, epoch: int, rank: int) -> int:
        """The seed of the next training batch's augmentation in ``epoch``."""
        if self._draw_position[0] != epoch:
            self._draw_position = (epoch, 0)
        batch = self._draw_position[1]
        self._draw_position = (epoch, batch + 1)
        return derived_seed(self.loader_seed, rank, epoch, batch)

    def state_dict(self) -> dict[str, Any]:
        return {"device_augment_position": list(self._draw_position)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "device_augment_position" in state_dict:  # absent from checkpoints written before it existed
            epoch, batch = state_dict["device_augment_position"]
            self._draw_position = (int(epoch), int(batch))

    def model_batches(self, loader: DataLoader, device: torch.device, train: bool) -> ModelBatches:
        """``loader``'s batches on ``device`` as the network takes them, for loops outside the Trainer."""
        def prepare(images: Any) -> torch.Tensor:
            if self.device_reader is not None:  # a list of JPEG bytes and decoded images
                transform = self.train_transform if train else self.loader_eval_transform
                return self.model_input(decode_batch(images, transform.crop, device), train)
            return self.model_input(images.to(device, non_blocking=True), train)

        return ModelBatches(loader, prepare)

    def normalized_items(self, subset: str) -> Dataset:
        """``datasets[subset]`` with normalised float images whatever ``augment.on`` (figures of single images)."""
        dataset = self.datasets[subset]
        return dataset if self.placement.augment_on == "workers" else NormalizedItems(dataset, self.batch_augment)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.device_reader is None or not isinstance(batch, (tuple, list)):
            return batch
        items, labels = batch
        transform = self.train_transform if self.trainer.training else self.loader_eval_transform
        return decode_batch(items, transform.crop, self.trainer.strategy.root_device), labels

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # The model summary passes its float example_input_array through this hook too: left as it is.
        if self.placement.augment_on == "workers" or not isinstance(batch, (tuple, list)):
            return batch
        images, labels = batch
        training = self.trainer.training
        draw_seed = self.next_draw_seed(self.trainer.current_epoch, self.trainer.global_rank) if training else None
        images = self.model_input(images, train=training, draw_seed=draw_seed)
        # Lightning converted the batch for the precision before the transfer, when it was still
        # uint8 (a no-op); the float batch gets the same conversion now (half for 16-true/bf16-true).
        return self.trainer.precision_plugin.convert_input(images), labels

    def teardown(self, stage: str) -> None:
        if self.device_reader is not None and self.device_reader.summary():
            log.info(self.device_reader.summary())
