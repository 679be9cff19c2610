"""The "Inside the model" view (src/visualize/walkthrough.py): every number it sends, checked against the model."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from src.data.transforms.presets import EvalTransform
from src.inference.precision_net import PrecisionNet
from src.models.components.backbones import build_backbone
from src.models.components.classifier import ImageClassifier
from src.optim.freezing import freeze_layer_groups, trainable_parameter_ids
from src.visualize.cam import grad_cam
from src.visualize.data_urls import heatmap_png
from src.visualize.walkthrough import inside_view, multiply_add, output_size
from tests.conftest import require_extra

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SIZE = 64
CLASSES = [f"class {i}" for i in range(5)]


def floats(text: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype="<f4").copy())


def page_input(view: dict) -> torch.Tensor:
    """The normalised input as the page computes it from the uint8 pixels sent (float32 steps, as torch's)."""
    part = view["input"]
    pixels = torch.from_numpy(np.frombuffer(base64.b64decode(part["pixels"]), dtype=np.uint8).copy())
    scaled = pixels.float().mul(1 / 255).view(part["shape"])
    return (scaled - torch.tensor(part["mean"]).view(3, 1, 1)) / torch.tensor(part["std"]).view(3, 1, 1)


def hand_made_image() -> Image.Image:
    """A 64 x 64 photo with a known layout: left half red 200, right half blue 100, a green square."""
    pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    pixels[:, : SIZE // 2, 0] = 200
    pixels[:, SIZE // 2:, 2] = 100
    pixels[20:30, 20:30, 1] = 255
    return Image.fromarray(pixels)


def network(hidden=(512,), name: str = "resnet18") -> ImageClassifier:
    torch.manual_seed(0)
    net = ImageClassifier(build_backbone(name, None), len(CLASSES), hidden=hidden).eval()
    for module in net.head.modules():  # running statistics that are not the identity
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
        if isinstance(module, nn.Linear):
            module.bias.data.uniform_(-0.3, 0.3)
    return net


@pytest.fixture(scope="module")
def transform() -> EvalTransform:
    return EvalTransform(SIZE, MEAN, STD)


def test_a_hand_set_kernel_gives_the_value_worked_out_by_hand_and_by_conv2d(transform):
    """Kernel 5 of conv1 set by hand: 1 on the red channel's 7 x 7, 0 elsewhere. Over the red half (200) the
    output is 49 normalised red values; at the corner (0, 0) padding 3 leaves 4 x 4 = 16 of them."""
    net = network()
    with torch.no_grad():
        net.backbone[0].weight[5] = 0
        net.backbone[0].weight[5, 0] = 1
    view = inside_view(net, transform, hand_made_image(), classes=CLASSES, kernel=5)
    kernel = view["kernel"]
    assert (kernel["index"], kernel["shape"], kernel["stride"], kernel["padding"]) == (5, [3, 7, 7], [2, 2], [3, 3])
    red = (200 / 255 - MEAN[0]) / STD[0]
    weights = floats(kernel["weights"]).view(64, 3, 7, 7)
    image = page_input(view)
    output = floats(kernel["output"]["values"]).view(kernel["output"]["shape"])
    expected = F.conv2d(image.unsqueeze(0), weights, stride=2, padding=3)[0, 5]
    for (row, col), by_hand in (((10, 5), 49 * red), ((0, 0), 16 * red)):
        field = multiply_add(image, weights[5], kernel["stride"], kernel["padding"], row, col)
        assert field["total"] == pytest.approx(by_hand, rel=1e-5)
        assert field["total"] == pytest.approx(float(expected[row, col]), abs=1e-4)
        assert float(output[row, col]) == pytest.approx(by_hand, rel=1e-5)  # the model's own feature map
    assert (field["top"], field["left"]) == (-3, -3)
    # the other way round: every position of a learned kernel equals F.conv2d
    learned = F.conv2d(image.unsqueeze(0), weights[:1], stride=2, padding=3)[0, 0]
    for row, col in ((0, 31), (17, 3), (31, 31)):
        assert multiply_add(image, weights[0], [2, 2], [3, 3], row, col)["total"] == pytest.approx(
            float(learned[row, col]), abs=1e-4)
    with pytest.raises(ValueError, match=r"output position \(32, 0\) is outside"):
        multiply_add(image, weights[0], [2, 2], [3, 3], 32, 0)


def test_the_shapes_and_the_arithmetic_shown_are_the_models(transform):
    net = network(name="resnet50")
    view = inside_view(net, transform, hand_made_image(), classes=CLASSES)
    x, shapes = transform(hand_made_image()).unsqueeze(0), {}
    with torch.no_grad():
        for name, layer in zip(("conv1", "bn1", "relu", "stem", "layer1", "layer2", "layer3", "layer4"), net.backbone):
            x = layer(x)
            shapes[name] = list(x.shape[1:])
    assert [(s["name"], s["shape"]) for s in view["stages"]] == [(n, shapes[n]) for n in
                                                                 ("stem", "layer1", "layer2", "layer3", "layer4")]
    assert view["stages"][0]["shape"] == [64, 16, 16] and view["stages"][-1]["shape"] == [2048, 2, 2]
    stem = view["stages"][0]["steps"]
    assert [(s["module"], s["in"][1], s["kernel"], s["stride"], s["padding"], s["out"][1]) for s in stem] == [
        ("conv1", 64, 7, 2, 3, 32), ("maxpool", 32, 3, 2, 1, 16)]
    assert view["stages"][1]["steps"] == []  # layer1 keeps 16 x 16
    for stage in view["stages"]:
        for step in stage["steps"]:
            assert output_size(step["in"][1], step["kernel"], step["stride"], step["padding"]) == step["out"][1]
    # parameters per stage add up to the body's, each counted once
    assert sum(s["params"] for s in view["stages"]) == sum(p.numel() for p in net.backbone.parameters())
    assert view["stages"][4]["params"] == sum(p.numel() for p in net.backbone[7].parameters())
    # the head's layers and the pooled vector
    features = net.backbone(transform(hand_made_image()).unsqueeze(0))
    shapes = []
    with torch.no_grad():
        for layer in net.head:
            features = layer(features)
            shapes.append(list(features.shape[1:]))
    assert [layer["out"] for layer in view["head"]["layers"]] == shapes
    assert view["pooling"]["length"] == 4096 and view["pooling"]["channels"] == 2048


def _linear_head_bias(net: ImageClassifier) -> torch.Tensor:
    """The scores of a zero pooled vector: an affine head's bias."""
    with torch.no_grad():
        return nn.Sequential(*list(net.head)[1:])(torch.zeros(1, net.head[4].in_features, 1, 1))[0]


def test_the_contributions_of_a_linear_head_are_weight_times_value_and_sum_to_the_score_minus_its_bias(transform):
    net = network(hidden=())  # pool, flatten, BatchNorm1d, Dropout, Linear: affine in eval mode
    view = inside_view(net, transform, hand_made_image(), classes=CLASSES)
    assert view["head"]["affine"] is True
    with torch.no_grad():
        pooled = net.head[:2](net.backbone(transform(hand_made_image()).unsqueeze(0)))[0]
        logits = net(transform(hand_made_image()).unsqueeze(0))[0]
    bn, linear = net.head[2], net.head[4]
    weight = linear.weight * (bn.weight / (bn.running_var + bn.eps).sqrt())  # BatchNorm folded into the weights
    bias = _linear_head_bias(net)
    pooled_sent = torch.cat([floats(view["pooling"]["max"]), floats(view["pooling"]["avg"])])
    assert torch.allclose(pooled_sent, pooled, atol=1e-6)
    for part in view["classes"]:
        c = part["index"]
        assert part["logit"] == pytest.approx(float(logits[c]), abs=1e-5)
        assert part["bias"] == pytest.approx(float(bias[c]), abs=1e-4)
        assert part["sum"] == pytest.approx(float(logits[c] - bias[c]), abs=1e-4)
        products = (weight[c] * pooled).detach()
        per_channel = products[:512] + products[512:]
        assert [item["channel"] for item in part["contributions"]] == per_channel.argsort(descending=True)[:6].tolist()
        for item in part["contributions"]:
            assert item["max"] == pytest.approx(float(products[item["channel"]]), abs=1e-5)
            assert item["avg"] == pytest.approx(float(products[512 + item["channel"]]), abs=1e-5)
    assert [p["index"] for p in view["classes"]] == logits.topk(3).indices.tolist()


def test_the_default_heads_contributions_sum_to_the_score_minus_the_bias_of_its_relu_region(transform):
    """fastai's head (BatchNorm, Linear, ReLU, BatchNorm, Linear) is affine where its ReLUs keep their pattern:
    score = sum(J x) + b with J and b of that region, worked out here from the layers' matrices."""
    net = network()
    view = inside_view(net, transform, hand_made_image(), classes=CLASSES)
    assert view["head"]["affine"] is False
    with torch.no_grad():
        x = net.head[:2](net.backbone(transform(hand_made_image()).unsqueeze(0)))[0]
        bn1, lin1, bn2, lin2 = net.head[2], net.head[4], net.head[6], net.head[8]

        def fold(bn):  # BatchNorm in eval mode: y = a x + c
            a = bn.weight / (bn.running_var + bn.eps).sqrt()
            return a, bn.bias - bn.running_mean * a

        a1, c1 = fold(bn1)
        a2, c2 = fold(bn2)
        hidden = lin1.weight @ (a1 * x + c1) + lin1.bias
        on = (hidden > 0).float()  # the region: which ReLUs pass
        jacobian = lin2.weight @ torch.diag(a2) @ torch.diag(on) @ lin1.weight @ torch.diag(a1)
        region_bias = lin2.weight @ (a2 * (on * (lin1.weight @ c1 + lin1.bias)) + c2) + lin2.bias
        scores = jacobian @ x + region_bias
    assert torch.allclose(scores, net(transform(hand_made_image()).unsqueeze(0))[0], atol=1e-4)
    for part in view["classes"]:
        c = part["index"]
        assert part["sum"] == pytest.approx(float(jacobian[c] @ x), abs=1e-4)
        assert part["bias"] == pytest.approx(float(region_bias[c]), abs=1e-4)


def test_grad_cam_and_probabilities_come_from_the_one_pass_at_the_runs_precision(transform):
    net = network()
    runner = PrecisionNet(net, "bf16-mixed", torch.device("cpu"), channels_last=True)
    image = hand_made_image()
    view = inside_view(net, transform, image, classes=CLASSES, forward=runner, cam_layer="layer3", top_classes=1)
    with torch.no_grad():
        logits = runner(transform(image).unsqueeze(0))[0]
    assert torch.allclose(torch.tensor(view["probabilities"]), logits.softmax(0), atol=1e-6)  # bf16, not fp32
    with torch.no_grad():
        fp32 = net(transform(image).unsqueeze(0))[0].softmax(0)
    assert not torch.allclose(torch.tensor(view["probabilities"]), fp32, atol=1e-6)
    assert view["cam_layer"] == "layer3"
    for part in view["classes"]:
        cam, _ = grad_cam(runner, net.backbone[6], transform(image), target=part["index"])
        assert part["cam"] == heatmap_png(cam)
    assert all(p.grad is None for p in net.parameters())  # nothing left behind
    assert not net.training


def test_trainable_counts_follow_the_schedules_stage_without_freezing_the_network(transform):
    net = network()
    groups = net.layer_groups()
    head_only = trainable_parameter_ids(groups, freeze_to=-1, train_bn=True)
    view = inside_view(net, transform, hand_made_image(), classes=CLASSES, trainable=head_only)
    bn_params = lambda module: sum(m.weight.numel() + m.bias.numel() for m in module.modules()  # noqa: E731
                                   if isinstance(m, nn.BatchNorm2d))
    assert [s["trainable"] for s in view["stages"]] == [bn_params(net.backbone[1])] + [
        bn_params(net.backbone[i]) for i in range(4, 8)]
    assert view["head"]["trainable"] == view["head"]["params"] == sum(p.numel() for p in net.head.parameters())
    assert all(p.requires_grad for p in net.parameters())  # described, not applied
    for freeze_to in (-1, 0, 1):
        for train_bn in (True, False):
            ids = trainable_parameter_ids(groups, freeze_to, train_bn)
            freeze_layer_groups(groups, freeze_to, train_bn)
            assert ids == {id(p) for p in net.parameters() if p.requires_grad}, (freeze_to, train_bn)


class _Plain(nn.Sequential):
    """A body that is neither a ResNet body nor a timm one."""

    num_features = 16

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU())

    def layer_groups(self) -> list[nn.Module]:
        return [self]


def test_a_body_whose_stages_cannot_be_found_says_so_and_the_rest_is_shown(transform):
    net = ImageClassifier(_Plain(), len(CLASSES)).eval()
    view = inside_view(net, transform, hand_made_image(), classes=CLASSES, kernel=2)
    assert "stages" not in view and "stages cannot be found" in view["stages_error"]
    assert view["kernel"]["index"] == 2 and view["kernel"]["shape"] == [3, 3, 3]
    assert len(view["classes"]) == 3 and view["pooling"]["length"] == 32
    with pytest.raises(ValueError, match="kernel=16; the first layer 0 has 16 kernels: use 0 to 15"):
        inside_view(net, transform, hand_made_image(), classes=CLASSES, kernel=16)


def test_a_timm_body_shows_its_feature_info_stages(transform):
    require_extra("timm", "timm")
    net = ImageClassifier(build_backbone("timm/resnet10t", None), len(CLASSES)).eval()
    view = inside_view(net, transform, hand_made_image(), classes=CLASSES)
    stages = net.backbone.stages()
    assert [s["name"] for s in view["stages"]] == list(stages)
    outputs = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: outputs.__setitem__(n, list(o.shape[1:])))
             for n, m in stages.items()]
    with torch.no_grad():
        net(transform(hand_made_image()).unsqueeze(0))
    for hook in hooks:
        hook.remove()
    assert [s["shape"] for s in view["stages"]] == list(outputs.values())
    assert view["kernel"]["layer"] == "conv1.0"  # timm's own name for the first convolution
