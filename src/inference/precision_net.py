"""A trained network run at a Lightning precision outside the Trainer, exactly as its validation ran.

Training validates inside Lightning's precision plugin (bf16 autocast with ``bf16-mixed``) and in
the memory format the run chose (``model.channels_last``). Evaluating the same weights in fp32 and
NCHW gives other logits (the val/loss of a tiny bf16 run moved by 5e-4, and one of its error rates
from 0.75 to 0.83), so evaluate/predict/inspect wrap the network in :class:`PrecisionNet`, which makes
the casts Lightning Fabric's plugins make: ``*-mixed`` runs the forward pass in ``torch.autocast`` with the
network and inputs in float32 (``MixedPrecision``), ``*-true`` casts the network and its inputs to the
dtype (``HalfPrecision``, ``DoublePrecision``). Written with torch alone, not with the plugins, so that
predicting (``from src import Predictor``) does not import Lightning; tests/test_precision.py checks that
evaluate reproduces the validation metrics of runs at each precision.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from src.core.hardware import as_lightning_runs_it, normalize_precision

INFERENCE_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
DTYPES = {"bf16": torch.bfloat16, "16": torch.float16, "64": torch.float64, "32": torch.float32}


def precision_casts(precision: str, device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
    """(the dtype of the network and its inputs, the autocast dtype or None) of ``precision`` on ``device``,
    as the Trainer would run it (Lightning runs ``16-mixed`` on a CPU as ``bf16-mixed``)."""
    precision = normalize_precision(as_lightning_runs_it(precision, on_cpu=device.type == "cpu"))
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {', '.join(INFERENCE_PRECISIONS)} "
                         "(or null: the precision the checkpoint's run trained with)")
    bits, kind = precision.split("-")
    if kind == "mixed":
        return torch.float32, DTYPES[bits]
    return DTYPES[bits], None


class PrecisionNet(nn.Module):
    """``net`` on ``device`` at ``precision``: inputs in the run's memory format, the forward pass inside
    the precision's autocast, float32 logits out (softmax and losses are computed in fp32, as
    autocast does for ``cross_entropy`` in training)."""

    def __init__(self, net: nn.Module, precision: str, device: torch.device, channels_last: bool) -> None:
        super().__init__()
        self.precision = normalize_precision(precision)
        self.dtype, self.autocast_dtype = precision_casts(self.precision, device)
        self.device_type = device.type
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net.to(device=device, dtype=self.dtype).to(memory_format=self.memory_format)
        self.train(net.training)  # the wrapper's mode is the network's: code that saves and restores it keeps eval

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.dtype).contiguous(memory_format=self.memory_format)
        autocast = (torch.autocast(self.device_type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            return self.net(images).float()
