"""Evaluate a checkpoint: ``python -m src.evaluate ckpt_path=RUN/checkpoints/best.ckpt [data.root=DIR]``.

By default the images are the validation split of the run that wrote the checkpoint (its
``split.csv``); ``subset=test`` takes that split's test images instead (a ``test/`` folder of the
split-folders layout); with ``data.root`` every image in a folder of class folders is evaluated. The run
directory receives ``metrics.json``, ``predictions.csv``, ``most_confused.txt``,
``confusion_matrix.png`` and ``top_losses.png`` (fastai's ``ClassificationInterpretation``). A
multi-label model gets its metrics (accuracy_thresh, F-beta, per-class precision/recall/F1) and
``predictions.csv``; the single-label pictures are skipped, with a note in ``metrics.json``.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from src.data.loading.dataset import ImageDataset
from src.data.files.listing import Sample, list_images, relative_posix
from src.data.files.scan import FileScan
from src.data.labels.split import label_text
from src.runs.config_checks import check_inference_config
from src.core.problems import Problem, raise_problems
from src.core.hardware import resolve_num_workers
from src.inference.predictions_csv import prediction_cells, write_predictions_csv
from src.inference.predictor import Predictor, run_loader
from src.inference.interpretation import MULTI_LABEL_SKIPPED, Interpretation, MultiLabelInterpretation
from src.models.loading import LoadedClassifier, load_classifier
from src.runs.run_files import write_json
from src.visualize.figure_files import save_figure
from src.visualize.interpretation_figures import confusion_matrix_figure, top_losses_figure
from src.optim.fine_tune import register_resolvers

register_resolvers()  # conf/schedule/fine_tune.yaml's ${fine_tune_stages:}, before Hydra composes a config

log = logging.getLogger(__name__)


SUBSETS = ("valid", "test")  # the rows of a run's split.csv that evaluate reads (train would be no evaluation)


def subset_problems(subset: Any, data_root: Any) -> list[Problem]:
    """``subset`` names rows of the run's ``split.csv``: it needs ``data.root`` unset."""
    if subset not in SUBSETS:
        return [Problem("subset", subset, " or ".join(SUBSETS), "valid: the run's validation images; test: its test/ images")]
    if subset != "valid" and data_root is not None:
        return [Problem("subset", subset, "valid (the default) with data.root",
                        f"data.root={data_root!r} evaluates every image of that folder; leave out data.root to "
                        f"evaluate the run's {subset} images, or subset to evaluate the folder")]
    return []


def split_csv_samples(ckpt_path: Path, loaded: LoadedClassifier, subset: str = "valid") -> tuple[list[Sample], Counter]:
    """The ``subset`` rows (``valid`` or ``test``) of the run's ``split.csv`` (next to ``checkpoints/``), as samples.

    A multi-label model's label cells hold class names joined by its ``data.labels.label_delim``.
    """
    split_csv = ckpt_path.resolve().parent.parent / "split.csv"
    if not split_csv.is_file():
        raise FileNotFoundError(
            f"{split_csv} not found: ckpt_path={str(ckpt_path)!r} is not inside a training run directory "
            "(RUN/checkpoints/*.ckpt next to RUN/split.csv); pass data.root=DIR to evaluate a folder of class folders"
        )
    root = Path(loaded.config.data.root).expanduser()
    samples, unknown, subsets = [], Counter(), Counter()
    with split_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            subsets[row["subset"]] += 1
            if row["subset"] != subset:
                continue
            names = [n for n in row["label"].split(loaded.label_delim) if n] if loaded.multi_label else [row["label"]]
            if any(name not in loaded.classes for name in names):
                unknown[row["label"]] += 1
                continue
            indices = tuple(sorted(loaded.classes.index(name) for name in names))
            samples.append(Sample(root / row["path"], indices if loaded.multi_label else indices[0]))
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


