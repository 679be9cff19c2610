"""The images ``python -m src.evaluate`` scores: a folder of class folders, or the subset of a run's own data
(its ``split.csv`` rows of a folder, or the validation shards), with the images of unknown labels counted apart
and unreadable files left out and listed."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from src.data.files.listing import Sample, class_folders, list_images
from src.data.files.scan import FileScan
from src.data.sources import DATA_SOURCES, EvaluationImages, ModelClasses

log = logging.getLogger(__name__)


def folder_samples(root: Path, classes: list[str], scan: FileScan | None = None) -> tuple[list[Sample], Counter]:
    """Every image of ``root/<class>/``; images of classes the model does not know are counted apart.

    With ``scan``, unreadable files are left out and recorded in ``scan.bad``.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={str(root)!r} is not a folder; expected a folder of class folders")
    samples, unknown = [], Counter()
    for folder in class_folders(root):
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


def images_to_evaluate(data_root: str | None, subset: str, ckpt_path: Path, run_data: DictConfig,
                       loaded: ModelClasses, transform: Callable, output_dir: Path) -> EvaluationImages:
    """Every image of ``data_root``'s class folders, or (``data_root`` None) the run's ``subset`` as its data
    source keeps it (:meth:`FolderSource.run_images`, :meth:`ShardSource.run_images`); unreadable files are
    left out and listed in ``output_dir/bad_files.csv``."""
    if data_root is None:
        images = DATA_SOURCES[run_data.get("format", "folder")].run_images(ckpt_path, run_data, loaded, transform,
                                                                            subset)
        if images.dataset is not None:  # read from where the run's data is stored, not from files
            return images
        samples, unknown, source, root, scan = images.samples, images.unknown, images.source, images.root, images.scan
    else:
        if loaded.multi_label:
            raise ValueError(
                f"data.root={data_root!r}: class folders give one label per image, and {ckpt_path} is a multi-label "
                "model; evaluate it on its run's validation split (leave data.root=null)"
            )
        scan = FileScan()
        root = Path(data_root).expanduser()
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
    return EvaluationImages(samples, root, source, unknown, len(scan.unreadable), scan=scan)
