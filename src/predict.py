"""Predict images: ``python -m src.predict ckpt_path=RUN/checkpoints/best.ckpt input=PATH [tta=true] [topk=3]``.

``input`` is one image, a folder (every file below it, recursively) or a ``.txt`` file listing
one path per line (relative paths are relative to the list's folder). The result is a CSV with
the predicted class, its probability and the ``topk`` classes; a file that is not a readable
image gets a row with the reason in ``error`` and the command exits with status 1. For a
multi-label model the prediction is every class above ``threshold`` (the checkpoint's by default),
names and probabilities joined by the training ``data.labels.label_delim``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from src.runs.config_checks import check_inference_config
from src.inference.predictions_csv import prediction_cells, write_predictions_csv
from src.inference.predictor import FileResult, Predictor
from src.optim.fine_tune import register_resolvers
from src.core.user_errors import one_line_user_errors

register_resolvers()  # conf/schedule/fine_tune.yaml's ${fine_tune_stages:}, before Hydra composes a config

log = logging.getLogger(__name__)

LIST_SUFFIXES = (".txt", ".lst")


def input_files(path: str | Path) -> list[Path]:
    """The files named by ``input``: the image itself, every non-hidden file of a folder, or a list's paths
    (relative ones from the list's folder).

    A folder's symlinks that lead to no file (a loop, a dangling link) are listed too, so that each
    gets its error row instead of vanishing; symlinked folders are not followed (they may loop).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        return sorted(
            p for p in path.rglob("*")
            if (p.is_file() or (p.is_symlink() and not p.is_dir()))
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        lines = (line.strip() for line in path.read_text().splitlines())
        return [(path.parent / line).resolve() if not Path(line).is_absolute() else Path(line)
                for line in lines if line and not line.startswith("#")]
    if path.is_file():
        return [path]
    raise FileNotFoundError(
        f"input={str(path)!r} does not exist; expected an image, a folder of images or a .txt file of image paths"
    )


def predictions_path(output: str | None, output_dir: str | Path) -> Path:
    """Where the CSV goes: ``output`` (a file, or a folder that receives ``predictions.csv``), else this
    run's directory. Its folder is created and probed here, so a bad ``output`` fails before any prediction.

    ``output`` is a folder when it is one, ends with a slash, or is a new name without a suffix
    (``output=/new/dir``): a CSV path has one (``output=preds.csv``).
    """
    path = Path(output).expanduser() if output else Path(output_dir)
    as_folder = path.is_dir() or str(output).endswith(("/", "\\")) or (not path.suffix and not path.exists())
    if not output or as_folder:
        path = path / "predictions.csv"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.parent / ".write_probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OSError(f"output={output!r}: cannot write {path} ({type(error).__name__}: {error}); expected a CSV "
                      "path or a folder you can write to, e.g. output=/tmp/predictions.csv") from error
    return path


def prediction_rows(results: list[FileResult], classes: list[str], topk: int, label_delim: str | None) -> list[list]:
    """One row per file: the prediction, its probability, the ``topk`` classes, or the error.

    A multi-label prediction's classes (and their probabilities) are joined by ``label_delim``.
    """
    rows = []
    for result in results:
        if result.prediction is None:
            rows.append([str(result.path), "", "", *([""] * 2 * topk), result.error])
            continue
        probs = result.prediction.probabilities
        top = probs.topk(topk)
        cells = [v for p, i in zip(top.values.tolist(), top.indices.tolist()) for v in (classes[i], f"{p:.6f}")]
        rows.append([str(result.path), *prediction_cells(result.prediction.index, probs, classes, label_delim),
                     *cells, ""])
    return rows


def _header(topk: int) -> list[str]:
    ranks = [(f"class_{k}", f"probability_{k}") for k in range(1, topk + 1)]
    return ["path", "prediction", "probability", *(c for pair in ranks for c in pair), "error"]


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict every file of ``cfg.input``; write the CSV; return the results and where they went."""
    check_inference_config(cfg)
    predictor = Predictor.from_checkpoint(cfg.ckpt_path, device=cfg.device, tta=cfg.tta, threshold=cfg.get("threshold"),
                                          precision=cfg.get("precision"))
    if not 1 <= cfg.topk <= len(predictor.classes):
        raise ValueError(f"topk={cfg.topk}; the model has {len(predictor.classes)} classes, so use 1 to "
                         f"{len(predictor.classes)}")
    files = input_files(cfg.input)
    if not files:
        raise ValueError(f"input={cfg.input!r} holds no files; expected images (e.g. .jpg, .png)")
    output = predictions_path(cfg.output, cfg.paths.output_dir)  # after the checks that write nothing
    results = list(predictor.predict_files(files, cfg.batch_size, cfg.num_workers, progress=len(files) > 1))
    write_predictions_csv(output, _header(cfg.topk), prediction_rows(results, predictor.classes, cfg.topk,
                                                                      predictor.label_delim))
    failed = [r for r in results if r.error]
    for result in failed:
        log.error("%s: %s", result.path, result.error)
    log.info("predicted %d file(s), %d failed, tta=%s, precision %s: %s", len(results), len(failed), cfg.tta,
             predictor.precision, output)
    return {"output": str(output), "results": results, "failed": len(failed), "classes": predictor.classes,
            "precision": predictor.precision}


@one_line_user_errors
@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    summary = predict(cfg)
    results = summary["results"]
    if len(results) == 1 and results[0].prediction is not None:
        label, index, probs = results[0].prediction
        shown = f"{label} ({float(probs[index]):.4f})" if isinstance(index, int) else (
            "{" + ", ".join(f"{name} {float(probs[i]):.4f}" for name, i in zip(label, index)) + "}")
        top = probs.topk(cfg.topk)
        print(f"{results[0].path}: {shown}  top-{cfg.topk}: " + ", ".join(
            f"{summary['classes'][i]} {p:.4f}" for p, i in zip(top.values.tolist(), top.indices.tolist())))
    print(f"predictions: {summary['output']} ({len(results)} files, {summary['failed']} failed, "
          f"precision {summary['precision']})")
    if summary["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
