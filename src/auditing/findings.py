"""What an audit found, in one object the report, the page and the decisions file read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.auditing.duplicates import DuplicateGroup
from src.auditing.label_issues import LabelIssue
from src.data.files.scan import BadFile


@dataclass
class Findings:
    root: Path
    paths: list[Path]
    labels: list  # class index (or a tuple of them, multi-label) per image
    subsets: list[str]  # train / valid / test per image
    classes: list[str]
    label_issues: list[LabelIssue]
    groups: list[DuplicateGroup]
    ood: np.ndarray  # out-of-distribution score per image
    outliers: list[int]  # images flagged by their score, highest first
    properties: np.ndarray
    odd: dict[int, list[str]]  # image -> its pixel flags (only flagged images)
    unreadable: list[BadFile] = field(default_factory=list)
    valid_in_leaks: int = 0
    notes: list[str] = field(default_factory=list)  # what was skipped, and why
    label_issues_set_aside: int = 0  # confident learning's picks under the odds
    min_odds: float = 0.0

    def label_name(self, i: int) -> str:
        label = self.labels[i]
        return " ".join(self.classes[c] for c in label) if isinstance(label, tuple) else self.classes[label]
