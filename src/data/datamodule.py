"""The DataModule: an image folder, its labels and split, augmentation, normalisation and loaders.

The labels come from ``labels``, a built label source (see :mod:`src.data.labels.sources`):
- :class:`FolderLabels`: class folders (fastai's ``train="."``), ``root/<class>/*.jpg``, split at
  random per class with ``valid_pct`` and ``seed``; or split folders: ``root/train/<class>/``,
  ``root/valid/<class>/`` (or ``val/``) and an optional ``root/test/<class>/`` for ``trainer.test``;
- :class:`CsvLabels`: a table of paths and labels; :class:`RegexLabels`: a capture group of each file's path.
The class list comes from the labels and is what the model's class count is built from.
With ``format="litdata"``, ``root`` is a folder (or ``s3://`` prefix) of shards written by
``python -m src.prepare``: labels, split and classes come from its manifest (:mod:`src.data.shards.streaming`).
"""

from __future__ import annotations

import functools
import logging
import random
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from src.data.loading.balanced_sampler import BalancedSampler
from src.data.loading.dataset import ImageDataset
from src.data.placement.device_batches import DeviceBatches, placed_transforms
from src.data.files.image_reader import MAX_IMAGE_PIXELS, load_rgb
from src.data.labels.sources import SampleIndex, FolderLabels, LabelSource, index_folder  # noqa: F401 (index_folder: API)
from src.data.files.scan import FileScan
from src.data.sources import DATA_SOURCES, data_source
from src.data.files.scan_cache import ScanCache
from src.data.loading.samplers import EpochDataLoader, EpochShuffleSampler
from src.data.loading.stage_data import EpochData, StageSizes
from src.data.placement.choice import DataPlacement
from src.data.transforms.batch_augment import ModelBatches
from src.data.transforms.presets import EvalTransform
from src.core.problems import Problem, problems_by_name, raise_problems
from src.data.loading.worker_priority import LowerWorkerPriority
from src.core.hardware import resolve_num_workers

log = logging.getLogger(__name__)



