"""The scan's verdicts, kept between runs: a later run opens only the files that changed.

Opening every file before training (:mod:`src.data.files.scan`) took 28 s for 60,000 PNGs on 2 cores,
every run. The verdict of a file (readable, with its width and height, or bad with the reason)
only changes when the file does, so it is stored with the file's size and modification time in
``paths.cache_dir`` (outside the data folder, which may be read-only), one file per data folder:

- the cache file's name is a hash of the resolved root, ``max_image_pixels`` (it changes verdicts)
  and :data:`CACHE_FORMAT`; the file repeats them and is ignored where they differ (a root that
  moved, a cache of another version: a full scan, which writes a new cache);
- a file is opened again when its size or modification time differ from the cached ones, or when it
  is new; deleted files drop out of the cache; ``data.rescan=true`` opens every file;
- a file modified within :data:`RACY_NS` before the scan started may have changed again in the same
  clock tick (git's "racily clean" entries): it is opened again next time;
- a cache that cannot be read (truncated, not gzip, not the expected JSON) is reported and rebuilt.

The listing of the folder is not cached (new and deleted files must be seen), nor are the
verdicts of files that are not images by name (hidden files, other extensions), which need no opening.

Stored as gzip-compressed JSON columns (relative path, size, mtime, width, height; the bad files
apart): no pickle, so a cache file cannot run code; ~10 bytes per image (docs/data-at-scale.md).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from src.core.problems import Problem, raise_problems
from src.core.atomic_write import atomic_open

log = logging.getLogger(__name__)

# Bump when what is stored or how a verdict is reached changes: older caches are then rebuilt.
CACHE_FORMAT = 2
# File systems keep modification times at 1 ns (ext4, XFS) to 2 s (FAT) resolution: a file written in
# the same tick as the scan could change again with the same mtime, so it is not trusted.
RACY_NS = 2_000_000_000


class Verdict(NamedTuple):
    """What the scan found for one file version (``size``, ``mtime_ns``): its pixel size, or why it is bad.

    A named tuple, not a frozen dataclass: a cache of 1.28M files builds 1.28M of them at load, and
    100,000 took 0.28 s as named tuples against 0.74 s as frozen dataclasses (loaded 2-core machine).
    """

    size: int
    mtime_ns: int
    width: int = 0
    height: int = 0
    bad_kind: str | None = None
    bad_reason: str | None = None


@dataclass
class ScanCache:
    """The cached verdicts of the images under ``root`` (loaded on first use), and this scan's new ones.

    Args:
        cache_dir: the folder of every data folder's cache file (``paths.cache_dir``).
        root: the data folder; its resolved path keys the cache.
        max_pixels: the decompression-bomb limit the verdicts were reached with.
        rescan: ignore the stored verdicts (every file is opened again; the cache is rewritten).
    """

    cache_dir: Path
    root: Path
    max_pixels: int
    rescan: bool = False
    _stored: dict[str, Verdict] | None = field(default=None, repr=False)
    _seen: dict[str, Verdict] = field(default_factory=dict, repr=False)
    _changed: bool = False
    _started_ns: int = field(default_factory=time.time_ns)

    @staticmethod
    def problems(rescan: object = False) -> list[Problem]:
        """The problems of ``data.rescan`` (a string such as "yes" would be truthy: a silent full scan)."""
        if isinstance(rescan, bool):
            return []
        return [Problem("data.rescan", rescan, "true or false",
                        "data.rescan=true opens every file again this run; false trusts the cache")]

    def __post_init__(self) -> None:
        raise_problems(self.problems(self.rescan))
        self.cache_dir = Path(self.cache_dir).expanduser()
        listed_root = Path(self.root).expanduser()
        self._prefix = os.path.join(listed_root, "")  # the listing's paths start with it
        self.root = listed_root.resolve()

    @property
    def path(self) -> Path:
        key = hashlib.sha256(f"{self.root}\0{self.max_pixels}\0{CACHE_FORMAT}".encode()).hexdigest()[:24]
        return self.cache_dir / f"{self.root.name or 'root'}-{key}.json.gz"

    def key(self, path: Path) -> str:
        """``path`` relative to the root with ``/`` (string slicing: pathlib's relative_to costs 30 us a file)."""
        name = os.fspath(path)
        name = name[len(self._prefix):] if name.startswith(self._prefix) else name
        return name if os.sep == "/" else name.replace(os.sep, "/")

    def lookup(self, path: Path, stat: os.stat_result) -> Verdict | None:
        """The stored verdict of ``path`` when its size and mtime are those of ``stat``; None: open it."""
        key = self.key(path)
        stored = self._load().get(key)
        if stored is None or (stored.size, stored.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            return None
        self._seen[key] = stored
        return stored

    def record(self, path: Path, verdict: Verdict) -> None:
        """Keep the verdict just reached for ``path`` (``verdict.size``/``mtime_ns`` taken before it was opened)."""
        self._seen[self.key(path)] = verdict
        self._changed = True

    def save(self) -> None:
        """Write this scan's verdicts (files not seen this time drop out), when anything changed."""
        if not self._changed and len(self._seen) == len(self._load()):
            return
        # Racily clean entries are left out, so the next scan opens them again.
        fresh = {k: v for k, v in sorted(self._seen.items()) if v.mtime_ns < self._started_ns - RACY_NS}
        names = list(fresh)
        columns = {
            "format": CACHE_FORMAT, "root": str(self.root), "max_pixels": self.max_pixels,
            "paths": names,
            "sizes": [fresh[n].size for n in names],
            "mtimes": [fresh[n].mtime_ns for n in names],
            "widths": [fresh[n].width for n in names],
            "heights": [fresh[n].height for n in names],
            "bad": {str(i): [fresh[n].bad_kind, fresh[n].bad_reason] for i, n in enumerate(names) if fresh[n].bad_kind},
        }
        data = gzip.compress(json.dumps(columns, separators=(",", ":")).encode(), compresslevel=6, mtime=0)
        try:
            with atomic_open(self.path, "wb") as f:
                f.write(data)
        except OSError as error:  # the cache only saves time: a run does not fail because it cannot keep it
            log.warning("could not write the scan cache %s (%s); the next run scans every file again. Set "
                        "paths.cache_dir to a writable folder", self.path, error)
            return
        log.info("scan cache: %d verdicts written to %s (%d bytes, %.1f per image)", len(names), self.path,
                 len(data), len(data) / max(1, len(names)))

    def _load(self) -> dict[str, Verdict]:
        if self._stored is None:
            self._stored = {} if self.rescan else self._read()
        return self._stored

    def _read(self) -> dict[str, Verdict]:
        path = self.path
        if not path.is_file():
            log.info("no scan cache for %s yet: every file is opened once (kept in %s)", self.root, path)
            return {}
        try:
            columns = json.loads(gzip.decompress(path.read_bytes()))
            found = (columns.get("format"), columns.get("root"), columns.get("max_pixels"))
            if found != (CACHE_FORMAT, str(self.root), self.max_pixels):
                log.info("scan cache %s is for format %s, root %s, max_pixels %s (this run: %s, %s, %s): every file "
                         "is opened again", path, *found, CACHE_FORMAT, self.root, self.max_pixels)
                return {}
            names, bad = columns["paths"], columns["bad"]
            lists = [columns[k] for k in ("sizes", "mtimes", "widths", "heights")]
            if any(len(values) != len(names) for values in lists):
                raise ValueError(f"{len(names)} paths but columns of {[len(v) for v in lists]} values")
            kinds, reasons = [None] * len(names), [None] * len(names)
            for i, (kind, reason) in bad.items():
                kinds[int(i)], reasons[int(i)] = kind, reason
            return dict(zip(names, map(Verdict, *lists, kinds, reasons)))
        except (OSError, EOFError, zlib.error, ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
            # gzip raises BadGzipFile (an OSError), EOFError or zlib.error; json ValueError; a wrong shape the others.
            log.warning("scan cache %s cannot be read (%s: %s): every file is opened again and the cache rewritten",
                        path, type(error).__name__, error)
            self._changed = True
            return {}
