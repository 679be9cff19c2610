"""The image pass's results (embeddings, hashes, pixel properties, thumbnails) kept between audits, beside
the scan cache: a second audit embeds nothing.

One file per (data folder, body, eval transform) in ``paths.cache_dir``, named like the scan cache by a
hash of what the results depend on (the resolved root, the body's identity: architecture and weights
file or checkpoint with its size and modification time, the transform, :data:`CACHE_FORMAT`). A row is
reused when its file's size and modification time are the cached ones; new and changed files are read,
deleted ones drop out. Stored as an ``.npz`` of plain arrays, loaded with ``allow_pickle=False``: a cache
file cannot run code. A file modified within the scan cache's racy window is not stored (it may change
again in the same clock tick). A cache that cannot be read is reported and rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from src.auditing.image_pass import ImageFacts
from src.data.files.scan_cache import RACY_NS
from src.core.atomic_write import atomic_open

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when what a row holds or how it is computed changes


def cache_path(cache_dir: Path, root: Path, body_identity: str) -> Path:
    root = Path(root).expanduser().resolve()
    key = hashlib.sha256(f"{root}\0{body_identity}\0{CACHE_FORMAT}".encode()).hexdigest()[:24]
    return Path(cache_dir).expanduser() / f"{root.name or 'root'}-{key}.audit.npz"


def _read(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in ("paths", "sizes", "mtimes", "digests", "embeddings", "properties",
                                                         "thumbnails")}
        if len({len(a) for a in arrays.values()}) != 1:
            raise ValueError("columns of different lengths")
        return arrays
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as error:
        log.warning("embedding cache %s cannot be read (%s: %s): every image is embedded again", path,
                    type(error).__name__, error)
        return None


def cached_read(paths: Sequence[Path], root: Path, cache_dir: Path | None, body_identity: str,
                read: Callable[[list[Path]], ImageFacts]) -> tuple[ImageFacts, int]:
    """The facts of ``paths``, from the cache where a file is unchanged and from ``read`` for the rest;
    the number of files read. ``cache_dir`` None: every file is read and nothing is kept."""
    if cache_dir is None:
        return read(list(paths)), len(paths)
    started = time.time_ns()
    path = cache_path(cache_dir, root, body_identity)
    prefix = os.path.join(Path(root).expanduser(), "")
    keys = [str(p)[len(prefix):] if str(p).startswith(prefix) else str(p) for p in paths]
    stats = [p.stat() for p in paths]
    stored = _read(path)
    rows: dict[str, int] = {}
    if stored is not None:
        rows = {k: i for i, k in enumerate(stored["paths"].tolist())}
    hit = [rows.get(k) for k in keys]
    hit = [i if i is not None and (int(stored["sizes"][i]), int(stored["mtimes"][i])) == (s.st_size, s.st_mtime_ns)
           else None for i, s in zip(hit, stats)]
    missing = [j for j, i in enumerate(hit) if i is None]
    fresh = read([paths[j] for j in missing]) if missing else None
    if stored is not None and fresh is not None and fresh.embeddings.shape[1] != stored["embeddings"].shape[1]:
        raise ValueError(f"embedding cache {path} holds {stored['embeddings'].shape[1]}-wide rows, the body gives "
                         f"{fresh.embeddings.shape[1]}; delete the file")
    source = (fresh.embeddings, fresh.properties, fresh.thumbnails) if fresh is not None else (
        (stored["embeddings"], stored["properties"], stored["thumbnails"]) if stored is not None else (
            np.zeros((0, 1)), np.zeros((0, 1)), np.zeros((0, 1, 1))))
    embeddings = np.zeros((len(paths), source[0].shape[1]), np.float32)
    properties = np.zeros((len(paths), source[1].shape[1]), np.float32)
    thumbnails = np.zeros((len(paths), *source[2].shape[1:]), np.uint8)
    digests = [""] * len(paths)
    for j, i in enumerate(hit):
        if i is not None:
            embeddings[j], properties[j], thumbnails[j] = (stored["embeddings"][i], stored["properties"][i],
                                                           stored["thumbnails"][i])
            digests[j] = str(stored["digests"][i])
    for k, j in enumerate(missing):
        embeddings[j], properties[j], thumbnails[j] = fresh.embeddings[k], fresh.properties[k], fresh.thumbnails[k]
        digests[j] = fresh.digests[k]
    facts = ImageFacts(embeddings, digests, properties, thumbnails)
    if missing or stored is None or len(rows) != len(paths):
        keep = [j for j, s in enumerate(stats) if digests[j] and s.st_mtime_ns < started - RACY_NS]
        try:
            with atomic_open(path, "wb") as f:
                np.savez(f, paths=np.array([keys[j] for j in keep], dtype=str),
                         sizes=np.array([stats[j].st_size for j in keep], dtype=np.int64),
                         mtimes=np.array([stats[j].st_mtime_ns for j in keep], dtype=np.int64),
                         digests=np.array([digests[j] for j in keep], dtype=str),
                         embeddings=embeddings[keep], properties=properties[keep], thumbnails=thumbnails[keep])
            log.info("embedding cache: %d image(s) written to %s", len(keep), path)
        except OSError as error:  # the cache only saves time
            log.warning("could not write the embedding cache %s (%s); the next audit embeds every image again",
                        path, error)
    log.info("embedded %d image(s), %d from the embedding cache %s", len(missing), len(paths) - len(missing), path)
    return facts, len(missing)
