"""The audit's pictures in TensorBoard: the most suspicious findings of each kind as a grid of the photos.

Written to ``tensorboard/`` in the audit's own run directory, so ``make tensorboard`` (``--logdir outputs``)
shows an audit beside the training runs. The run whose body embedded the images (``ckpt_path``) is named
in the summary text; its own directory is left as it was (an audit writes nothing outside its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from src.auditing.findings import Findings
from src.visualize.photo_grid import in_rows, photo_grid_figure

# Tags of the pictures (a card each in TensorBoard's Images tab) and of the summary text.
LABEL_ISSUES_TAG, DUPLICATES_TAG, OUTLIERS_TAG, ODD_IMAGES_TAG = (
    "audit/label_issues", "audit/duplicate_groups", "audit/outliers", "audit/odd_images")
SUMMARY_TAG = "audit/summary"


def audit_figures(findings: Findings, limit: int = 16) -> dict[str, Figure]:
    """By tag, a picture of the first ``limit`` findings of each kind that has any (duplicate groups: the
    first ``limit // 2`` groups, a row each, their kind over the first member)."""
    classes, subsets, paths, name = findings.classes, findings.subsets, findings.paths, findings.label_name
    figures = {}
    if findings.label_issues:
        figures[LABEL_ISSUES_TAG] = photo_grid_figure(in_rows(
            [(paths[x.index], f"{classes[x.given]} -> {classes[x.suggested]}\nodds {x.odds:.0f}:1, {subsets[x.index]}")
             for x in findings.label_issues[:limit]]))
    if findings.groups:
        figures[DUPLICATES_TAG] = photo_grid_figure(
            [[(paths[i], f"{group.kind if n == 0 else ''}\n{name(i)}, {subsets[i]}") for n, i in enumerate(group.members)]
             for group in findings.groups[:max(1, limit // 2)]])
    if findings.outliers:
        figures[OUTLIERS_TAG] = photo_grid_figure(in_rows(
            [(paths[i], f"{name(i)}\nscore {findings.ood[i]:.3f}") for i in findings.outliers[:limit]]))
    if findings.odd:
        figures[ODD_IMAGES_TAG] = photo_grid_figure(in_rows(
            [(paths[i], f"{name(i)}\n{', '.join(flags)}") for i, flags in list(findings.odd.items())[:limit]]))
    return figures


def write_tensorboard(log_dir: Path, findings: Findings, summary: Sequence[str], *, limit: int = 16) -> list[str]:
    """Write the pictures and the summary text as one TensorBoard run in ``log_dir``; return the tags written."""
    from torch.utils.tensorboard import SummaryWriter

    figures = audit_figures(findings, limit)
    with SummaryWriter(str(log_dir)) as writer:
        writer.add_text(SUMMARY_TAG, "\n\n".join(summary))
        for tag, figure in figures.items():
            writer.add_figure(tag, figure)  # closes the figure
    return [SUMMARY_TAG, *figures]
