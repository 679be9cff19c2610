import pytest
import torch
import torchvision

from src.callbacks.staged_finetuning import StagedFineTuning, count_parameters
from src.models.components.backbones import ResNetBody
from src.models.components.classifier import ImageClassifier
from tests.conftest import require_extra


@pytest.fixture(scope="module")
def resnet50_44():
    return ImageClassifier(ResNetBody("resnet50", weights=None), num_classes=44)


def test_resnet50_with_44_classes_has_the_seed_parameter_counts(resnet50_44):
    assert count_parameters(resnet50_44) == 25_637_484
    groups = resnet50_44.layer_groups()
    StagedFineTuning.freeze(groups[:-1], train_bn=True)  # learner.freeze()
    try:
        assert count_parameters(resnet50_44, trainable_only=True) == 2_182_572
    finally:
        StagedFineTuning.make_trainable(groups)


def test_layer_groups_are_fastai_split(resnet50_44):
    first, second, head = resnet50_44.layer_groups()
    body = list(resnet50_44.backbone.children())
    assert list(first.children()) == body[:6]
    assert list(second.children()) == body[6:]
    assert head is resnet50_44.head
    assert resnet50_44.backbone.num_features == 2048


def test_forward_stages_and_shapes():
    net = ImageClassifier(ResNetBody("resnet18", weights=None), num_classes=3).eval()
    images = torch.randn(2, 3, 64, 64)
    features = net.forward_features(images)
    assert features.shape == (2, 512, 2, 2)
    assert torch.allclose(net.forward_head(features), net(images))


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(ValueError, match="resnet18, resnet34, resnet50, resnet101, resnet152"):
        ResNetBody("resnet49")


def test_weights_from_a_state_dict_file(tmp_path):
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    body = ResNetBody("resnet18", weights=str(path))
    assert torch.equal(body[0].weight, reference.conv1.weight)
    assert torch.equal(body[4][0].conv1.weight, reference.layer1[0].conv1.weight)


def test_weights_file_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(ValueError, match="does not hold resnet18 weights"):
        ResNetBody("resnet18", weights=str(path))


def test_missing_weights_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        ResNetBody("resnet18", weights=str(tmp_path / "nowhere.pth"))


# torchvision's weight enums fetch through the name torchvision.models._api bound at import, so
# that is the reference to patch: patching torch.hub's would leave the real download in place.
RESNET18_IMAGENET_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


def test_imagenet_weights_come_from_torchvisions_url(monkeypatch):
    import torchvision.models._api

    reference = torchvision.models.resnet18()
    requested = []

    def cached_weights(url, *args, **kwargs):
        requested.append(url)
        return reference.state_dict()

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", cached_weights)
    body = ResNetBody("resnet18", weights="imagenet")
    assert requested == [RESNET18_IMAGENET_URL]
    assert torch.equal(body[0].weight, reference.conv1.weight)


def test_imagenet_weights_offline_names_the_offline_overrides(monkeypatch, tmp_path):
    from urllib.error import URLError

    import torchvision.models._api

    requested = []

    def no_network(url, *args, **kwargs):
        requested.append(url)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_network)
    with pytest.raises(OSError) as error:
        ResNetBody("resnet18", weights="imagenet")
    assert requested == [RESNET18_IMAGENET_URL]  # the patched loader, not a real download, failed
    message = str(error.value)
    assert "Temporary failure in name resolution" in message
    assert "model.backbone.weights=null" in message
    assert "model.backbone.weights=/path/to/resnet18.pth" in message


def test_src_audit_offline_ends_in_the_offline_hint_with_exit_status_2(tmp_path):
    # src.audit's body is ImageNet's ResNet50 by default: offline, its one line names the overrides,
    # as src.train's does, instead of a traceback of urllib's error
    require_extra("cleanlab", "audit")  # src.audit needs it before it reaches the download
    import os
    from pathlib import Path
    import subprocess
    import sys

    from tests.conftest import copy_sample

    root = copy_sample(tmp_path / "photos", classes=2, per_class=4)
    closed_port = "http://127.0.0.1:9"  # every download fails at once, as without a network
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "https_proxy": closed_port, "HTTPS_PROXY": closed_port}
    done = subprocess.run([sys.executable, "-m", "src.audit", f"data.root={root}", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert "could not fetch torchvision's ImageNet weights for resnet50" in last and "model.backbone.weights=null" in last, last
