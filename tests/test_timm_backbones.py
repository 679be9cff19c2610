"""timm backbones (``model.backbone.name=timm/<name>``): widths, layer groups, weights, a real run."""

import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import open_dict
from torch import nn

from tests.conftest import require_extra

timm = require_extra("timm", "timm")

from src.callbacks.staged_finetuning import StagedFineTuning  # noqa: E402
from src.runs.config_checks import model_layer_groups  # noqa: E402
from src.models.components.backbones import ResNetBody, build_backbone  # noqa: E402
from src.models.components.timm_body import TimmBody  # noqa: E402
from src.runs.training import train  # noqa: E402
from tests.conftest import TINY_OVERRIDES, compose_config  # noqa: E402

# The first group's last module: the last stage below 1/16 resolution (fastai's ResNet cut).
GROUP_0_ENDS_WITH = {"convnext_tiny": "stages.1", "efficientnet_b0": "blocks.2", "resnet18": "layer2"}


@pytest.fixture(scope="module")
def bodies() -> dict[str, TimmBody]:
    """Each body built once for the module (convnext_tiny takes a few seconds on 2 cores)."""
    torch.manual_seed(0)
    return {arch: build_backbone(f"timm/{arch}", weights=None) for arch in GROUP_0_ENDS_WITH}


def _params(module: nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


@pytest.mark.parametrize("arch", list(GROUP_0_ENDS_WITH))
def test_body_outputs_timms_num_features_as_feature_maps(bodies, arch):
    body = bodies[arch]
    assert isinstance(body, TimmBody) and body.name == f"timm/{arch}"
    assert body.num_features == body.model.num_features
    features = body.eval()(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, body.num_features, 2, 2)  # unpooled: the head's concat pool follows


@pytest.mark.parametrize("arch", list(GROUP_0_ENDS_WITH))
def test_layer_groups_split_every_parameter_once_at_stride_16(bodies, arch):
    body = bodies[arch]
    first, second = body.layer_groups()
    assert _params(first) and _params(second)
    assert not _params(first) & _params(second)
    assert _params(first) | _params(second) == _params(body)
    stages = body.stages()
    cut = GROUP_0_ENDS_WITH[arch]
    assert first[-1] is stages[cut]
    for name, stage in stages.items():
        reduction = next(i["reduction"] for i in body.model.feature_info if i["module"] == name)
        assert _params(stage) <= _params(first if reduction < 16 else second), name


def test_timm_resnet18_splits_as_fastais_torchvision_resnet18(bodies):
    timm_first, timm_second = bodies["resnet18"].layer_groups()
    tv_first, tv_second = ResNetBody("resnet18", weights=None).layer_groups()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(timm_first), count(timm_second)) == (count(tv_first), count(tv_second)) == (683_072, 10_493_440)


def test_mobilenetv3_width_is_that_of_its_conv_head():
    body = build_backbone("timm/mobilenetv3_small_050", weights=None).eval()
    assert body.model.num_features == 288 and body.num_features == 1024  # conv_head widens 288 -> 1024
    assert body(torch.randn(1, 3, 32, 32)).shape == (1, 1024, 1, 1)


def test_freeze_keeps_batchnorm_training_and_freezes_layernorm(bodies):
    """Frozen groups keep BatchNorm training (train_bn, as fastai v1 and Lightning); ConvNeXt's
    LayerNorms are not BatchNorm and freeze with their group."""
    effnet = bodies["efficientnet_b0"]
    first, second = effnet.layer_groups()
    StagedFineTuning.freeze([first], train_bn=True)
    try:
        assert not effnet.model.conv_stem.weight.requires_grad
        assert effnet.model.bn1.weight.requires_grad  # timm's BatchNormAct2d is a BatchNorm2d
        assert all(p.requires_grad for p in second.parameters())
    finally:
        StagedFineTuning.make_trainable([first])
    convnext = bodies["convnext_tiny"]
    first, _ = convnext.layer_groups()
    StagedFineTuning.freeze([first], train_bn=True)
    try:
        assert not any(p.requires_grad for p in first.parameters())
    finally:
        StagedFineTuning.make_trainable([first])


def test_weights_from_a_timm_state_dict_file(tmp_path):
    reference = timm.create_model("resnet18", num_classes=7)  # any class count: the classifier is dropped
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    body = build_backbone("timm/resnet18", weights=str(path))
    assert torch.equal(body.model.conv1.weight, reference.conv1.weight)
    assert torch.equal(body.model.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)


def test_weights_from_a_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    reference = timm.create_model("mobilenetv3_small_050")
    path = tmp_path / "model.safetensors"  # the file timm keeps in the Hugging Face cache
    save_file(reference.state_dict(), path)
    body = build_backbone("timm/mobilenetv3_small_050", weights=str(path))
    assert torch.equal(body.model.conv_head.weight, reference.conv_head.weight)


def test_weights_file_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "mobilenet.pth"
    torch.save(timm.create_model("mobilenetv3_small_050").state_dict(), path)
    with pytest.raises(ValueError, match=r"does not hold timm/resnet18 weights.*timm.create_model\('resnet18'\)"):
        build_backbone("timm/resnet18", weights=str(path))
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        build_backbone("timm/resnet18", weights=str(tmp_path / "nowhere.pth"))


