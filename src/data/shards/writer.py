"""Writing a scanned, split image folder as LitData shards: one ``litdata.optimize`` per subset.

Layout of ``output``::

    prepare-plan.json   what is being written (settings, classes, a digest of every sample); first
    train/ valid/ test/ litdata chunks (chunk-*.bin) and index.json of each subset, images in a
                        seeded random order (the split's seed)
    split.csv           the split (path,label,subset), paths relative to the source data.root
    bad_files.csv       the files the scan left out, if any
    manifest.json       written last: the shards are complete (src/data/shards/manifest.py)

Resuming: a re-run with the same settings skips the subsets whose ``index.json`` exists and
continues the others from litdata's own checkpoints (``use_checkpoint``: each worker records the
chunks it finished), with the worker count of the first run (litdata's checkpoints are per worker).
A re-run with other settings is refused, naming them, before anything is overwritten.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from src.data.files.listing import Sample, relative_posix
from src.data.files.image_reader import MAX_IMAGE_PIXELS, load_rgb, open_image
from src.data.files.scan import FileScan
from src.data.shards.manifest import FORMAT_VERSION, MANIFEST, SUBSETS
from src.data.labels.split import write_split_csv
from src.core.atomic_write import atomic_open

log = logging.getLogger(__name__)

PLAN = "prepare-plan.json"
# Stored as they are when no resize is needed (no generation loss, no work); other formats are
# re-encoded: PNG (lossless) unless the source was a JPEG.
KEPT_FORMATS = ("JPEG", "PNG")
# Plan keys that may differ on a re-run: the worker count of the first run is kept (see the module docstring).
RUN_KEYS = ("num_workers", "chunk_bytes")


@dataclass(frozen=True)
class EncodeImage:
    """litdata's ``fn``: one ``[path, relative path, label]`` to a stored item. A picklable object
    (not a closure), since litdata's workers are spawned processes."""

    max_side: int
    jpeg_quality: int
    max_pixels: int  # the scan's data.max_image_pixels

    def __call__(self, item: list) -> dict[str, Any]:
        path, relative, label = item
        return {"image": encode_image(Path(path), self.max_side, self.jpeg_quality, self.max_pixels),
                "label": stored_label(label), "path": relative}


