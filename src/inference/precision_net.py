"""A trained network run at a Lightning precision outside the Trainer, exactly as its validation ran.

Training validates inside Lightning's precision plugin (bf16 autocast with ``bf16-mixed``) and in
the memory format the run chose (``model.channels_last``). Evaluating the same weights in fp32 and
NCHW gives other logits (the val/loss of a tiny bf16 run moved by 5e-4, and one of its error rates
from 0.75 to 0.83), so evaluate/predict/inspect wrap the network in :class:`PrecisionNet`, which uses
Lightning Fabric's own plugins for the casts and the autocast.
"""

from __future__ import annotations


import torch
from lightning.fabric.plugins.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision
from torch import nn

from src.core.hardware import as_lightning_runs_it, normalize_precision


INFERENCE_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")


def precision_plugin(precision: str, device: torch.device) -> Precision:
    """Lightning Fabric's plugin for ``precision`` on ``device`` (what the Trainer would use)."""
    precision = normalize_precision(as_lightning_runs_it(precision, on_cpu=device.type == "cpu"))
    if precision in ("bf16-mixed", "16-mixed"):
        return MixedPrecision(precision, device=device.type)
    if precision in ("bf16-true", "16-true"):
        return HalfPrecision(precision)
    if precision == "64-true":
        return DoublePrecision()
    if precision == "32-true":
        return Precision()
    raise ValueError(f"precision={precision!r}; expected one of {', '.join(INFERENCE_PRECISIONS)} "
                     "(or null: the precision the checkpoint's run trained with)")


class PrecisionNet(nn.Module):
    """``net`` on ``device`` at ``precision``: inputs in the run's memory format, the forward pass inside
    the precision's autocast, float32 logits out (softmax and losses are computed in fp32, as
    autocast does for ``cross_entropy`` in training)."""

    def __init__(self, net: nn.Module, precision: str, device: torch.device, channels_last: bool) -> None:
        super().__init__()
        self.precision = normalize_precision(precision)
        self.plugin = precision_plugin(self.precision, device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = self.plugin.convert_module(net.to(device)).to(memory_format=self.memory_format)
        self.train(net.training)  # the wrapper's mode is the network's: code that saves and restores it keeps eval

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = self.plugin.convert_input(images.contiguous(memory_format=self.memory_format))
        with self.plugin.forward_context():
            return self.net(images).float()
