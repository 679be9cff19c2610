import math

import pytest
import torch
from torch import nn

from src.models.components.head import AdaptiveConcatPool2d, create_head


def test_head_is_fastai_create_head_layout():
    head = create_head(2048, 44)
    kinds = [type(m) for m in head]
    assert kinds == [
        AdaptiveConcatPool2d, nn.Flatten,
        nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.ReLU,
        nn.BatchNorm1d, nn.Dropout, nn.Linear,
    ]
    assert head[2].num_features == 4096
    assert head[3].p == 0.25 and head[7].p == 0.5
    assert (head[4].in_features, head[4].out_features) == (4096, 512)
    assert head[6].num_features == 512
    assert (head[8].in_features, head[8].out_features) == (512, 44)


def test_head_output_shape_and_concat_pool_values():
    head = create_head(16, 5).eval()
    features = torch.randn(3, 16, 7, 7)
    assert head(features).shape == (3, 5)
    pooled = AdaptiveConcatPool2d()(features).flatten(1)
    assert torch.allclose(pooled[:, :16], features.amax(dim=(2, 3)))
    assert torch.allclose(pooled[:, 16:], features.mean(dim=(2, 3)))


def test_head_linear_layers_get_kaiming_normal_and_zero_bias():
    torch.manual_seed(0)
    head = create_head(512, 10)
    linear = head[4]
    assert torch.count_nonzero(linear.bias) == 0
    expected_std = math.sqrt(2 / linear.in_features)  # kaiming normal, fan_in, ReLU gain
    assert linear.weight.std().item() == pytest.approx(expected_std, rel=0.05)


def test_head_without_concat_pool_halves_the_width():
    head = create_head(64, 3, concat_pool=False)
    assert head[2].num_features == 64


def test_head_rejects_bad_dropout():
    with pytest.raises(ValueError, match="dropout"):
        create_head(64, 3, dropout=1.5)
