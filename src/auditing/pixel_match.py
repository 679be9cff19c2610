"""Whether two images show the same photo, by their pixels: the check that confirms an embedding's near pair.

An embedding says two photos look alike; in a folder of one kind of product (every trouser against a
white background, shot the same way) distinct photos are as close as copies. The pixels of a copy still
agree in the details, once it is brought back to the original's frame: a resized or re-compressed copy
differs only by resampling and compression noise, a slightly cropped one also by a zoom and a shift.

Each image keeps a :data:`SIDE` x :data:`SIDE` grey thumbnail (made in the pass that embeds it, cached
with the embeddings: 1 KB an image). Two thumbnails are compared by the correlation of their Laplacians
of Gaussian (the details: edges, prints, seams; the flat areas a whole class shares drop out) at the best of
small zooms and shifts of one onto the other (:data:`ZOOMS`, :data:`SHIFT`), either way round. A copy scores
near 1; two photos of one product type score far lower (docs/audit.md has the figures).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from src.auditing.neighbours import nearest_neighbours

SIDE = 32
# Zooms of up to 1.24 (a crop of about a tenth off each side) applied to one image, and shifts of up to
# SHIFT pixels (a crop off one side): the centre (SIDE - 2 SHIFT) square of the other image is compared
# with each window of that size of the zoomed one.
ZOOMS = (1.0, 1.06, 1.12, 1.18, 1.24)
SHIFT = 1
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
# A Gaussian of sigma 1 pixel before the Laplacian (a Laplacian of Gaussian, Marr and Hildreth): the plain
# Laplacian also sees the resampling noise of a resized or cropped copy, which cost copies more agreement
# than look-alikes (measured: docs/audit.md).
_GAUSSIAN = torch.exp(-torch.arange(-2.0, 3.0).square() / 2)
_GAUSSIAN = (torch.outer(_GAUSSIAN, _GAUSSIAN) / _GAUSSIAN.sum().square()).view(1, 1, 5, 5)
# The thumbnails' own neighbour search (for copies an embedding does not put side by side: a body trained
# at a small size moves a lot under a zoom): SEARCH_SIDE x SEARCH_SIDE area-averaged thumbnails, queried
# zoomed by each of SEARCH_ZOOMS (a cropped copy is its original zoomed in).
SEARCH_SIDE = 16
SEARCH_ZOOMS = (1.0, 1.1, 1.2)


def grey_thumbnail(image: Image.Image) -> np.ndarray:
    """The image in grey, squeezed to ``SIDE`` x ``SIDE`` (uint8): copies keep their aspect ratio, so they
    squeeze alike."""
    return np.array(image.convert("L").resize((SIDE, SIDE), Image.Resampling.BILINEAR), dtype=np.uint8)


def _normalised(rows: torch.Tensor) -> torch.Tensor:
    rows = rows - rows.mean(-1, keepdim=True)
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def _details(thumbnails: torch.Tensor) -> torch.Tensor:
    """The Laplacian of Gaussian of (P, 1, SIDE, SIDE) thumbnails: (P, SIDE, SIDE)."""
    return F.conv2d(F.conv2d(thumbnails, _GAUSSIAN, padding=2), _LAPLACIAN, padding=1)[:, 0]


def _zoomed(thumbnails: torch.Tensor, zooms: Sequence[float]) -> torch.Tensor:
    """Each of (P, 1, SIDE, SIDE) thumbnails zoomed in by each of ``zooms`` about its centre: (P len(zooms), 1,
    SIDE, SIDE), a thumbnail's zooms together."""
    # affine_grid maps output to input coordinates: a scale of 1/zoom samples the centre, i.e. zooms in.
    theta = torch.tensor([[[1 / z, 0.0, 0.0], [0.0, 1 / z, 0.0]] for z in zooms]).repeat(len(thumbnails), 1, 1)
    grid = F.affine_grid(theta, [len(theta), 1, SIDE, SIDE], align_corners=False)
    return F.grid_sample(thumbnails.repeat_interleave(len(zooms), 0), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def search_vectors(thumbnails: np.ndarray, zoom: float = 1.0, *, chunk: int = 4096) -> np.ndarray:
    """(N, SEARCH_SIDE^2) zero-mean unit vectors of the thumbnails zoomed by ``zoom``, for a neighbour search."""
    out = np.zeros((len(thumbnails), SEARCH_SIDE * SEARCH_SIDE), np.float32)
    for start in range(0, len(thumbnails), chunk):
        batch = torch.from_numpy(thumbnails[start:start + chunk].astype(np.float32) / 255)[:, None]
        small = F.interpolate(_zoomed(batch, [zoom]), size=(SEARCH_SIDE, SEARCH_SIDE), mode="area").flatten(1)
        out[start:start + len(batch)] = _normalised(small).numpy()
    return out


def pixel_neighbours(thumbnails: np.ndarray, k: int, *, block: int, device) -> set[tuple[int, int]]:
    """(i, j) with i < j for each image and its ``k`` nearest thumbnails, each zoom of :data:`SEARCH_ZOOMS`
    of it asking (chunked: memory linear in the image count, as the embeddings' search)."""
    plain = search_vectors(thumbnails)
    pairs: set[tuple[int, int]] = set()
    for zoom in SEARCH_ZOOMS:
        _, found = nearest_neighbours(plain, k, block=block, device=device,
                                      queries=plain if zoom == 1.0 else search_vectors(thumbnails, zoom))
        pairs.update((min(i, int(j)), max(i, int(j))) for i, row in enumerate(found) for j in row)
    return pairs


def _aligned(moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """The best correlation, over :data:`ZOOMS` and shifts, of ``moving``'s details onto ``fixed``'s, per pair."""
    pairs, zooms, inner = len(moving), len(ZOOMS), SIDE - 2 * SHIFT
    details = _details(_zoomed(moving, ZOOMS))[:, None]  # (P Z, 1, SIDE, SIDE)
    centre = _normalised(_details(fixed)[:, SHIFT:SIDE - SHIFT, SHIFT:SIDE - SHIFT].reshape(pairs, -1))
    # The centre has zero mean, so a window's correlation with it is its plain dot product with the centre (a
    # cross-correlation: one grouped convolution) over the window's spread (from sums over the window).
    kernels = centre.repeat_interleave(zooms, 0).view(pairs * zooms, 1, inner, inner)
    dots = F.conv2d(details.view(1, pairs * zooms, SIDE, SIDE), kernels, groups=pairs * zooms)[0]
    area = inner * inner
    sums = F.avg_pool2d(details, inner, stride=1)[:, 0] * area
    squares = F.avg_pool2d(details.square(), inner, stride=1)[:, 0] * area
    spread = (squares - sums.square() / area).clamp_min(1e-12).sqrt()
    return (dots / spread).view(pairs, -1).amax(1)


def pixel_agreement(thumbnails: np.ndarray, pairs: Sequence[tuple[int, int]], *, chunk: int = 512) -> np.ndarray:
    """For each pair (i, j) of rows of ``thumbnails`` (N, SIDE, SIDE), the correlation of their details at
    the best alignment, -1 .. 1 (1: the same pixels). ``chunk`` pairs at a time: memory about
    chunk x len(ZOOMS) x (2 SHIFT + 1)^2 thumbnails, whatever the number of pairs."""
    scores = np.zeros(len(pairs), np.float32)
    for start in range(0, len(pairs), chunk):
        rows = np.asarray(pairs[start:start + chunk], dtype=np.int64).reshape(-1, 2)
        first = torch.from_numpy(thumbnails[rows[:, 0]].astype(np.float32) / 255)[:, None]
        second = torch.from_numpy(thumbnails[rows[:, 1]].astype(np.float32) / 255)[:, None]
        with torch.no_grad():  # either may be the cropped one: zoom each onto the other
            best = torch.maximum(_aligned(second, first), _aligned(first, second))
        scores[start:start + len(rows)] = best.numpy()
    return scores
