"""fastai's ``learner.summary()``: one row per layer with its output shape, parameters and trainability.

The shapes come from forward hooks on every leaf module, as fastai v1 did (``hook_outputs`` on
``flatten_model``): one row per layer in the order the layers first run, so a ReLU reused
three times in a Bottleneck is one row, and the parameter totals count every parameter once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

RULE = "=" * 70


@dataclass
class LayerRow:
    name: str  # the module's class name, fastai's "Layer (type)"
    output_shape: tuple[int, ...]  # without the batch dimension
    params: int
    trainable: bool  # any parameter requires grad (False for layers without parameters, as fastai)


def layer_rows(net: nn.Module, input_size: tuple[int, int, int]) -> list[LayerRow]:
    """Run one (1, C, H, W) batch through ``net`` in eval mode and record every leaf layer's output."""
    leaves = [m for m in net.modules() if not list(m.children())]
    rows: dict[int, LayerRow] = {}

    def record(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if id(module) not in rows:
            params = list(module.parameters())
            rows[id(module)] = LayerRow(
                type(module).__name__, tuple(output.shape[1:]), sum(p.numel() for p in params),
                any(p.requires_grad for p in params),
            )

    handles = [m.register_forward_hook(record) for m in leaves]
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, *input_size))
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    return list(rows.values())


def summary_table(net: nn.Module, input_size: tuple[int, int, int], title: str, state: str = "") -> str:
    """The fastai summary text: the layer table, the three totals, then ``state`` (the stage)."""
    lines = [title, RULE, f"{'Layer (type)':<20} {'Output Shape':<20} {'Param #':<10} {'Trainable':<10}", RULE]
    for row in layer_rows(net, input_size):
        shape = str(list(row.output_shape))
        lines.append(f"{row.name:<20} {shape:<20} {row.params:<10,} {str(row.trainable):<10}")
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    lines += [
        RULE,
        f"Total params: {total:,}",
        f"Total trainable params: {trainable:,}",
        f"Total non-trainable params: {total - trainable:,}",
    ]
    if state:
        lines += ["", state]
    return "\n".join(lines) + "\n"
