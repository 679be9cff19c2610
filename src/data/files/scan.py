"""Check image files before training: fast header checks, in parallel, and ``bad_files.csv``.

``torchvision.datasets.ImageFolder`` finds a bad file when a worker crashes on it, possibly hours
in. Here every file is opened once before training (header and structure only, no full decode
except for JPEGs without an end marker), unreadable ones are left out and listed with the reason.
"""

from __future__ import annotations

import csv
import errno
import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from src.data.files.listing import PassedOver, relative_posix, walk_images
from src.data.files.image_reader import (
    MAX_IMAGE_PIXELS,
    UNREADABLE_IMAGE_ERRORS,
    fidelity_problem,
    mode_problem,
    open_image,
)
from src.data.files.scan_cache import ScanCache, Verdict
from src.core.atomic_write import atomic_open

log = logging.getLogger(__name__)

JPEG_END = b"\xff\xd9"
JPEG_SUFFIXES = (".jpg", ".jpeg")


@dataclass(frozen=True)
class BadFile:
    """A file left out: ``kind`` groups the summary, ``reason`` is the detail for bad_files.csv.

    ``ignored`` files (hidden, or not an image by name) are noted but never make a run fail.
    """

    path: Path
    kind: str
    reason: str
    ignored: bool = False


def check_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> BadFile | None:
    """Why ``path`` is not a usable image (a :class:`BadFile`), or None when it is one."""
    return inspect_image(path, max_pixels)[1]


def inspect_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[tuple[int, int], BadFile | None]:
    """The pixel size of ``path`` (``(0, 0)`` where the header was not read) and what :func:`check_image` says.

    Header and structure only (``verify``), except where the pixels must be seen: a JPEG without its end
    marker is decoded, and so are 32-bit integer and float images, whose values the reader maps to 8 bits
    only inside a fixed range (:func:`~src.data.files.image_reader.fidelity_problem`)."""
    size = (0, 0)
    try:
        if path.stat().st_size == 0:
            return size, BadFile(path, "empty file", "0 bytes")
        with open_image(path, max_pixels) as image:
            width, height = size = image.size
            if width < 1 or height < 1:
                return size, BadFile(path, "corrupt", f"{width}x{height} pixels")
            mode = image.mode
            image.verify()  # structure and checksums (PNG CRCs), without decoding the pixels
        problem = mode_problem(mode)
        if problem is None and mode in ("I", "F"):
            with open_image(path, max_pixels) as image:
                problem = fidelity_problem(image)
        if problem is not None:
            return size, BadFile(path, "unfaithful", problem)
        if path.suffix.lower() in JPEG_SUFFIXES and not _ends_with(path, JPEG_END):
            # A JPEG cut short has no end marker. Some cameras append data after it, so decode
            # to be sure rather than refuse a good photo.
            with open_image(path, max_pixels) as image:
                image.load()
    except Image.DecompressionBombError as error:
        return size, BadFile(path, "too large", str(error))
    except UnidentifiedImageError as error:
        return size, BadFile(path, "not an image", str(error))
    except UNREADABLE_IMAGE_ERRORS as error:
        if isinstance(error, OSError) and error.errno == errno.ELOOP:
            return size, BadFile(path, "symlink loop", str(error))
        if isinstance(error, OSError) and error.errno == errno.ENOENT:
            return size, BadFile(path, "missing", str(error))
        return size, BadFile(path, "truncated or corrupt", f"{type(error).__name__}: {error}")
    return size, None


def _stat(path: Path) -> os.stat_result | None:
    """``path``'s stat, or None where it cannot be read (the check then says why)."""
    try:
        return path.stat()
    except OSError:
        return None


def _ends_with(path: Path, marker: bytes) -> bool:
    with path.open("rb") as f:
        f.seek(-len(marker), os.SEEK_END)
        return f.read() == marker


def unlisted_files(folder: Path) -> list[BadFile]:
    """Files below ``folder`` that :func:`list_images` passes over, with the reason (for the report)."""
    return [BadFile(*passed) for passed in walk_images(folder)[1]]


