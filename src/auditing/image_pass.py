"""Every image read once: its embedding (the body, eval transform), content hash, pixel properties and
grey thumbnail (:mod:`src.auditing.pixel_match`).

Batched through a DataLoader (``data.num_workers`` processes decode), on the GPU when there is one,
with a progress bar. A file that cannot be read any more (changed since the scan) is reported, not fatal.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from torch.utils.data import DataLoader, Dataset

from src.auditing.body import Body, embed_batch
from src.auditing.image_properties import PROPERTIES, image_properties
from src.auditing.pixel_match import SIDE, grey_thumbnail
from src.data.files.image_reader import UNREADABLE_IMAGE_ERRORS, load_rgb
from src.data.files.scan import BadFile

log = logging.getLogger(__name__)


@dataclass
class ImageFacts:
    """What the pass found, one row per path: embeddings (N, D), hex digests, properties (N, len(PROPERTIES)),
    grey thumbnails (N, SIDE, SIDE) uint8."""

    embeddings: np.ndarray
    digests: list[str]
    properties: np.ndarray
    thumbnails: np.ndarray


class _AuditImages(Dataset):
    def __init__(self, paths: Sequence[Path], transform, max_pixels: int) -> None:
        self.paths, self.transform, self.max_pixels = list(paths), transform, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            data = path.read_bytes()
            image = load_rgb(io.BytesIO(data), self.max_pixels)
        except UNREADABLE_IMAGE_ERRORS as error:
            return (torch.zeros(0), torch.zeros(len(PROPERTIES)), torch.zeros((SIDE, SIDE), dtype=torch.uint8), "",
                    f"{type(error).__name__}: {error}")
        # blake2b: a content hash as sure as sha256 for finding copies, and faster in pure CPU time.
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        return (self.transform(image), torch.from_numpy(image_properties(image)),
                torch.from_numpy(grey_thumbnail(image)), digest, "")


def _collate(items):
    good = [i for i in items if not i[4]]
    images = torch.stack([i[0] for i in good]) if good else torch.zeros(0)
    return (images, torch.stack([i[1] for i in items]), torch.stack([i[2] for i in items]), [i[3] for i in items],
            [i[4] for i in items])


def read_images(paths: Sequence[Path], body: Body, *, batch_size: int, num_workers: int, device: torch.device,
                max_pixels: int) -> tuple[ImageFacts, list[BadFile]]:
    """Embed, hash and measure ``paths``; the files that failed are returned apart (their rows hold zeros)."""
    loader = DataLoader(_AuditImages(paths, body.transform, max_pixels), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=_collate)
    net = body.net.to(device)
    embeddings, digests, properties, thumbnails, failed = [], [], [], [], []
    width = None
    with Progress(transient=True) as bar:
        task = bar.add_task(f"embedding {len(paths)} images", total=len(loader))
        for images, props, thumbs, batch_digests, errors in loader:
            good = [i for i, e in enumerate(errors) if not e]
            if good:
                batch = embed_batch(net, images.to(device)).cpu().numpy()
                width = batch.shape[1]
            rows = [None] * len(errors)
            for row, i in zip(batch if good else [], good):
                rows[i] = row
            start = len(digests)
            failed += [BadFile(paths[start + i], "truncated or corrupt", e) for i, e in enumerate(errors) if e]
            embeddings += rows
            digests += batch_digests
            properties.append(props.numpy())
            thumbnails.append(thumbs.numpy())
            bar.advance(task)
    width = width or 1
    matrix = np.stack([r if r is not None else np.zeros(width, np.float32) for r in embeddings]) if paths else (
        np.zeros((0, width), np.float32))
    return ImageFacts(matrix.astype(np.float32), digests,
                      np.concatenate(properties) if properties else np.zeros((0, len(PROPERTIES)), np.float32),
                      np.concatenate(thumbnails) if thumbnails else np.zeros((0, SIDE, SIDE), np.uint8)), failed
