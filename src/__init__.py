"""Image-folder classification with fastai v1's recipe; ``from src import Predictor`` to use a model."""

from src.inference.predictor import Prediction, Predictor

__all__ = ["Prediction", "Predictor"]
