"""Where a DataModule's images come from: one object per ``data.format``, answering the same questions.

- :class:`FolderSource` (``folder``): images under ``data.root``, scanned, labelled and split by the label
  source (:mod:`src.data.labels.sources`);
- :class:`ShardSource` (``litdata``): shards written by ``python -m src.prepare`` at ``data.root`` (a folder or
  ``s3://bucket/prefix``), whose manifest holds the classes, labels and split (:mod:`src.data.shards`).

Each gives its classes, whether it is multi-label, the training images per class, its datasets, the loader of a
subset, what rank 0 hands to the DDP processes it launches, and where the run's ``split.csv`` comes from. The
DataModule asks its source and never which format it has; :data:`DATA_SOURCES` is the one table of formats.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset

from src.core import launch_handoff
from src.core.atomic_write import atomic_open
from src.core.image_size import image_size_problems
from src.core.problems import Problem, raise_problems
from src.data.files.listing import Sample, data_root_problems
from src.data.files.scan import FileScan
from src.data.labels.decisions import apply_decisions
from src.data.labels.index_payload import index_from_payload, index_payload
from src.data.labels.sources import SampleIndex, LabelSource
from src.data.labels.split import read_split_csv, valid_pct_problems, write_split_csv
from src.data.loading.balanced_sampler import SAMPLERS
from src.data.loading.dataset import ImageDataset, batch_size_problems
from src.data.shards.manifest import (check_classes, is_remote, litdata_problems, local_shards_problems, read_bytes,
                                      read_manifest, size_problems)

log = logging.getLogger(__name__)

ON_BAD_FILE = ("skip", "error")
MAX_NAMED_CLASSES = 10  # a warning about classes names this many, then "..."


class ModelClasses(Protocol):
    """What evaluating needs of a trained model's labels (a :class:`~src.models.loading.LoadedClassifier` has it)."""

    classes: list[str]
    multi_label: bool

    @property
    def label_delim(self) -> str | None: ...


@dataclass
class EvaluationImages:
    """The images to evaluate, where they come from, and what was left out."""

    samples: list[Sample]
    root: Path  # the folder predictions.csv's paths are relative to
    source: str  # in words, for the log and metrics.json
    unknown: Counter  # images of labels the model does not know, by label
    unreadable: int
    dataset: Dataset | None = None  # where the images are read from, when not files (shards)
    scan: FileScan | None = None  # the check of the files (None for shards)


