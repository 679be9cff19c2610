"""The nearest neighbours of every embedding, by cosine similarity, in memory linear in the image count.

The similarity matrix of N images is N x N (1M images: 4 TB in float32), so it is never built: blocks of
``block`` rows are multiplied with blocks of ``block`` columns (``block`` x ``block`` similarities at a time,
64 MB for 4096) and only each row's ``k`` best are kept, merged block by block. Memory is O(N k + block^2);
the work is still N^2 D multiply-adds (1M images of 512 numbers: 5e14, hours on a 2-core CPU, minutes on
a GPU), which is the exact answer; an approximate index (faiss, hnswlib) would trade it for recall.
"""

from __future__ import annotations

import numpy as np
import torch


def centred(embeddings: np.ndarray) -> np.ndarray:
    """``embeddings`` less their mean, L2-normalised again. Pooled ReLU features all point into one orthant
    (random bodies' similarities were 0.95-0.99 for any two images, an exact copy 1.0); centred, unrelated
    images spread out (0.4-0.86) and copies stay near 1, so one threshold works across bodies."""
    shifted = embeddings - embeddings.mean(0, keepdims=True)
    return shifted / np.maximum(np.linalg.norm(shifted, axis=1, keepdims=True), 1e-12)


def nearest_neighbours(embeddings: np.ndarray, k: int, *, block: int = 4096, device: torch.device | str = "cpu",
                       queries: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each row of the L2-normalised ``embeddings`` (N, D), the similarities (N, k) and row indices
    (N, k) of its ``k`` most similar other rows, most similar first (``k`` is cut to N - 1). With
    ``queries`` (N, D), another view of each row (row i of it is image i too), the rows most similar to
    each query instead, image i itself left out as before."""
    count = len(embeddings)
    k = min(k, count - 1)
    if k < 1:
        return np.zeros((count, 0), np.float32), np.zeros((count, 0), np.int64)
    vectors = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)).to(device)
    asked = vectors if queries is None else torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(device)
    best_sims = torch.full((count, k), -torch.inf, device=device)
    best_index = torch.zeros((count, k), dtype=torch.long, device=device)
    for start in range(0, count, block):
        rows = asked[start:start + block]
        row_ids = torch.arange(start, start + len(rows), device=device)
        sims_kept, index_kept = best_sims[start:start + len(rows)], best_index[start:start + len(rows)]
        for column in range(0, count, block):
            sims = rows @ vectors[column:column + block].T
            if column <= start < column + block or start <= column < start + len(rows):
                own = row_ids - column
                inside = (own >= 0) & (own < sims.shape[1])
                sims[inside.nonzero().squeeze(1), own[inside]] = -torch.inf  # an image is not its own neighbour
            take = min(k, sims.shape[1])
            block_sims, block_index = sims.topk(take, dim=1)
            merged_sims = torch.cat([sims_kept, block_sims], dim=1)
            merged_index = torch.cat([index_kept, block_index + column], dim=1)
            sims_kept, order = merged_sims.topk(k, dim=1)
            index_kept = merged_index.gather(1, order)
        best_sims[start:start + len(rows)], best_index[start:start + len(rows)] = sims_kept, index_kept
    return best_sims.cpu().numpy(), best_index.cpu().numpy()
