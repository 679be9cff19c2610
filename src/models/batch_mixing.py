"""MixUp and CutMix of training batches (fastai's ``MixUp(0.4)`` / ``CutMix(1.0)``, timm's ``Mixup``).

torchvision's v2 ``MixUp`` and ``CutMix`` do the mixing: they take a batch with class indices
(single-label) or with (batch, classes) float targets (multi-label multi-hot vectors) and return
the mixed images with soft targets ``lam * y + (1 - lam) * y_rolled``; ``RandomChoice`` is timm's
``switch_prob`` and ``RandomApply`` timm's ``mixup_prob``. What is added here is only what those
leave out: targets that are always (batch, classes) floats, also for a batch left unmixed, so the
loss sees one kind of target; and the checks of the settings.

Each image is mixed with its neighbour in the batch (torchvision rolls the batch by one); the
training loader shuffles, so neighbours are random pairs. The random draws (lambda, the box, the
choice) come from torch's global generator in the training process, which the run seeds and its
checkpoints restore (``RandomStateCheckpoint``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.nn.functional import one_hot
from torchvision.transforms import v2

from src.core.problems import Problem, is_number

# The keys of model.mixup, as timm's Mixup names them; off unless an alpha is above 0.
MIXUP_KEYS = ("mixup_alpha", "cutmix_alpha", "switch_prob", "prob")


def batch_mixing_problems(settings: Any, key: str = "model.mixup") -> list[Problem]:
    """What cannot work in ``settings`` (a mapping of :data:`MIXUP_KEYS`, or None for off)."""
    if settings is None:
        return []
    if not isinstance(settings, Mapping):
        return [Problem(key, settings, f"a mapping of {', '.join(MIXUP_KEYS)} (or null)",
                        f"e.g. {key}.mixup_alpha=0.4 (fastai's MixUp(0.4))")]
    problems = [Problem(f"{key}.{name}", settings[name], f"one of {', '.join(MIXUP_KEYS)}", "remove it")
                for name in settings if name not in MIXUP_KEYS]
    for name in ("mixup_alpha", "cutmix_alpha"):
        value = settings.get(name, 0.0)
        if not (is_number(value) and value >= 0):
            problems.append(Problem(f"{key}.{name}", value, "a number >= 0 (the Beta(alpha, alpha) of lambda; 0 is off)",
                                    "fastai's defaults are mixup_alpha=0.4, cutmix_alpha=1.0"))
    for name in ("switch_prob", "prob"):
        value = settings.get(name, 1.0)
        if not (is_number(value) and 0 <= value <= 1):
            problems.append(Problem(f"{key}.{name}", value, "a probability between 0 and 1",
                                    f"e.g. {key}.{name}={0.5 if name == 'switch_prob' else 1.0}"))
    return problems


class BatchMixing:
    """MixUp and/or CutMix of a training batch; ``__call__(images, labels) -> (images, targets)``.

    Args:
        num_classes: the class count (one-hot width of single-label targets).
        mixup_alpha: MixUp's lambda ~ Beta(mixup_alpha, mixup_alpha); 0 leaves MixUp out.
        cutmix_alpha: CutMix's lambda ~ Beta(cutmix_alpha, cutmix_alpha); 0 leaves CutMix out.
        switch_prob: with both on, the chance a batch gets CutMix rather than MixUp.
        prob: the chance a batch is mixed at all.

    ``targets`` is always a (batch, classes) float tensor: single-label rows sum to 1 (the one-hot
    label when the batch is not mixed), multi-label rows are mixed multi-hot vectors.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 switch_prob: float = 0.5, prob: float = 1.0) -> None:
        settings = {"mixup_alpha": mixup_alpha, "cutmix_alpha": cutmix_alpha, "switch_prob": switch_prob, "prob": prob}
        problems = batch_mixing_problems(settings)
        if problems:
            raise ValueError("; ".join(map(str, problems)))
        self.num_classes = num_classes
        mixers = []
        if mixup_alpha > 0:
            mixers.append((v2.MixUp(alpha=mixup_alpha, num_classes=num_classes), 1.0 - switch_prob))
        if cutmix_alpha > 0:
            mixers.append((v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes), switch_prob))
        if len(mixers) == 2:
            mixer = v2.RandomChoice([m for m, _ in mixers], p=[p for _, p in mixers])
        else:
            mixer = mixers[0][0] if mixers else None
        self.transform = v2.RandomApply([mixer], p=prob) if mixer is not None and prob < 1 else mixer

    @property
    def enabled(self) -> bool:
        return self.transform is not None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform is not None:
            images, labels = self.transform(images, labels)
        if labels.ndim == 1:  # class indices of a batch RandomApply left unmixed
            labels = one_hot(labels, self.num_classes)
        return images, labels.float()
