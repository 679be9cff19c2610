"""Where the labels come from: class folders, a CSV table, or a regular expression over file names.

One small class per source, chosen by the ``data/labels`` config group (``conf/data/labels/``:
``folder``, ``csv``, ``regex``) and handed built to the DataModule. Every source gives the same
:class:`SampleIndex` (the classes and the samples of each subset), so the split, ``split.csv``,
the checkpoints and evaluate/predict/export never depend on the source:

- :class:`FolderLabels` (fastai's ``from_folder``): class folders, or ``train/`` + ``valid/`` [+ ``test/``] folders;
- :class:`CsvLabels` (fastai's ``from_df``/``from_csv``): a path column and a label column, paths
  relative to ``root``; an optional ``valid_column`` (fastai's ``valid_col``: true/false, 1/0) fixes the split;
- :class:`RegexLabels` (fastai's ``from_name_re``): group 1 of ``re.search(pattern, path)``, ``path``
  being the image's path relative to ``root`` with forward slashes; files that do not match are
  left out and listed in ``bad_files.csv``.

With ``label_delim`` (csv and regex) a label cell holds several labels (multi-label, fastai's
``label_delim`` of the planet example): each ``Sample.label`` is then a sorted tuple of class
indices and the split is random (there is no single class to stratify by).

Construction only stores the settings; :meth:`LabelSource.problems` says which cannot work (the
DataModule raises them, the config check lists them).
"""

from __future__ import annotations

import csv
import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

from omegaconf import DictConfig, open_dict

from src.data.files.listing import IMAGE_EXTENSIONS, Sample, list_images, relative_posix, scan_class_folders
from src.data.files.scan import BadFile, FileScan
from src.data.labels.split import random_split, shuffled_once, stratified_split
from src.core.problems import Problem, raise_problems

log = logging.getLogger(__name__)

KEY = "data.labels"  # where a label source's settings sit in the config
VALID_FOLDER_NAMES = ("valid", "val")
# What a valid_column cell may hold (pandas writes True/False, other tools 1/0), in any case.
VALID_TRUE, VALID_FALSE = ("true", "1"), ("false", "0")


@dataclass
class SampleIndex:
    """What a label source found: the classes and the samples of each subset."""

    layout: str  # "class_folders", "split_folders", "csv" or "regex"
    classes: list[str]
    train: list[Sample]
    valid: list[Sample]
    test: list[Sample] = field(default_factory=list)


class LabelSource(ABC):
    """How to label the images under ``data.root``: :class:`FolderLabels`, :class:`CsvLabels`, :class:`RegexLabels`."""

    name: ClassVar[str]  # the source's config in conf/data/labels/ and its SampleIndex.layout
    label_delim: str | None = None  # set by the sources whose label cells may hold several labels

    @property
    def multi_label(self) -> bool:
        return self.label_delim is not None

    @property
    def valid_column(self) -> str | None:
        """The column that fixes the split (only a table has one)."""
        return None

    def problems(self, root: Path | None = None) -> list[Problem]:
        """Settings that cannot work; with ``root``, also what is missing under it."""
        return []

    def check(self, root: Path | None = None) -> None:
        raise_problems(self.problems(root))

    @abstractmethod
    def index(self, root: Path, valid_pct: float, seed: int, scan: FileScan | None = None) -> SampleIndex:
        """Label the images under ``root`` and split them (``valid_pct``, ``seed``); with ``scan``,
        unreadable files are left out (and recorded in ``scan.bad``)."""


@dataclass(frozen=True)
class FolderLabels(LabelSource):
    """The class folders name the labels (see :func:`index_folder`)."""

    name: ClassVar[str] = "folder"

    def index(self, root: Path, valid_pct: float, seed: int, scan: FileScan | None = None) -> SampleIndex:
        return index_folder(Path(root), valid_pct, seed, scan)


