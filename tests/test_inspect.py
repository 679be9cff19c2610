"""`python -m src.inspect`: every artefact, on tiny real-image runs, checked for its numbers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from matplotlib.image import imread
from omegaconf import DictConfig, open_dict
from PIL import Image

from src.callbacks.staged_finetuning import count_parameters
from src.inspect import inspect_model, load_subject, model_summary
from src.optim.freezing import freeze_layer_groups
from src.runs.builder import build_module
from src.runs.training import train
from src.visualize.cam import grad_cam
from src.visualize.features import RESNET_BODY_NAMES, SHOWN, stage_outputs
from src.visualize.kernels import KERNELS, SEED_EDGE, convolve
from src.visualize.summary import layer_rows
from tests.conftest import CONFIG_DIR, TINY_OVERRIDES, compose_config, copy_sample

SIZE = 64  # layer3 is 4 x 4 and layer4 2 x 2 at 64 px: Grad-CAM has a map with detail
ARTEFACTS = ("summary.txt", "batch.png", "tensor.txt", "kernels.png", "features.png", "pooling.png", "cam.png")


def compose_inspect(overrides: list[str], output_dir: Path) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="inspect", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def build_net(cfg: DictConfig, num_classes: int) -> torch.nn.Module:
    """The untrained network of ``cfg`` for ``num_classes`` classes, built as every command builds it."""
    return build_module(cfg, classes=[f"class {i}" for i in range(num_classes)], multi_label=False).net


def totals(summary: str) -> tuple[int, int, int]:
    numbers = [re.search(rf"^Total {kind}params: ([\d,]+)$", summary, re.M).group(1) for kind in ("", "trainable ", "non-trainable ")]
    return tuple(int(n.replace(",", "")) for n in numbers)


@pytest.fixture(scope="module")
def image_root(module_tmp_path) -> Path:
    return copy_sample(module_tmp_path / "data" / "images")


@pytest.fixture(scope="module")
def checkpoint(module_tmp_path, image_root) -> Path:
    """A tiny trained run (ResNet18, 64 px, 3 classes, two stages of three batches)."""
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={image_root}", f"data.size={SIZE}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(module_tmp_path / "run")
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


def tiny_inspect_overrides(image_root: Path) -> list[str]:
    return ["model.backbone.name=resnet18", "model.backbone.weights=null", f"data.root={image_root}",
            f"data.size={SIZE}", "data.batch_size=8", "data.num_workers=0", "cam_layer=layer3", "batch_count=6"]


def test_resnet50_with_44_classes_and_a_frozen_body_prints_the_seed_totals(tmp_path):
    cfg = compose_inspect(["experiment=resnet50", "model.backbone.weights=null"], tmp_path)
    summary = model_summary(load_subject(cfg, classes=[f"breed {i}" for i in range(44)]))
    assert "Total params: 25,637,484\n" in summary
    assert "Total trainable params: 2,182,572\n" in summary
    assert "Total non-trainable params: 23,454,912\n" in summary
    header, first = summary.splitlines()[2], summary.splitlines()[4]
    assert header.split() == ["Layer", "(type)", "Output", "Shape", "Param", "#", "Trainable"]
    assert first.split() == ["Conv2d", "[64,", "150,", "150]", "9,408", "False"]  # 300 px -> 150 after stride 2
    assert re.search(r"^BatchNorm2d\s+\[64, 150, 150\]\s+128\s+True", summary, re.M)  # train_bn
    assert re.search(r"^Linear\s+\[44\]\s+22,572\s+True", summary, re.M)
    assert "stage 1/2 'head'" in summary and "freeze_to=-1" in summary
    rows = [line for line in summary.splitlines() if re.match(r"^\w+\s+\[", line)]
    assert sum(int(line.split("]")[1].split()[0].replace(",", "")) for line in rows) == 25_637_484


def test_summary_rows_have_the_real_output_shapes():
    net = build_net(compose_config(["model.backbone.weights=null", "model.backbone.name=resnet18"]), 5)
    rows = layer_rows(net, (3, SIZE, SIZE))
    assert [r.output_shape for r in rows if r.name == "AdaptiveMaxPool2d"] == [(512, 1, 1)]
    assert rows[0].output_shape == (64, SIZE // 2, SIZE // 2) and rows[-1].output_shape == (5,)
    assert sum(r.params for r in rows) == count_parameters(net)


def test_inspect_before_training_writes_every_artefact(tmp_path, image_root):
    cfg = compose_inspect(tiny_inspect_overrides(image_root), tmp_path / "inspect")
    paths = inspect_model(cfg)
    assert sorted(p.name for p in paths.values()) == sorted(ARTEFACTS)
    assert all(p.parent == tmp_path / "inspect" for p in paths.values())

    summary = paths["summary"].read_text()
    net = build_net(cfg, 3)
    freeze_layer_groups(net.layer_groups(), freeze_to=-1, train_bn=True)  # the default schedule's first stage: body frozen
    trainable = count_parameters(net, trainable_only=True)
    assert totals(summary) == (count_parameters(net), trainable, count_parameters(net) - trainable)
    assert "before training" in summary and "stage 1/2 'head'" in summary

    tensor = paths["tensor"].read_text()
    assert f"tensor shape: (3, {SIZE}, {SIZE})" in tensor
    assert f"images (8, 3, {SIZE}, {SIZE})" in tensor
    first_valid = sorted(image_root.glob("*/*.png"))  # the split is seeded; the file named must exist
    assert Path(re.search(r"^image: (.+)$", tensor, re.M).group(1)) in first_valid
    # Normalisation: after = (before - mean) / std, channel by channel.
    before = [float(m) for m in re.findall(r"mean ([+-][\d.]+)", tensor)[:3]]
    after = [float(m) for m in re.findall(r"mean ([+-][\d.]+)", tensor)[3:6]]
    for b, a, mean, std in zip(before, after, cfg.data.mean, cfg.data.std):
        assert a == pytest.approx((b - mean) / std, abs=2e-3)

    shapes = {name: imread(paths[name]).shape for name in ("batch", "kernels", "features", "pooling", "cam")}
    for name, (height, width, _) in shapes.items():
        assert height >= 200 and width >= 400, (name, height, width)
    assert shapes["features"][0] > shapes["features"][1]  # one row per stage: taller than wide
    # An untrained model has no top losses: the CAM figure holds the chosen image only.
    assert shapes["cam"][1] < 800


def test_inspect_a_checkpoint_shows_the_last_stage_and_the_top_losses(tmp_path, checkpoint, monkeypatch):
    import src.inspect

    drawn_titles = []
    real_cam_figure = src.inspect.cam_figure
    monkeypatch.setattr(src.inspect, "cam_figure", lambda pictures, cams, titles, suptitle: (
        drawn_titles.extend(titles), real_cam_figure(pictures, cams, titles, suptitle))[1])
    cfg = compose_inspect([f"ckpt_path={checkpoint}", "cam_layer=layer3", "top_losses=3", "batch_count=4"], tmp_path)
    paths = inspect_model(cfg)
    # Each top loss names the probability of the actual class: its cross-entropy is -log of it.
    assert re.search(r"\npred \S+, p\(pred\) [01]\.\d\d", drawn_titles[0])
    for title in drawn_titles[1:]:
        loss, probability = map(float, re.fullmatch(r"pred \S+ / actual \S+\nloss (\S+), p\(actual\) (\S+)",
                                                    title).groups())
        assert probability == pytest.approx(np.exp(-loss), abs=0.01), title
    assert sorted(p.name for p in paths.values()) == sorted(ARTEFACTS)
    summary = paths["summary"].read_text()
    total = totals(summary)[0]
    assert total == count_parameters(build_net(compose_config(["model.backbone.weights=null",
                                                               "model.backbone.name=resnet18"]), 3))
    assert totals(summary) == (total, total, 0)
    assert "stage 2/2 'all'" in summary and "last stage" in summary and "all 3 layer groups trainable" in summary
    height, width, _ = imread(paths["cam"]).shape
    assert width >= 1200  # the chosen image and three top losses, each with its overlay


def test_a_checkpoint_without_its_data_needs_an_image(tmp_path, checkpoint, image_root):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(image_root, moved)
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert f"root: {image_root}" in ckpt["hyper_parameters"]["run_config"]  # where inspect looks for the data
    ckpt["hyper_parameters"]["run_config"] = ckpt["hyper_parameters"]["run_config"].replace(
        str(image_root), str(tmp_path / "gone"))
    missing = tmp_path / "missing_data.ckpt"
    torch.save(ckpt, missing)
    with pytest.raises(FileNotFoundError, match=r"data.root=.*gone.*image=PATH"):
        inspect_model(compose_inspect([f"ckpt_path={missing}"], tmp_path / "a"))
    image = next(moved.glob("*/*.png"))
    paths = inspect_model(compose_inspect([f"ckpt_path={missing}", f"image={image}", "cam_layer=layer3"], tmp_path / "b"))
    assert "batch" not in paths and {"summary", "tensor", "kernels", "features", "pooling", "cam"} <= set(paths)
    assert f"image: {image}" in paths["tensor"].read_text()


def test_feature_maps_are_the_model_stage_outputs(checkpoint):
    from src.models.loading import load_classifier

    net = load_classifier(checkpoint).net
    image = torch.randn(3, SIZE, SIZE)
    seen = {}
    hooks = [layer.register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, o.clone()))
             for name, layer in zip(RESNET_BODY_NAMES, net.backbone) if name in SHOWN]
    with torch.no_grad():
        features = net.forward_features(image.unsqueeze(0))
    for hook in hooks:
        hook.remove()
    outputs = stage_outputs(net.backbone, image)
    assert list(outputs) == list(SHOWN)
    assert [tuple(o.shape) for o in outputs.values()] == [
        (64, 32, 32), (64, 16, 16), (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
    for name, output in outputs.items():
        assert torch.allclose(output, seen[name][0], atol=1e-6), name
    assert torch.allclose(outputs["layer4"], features[0], atol=1e-6)


def test_grad_cam_on_a_trained_resnet_gives_the_logits_and_leaves_no_gradients(checkpoint):
    from src.models.loading import load_classifier

    net = load_classifier(checkpoint).net
    image = torch.randn(3, SIZE, SIZE)
    cam, logits = grad_cam(net, net.backbone[6], image)  # layer3
    assert cam.shape == (SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(logits, net(image.unsqueeze(0))[0], atol=1e-5)
    assert all(p.grad is None for p in net.parameters())  # no gradients left behind


class RedOrGreen(torch.nn.Module):
    """Class 0 is "more red than green", class 1 the opposite: a 1x1 convolution picks the red and
    the green channel, a 4x4 average pool makes an 8x8 map of a 32 px image (the layer Grad-CAM
    reads), and the logits are the pooled red minus green and green minus red."""

    def __init__(self) -> None:
        super().__init__()
        self.colours = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1, bias=False), torch.nn.ReLU(), torch.nn.AvgPool2d(4))
        self.head = torch.nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.colours[0].weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).view(2, 3, 1, 1))
            self.head.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.colours(images).mean(dim=(2, 3)))


def test_grad_cam_peaks_where_the_class_evidence_is():
    # A red square top right (the larger: class 0 is predicted) and a green one bottom left, on
    # whole 4x4 cells of the 8x8 map; asymmetric, so a transposed or flipped map would miss them.
    image = torch.zeros(3, 32, 32)
    red, green = (slice(4, 16), slice(16, 28)), (slice(20, 28), slice(4, 12))
    image[0][red] = 1.0
    image[1][green] = 1.0
    net = RedOrGreen()
    for target, evidence, other in [(0, red, green), (1, green, red), (None, red, green)]:
        cam, logits = grad_cam(net, net.colours, image, target)
        assert cam.shape == (32, 32)
        row, col = divmod(int(cam.argmax()), 32)
        assert evidence[0].start <= row < evidence[0].stop and evidence[1].start <= col < evidence[1].stop, target
        inner = (slice(evidence[0].start + 2, evidence[0].stop - 2), slice(evidence[1].start + 2, evidence[1].stop - 2))
        assert torch.allclose(cam[inner], torch.ones_like(cam[inner]))  # the evidence, away from its blurred edge
        assert torch.equal(cam[other], torch.zeros_like(cam[other]))  # counter-evidence: cut by the ReLU
        assert cam[:, :2].eq(0).all() and cam[:2].eq(0).all()  # no colour: no evidence
    assert logits.argmax() == 0  # target None explains the predicted class, red


def test_the_seed_edge_kernel_is_fastais():
    seed = torch.tensor([[0.0, -5 / 3, 1], [-5 / 3, -5 / 3, 1], [1.0, 1, 1]]).expand(1, 3, 3, 3) / 6
    picture = torch.rand(3, 20, 24)
    assert torch.allclose(convolve(picture, SEED_EDGE), F.conv2d(picture[None], seed, padding=1)[0, 0])
    flat = torch.full((3, 10, 10), 0.5)
    assert torch.allclose(convolve(flat, KERNELS["seed edge (fastai)"])[1:-1, 1:-1], torch.zeros(8, 8), atol=1e-6)
    assert torch.allclose(convolve(flat, KERNELS["blur (box)"])[1:-1, 1:-1], torch.full((8, 8), 1.5))


def test_filters_are_laid_out_in_one_mosaic():
    from src.visualize.kernels import filter_grid, mosaic

    weight = torch.randn(64, 3, 7, 7)
    scaled = filter_grid(weight)
    assert scaled.amin(dim=(1, 2, 3)).allclose(torch.zeros(64)) and scaled.amax(dim=(1, 2, 3)).allclose(torch.ones(64))
    sheet = mosaic(scaled)
    assert sheet.shape == (3, 8 * 8 + 1, 8 * 8 + 1)  # 8 x 8 filters of 7 px with 1 px gaps
    assert torch.equal(sheet[:, 1:8, 9:16], scaled[1])


@pytest.mark.parametrize("size, expected", [(224, "layer4"), (64, "layer3"), (32, "layer2")])
def test_default_cam_layer_is_the_deepest_stage_with_a_map_of_at_least_4x4(size, expected):
    from src.visualize.cam import cam_map_sizes, default_cam_layer

    net = build_net(compose_config(TINY_OVERRIDES), num_classes=3)
    assert default_cam_layer(net.backbone, size) == expected
    assert min(cam_map_sizes(net.backbone, size)[expected]) >= 4
    assert net.backbone.training  # the probe leaves the mode as it was


def test_default_cam_layer_warns_when_no_stage_is_4x4(caplog):
    from src.visualize.cam import default_cam_layer

    net = build_net(compose_config(TINY_OVERRIDES), num_classes=3)
    assert default_cam_layer(net.backbone, 8) == "layer1"  # 2x2, the widest there is
    assert "no stage's map is 4 x 4 cells or more (layer1 2x2, layer2 1x1" in caplog.text


def test_inspect_follows_a_16_bit_photo_as_it_follows_its_8_bit_version(tmp_path, checkpoint, image_root):
    """``src.inspect image=...`` reads with the reader of training: the tensor it reports for a 16-bit copy of
    a photo (values x 257) is the 8-bit photo's, to every printed digit."""
    from tests.image_encodings import LOSSLESS

    photo = sorted(image_root.glob("*/*.png"))[-1]
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    sixteen = next(e for e in LOSSLESS if e.name == "16-bit gray PNG").file(rgb, tmp_path)
    reports = []
    for image in (photo, sixteen):
        paths = inspect_model(compose_inspect([f"ckpt_path={checkpoint}", f"image={image}", "cam_layer=layer3"],
                                              tmp_path / image.stem))
        reports.append(paths["tensor"].read_text().replace(str(image), "IMAGE"))
    assert reports[0] == reports[1]
    assert len(np.unique(rgb)) > 100  # a real photo: clipping its 16-bit copy at 255 would leave 2 levels
