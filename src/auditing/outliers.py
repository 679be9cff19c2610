"""Images unlike the rest (far from every other in embedding space) and images odd by their pixels.

The out-of-distribution score of an image is its mean cosine distance to its ``k`` nearest neighbours
(Sun et al., "Out-of-distribution detection with deep nearest neighbors", ICML 2022): a photo of
something else has no close neighbours. Scores are flagged where their modified z-score (distance from
the median in median absolute deviations, x 0.6745) is above ``z`` (Iglewicz and Hoaglin recommend 3.5):
robust to the outliers themselves, and relative, so it suits any body and folder.

Pixel checks (``properties.*`` keys): blank or near constant (grey-level spread below ``blank_contrast``),
tiny (a side below ``tiny_side`` pixels), very dark or bright (mean grey level outside
[``dark``, ``bright``]), extreme aspect ratio (longer side over shorter above ``max_aspect``), blurred
(sharpness, the Laplacian's variance, with a modified z-score of its logarithm below ``-z``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from src.auditing.image_properties import PROPERTIES

MAD_SCALE = 0.6745  # makes the median absolute deviation estimate a normal's standard deviation


def modified_z(values: np.ndarray) -> np.ndarray:
    median = np.median(values)
    mad = np.median(np.abs(values - median))
    if mad == 0:
        return np.zeros_like(values, dtype=np.float64)
    return MAD_SCALE * (values - median) / mad


def ood_scores(sims: np.ndarray, k: int) -> np.ndarray:
    """Mean cosine distance to the ``k`` nearest neighbours (``sims`` sorted most similar first)."""
    if sims.shape[1] == 0:
        return np.zeros(len(sims), np.float32)
    return (1.0 - sims[:, :k]).mean(1)


@dataclass(frozen=True)
class PropertyLimits:
    blank_contrast: float = 2.0
    tiny_side: int = 16
    dark: float = 10.0
    bright: float = 245.0
    max_aspect: float = 4.0
    z: float = 3.5


def property_flags(properties: np.ndarray, limits: PropertyLimits) -> list[list[str]]:
    """The pixel flags of each row of ``properties`` (columns :data:`PROPERTIES`), possibly none."""
    column = {name: properties[:, i] for i, name in enumerate(PROPERTIES)}
    width, height = column["width"], column["height"]
    aspect = np.maximum(width, height) / np.maximum(1.0, np.minimum(width, height))
    blurred = modified_z(np.log1p(column["sharpness"])) < -limits.z if len(properties) else np.zeros(0, bool)
    checks = {
        "blank": column["contrast"] < limits.blank_contrast,
        "tiny": np.minimum(width, height) < limits.tiny_side,
        "dark": column["brightness"] < limits.dark,
        "bright": column["brightness"] > limits.bright,
        "extreme aspect": aspect > limits.max_aspect,
        # a blank image has no edges at all: it is blank, not blurred
        "blurred": blurred & (column["contrast"] >= limits.blank_contrast),
    }
    return [[name for name, flagged in checks.items() if flagged[i]] for i in range(len(properties))]
