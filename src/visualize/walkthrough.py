"""Inside the model, for one photo: every number the serving page's "Inside the model" view shows.

:func:`inside_view` runs the photo through the network once, with forward hooks on the first
convolution, every leaf layer of the body, each stage, the pooling and the head's layers, and then
asks autograd (on that same pass) for the gradients that Grad-CAM and the head's decomposition need.
So what the page shows is what the served network computes, at its precision, with no second copy.

The answer is plain JSON: pictures as PNG data URLs, the arrays the page computes with (the input's
uint8 pixels, the first layer's weights, one output channel of it, the pooled vector) as base64
float32 or uint8, so a 300 px ResNet50 view stays near 1 MB.

The head's decomposition: for each top class the score's gradient with respect to the pooled vector
times that vector, one number per pooled feature. Where the head is affine after pooling
(BatchNorm1d, Dropout, Linear, in eval mode) the gradient is the head's effective weight, so the
contributions are weight x value and sum to the score minus the head's bias (the score of a zero
vector). fastai's default head has a ReLU hidden layer: it is affine wherever its ReLUs keep their
on/off pattern, so the contributions (gradient x value) sum to the score minus the bias of that
region, which the answer gives (``bias``); both cases are checked in tests/test_inside.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from src.models.components.head import AdaptiveConcatPool2d
from src.models.components.timm_body import TimmBody
from src.visualize.cam import cam_map
from src.visualize.data_urls import colour_png, float32_base64, heatmap_png, uint8_base64
from src.visualize.features import RESNET_BODY_NAMES
from src.visualize.kernels import KERNELS, SEED_EDGE, convolve
from src.visualize.tensor_report import CHANNELS

log = logging.getLogger(__name__)

# What the view's parts show, chosen to keep the answer small: maps per stage, classes, channels per class.
TOP_CHANNELS = 6
TOP_CLASSES = 3
TOP_CONTRIBUTIONS = 6
# The hand-made kernels applied beside the learned ones: fastai's edge kernel and a blur.
HANDMADE = {"edge (fastai's seed kernel)": SEED_EDGE, "blur (box)": KERNELS["blur (box)"]}
# Layers after which the head is still affine in eval mode (so contributions are weight x value).
AFFINE_HEAD_LAYERS = (nn.Flatten, nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.Identity)


def body_stages(backbone: nn.Module) -> tuple[dict[str, nn.Module] | None, str | None]:
    """The stages of a body by name (a ResNet: stem, layer1 ... layer4; a timm CNN: its ``feature_info``
    stages), or None and why not."""
    if isinstance(backbone, TimmBody):
        return backbone.stages(), None
    if isinstance(backbone, nn.Sequential) and len(backbone) == len(RESNET_BODY_NAMES):
        children = dict(zip(RESNET_BODY_NAMES, backbone))
        return {"stem": children["maxpool"], **{name: children[name] for name in RESNET_BODY_NAMES[4:]}}, None
    return None, (f"the body {type(backbone).__name__} is neither a torchvision ResNet body ({', '.join(RESNET_BODY_NAMES)}) "
                  "nor a timm CNN with feature_info, so its stages cannot be found; the input, the first layer, the "
                  "pooling and the head are still shown")


def multiply_add(image: torch.Tensor, weight: torch.Tensor, stride: Sequence[int], padding: Sequence[int],
                 row: int, col: int) -> dict[str, Any]:
    """The receptive field of output position (``row``, ``col``) of a convolution and its multiply-and-add.

    ``image`` is (C, H, W), ``weight`` one (C, k, k) kernel. Returns the zero-padded (C, k, k) ``patch``,
    the field's ``top``/``left`` in image coordinates (negative inside the padding), the sum of
    ``weight * patch`` per input channel (``per_channel``) and their ``total``: what F.conv2d gives there.
    """
    channels, kh, kw = weight.shape
    top, left = row * stride[0] - padding[0], col * stride[1] - padding[1]
    padded = F.pad(image, (padding[1], padding[1], padding[0], padding[0]))
    patch = padded[:, row * stride[0]:row * stride[0] + kh, col * stride[1]:col * stride[1] + kw]
    if patch.shape != weight.shape:
        raise ValueError(f"output position ({row}, {col}) is outside the output; expected row and col within the "
                         f"output of a {kh}x{kw} kernel, stride {tuple(stride)}, padding {tuple(padding)} on "
                         f"{tuple(image.shape[-2:])}")
    per_channel = (weight.double() * patch.double()).sum(dim=(1, 2))
    return {"top": top, "left": left, "patch": patch, "per_channel": per_channel.tolist(),
            "total": float(per_channel.sum())}


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """``floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1``: PyTorch's convolution and pooling."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _trainable_count(params: Sequence[nn.Parameter], trainable: set[int] | None) -> int:
    return sum(p.numel() for p in params if (id(p) in trainable if trainable is not None else p.requires_grad))