def folder_samples(root: Path, classes: list[str], scan: FileScan | None = None) -> tuple[list[Sample], Counter]:
    """Every image of ``root/<class>/``; images of classes the model does not know are counted apart.

    With ``scan``, unreadable files are left out and recorded in ``scan.bad``.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={str(root)!r} is not a folder; expected a folder of class folders")
    samples, unknown = [], Counter()
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = list_images(folder)
        if scan is not None:
            scan.note_unlisted(folder)
            images = scan.keep_readable(images)
        if folder.name not in classes:
            if images:  # an empty folder is no unknown label
                unknown[folder.name] += len(images)
            continue
        samples += [Sample(path, classes.index(folder.name)) for path in images]
    return samples, unknown


@dataclass
class EvaluationImages:
    """The images to evaluate, where they come from, and what was left out."""

    samples: list[Sample]
    root: Path  # the folder predictions.csv's paths are relative to
    source: str  # in words, for the log and metrics.json
    unknown: Counter  # images of labels the model does not know, by label
    unreadable: int
    dataset: Dataset | None = None  # where the images are read from, when not files (shards)


def shard_images(ckpt_path: Path, loaded: LoadedClassifier) -> EvaluationImages:
    """The validation subset of the shards a run trained from (``data.format=litdata``), refused if
    their classes are not the checkpoint's."""
    from src.data.shards.manifest import check_classes, read_manifest
    from src.data.shards.streaming import ShardSubset

    data = loaded.config.data
    manifest = read_manifest(data.root)
    check_classes(manifest, data.root, loaded.classes, f"the checkpoint {ckpt_path}")
    dataset = ShardSubset(data.root, "valid", loaded.transform, num_labels=len(loaded.classes) if loaded.multi_label
                          else None, decode_size=loaded.transform.size, cache_dir=data.get("shard_cache_dir"))
    root = Path(manifest["source"])
    return EvaluationImages(dataset.samples(root), root, f"validation shards of {data.root}", Counter(), 0, dataset)


def images_to_evaluate(
    cfg: DictConfig, ckpt_path: Path, loaded: LoadedClassifier, output_dir: Path
) -> EvaluationImages:
    """The run's validation split (``data.root`` unset) or every image of ``data.root``'s class folders;
    unreadable files are left out and listed in ``bad_files.csv``."""
    if cfg.data.root is None and loaded.config.data.get("format", "folder") == "litdata":
        return shard_images(ckpt_path, loaded)
    scan = FileScan()
    if cfg.data.root is None:
        root = Path(loaded.config.data.root).expanduser()
        subset = cfg.subset
        samples, unknown = split_csv_samples(ckpt_path, loaded, subset)
        source = f"{'validation' if subset == 'valid' else subset} split of {ckpt_path.resolve().parent.parent / 'split.csv'}"
        # The split lists files that were readable at training time; check they still are.
        readable = set(scan.keep_readable([s.path for s in samples]))
        samples = [s for s in samples if s.path in readable]
    else:
        if loaded.multi_label:
            raise ValueError(
                f"data.root={cfg.data.root!r}: class folders give one label per image, and {ckpt_path} is a multi-label "
                "model; evaluate it on its run's validation split (leave data.root=null)"
            )
        root = Path(cfg.data.root).expanduser()
        samples, unknown = folder_samples(root, loaded.classes, scan)
        source = str(root)
    if scan.bad:
        scan.write_csv(output_dir / "bad_files.csv", root)
        (log.warning if scan.unreadable else log.info)("%s: %s; listed in %s", source, scan.summary(),
                                                        output_dir / "bad_files.csv")
    if unknown:
        log.warning("left out %d image(s) of %d label(s) the model does not know (it knows %s): %s",
                    sum(unknown.values()), len(unknown), ", ".join(loaded.classes),
                    ", ".join(f"{label} ({n})" for label, n in sorted(unknown.items())))
    if not samples:
        raise ValueError(
            f"no images of the model's classes ({', '.join(loaded.classes)}) in {source}; "
            "expected DIR/<class name>/<image files> with the class names the model was trained on"
        )
    return EvaluationImages(samples, root, source, unknown, len(scan.unreadable))



def interpret(
    cfg: DictConfig, loaded: LoadedClassifier, images: EvaluationImages, threshold: float
) -> tuple[Interpretation | MultiLabelInterpretation, ImageDataset, str]:
    """Run the model over ``images`` (with ``cfg.tta``, at ``cfg.precision`` or the trained one);
    fastai's interpretation of the results, the dataset and the precision that ran."""
    predictor = Predictor.from_loaded(loaded, device=cfg.device, tta=cfg.tta, threshold=threshold,
                                      precision=cfg.get("precision"))
    # Strict: a replacement image would change the metrics, so a file failing after the scan stops.
    dataset = images.dataset if images.dataset is not None else ImageDataset(
        images.samples, loaded.transform, skip_unreadable=False,
        num_labels=len(loaded.classes) if loaded.multi_label else None, decode_size=loaded.transform.size)
    loader = DataLoader(dataset, batch_size=cfg.data.batch_size, num_workers=resolve_num_workers(cfg.data.num_workers))
    log_probs, targets = run_loader(predictor.net, loader, predictor.device, cfg.tta, progress="evaluating",
                                    multi_label=loaded.multi_label)
    if loaded.multi_label:
        return MultiLabelInterpretation(loaded.classes, log_probs, targets, threshold), dataset, predictor.precision
    return Interpretation(loaded.classes, log_probs, targets), dataset, predictor.precision


