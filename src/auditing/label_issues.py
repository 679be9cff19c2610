"""Images whose label the rest of the folder disagrees with: confident learning on out-of-fold probabilities.

A small head (multinomial logistic regression on the embeddings, in torch: seconds, not k trainings of
the network) is fitted k times, each time predicting the fold it did not see, so every image gets class
probabilities from a model that never saw its label. cleanlab's ``find_label_issues`` (Northcutt et al.,
"Confident Learning", JAIR 2021) then picks the images whose given label those probabilities do not
support, ranked by its label-quality score (the probability of the given label, "self_confidence"):
the lowest first. How many: confident learning's estimate of the number of wrong labels (from the
confident joint); which: with ``filter_by="low_self_confidence"`` that many of the images whose given label's
probability is under its class's average self-confidence, lowest first (on the measured folder it
flagged fewer images that are right, and missed fewer that are wrong, than ``prune_by_noise_rate`` or
``both``: docs/audit.md). cleanlab is kept by the people who wrote the method; it is the ``audit`` extra.

Of confident learning's picks, an issue is one whose out-of-fold odds against the given label are at least
``min_odds`` (the likeliest other class ``min_odds`` times as probable as the given one). Confident learning
counts an image of two classes the head cannot tell apart (a shirt filed as a shirt, which looks like a
T-shirt) as readily as a trouser filed under bags: on the measured folder half of its picks were such
pairs, right as filed. The odds keep the ones the head is sure of; how many were set aside is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from src.core.extras import require_extra


def require_cleanlab() -> None:
    """Raise :class:`~src.core.extras.MissingExtraError` (before any image is read) when cleanlab is not installed."""
    require_extra("audit", "python -m src.audit")


@dataclass(frozen=True)
class LabelIssue:
    index: int  # the image's row
    given: int
    suggested: int
    score: float  # cleanlab's label quality: 0 (surely wrong) .. 1
    odds: float  # the suggested class's out-of-fold probability over the given one's


def fold_ids(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold per image, each class dealt round-robin over the folds after a seeded shuffle (stratified)."""
    rng = np.random.default_rng(seed)
    ids = np.zeros(len(labels), np.int64)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        ids[members] = np.arange(len(members)) % folds
    return ids


def fit_logistic(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, weight_decay: float,
                 steps: int) -> torch.nn.Linear:
    """Multinomial logistic regression by full-batch L-BFGS (the features fit in memory: N x D)."""
    head = torch.nn.Linear(features.shape[1], num_classes)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(features), labels) + weight_decay * head.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head


def out_of_fold_probabilities(embeddings: np.ndarray, labels: np.ndarray, num_classes: int, *, folds: int = 5,
                              seed: int = 42, weight_decay: float = 1e-4, steps: int = 100) -> np.ndarray:
    """(N, num_classes) probabilities, each row from a head fitted on the other folds."""
    features = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
    targets = torch.from_numpy(labels.astype(np.int64))
    ids = fold_ids(labels, folds, seed)
    probabilities = np.zeros((len(labels), num_classes), np.float32)
    torch.manual_seed(seed)
    for fold in range(folds):
        held = torch.from_numpy(ids == fold)
        if not held.any():
            continue
        train = features[~held]
        mean, std = train.mean(0), train.std(0) + 1e-6  # standardised: one weight decay suits every body
        head = fit_logistic((train - mean) / std, targets[~held], num_classes, weight_decay=weight_decay, steps=steps)
        with torch.no_grad():
            probabilities[held.numpy()] = head((features[held] - mean) / std).softmax(1).numpy()
    return probabilities


def find_issues(labels: np.ndarray, probabilities: np.ndarray, filter_by: str = "low_self_confidence",
                min_odds: float = 0.0) -> tuple[list[LabelIssue], int]:
    """cleanlab's label issues (``filter_by``: its ``find_label_issues`` rule) whose odds against the given
    label are ``min_odds`` or more, most likely wrong first; and how many of its picks the odds set aside."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    ranked = find_label_issues(labels, probabilities, filter_by=filter_by, return_indices_ranked_by="self_confidence")
    scores = get_label_quality_scores(labels, probabilities, method="self_confidence")
    rows = np.arange(len(labels))
    others = probabilities.copy()
    others[rows, labels] = -np.inf  # the suggestion is another class, even where the given one is likeliest
    suggested = others.argmax(1)
    odds = probabilities[rows, suggested] / np.maximum(probabilities[rows, labels], np.finfo(np.float32).tiny)
    picked = [LabelIssue(int(i), int(labels[i]), int(suggested[i]), float(scores[i]), float(odds[i])) for i in ranked]
    kept = [issue for issue in picked if issue.odds >= min_odds]
    return kept, len(picked) - len(kept)
