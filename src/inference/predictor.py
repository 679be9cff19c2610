"""Predict with a trained checkpoint: one image, a batch, or many files (fastai's ``learner.predict``).

``Predictor.from_checkpoint(path)`` loads the network once (see :func:`src.models.loading.load_classifier`);
``predict`` returns ``(class name, index, probabilities)`` like fastai v1 did; for a multi-label
model, ``(class names, indices, probabilities)`` of every class above the threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image
from rich.progress import Progress
from torch import nn
from torch.utils.data import DataLoader, Dataset

from src.data.loading.dataset import batch_size_problems
from src.data.files.image_reader import UNREADABLE_IMAGE_ERRORS, load_rgb, oriented_rgb
from src.data.transforms.presets import EvalTransform
from src.core.hardware import FULL_PRECISION, resolve_device
from src.inference.precision_net import PrecisionNet
from src.inference.probabilities import class_log_probabilities
from src.inference.tta import TTA_BETA, TTA_SCALE, tta_log_odds, tta_log_probabilities
from src.models.loading import LoadedClassifier, load_classifier
from src.models.multi_label_metrics import DEFAULT_THRESHOLD, check_threshold
from src.core.problems import raise_problems

log = logging.getLogger(__name__)


@torch.inference_mode()
def log_probabilities(net: nn.Module, images: torch.Tensor, tta: bool = False, multi_label: bool = False) -> torch.Tensor:
    """Log class probabilities of a normalised (N, 3, S, S) batch, with fastai's TTA if ``tta``
    (softmax, or a sigmoid per class if ``multi_label``)."""
    if tta:
        return tta_log_probabilities(net, images, TTA_BETA, TTA_SCALE, multi_label)
    return class_log_probabilities(net(images), multi_label)


@torch.inference_mode()
def log_odds(net: nn.Module, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """A multi-label network's log-odds of each class (its logits; with ``tta``, those of fastai's blend):
    what BCE-with-logits takes, so the loss of a cell the sigmoid rounds to 0 or 1 is training's."""
    return tta_log_odds(net, images, TTA_BETA, TTA_SCALE) if tta else net(images)


def run_loader(
    net: nn.Module,
    loader: Iterable,
    device: torch.device,
    tta: bool = False,
    progress: str | None = None,
    multi_label: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The outputs and labels over a loader of ``(images, labels)`` batches, on the CPU: log-probabilities and
    class indices, or with ``multi_label`` each class's log-odds and multi-hot labels."""
    outputs, targets = [], []
    with Progress(disable=progress is None, transient=True) as bar:
        task = bar.add_task(progress or "", total=len(loader) if hasattr(loader, "__len__") else None)
        for images, labels in loader:
            images = images.to(device)
            scores = log_odds(net, images, tta) if multi_label else log_probabilities(net, images, tta)
            outputs.append(scores.float().cpu())
            targets.append(torch.as_tensor(labels))
            bar.advance(task)
    return torch.cat(outputs), torch.cat(targets)


class Prediction(NamedTuple):
    """fastai's ``(category, index, probabilities)``; multi-label: the tuples of the class names and
    indices above the threshold (possibly empty), highest probability first."""

    label: str | tuple[str, ...]
    index: int | tuple[int, ...]
    probabilities: torch.Tensor


@dataclass
class FileResult:
    """The prediction for one file, or why there is none (``error``)."""

    path: Path
    prediction: Prediction | None = None
    error: str | None = None


class _Files(Dataset):
    """Files as transformed tensors; an unreadable file gives its error message instead."""

    def __init__(self, paths: Sequence[Path], transform: EvalTransform) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | str]:
        try:
            return index, self.transform(load_rgb(self.paths[index], min_size=self.transform.size))
        except UNREADABLE_IMAGE_ERRORS as error:
            return index, f"not a readable image: {type(error).__name__}: {error}"


def _keep_lists(batch: list) -> list:
    return batch


def prediction_of(probabilities: torch.Tensor, classes: Sequence[str], multi_label: bool, threshold: float) -> Prediction:
    """The :class:`Prediction` of one image's class probabilities: the top class, or (multi-label)
    every class above ``threshold``, most probable first."""
    if multi_label:
        above = [i for i in probabilities.argsort(descending=True).tolist() if probabilities[i] > threshold]
        return Prediction(tuple(classes[i] for i in above), tuple(above), probabilities)
    index = int(probabilities.argmax())
    return Prediction(classes[index], index, probabilities)


