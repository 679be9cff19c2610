"""The pixel properties of one image that tell an odd one: size, brightness, contrast, sharpness.

Computed on the 8-bit picture the model sees, in the same pass that embeds it (the file is decoded
once). Sharpness is the variance of the Laplacian of the grey image (Pech-Pacheco et al., 2000: a blurred
image has few edges, so a small variance), on a copy at most :data:`SHARPNESS_SIDE` pixels wide so the
figure does not depend on the resolution a photo was taken at.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# What each column of a properties row holds, in order (the cache and the CSVs use these names).
PROPERTIES = ("width", "height", "brightness", "contrast", "sharpness")
SHARPNESS_SIDE = 256
_LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float32)


def laplacian_variance(grey: np.ndarray) -> float:
    """The variance of the 4-neighbour Laplacian of a float grey image (0 for one under 3 x 3 pixels)."""
    if min(grey.shape) < 3:
        return 0.0
    centre = grey[1:-1, 1:-1]
    laplacian = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * centre
    return float(laplacian.var())


def image_properties(image: Image.Image) -> np.ndarray:
    """:data:`PROPERTIES` of an RGB image, as float32: brightness and contrast are the mean and standard
    deviation of its grey levels (0-255)."""
    width, height = image.size
    grey_image = image.convert("L")
    grey = np.asarray(grey_image, dtype=np.float32)
    if max(width, height) > SHARPNESS_SIDE:
        small = grey_image.copy()
        small.thumbnail((SHARPNESS_SIDE, SHARPNESS_SIDE), Image.Resampling.BILINEAR)
        sharp_grey = np.asarray(small, dtype=np.float32)
    else:
        sharp_grey = grey
    return np.array([width, height, grey.mean(), grey.std(), laplacian_variance(sharp_grey)], dtype=np.float32)
