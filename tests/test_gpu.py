"""The paths that exist only for GPUs, each compared with the CPU's result on the same input: the batch
augmentation on CUDA, nvJPEG's decode, bf16-mixed and 16-mixed training, pinned memory and ``trainer=gpu``,
and predict and serve on CUDA. Marked ``gpu`` and skipped without a CUDA GPU; ``make gpu-check`` runs them
(docs/testing.md). tests/test_gpu_decode.py's whole ``decode_on=device`` run is marked ``gpu`` too.

The tolerances are the size of the differences between two implementations of the same float32 maths
(cuDNN and oneDNN kernels, TF32 convolutions, two JPEG decoders), far below what a wrong result gives
(a wrong draw, a missed normalisation or a swapped channel moves pixels by tenths).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from src.data.files.image_reader import load_rgb
from tests.conftest import SAMPLE, conv_output_dtypes, require_extra, train_tiny_run

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make gpu-check); none here")]

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GPU_RUN = ["trainer=gpu", "trainer.accelerator=gpu", "trainer.devices=1"]  # after TINY_OVERRIDES' accelerator=cpu
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
REDUCED_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def _photos(count: int = 8, side: int = 64) -> list[Image.Image]:
    paths = sorted(SAMPLE.rglob("*.png"))[::500][:count]  # one product of each class (500 a class)
    return [load_rgb(path).resize((side, side), Image.BILINEAR) for path in paths]


def test_the_batch_augmentation_on_cuda_gives_the_cpus_pixels_with_the_same_draws():
    from src.data.transforms.batch_augment import BatchAugment

    augment = BatchAugment(MEAN, STD)  # fastai's get_transforms defaults: flip, rotate, zoom, warp, lighting
    images = torch.stack([pil_to_tensor(photo) for photo in _photos()])
    on_cpu = augment(images, seed=7)
    on_cuda = augment(images.cuda(), seed=7)
    assert on_cuda.device.type == "cuda" and on_cuda.dtype == torch.float32
    difference = (on_cuda.cpu() - on_cpu).abs()
    # one 8-bit level is 1 / 255 / 0.225 = 0.017 after normalising
    assert difference.mean() < 1e-3 and difference.max() < 0.05
    assert not torch.allclose(augment(images.cuda(), seed=8).cpu(), on_cpu, atol=0.05)  # other draws: other pixels


def test_nvjpeg_decodes_the_jpegs_as_pillow_does(tmp_path):
    from src.data.placement.gpu_decode import DeviceDecodeReader, decode_batch

    paths = []
    for i, photo in enumerate(_photos(side=96)):
        path = tmp_path / f"{i}.jpg"
        exif = Image.Exif()
        if i % 2:
            exif[0x0112] = 6  # rotated 90 degrees to display: both decoders must turn it
        photo.save(path, quality=90, exif=exif)
        paths.append(path)
    reader = DeviceDecodeReader()
    items = [reader(path) for path in paths]
    assert all(item.dim() == 1 for item in items) and reader.jpegs.value == len(paths)  # bytes, for nvJPEG
    decoded = decode_batch(items, lambda image: image, "cuda")
    assert decoded.device.type == "cuda" and decoded.dtype == torch.uint8
    by_pillow = torch.stack([pil_to_tensor(load_rgb(path)) for path in paths])
    difference = (decoded.cpu().float() - by_pillow.float()).abs()
    # two IDCTs and chroma upsamplers: about a level apart on average, a few at edges
    assert difference.mean() < 1.5 and float(np.percentile(difference.numpy(), 99)) <= 8


@pytest.fixture(scope="module")
def gpu_runs(module_tmp_path) -> dict[str, tuple[Path, list[torch.dtype]]]:
    """The tiny run on one GPU (trainer=gpu: pinned memory, the device augmentation on CUDA) at each
    precision, from the same seed: its directory and the dtypes its convolutions computed in."""
    runs = {}
    for precision in PRECISIONS:
        with conv_output_dtypes() as seen:
            run = train_tiny_run(module_tmp_path / precision, [*GPU_RUN, f"trainer.precision={precision}"])
        runs[precision] = run, seen
    return runs


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_reduced_precision_training_on_cuda_ends_near_the_fp32_run(gpu_runs, precision):
    run, dtypes = gpu_runs[precision]
    assert set(dtypes) == {REDUCED_DTYPES[precision]}  # every convolution ran in the reduced precision
    fp32_run, fp32_dtypes = gpu_runs["32-true"]
    assert set(fp32_dtypes) == {torch.float32}
    got, expected = (json.loads((r / "metrics.json").read_text())["final"] for r in (run, fp32_run))
    # six steps from the same seed and the same batches: the reduced precision's rounding only
    assert got["val/loss"] == pytest.approx(expected["val/loss"], abs=0.05)
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert state["net.head.8.weight"].dtype == torch.float32  # mixed precision keeps fp32 weights


def test_a_gpu_run_pins_its_batches_and_augments_them_on_cuda(gpu_runs):
    from omegaconf import OmegaConf

    config = OmegaConf.load(gpu_runs["32-true"][0] / "config.yaml")
    assert config.trainer.accelerator == "gpu" and config.data.augment["on"] == "device"
    from src.runs.builder import build_datamodule

    datamodule = build_datamodule(config.data, num_workers=0)
    assert datamodule.pin_memory is True  # data.pin_memory=null: pinned where a GPU is


@pytest.mark.parametrize("precision, atol", [("32-true", 2e-3), ("bf16-mixed", 2e-2)])
def test_predict_on_cuda_gives_the_cpus_probabilities(gpu_runs, precision, atol):
    from src import Predictor

    ckpt = gpu_runs["32-true"][0] / "checkpoints" / "last.ckpt"
    photos = _photos(side=32)
    on_cpu = Predictor.from_checkpoint(ckpt, device="cpu", precision=precision)
    on_cuda = Predictor.from_checkpoint(ckpt, device="cuda", precision=precision)
    assert on_cuda.device.type == "cuda" and on_cuda.precision == precision
    expected = torch.stack([p.probabilities for p in on_cpu.predict_batch(photos)])
    got = torch.stack([p.probabilities for p in on_cuda.predict_batch(photos)])
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)  # TF32 convolutions on CUDA by default


def test_serve_on_cuda_answers_the_cpus_probabilities(gpu_runs, tmp_path):
    require_extra("litserve", "serve")
    from tests.test_serve import predictor_probabilities, running_server

    ckpt = gpu_runs["32-true"][0] / "checkpoints" / "last.ckpt"
    paths = sorted((gpu_runs["32-true"][0].parent / "images").rglob("*.png"))[:3]
    with running_server(ckpt, tmp_path / "serve", ["accelerator=cuda", "devices=1"]) as (client, _):
        status, answer = client.post(paths[0].read_bytes(), "image/png")
    assert status == 200, answer
    got = torch.tensor([p["probabilities"] for p in answer["predictions"]])
    expected = predictor_probabilities(ckpt, paths[:1])
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=0)
