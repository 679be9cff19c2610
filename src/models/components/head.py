"""fastai v1's classifier head: concat pooling, then BatchNorm -> Dropout -> Linear blocks.

A plain ``nn.Module`` file (no Lightning, no Hydra) so it can be used and tested on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class AdaptiveConcatPool2d(nn.Module):
    """Max pooling and average pooling side by side: ``2 * C`` features from ``C`` channels.

    fastai found that keeping both the strongest activation and the mean of each channel beats
    either alone; the head's input width is therefore twice the backbone's channel count.
    """

    feature_multiplier = 2

    def __init__(self, output_size: int = 1) -> None:
        super().__init__()
        self.max_pool = nn.AdaptiveMaxPool2d(output_size)
        self.avg_pool = nn.AdaptiveAvgPool2d(output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fastai's order: max first, then average.
        return torch.cat([self.max_pool(x), self.avg_pool(x)], dim=1)


def _bn_drop_lin(in_features: int, out_features: int, dropout: float, activation: nn.Module | None) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.BatchNorm1d(in_features), nn.Dropout(dropout), nn.Linear(in_features, out_features)]
    if activation is not None:
        layers.append(activation)
    return layers


def create_head(
    in_features: int,
    num_classes: int,
    hidden: Sequence[int] = (512,),
    dropout: float = 0.5,
    concat_pool: bool = True,
) -> nn.Sequential:
    """Build fastai v1's ``create_head`` for a backbone that outputs ``in_features`` channels.

    For ``hidden=(512,)`` and ``dropout=0.5`` this is: pool -> Flatten -> BatchNorm1d(2*nf) ->
    Dropout(0.25) -> Linear(2*nf, 512) -> ReLU -> BatchNorm1d(512) -> Dropout(0.5) ->
    Linear(512, num_classes). As in fastai, every block but the last uses half the dropout.
    Linear layers get Kaiming-normal weights and zero biases (fastai's ``apply_init``);
    BatchNorm keeps PyTorch's defaults.
    """
    if in_features < 1 or num_classes < 1:
        raise ValueError(f"create_head needs in_features >= 1 and num_classes >= 1, got {in_features} and {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"head dropout must be in [0, 1), got {dropout}")
    pool: nn.Module = AdaptiveConcatPool2d() if concat_pool else nn.AdaptiveAvgPool2d(1)
    pooled_features = in_features * (AdaptiveConcatPool2d.feature_multiplier if concat_pool else 1)
    widths = [pooled_features, *hidden, num_classes]
    dropouts = [dropout / 2] * (len(widths) - 2) + [dropout]
    layers: list[nn.Module] = [pool, nn.Flatten()]
    for i, (width_in, width_out, p) in enumerate(zip(widths[:-1], widths[1:], dropouts)):
        is_last = i == len(widths) - 2
        layers += _bn_drop_lin(width_in, width_out, p, None if is_last else nn.ReLU(inplace=True))
    head = nn.Sequential(*layers)
    for module in head.modules():
        if isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight)
            nn.init.zeros_(module.bias)
    return head
