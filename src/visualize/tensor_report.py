"""The image as the model sees it: a 3 x H x W tensor, before and after normalisation (``data.one_batch()``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

CHANNELS = ("R", "G", "B")


def _channel_stats(tensor: torch.Tensor) -> list[str]:
    return [
        f"  {name}: mean {c.mean():+.4f}  std {c.std():.4f}  min {c.min():+.4f}  max {c.max():+.4f}"
        for name, c in zip(CHANNELS, tensor)
    ]


def tensor_report(
    path: str, unnormalized: torch.Tensor, normalized: torch.Tensor, mean: Sequence[float], std: Sequence[float],
    batch_shape: Sequence[int] | None = None, corner: int = 5,
) -> str:
    """Shape, per-channel statistics before and after ``Normalize(mean, std)``, and a corner of the numbers."""
    torch.set_printoptions(precision=4, sci_mode=False)
    lines = [
        f"image: {path}",
        f"tensor shape: {tuple(normalized.shape)} (channels x height x width), dtype {normalized.dtype}",
    ]
    if batch_shape is not None:
        lines.append(f"a training batch (data.one_batch()): images {tuple(batch_shape)}, labels ({batch_shape[0]},)")
    lines += ["", "before normalisation (pixel values scaled to [0, 1]):", *_channel_stats(unnormalized),
              "", f"after normalisation ((x - mean) / std, mean={list(mean)}, std={list(std)}):",
              *_channel_stats(normalized), ""]
    for name, index in zip(CHANNELS, range(3)):
        lines += [f"normalised channel {name}, top-left {corner} x {corner}:",
                  str(normalized[index, :corner, :corner]), ""]
    torch.set_printoptions(profile="default")
    return "\n".join(lines)