def test_imagenet_weights_offline_names_the_offline_overrides(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def no_network(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr("timm.models._builder.load_pretrained", no_network)  # never downloads
    with pytest.raises(OSError) as error:
        build_backbone("timm/resnet18", weights="imagenet")
    message = str(error.value)
    assert "model.backbone.weights=null" in message
    assert "model.backbone.weights=/path/to/resnet18.pth" in message
    assert "timm.create_model('resnet18', pretrained=True).state_dict()" in message


def test_without_timm_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[timm\]"'):
        build_backbone("timm/resnet18", weights=None)


@pytest.mark.parametrize(("name", "text"), [
    ("timm/no_such_net", "timm has no model 'no_such_net'"),
    ("timm/vit_tiny_patch16_224", "vision transformers are not supported"),
    ("timm/swin_tiny_patch4_window7_224", "outputs NHWC feature maps"),
])
def test_models_without_a_cnn_feature_map_are_refused(name, text):
    with torch.device("meta"), pytest.raises(ValueError, match=text):
        build_backbone(name, weights=None)


class FreezeProbe(L.Callback):
    """What each epoch of a run freezes and changes; ``seen`` is shared because train() builds the probe."""

    seen: list[dict] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.start = {k: v.detach().clone() for k, v in self._weights(pl_module).items()}

    def on_train_epoch_end(self, trainer, pl_module):
        first, second, head = pl_module.net.layer_groups()
        bns = [m for m in first.modules() if isinstance(m, nn.BatchNorm2d)]
        weights = self._weights(pl_module)
        FreezeProbe.seen.append({
            "first_frozen": not any(p.requires_grad for m in first.modules() if m not in bns
                                    for p in m.parameters(recurse=False)),
            "bn_trains": bool(bns) and all(m.weight.requires_grad for m in bns),
            "second_trains": all(p.requires_grad for p in second.parameters()),
            "changed": {k: not torch.equal(self.start[k], v) for k, v in weights.items()},
        })

    @staticmethod
    def _weights(pl_module):
        return {"stem": pl_module.net.backbone.model.conv_stem.weight, "head": pl_module.net.head[-1].weight}


def test_timm_backbone_trains_frozen_then_unfrozen_and_reloads(image_root, tmp_path, monkeypatch):
    from src.models.loading import load_classifier

    monkeypatch.setattr(FreezeProbe, "seen", [])
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("model.backbone.name=")]
    tiny_cfg = compose_config([*overrides, "model.backbone.name=timm/mobilenetv3_small_050", f"data.root={image_root}"])
    with open_dict(tiny_cfg):
        tiny_cfg.paths.output_dir = str(tmp_path / "run")
        tiny_cfg.callbacks.probe = {"_target_": "tests.test_timm_backbones.FreezeProbe"}
    assert model_layer_groups(tiny_cfg.model) == 3  # what the config check counts, on the meta device
    metrics = train(tiny_cfg)
    assert 0.0 <= metrics["val/error_rate"] <= 1.0
    head_stage, all_stage = FreezeProbe.seen
    assert head_stage["first_frozen"] and head_stage["bn_trains"]
    assert head_stage["changed"] == {"stem": False, "head": True}
    assert not all_stage["first_frozen"] and all_stage["second_trains"]
    assert all_stage["changed"] == {"stem": True, "head": True}

    checkpoint_path = Path(tiny_cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    loaded = load_classifier(checkpoint_path)
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["state_dict"]
    assert isinstance(loaded.net.backbone, TimmBody) and loaded.net.backbone.name == "timm/mobilenetv3_small_050"
    assert torch.equal(loaded.net.backbone.model.conv_stem.weight, state["net.backbone.model.conv_stem.weight"])
    assert loaded.net(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_inspect_draws_a_timm_body_at_its_deepest_stage_of_at_least_4x4(image_root, tmp_path):
    from src.inspect import _cam_layer, inspect_model
    from src.visualize.cam import cam_map_sizes
    from tests.test_inspect import build_net

    cfg = compose_config(["model.backbone.name=timm/mobilenetv3_small_050", "model.backbone.weights=null",
                          f"data.root={image_root}", "data.size=64", "data.num_workers=0", "batch_count=4"],
                         config_name="inspect")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "inspect")
    paths = inspect_model(cfg)
    assert {"summary", "kernels", "features", "pooling", "cam"} <= set(paths)
    assert "timm/mobilenetv3_small_050 body" in paths["summary"].read_text()
    net = build_net(cfg, num_classes=3)
    with pytest.raises(ValueError, match=r"cam_layer='layer4'; choose one of bn1, blocks.0, blocks.1, blocks.3, blocks.5"):
        _cam_layer(net, "layer4", 64)
    # by default the deepest stage whose map is at least 4 x 4: at 64 px blocks.5 is 2 x 2
    assert cam_map_sizes(net.backbone, 64)["blocks.5"] == (2, 2)
    assert _cam_layer(net, None, 64)[0] == "blocks.3" and cam_map_sizes(net.backbone, 64)["blocks.3"] == (4, 4)
