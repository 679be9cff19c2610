"""The DataModule: an image folder, its labels and split, augmentation, normalisation and loaders.

The labels come from ``labels``, a built label source (see :mod:`src.data.labels`):
- :class:`FolderLabels`: class folders (fastai's ``train="."``), ``root/<class>/*.jpg``, split at
  random per class with ``valid_pct`` and ``seed``; or split folders: ``root/train/<class>/``,
  ``root/valid/<class>/`` (or ``val/``) and an optional ``root/test/<class>/`` for ``trainer.test``;
- :class:`CsvLabels`: a table of paths and labels; :class:`RegexLabels`: a capture group of each file's path.
The class list comes from the labels and is what the model's class count is built from.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader

from src.data.dataset import ImageDataset, batch_size_problems
from src.data.image_files import MAX_IMAGE_PIXELS
from src.data.labels import FolderIndex, FolderLabels, LabelSource, index_folder  # noqa: F401 (index_folder: API)
from src.data.scan import FileScan
from src.data.split import valid_pct_problems, write_split_csv
from src.data.transforms import EvalTransform, TrainTransform
from src.checks.problems import Problem, is_whole_number, raise_problems
from src.runs.hardware import resolve_num_workers

log = logging.getLogger(__name__)

MIN_IMAGE_SIZE = 32  # a ResNet downsamples by 32: below that its last feature map is empty
ON_BAD_FILE = ("skip", "error")


class ImageFolderDataModule(L.LightningDataModule):
    """Loads ``root`` as fastai's ``ImageDataBunch.from_folder`` (``from_df``, ``from_name_re``) did,
    with torchvision v2 transforms.

    Args:
        root: folder of class folders, or of train/valid[/test] folders; with csv or regex
            labels, the folder the image paths are relative to.
        labels: the label source (:class:`~src.data.labels.FolderLabels` when None); with a
            ``label_delim`` the data is multi-label.
        valid_pct: fraction of each class held out for validation (not with split folders or
            ``valid_column``); of all images for multi-label.
        seed: seed of the split (the same seed always gives the same split).
        size: side of the square images fed to the model.
        resize_method: ``crop`` (shorter side to size, then crop), ``squish`` or ``pad``.
        interpolation: ``bilinear``, ``bicubic`` or ``nearest``.
        mean, std: per-channel normalisation (``conf/data/image_folder.yaml`` gives ImageNet's, what
            pretrained bodies expect).
        augment: keyword arguments of :class:`TrainTransform` (flip, rotate, zoom, warp, lighting).
        batch_size, num_workers, pin_memory: DataLoader settings (``num_workers=auto``: see
            :func:`src.runs.hardware.resolve_num_workers`).
        split_csv: where to record the split (``path,label,subset``); None to skip.
        on_bad_file: ``skip`` leaves unreadable files out (listed in ``bad_files_csv``, one-line
            summary in the log); ``error`` stops before training, naming them.
        bad_files_csv: where to list the files left out (``path,reason``); None to skip.
        max_image_pixels: larger images are bad files, never decoded (decompression-bomb guard).
        scan_workers: threads checking the files before training.

    The constructor raises :class:`~src.checks.problems.ConfigError` with every problem of :meth:`problems`.
    """

    def __init__(
        self,
        root: str | Path,
        labels: LabelSource | None = None,
        valid_pct: float = 0.2,
        seed: int = 42,
        size: int = 224,
        resize_method: str = "crop",
        interpolation: str = "bilinear",
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: dict | None = None,
        batch_size: int = 64,
        num_workers: int | str = 0,
        pin_memory: bool | None = None,
        split_csv: str | Path | None = None,
        on_bad_file: str = "skip",
        bad_files_csv: str | Path | None = None,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        scan_workers: int = 8,
    ) -> None:
        super().__init__()
        self.label_source = FolderLabels() if labels is None else labels
        raise_problems(self.problems(root, self.label_source, valid_pct, batch_size, size, on_bad_file))
        self.root = Path(root).expanduser()
        self.valid_pct = valid_pct
        self.seed = seed
        self.size = size
        self.mean, self.std = tuple(mean), tuple(std)
        self.batch_size = batch_size
        self.num_workers = resolve_num_workers(num_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.split_csv = Path(split_csv) if split_csv else None
        self.on_bad_file = on_bad_file
        self.bad_files_csv = Path(bad_files_csv) if bad_files_csv else None
        self.scan = FileScan(max_pixels=max_image_pixels, workers=scan_workers)
        self.train_transform = TrainTransform(
            size, self.mean, self.std, resize_method, interpolation, **(augment or {})
        )
        self.eval_transform = EvalTransform(size, self.mean, self.std, resize_method, interpolation)
        self.datasets: dict[str, ImageDataset] = {}

    @staticmethod
    def problems(root: str | Path | None, labels: Any, valid_pct: Any, batch_size: Any, size: Any,
                 on_bad_file: Any) -> list[Problem]:
        """The problems of these settings (the ``data.*`` keys), the label source's among them
        (``labels=None``: a source that could not be built, named by the caller)."""
        if labels is None:
            found = []
        elif isinstance(labels, LabelSource):
            found = labels.problems(None if root is None else Path(str(root)))
        else:  # e.g. data.labels=csv: a name where the data/labels group puts a source's config
            found = [Problem("data.labels", labels, "a label source: folder, csv or regex, chosen as a config group",
                             "write data/labels=csv (a slash) and its settings as data.labels.csv_path=...")]
        found += valid_pct_problems(valid_pct)
        found += batch_size_problems(batch_size, "data.batch_size")
        if not is_whole_number(size, minimum=MIN_IMAGE_SIZE):
            found.append(Problem("data.size", size, f"a whole number >= {MIN_IMAGE_SIZE} (a ResNet downsamples by 32)",
                                 "e.g. data.size=224"))
        if on_bad_file not in ON_BAD_FILE:
            found.append(Problem("data.on_bad_file", on_bad_file, " or ".join(ON_BAD_FILE),
                                 "skip leaves unreadable files out (listed in bad_files.csv); error stops the run"))
        return found

    @cached_property
    def index(self) -> FolderIndex:
        index = self.label_source.index(self.root, self.valid_pct, self.seed, self.scan)
        self._report_bad_files()
        return index

    def _report_bad_files(self) -> None:
        if self.scan.bad:
            self._write_bad_files_csv()
        where = f"; listed in {self.bad_files_csv}" if self.scan.bad and self.bad_files_csv else ""
        unreadable = self.scan.unreadable
        if unreadable and self.on_bad_file == "error":
            raise ValueError(
                f"{len(unreadable)} unreadable image file(s) under data.root={str(self.root)!r}, e.g. "
                f"{unreadable[0].path} ({unreadable[0].kind}: {unreadable[0].reason}){where}. Remove or fix "
                "them, or set data.on_bad_file=skip to train without them"
            )
        (log.warning if unreadable else log.info)("%s: %s%s", self.root, self.scan.summary(), where)

    @rank_zero_only
    def _write_bad_files_csv(self) -> None:
        if self.bad_files_csv is not None:
            self.scan.write_csv(self.bad_files_csv, self.root)

    @property
    def skipped_during_training(self) -> int:
        """Files that became unreadable after the scan and were replaced in a batch (all subsets)."""
        return sum(dataset.failures.value for dataset in self.datasets.values())

    @property
    def classes(self) -> list[str]:
        return self.index.classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def multi_label(self) -> bool:
        """Several labels per image (``label_delim`` set): the model trains with BCE instead of softmax."""
        return self.label_source.multi_label

    def model_fields(self) -> dict:
        """What the model config takes from the data (``model.classes``, ``model.multi_label``): the
        one place it comes from, for every entry point that builds a model from a config."""
        return {"classes": self.classes, "multi_label": self.multi_label}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        index = self.index
        self.datasets = {
            subset: ImageDataset(samples, transform, skip_unreadable=self.on_bad_file == "skip",
                                 num_labels=self.num_classes if self.multi_label else None, decode_size=self.size)
            for subset, samples, transform in [("train", index.train, self.train_transform),
                                               ("valid", index.valid, self.eval_transform),
                                               ("test", index.test, self.eval_transform)]
        }
        log.info(
            "%s: %d classes, %d training and %d validation images (%s layout)",
            self.root, self.num_classes, len(index.train), len(index.valid), index.layout,
        )
        if not index.valid:
            fix = (f"mark some rows true in the {self.label_source.valid_column!r} column" if self.label_source.valid_column
                   else "every class has a single image; add images or use a train/ and valid/ layout")
            raise ValueError(f"no validation images under {self.root}: {fix}")
        self._write_split_csv()

    @rank_zero_only
    def _write_split_csv(self) -> None:
        if self.split_csv is not None:
            subsets = {"train": self.index.train, "valid": self.index.valid, "test": self.index.test}
            write_split_csv(self.split_csv, self.root, self.classes, subsets, self.label_source.label_delim)

    def _loader(self, subset: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[subset],
            batch_size=self.batch_size,
            shuffle=shuffle,
            # fastai drops the last partial batch in training: a batch of one breaks BatchNorm.
            drop_last=shuffle and len(self.datasets[subset]) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if not self.datasets["test"]:
            raise ValueError(f"no test images: add {self.root}/test/<class>/ folders to use trainer.test")
        return self._loader("test", shuffle=False)
