"""Class probabilities from logits: softmax over the classes, or an independent sigmoid per class."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_probabilities(logits: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """(N, classes) probabilities: summing to 1 (one label), or each in [0, 1] on its own (multi-label)."""
    return logits.sigmoid() if multi_label else logits.softmax(dim=1)


def class_log_probabilities(logits: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """The log of :func:`class_probabilities`, computed stably."""
    return F.logsigmoid(logits) if multi_label else logits.log_softmax(dim=1)