def encode_image(path: Path, max_side: int, jpeg_quality: int, max_pixels: int = MAX_IMAGE_PIXELS) -> bytes:
    """The file's bytes, or, where its shorter side is over ``max_side`` or its format is not kept, the
    image decoded as training decodes it (:func:`load_rgb`: EXIF orientation, RGB, transparency on
    white), resized so its shorter side is ``max_side``, and encoded (JPEG for a JPEG, else PNG).

    The shorter side, not the longer: every ``data.resize_method`` at ``data.size <= max_side``
    then finds at least ``data.size`` pixels on both sides, as it would in the original file.
    """
    data = path.read_bytes()
    with open_image(io.BytesIO(data), max_pixels) as image:
        source_format, (width, height) = image.format, image.size
    if source_format in KEPT_FORMATS and min(width, height) <= max_side:
        return data
    image = load_rgb(io.BytesIO(data), max_pixels=max_pixels, min_size=max_side)
    width, height = image.size
    if min(width, height) > max_side:
        scale = max_side / min(width, height)
        image = image.resize((max(max_side, round(width * scale)), max(max_side, round(height * scale))),
                             Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if source_format == "JPEG":
        image.save(out, format="JPEG", quality=jpeg_quality)
    else:
        image.save(out, format="PNG")
    return out.getvalue()


def stored_label(label: int | list[int]) -> int | np.ndarray:
    """A sample's label as litdata stores it: an int, or a multi-label's class indices as an array
    (every item must have the same structure, and a list's length varies)."""
    return np.asarray(label, dtype=np.int64) if isinstance(label, list) else int(label)


def work_item(sample: Sample, root: Path) -> list:
    """One input of ``litdata.optimize``: lists of JSON types only, because litdata's checkpoints store
    the inputs as JSON and resume only when they read back equal (a tuple would come back a list)."""
    label = list(sample.label) if isinstance(sample.label, tuple) else int(sample.label)
    return [str(sample.path), relative_posix(sample.path, root), label]


def samples_digest(subsets: dict[str, list[Sample]], root: Path) -> str:
    """A digest of every subset's paths and labels: a re-run resumes only the same work."""
    digest = hashlib.sha256()
    for subset, samples in subsets.items():
        for sample in samples:
            digest.update(f"{subset}\t{relative_posix(sample.path, root)}\t{sample.label}\n".encode())
    return digest.hexdigest()


def plan_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every setting that differs (the run-only keys aside)."""
    keys = sorted((set(old) | set(new)) - set(RUN_KEYS))
    return [f"{key}: {_short(old.get(key))} -> {_short(new.get(key))}" for key in keys if old.get(key) != new.get(key)]


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_open(path) as f:
        f.write(json.dumps(data, indent=2) + "\n")


def check_or_write_plan(output: Path, plan: dict[str, Any]) -> dict[str, Any]:
    """The plan to follow: ``plan``, or that of an interrupted or finished run with the same settings.

    Raises ``ValueError`` naming the settings that differ from those ``output`` was written with.
    """
    path = output / PLAN
    if not path.is_file():
        if output.is_dir() and any(output.iterdir()):
            raise ValueError(f"output={str(output)!r} is a folder with other files in it, not shards of src.prepare; "
                             "choose a new or empty folder for output")
        _write_json(path, plan)
        return plan
    old = json.loads(path.read_text())
    differences = plan_differences(old, plan)
    if differences:
        state = "holds shards" if (output / MANIFEST).is_file() else "holds an unfinished src.prepare"
        raise ValueError(
            f"output={str(output)!r} {state} written with other settings or data: {'; '.join(differences)}. "
            "Write these into a new folder (output=...), or delete that one to start again; to finish the "
            "unfinished one, run src.prepare again with its settings"
        )
    return old


def write_subset(output: Path, subset: str, items: list[list], encode: EncodeImage,
                 num_workers: int, chunk_bytes: str) -> int:
    """Write (or finish writing) one subset's chunks; return how many items its index lists."""
    import litdata  # only src.prepare and data.format=litdata need it

    folder = output / subset
    if not (folder / "index.json").is_file():
        log.info("writing %d %s images to %s with %d worker(s)", len(items), subset, folder, num_workers)
        # reorder_files=False: the inputs are not files litdata could size; the order is the split's.
        litdata.optimize(fn=encode, inputs=items, output_dir=str(folder), chunk_bytes=chunk_bytes,
                         num_workers=num_workers, use_checkpoint=True, reorder_files=False)
    else:
        log.info("%s: already written, kept", folder)
    chunks = json.loads((folder / "index.json").read_text())["chunks"]
    return sum(chunk["chunk_size"] for chunk in chunks)


def write_shards(output: Path, subsets: dict[str, list[Sample]], source_root: Path, manifest_fields: dict[str, Any],
                 scan: FileScan, *, max_side: int, jpeg_quality: int, num_workers: int, chunk_bytes: str) -> dict[str, Any]:
    """Write ``subsets`` (non-empty ones) as shards under ``output`` and return the manifest.

    ``manifest_fields`` are what the manifest records of the data (classes, label settings, split);
    ``scan`` the scan that made ``subsets`` (its left-out files go to ``bad_files.csv``).
    """
    counts = {subset: len(subsets.get(subset, [])) for subset in SUBSETS}
    manifest = {"format_version": FORMAT_VERSION, **manifest_fields, "source": str(source_root.resolve()),
                "max_side": max_side, "jpeg_quality": jpeg_quality, "subsets": counts}
    plan = check_or_write_plan(output, {**manifest, "samples_digest": samples_digest(subsets, source_root),
                                        "num_workers": num_workers, "chunk_bytes": chunk_bytes})
    if (output / MANIFEST).is_file():
        log.info("%s: complete already, nothing to do", output)
        return json.loads((output / MANIFEST).read_text())
    write_split_csv(output / "split.csv", source_root, manifest["classes"], subsets, manifest["label_delim"])
    if scan.bad:
        scan.write_csv(output / "bad_files.csv", source_root)
    encode = EncodeImage(max_side, jpeg_quality, scan.max_pixels)
    for subset in SUBSETS:
        samples = subsets.get(subset, [])
        if not samples:
            continue
        items = [work_item(s, source_root) for s in samples]
        # Stored in a seeded random order: a split lists training images class by class, and litdata
        # shuffles chunks and items only within a window, so class-ordered chunks give batches of
        # one or two classes (measured: 0.88 validation error after an epoch of the demo, 0.27 from the folder).
        random.Random(manifest["seed"]).shuffle(items)
        written = write_subset(output, subset, items, encode, plan["num_workers"], plan["chunk_bytes"])
        if written != len(items):
            raise RuntimeError(f"{output / subset} lists {written} images where {len(items)} were to be written; "
                               f"delete {output} and run src.prepare again")
    _write_json(output / MANIFEST, manifest)
    return manifest
