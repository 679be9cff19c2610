"""``data.decode_on=device``: the loader workers read JPEG files as bytes; the batch is decoded on the GPU.

nvJPEG (``torchvision.io.decode_jpeg(..., device="cuda")``) decodes a list of JPEGs in one call,
so the workers do no decoding at all for JPEG folders, only file reads. Files that are not JPEG
(PNG, WebP ...), and JPEGs that nvJPEG would not read as :mod:`src.data.files.image_reader` does (an embedded
ICC colour profile, CMYK), are decoded, resized and cropped by the workers as with ``decode_on=workers``,
one file at a time, and counted (:attr:`DeviceDecodeReader.fallbacks`, reported in the log). A batch
is then a list mixing 1-D byte tensors (JPEG files) and uint8 (3, size, size) images; the
DataModule's ``on_before_batch_transfer`` turns it into one uint8 batch on the GPU with
:func:`decode_batch`, and ``on_after_batch_transfer`` augments it as for ``augment.on=device``.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from src.data.files.image_reader import MAX_IMAGE_PIXELS, load_rgb

log = logging.getLogger(__name__)

JPEG_MAGIC = b"\xff\xd8\xff"  # SOI marker and the first segment's marker: every JPEG starts so
ICC_SEGMENT = b"ICC_PROFILE\x00"  # an APP2 segment holding (part of) an embedded colour profile
# Start-of-frame markers (C0-CF but DHT C4, JPG C8, DAC CC): their segment gives the component count.
START_OF_FRAME = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
START_OF_SCAN = 0xDA


def decodes_on_device(data: bytes) -> bool:
    """Whether nvJPEG gives this JPEG's pixels as :func:`~src.data.files.image_reader.load_rgb` does: one or three
    components (gray or YCbCr) and no ICC profile (nvJPEG neither converts CMYK faithfully nor applies a
    profile). Reads the segment headers only, up to the first scan."""
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        length = int.from_bytes(data[position + 2:position + 4], "big")
        segment = data[position + 4:position + 2 + length]
        if marker == 0xE2 and segment.startswith(ICC_SEGMENT):
            return False
        if marker in START_OF_FRAME:
            return len(segment) > 5 and segment[5] in (1, 3)
        if marker == START_OF_SCAN:
            return False
        position += 2 + length
    return False  # no frame header found: let the CPU decoder say what is wrong


class DeviceDecodeReader:
    """Read one file for ``decode_on=device``: a JPEG that :func:`decodes_on_device` as its bytes (1-D
    uint8 tensor), anything else decoded with :func:`~src.data.files.image_reader.load_rgb` (as the workers path
    does). ``jpegs`` and ``fallbacks`` count the two across worker processes (shared memory)."""

    def __init__(self, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
        self.max_pixels = max_pixels
        self.jpegs = multiprocessing.Value("i", 0)
        self.fallbacks = multiprocessing.Value("i", 0)

    def __call__(self, path: Path, min_size: int | None = None) -> torch.Tensor | Image.Image:
        data = Path(path).read_bytes()
        if data[:3] == JPEG_MAGIC and decodes_on_device(data):
            with self.jpegs.get_lock():
                self.jpegs.value += 1
            return torch.frombuffer(bytearray(data), dtype=torch.uint8)
        with self.fallbacks.get_lock():
            self.fallbacks.value += 1
        return load_rgb(io.BytesIO(data), max_pixels=self.max_pixels, min_size=min_size)  # the bytes read above

    def summary(self) -> str | None:
        """One log line when some files were decoded by the workers, else None."""
        if not self.fallbacks.value:
            return None
        return (f"data.decode_on=device: {self.fallbacks.value} of {self.fallbacks.value + self.jpegs.value} files read "
                "were decoded by the loader workers: not JPEG, or a JPEG with a colour profile or CMYK pixels, "
                "which nvJPEG does not convert to sRGB")


class CropUnlessEncoded:
    """The dataset transform of ``decode_on=device``: JPEG bytes pass through (decoded later on the
    GPU), a decoded image gets ``crop`` (the uint8 resize and crop of ``augment.on=device``)."""

    def __init__(self, crop: Callable) -> None:
        self.crop = crop
        self.size = getattr(crop, "size", None)

    def __call__(self, item: torch.Tensor | Image.Image) -> torch.Tensor:
        return item if isinstance(item, torch.Tensor) and item.dim() == 1 else self.crop(item)


def collate_encoded(batch: Sequence[tuple[torch.Tensor, Any]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(items, labels): the items stay a list (bytes of different lengths and decoded images)."""
    items, labels = zip(*batch)
    return list(items), torch.utils.data.default_collate(list(labels))


def decode_batch(items: Sequence[torch.Tensor], crop: Callable[[torch.Tensor], torch.Tensor],
                 device: torch.device | str) -> torch.Tensor:
    """One uint8 (B, 3, size, size) batch on ``device`` from :func:`collate_encoded`'s items: the JPEG
    bytes decoded in one ``decode_jpeg`` call on ``device`` (EXIF orientation applied, as ``load_rgb``
    does) and cropped with ``crop``; decoded items moved there as they are."""
    from torchvision.io import ImageReadMode, decode_jpeg  # only this path needs torchvision's codecs

    encoded = [i for i, item in enumerate(items) if item.dim() == 1]
    out: list[torch.Tensor | None] = [None] * len(items)
    if encoded:
        decoded = decode_jpeg([items[i] for i in encoded], mode=ImageReadMode.RGB, device=device,
                              apply_exif_orientation=True)
        for i, image in zip(encoded, decoded):
            out[i] = crop(image)
    for i, item in enumerate(items):
        if out[i] is None:
            out[i] = item.to(device, non_blocking=True)
    return torch.stack(out)