class FolderSource:
    """Images under ``root``: every file checked by ``scan``, labelled and split by ``label_source``.

    A DDP process launched by rank 0 takes rank 0's scan (:mod:`src.core.launch_handoff`) instead of opening
    the files again. Unreadable files are listed in ``bad_files_csv`` and left out (``on_bad_file=skip``) or
    stop the run (``error``).
    """

    holds_image_files = True  # what src.prepare can write as shards

    def __init__(self, root: str | Path, label_source: LabelSource, valid_pct: float, seed: int, scan: FileScan,
                 on_bad_file: str, bad_files_csv: Path | None, decisions: Path | None = None) -> None:
        self.root = Path(root).expanduser()
        self.label_source = label_source
        self.valid_pct, self.seed = valid_pct, seed
        self.scan = scan
        self.on_bad_file = on_bad_file
        self.bad_files_csv = bad_files_csv
        self.decisions = decisions

    @staticmethod
    def problems(root: Any, labels: Any, valid_pct: Any, batch_size: Any, size: Any, on_bad_file: Any,
                 sampler: Any) -> list[Problem]:
        """The problems of the ``data.*`` settings of a folder (the label source's among them; ``labels=None``:
        a source that could not be built, named by the caller)."""
        if labels is None:
            found = []
        elif isinstance(labels, LabelSource):
            found = labels.problems(None if root is None else Path(str(root)))
        else:  # e.g. data.labels=csv: a name where the data/labels group puts a source's config
            found = [Problem("data.labels", labels, "a label source: folder, csv or regex, chosen as a config group",
                             "write data/labels=csv (a slash) and its settings as data.labels.csv_path=...")]
        found += valid_pct_problems(valid_pct)
        found += batch_size_problems(batch_size, "data.batch_size")
        found += image_size_problems("data.size", size, "e.g. data.size=224")
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

    @staticmethod
    def root_problems(root: Any) -> list[Problem]:
        """``data.root`` must be an existing folder (checked with the whole config, before the DataModule is built)."""
        return data_root_problems(root)

    @cached_property
    def index(self) -> SampleIndex:
        handed = launch_handoff.received()
        if handed is not None and "scan" in handed:  # a DDP process launched by rank 0, which scanned
            index, self.scan.bad, self.scan.kept = index_from_payload(handed["scan"], self.index_settings())
            self.scan.cache = None  # rank 0 keeps it
            log.info("%s: rank %s uses rank 0's scan of %d images and opened %d of the files", self.root,
                     os.environ.get("LOCAL_RANK", "?"), self.scan.kept, self.scan.opened)
        else:
            index = self.label_source.index(self.root, self.valid_pct, self.seed, self.scan)
            self.scan.save_cache()  # the verdicts hold whether or not on_bad_file=error stops the run next
            if self.decisions is not None:  # after the split: every image keeps its subset
                subsets = apply_decisions({"train": index.train, "valid": index.valid, "test": index.test},
                                          index.classes, self.root, self.decisions, self.label_source.label_delim)
                index = SampleIndex(index.layout, index.classes, subsets["train"], subsets["valid"], subsets["test"])
        self._report_bad_files()
        return index

    def index_settings(self) -> dict[str, Any]:
        """What the index depends on, checked by the processes that receive rank 0's scan."""
        return {"root": str(self.root), "labels": repr(self.label_source), "valid_pct": self.valid_pct,
                "seed": self.seed, "max_image_pixels": self.scan.max_pixels,
                "decisions": str(self.decisions) if self.decisions else None}

    def handoff(self) -> dict[str, Any]:
        """What the DDP processes rank 0 launches receive instead of scanning again: the scanned index."""
        return {"scan": index_payload(self.index, self.scan.bad, self.scan.kept, self.index_settings())}

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
    def classes(self) -> list[str]:
        return self.index.classes

    @property
    def multi_label(self) -> bool:
        return self.label_source.multi_label

    def class_counts(self, num_classes: int) -> list[int]:
        counts = [0] * num_classes
        for sample in self.index.train:
            for label in (sample.label if self.multi_label else (sample.label,)):
                counts[label] += 1
        return counts

    def datasets(self, transforms: dict[str, Callable], *, num_labels: int | None, decode_size: int,
                 train_seed: int, read: Callable[..., Any], skip_unreadable: bool, batch_size: int) -> dict[str, Dataset]:
        index = self.index
        datasets = {
            subset: ImageDataset(samples, transforms[subset], skip_unreadable=skip_unreadable, num_labels=num_labels,
                                 decode_size=decode_size, seed=train_seed if subset == "train" else None, read=read)
            for subset, samples in (("train", index.train), ("valid", index.valid), ("test", index.test))
        }
        log.info("%s: %d classes, %d training and %d validation images (%s layout)",
                 self.root, len(index.classes), len(index.train), len(index.valid), index.layout)
        self._warn_of_classes_without_validation_images()
        if not index.valid:
            fix = (f"mark some rows true in the {self.label_source.valid_column!r} column" if self.label_source.valid_column
                   else "every class has a single image; add images or use a train/ and valid/ layout")
            raise ValueError(f"no validation images under {self.root}: {fix}")
        return datasets

    def _labels_of(self, samples: Sequence[Sample]) -> set[int]:
        return {label for s in samples for label in (s.label if self.multi_label else (s.label,))}

    def _warn_of_classes_without_validation_images(self) -> None:
        """Name the classes that are trained on but never validated: a class of a single image (the split
        keeps it for training), or one missing from valid/. Their error rate is then unknown."""
        index = self.index
        unseen = sorted(self._labels_of(index.train) - self._labels_of(index.valid))
        if not unseen or not index.valid:  # no validation images at all is an error (below)
            return
        names = [index.classes[label] for label in unseen]
        shown = ", ".join(repr(n) for n in names[:MAX_NAMED_CLASSES]) + (", ..." if len(names) > MAX_NAMED_CLASSES else "")
        log.warning("%d of %d classes have no validation image, so their error rate is not measured: %s. A class "
                    "needs two images or more to have one in validation (one stays for training); add images",
                    len(names), len(index.classes), shown)

    def streams(self, subset: str) -> bool:
        """Whether ``subset`` is read by its own loader (:meth:`ShardSource.loader`); never for a folder."""
        return False

    @rank_zero_only
    def write_split_csv(self, path: Path) -> None:
        subsets = {"train": self.index.train, "valid": self.index.valid, "test": self.index.test}
        write_split_csv(path, self.root, self.classes, subsets, self.label_source.label_delim)

    def check_classes_of(self, classes: list[str], what: str) -> None:
        """A folder's classes are what its scan finds: a checkpoint resumed on it is checked by Lightning's loading."""

    @staticmethod
    def run_images(ckpt_path: Path, run_data: Any, loaded: ModelClasses, transform: Callable,
                   subset: str) -> EvaluationImages:
        """The ``subset`` rows of the run's ``split.csv`` (next to ``checkpoints/``), checked again (the files
        were readable at training time; they may not be now)."""
        root = Path(run_data.root).expanduser()
        samples, unknown = read_split_csv(ckpt_path, root, subset, loaded.classes, loaded.multi_label,
                                          loaded.label_delim)
        scan = FileScan()
        readable = set(scan.keep_readable([s.path for s in samples]))
        source = f"{'validation' if subset == 'valid' else subset} split of {ckpt_path.resolve().parent.parent / 'split.csv'}"
        return EvaluationImages([s for s in samples if s.path in readable], root, source, unknown,
                                len(scan.unreadable), scan=scan)



