"""The DataModule: an image folder, its labels and split, augmentation, normalisation and loaders.

The labels come from ``labels``, a built label source (see :mod:`src.data.labels`):
- :class:`FolderLabels`: class folders (fastai's ``train="."``), ``root/<class>/*.jpg``, split at
  random per class with ``valid_pct`` and ``seed``; or split folders: ``root/train/<class>/``,
  ``root/valid/<class>/`` (or ``val/``) and an optional ``root/test/<class>/`` for ``trainer.test``;
- :class:`CsvLabels`: a table of paths and labels; :class:`RegexLabels`: a capture group of each file's path.
The class list comes from the labels and is what the model's class count is built from.
With ``format="litdata"``, ``root`` is a folder (or ``s3://`` prefix) of shards written by
``python -m src.prepare``: labels, split and classes come from its manifest (:mod:`src.data.streaming`).
"""

from __future__ import annotations

import functools
import logging
import os
import random
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader

from src.data.balanced_sampler import SAMPLERS, BalancedSampler
from src.data.dataset import ImageDataset, batch_size_problems
from src.data.decisions import apply_decisions
from src.data.device_batches import DeviceBatchHooks, placed_transforms
from src.data.image_reader import MAX_IMAGE_PIXELS, load_rgb
from src.data.index_payload import index_from_payload, index_payload
from src.data.labels import FolderIndex, FolderLabels, LabelSource, index_folder  # noqa: F401 (index_folder: API)
from src.data.scan import FileScan
from src.data.scan_cache import ScanCache
from src.data.shard_manifest import (is_remote, litdata_problems, local_shards_problems, read_bytes, read_manifest,
                                     size_problems)
from src.data.samplers import EpochDataLoader, EpochShuffleSampler
from src.data.split import valid_pct_problems, write_split_csv
from src.data.stage_data import StageSizedLoaders
from src.data.placement import DataPlacement
from src.data.transforms import EvalTransform
from src.checks.problems import Problem, is_whole_number, raise_problems
from src.runs import launch_handoff
from src.runs.atomic_write import atomic_open
from src.data.worker_priority import LowerWorkerPriority
from src.runs.hardware import resolve_num_workers

log = logging.getLogger(__name__)

MIN_IMAGE_SIZE = 32  # a ResNet downsamples by 32: below that its last feature map is empty
ON_BAD_FILE = ("skip", "error")
# folder: images under data.root; litdata: shards written by src.prepare (src/data/streaming.py).
DATA_FORMATS = ("folder", "litdata")


