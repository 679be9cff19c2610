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

from src.data.image_files import MAX_IMAGE_PIXELS, UNREADABLE_IMAGE_ERRORS, is_image_file, relative_posix
from src.runs.atomic_write import atomic_open

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
    try:
        if path.stat().st_size == 0:
            return BadFile(path, "empty file", "0 bytes")
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                return BadFile(path, "too large", f"{width}x{height} = {width * height / 1e6:.0f} megapixels, over the "
                               f"decompression-bomb limit of {max_pixels / 1e6:.0f} (data.max_image_pixels)")
            if width < 1 or height < 1:
                return BadFile(path, "corrupt", f"{width}x{height} pixels")
            image.verify()  # structure and checksums (PNG CRCs), without decoding the pixels
        if path.suffix.lower() in JPEG_SUFFIXES and not _ends_with(path, JPEG_END):
            # A JPEG cut short has no end marker. Some cameras append data after it, so decode
            # to be sure rather than refuse a good photo.
            with Image.open(path) as image:
                image.load()
    except Image.DecompressionBombError as error:
        return BadFile(path, "too large", str(error))
    except UnidentifiedImageError as error:
        return BadFile(path, "not an image", str(error))
    except UNREADABLE_IMAGE_ERRORS as error:
        if isinstance(error, OSError) and error.errno == errno.ELOOP:
            return BadFile(path, "symlink loop", str(error))
        if isinstance(error, OSError) and error.errno == errno.ENOENT:
            return BadFile(path, "missing", str(error))
        return BadFile(path, "truncated or corrupt", f"{type(error).__name__}: {error}")
    return None


def _ends_with(path: Path, marker: bytes) -> bool:
    with path.open("rb") as f:
        f.seek(-len(marker), os.SEEK_END)
        return f.read() == marker


def unlisted_files(folder: Path) -> list[BadFile]:
    """Files below ``folder`` that :func:`list_images` passes over, with the reason (for the report)."""
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).parts
        if any(part.startswith(".") for part in relative):
            if not any(part.startswith(".") for part in relative[:-1]):  # the hidden item, not its contents
                found.append(BadFile(path, "hidden", "hidden file or folder (name starts with '.')", ignored=True))
        elif path.is_symlink() and not path.exists():
            try:
                path.stat()
            except OSError as error:
                kind = "symlink loop" if error.errno == errno.ELOOP else "broken symlink"
                found.append(BadFile(path, kind, f"points to {os.readlink(path)!r}: {error.strerror}"))
        elif path.is_symlink() and path.is_dir():
            found.append(BadFile(path, "symlinked folder", "not followed (a link to a folder may loop)", ignored=True))
        elif path.is_file() and not is_image_file(path):
            found.append(BadFile(path, "not an image file name", f"extension {path.suffix or '(none)'!r} is not an "
                                 "image extension", ignored=True))
    return found


@dataclass
class FileScan:
    """Checks image files in ``workers`` threads (PIL releases the GIL while reading) and keeps the bad ones."""

    max_pixels: int = MAX_IMAGE_PIXELS
    workers: int = 8
    bad: list[BadFile] = field(default_factory=list)
    kept: int = 0

    def keep_readable(self, paths: Sequence[Path]) -> list[Path]:
        """``paths`` without the unreadable files, which are recorded in :attr:`bad`."""
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            results = list(pool.map(lambda p: check_image(p, self.max_pixels), paths))
        self.bad += [r for r in results if r is not None]
        readable = [p for p, r in zip(paths, results) if r is None]
        self.kept += len(readable)
        return readable

    def note_unlisted(self, folder: Path) -> None:
        self.bad += unlisted_files(folder)

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
        return "; ".join(parts)

    def write_csv(self, path: Path, root: Path) -> None:
        """``path,reason`` rows, paths relative to ``root``; written atomically."""
        with atomic_open(path, newline="") as f:
            writer = csv.writer(f, lineterminator="\n")  # the csv module's default is \r\n
            writer.writerow(["path", "reason"])
            for bad in sorted(self.bad, key=lambda b: str(b.path)):
                writer.writerow([relative_posix(bad.path, root), f"{bad.kind}: {bad.reason}"])
