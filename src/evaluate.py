"""Evaluate a checkpoint: ``python -m src.evaluate ckpt_path=RUN/checkpoints/best.ckpt [data.root=DIR]``.

By default the images are the validation split of the run that wrote the checkpoint (its
``split.csv``); ``subset=test`` takes that split's test images instead (a ``test/`` folder of the
split-folders layout); with ``data.root`` every image in a folder of class folders is evaluated. The run
directory receives ``metrics.json``, ``predictions.csv``, ``most_confused.txt``,
``confusion_matrix.csv``, ``confusion_matrix.png`` and ``top_losses.png`` (fastai's ``ClassificationInterpretation``). A
multi-label model gets its metrics (accuracy_thresh, F-beta, per-class precision/recall/F1) and
``predictions.csv``; the single-label pictures are skipped, with a note in ``metrics.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from src.data.evaluation_images import images_to_evaluate
from src.data.loading.dataset import ImageDataset
from src.data.sources import EvaluationImages
from src.data.files.listing import relative_posix
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
from src.core.user_errors import one_line_user_errors

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
    """most_confused.txt, confusion_matrix.csv (every class), confusion_matrix.png (the most confused
    part above :data:`~src.visualize.interpretation_figures.MAX_DRAWN_CLASSES` classes) and
    top_losses.png; return the most confused pairs."""
    most_confused = interpretation.most_confused()
    (output_dir / "most_confused.txt").write_text(
        "".join(f"{actual}\t{predicted}\t{count}\n" for actual, predicted, count in most_confused)
    )
    header, *rows = interpretation.confusion_matrix_rows()
    write_predictions_csv(output_dir / "confusion_matrix.csv", header, rows)
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
    images = images_to_evaluate(cfg.data.get("root"), cfg.subset, ckpt_path, loaded.config.data, loaded,
                                loaded.transform, output_dir)
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


@one_line_user_errors
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