def write_predictions(path: Path, images: EvaluationImages, interpretation, label_delim: str | None) -> None:
    """path, label, prediction (a multi-label model's classes joined by ``label_delim``), probability, loss."""
    classes = interpretation.classes
    rows = (
        [relative_posix(sample.path, images.root), label_text(sample.label, classes, label_delim),
         *prediction_cells(index, probabilities, classes, label_delim), f"{loss:.6f}"]
        for sample, index, probabilities, loss in zip(images.samples, interpretation.predicted_indices(),
                                                      interpretation.probabilities, interpretation.losses.tolist())
    )
    write_predictions_csv(path, ["path", "label", "prediction", "probability", "loss"], rows)


def write_single_label_pictures(cfg: DictConfig, output_dir: Path, interpretation: Interpretation,
                                dataset: ImageDataset, data: DictConfig) -> list:
    """most_confused.txt, confusion_matrix.png and top_losses.png; return the most confused pairs."""
    most_confused = interpretation.most_confused()
    (output_dir / "most_confused.txt").write_text(
        "".join(f"{actual}\t{predicted}\t{count}\n" for actual, predicted, count in most_confused)
    )
    save_figure(confusion_matrix_figure(interpretation.confusion_matrix(), interpretation.classes,
                                        normalize=cfg.normalize_confusion_matrix), output_dir / "confusion_matrix.png")
    save_figure(top_losses_figure(interpretation, dataset, cfg.top_losses, data.mean, data.std),
                output_dir / "top_losses.png")
    return most_confused


def warn_of_classes_without_images(metrics: dict[str, Any], source: str, multi_label: bool) -> None:
    """Name the model's classes that no evaluated image has: the macro averages leave them out."""
    missing = metrics["classes_without_images"]
    if not missing:
        return
    averages = "macro_f1" if multi_label else "macro_recall and macro_f1"
    counted = len(metrics["per_class"]) - len(missing)
    log.warning("%s has no image %s %d of the model's %d classes: %s; %s average the other %d (a class without "
                "images has no recall to average), and per_class lists these with support 0. Add images of "
                "them to measure them", source, "labelled with" if multi_label else "of", len(missing),
                len(metrics["per_class"]), ", ".join(missing), averages, counted)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path``; write the interpretation files to ``cfg.paths.output_dir``; return the metrics."""
    check_inference_config(cfg)
    raise_problems(subset_problems(cfg.subset, cfg.data.get("root")))
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = Path(cfg.ckpt_path).expanduser()
    loaded = load_classifier(ckpt_path)
    images = images_to_evaluate(cfg, ckpt_path, loaded, output_dir)
    threshold = loaded.threshold if cfg.get("threshold") is None else cfg.threshold
    interpretation, dataset, precision = interpret(cfg, loaded, images, threshold)
    metrics = interpretation.metrics()
    warn_of_classes_without_images(metrics, images.source, loaded.multi_label)
    run = {"checkpoint": str(ckpt_path), "data": images.source, "images": len(images.samples),
           "bad_files": images.unreadable, "tta": bool(cfg.tta), "precision": precision,
           "unknown_labels": dict(sorted(images.unknown.items()))}
    if loaded.multi_label:
        log.info("multi-label model: %s", MULTI_LABEL_SKIPPED)
        run.update(multi_label=True, skipped=MULTI_LABEL_SKIPPED)
        log.info("%s: error_rate %.4f (1 - accuracy_thresh), fbeta %.4f on %d images", images.source,
                 metrics["error_rate"], metrics["fbeta"], len(images.samples))
    else:
        run["most_confused"] = write_single_label_pictures(cfg, output_dir, interpretation, dataset, loaded.config.data)
        log.info("%s: error_rate %.4f on %d images", images.source, metrics["error_rate"], len(images.samples))
    write_json(output_dir / "metrics.json", {**metrics, **run})
    write_predictions(output_dir / "predictions.csv", images, interpretation, loaded.label_delim)
    return {**metrics, "images": len(images.samples), "unknown_labels": dict(images.unknown),
            "output_dir": str(output_dir), "precision": precision}


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    metrics = evaluate(cfg)
    print(f"run directory: {metrics['output_dir']}")
    if metrics["unknown_labels"]:
        print("left out (labels the model does not know): "
              + ", ".join(f"{label} ({n} images)" for label, n in sorted(metrics["unknown_labels"].items())))
    if metrics["classes_without_images"]:
        print("no images of (left out of the macro averages): " + ", ".join(metrics["classes_without_images"]))
    print(f"error_rate: {metrics['error_rate']:.4f}  accuracy: {metrics['accuracy']:.4f}  "
          f"loss: {metrics['loss']:.4f}  macro-F1: {metrics['macro_f1']:.4f}"
          + (f"  fbeta: {metrics['fbeta']:.4f}" if "fbeta" in metrics else "")
          + f"  ({metrics['images']} images, precision {metrics['precision']})")
    return metrics["error_rate"]


if __name__ == "__main__":
    main()
