"""``decisions.csv``: one row per flagged image, with a proposed action a person checks and edits.

What is proposed, and why (the file is read back by ``data.decisions``, :mod:`src.data.labels.decisions`):
- a label issue: ``relabel`` to the suggested class (the out-of-fold model's; check the picture);
- a duplicate group: ``keep`` one member, ``drop`` the others. The kept one is a training image where the
  group leaks (the validation copies go, so validation no longer scores a photo the model trained on) and
  otherwise the first by path; in a label conflict the kept one is the member whose label the label-issue
  model agrees with, when one does;
- a blank image: ``drop``; outliers and other odd images: ``keep`` (a person decides: a close-up can be
  right), with the reason;
- a file in more than one finding: ``drop`` wins over ``relabel``, ``relabel`` over ``keep``; reasons are joined.
"""

from __future__ import annotations

import csv
from pathlib import Path

from src.auditing.duplicates import CONFLICT, LEAK
from src.auditing.findings import Findings
from src.data.labels.decisions import COLUMNS
from src.data.files.listing import relative_posix
from src.core.atomic_write import atomic_open

STRENGTH = {"keep": 0, "relabel": 1, "drop": 2}


def propose(findings: Findings) -> dict[int, tuple[str, str, list[str]]]:
    """image -> (action, new label, reasons)."""
    rows: dict[int, tuple[str, str, list[str]]] = {}

    def add(i: int, action: str, new_label: str, reason: str) -> None:
        old_action, old_label, reasons = rows.get(i, ("keep", "", []))
        if STRENGTH[action] >= STRENGTH[old_action]:
            old_action, old_label = action, new_label if action == "relabel" else ""
        rows[i] = (old_action, old_label, [*reasons, reason])

    suggested = {issue.index: issue.suggested for issue in findings.label_issues}
    for issue in findings.label_issues:
        add(issue.index, "relabel", findings.classes[issue.suggested],
            f"label issue: given {findings.classes[issue.given]}, the folder suggests "
            f"{findings.classes[issue.suggested]} (label quality {issue.score:.3f}, odds {issue.odds:.0f}:1)")
    for number, group in enumerate(findings.groups, start=1):
        members = list(group.members)
        if LEAK in group.flags:
            keep = next(i for i in members if findings.subsets[i] == "train")
        elif CONFLICT in group.flags:
            agreed = [i for i in members if i not in suggested]  # members whose label the model does not doubt
            keep = agreed[0] if agreed else members[0]
        else:
            keep = members[0]
        what = f"{'exact' if group.exact else 'near'} duplicate group {number} ({group.kind})"
        for i in members:
            if i == keep:
                add(i, "keep", "", f"{what}: kept")
            else:
                add(i, "drop", "", f"{what}: copy of {relative_posix(findings.paths[keep], findings.root)}")
    for i in findings.outliers:
        add(i, "keep", "", f"outlier (score {findings.ood[i]:.3f}): check it is a photo of its class")
    for i, flags in findings.odd.items():
        add(i, "drop" if "blank" in flags else "keep", "", "odd image: " + ", ".join(flags))
    return rows


def write_decisions(path: Path, findings: Findings) -> int:
    """Write ``path`` (``path,action,new_label,reason``, paths relative to the root); the number of rows."""
    rows = propose(findings)
    with atomic_open(path, newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        for i in sorted(rows, key=lambda i: str(findings.paths[i])):
            action, new_label, reasons = rows[i]
            writer.writerow([relative_posix(findings.paths[i], findings.root), action, new_label, "; ".join(reasons)])
    return len(rows)
