"""Pictures and number arrays as the strings a web page reads: PNG data URLs and base64 float32 arrays."""

from __future__ import annotations

import base64
import functools
import io

import matplotlib
import numpy as np
import torch
from PIL import Image


def png_data_url(pixels: np.ndarray) -> str:
    """A uint8 (H, W) or (H, W, 3) array as a PNG data URL."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def colour_png(values: torch.Tensor, cmap: str = "viridis", scale: bool = True) -> str:
    """A (H, W) map in ``cmap``'s colours as a PNG data URL; ``scale`` stretches it to its own min-max first
    (a map that is one value everywhere is drawn as the colour map's bottom)."""
    values = values.detach().float().cpu()
    if scale:
        low, high = values.min(), values.max()
        values = (values - low) / (high - low) if high > low else torch.zeros_like(values)
    if scale:  # 256 levels through a lookup table: matplotlib's colour map call costs ~4 ms a map
        levels = (values.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        return png_data_url(_colour_table(cmap)[levels])
    rgba = (matplotlib.colormaps[cmap](values.clamp(0, 1).numpy()) * 255).astype(np.uint8)
    return png_data_url(rgba[..., :3])


@functools.cache
def _colour_table(cmap: str) -> np.ndarray:
    return (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def heatmap_png(cam: torch.Tensor) -> str:
    """A [0, 1] map as a PNG data URL in matplotlib's ``jet`` colours (the page lays it over the photo)."""
    return colour_png(cam, "jet", scale=False)


def float32_base64(values: torch.Tensor) -> str:
    """``values`` flattened, as little-endian float32 bytes in base64 (a JavaScript ``Float32Array`` reads them)."""
    array = values.detach().float().cpu().contiguous().numpy().astype("<f4")
    return base64.b64encode(array.tobytes()).decode("ascii")


def uint8_base64(values: torch.Tensor) -> str:
    """A uint8 tensor flattened, as base64 bytes (a JavaScript ``Uint8Array`` reads them)."""
    return base64.b64encode(values.detach().cpu().contiguous().numpy().astype(np.uint8).tobytes()).decode("ascii")
