"""Audit a folder before training on it: ``python -m src.audit data.root=DIR [ckpt_path=RUN/checkpoints/best.ckpt]``.

Every image goes once through a body (``model.backbone``, or the body of a run), and from the embeddings:
label issues (out-of-fold probabilities, ranked by cleanlab), exact and near duplicates grouped and
flagged (within a class, label conflict, leak between training and validation), outliers, and odd images
by their pixels. The run directory receives ``label_issues.csv``, ``duplicates.csv``, ``outliers.csv``,
``odd_images.csv``, ``bad_files.csv``, ``report.html`` and ``decisions.csv``; training takes the last with
``data.decisions=RUN/decisions.csv``. Nothing under ``data.root`` is moved or deleted.
``audit(cfg)`` does the work (tests call it); ``main`` is the thin Hydra wrapper.
"""

from __future__ import annotations

import logging
import resource
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from src.auditing.body import load_body
from src.auditing.decisions import write_decisions
from src.auditing.duplicates import confirmed_pairs, duplicate_pairs, group_duplicates, proposed_pairs, valid_in_leaks
from src.auditing.embedding_cache import cached_read
from src.auditing.findings import Findings
from src.auditing.image_pass import read_images
from src.auditing.label_issues import find_issues, out_of_fold_probabilities, require_cleanlab
from src.auditing.neighbours import centred, nearest_neighbours
from src.auditing.pixel_match import pixel_agreement, pixel_neighbours
from src.auditing.report_tensorboard import write_tensorboard
from src.auditing.outliers import PropertyLimits, modified_z, ood_scores, property_flags
from src.auditing.report import summary_lines, write_csvs
from src.auditing.report_page import write_page
from src.core.problems import Problem, is_number, is_whole_number, raise_problems

from src.runs.builder import build_datamodule
from src.core.hardware import resolve_device, resolve_num_workers
from src.core.user_errors import one_line_user_errors

log = logging.getLogger(__name__)


def audit_problems(cfg: DictConfig) -> list[Problem]:
    """The audit's own settings that cannot work."""
    found = []
    if not is_whole_number(cfg.label_issues.folds, minimum=2):
        found.append(Problem("label_issues.folds", cfg.label_issues.folds, "a whole number >= 2",
                             "label_issues.folds=5: each image is scored by a head that did not see it"))
    min_odds = cfg.label_issues.min_odds
    if not (is_number(min_odds) and min_odds >= 0):
        found.append(Problem("label_issues.min_odds", min_odds, "a number >= 0",
                             "e.g. label_issues.min_odds=20; 0 keeps every image confident learning picks"))
    threshold = cfg.duplicates.threshold
    if not (is_number(threshold) and -1 <= threshold <= 1):
        found.append(Problem("duplicates.threshold", threshold, "a cosine similarity in [-1, 1]",
                             "e.g. duplicates.threshold=0.9; lower lets the pixel check look at more pairs"))
    pixels = cfg.duplicates.pixel_threshold
    if not (is_number(pixels) and -1 <= pixels <= 1):
        found.append(Problem("duplicates.pixel_threshold", pixels, "a correlation in [-1, 1]",
                             "e.g. duplicates.pixel_threshold=0.9; higher confirms fewer, closer copies"))
    ratio = cfg.duplicates.distinct_ratio
    if not (is_number(ratio) and ratio > 0):
        found.append(Problem("duplicates.distinct_ratio", ratio, "a number > 0",
                             "e.g. duplicates.distinct_ratio=0.5; 1 or more lets look-alikes through"))
    for key in ("duplicates.candidates", "outliers.neighbours", "duplicates.block"):
        group, name = key.split(".")
        if not is_whole_number(cfg[group][name], minimum=1):
            found.append(Problem(key, cfg[group][name], "a whole number >= 1", f"e.g. {key}=2"))
    return found


class StepTimer:
    """Wall time and peak resident memory after each step, for the log and the returned figures."""

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, float]] = {}
        self._last = time.perf_counter()

    def done(self, step: str) -> None:
        now = time.perf_counter()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        self.steps[step] = {"seconds": round(now - self._last, 3), "peak_rss_mib": round(peak, 1)}
        log.info("%s: %.2f s (peak memory %.0f MiB)", step, now - self._last, peak)
        self._last = now


