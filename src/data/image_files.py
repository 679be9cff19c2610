"""Finding images in a folder of class folders, and reading one as an RGB image."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


def is_image_file(path: Path) -> bool:
    """An image by name: a known extension in any case, and not hidden (``.DS_Store``, ``._x.jpg``)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files below ``folder`` (recursively), sorted so every file system lists them alike."""
    return sorted(
        p
        for p in folder.rglob("*")
        if is_image_file(p) and p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def scan_class_folders(root: Path) -> tuple[list[str], list[Sample]]:
    """Classes (sorted folder names) and samples of a folder of class folders.

    Empty class folders are left out with a warning. Raises when nothing usable is there.
    """
    if not root.exists():
        raise FileNotFoundError(f"data.root={str(root)!r} does not exist; point data.root at a folder of class folders")
    if not root.is_dir():
        raise NotADirectoryError(
            f"data.root={str(root)!r} is a file; point data.root at a folder with one subfolder per class"
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(
            f"data.root={str(root)!r} has no class folders; expected {root}/<class name>/<image files>"
        )
    images_by_class = {folder.name: list_images(folder) for folder in folders}
    empty = [name for name, images in images_by_class.items() if not images]
    if empty:
        log.warning("left out %d class folder(s) with no images under %s: %s", len(empty), root, ", ".join(empty))
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


def load_rgb(path: Path) -> Image.Image:
    """Open an image as RGB: EXIF orientation applied; grayscale, palette, RGBA, CMYK converted."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            # Composite on white: transparent areas of product photos are background, not black.
            rgba = image.convert("RGBA")
            background = Image.new("RGB", rgba.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.getchannel("A"))
            return background
        return image.convert("RGB")
