"""fastai's ``learner.freeze_to(n)`` as a plain function of (layer groups, freeze_to, train_bn).

The one place a stage's frozen set is computed: the :class:`~src.callbacks.staged_finetuning.StagedFineTuning`
callback applies it during training, and the lr finder, the bench and ``src.inspect`` call it
directly (as Lightning lets anyone call ``BaseFinetuning.freeze``).
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch.callbacks import BaseFinetuning
from omegaconf import DictConfig
from torch import nn


# The BatchNorm layers (torch's public classes; their private base class _BatchNorm is what Lightning's
# BaseFinetuning tests, and these are all its subclasses that a body holds).
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

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


def trainable_parameter_ids(layer_groups: Sequence[nn.Module], freeze_to: int, train_bn: bool) -> set[int]:
    """The ``id`` of every parameter that :func:`freeze_layer_groups` would leave trainable, without touching
    the modules (freezing a BatchNorm switches off its running statistics, which would change what a
    network in eval mode answers, so a served network is described, never frozen)."""
    first = first_trainable_group(freeze_to, len(layer_groups))
    trainable = {id(p) for group in layer_groups[first:] for p in group.parameters()}
    if train_bn:
        trainable |= {id(p) for group in layer_groups[:first] for m in group.modules()
                      if isinstance(m, BATCH_NORMS) for p in m.parameters(recurse=False)}
    return trainable


def describe_stage(schedule: DictConfig, index: int, count: int, when: str) -> str:
    """Stage ``index`` of ``schedule`` in words, for a network of ``count`` layer groups: what is frozen."""
    stage = schedule.stages[index]
    freeze_to = stage.get("freeze_to", 0)
    frozen = first_trainable_group(freeze_to, count)
    if frozen == 0:
        groups = f"all {count} layer groups trainable"
    else:
        bn = " (their BatchNorm layers train: train_bn=true)" if schedule.train_bn else ""
        groups = f"layer groups 1-{frozen} of {count} frozen{bn}, groups {frozen + 1}-{count} trainable"
    return (f"Trainable state: stage {index + 1}/{len(schedule.stages)} '{stage.get('name', index + 1)}' "
            f"{when}, freeze_to={freeze_to}: {groups}.")


def freeze_for_stage(net: nn.Module, schedule: DictConfig, index: int, when: str) -> str:
    """Apply stage ``index`` of ``schedule``'s freezing to ``net``; describe the trainable state."""
    freeze_layer_groups(net.layer_groups(), schedule.stages[index].get("freeze_to", 0), schedule.train_bn)
    return describe_stage(schedule, index, len(net.layer_groups()), when)
