"""Reproducible train/validation splits (stratified, or random for multi-label), and ``split.csv``."""

from __future__ import annotations

import csv
import random
from collections import defaultdict
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
