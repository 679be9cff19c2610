"""fastai's ``learner.freeze_to(n)`` as a plain function of (layer groups, freeze_to, train_bn).

The one place a stage's frozen set is computed: the :class:`~src.callbacks.staged_finetuning.StagedFineTuning`
callback applies it during training, and the lr finder, the bench and ``src.inspect`` call it
directly (as Lightning lets anyone call ``BaseFinetuning.freeze``).
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn


def first_trainable_group(freeze_to: int, num_groups: int) -> int:
    """The index of the first trainable layer group: groups before it are frozen.

    ``freeze_to`` counts as a Python index does: ``0`` trains every group, ``-1`` only the last (the head).
    """
    return freeze_to % num_groups


def freeze_layer_groups(layer_groups: Sequence[nn.Module], freeze_to: int, train_bn: bool) -> None:
    """Freeze the groups before ``freeze_to`` and make the others trainable.

    With ``train_bn`` the BatchNorm layers of frozen groups keep training, as in fastai.
    """
    first = first_trainable_group(freeze_to, len(layer_groups))
    BaseFinetuning.make_trainable(layer_groups[first:])
    BaseFinetuning.freeze(layer_groups[:first], train_bn=train_bn)