def audit(cfg: DictConfig) -> dict[str, Any]:
    """Audit ``cfg.data.root``; write the CSVs, ``report.html`` and ``decisions.csv`` to ``cfg.paths.output_dir``."""
    raise_problems(audit_problems(cfg))
    require_cleanlab()  # before any file is read: one line naming the extra
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    timer = StepTimer()
    if cfg.get("seed") is not None:  # a body of random weights (model.backbone.weights=null) is then repeatable
        torch.manual_seed(cfg.seed)
    body = load_body(cfg)  # a damaged or foreign checkpoint fails before the folder is scanned
    # The scan and the split training would make (same data config and seed); one class or no images are
    # refused there. Unreadable files are reported and left out whatever data.on_bad_file says.
    datamodule = build_datamodule(cfg.data, split_csv=None, bad_files_csv=output_dir / "bad_files.csv",
                                  on_bad_file="skip")
    index = datamodule.index
    samples = [(s, subset) for subset in ("train", "valid", "test") for s in getattr(index, subset)]
    samples.sort(key=lambda item: str(item[0].path))
    paths = [s.path for s, _ in samples]
    timer.done("body and scan")
    device = resolve_device(cfg.get("device"))
    log.info("embedding with %s on %s", body.description, device)
    failed = []

    def read(to_read: list[Path]):
        facts, bad = read_images(to_read, body, batch_size=cfg.data.batch_size,
                                 num_workers=resolve_num_workers(cfg.data.num_workers), device=device,
                                 max_pixels=datamodule.scan.max_pixels)
        failed.extend(bad)
        return facts

    cache_dir = Path(cfg.embedding_cache_dir) if cfg.get("embedding_cache_dir") else None
    facts, embedded = cached_read(paths, datamodule.root, cache_dir, body.identity, read)
    timer.done("embeddings")
    gone = {b.path for b in failed}
    if gone:  # changed since the scan: reported as the scan reports, left out of the rest
        log.warning("%d file(s) could not be read after the scan, e.g. %s", len(gone), failed[0])
        datamodule.scan.bad += failed
        datamodule.scan.write_csv(output_dir / "bad_files.csv", datamodule.root)
    keep = [i for i, p in enumerate(paths) if p not in gone]
    paths = [paths[i] for i in keep]
    labels = [samples[i][0].label for i in keep]
    subsets = [samples[i][1] for i in keep]
    embeddings, properties, thumbnails = facts.embeddings[keep], facts.properties[keep], facts.thumbnails[keep]
    digests = [facts.digests[i] for i in keep]

    notes = []
    issues, set_aside, probabilities = [], 0, None
    if datamodule.multi_label:
        notes.append("label issues are looked for in single-label data only (multi-label: skipped)")
    else:
        label_array = np.array(labels)
        probabilities = out_of_fold_probabilities(embeddings, label_array, len(index.classes),
                                                  folds=cfg.label_issues.folds, seed=cfg.seed,
                                                  weight_decay=cfg.label_issues.weight_decay,
                                                  steps=cfg.label_issues.steps)
        timer.done("out-of-fold probabilities")
        issues, set_aside = find_issues(label_array, probabilities, cfg.label_issues.filter_by,
                                        cfg.label_issues.min_odds)
        timer.done("label issues")
    k = max(cfg.duplicates.candidates, cfg.outliers.neighbours)
    sims, neighbours = nearest_neighbours(centred(embeddings), k, block=cfg.duplicates.block, device=device)
    timer.done("nearest neighbours")
    proposed = set(proposed_pairs(sims, neighbours, cfg.duplicates.threshold, cfg.duplicates.candidates))
    by_pixels = pixel_neighbours(thumbnails, cfg.duplicates.candidates, block=cfg.duplicates.block, device=device)
    candidates = sorted(proposed | by_pixels)
    agreement = pixel_agreement(thumbnails, candidates)
    confirmed = confirmed_pairs(candidates, agreement, cfg.duplicates.pixel_threshold, cfg.duplicates.distinct_ratio)
    log.info("near duplicates: %d pair(s) proposed (%d by the embeddings, %d by the thumbnails), %d confirmed by "
             "the pixels", len(candidates), len(proposed), len(by_pixels), len(confirmed))
    pairs = duplicate_pairs(digests, confirmed)
    groups = group_duplicates(pairs, digests, labels, subsets)
    timer.done("duplicates")
    ood = ood_scores(sims, cfg.outliers.neighbours)
    z = modified_z(ood)
    outliers = [int(i) for i in np.argsort(-ood) if z[i] > cfg.outliers.z]
    flags = property_flags(properties, PropertyLimits(**cfg.properties))
    odd = {i: f for i, f in enumerate(flags) if f}
    timer.done("outliers and image properties")
    findings = Findings(datamodule.root, paths, labels, subsets, index.classes, issues, groups, ood, outliers,
                        properties, odd, datamodule.scan.unreadable, valid_in_leaks(groups, subsets), notes,
                        label_issues_set_aside=set_aside, min_odds=cfg.label_issues.min_odds)
    summary = summary_lines(findings)
    files = write_csvs(output_dir, findings)
    decisions = write_decisions(output_dir / "decisions.csv", findings)
    write_page(output_dir / "report.html", findings, summary, max_items=cfg.report.max_items,
               side=cfg.report.thumbnail)
    if cfg.report.tensorboard_items:
        write_tensorboard(output_dir / "tensorboard", findings, [f"body: {body.description}", *summary],
                          limit=cfg.report.tensorboard_items)
    timer.done("report")
    for line in summary:
        log.info("%s", line)
    return {"output_dir": str(output_dir), "summary": summary, "findings": findings, "images": len(paths),
            "embedded": embedded, "decisions": str(output_dir / "decisions.csv"), "decision_rows": decisions,
            "report": str(output_dir / "report.html"), "csvs": {k: str(v) for k, v in files.items()},
            "steps": timer.steps, "device": str(device), "label_probabilities": probabilities}


@one_line_user_errors
@hydra.main(version_base="1.3", config_path="../conf", config_name="audit")
def main(cfg: DictConfig) -> None:
    result = audit(cfg)
    print("\n".join(result["summary"]))
    print(f"report: {result['report']}")
    print(f"decisions: {result['decisions']} ({result['decision_rows']} rows; edit, then train with "
          f"data.decisions={result['decisions']})")


if __name__ == "__main__":
    main()
