"""The audit's CSVs (one per kind of finding) and its summary for the terminal."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from src.auditing.duplicates import CONFLICT, LEAK, WITHIN
from src.auditing.findings import Findings
from src.auditing.image_properties import PROPERTIES
from src.data.files.listing import relative_posix
from src.core.atomic_write import atomic_open


def _write(path: Path, header: Iterable[str], rows: Iterable[Iterable]) -> None:
    with atomic_open(path, newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_csvs(output_dir: Path, findings: Findings) -> dict[str, Path]:
    """label_issues.csv, duplicates.csv, outliers.csv and odd_images.csv in ``output_dir``."""
    name = lambda i: relative_posix(findings.paths[i], findings.root)  # noqa: E731
    files = {kind: output_dir / f"{kind}.csv" for kind in ("label_issues", "duplicates", "outliers", "odd_images")}
    _write(files["label_issues"], ["rank", "path", "subset", "given_label", "suggested_label", "label_quality",
                                    "odds"],
           ([rank, name(x.index), findings.subsets[x.index], findings.classes[x.given], findings.classes[x.suggested],
             f"{x.score:.4f}", f"{x.odds:.1f}"] for rank, x in enumerate(findings.label_issues, start=1)))
    _write(files["duplicates"], ["group", "kind", "exact", "similarity", "path", "label", "subset"],
           ([number, group.kind, str(group.exact).lower(), f"{group.similarity:.4f}", name(i), findings.label_name(i),
             findings.subsets[i]] for number, group in enumerate(findings.groups, start=1) for i in group.members))
    _write(files["outliers"], ["rank", "path", "label", "subset", "ood_score"],
           ([rank, name(i), findings.label_name(i), findings.subsets[i], f"{findings.ood[i]:.4f}"]
            for rank, i in enumerate(findings.outliers, start=1)))
    _write(files["odd_images"], ["path", "label", "flags", *PROPERTIES],
           ([name(i), findings.label_name(i), " ".join(f.replace(" ", "_") for f in flags),
             *(f"{v:.2f}" for v in findings.properties[i])] for i, flags in sorted(findings.odd.items())))
    return files


def summary_lines(findings: Findings) -> list[str]:
    """What was found, in a few lines."""
    kinds = Counter(flag for g in findings.groups for flag in g.flags)
    valid = findings.subsets.count("valid")
    odd = Counter(flag for flags in findings.odd.values() for flag in flags)
    lines = [
        f"{len(findings.paths)} images of {len(findings.classes)} classes under {findings.root} "
        f"({findings.subsets.count('train')} training, {valid} validation)"
        + (f"; {len(findings.unreadable)} unreadable (bad_files.csv)" if findings.unreadable else ""),
        f"label issues: {len(findings.label_issues)}" + (
            f" ({findings.label_issues_set_aside} more that confident learning picks at odds under "
            f"{findings.min_odds:g}:1 against the given label, mostly classes the model confuses anyway: "
            "label_issues.min_odds)" if findings.label_issues_set_aside else ""),
        (f"duplicate groups: {len(findings.groups)} ({sum(len(g.members) for g in findings.groups)} images; "
         f"{sum(g.exact for g in findings.groups)} exact): {kinds[LEAK]} leak, {kinds[CONFLICT]} label conflict, "
         f"{kinds[WITHIN]} within one class"),
    ]
    if kinds[LEAK]:
        lines.append(f"leaks: {findings.valid_in_leaks} validation image(s) have a copy in training: the validation "
                     f"error rate can be too low by up to {findings.valid_in_leaks / max(1, valid):.4f}")
    lines.append(f"outliers: {len(findings.outliers)}")
    lines.append(f"odd images: {len(findings.odd)}" + (" (" + ", ".join(f"{n} {k}" for k, n in sorted(odd.items()))
                                                       + ")" if odd else ""))
    return lines + [f"note: {note}" for note in findings.notes]
