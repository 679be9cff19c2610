"""A decisions file (``data.decisions``): drop or relabel images of the index without touching the files.

``python -m src.audit`` writes ``decisions.csv`` (``path,action,new_label,reason``), one row per image it
flagged; a person edits it and training takes it with ``data.decisions=PATH``. The decisions are applied
after the split, so every image keeps the subset it has in a run without them (the validation images of
the two runs are the same images, less the dropped ones): a cleaned run is comparable with the raw one.

- ``keep``: nothing changes (the row only records that the image was looked at);
- ``drop``: the image leaves the index (training and validation);
- ``relabel``: the image gets ``new_label`` (a class of the data; several joined by ``label_delim`` for
  multi-label data).

A path (relative to ``data.root``, as in ``split.csv``) that is not in the index, an unknown action or a
class the data does not have stops with every such row named: a decision about another folder must not be
half applied.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from src.data.files.listing import Sample, relative_posix

log = logging.getLogger(__name__)

COLUMNS = ("path", "action", "new_label", "reason")
ACTIONS = ("keep", "drop", "relabel")
SUBSETS = ("train", "valid", "test")
SHOWN = 5  # rows named in an error; the count says how many more


@dataclass(frozen=True)
class Decision:
    path: str  # relative to data.root, with /
    action: str
    new_label: str
    reason: str
    line: int


def read_decisions(path: str | Path) -> list[Decision]:
    """The rows of a decisions file; a missing file or column, or an unknown action, raises naming it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data.decisions={str(path)!r} is not a file; expected the decisions.csv that "
                                "python -m src.audit wrote (path,action,new_label,reason), or data.decisions=null")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("path", "action") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"data.decisions={str(path)!r} has no {', '.join(missing)} column (its columns: "
                             f"{', '.join(reader.fieldnames or []) or 'none'}); expected {','.join(COLUMNS)}")
        rows = [Decision((row["path"] or "").strip(), (row["action"] or "").strip().lower(),
                         (row.get("new_label") or "").strip(), (row.get("reason") or "").strip(), line)
                for line, row in enumerate(reader, start=2)]
    wrong = [r for r in rows if r.action not in ACTIONS or (r.action == "relabel" and not r.new_label)]
    if wrong:
        raise ValueError(f"data.decisions={str(path)!r}: {len(wrong)} row(s) with an action other than "
                         f"{'/'.join(ACTIONS)} or a relabel without new_label: "
                         + "; ".join(f"line {r.line} ({r.path!r}, action {r.action!r}, new_label {r.new_label!r})"
                                     for r in wrong[:SHOWN])
                         + (f" and {len(wrong) - SHOWN} more" if len(wrong) > SHOWN else "")
                         + ". Fix the cells (relabel needs new_label: a class name)")
    return rows


def _named(items: list[str]) -> str:
    return ", ".join(items[:SHOWN]) + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def apply_decisions(subsets: dict[str, list[Sample]], classes: list[str], root: Path, path: str | Path,
                    label_delim: str | None = None) -> dict[str, list[Sample]]:
    """``subsets`` (train/valid/test samples) with the drops and relabels of the decisions file at ``path``."""
    decisions = read_decisions(path)
    where = {relative_posix(s.path, root): subset for subset, samples in subsets.items() for s in samples}
    unknown_paths = sorted({d.path for d in decisions if d.path not in where})
    if unknown_paths:
        raise ValueError(f"data.decisions={str(path)!r} names {len(unknown_paths)} image(s) that are not in the index "
                         f"of data.root={str(root)!r}: {_named(unknown_paths)}. Paths are relative to data.root (as in "
                         "split.csv); remove those rows, or audit this folder again to write a new file")
    index = {name: i for i, name in enumerate(classes)}

    def label_of(decision: Decision) -> int | tuple[int, ...]:
        if label_delim is None:
            return index[decision.new_label]
        return tuple(sorted({index[n.strip()] for n in decision.new_label.split(label_delim) if n.strip()}))

    names = [n.strip() for d in decisions if d.action == "relabel"
             for n in (d.new_label.split(label_delim) if label_delim else [d.new_label])]
    unknown_classes = sorted({n for n in names if n and n not in index})
    if unknown_classes:
        raise ValueError(f"data.decisions={str(path)!r} relabels to class(es) the data does not have: "
                         f"{_named(unknown_classes)} (its classes: {', '.join(classes)}); fix new_label, or add "
                         "a folder for the new class first")
    by_path = {d.path: d for d in decisions if d.action != "keep"}  # the last row of a path wins, as in an edit
    counts = Counter()
    changed: dict[str, list[Sample]] = {}
    for subset, samples in subsets.items():
        kept = []
        for sample in samples:
            decision = by_path.get(relative_posix(sample.path, root))
            if decision is None:
                kept.append(sample)
            elif decision.action == "drop":
                counts[f"dropped from {subset}"] += 1
            else:
                counts[f"relabelled in {subset}"] += 1
                kept.append(replace(sample, label=label_of(decision)))
        changed[subset] = kept
    log.info("data.decisions=%s: %d row(s); %s", path, len(decisions),
             ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "nothing dropped or relabelled")
    return changed
