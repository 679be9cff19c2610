"""Reproducible train/validation splits (stratified, or random for multi-label), and ``split.csv``."""

from __future__ import annotations

import csv
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from src.data.files.listing import Sample, relative_posix
from src.core.problems import Problem, is_number, raise_problems
from src.core.atomic_write import atomic_open


def valid_pct_problems(valid_pct: Any, key: str = "data.valid_pct") -> list[Problem]:
    """``valid_pct`` must leave images on both sides of the split: a fraction strictly between 0 and 1."""
    if is_number(valid_pct) and 0.0 < valid_pct < 1.0:
        return []
    return [Problem(key, valid_pct, "a fraction strictly between 0 and 1", f"e.g. {key}=0.2 (fastai's default)")]


def _validation_count(n: int, valid_pct: float) -> int:
    """``round(valid_pct * n)``, at least one and at most ``n - 1`` (none of a single image)."""
    return 0 if n < 2 else min(n - 1, max(1, round(valid_pct * n)))


def stratified_split(samples: Sequence[Sample], valid_pct: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split each class on its own: ``round(valid_pct * n)`` images to validation, at least one.

    Every class with at least two images is in validation and keeps one for training. The result
    depends only on the sorted samples and ``seed``, not on the order the file system lists files.
    The validation images are shuffled once (with the same seed) rather than left in class order,
    so a part of them (``trainer.limit_val_batches``) holds every class.
    """
    raise_problems(valid_pct_problems(valid_pct))
    by_label: dict[int, list[Sample]] = defaultdict(list)
    for sample in sorted(samples, key=lambda s: (s.label, str(s.path))):
        by_label[sample.label].append(sample)
    rng = random.Random(seed)
    train, valid = [], []
    for label in sorted(by_label):
        items = by_label[label]
        rng.shuffle(items)
        n_valid = _validation_count(len(items), valid_pct)
        valid += items[:n_valid]
        train += items[n_valid:]
    rng.shuffle(valid)
    return train, valid


def shuffled_once(samples: Sequence[Sample], seed: int) -> list[Sample]:
    """``samples`` in a seeded random order that depends only on their paths and ``seed``.

    For a validation set given whole (a ``valid/`` folder, a table's ``is_valid`` column), which comes
    class by class: shuffled, a part of it (``trainer.limit_val_batches``) holds every class, as the
    stratified split's validation does.
    """
    items = sorted(samples, key=lambda s: str(s.path))
    random.Random(seed).shuffle(items)
    return items


def random_split(samples: Sequence[Sample], valid_pct: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """``round(valid_pct * n)`` samples (at least one, at most ``n - 1``) to validation, at random.

    The split for multi-label samples: an image has several labels, so there is no class to
    stratify by (fastai's ``RandomSplitter`` too). Depends only on the sorted samples and ``seed``.
    """
    raise_problems(valid_pct_problems(valid_pct))
    items = sorted(samples, key=lambda s: str(s.path))
    random.Random(seed).shuffle(items)
    n_valid = _validation_count(len(items), valid_pct)
    return items[n_valid:], items[:n_valid]


def label_text(label: int | tuple[int, ...], classes: Sequence[str], label_delim: str | None = None) -> str:
    """The class name of a single label, or the class names of a multi-label joined by ``label_delim``."""
    if isinstance(label, tuple):
        return (label_delim or " ").join(classes[i] for i in label)
    return classes[label]


def write_split_csv(
    path: Path, root: Path, classes: Sequence[str], subsets: dict[str, Sequence[Sample]], label_delim: str | None = None
) -> None:
    """Write ``path,label,subset`` rows; paths relative to ``root`` where they lie below it.

    A multi-label sample's label cell holds its class names joined by ``label_delim``, as in the
    table it was read from.
    """
    with atomic_open(path, newline="") as f:
        writer = csv.writer(f, lineterminator="\n")  # the csv module's default is \r\n
        writer.writerow(["path", "label", "subset"])
        for subset, samples in subsets.items():
            for sample in samples:
                writer.writerow([relative_posix(sample.path, root), label_text(sample.label, classes, label_delim),
                                 subset])


def read_split_csv(ckpt_path: Path, root: Path, subset: str, classes: list[str], multi_label: bool,
                   label_delim: str | None) -> tuple[list[Sample], Counter]:
    """The ``subset`` rows (``valid`` or ``test``) of the run's ``split.csv`` (next to ``checkpoints/``), as samples
    (paths under the run's ``data.root``, ``root``); rows whose labels ``classes`` lacks are counted apart.

    A multi-label model's label cells hold class names joined by ``label_delim``.
    """
    split_csv = ckpt_path.resolve().parent.parent / "split.csv"
    if not split_csv.is_file():
        raise FileNotFoundError(
            f"{split_csv} not found: ckpt_path={str(ckpt_path)!r} is not inside a training run directory "
            "(RUN/checkpoints/*.ckpt next to RUN/split.csv); pass data.root=DIR to evaluate a folder of class folders"
        )
    samples, unknown, subsets = [], Counter(), Counter()
    with split_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            subsets[row["subset"]] += 1
            if row["subset"] != subset:
                continue
            names = [n for n in row["label"].split(label_delim) if n] if multi_label else [row["label"]]
            if any(name not in classes for name in names):
                unknown[row["label"]] += 1
                continue
            indices = tuple(sorted(classes.index(name) for name in names))
            samples.append(Sample(root / row["path"], indices if multi_label else indices[0]))
    if not subsets[subset]:
        held = ", ".join(f"{name} ({n})" for name, n in sorted(subsets.items()))
        raise ValueError(
            f"{split_csv} has no {subset} rows (it has {held or 'none'}): the run's data.root had no {subset}/ "
            "folder. Evaluate subset=valid, or a folder of class folders with data.root=DIR"
        )
    missing = [s.path for s in samples if not s.path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} {subset} image(s) of {split_csv} are missing under the training data.root={str(root)!r}, "
            f"e.g. {missing[0]}; run from the directory training ran in, or pass data.root=DIR"
        )
    return samples, unknown
