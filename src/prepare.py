"""Write an image folder as LitData shards: ``python -m src.prepare data.root=FOLDER output=DIR``.

The folder is scanned, labelled and split as ``src.train`` does with the same ``data`` settings;
the images (shorter side at most ``max_side``), their labels and the split go into ``DIR`` as litdata
chunks, one dataset per subset, with a manifest (:mod:`src.data.shards.writer`). Train from them with
``python -m src.train data.format=litdata data.root=DIR`` (or ``s3://bucket/prefix`` after uploading).
Interrupted, the same command finishes the job.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from src.runs.config_checks import data_config_problems
from src.core.problems import Problem, is_whole_number, raise_problems
from src.core.image_size import image_size_problems
from src.data.shards.manifest import is_remote, litdata_problems
from src.data.sources import DATA_SOURCES
from src.data.shards.writer import write_shards
from src.runs.builder import build_datamodule
from src.core.hardware import resolve_num_workers
from src.optim.fine_tune import register_resolvers
from src.core.user_errors import one_line_user_errors

register_resolvers()  # conf/schedule/fine_tune.yaml's ${fine_tune_stages:}, before Hydra composes a config

log = logging.getLogger(__name__)


def prepare_problems(cfg: DictConfig) -> list[Problem]:
    """Every problem of a prepare config: the data's (as training checks them) and this command's keys."""
    found = data_config_problems(cfg.data)
    source = DATA_SOURCES.get(cfg.data.get("format", "folder"))  # an unknown format is a data problem above
    if source is not None and not source.holds_image_files:
        found.append(Problem("data.format", cfg.data.format, "folder: src.prepare reads a folder of images",
                             "leave data.format out; data.root is the image folder to write as shards"))
    output = None if OmegaConf.is_missing(cfg, "output") else cfg.output
    if not output or is_remote(output):
        found.append(Problem("output", output, "a new or empty local folder for the shards",
                             "e.g. output=/data/shards/photos-256; upload it to s3:// afterwards"))
    # Before anything is written: without litdata the folder would hold split.csv and a plan, no shards.
    found += litdata_problems("output", output, alternative="")
    found += image_size_problems("max_side", cfg.max_side, "the largest data.size you will train at, e.g. max_side=256")
    if not is_whole_number(cfg.jpeg_quality, minimum=1) or cfg.jpeg_quality > 100:
        found.append(Problem("jpeg_quality", cfg.jpeg_quality, "a whole number from 1 to 100", "e.g. jpeg_quality=95"))
    return found


def prepare(cfg: DictConfig) -> dict[str, Any]:
    """Scan and split ``cfg.data.root``, write its shards into ``cfg.output``; return the manifest."""
    raise_problems(prepare_problems(cfg))
    output = Path(cfg.output).expanduser().resolve()
    # split.csv and bad_files.csv go next to the shards (write_shards), once the plan is accepted.
    datamodule = build_datamodule(cfg.data, split_csv=None, bad_files_csv=None, num_workers=0)
    datamodule.setup()  # scan, labels, split: what training from the folder would use
    index = datamodule.index
    subsets = {"train": index.train, "valid": index.valid, "test": index.test}
    label_source = datamodule.label_source
    manifest_fields = {
        "classes": datamodule.classes,
        "multi_label": datamodule.multi_label,
        "label_delim": label_source.label_delim,
        "labels": OmegaConf.to_container(cfg.data.labels, resolve=True),
        "layout": index.layout,
        "valid_pct": cfg.data.valid_pct,
        "seed": cfg.data.seed,
        "bad_files": len(datamodule.scan.unreadable),
        "train_class_counts": datamodule.class_counts,  # model.class_weights=balanced, without the images
    }
    output.mkdir(parents=True, exist_ok=True)
    manifest = write_shards(output, subsets, datamodule.root, manifest_fields, datamodule.scan, max_side=cfg.max_side,
                            jpeg_quality=cfg.jpeg_quality, num_workers=resolve_num_workers(cfg.num_workers),
                            chunk_bytes=str(cfg.chunk_bytes))
    return {**manifest, "output": str(output)}


@one_line_user_errors
@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    manifest = prepare(cfg)
    counts = manifest["subsets"]
    print(f"shards: {manifest['output']} ({counts['train']} training, {counts['valid']} validation, "
          f"{counts['test']} test images of {len(manifest['classes'])} classes)")
    print(f"train from them: python -m src.train data.format=litdata data.root={manifest['output']}")


if __name__ == "__main__":
    main()
