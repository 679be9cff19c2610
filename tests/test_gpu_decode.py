"""data.decode_on=device: what the workers read, the fallback for other formats, and the batch decode.

The decode itself runs on CUDA in training; here it runs on the CPU (decode_jpeg's device="cpu"),
which is the same torchvision call on the same byte tensors. The whole run needs a GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from PIL import Image

from src.runs.config_checks import check_train_config
from src.core.problems import ConfigError
from src.data.placement.gpu_decode import CropUnlessEncoded, DeviceDecodeReader, collate_encoded, decode_batch
from src.data.files.image_reader import load_rgb
from src.data.transforms.presets import EvalCropTransform
from src.runs.training import train
from tests.conftest import TINY_OVERRIDES, compose_config, copy_sample


def _photo(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    gradient = np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3)
    noise = np.random.default_rng(seed).integers(0, 30, gradient.shape)
    Image.fromarray(np.clip(gradient + noise, 0, 255).astype(np.uint8)).save(path, quality=95)
    return path


def test_jpegs_are_read_as_bytes_and_other_formats_decoded_and_counted(tmp_path):
    jpeg, png = _photo(tmp_path / "a.jpg", 0), _photo(tmp_path / "b.png", 1)
    reader = DeviceDecodeReader()
    raw = reader(jpeg, min_size=32)
    assert raw.dim() == 1 and raw.dtype == torch.uint8 and bytes(raw[:3].tolist()) == b"\xff\xd8\xff"
    assert isinstance(reader(png, min_size=32), Image.Image)
    (tmp_path / "c.png.jpg").write_bytes(png.read_bytes())  # by content, not by name
    assert isinstance(reader(tmp_path / "c.png.jpg"), Image.Image)
    assert (reader.jpegs.value, reader.fallbacks.value) == (1, 2)
    assert "2 of 3 files" in reader.summary()

    crop = CropUnlessEncoded(EvalCropTransform(32))
    items = [crop(reader(jpeg)), crop(reader(png))]
    assert items[0].dim() == 1 and items[1].shape == (3, 32, 32)
    collated, labels = collate_encoded([(items[0], 0), (items[1], 1)])
    assert isinstance(collated, list) and labels.tolist() == [0, 1]

    batch = decode_batch(collated, crop.crop, "cpu")  # on the GPU in training
    assert batch.dtype == torch.uint8 and batch.shape == (2, 3, 32, 32)
    by_workers = EvalCropTransform(32)(load_rgb(jpeg)).float()  # PIL's decode and resize
    assert (batch[0].float() - by_workers).abs().mean() < 4  # two JPEG decoders and resizers: close, not equal
    assert torch.equal(batch[1], items[1])


def test_decode_on_device_without_cuda_is_a_config_error_naming_the_fix(tiny_cfg):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: decode_on=device is valid here")
    with open_dict(tiny_cfg):
        tiny_cfg.data.decode_on = "device"
    with pytest.raises(ConfigError, match=r"data.decode_on='device': expected a CUDA GPU.*set data.decode_on=workers"):
        check_train_config(tiny_cfg)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="decode_on=device decodes with nvJPEG on a CUDA GPU; none here")
def test_decode_on_device_trains_on_a_gpu(tmp_path, monkeypatch):
    import torchvision.io

    root = copy_sample(tmp_path / "images", classes=3, per_class=10)
    for i, png in enumerate(sorted(root.rglob("*.png"))):
        if i % 5:  # most as JPEG (decoded on the GPU), every fifth left a PNG (decoded by the workers)
            load_rgb(png).resize((64, 64)).save(png.with_suffix(".jpg"), quality=90)
            png.unlink()
    decoded = []  # (device asked for, the devices of the images returned) of every decode_jpeg call
    decode_jpeg = torchvision.io.decode_jpeg

    def spied(data, *args, **kwargs):
        images = decode_jpeg(data, *args, **kwargs)
        decoded.append((torch.device(kwargs.get("device", "cpu")).type, {image.device.type for image in images}))
        return images

    monkeypatch.setattr(torchvision.io, "decode_jpeg", spied)
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={root}", "data.decode_on=device", "trainer.accelerator=gpu",
                          "trainer.devices=1"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    metrics = train(cfg)
    assert 0.0 <= metrics["val/error_rate"] <= 1.0
    # the JPEGs were decoded by nvJPEG, on the GPU, in every training and validation batch that held one
    assert len(decoded) >= 6 and all(asked == "cuda" and got == {"cuda"} for asked, got in decoded), decoded