class ShardSource:
    """Shards written by ``python -m src.prepare`` at ``root`` (a folder or ``s3://`` prefix): its manifest gives
    the classes, labels and split; nothing is scanned (the shards hold only images that passed ``src.prepare``'s
    scan, so ``scan`` stays empty)."""

    holds_image_files = False

    def __init__(self, root: str | Path, cache_dir: str | None, seed: int) -> None:
        self.root = str(root)  # a URL stays a URL (Path would fold s3:// into s3:/)
        self.cache_dir = cache_dir
        self.seed = seed
        self.scan = FileScan()

    @staticmethod
    def problems(root: Any, batch_size: Any, size: Any, sampler: Any, decode_on: Any = "workers") -> list[Problem]:
        """Labels and split are the shards'; a local root is checked now, an ``s3://`` one when it is read."""
        found = batch_size_problems(batch_size, "data.batch_size") + litdata_problems()
        if decode_on == "device":
            found.append(Problem("data.decode_on", decode_on, "workers with data.format=litdata (shards are decoded "
                                 "where they are read)", "set data.decode_on=workers"))
        if sampler != "random":
            found.append(Problem("data.sampler", sampler, "random with data.format=litdata (shards stream in their own "
                                 "shuffled order)", "set data.sampler=random, or train from the image folder "
                                 "(data.format=folder) to balance classes"))
        return found + ([] if root is None or is_remote(root) else local_shards_problems(root, size))

    @staticmethod
    def root_problems(root: Any) -> list[Problem]:
        """Checked by :meth:`problems` (a local folder) or when read (``s3://``)."""
        return []

    @cached_property
    def manifest(self) -> dict:
        """What the shards hold: classes, label settings, split, sizes (:mod:`src.data.shards.manifest`)."""
        return read_manifest(self.root)

    @property
    def index(self) -> SampleIndex:
        # a list of every file is what shards do without (src.bench, src.inspect, src.prepare need one)
        raise ValueError(f"data.format=litdata: the shards at {self.root} have no file index to list; "
                         "run this command on the image folder they were written from (data.format=folder)")

    def handoff(self) -> dict[str, Any]:
        """Nothing: each DDP process reads its own part of the shards."""
        return {}

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    @property
    def multi_label(self) -> bool:
        return self.manifest["multi_label"]

    def class_counts(self, num_classes: int) -> list[int]:
        """As ``src.prepare`` counted them."""
        return list(self.manifest["train_class_counts"])

    def datasets(self, transforms: dict[str, Callable], *, num_labels: int | None, decode_size: int,
                 train_seed: int, read: Callable[..., Any], skip_unreadable: bool, batch_size: int) -> dict[str, Dataset]:
        from src.data.shards.streaming import ShardDataset, ShardSubset  # litdata: only data.format=litdata needs it

        raise_problems(size_problems(self.manifest, self.root, decode_size))
        counts = self.manifest["subsets"]
        # Training streams (each rank its own chunks, shuffled); validation and test are read in stored order,
        # split evenly between DDP ranks by Lightning's sampler (ShardSubset says why).
        datasets = {
            "train": ShardDataset(self.root, "train", transforms["train"], shuffle=True, seed=self.seed,
                                  num_labels=num_labels, decode_size=decode_size,
                                  drop_last=counts["train"] > batch_size, cache_dir=self.cache_dir),
            **{subset: ShardSubset(self.root, subset, transforms[subset], num_labels=num_labels,
                                   decode_size=decode_size, cache_dir=self.cache_dir)
               for subset in ("valid", "test") if counts.get(subset)},
        }
        log.info("%s: shards of %d classes, %d training and %d validation images (split of %s, seed %s)",
                 self.root, len(self.classes), counts["train"], counts["valid"], self.manifest["source"],
                 self.manifest["seed"])
        return datasets

    def streams(self, subset: str) -> bool:
        """The training shards stream through litdata's stateful loader (:meth:`loader`)."""
        return subset == "train"

    def loader(self, dataset: Dataset, *, batch_size: int, num_workers: int, pin_memory: bool,
               worker_init_fn: Callable) -> DataLoader:
        from src.data.shards.streaming import shard_loader

        return shard_loader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                            drop_last=dataset.drop_last, worker_init_fn=worker_init_fn)

    @rank_zero_only
    def write_split_csv(self, path: Path) -> None:
        """The run's split.csv is the one src.prepare wrote next to the shards (paths under its data.root)."""
        with atomic_open(path, "wb") as f:
            f.write(read_bytes(self.root, "split.csv"))

    def check_classes_of(self, classes: list[str], what: str) -> None:
        """Refuse shards written again since ``what`` (a checkpoint) with other classes."""
        check_classes(self.manifest, self.root, classes, what)

    @staticmethod
    def run_images(ckpt_path: Path, run_data: Any, loaded: ModelClasses, transform: Callable,
                   subset: str) -> EvaluationImages:
        """The validation subset of the shards a run trained from, refused if their classes are not the
        checkpoint's (``subset`` is ``valid``: shards keep no test subset to score apart)."""
        from src.data.shards.streaming import ShardSubset

        manifest = read_manifest(run_data.root)
        check_classes(manifest, run_data.root, loaded.classes, f"the checkpoint {ckpt_path}")
        dataset = ShardSubset(run_data.root, "valid", transform,
                              num_labels=len(loaded.classes) if loaded.multi_label else None,
                              decode_size=transform.size, cache_dir=run_data.get("shard_cache_dir"))
        root = Path(manifest["source"])
        return EvaluationImages(dataset.samples(root), root, f"validation shards of {run_data.root}", Counter(), 0,
                                dataset)



# data.format -> its source: folder reads images under data.root; litdata reads shards written by src.prepare.
DATA_SOURCES: dict[str, type[FolderSource] | type[ShardSource]] = {"folder": FolderSource, "litdata": ShardSource}


def data_source(format: str, *, root: str | Path, label_source: LabelSource, valid_pct: float, seed: int,
                scan: FileScan, on_bad_file: str, bad_files_csv: Path | None, shard_cache_dir: str | None,
                decisions: Path | None = None) -> FolderSource | ShardSource:
    """The source of ``data.format`` with the settings it takes (a folder: labels, split, scan; shards: where
    downloaded chunks are kept)."""
    if DATA_SOURCES[format] is ShardSource:
        return ShardSource(root, shard_cache_dir, seed)
    return FolderSource(root, label_source, valid_pct, seed, scan, on_bad_file, bad_files_csv, decisions)
