"""Measure ``python -m src.audit`` on a folder of ``scripts/make_audit_benchmark.py`` against what was injected.

    python scripts/make_audit_benchmark.py /tmp/audit-bench
    python -m src.train experiment=demo data.root=/tmp/audit-bench hydra.run.dir=/tmp/audit-bench-run
    python scripts/bench_audit.py /tmp/audit-bench --ckpt /tmp/audit-bench-run/checkpoints/best.ckpt \
        --out benchmarks/audit-DATE.json

Label issues are scored against the images filed under a class they do not show: the moved ones and the
near-duplicates filed under another class. Duplicate groups: an injected pair is found when both images are
in one group; a reported pair (any two members of a group) is false when it is neither injected nor a copy
within Fashion-MNIST itself: exact ones (the same bytes) and :data:`SOURCE_COPIES` (looked at). Times and peak memory of each step come from the audit; the
extrapolation to 60,000 and 1M images scales each step by how its work grows (linear, or quadratic for the
exact nearest-neighbour search, whose memory stays linear).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from src.core.hardware import has_native_bf16  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
QUADRATIC = {"nearest neighbours"}
# Photos of the committed sample that are one photo twice in Fashion-MNIST itself, with a few grey levels
# changed (looked at side by side: the same spots on the pullover, the same folds of the dress).
SOURCE_COPIES = {frozenset(("pullover/train_01928.png", "pullover/train_03704.png")),
                 frozenset(("dress/train_00334.png", "dress/train_04849.png"))}


def measure(root: Path, ckpt: Path | None, output_dir: Path, overrides: list[str]) -> dict:
    from src.audit import audit

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="audit", overrides=[f"data.root={root}", *([f"ckpt_path={ckpt}"] if ckpt else []),
                                                      *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    started = time.perf_counter()
    result = audit(cfg)
    result["wall_s"] = round(time.perf_counter() - started, 2)
    return result


def score(result: dict, truth: dict) -> dict:
    findings = result["findings"]
    name = lambda i: findings.paths[i].relative_to(findings.root).as_posix()  # noqa: E731
    wrong = {m["path"] for m in truth["moved"]} | {p["copy"] for p in truth["near_duplicates"] if p["across_classes"]}
    flagged = {name(x.index) for x in findings.label_issues}
    hits = len(flagged & wrong)
    group_of = {name(i): n for n, g in enumerate(findings.groups) for i in g.members}
    injected = {frozenset((p["original"], p["copy"])) for p in truth["near_duplicates"]}
    found = [p for p in truth["near_duplicates"] if p["original"] in group_of and group_of[p["original"]] == group_of.get(p["copy"])]
    reported = [(a, b, g.exact) for g in findings.groups for a, b in itertools.combinations(g.members, 2)]
    exact = {frozenset((name(a), name(b))) for a, b, e in reported if findings.paths[a].read_bytes() == findings.paths[b].read_bytes()}
    source = {frozenset((name(a), name(b))) for a, b, _ in reported} & SOURCE_COPIES
    false_pairs = [1 for a, b, _ in reported if frozenset((name(a), name(b))) not in injected | exact | source]
    subsets = {name(i): findings.subsets[i] for i in range(len(findings.paths))}
    return {
        "label_issues": {"injected": len(wrong), "flagged": len(flagged), "true_flagged": hits,
                         "precision": round(hits / max(1, len(flagged)), 3), "recall": round(hits / len(wrong), 3),
                         "top_250_precision": round(len({name(x.index) for x in findings.label_issues[:250]} & wrong) / 250, 3)},
        "duplicates": {"injected_pairs": len(injected), "found_pairs": len(found),
                       "recall": round(len(found) / len(injected), 3),
                       "found_by_kind": {how: sum(p["how"] == how for p in found) for how in ("resized", "recompressed", "cropped")},
                       "injected_across_split": sum(subsets[p["original"]] != subsets[p["copy"]] for p in truth["near_duplicates"]),
                       "groups": len(findings.groups), "reported_pairs": len(reported),
                       "exact_pairs_of_the_source": len(exact), "looked_at_copies_of_the_source": len(source),
                       "false_pairs": len(false_pairs),
                       "false_pair_fraction": round(len(false_pairs) / max(1, len(reported)), 3),
                       "false_pair_fraction_if_the_source_copies_were_false": round(
                           (len(false_pairs) + len(source)) / max(1, len(reported)), 3)},
    }


def min_odds_sweep(result: dict, truth: dict, filter_by: str) -> dict:
    """Label issues' [flagged, precision, recall] at other ``label_issues.min_odds`` from the same probabilities."""
    import numpy as np

    from src.auditing.label_issues import find_issues

    findings = result["findings"]
    wrong = {m["path"] for m in truth["moved"]} | {p["copy"] for p in truth["near_duplicates"] if p["across_classes"]}
    is_wrong = [findings.paths[i].relative_to(findings.root).as_posix() in wrong for i in range(len(findings.paths))]
    labels = np.array(findings.labels)
    sweep = {}
    for odds in (0, 5, 10, 20, 50, 100):
        issues, _ = find_issues(labels, result["label_probabilities"], filter_by, odds)
        hits = sum(is_wrong[x.index] for x in issues)
        sweep[str(odds)] = [len(issues), round(hits / max(1, len(issues)), 3), round(hits / sum(is_wrong), 3)]
    return sweep


def extrapolate(steps: dict, images: int) -> dict:
    out = {}
    for target in (60_000, 1_000_000):
        factor = target / images
        out[str(target)] = {step: round(v["seconds"] * (factor ** 2 if step in QUADRATIC else factor), 1)
                            for step, v in steps.items() if step != "report"}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--ckpt", type=Path)
    parser.add_argument("--truth", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/audit-bench-out"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    truth = json.loads((args.truth or args.root.with_name(args.root.name + ".truth.json")).read_text())
    # The first audit embeds every image (a new body: nothing cached) and writes the cache; the second reads it.
    cold = measure(args.root, args.ckpt, args.work / "cold", args.overrides)
    warm = measure(args.root, args.ckpt, args.work / "warm", args.overrides)
    report = {
        "command": " ".join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d"),
        "cpu": platform.processor() or platform.machine(),
        "native_bf16": has_native_bf16("cpu"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_average_at_end": os.getloadavg()},
        "images": cold["images"], "device": cold["device"],
        "scores": score(cold, truth),
        "label_issues_by_min_odds": {"note": "[flagged, precision, recall] from the same out-of-fold probabilities",
                                     **min_odds_sweep(cold, truth, "low_self_confidence")},
        "cold_audit": {"wall_s": cold["wall_s"], "steps": cold["steps"]},
        "audit_with_warm_embedding_cache": {"wall_s": warm["wall_s"], "embedded": warm["embedded"],
                                            "steps": warm["steps"]},
        "extrapolated_seconds": extrapolate(cold["steps"], cold["images"]),
        "summary": cold["summary"],
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["scores"], indent=1))


if __name__ == "__main__":
    main()
