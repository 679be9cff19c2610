"""Copies of one photo: exact (the same bytes) and near (resized, re-compressed, slightly cropped), grouped.

Exact pairs come from the content hashes. Near pairs are proposed by the embeddings (each image's
``candidates`` nearest neighbours, :mod:`src.auditing.neighbours`, at cosine similarity ``threshold`` or
more) and confirmed by the pixels (:mod:`src.auditing.pixel_match`): an embedding alone cannot tell a copy
from a distinct photo of the same kind of product. A copy also stands out from the image's look-alikes
(:func:`confirmed_pairs`: a ratio test, as Lowe's for matching image features). A union-find joins the pairs into groups (a copy of a
copy is in the group too). A group is flagged by what it does to training:

- ``within class``: copies with one label (they weigh that photo twice);
- ``label conflict``: copies with different labels (at least one label is wrong);
- ``leak``: copies in training and in validation (or test): the model is scored on a photo it trained
  on, so the validation error is too low. ``valid_in_leaks`` counts the validation images that have a
  copy in training: the error can be too low by at most that many images.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

WITHIN, CONFLICT, LEAK = "within class", "label conflict", "leak"


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent, self.size = list(range(n)), [1] * n

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            if self.size[a] < self.size[b]:
                a, b = b, a
            self.parent[b], self.size[a] = a, self.size[a] + self.size[b]


@dataclass(frozen=True)
class DuplicateGroup:
    members: tuple[int, ...]  # image rows, sorted
    exact: bool  # every member has the same bytes
    similarity: float  # the lowest pixel agreement of the pairs that joined it (1.0 for exact copies)
    flags: tuple[str, ...]  # LEAK and/or CONFLICT, or WITHIN

    @property
    def kind(self) -> str:
        return ", ".join(self.flags)


def proposed_pairs(sims: np.ndarray, neighbours: np.ndarray, threshold: float,
                   candidates: int) -> dict[tuple[int, int], float]:
    """(i, j) with i < j -> cosine similarity, for each image and those of its ``candidates`` nearest
    neighbours at ``threshold`` or more: the pairs the pixel check looks at (at most N x candidates)."""
    pairs: dict[tuple[int, int], float] = {}
    for i, column in np.argwhere(sims[:, :candidates] >= threshold):
        j = int(neighbours[i, column])
        pairs.setdefault((min(int(i), j), max(int(i), j)), float(sims[i, column]))
    return pairs


def confirmed_pairs(candidates: Sequence[tuple[int, int]], agreement: np.ndarray, threshold: float,
                    distinct_ratio: float) -> dict[tuple[int, int], float]:
    """The candidate pairs whose pixels agree at ``threshold`` or more and stand out from their look-alikes:
    ``(1 - agreement) <= distinct_ratio * (1 - look-alike)``, where the look-alike is the best agreement either
    image has with a candidate under ``threshold`` (a copy of a copy is above it, so it does not count).

    Why: distinct photos of a plain product shot the same way (every plain trouser front-on) agree almost as
    well as a copy does, but so do many others of them; a copy agrees far better with its original than
    with anything else (Lowe, IJCV 2004, for matching image features: the nearest against the second). An
    image with no candidate under ``threshold`` has no look-alike to beat."""
    look_alike: dict[int, float] = {}
    for (i, j), a in zip(candidates, agreement):
        if a < threshold:
            look_alike[i] = max(look_alike.get(i, -1.0), float(a))
            look_alike[j] = max(look_alike.get(j, -1.0), float(a))
    confirmed = {}
    for (i, j), a in zip(candidates, agreement):
        if a >= threshold and 1 - a <= distinct_ratio * (1 - max(look_alike.get(i, -1.0), look_alike.get(j, -1.0))):
            confirmed[(i, j)] = float(a)
    return confirmed


def duplicate_pairs(digests: Sequence[str], confirmed: dict[tuple[int, int], float]) -> dict[tuple[int, int], float]:
    """(i, j) with i < j -> similarity: the exact copies (the same bytes, 1.0) and the ``confirmed`` near pairs
    (with their pixel agreement)."""
    pairs: dict[tuple[int, int], float] = {}
    by_digest: dict[str, list[int]] = defaultdict(list)
    for i, digest in enumerate(digests):
        if digest:
            by_digest[digest].append(i)
    for rows in by_digest.values():
        for j in rows[1:]:
            pairs[(rows[0], j)] = 1.0
    for key, similarity in confirmed.items():
        pairs.setdefault(key, similarity)
    return pairs


def group_duplicates(pairs: dict[tuple[int, int], float], digests: Sequence[str], labels: Sequence,
                     subsets: Sequence[str]) -> list[DuplicateGroup]:
    """Groups of the connected pairs, leaks and label conflicts first, then by size."""
    found = UnionFind(len(digests))
    for a, b in pairs:
        found.union(a, b)
    members: dict[int, list[int]] = defaultdict(list)
    for a, b in pairs:
        members[found.find(a)]  # every root with a pair
    for i in range(len(digests)):
        root = found.find(i)
        if root in members:
            members[root].append(i)
    lowest: dict[int, float] = {}
    for (a, _), sim in pairs.items():
        root = found.find(a)
        lowest[root] = min(lowest.get(root, 1.0), sim)
    groups = []
    for root, rows in members.items():
        flags = []
        subset_set = {subsets[i] for i in rows}
        if "train" in subset_set and len(subset_set) > 1:
            flags.append(LEAK)
        if len({labels[i] for i in rows}) > 1:
            flags.append(CONFLICT)
        groups.append(DuplicateGroup(tuple(rows), len({digests[i] for i in rows}) == 1, lowest[root],
                                     tuple(flags) or (WITHIN,)))
    return sorted(groups, key=lambda g: (WITHIN in g.flags, -len(g.flags), -len(g.members), g.members))


def valid_in_leaks(groups: Sequence[DuplicateGroup], subsets: Sequence[str]) -> int:
    """Validation images with a copy in training."""
    return sum(1 for g in groups if LEAK in g.flags for i in g.members if subsets[i] == "valid")
