"""Finding images in a folder of class folders (reading one is :mod:`src.data.files.image_reader`)."""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.core.problems import Problem

if TYPE_CHECKING:
    from src.data.files.scan import FileScan

log = logging.getLogger(__name__)

# .heic/.heif are read with the heif extra (src/data/files/image_reader.py); without it the scan reports them with the fix.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".avif", ".heic",
                              ".heif"})


@dataclass(frozen=True)
class Sample:
    """An image and its label: a class index, or for multi-label a sorted tuple of class indices."""

    path: Path
    label: int | tuple[int, ...]


def relative_posix(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with ``/`` separators, or whole where it is not below ``root``.

    On the strings (as ``Path.relative_to``, lexically): pathlib's relative_to costs ~30 us a call,
    seconds for split.csv's rows of 200,000 images.
    """
    name, base = os.fspath(path), os.fspath(root)
    if name == base:
        return "."
    prefix = os.path.join(base, "")
    relative = name[len(prefix):] if name.startswith(prefix) else name
    return relative if os.sep == "/" else relative.replace(os.sep, "/")


def data_root_problems(root: Any, required: bool = True, key: str = "data.root") -> list[Problem]:
    """``data.root`` must be an existing folder (``required=False``: or null, for evaluate's run split)."""
    if root is None:
        return [Problem(key, root, "a folder of class folders", f"set {key}=/path/to/images")] if required else []
    path = Path(str(root)).expanduser()
    if path.is_file():
        return [Problem(key, str(root), "a folder with one subfolder per class, not a file",
                        f"point {key} at the folder that holds {path.name}'s class folders")]
    if not path.exists():
        return [Problem(key, str(root), "an existing folder", f"check the path, or create {path}/<class>/<images>")]
    return []


def is_image_file(path: Path) -> bool:
    """An image by name: a known extension in any case, and not hidden (``.DS_Store``, ``._x.jpg``)."""
    return is_image_name(path.name)


def is_image_name(name: str) -> bool:
    """:func:`is_image_file` of a file name (a string: no Path to build per file in a listing)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not name.startswith(".")


# A file or folder below a data folder that is not listed as an image: (path, kind, reason, ignored),
# made a src.data.files.scan.BadFile by the scan (which imports this module).
PassedOver = tuple[Path, str, str, bool]


def list_images(folder: Path) -> list[Path]:
    """Image files below ``folder`` (recursively), sorted so every file system lists them alike.

    Symlinked files are followed; symlinked folders are not, so a symlink loop cannot make the
    listing run forever. Hidden files and folders are left out.
    """
    return walk_images(folder)[0]


def walk_images(folder: Path) -> tuple[list[Path], list[PassedOver]]:
    """The images below ``folder`` (as :func:`list_images`) and what the listing passed over, with why.

    One ``os.scandir`` walk on strings: pathlib's ``rglob``, ``relative_to`` and ``Path`` sorting
    cost ~100 us per file (about a minute for 200,000 files on 2 loaded cores); this is ~10x less.
    The order is pathlib's (by path components), so the listing is the one ``sorted(rglob)`` gave.
    """
    images: list[tuple[tuple[str, ...], str]] = []
    passed: list[tuple[tuple[str, ...], PassedOver]] = []
    pending = [(os.fspath(folder), ())]
    while pending:
        directory, parts = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                key = (*parts, entry.name)
                if entry.name.startswith("."):  # the hidden item is noted; nothing below it is listed
                    passed.append((key, (Path(entry.path), "hidden", "hidden file or folder (name starts with '.')", True)))
                elif entry.is_symlink():
                    try:
                        target = os.stat(entry.path)
                    except OSError as error:
                        kind = "symlink loop" if error.errno == errno.ELOOP else "broken symlink"
                        passed.append((key, (Path(entry.path), kind,
                                             f"points to {os.readlink(entry.path)!r}: {error.strerror}", False)))
                        continue
                    if stat.S_ISDIR(target.st_mode):
                        passed.append((key, (Path(entry.path), "symlinked folder",
                                             "not followed (a link to a folder may loop)", True)))
                    elif stat.S_ISREG(target.st_mode):
                        _file_entry(entry, key, images, passed)
                elif entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, key))
                elif entry.is_file(follow_symlinks=False):
                    _file_entry(entry, key, images, passed)
    images.sort(key=lambda item: item[0])
    passed.sort(key=lambda item: item[0])
    return [Path(path) for _, path in images], [item for _, item in passed]


def _file_entry(entry: os.DirEntry, key: tuple[str, ...], images: list, passed: list) -> None:
    if is_image_name(entry.name):
        images.append((key, entry.path))
    else:
        suffix = os.path.splitext(entry.name)[1].rstrip(".")  # Path.suffix of "name." is ""
        passed.append((key, (Path(entry.path), "not an image file name",
                             f"extension {suffix or '(none)'!r} is not an image extension", True)))


def class_folders(root: Path) -> list[Path]:
    """The class folders of ``root``: its subfolders but hidden ones, sorted (the class order everywhere)."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_class_folders(root: Path, scan: FileScan | None = None) -> tuple[list[str], list[Sample]]:
    """Classes (sorted folder names) and samples of a folder of class folders.

    With ``scan``, every image is checked first and unreadable ones are left out (and recorded in
    ``scan.bad``). Empty class folders are left out with a warning. Raises when nothing usable is there.
    """
    if not root.exists():
        raise FileNotFoundError(f"data.root={str(root)!r} does not exist; point data.root at a folder of class folders")
    if not root.is_dir():
        raise NotADirectoryError(
            f"data.root={str(root)!r} is a file; point data.root at a folder with one subfolder per class"
        )
    folders = class_folders(root)
    if not folders:
        raise ValueError(
            f"data.root={str(root)!r} has no class folders; expected {root}/<class name>/<image files>"
        )
    listings = {folder.name: walk_images(folder) for folder in folders}
    images_by_class = {name: images for name, (images, _) in listings.items()}
    if scan is not None:
        for _, passed_over in listings.values():
            scan.note_passed_over(passed_over)
        readable = set(scan.keep_readable([p for images in images_by_class.values() for p in images]))
        images_by_class = {name: [p for p in images if p in readable] for name, images in images_by_class.items()}
    empty = [name for name, images in images_by_class.items() if not images]
    if empty:
        log.warning("left out %d class folder(s) with no readable images under %s: %s", len(empty), root, ", ".join(empty))
    classes = [name for name, images in images_by_class.items() if images]
    if not classes:
        raise ValueError(
            f"no images under data.root={str(root)!r}; expected files ending in "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))} inside its class folders"
        )
    if len(classes) < 2:
        raise ValueError(
            f"data.root={str(root)!r} has only one class with images ({classes[0]!r}); a classifier needs "
            "at least two class folders"
        )
    samples = [Sample(path, label) for label, name in enumerate(classes) for path in images_by_class[name]]
    return classes, samples