class _RowLabels(LabelSource):
    """A source that labels files one by one (a table, a pattern), before the class list exists."""

    @abstractmethod
    def rows(self, root: Path, scan: FileScan | None) -> list[LabelledFile]:
        """Every labelled file under ``root``."""

    def problems(self, root: Path | None = None) -> list[Problem]:
        if self.label_delim == "":
            return [Problem(f"{KEY}.label_delim", self.label_delim, "a separator such as ' ' or ';', or null",
                            f"set {KEY}.label_delim=' ' (fastai's planet), or null for one label per image")]
        return []

    def index(self, root: Path, valid_pct: float, seed: int, scan: FileScan | None = None) -> SampleIndex:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"data.root={str(root)!r} is not a folder; point data.root at the folder of the "
                                    "images")
        self.check(root)
        rows = self.rows(root, scan)
        if scan is not None:
            readable = set(scan.keep_readable([row.path for row in rows]))
            if rows and not readable:  # said here in full: a run directory holding bad_files.csv may be removed
                example = scan.unreadable[0]
                raise ValueError(f"none of the {len(rows)} image(s) labelled by data/labels={self.name} under "
                                 f"data.root={str(root)!r} can be read ({scan.summary()}), e.g. "
                                 f"{relative_posix(example.path, root)!r} ({example.kind}: {example.reason}); "
                                 "fix the paths in the labels or the files")
            self._warn_lost_classes(rows, readable)
            rows = [row for row in rows if row.path in readable]
        return _index_rows(rows, self, valid_pct, seed, root)

    def _warn_lost_classes(self, rows: list[LabelledFile], readable: set[Path]) -> None:
        """Name each class whose every file was left out: the model would otherwise lose it without a word."""
        labelled = {name for row in rows for name in _split_label(row, self.label_delim)}
        kept = {name for row in rows if row.path in readable for name in _split_label(row, self.label_delim)}
        lost = sorted(labelled - kept)
        if lost:
            log.warning("%d class(es) lost every file to unreadable or missing entries and are left out of the "
                        "model: %s (see the scan summary for why)", len(lost), ", ".join(map(repr, lost)))


@dataclass(frozen=True, kw_only=True)
class CsvLabels(_RowLabels):
    """A table of image paths (relative to ``data.root``, or absolute) and labels; see the module docstring."""

    name: ClassVar[str] = "csv"
    csv_path: str | None = None
    path_column: str = "name"
    label_column: str = "label"
    valid_column: str | None = None
    csv_delimiter: str = ","
    label_delim: str | None = None

    @property
    def delimiter(self) -> str:
        """``csv_delimiter``, with the two characters ``\\t`` read as a tab (Hydra's command line keeps them)."""
        return "\t" if self.csv_delimiter == "\\t" else self.csv_delimiter

    def table_path(self, root: Path) -> Path:
        """``csv_path``: absolute, or relative to ``root``."""
        table = Path(self.csv_path).expanduser()
        return table if table.is_absolute() else Path(root).expanduser() / table

    def problems(self, root: Path | None = None) -> list[Problem]:
        found = super().problems(root)
        if not self.csv_path:
            found.append(Problem(f"{KEY}.csv_path", self.csv_path,
                                 "the CSV of labels (relative to data.root, or absolute)", f"set {KEY}.csv_path=labels.csv"))
        elif root is not None and Path(root).expanduser().is_dir() and not self.table_path(root).is_file():
            found.append(Problem(f"{KEY}.csv_path", self.csv_path,
                                 f"a table of labels ({self.table_path(root)} is not a file)",
                                 "the path is relative to data.root: fix it or give an absolute path"))
        if len(self.delimiter) != 1:
            found.append(Problem(f"{KEY}.csv_delimiter", self.csv_delimiter, "one character",
                                 "',' for CSV, '\\t' for TSV"))
        return found

    def rows(self, root: Path, scan: FileScan | None) -> list[LabelledFile]:
        return read_label_table(root, self)


@dataclass(frozen=True, kw_only=True)
class RegexLabels(_RowLabels):
    """Group 1 of ``pattern`` searched in each image's path relative to ``data.root``; see the module docstring."""

    name: ClassVar[str] = "regex"
    pattern: str | None = None
    label_delim: str | None = None

    def problems(self, root: Path | None = None) -> list[Problem]:
        return super().problems(root) + _pattern_problems(self.pattern)

    def rows(self, root: Path, scan: FileScan | None) -> list[LabelledFile]:
        return label_file_names(root, self.pattern, scan)


def _pattern_problems(pattern: str | None) -> list[Problem]:
    example = r"'([^/]+)_\d+\.jpg$' (Oxford-IIIT Pets: the breed before _<number>.jpg)"
    key = f"{KEY}.pattern"
    if not pattern:
        return [Problem(key, pattern, "a regular expression whose group 1 is the label", f"e.g. {example}")]
    try:
        groups = re.compile(pattern).groups
    except re.error as error:
        return [Problem(key, pattern, "a valid regular expression", f"fix it ({error})")]
    if groups < 1:
        return [Problem(key, pattern, "a capture group (...) around the label", f"e.g. {example}")]
    return []


# By name: what runs from before the data/labels config group wrote in data.labels.
LABEL_SOURCES = {source.name: source for source in (FolderLabels, CsvLabels, RegexLabels)}


