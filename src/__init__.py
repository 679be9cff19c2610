"""Image-folder classification with fastai v1's recipe; ``from src import Predictor`` to use a model."""

from src.inference.predictor import Prediction, Predictor
from src.optim.fine_tune import register_resolvers

register_resolvers()  # before any config is read: conf/schedule/fine_tune.yaml uses ${fine_tune_stages:}

__all__ = ["Prediction", "Predictor"]
