"""The DataModule's side of ``data.augment.on`` / ``data.decode_on`` (:mod:`src.data.placement.choice`): which
transforms the loader workers run, and the batch hooks that finish the batch on the training device.

:class:`DeviceBatches` is the helper the DataModule owns and calls from its own batch hooks
(``on_before_batch_transfer``, ``on_after_batch_transfer``) with the transforms it placed
(:func:`placed_transforms`).
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


class DeviceBatches:
    """What finishes a batch on the training device with ``augment.on=device`` (and ``decode_on=device``), for
    the Trainer's batch hooks and for loops outside it.

    A training batch's augmentation on the device is drawn with a seed mixed from (the DataModule's
    ``loader_seed``, the rank, the epoch, the batch's place in the epoch), as the worker path seeds each
    image by (seed, epoch, index) (:class:`~src.data.loading.dataset.ImageDataset`): a resumed run draws what the
    uninterrupted run drew, and the draws take nothing from the generators the model's dropout uses.
    The place in the epoch goes into checkpoints (:meth:`state_dict`) for a resume from the middle of one.
    """

    def __init__(self, augment_on: str, loader_seed: int) -> None:
        self.augment_on = augment_on
        self.loader_seed = loader_seed
        self.draw_position = (-1, 0)  # (epoch, training batches augmented in it)

    def model_input(self, placed: PlacedTransforms, images: torch.Tensor, train: bool,
                    draw_seed: int | None = None) -> torch.Tensor:
        """A loader batch's images as the network takes them: with ``augment.on=device`` the uint8
        batch augmented (``train``; with ``draw_seed``, drawn from it) and normalised on its device;
        with ``workers`` unchanged."""
        if self.augment_on == "workers":
            return images
        return placed.batch_augment(images, draw_seed) if train else placed.batch_augment.normalize(images)

    def next_draw_seed(self, epoch: int, rank: int) -> int:
        """The seed of the next training batch's augmentation in ``epoch``."""
        if self.draw_position[0] != epoch:
            self.draw_position = (epoch, 0)
        batch = self.draw_position[1]
        self.draw_position = (epoch, batch + 1)
        return derived_seed(self.loader_seed, rank, epoch, batch)

    def state_dict(self) -> dict[str, Any]:
        return {"device_augment_position": list(self.draw_position)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "device_augment_position" in state_dict:  # absent from checkpoints written before it existed
            epoch, batch = state_dict["device_augment_position"]
            self.draw_position = (int(epoch), int(batch))

    def model_batches(self, placed: PlacedTransforms, loader: DataLoader, device: torch.device,
                      train: bool) -> ModelBatches:
        """``loader``'s batches on ``device`` as the network takes them, for loops outside the Trainer."""
        def prepare(images: Any) -> torch.Tensor:
            if placed.device_reader is not None:  # a list of JPEG bytes and decoded images
                transform = placed.train if train else placed.loader_eval
                return self.model_input(placed, decode_batch(images, transform.crop, device), train)
            return self.model_input(placed, images.to(device, non_blocking=True), train)

        return ModelBatches(loader, prepare)

    def normalized_items(self, placed: PlacedTransforms, dataset: Dataset) -> Dataset:
        """``dataset`` with normalised float images whatever ``augment.on`` (figures of single images)."""
        return dataset if self.augment_on == "workers" else NormalizedItems(dataset, placed.batch_augment)

    def decoded(self, placed: PlacedTransforms, batch: Any, training: bool, device: torch.device) -> Any:
        """``on_before_batch_transfer``: with ``decode_on=device`` the JPEG bytes of ``batch`` decoded on ``device``."""
        if placed.device_reader is None or not isinstance(batch, (tuple, list)):
            return batch
        items, labels = batch
        transform = placed.train if training else placed.loader_eval
        return decode_batch(items, transform.crop, device), labels

    def finished(self, placed: PlacedTransforms, batch: Any, training: bool, epoch: int, rank: int,
                 convert_input: Callable[[torch.Tensor], torch.Tensor]) -> Any:
        """``on_after_batch_transfer``: with ``augment.on=device`` the batch augmented (training) or normalised,
        then converted for the precision (``convert_input``, the precision plugin's)."""
        # The model summary passes its float example_input_array through this hook too: left as it is.
        if self.augment_on == "workers" or not isinstance(batch, (tuple, list)):
            return batch
        images, labels = batch
        draw_seed = self.next_draw_seed(epoch, rank) if training else None
        images = self.model_input(placed, images, train=training, draw_seed=draw_seed)
        # Lightning converted the batch for the precision before the transfer, when it was still
        # uint8 (a no-op); the float batch gets the same conversion now (half for 16-true/bf16-true).
        return convert_input(images), labels