def upgrade_label_config(data: DictConfig) -> None:
    """Rewrite, in place, a ``data`` config of a run from before the ``data/labels`` config group.

    Those runs wrote the source's name (``data.labels: csv``) with every source's settings next to
    it (``data.csv_path``, ...); their checkpoints hold that config, and evaluate/predict/inspect
    rebuild from it. A ``data.labels`` that is already a source config is left as it is.
    """
    name = data.get("labels", "folder")
    if not isinstance(name, str):
        return
    if name not in LABEL_SOURCES:
        raise ValueError(f"data.labels={name!r} in the checkpoint's config; expected one of {', '.join(LABEL_SOURCES)}")
    source = LABEL_SOURCES[name]
    settings = {f.name: data[f.name] for f in fields(source) if f.name in data}
    old_keys = {f.name for known in LABEL_SOURCES.values() for f in fields(known)}
    with open_dict(data):
        for key in old_keys:
            data.pop(key, None)
        data.labels = {"_target_": f"{source.__module__}.{source.__qualname__}", **settings}


def _scan_subset(folder: Path, classes: list[str], subset: str, scan: FileScan | None) -> list[Sample]:
    """Samples of a valid/test folder, labelled with the training classes."""
    found, samples = scan_class_folders(folder, scan) if any(folder.iterdir()) else ([], [])
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(
            f"{folder} has class folders that train/ does not: {', '.join(unknown)}. "
            f"Every {subset} class needs training images; add them to train/ or remove these folders."
        )
    return [Sample(s.path, classes.index(found[s.label])) for s in samples]


def index_folder(root: Path, valid_pct: float, seed: int, scan: FileScan | None = None) -> SampleIndex:
    """Class folders (split per class with ``valid_pct``, ``seed``), or train/valid[/test] folders.

    With ``scan``, unreadable files are left out before the split (and recorded in ``scan.bad``).
    """
    root = Path(root)
    train_dir = root / "train"
    valid_dir = next((root / n for n in VALID_FOLDER_NAMES if (root / n).is_dir()), None)
    if train_dir.is_dir() and valid_dir is not None:
        classes, train = scan_class_folders(train_dir, scan)
        valid = shuffled_once(_scan_subset(valid_dir, classes, "validation", scan), seed)
        test = _scan_subset(root / "test", classes, "test", scan) if (root / "test").is_dir() else []
        return SampleIndex("split_folders", classes, train, valid, test)
    classes, samples = scan_class_folders(root, scan)
    train, valid = stratified_split(samples, valid_pct, seed)
    return SampleIndex("class_folders", classes, train, valid)


@dataclass(frozen=True)
class LabelledFile:
    """One image with its label cell, before the class list exists; ``where`` names it in errors."""

    path: Path
    label: str
    where: str
    is_valid: bool | None = None


def read_label_table(root: Path, source: CsvLabels) -> list[LabelledFile]:
    """The rows of ``source.csv_path`` (relative to ``root``, or absolute): path, label and is_valid cells."""
    table = source.table_path(root)
    # utf-8-sig: a table saved by Excel starts with a byte-order mark that would stick to the first column name.
    with table.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=source.delimiter)
        columns = reader.fieldnames or []
        for key in ("path_column", "label_column", "valid_column"):
            name = getattr(source, key)
            if name is not None and name not in columns:
                raise ValueError(
                    f"{KEY}.{key}={name!r} is not a column of {table} (its columns: {', '.join(columns) or 'none'}, "
                    f"split at {KEY}.csv_delimiter={source.csv_delimiter!r}); set {KEY}.{key} to one of them"
                )
        rows = []
        for line, row in enumerate(reader, start=2):  # line 1 is the header
            where = f"{table.name} line {line}"
            name = (row[source.path_column] or "").strip()
            if not name:
                raise ValueError(f"{where}: the {source.path_column!r} cell is empty; expected the image's path "
                                 "relative to data.root. Fill it in or delete the row")
            label = (row[source.label_column] or "").strip()
            rows.append(LabelledFile(root / name, label, where,
                                     _is_valid(row[source.valid_column], where, source) if source.valid_column else None))
    if not rows:
        raise ValueError(f"{table} has a header but no rows; add one row per image: {source.path_column},{source.label_column}")
    seen: dict[Path, str] = {}
    for row in rows:
        if row.path in seen:
            raise ValueError(f"{row.where}: {relative_posix(row.path, root)!r} is also on {seen[row.path]}; an "
                             f"image has one row (for several labels use {KEY}.label_delim); delete one of them")
        seen[row.path] = row.where
    return rows