class Predictor:
    """A trained classifier ready to predict, on ``device`` (the best available by default).

    Args:
        net: the network, in eval mode.
        classes: class names in label order.
        transform: the run's evaluation transform (resize, centre-crop, normalise).
        device: where to run; None for CUDA, MPS or the CPU, whichever is there.
        tta: blend in fastai's test-time augmentation (9 forward passes per image).
        multi_label: the network gives a sigmoid per class; every class above ``threshold`` is predicted.
        label_delim: multi-label: what joins several class names in text (the training ``data.labels.label_delim``).
        precision: a Lightning precision (``32-true``, ``bf16-mixed`` ...) to run the network at;
            :meth:`from_checkpoint` takes the one the run trained with.
        channels_last: run the network in NHWC memory format (as training did with ``model.channels_last``).
    """

    def __init__(
        self,
        net: nn.Module,
        classes: Sequence[str],
        transform: EvalTransform,
        device: str | torch.device | None = None,
        tta: bool = False,
        multi_label: bool = False,
        threshold: float = DEFAULT_THRESHOLD,
        label_delim: str = " ",
        precision: str = FULL_PRECISION,
        channels_last: bool = False,
    ) -> None:
        check_threshold("threshold", threshold)
        self.device = resolve_device(device)
        self.net = PrecisionNet(net.eval(), precision, self.device, channels_last)
        self.precision = self.net.precision
        self.classes = list(classes)
        self.transform = transform
        self.tta = tta
        self.multi_label = multi_label
        self.threshold = threshold
        self.label_delim = label_delim

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        tta: bool = False,
        threshold: float | None = None,
        precision: str | None = None,
    ) -> Predictor:
        """The checkpoint's model at the precision it trained with (``precision`` overrides it);
        ``threshold`` (multi-label) defaults to the one it was trained with."""
        return cls.from_loaded(load_classifier(path), device, tta, threshold, precision)

    @classmethod
    def from_loaded(
        cls,
        loaded: LoadedClassifier,
        device: str | torch.device | None = None,
        tta: bool = False,
        threshold: float | None = None,
        precision: str | None = None,
    ) -> Predictor:
        """:meth:`from_checkpoint` for a checkpoint already loaded with :func:`load_classifier`."""
        device = resolve_device(device)
        run_precision = loaded.precision_on(device, precision)
        return cls(loaded.net, loaded.classes, loaded.transform, device=device, tta=tta, multi_label=loaded.multi_label,
                   threshold=loaded.threshold if threshold is None else threshold, label_delim=loaded.label_delim or " ",
                   precision=run_precision, channels_last=loaded.channels_last_at(run_precision))

    def _prediction(self, probabilities: torch.Tensor) -> Prediction:
        return prediction_of(probabilities, self.classes, self.multi_label, self.threshold)

    def _image_tensor(self, item: Image.Image | str | Path) -> torch.Tensor:
        if isinstance(item, Image.Image):
            return self.transform(oriented_rgb(item))
        if isinstance(item, (str, Path)):
            return self.transform(load_rgb(Path(item), min_size=self.transform.size))
        raise TypeError(f"cannot predict a {type(item).__name__}; pass a PIL image or the path of an image file")

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, classes) of a normalised batch, on the CPU."""
        return log_probabilities(self.net, images.to(self.device), self.tta, self.multi_label).exp().float().cpu()

    def predict(self, item: Image.Image | str | Path) -> Prediction:
        """``(class name, index, probabilities)`` of one PIL image or image path."""
        return self.predict_batch([item])[0]

    def predict_batch(self, items: Sequence[Image.Image | str | Path]) -> list[Prediction]:
        """One :class:`Prediction` per PIL image or path, in one forward pass."""
        if not items:
            return []
        probabilities = self.probabilities(torch.stack([self._image_tensor(item) for item in items]))
        return [self._prediction(p) for p in probabilities]

    def predict_files(
        self, paths: Sequence[Path], batch_size: int = 64, num_workers: int = 0, progress: bool = False
    ) -> Iterator[FileResult]:
        """A :class:`FileResult` per path, in order; unreadable files give an error, not an exception."""
        raise_problems(batch_size_problems(batch_size, "batch_size"))
        loader = DataLoader(
            _Files(paths, self.transform), batch_size=batch_size, num_workers=num_workers, collate_fn=_keep_lists
        )
        with Progress(disable=not progress) as bar:
            task = bar.add_task("predicting", total=len(paths))
            for batch in loader:
                good = [(i, x) for i, x in batch if isinstance(x, torch.Tensor)]
                probabilities = self.probabilities(torch.stack([x for _, x in good])) if good else []
                found = {i: self._prediction(p) for (i, _), p in zip(good, probabilities)}
                for i, x in batch:
                    yield FileResult(paths[i], found.get(i), None if i in found else x)
                bar.advance(task, len(batch))