class ImageFolderDataModule(L.LightningDataModule):
    """Loads ``root`` as fastai's ``ImageDataBunch.from_folder`` (``from_df``, ``from_name_re``) did,
    with torchvision v2 transforms.

    Args:
        root: folder of class folders, or of train/valid[/test] folders; with csv or regex
            labels, the folder the image paths are relative to.
        labels: the label source (:class:`~src.data.labels.sources.FolderLabels` when None); with a
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
            and ``on``: where they run, ``workers``, ``device`` or ``auto`` (:mod:`src.data.placement.choice`).
        decode_on: ``workers`` or ``device`` (JPEGs decoded on the GPU, :mod:`src.data.placement.gpu_decode`).
        batch_size, num_workers, pin_memory: DataLoader settings (``num_workers=auto``: see
            :func:`src.core.hardware.resolve_num_workers`).
        split_csv: where to record the split (``path,label,subset``); None to skip.
        on_bad_file: ``skip`` leaves unreadable files out (listed in ``bad_files_csv``, one-line
            summary in the log); ``error`` stops before training, naming them.
        bad_files_csv: where to list the files left out (``path,reason``); None to skip.
        max_image_pixels: larger images are bad files, never decoded (decompression-bomb guard).
        scan_workers: threads checking the files before training.
        scan_cache_dir: where the scan's verdicts are kept between runs (see
            :mod:`src.data.files.scan_cache`); None opens every file every run.
        rescan: open every file again, whatever the cache holds (the cache is rewritten).
        sampler: ``random`` (shuffled, each image once per epoch) or ``balanced`` (every class equally
            likely, with replacement, as many images per epoch; single-label only), see
            :mod:`src.data.loading.balanced_sampler`.
        format: ``folder`` (images under ``root``) or ``litdata`` (shards of ``src.prepare`` at ``root``,
            a folder or ``s3://bucket/prefix``; its labels and split are the shards').
        shard_cache_dir: where litdata keeps chunks downloaded from ``s3://`` (None: litdata's default).
        decisions: a decisions file of ``python -m src.audit`` (``path,action,new_label,reason``): its drops and
            relabels are applied to the index after the split (:mod:`src.data.labels.decisions`); None: none.

    The constructor raises :class:`~src.core.problems.ConfigError` with every problem of :meth:`problems`.
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
        self.label_source = FolderLabels() if labels is None else labels
        raise_problems(self.problems(root, self.label_source, valid_pct, batch_size, size, on_bad_file,
                                     sampler=sampler, format=format, decode_on=decode_on))
        self.sampler = sampler
        self.root = Path(root).expanduser()
        self.seed = seed
        # The training order and each image's augmentation are functions of this seed and the epoch
        # (src/data/loading/samplers.py), so a resumed run sees what the uninterrupted run saw; seed=null
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
        self.max_image_pixels = max_image_pixels
        cache = ScanCache(Path(scan_cache_dir), self.root, max_image_pixels, rescan) if scan_cache_dir else None
        self.source = data_source(format, root=root, label_source=self.label_source, valid_pct=valid_pct, seed=seed,
                                  scan=FileScan(max_pixels=max_image_pixels, workers=scan_workers, cache=cache),
                                  on_bad_file=on_bad_file, bad_files_csv=Path(bad_files_csv) if bad_files_csv else None,
                                  shard_cache_dir=shard_cache_dir,
                                  decisions=Path(decisions).expanduser() if decisions else None)
        augment = dict(augment or {})
        self.placement = DataPlacement.resolve(augment.pop("on", "auto"), decode_on)
        self.device_batches = DeviceBatches(self.placement.augment_on, self.loader_seed)
        self.stage_sizes: StageSizes | None = None  # progressive resizing: set by follow_stages
        self.resize_method, self.interpolation, self.augment = resize_method, interpolation, augment
        self.use_transforms_at(size)
        self.datasets: dict[str, ImageDataset] = {}

    def use_transforms_at(self, size: int) -> None:
        """The transforms at ``size`` (``data.size``, or a stage's own: src/data/loading/stage_data.py): what the
        loader workers run (``train_transform``, ``loader_eval_transform``) and what finishes a batch on
        the device with ``augment.on=device`` (``batch_augment``); ``eval_transform`` is the whole
        evaluation transform, for single images (inspect)."""
        self.eval_transform = EvalTransform(size, self.mean, self.std, self.resize_method, self.interpolation)
        self.placed = placed_transforms(self.placement, size, self.mean, self.std, self.resize_method,
                                        self.interpolation, self.eval_transform, self.augment, self.max_image_pixels)
        self.train_transform, self.loader_eval_transform = self.placed.train, self.placed.loader_eval
        self.batch_augment, self.device_reader = self.placed.batch_augment, self.placed.device_reader

    @staticmethod
    def problems(root: str | Path | None, labels: Any, valid_pct: Any, batch_size: Any, size: Any,
                 on_bad_file: Any, sampler: Any = "random", format: Any = "folder",
                 decode_on: Any = "workers") -> list[Problem]:
        """The problems of these settings (the ``data.*`` keys): those of the source of ``format``
        (:mod:`src.data.sources`; ``labels=None``: a label source that could not be built, named by the caller)."""
        if format not in DATA_SOURCES:
            return [Problem("data.format", format, " or ".join(DATA_SOURCES),
                            "folder reads images under data.root; litdata reads shards written by src.prepare")]
        settings = {"root": root, "labels": labels, "valid_pct": valid_pct, "batch_size": batch_size, "size": size,
                    "on_bad_file": on_bad_file, "sampler": sampler, "decode_on": decode_on}
        return problems_by_name(DATA_SOURCES[format].problems, settings)  # each source takes the settings it reads

    @property
    def index(self) -> SampleIndex:
        """Every image with its label and subset (a folder; shards have none: :class:`~src.data.sources.ShardSource`)."""
        return self.source.index

    @property
    def scan(self) -> FileScan:
        """The check of every file before training (empty for shards, whose files were checked by src.prepare)."""
        return self.source.scan

    def handoff(self) -> dict[str, Any]:
        """What the DDP processes rank 0 launches receive instead of reading the data again (:mod:`src.core.launch_handoff`)."""
        return self.source.handoff()

    @property
    def skipped_during_training(self) -> int:
        """Files that became unreadable after the scan and were replaced in a batch (all subsets)."""
        return sum(dataset.failures.value for dataset in self.datasets.values())

    @property
    def classes(self) -> list[str]:
        return self.source.classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def multi_label(self) -> bool:
        """Several labels per image (``label_delim`` set): the model trains with BCE instead of softmax."""
        return self.source.multi_label

    @property
    def class_counts(self) -> list[int]:
        """Training images per class, in class order (multi-label: images carrying the class); what
        ``model.class_weights=balanced`` is computed from (shards: as src.prepare counted them)."""
        return self.source.class_counts(self.num_classes)

    def model_fields(self) -> dict:
        """What the model config takes from the data (``model.classes``, ``model.multi_label``): the
        one place it comes from, for every entry point that builds a model from a config."""
        return {"classes": self.classes, "multi_label": self.multi_label}

    # --- progressive resizing (src/data/loading/stage_data.py) ---------------------------------------------

    def follow_stages(self, epoch_data: EpochData) -> None:
        """Build each epoch's loaders at the size and batch size of its stage (``epoch_data``, a
        :class:`~src.optim.stages.StageSchedule`'s ``data_at_epoch``); the data's own where it gives None."""
        self.stage_sizes = StageSizes(epoch_data, self.size, self.batch_size)

    def use_epoch_data(self) -> None:
        """Switch the transforms and batch size to those of the trainer's current epoch (called by the loaders)."""
        if self.stage_sizes is None or self.trainer is None:
            return
        epoch = self.trainer.current_epoch
        size, self.batch_size = self.stage_sizes.at_epoch(epoch)
        if size != self.size:
            self.size = size
            self.use_transforms_at(size)
            for dataset, transform in ((self.datasets.get("train"), self.train_transform),
                                       (self.datasets.get("valid"), self.loader_eval_transform),
                                       (self.datasets.get("test"), self.loader_eval_transform)):
                if dataset is not None:
                    dataset.use_transform(transform, size)
            log.info("epoch %d: images at %d px, batches of %d", epoch + 1, size, self.batch_size)

    # --- batches finished on the training device (src/data/placement/device_batches.py) --------------------

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.device_batches.decoded(self.placed, batch, self.trainer.training, self.trainer.strategy.root_device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.device_batches.finished(self.placed, batch, self.trainer.training, self.trainer.current_epoch,
                                            self.trainer.global_rank, self.trainer.precision_plugin.convert_input)

    def model_batches(self, loader: DataLoader, device: torch.device, train: bool) -> ModelBatches:
        """``loader``'s batches on ``device`` as the network takes them, for loops outside the Trainer."""
        return self.device_batches.model_batches(self.placed, loader, device, train)

    def model_input(self, images: torch.Tensor, train: bool, draw_seed: int | None = None) -> torch.Tensor:
        """A loader batch's images (on their device) as the network takes them."""
        return self.device_batches.model_input(self.placed, images, train, draw_seed)

    def normalized_items(self, subset: str) -> Dataset:
        """``datasets[subset]`` with normalised float images whatever ``augment.on`` (figures of single images)."""
        return self.device_batches.normalized_items(self.placed, self.datasets[subset])

    def state_dict(self) -> dict[str, Any]:
        return self.device_batches.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.device_batches.load_state_dict(state_dict)

    def teardown(self, stage: str) -> None:
        if self.device_reader is not None and self.device_reader.summary():
            log.info(self.device_reader.summary())

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        transforms = {"train": self.train_transform, "valid": self.loader_eval_transform,
                      "test": self.loader_eval_transform}
        self.datasets = self.source.datasets(
            transforms, num_labels=self.num_classes if self.multi_label else None, decode_size=self.size,
            train_seed=self.loader_seed, skip_unreadable=self.on_bad_file == "skip", batch_size=self.batch_size,
            read=self.device_reader or functools.partial(load_rgb, max_pixels=self.max_image_pixels))
        if self.split_csv is not None:
            self.source.write_split_csv(self.split_csv)

    def train_sampler(self) -> EpochShuffleSampler | BalancedSampler:
        """The training order: a function of (seed, epoch) (the contract of :mod:`src.data.loading.samplers`)."""
        if self.sampler == "balanced":
            return BalancedSampler([s.label for s in self.index.train], seed=self.loader_seed)
        return EpochShuffleSampler(len(self.datasets["train"]), seed=self.loader_seed)

    def _evaluation_sampler(self, dataset: Dataset) -> UnrepeatedDistributedSampler | None:
        """Under DDP, each validation or test image on exactly one process. Lightning's default (torch's
        DistributedSampler) pads a set that does not split evenly with repeated images, which the metrics
        then count twice; the metrics here sum their states across processes, so uneven shares are exact."""
        if self.trainer is None or self.trainer.world_size < 2:
            return None
        if len(dataset) < self.trainer.world_size:
            raise ValueError(f"{len(dataset)} validation or test image(s) for {self.trainer.world_size} processes: "
                             "each process needs one; hold out more images (data.valid_pct) or train on fewer devices")
        return UnrepeatedDistributedSampler(dataset, num_replicas=self.trainer.world_size,
                                            rank=self.trainer.global_rank, shuffle=False)

    def _loader(self, subset: str, shuffle: bool, sharded: bool = True) -> DataLoader:
        self.use_epoch_data()  # progressive resizing: this epoch's stage's size and batch size
        if self.source.streams(subset):
            return self.source.loader(self.datasets[subset], batch_size=self.batch_size, num_workers=self.num_workers,
                                      pin_memory=self.pin_memory, worker_init_fn=self.worker_init)
        return EpochDataLoader(
            self.datasets[subset],
            batch_size=self.batch_size,
            sampler=(self.train_sampler() if shuffle else
                     self._evaluation_sampler(self.datasets[subset]) if sharded else None),
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

    def whole_valid_loader(self) -> DataLoader:
        """Every validation image, in order, in this process, also under DDP: for loops outside the
        Trainer's (the end-of-run figures on rank 0); :meth:`val_dataloader` gives each process its share."""
        return self._loader("valid", shuffle=False, sharded=False)

    def test_dataloader(self) -> DataLoader:
        if not self.datasets.get("test"):
            raise ValueError(f"no test images: add {self.root}/test/<class>/ folders to use trainer.test")
        return self._loader("test", shuffle=False)
