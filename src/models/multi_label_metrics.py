"""fastai v1's multi-label settings and its per-image F-beta of the predicted set of classes.

torchmetrics' ``MultilabelFBetaScore`` averages over classes (micro, macro, weighted) but has no
"samples" average (scikit-learn's ``average="samples"``, the planet competition's score), so it is
computed here with torch ops, exactly as fastai v1's ``fbeta`` (``fastai/metrics.py``) did before
its final mean.
"""

from __future__ import annotations

import torch

# fastai's accuracy_thresh default: a class is predicted when its sigmoid is above it.
DEFAULT_THRESHOLD = 0.5
# fastai's planet example (and the Kaggle competition) scored F2: recall weighs more than precision.
FBETA_BETA = 2.0
EPS = 1e-9  # fastai's: an image with no predicted (or no true) class scores 0, not NaN


def check_threshold(key: str, threshold: float) -> None:
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"{key}={threshold}; expected a probability strictly between 0 and 1, e.g. {DEFAULT_THRESHOLD}")


def fbeta_per_sample(
    probabilities: torch.Tensor, targets: torch.Tensor, threshold: float, beta: float = FBETA_BETA
) -> torch.Tensor:
    """F-beta of each image (N,): classes with probability above ``threshold`` against the true ones.

    Args:
        probabilities: (N, classes) sigmoid outputs.
        targets: (N, classes) multi-hot 0/1.
    """
    predicted = (probabilities > threshold).float()
    targets = targets.float()
    true_positives = (predicted * targets).sum(dim=1)
    precision = true_positives / (predicted.sum(dim=1) + EPS)
    recall = true_positives / (targets.sum(dim=1) + EPS)
    beta2 = beta**2
    return (1 + beta2) * precision * recall / (beta2 * precision + recall + EPS)
