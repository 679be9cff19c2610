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

import functools
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
# A Gaussian of sigma 1 pixel (5 taps) before the Laplacian (a Laplacian of Gaussian, Marr and Hildreth): the
# plain Laplacian also sees the resampling noise of a resized or cropped copy, which cost copies more agreement
# than look-alikes (measured: docs/audit.md). Both are applied with zero padding.
GAUSSIAN_TAPS = torch.exp(-torch.arange(-2.0, 3.0).square() / 2)
GAUSSIAN_TAPS /= GAUSSIAN_TAPS.sum()
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


def _zoom_matrix(zoom: float) -> torch.Tensor:
    """Z (SIDE x SIDE) with Z X Z^T = the thumbnail X zoomed by ``zoom`` as :func:`_zoomed` does (bilinear
    sampling along rows and columns apart: separable). Column b is the zoom of an image that is 1 in column b."""
    basis = torch.zeros(SIDE, 1, SIDE, SIDE)
    basis[torch.arange(SIDE), 0, :, torch.arange(SIDE)] = 1.0
    return _zoomed(basis, [zoom])[:, 0, 0, :].T.contiguous()


@functools.cache
def _detail_matrices() -> tuple[torch.Tensor, torch.Tensor]:
    """(G, A): G X G^T is the Gaussian blur of a thumbnail X (:data:`GAUSSIAN_TAPS` along rows and columns, zero
    padding) and A = D G with D the second difference, so that the Laplacian (the 3 x 3 one: 4 neighbours less
    4 times the pixel) of the blur, the details, is A X G^T + G X A^T."""
    offsets = torch.arange(SIDE)[None, :] - torch.arange(SIDE)[:, None]
    blur = torch.where(offsets.abs() <= 2, GAUSSIAN_TAPS[(offsets + 2).clamp(0, 4)], torch.zeros(()))
    second = -2 * torch.eye(SIDE) + torch.diag(torch.ones(SIDE - 1), 1) + torch.diag(torch.ones(SIDE - 1), -1)
    return blur, second @ blur


@functools.cache
def _zoomed_detail_matrices() -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """For each zoom of :data:`ZOOMS`, (A Z, G Z): the details of the zoomed thumbnail Z X Z^T are
    (A Z) X (G Z)^T + (G Z) X (A Z)^T. Constants of the module, made once."""
    blur, detail = _detail_matrices()
    return tuple((detail @ _zoom_matrix(zoom), blur @ _zoom_matrix(zoom)) for zoom in ZOOMS)


def _alignment_maps(thumbnails: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What :func:`pixel_agreement` compares, per image of (M, SIDE, SIDE) thumbnails, made once however many
    pairs the image is in: the details of each zoom of :data:`ZOOMS` (M, Z, SIDE^2), the spread of each of
    their windows of the inner size (M, Z, W, W = (2 SHIFT + 1)^2 shifts), and the zero-mean unit vector of
    the image's own centre details placed at each shift in a SIDE x SIDE frame (M, W, SIDE^2)."""
    # Zoom, blur and Laplacian are each linear and separable, so a zoom's details are four small matrix
    # products, where grid_sample and two 1-channel convolutions (which oneDNN runs slowly) made the pixel
    # check six times slower (docs/audit.md).
    images, inner, shifts = len(thumbnails), SIDE - 2 * SHIFT, 2 * SHIFT + 1
    blur, detail = _detail_matrices()
    details = torch.stack([first @ thumbnails @ second.T + second @ thumbnails @ first.T
                           for first, second in _zoomed_detail_matrices()], 1)  # (M, Z, SIDE, SIDE)
    window = lambda t: F.avg_pool2d(t.flatten(0, 1)[:, None], inner, stride=1).view(images, len(ZOOMS), -1) * inner ** 2  # noqa: E731
    spread = (window(details.square()) - window(details).square() / inner ** 2).clamp_min(1e-12).sqrt()
    own = detail @ thumbnails @ blur.T + blur @ thumbnails @ detail.T
    centre = _normalised(own[:, SHIFT:SIDE - SHIFT, SHIFT:SIDE - SHIFT].reshape(images, -1)).view(images, inner, inner)
    placed = torch.zeros(images, shifts, shifts, SIDE, SIDE)
    for dy in range(shifts):
        for dx in range(shifts):
            placed[:, dy, dx, dy:dy + inner, dx:dx + inner] = centre
    return details.flatten(2), spread, placed.view(images, shifts * shifts, SIDE * SIDE)


def pixel_agreement(thumbnails: np.ndarray, pairs: Sequence[tuple[int, int]], *, chunk: int = 2048) -> np.ndarray:
    """For each pair (i, j) of rows of ``thumbnails`` (N, SIDE, SIDE), the correlation of their details at
    the best alignment, -1 .. 1 (1: the same pixels): the best of :data:`ZOOMS` and shifts of up to
    :data:`SHIFT` pixels of either image onto the other's centre (either may be the cropped one).

    ``chunk`` pairs at a time; the images of a chunk are zoomed and filtered once each (an image is in
    several pairs: its own neighbours' and theirs), so memory is about 2 chunk x (len(ZOOMS) + (2 SHIFT + 1)^2)
    thumbnails, whatever the number of pairs."""
    scores = np.zeros(len(pairs), np.float32)
    for start in range(0, len(pairs), chunk):
        rows = np.asarray(pairs[start:start + chunk], dtype=np.int64).reshape(-1, 2)
        images, slots = np.unique(rows, return_inverse=True)
        slots = torch.from_numpy(slots.reshape(-1, 2))
        with torch.no_grad():
            details, spread, placed = _alignment_maps(torch.from_numpy(thumbnails[images].astype(np.float32) / 255))
            # The centre has zero mean, so a window's correlation with it is their dot product (the centre placed
            # at the window's shift, zeros elsewhere) over the window's spread.
            best = None
            for moving, fixed in ((slots[:, 1], slots[:, 0]), (slots[:, 0], slots[:, 1])):
                dots = torch.bmm(details[moving], placed[fixed].transpose(1, 2))  # (P, Z, W)
                score = (dots / spread[moving]).flatten(1).amax(1)
                best = score if best is None else torch.maximum(best, score)
        scores[start:start + len(rows)] = best.numpy()
    return scores