def _stats(tensor: torch.Tensor) -> dict[str, float]:
    return {"mean": float(tensor.mean()), "std": float(tensor.std()), "min": float(tensor.min()),
            "max": float(tensor.max())}


def _step(name: str, module: nn.Module, shape_in: Sequence[int], shape_out: Sequence[int]) -> dict[str, Any]:
    """One layer that changes the map's height or width: its geometry and the arithmetic of the new height."""
    step: dict[str, Any] = {"module": name, "type": type(module).__name__, "in": list(shape_in), "out": list(shape_out)}
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k, s, p = _pair(module.kernel_size), _pair(module.stride), _pair(module.padding)
        d = _pair(getattr(module, "dilation", 1))
        step.update(kernel=k[0], stride=s[0], padding=p[0], dilation=d[0],
                    checked=output_size(shape_in[-2], k[0], s[0], p[0], d[0]) == shape_out[-2])
    return step


def _source_names(backbone: nn.Module) -> dict[str, nn.Module]:
    """The body's leaf layers by the names its source library gives them (torchvision's ``layer2.0.conv1``
    rather than the body's ``5.0.conv1``)."""
    names = getattr(backbone, "source_names", None)
    leaves = {}
    for name, module in backbone.named_modules():
        if list(module.children()):
            continue
        if names is not None:
            index, _, rest = name.partition(".")
            name = ".".join(filter(None, [names[int(index)], rest]))
        leaves[name.removeprefix(TimmBody.MODEL_PREFIX)] = module
    return leaves