@dataclass
class FileScan:
    """Checks image files in ``workers`` threads (PIL releases the GIL while reading) and keeps the bad ones.

    With ``cache`` (:class:`~src.data.files.scan_cache.ScanCache`), a file whose size and modification
    time are those of a cached verdict is not opened; :meth:`save_cache` keeps the new verdicts.
    ``opened`` and ``from_cache`` count the files of each kind (the log's summary says them).
    """

    max_pixels: int = MAX_IMAGE_PIXELS
    workers: int = 8
    bad: list[BadFile] = field(default_factory=list)
    kept: int = 0
    cache: ScanCache | None = None
    opened: int = 0
    from_cache: int = 0

    def keep_readable(self, paths: Sequence[Path]) -> list[Path]:
        """``paths`` without the unreadable files, which are recorded in :attr:`bad`."""
        results = self._verdicts(list(paths))
        self.bad += [r for r in results if r is not None]
        readable = [p for p, r in zip(paths, results) if r is None]
        self.kept += len(readable)
        return readable

    def _verdicts(self, paths: list[Path]) -> list[BadFile | None]:
        # stat() in this thread: a pool's per-item cost (~20 us) is ten times a stat's, and most files are cached.
        stats = [_stat(p) for p in paths] if self.cache is not None else [None] * len(paths)
        results: list[BadFile | None] = [None] * len(paths)
        to_open = []
        for i, (path, stat) in enumerate(zip(paths, stats)):
            cached = self.cache.lookup(path, stat) if stat is not None else None
            if cached is None:
                to_open.append(i)
            elif cached.bad_kind is not None:
                results[i] = BadFile(path, cached.bad_kind, cached.bad_reason or "")
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            found = list(pool.map(lambda i: inspect_image(paths[i], self.max_pixels), to_open))
        for i, ((width, height), bad) in zip(to_open, found):
            results[i] = bad
            if stats[i] is not None:  # the size and mtime from before the file was opened: a change since is seen
                self.cache.record(paths[i], Verdict(stats[i].st_size, stats[i].st_mtime_ns, width, height,
                                                    bad.kind if bad else None, bad.reason if bad else None))
        self.opened += len(to_open)
        self.from_cache += len(paths) - len(to_open)
        return results

    def save_cache(self) -> None:
        if self.cache is not None:
            self.cache.save()

    def note_unlisted(self, folder: Path) -> None:
        self.bad += unlisted_files(folder)

    def note_passed_over(self, passed_over: Sequence[PassedOver]) -> None:
        """Record what a listing (:func:`~src.data.files.listing.walk_images`) passed over."""
        self.bad += [BadFile(*passed) for passed in passed_over]

    @property
    def unreadable(self) -> list[BadFile]:
        return [b for b in self.bad if not b.ignored]

    def summary(self) -> str:
        """One line: how many files were left out, and why."""
        counts = Counter(b.kind for b in self.unreadable)
        ignored = Counter(b.kind for b in self.bad if b.ignored)
        parts = [f"kept {self.kept} image(s), skipped {sum(counts.values())} unreadable file(s)"]
        if counts:
            parts[0] += " (" + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) + ")"
        if ignored:
            parts.append("ignored " + ", ".join(f"{n} {kind}" for kind, n in sorted(ignored.items())))
        if self.cache is not None:
            parts.append(f"opened {self.opened} file(s), {self.from_cache} verdict(s) from the scan cache")
        return "; ".join(parts)

    def write_csv(self, path: Path, root: Path) -> None:
        """``path,reason`` rows, paths relative to ``root``; written atomically."""
        with atomic_open(path, newline="") as f:
            writer = csv.writer(f, lineterminator="\n")  # the csv module's default is \r\n
            writer.writerow(["path", "reason"])
            for bad in sorted(self.bad, key=lambda b: str(b.path)):
                writer.writerow([relative_posix(bad.path, root), f"{bad.kind}: {bad.reason}"])
