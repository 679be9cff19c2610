"""Image-folder classification with fastai v1's recipe; ``from src import Predictor`` to use a model.

The names are imported when first used, so ``import src.<anything>`` costs nothing more, and a service that
only predicts imports torch, torchvision and the predictor, not Lightning, Hydra or the training code.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Prediction", "Predictor"]


def __getattr__(name: str) -> Any:  # PEP 562: the package's attributes, loaded on first access
    if name in __all__:
        return getattr(importlib.import_module("src.inference.predictor"), name)
    raise AttributeError(f"module 'src' has no attribute {name!r}")