def first_conv(backbone: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The body's first ``Conv2d`` (the one that sees the pixels) and its name, or None."""
    return next(((name, m) for name, m in _source_names(backbone).items() if isinstance(m, nn.Conv2d)), None)


class _Recorder:
    """Forward hooks on the network's modules for one pass; removed by :meth:`remove`."""

    def __init__(self) -> None:
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.outputs: dict[str, torch.Tensor] = {}
        self.leaves: list[tuple[str, nn.Module, tuple, tuple, int]] = []  # name, module, in, out, order
        self.order: dict[str, int] = {}

    def keep(self, name: str, module: nn.Module, clone: bool = True) -> None:
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            # a later in-place activation (ResNet's ReLUs) would change a kept tensor: keep a copy,
            # except where the gradient is needed (the Grad-CAM stage, the pooled vector)
            self.outputs[name] = output.detach().clone() if clone else output
            self.order[name] = len(self.leaves)
        self.handles.append(module.register_forward_hook(hook))

    def keep_leaves(self, names: dict[str, nn.Module]) -> None:
        for name, module in names.items():
            if list(module.children()):
                continue

            def hook(module: nn.Module, inputs: tuple, output: torch.Tensor, name: str = name) -> None:
                if inputs and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
                    self.leaves.append((name, module, tuple(inputs[0].shape[1:]), tuple(output.shape[1:]),
                                        len(self.leaves)))
            self.handles.append(module.register_forward_hook(hook))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _input_part(pixels: torch.Tensor, normalized: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                transform: v2.Compose) -> dict[str, Any]:
    """The picture as the network receives it: its uint8 pixels (the page draws it and its channels from
    them, and normalises them as ``Normalize`` does), the transform's steps and each channel's statistics."""
    scaled = pixels.float() / 255
    return {
        "shape": list(normalized.shape), "pixels": uint8_base64(pixels), "mean": list(mean), "std": list(std),
        "steps": [type(step).__name__ + (f" {list(step.size)}" if getattr(step, "size", None) else "")
                  for step in transform.transforms],
        "channels": [{"name": name, "before": _stats(scaled[i]), "after": _stats(normalized[i])}
                     for i, name in enumerate(CHANNELS)],
    }


def _kernel_part(conv: nn.Conv2d, name: str, conv_out: torch.Tensor, kernel: int | None) -> dict[str, Any]:
    weight = conv.weight.detach().float().cpu()
    activity = conv_out.float().mean(dim=(1, 2))
    index = int(activity.argmax()) if kernel is None else kernel
    if not 0 <= index < weight.shape[0]:
        raise ValueError(f"kernel={index}; the first layer {name} has {weight.shape[0]} kernels: use 0 to "
                         f"{weight.shape[0] - 1}")
    channel = conv_out[index].float()
    return {
        "layer": name, "count": weight.shape[0], "index": index, "shape": list(weight.shape[1:]),
        "stride": list(_pair(conv.stride)), "padding": list(_pair(conv.padding)), "groups": conv.groups,
        "weights": float32_base64(weight),
        "bias": None if conv.bias is None else conv.bias.detach().float().cpu().tolist(),
        "output": {"shape": list(channel.shape), "values": float32_base64(channel), "png": colour_png(channel)},
    }


def _handmade_part(picture: torch.Tensor) -> list[dict[str, Any]]:
    return [{"name": name, "kernel": kernel.tolist(), "png": colour_png(convolve(picture, kernel), "gray")}
            for name, kernel in HANDMADE.items()]


def _stage_part(recorder: _Recorder, stages: dict[str, nn.Module], trainable: set[int] | None,
                channels: int) -> list[dict[str, Any]]:
    """Each stage: its output, the layers that change H x W on the way to it, its parameters and its top maps."""
    answer, start, seen = [], 0, set()
    for name in stages:
        end = recorder.order[name]
        leaves = []
        for leaf in recorder.leaves[start:end]:  # a layer run twice (a Bottleneck's ReLU) counts once
            if id(leaf[1]) not in seen:
                seen.add(id(leaf[1]))
                leaves.append(leaf)
        start = end
        params = [p for _, module, *_ in leaves for p in module.parameters(recurse=False)]
        fmap = recorder.outputs[name][0].detach().float().cpu()
        strongest = fmap.mean(dim=(1, 2)).argsort(descending=True)[:channels].tolist()
        answer.append({
            "name": name, "shape": list(fmap.shape),
            "steps": [_step(n, m, i, o) for n, m, i, o, _ in leaves if len(i) == 3 and len(o) == 3 and i[1:] != o[1:]],
            "params": sum(p.numel() for p in params),
            "trainable": _trainable_count(params, trainable),
            "layers": len(leaves),
            "mean_png": colour_png(fmap.mean(0), "magma"),
            "channels": [{"index": c, "mean": float(fmap[c].mean()), "png": colour_png(fmap[c])} for c in strongest],
        })
    return answer


def _head_part(head: nn.Module, recorder: _Recorder, trainable: set[int] | None) -> list[dict[str, Any]]:
    rows = []
    for name, module in head.named_children():
        params = list(module.parameters())
        rows.append({"name": name, "type": type(module).__name__, "text": repr(module),
                     "out": list(recorder.outputs[f"head.{name}"].shape[1:]), "params": sum(p.numel() for p in params),
                     "trainable": _trainable_count(params, trainable)})
    return rows


def inside_view(net: nn.Module, transform: v2.Compose, image: Image.Image, *, classes: Sequence[str],
                forward: nn.Module | None = None, cam_layer: str | None = None, kernel: int | None = None,
                trainable: set[int] | None = None, state: str = "", multi_label: bool = False, top_classes: int = TOP_CLASSES,
                top_channels: int = TOP_CHANNELS) -> dict[str, Any]:
    """Everything the "Inside the model" view shows for ``image``, as a JSON-able dict.

    Args:
        net: the classifier (``backbone`` and ``head``) whose modules are hooked.
        transform: its eval transform (resize, crop, ``ToDtype``, ``Normalize``).
        image: the RGB photo.
        classes: class names in label order.
        forward: what to call on the batch, e.g. a PrecisionNet holding ``net`` (the run's precision and
            memory format); ``net`` itself if None.
        cam_layer: the stage Grad-CAM looks at (a name of :func:`body_stages`); None: the last stage.
        kernel: the first-layer kernel to follow; None: the one whose output is largest on average.
        trainable: ids of the parameters trainable in the schedule's stage (``freezing.trainable_parameter_ids``);
            None reads ``requires_grad``.
        state: the trainable state in words.
        multi_label: the probabilities are a sigmoid per class (else a softmax).
    """
    forward = net if forward is None else forward
    pixels = transform.uint8_view()(image)
    *_, to_float, normalize = transform.transforms
    normalized = normalize(to_float(pixels))
    mean, std = list(normalize.mean), list(normalize.std)
    convs = first_conv(net.backbone)
    stages, stages_error = body_stages(net.backbone)
    recorder = _Recorder()
    recorder.keep_leaves(_source_names(net.backbone))
    if convs:
        recorder.keep("conv", convs[1])
    if stages is not None:
        cam_layer = cam_layer or list(stages)[-1]
        if cam_layer not in stages:
            raise ValueError(f"cam_layer={cam_layer!r}; choose one of {', '.join(stages)}")
    for name, module in (stages or {}).items():
        recorder.keep(name, module, clone=name != cam_layer)
    recorder.keep("features", net.backbone, clone=False)
    for name, module in net.head.named_children():
        recorder.keep(f"head.{name}", module, clone=name != "0")
    device = next(net.parameters()).device
    was_training = net.training
    try:
        net.eval()
        with torch.enable_grad():
            logits = forward(normalized.unsqueeze(0).to(device).requires_grad_(True))[0].float()
    finally:
        recorder.remove()
        net.train(was_training)
    probabilities = logits.detach().sigmoid() if multi_label else logits.detach().softmax(0)
    answer: dict[str, Any] = {
        "input": _input_part(pixels, normalized, mean, std, transform),
        "handmade": _handmade_part(pixels.float() / 255),
        "state": state,
    }
    if convs:
        answer["kernel"] = _kernel_part(convs[1], convs[0], recorder.outputs["conv"][0], kernel)
    else:
        answer["kernel_error"] = f"the body {type(net.backbone).__name__} has no Conv2d layer to follow"
    if stages is None:
        answer["stages_error"] = stages_error
        cam_name, cam_activations = "the body's output", recorder.outputs["features"]
    else:
        answer["stages"] = _stage_part(recorder, stages, trainable, top_channels)
        cam_name, cam_activations = cam_layer, recorder.outputs[cam_layer]
    head_params = list(net.head.parameters())
    answer["head"] = {"layers": _head_part(net.head, recorder, trainable),
                      "params": sum(p.numel() for p in head_params),
                      "trainable": _trainable_count(head_params, trainable)}

    features = recorder.outputs["features"]
    pooled_map = recorder.outputs["head.0"]
    pooled = pooled_map.detach().float().flatten()
    channels = features.shape[1]
    concat = isinstance(net.head[0], AdaptiveConcatPool2d)
    affine = all(isinstance(m, AFFINE_HEAD_LAYERS) for m in list(net.head.children())[1:])
    answer["pooling"] = {
        "kind": "concat" if concat else type(net.head[0]).__name__, "channels": channels, "length": pooled.numel(),
        "feature_shape": list(features.shape[1:]),
        "max": float32_base64(pooled[:channels]) if concat else None,
        "avg": float32_base64(pooled[channels:] if concat else pooled[:channels]),
    }
    answer["head"]["affine"] = affine
    final = features[0].detach().float().cpu()
    picked = probabilities.topk(min(top_classes, len(classes)))
    answer["classes"] = []
    for probability, index in zip(picked.values.tolist(), picked.indices.tolist()):
        cam_gradients, pooled_gradients = torch.autograd.grad(logits[index], [cam_activations, pooled_map],
                                                              retain_graph=True)
        contributions = (pooled_gradients.float().flatten() * pooled).cpu()
        per_channel = contributions[:channels] + (contributions[channels:] if concat else 0)
        top = per_channel.argsort(descending=True)[:TOP_CONTRIBUTIONS].tolist()
        answer["classes"].append({
            "index": index, "label": classes[index], "probability": probability, "logit": float(logits[index].detach()),
            "sum": float(contributions.double().sum()),
            "bias": float(logits[index].detach()) - float(contributions.double().sum()),
            "contributions": [{"channel": c, "total": float(per_channel[c]),
                               "max": float(contributions[c]) if concat else None,
                               "avg": float(contributions[c + channels] if concat else contributions[c]),
                               "png": colour_png(final[c])} for c in top],
            "cam": heatmap_png(cam_map(cam_activations, cam_gradients, normalized.shape[-2:]).cpu()),
        })
    answer["cam_layer"] = cam_name
    answer["probabilities"] = probabilities.tolist()
    net.zero_grad(set_to_none=True)
    return answer
