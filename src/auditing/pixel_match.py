"""Whether two images show the same photo, by their pixels: the check that confirms an embedding's near pair.

An embedding says two photos look alike; in a folder of one kind of product (every trouser against a
white background, shot the same way) distinct photos are as close as copies. The pixels of a copy still
agree in the details, once it is brought back to the original's frame: a resized or re-compressed copy
differs only by resampling and compression noise, a slightly cropped one also by a zoom and a shift.

Each image keeps a :data:`SIDE` x :data:`SIDE` grey thumbnail (made in the pass that embeds it, cached
with the embeddings: 1 KB an image). Two thumbnails are compared by the correlation of their Laplacians
(the details: edges, prints, seams; the silhouette a whole class shares mostly cancels) after the best
of :data:`ALIGNMENTS`, small zooms and shifts of one onto the other, either way round. A copy scores
near 1; two photos of one product type score far lower (docs/audit.md has the figures).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

SIDE = 32
# Zooms of up to 1.24 (a crop of about a tenth off each side) and shifts of up to 2/32 of the side (a crop
# off one side), applied to one image to bring it onto the other's frame.
ZOOMS = (1.0, 1.06, 1.12, 1.18, 1.24)
SHIFTS = (-2, -1, 0, 1, 2)
ALIGNMENTS = tuple(itertools.product(ZOOMS, SHIFTS, SHIFTS))
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def grey_thumbnail(image: Image.Image) -> np.ndarray:
    """The image in grey, squeezed to ``SIDE`` x ``SIDE`` (uint8): copies keep their aspect ratio, so they
    squeeze alike."""
    return np.array(image.convert("L").resize((SIDE, SIDE), Image.Resampling.BILINEAR), dtype=np.uint8)


def _details(thumbnails: torch.Tensor) -> torch.Tensor:
    """The Laplacian of (P, 1, SIDE, SIDE) thumbnails, flattened and normalised to zero mean and unit length."""
    edges = F.conv2d(thumbnails, _LAPLACIAN, padding=1).flatten(1)
    edges = edges - edges.mean(1, keepdim=True)
    return edges / edges.norm(dim=1, keepdim=True).clamp_min(1e-6)


def _aligned(moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """The best correlation over :data:`ALIGNMENTS` of ``moving``'s details warped onto ``fixed``'s, per pair."""
    pairs, count = len(moving), len(ALIGNMENTS)
    # affine_grid maps output to input coordinates: a scale of 1/zoom samples the centre, i.e. zooms in.
    theta = torch.tensor([[[1 / z, 0.0, 2 * dx / SIDE], [0.0, 1 / z, 2 * dy / SIDE]] for z, dx, dy in ALIGNMENTS])
    grid = F.affine_grid(theta.repeat(pairs, 1, 1), [pairs * count, 1, SIDE, SIDE], align_corners=False)
    warped = F.grid_sample(moving.repeat_interleave(count, 0), grid, mode="bilinear", padding_mode="border",
                           align_corners=False)
    return (_details(warped).view(pairs, count, -1) * _details(fixed)[:, None]).sum(-1).amax(1)


def pixel_agreement(thumbnails: np.ndarray, pairs: Sequence[tuple[int, int]], *, chunk: int = 128) -> np.ndarray:
    """For each pair (i, j) of rows of ``thumbnails`` (N, SIDE, SIDE), the correlation of their details at
    the best alignment, -1 .. 1 (1: the same pixels). ``chunk`` pairs at a time: memory
    chunk x len(ALIGNMENTS) thumbnails, whatever the number of pairs."""
    scores = np.zeros(len(pairs), np.float32)
    for start in range(0, len(pairs), chunk):
        rows = np.asarray(pairs[start:start + chunk], dtype=np.int64).reshape(-1, 2)
        first = torch.from_numpy(thumbnails[rows[:, 0]].astype(np.float32) / 255)[:, None]
        second = torch.from_numpy(thumbnails[rows[:, 1]].astype(np.float32) / 255)[:, None]
        with torch.no_grad():  # either may be the cropped one: zoom each onto the other
            best = torch.maximum(_aligned(second, first), _aligned(first, second))
        scores[start:start + len(rows)] = best.numpy()
    return scores
