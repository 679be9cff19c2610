"""Optimizer parameter groups by layer group, with fastai's switch for weight decay on BN and biases."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


# torch's public BatchNorm classes (their common base is private); the lazy ones become these on
# their first forward, before any optimizer sees their parameters.
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def layer_group_param_groups(layer_groups: Sequence[nn.Module], bn_weight_decay: bool) -> list[dict]:
    """Two param groups per layer group: weights that decay, and BatchNorm/bias parameters.

    Every parameter is included, frozen or not: freezing only turns ``requires_grad`` off, and
    PyTorch's optimizers skip parameters without gradients, so the optimizer never has to be
    rebuilt between stages. Each group records its ``layer_group`` index for the LR scheduler and
    a ``name`` that Lightning's ``LearningRateMonitor`` uses in TensorBoard. Decaying groups take
    the optimizer's ``weight_decay``; with ``bn_weight_decay=False`` the others get none.
    """
    groups = []
    for index, module in enumerate(layer_groups):
        no_decay_ids = set()
        for sub in module.modules():
            if isinstance(sub, BATCH_NORMS):
                no_decay_ids.update(id(p) for p in sub.parameters(recurse=False))
        for name, param in module.named_parameters():
            if name.endswith("bias"):
                no_decay_ids.add(id(param))
        params = list(module.parameters())
        decay = [p for p in params if id(p) not in no_decay_ids]
        no_decay = [p for p in params if id(p) in no_decay_ids]
        groups.append({"params": decay, "layer_group": index, "name": f"group{index}"})
        no_decay_group = {"params": no_decay, "layer_group": index, "name": f"group{index}_bn_bias"}
        if not bn_weight_decay:
            no_decay_group["weight_decay"] = 0.0
        groups.append(no_decay_group)
    return groups