def _is_valid(cell: str | None, where: str, source: CsvLabels) -> bool:
    value = (cell or "").strip().lower()
    if value in VALID_TRUE + VALID_FALSE:
        return value in VALID_TRUE
    raise ValueError(f"{where}: {source.valid_column}={cell!r}; expected true/false or 1/0 (validation image or not). "
                     f"Fix the cell, or set {KEY}.valid_column=null to split at random with data.valid_pct")


def label_file_names(root: Path, pattern: str, scan: FileScan | None = None) -> list[LabelledFile]:
    """Every image below ``root`` labelled by group 1 of ``re.search(pattern, relative path)``.

    Files it does not match (or where group 1 is empty) are left out with a warning and, with
    ``scan``, listed in ``scan.bad`` (so in ``bad_files.csv``): never dropped silently.
    """
    regex = re.compile(pattern)
    if scan is not None:
        scan.note_unlisted(root)
    rows, unmatched = [], []
    for path in list_images(root):
        relative = relative_posix(path, root)
        match = regex.search(relative)
        if match is None or not match.group(1):
            unmatched.append(BadFile(path, "no label", f"{KEY}.pattern {pattern!r} does not match {relative!r}",
                                     ignored=True))
        else:
            rows.append(LabelledFile(path, match.group(1), relative))
    if unmatched:
        log.warning("left out %d file(s) under %s whose path %s.pattern=%r does not match, e.g. %s%s", len(unmatched),
                    root, KEY, pattern, relative_posix(unmatched[0].path, root),
                    " (listed in bad_files.csv)" if scan is not None else "")
        if scan is not None:
            scan.bad += unmatched
    if not unmatched and not rows:
        raise ValueError(f"no images under data.root={str(root)!r}; expected files ending in "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))}")
    if not rows:
        raise ValueError(f"{KEY}.pattern={pattern!r} matches none of the image paths under data.root={str(root)!r}, "
                         f"e.g. {relative_posix(unmatched[0].path, root)!r}; group 1 must capture the label "
                         r"from the path relative to data.root, e.g. '([^/]+)_\d+\.jpg$'")
    return rows


def _split_label(row: LabelledFile, label_delim: str | None) -> tuple[str, ...]:
    if label_delim is None:
        if not row.label:
            raise ValueError(f"{row.where}: the label is empty; expected a class name. Fill it in or delete the row")
        return (row.label,)
    # An empty multi-label cell is an image with none of the labels (fastai's empty MultiCategory).
    return tuple(sorted({name.strip() for name in row.label.split(label_delim) if name.strip()}))


def _index_rows(rows: list[LabelledFile], source: _RowLabels, valid_pct: float, seed: int, root: Path) -> SampleIndex:
    """Classes (sorted names) and the split of labelled, readable files."""
    if not rows:
        raise ValueError(f"no readable images among the files labelled by data/labels={source.name} under "
                         f"data.root={str(root)!r}; see bad_files.csv for why each was left out")
    names = {row.path: _split_label(row, source.label_delim) for row in rows}
    classes = sorted({name for labels in names.values() for name in labels})
    if len(classes) < 2:
        raise ValueError(f"data/labels={source.name} gives {len(classes)} class(es) ({', '.join(classes)}); a "
                         f"classifier needs at least two: check {KEY}.label_column / {KEY}.pattern")
    index = {name: i for i, name in enumerate(classes)}

    def sample(row: LabelledFile) -> Sample:
        labels = tuple(index[name] for name in names[row.path])
        return Sample(row.path, labels if source.multi_label else labels[0])

    if source.valid_column is not None:
        train = [sample(r) for r in rows if not r.is_valid]
        valid = shuffled_once([sample(r) for r in rows if r.is_valid], seed)
    else:
        split = random_split if source.multi_label else stratified_split
        train, valid = split([sample(r) for r in rows], valid_pct, seed)
    trained = {i for s in train for i in (s.label if isinstance(s.label, tuple) else (s.label,))}
    untrained = [c for i, c in enumerate(classes) if i not in trained]
    if untrained:
        fix = (f"mark some of their rows as training in the {source.valid_column!r} column" if source.valid_column
               else "change seed or data.valid_pct")
        raise ValueError(f"label(s) {', '.join(untrained)} have no training image, only validation ones, so the model "
                         f"cannot learn them; add training images of them, or {fix}")
    # validation keeps its seeded order (sorted, a table listed class by class would give its first class alone
    # to trainer.limit_val_batches)
    return SampleIndex(source.name, classes, sorted(train, key=lambda s: str(s.path)), valid)