class ImageFolderDataModule(StageSizedLoaders, DeviceBatchHooks, L.LightningDataModule):
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
        augment: keyword arguments of :class:`TrainTransform` (flip, rotate, zoom, warp, lighting),
            and ``on``: where they run, ``workers``, ``device`` or ``auto`` (:mod:`src.data.placement`).
        decode_on: ``workers`` or ``device`` (JPEGs decoded on the GPU, :mod:`src.data.gpu_decode`).
        batch_size, num_workers, pin_memory: DataLoader settings (``num_workers=auto``: see
            :func:`src.runs.hardware.resolve_num_workers`).
        split_csv: where to record the split (``path,label,subset``); None to skip.
        on_bad_file: ``skip`` leaves unreadable files out (listed in ``bad_files_csv``, one-line
            summary in the log); ``error`` stops before training, naming them.
        bad_files_csv: where to list the files left out (``path,reason``); None to skip.
        max_image_pixels: larger images are bad files, never decoded (decompression-bomb guard).
        scan_workers: threads checking the files before training.
        scan_cache_dir: where the scan's verdicts are kept between runs (see
            :mod:`src.data.scan_cache`); None opens every file every run.
        rescan: open every file again, whatever the cache holds (the cache is rewritten).
        sampler: ``random`` (shuffled, each image once per epoch) or ``balanced`` (every class equally
            likely, with replacement, as many images per epoch; single-label only), see
            :mod:`src.data.balanced_sampler`.
        format: ``folder`` (images under ``root``) or ``litdata`` (shards of ``src.prepare`` at ``root``,
            a folder or ``s3://bucket/prefix``; its labels and split are the shards').
        shard_cache_dir: where litdata keeps chunks downloaded from ``s3://`` (None: litdata's default).
        decisions: a decisions file of ``python -m src.audit`` (``path,action,new_label,reason``): its drops
            and relabels are applied to the index after the split (:mod:`src.data.decisions`); None: none.

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
        scan_cache_dir: str | Path | None = None,
        rescan: bool = False,
        sampler: str = "random",
        format: str = "folder",
        shard_cache_dir: str | None = None,
        decode_on: str = "workers",
        worker_nice: int = 0,
        decisions: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.decisions = Path(decisions).expanduser() if decisions else None
        self.label_source = FolderLabels() if labels is None else labels
        raise_problems(self.problems(root, self.label_source, valid_pct, batch_size, size, on_bad_file,
                                     sampler=sampler, format=format))
        self.sampler = sampler
        self.format = format
        self.shards_root = str(root)  # a URL stays a URL (Path would fold s3:// into s3:/)
        self.shard_cache_dir = shard_cache_dir
        self.root = Path(root).expanduser()
        self.valid_pct = valid_pct
        self.seed = seed
        # The training order and each image's augmentation are functions of this seed and the epoch
        # (src/data/samplers.py), so a resumed run sees what the uninterrupted run saw; seed=null
        # (a run not meant to be repeated) draws one.
        self.loader_seed = seed if seed is not None else random.SystemRandom().randrange(2**63)
        self.size = size
        self.mean, self.std = tuple(mean), tuple(std)
        self.batch_size = batch_size
        self.num_workers = resolve_num_workers(num_workers)
        self.worker_init = LowerWorkerPriority(worker_nice)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.split_csv = Path(split_csv) if split_csv else None
        self.on_bad_file = on_bad_file
        self.bad_files_csv = Path(bad_files_csv) if bad_files_csv else None
        cache = ScanCache(Path(scan_cache_dir), self.root, max_image_pixels, rescan) if scan_cache_dir else None
        self.scan = FileScan(max_pixels=max_image_pixels, workers=scan_workers, cache=cache)
        augment = dict(augment or {})
        self.placement = DataPlacement.resolve(augment.pop("on", "auto"), decode_on)
        self.resize_method, self.interpolation, self.augment = resize_method, interpolation, augment
        self.use_transforms_at(size)
        self.datasets: dict[str, ImageDataset] = {}

    def use_transforms_at(self, size: int) -> None:
        """The transforms at ``size`` (``data.size``, or a stage's own: src/data/stage_data.py): what the
        loader workers run (``train_transform``, ``loader_eval_transform``) and what finishes a batch on
        the device with ``augment.on=device`` (``batch_augment``); ``eval_transform`` is the whole
        evaluation transform, for single images (inspect)."""
        self.eval_transform = EvalTransform(size, self.mean, self.std, self.resize_method, self.interpolation)
        self.placed = placed_transforms(self.placement, size, self.mean, self.std, self.resize_method,
                                        self.interpolation, self.eval_transform, self.augment, self.scan.max_pixels)
        self.train_transform, self.loader_eval_transform = self.placed.train, self.placed.loader_eval
        self.batch_augment, self.device_reader = self.placed.batch_augment, self.placed.device_reader

    @staticmethod
    def problems(root: str | Path | None, labels: Any, valid_pct: Any, batch_size: Any, size: Any,
                 on_bad_file: Any, sampler: Any = "random", format: Any = "folder") -> list[Problem]:
        """The problems of these settings (the ``data.*`` keys), the label source's among them
        (``labels=None``: a source that could not be built, named by the caller)."""
        if format not in DATA_FORMATS:
            return [Problem("data.format", format, " or ".join(DATA_FORMATS),
                            "folder reads images under data.root; litdata reads shards written by src.prepare")]
        if format == "litdata":  # labels and split are the shards'; a local root is checked now, s3:// when read
            sampler_problems = [] if sampler == "random" else [Problem(
                "data.sampler", sampler, "random with data.format=litdata (shards stream in their own shuffled order)",
                "set data.sampler=random, or train from the image folder (data.format=folder) to balance classes")]
            return batch_size_problems(batch_size, "data.batch_size") + litdata_problems() + sampler_problems + (
                [] if root is None or is_remote(root) else local_shards_problems(root, size))
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
        if sampler not in SAMPLERS:
            found.append(Problem("data.sampler", sampler, " or ".join(SAMPLERS),
                                 "balanced draws every class equally often (imbalanced folders); random shuffles"))
        elif sampler == "balanced" and isinstance(labels, LabelSource) and labels.multi_label:
            found.append(Problem("data.sampler", sampler, "random for multi-label data (an image has several classes, "
                                 "so there is no per-class draw)", "set data.sampler=random"))
        return found

    @cached_property
    def manifest(self) -> dict:
        """What the shards at ``root`` hold (``format=litdata``): classes, label settings, split, sizes."""
        return read_manifest(self.shards_root)

    @cached_property
    def index(self) -> FolderIndex:
        if self.format == "litdata":  # a list of every file is what shards do without (src.bench, src.inspect need it)
            raise ValueError(f"data.format=litdata: the shards at {self.shards_root} have no file index to list; "
                             "run this command on the image folder they were written from (data.format=folder)")
        handed = launch_handoff.received()
        if handed is not None and "scan" in handed:  # a DDP process launched by rank 0, which scanned
            index, self.scan.bad, self.scan.kept = index_from_payload(handed["scan"], self._index_settings())
            self.scan.cache = None  # rank 0 keeps it
            log.info("%s: rank %s uses rank 0's scan of %d images and opened %d of the files", self.root,
                     os.environ.get("LOCAL_RANK", "?"), self.scan.kept, self.scan.opened)
        else:
            index = self.label_source.index(self.root, self.valid_pct, self.seed, self.scan)
            self.scan.save_cache()  # the verdicts hold whether or not on_bad_file=error stops the run next
            if self.decisions is not None:
                subsets = apply_decisions({"train": index.train, "valid": index.valid, "test": index.test},
                                          index.classes, self.root, self.decisions, self.label_source.label_delim)
                index = FolderIndex(index.layout, index.classes, subsets["train"], subsets["valid"], subsets["test"])
        self._report_bad_files()
        return index

    def _index_settings(self) -> dict[str, Any]:
        """What the index depends on, checked by the processes that receive rank 0's scan."""
        return {"root": str(self.root), "labels": repr(self.label_source), "valid_pct": self.valid_pct,
                "seed": self.seed, "max_image_pixels": self.scan.max_pixels,
                "decisions": str(self.decisions) if self.decisions else None}

    def index_payload(self) -> dict[str, Any]:
        """The scanned index as JSON values, for the DDP processes rank 0 launches (:mod:`src.runs.launch_handoff`)."""
        return index_payload(self.index, self.scan.bad, self.scan.kept, self._index_settings())

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
        return self.manifest["classes"] if self.format == "litdata" else self.index.classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def multi_label(self) -> bool:
        """Several labels per image (``label_delim`` set): the model trains with BCE instead of softmax."""
        return self.manifest["multi_label"] if self.format == "litdata" else self.label_source.multi_label

    @property
    def class_counts(self) -> list[int]:
        """Training images per class, in class order (multi-label: images carrying the class); what
        ``model.class_weights=balanced`` is computed from (shards: as src.prepare counted them)."""
        if self.format == "litdata":
            return list(self.manifest["train_class_counts"])
        counts = [0] * self.num_classes
        for sample in self.index.train:
            for label in (sample.label if self.multi_label else (sample.label,)):
                counts[label] += 1
        return counts

    def model_fields(self) -> dict:
        """What the model config takes from the data (``model.classes``, ``model.multi_label``): the
        one place it comes from, for every entry point that builds a model from a config."""
        return {"classes": self.classes, "multi_label": self.multi_label}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.format == "litdata":
            self._setup_shards()
            return
        index = self.index
        self.datasets = {
            subset: ImageDataset(samples, transform, skip_unreadable=self.on_bad_file == "skip",
                                 num_labels=self.num_classes if self.multi_label else None, decode_size=self.size,
                                 seed=self.loader_seed if subset == "train" else None,
                                 read=self.device_reader or functools.partial(load_rgb, max_pixels=self.scan.max_pixels))
            for subset, samples, transform in [("train", index.train, self.train_transform),
                                               ("valid", index.valid, self.loader_eval_transform),
                                               ("test", index.test, self.loader_eval_transform)]
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

    def _setup_shards(self) -> None:
        # litdata is needed only for data.format=litdata
        from src.data.streaming import ShardDataset, ShardSubset

        raise_problems(size_problems(self.manifest, self.shards_root, self.size))
        counts = self.manifest["subsets"]
        num_labels = self.num_classes if self.multi_label else None
        # Training streams (each rank its own chunks, shuffled); validation and test are read in stored order,
        # split evenly between DDP ranks by Lightning's sampler (ShardSubset says why).
        self.datasets = {
            "train": ShardDataset(self.shards_root, "train", self.train_transform, shuffle=True, seed=self.seed,
                                  num_labels=num_labels, decode_size=self.size,
                                  drop_last=counts["train"] > self.batch_size, cache_dir=self.shard_cache_dir),
            **{subset: ShardSubset(self.shards_root, subset, self.loader_eval_transform, num_labels=num_labels,
                                   decode_size=self.size, cache_dir=self.shard_cache_dir)
               for subset in ("valid", "test") if counts.get(subset)},
        }
        log.info("%s: shards of %d classes, %d training and %d validation images (split of %s, seed %s)",
                 self.shards_root, self.num_classes, counts["train"], counts["valid"], self.manifest["source"],
                 self.manifest["seed"])
        self._copy_split_csv()

    @rank_zero_only
    def _copy_split_csv(self) -> None:
        """The run's split.csv is the one src.prepare wrote next to the shards (paths under its data.root)."""
        if self.split_csv is not None:
            with atomic_open(self.split_csv, "wb") as f:
                f.write(read_bytes(self.shards_root, "split.csv"))

    def train_sampler(self) -> EpochShuffleSampler | BalancedSampler:
        """The training order: a function of (seed, epoch) (the contract of :mod:`src.data.samplers`)."""
        if self.sampler == "balanced":
            return BalancedSampler([s.label for s in self.index.train], seed=self.loader_seed)
        return EpochShuffleSampler(len(self.datasets["train"]), seed=self.loader_seed)

    def _loader(self, subset: str, shuffle: bool) -> DataLoader:
        self.use_epoch_data()  # progressive resizing: this epoch's stage's size and batch size
        if self.format == "litdata" and subset == "train":
            from src.data.streaming import shard_loader

            return shard_loader(self.datasets[subset], batch_size=self.batch_size, num_workers=self.num_workers,
                                pin_memory=self.pin_memory, drop_last=self.datasets[subset].drop_last,
                                worker_init_fn=self.worker_init)
        return EpochDataLoader(
            self.datasets[subset],
            batch_size=self.batch_size,
            sampler=self.train_sampler() if shuffle else None,
            # fastai drops the last partial batch in training: a batch of one breaks BatchNorm.
            drop_last=shuffle and len(self.datasets[subset]) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            # The workers' base seed is drawn from this, not from the global generator, whose draws
            # (dropout) must not depend on when loader iterators are created.
            generator=torch.Generator().manual_seed(self.loader_seed),
            collate_fn=self.placed.collate_fn,
            worker_init_fn=self.worker_init,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if not self.datasets.get("test"):
            raise ValueError(f"no test images: add {self.root}/test/<class>/ folders to use trainer.test")
        return self._loader("test", shuffle=False)
