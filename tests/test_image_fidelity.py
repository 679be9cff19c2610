"""What a file holds is what the model sees: every encoding of a real photo reaches the model's input as the
same tensor as its 8-bit RGB version (exactly, for lossless encodings), on every path that reads images."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from omegaconf import open_dict
from PIL import Image

from src.data.placement.gpu_decode import DeviceDecodeReader, decodes_on_device
from src.data.files.image_reader import MAX_IMAGE_PIXELS, UnfaithfulImageError, load_rgb, open_image, oriented_rgb
from src.data.files.scan import check_image
from src.core.random_state import seeded_torch_generator
from tests.conftest import PROJECT_ROOT, _bomb_png, compose_config
from tests.image_encodings import (
    LOSSLESS,
    PHONE,
    Encoding,
    encoded_bytes,
    gray_of,
    in_srgb,
    reference_photo,
    with_profile,
)

ENCODINGS = LOSSLESS + PHONE
PROFILES = ("Display P3", "Adobe RGB (1998)")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return reference_photo()


@pytest.fixture(scope="module")
def encoded(module_tmp_path, photo) -> dict[str, tuple[Path, Path, Encoding]]:
    """name -> (the encoded file, an 8-bit RGB PNG of what it must read as, the encoding)."""
    folder, references = module_tmp_path / "encoded", module_tmp_path / "references"
    folder.mkdir()
    references.mkdir()
    files = {}
    for encoding in ENCODINGS:
        reference = references / f"{encoding.name}.png"
        Image.fromarray(encoding.expected(photo)).save(reference)
        files[encoding.name] = (encoding.file(photo, folder), reference, encoding)
    return files


def datamodule_of(root: Path, tmp_path: Path, overrides: list[str]):
    """The DataModule of the real data config (its defaults) on ``root``, set up for training."""
    from src.runs.builder import build_datamodule

    cfg = compose_config([f"data.root={root}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    datamodule = build_datamodule(cfg.data)
    datamodule.setup("fit")
    return datamodule


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(np.int16)


@pytest.mark.parametrize("name", [e.name for e in ENCODINGS])
def test_every_encoding_reads_as_its_8_bit_picture(encoded, name):
    path, reference, encoding = encoded[name]
    expected = pixels(Image.open(reference))
    assert np.abs(pixels(load_rgb(path)) - expected).max() <= encoding.tolerance
    # a PIL image handed to the Python API reads as its file does
    assert np.abs(pixels(oriented_rgb(Image.open(path))) - expected).max() <= encoding.tolerance
    assert check_image(path) is None  # and the scan keeps it


def test_sixteen_bit_and_float_images_keep_their_full_range(tmp_path):
    """A gradient over the whole 16-bit range (and [0, 1] in float) reads as the whole 8-bit range: the old
    reader clipped 16-bit values at 255 (99.6 % white) and took float values as 0 or 1 (black)."""
    ramp16 = np.tile(np.arange(0, 65536, 256, dtype=np.uint16), (4, 1))  # 256 levels, 0 .. 65280
    tifffile.imwrite(tmp_path / "ramp16.tif", ramp16)
    tifffile.imwrite(tmp_path / "ramp_float.tif", (ramp16 >> 8).astype(np.float32) / 255)
    for name in ("ramp16.tif", "ramp_float.tif"):
        got = pixels(load_rgb(tmp_path / name))[..., 0]
        assert (got == np.arange(256)).all(), name


@pytest.mark.parametrize("profile", PROFILES)
def test_an_embedded_colour_profile_is_converted_to_srgb(tmp_path, photo, profile):
    """The photo's values taken as Display P3 or Adobe RGB come out as the colour maths says they look in sRGB
    (within the one level of LittleCMS's 8-bit rounding); read without the profile they are far off."""
    expected = in_srgb(photo, profile).astype(np.int16)
    assert np.abs(expected - photo).max() > 50  # the conversion is visible, so the test can fail
    got = pixels(load_rgb(with_profile(photo, profile, tmp_path / "profiled.png")))
    assert np.abs(got - expected).max() <= 1
    # a JPEG: the expected colours are those of its own decoded values, so the codec's loss is not counted
    jpeg = with_profile(photo, profile, tmp_path / "profiled.jpg", format="JPEG")
    stored = np.asarray(Image.open(jpeg).convert("RGB"))
    assert np.abs(pixels(load_rgb(jpeg)) - in_srgb(stored, profile)).max() <= 1


def test_an_srgb_profile_leaves_the_pixels_as_they_are(tmp_path, photo):
    got = pixels(load_rgb(with_profile(photo, "sRGB", tmp_path / "srgb.png")))
    assert np.abs(got - photo).max() <= 1


@pytest.mark.parametrize(("values", "reason"), [
    (np.full((8, 8), 1.5, np.float32), "32-bit float values from 1.5 to 1.5, outside [0, 1]"),
    (np.full((8, 8), -0.25, np.float32), "outside [0, 1]"),
    (np.array([[np.nan, 0.5]], np.float32), "NaN or infinity"),
    (np.full((8, 8), 70000, np.int32), "32-bit integer values from 70000 to 70000, outside 0..65535"),
    (np.zeros((8, 8, 3), np.float32), "a TIFF whose sample format Pillow cannot decode"),
])
def test_values_that_cannot_be_shown_faithfully_are_reported_and_refused(tmp_path, values, reason):
    path = tmp_path / "unfaithful.tif"
    tifffile.imwrite(path, values, photometric="rgb" if values.ndim == 3 else None)
    bad = check_image(path)
    assert bad is not None and reason in bad.reason
    with pytest.raises((UnfaithfulImageError, Image.UnidentifiedImageError), match=re.escape(reason)):
        load_rgb(path)


def test_the_scan_reports_unfaithful_files_and_keeps_the_rest(tmp_path, encoded):
    """The real DataModule on a folder mixing 16-bit, float and out-of-range files: the faithful ones are
    training images, the others are in bad_files.csv with the reason."""
    root = tmp_path / "images"
    for name, (path, _, _) in encoded.items():
        if "TIFF" in name or "16-bit" in name:
            (root / "a").mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / "a" / path.name)
    shutil.copytree(encoded["8-bit RGB PNG"][1].parent, root / "b")
    tifffile.imwrite(root / "a" / "too bright.tif", np.full((8, 8), 2.0, np.float32))
    datamodule = datamodule_of(root, tmp_path, [])
    kept = {s.path.name for s in [*datamodule.index.train, *datamodule.index.valid]}
    assert {p.name for p in (root / "a").iterdir()} - kept == {"too bright.tif"}
    assert [(b.path.name, b.kind) for b in datamodule.scan.unreadable] == [("too bright.tif", "unfaithful")]


@pytest.mark.parametrize("augment_on", ["auto", "workers"])
def test_the_training_and_evaluation_transforms_see_the_same_tensor(encoded, augment_on, tmp_path):
    """The DataModule's own reader and transforms (training, with the same random draws, and evaluation)
    give each encoded file the tensor of its 8-bit reference. ``auto`` is the device path on a CPU (the workers
    stop at a uint8 crop); ``workers`` is the whole augmentation in the loader."""
    root = next(iter(encoded.values()))[0].parent.parent  # class folders: encoded/ and references/
    # no loader workers: the test calls the datasets' reader and transforms itself, no loader is made
    datamodule = datamodule_of(root, tmp_path, ["data.size=32", f"data.augment.on={augment_on}", "data.num_workers=0"])
    read = datamodule.datasets["train"].read
    for name, (path, reference, encoding) in encoded.items():
        for transform in (datamodule.train_transform, datamodule.loader_eval_transform, datamodule.eval_transform):
            tensors = []
            for file in (path, reference):
                with seeded_torch_generator(7):
                    tensors.append(transform(read(file, min_size=datamodule.size)).float())
            # uint8 crops compare in grey levels; normalised tensors in grey levels / 255 / std
            scale = 1.0 if tensors[0].max() > 4 else 1 / 255 / min(datamodule.std)
            assert (tensors[0] - tensors[1]).abs().max() <= encoding.tolerance * scale + 1e-5, (name, transform)


def test_predictions_of_every_encoding_equal_the_8_bit_photos(encoded):
    """``Predictor.predict`` of a path, of a PIL image, and ``predict_files`` (``python -m src.predict``)."""
    from src import Predictor
    from src.data.transforms.presets import EvalTransform
    from src.runs.builder import build_module
    from tests.conftest import IMAGENET_STATS

    cfg = compose_config(["model.backbone.name=resnet18", "model.backbone.weights=null"])
    torch.manual_seed(0)
    net = build_module(cfg, classes=["a", "b", "c"], multi_label=False).net.eval()
    predictor = Predictor(net, ["a", "b", "c"], EvalTransform(48, **IMAGENET_STATS), device="cpu")
    for name, (path, reference, encoding) in encoded.items():
        expected = predictor.predict(reference).probabilities
        tolerance = 1e-5 if encoding.tolerance == 0 else 0.05
        got = [predictor.predict(path).probabilities, predictor.predict(Image.open(path)).probabilities,
               next(predictor.predict_files([path])).prediction.probabilities]
        assert all((p - expected).abs().max() < tolerance for p in got), name


def test_shards_store_what_the_reader_reads(encoded):
    """``src.prepare`` keeps or re-encodes each file (:class:`EncodeImage`); the shard reader decodes the stored
    bytes with the same reader: the picture of the 8-bit reference either way (kept 16-bit PNG, re-encoded TIFF)."""
    from src.data.shards.writer import EncodeImage

    encode = EncodeImage(max_side=256, jpeg_quality=95, max_pixels=MAX_IMAGE_PIXELS)
    for name, (path, reference, encoding) in encoded.items():
        stored = encode([str(path), path.name, 0])["image"]
        got = pixels(load_rgb(io.BytesIO(stored)))
        assert np.abs(got - pixels(Image.open(reference))).max() <= encoding.tolerance, name


def test_jpegs_nvjpeg_would_not_read_as_the_reader_does_are_decoded_by_the_workers(tmp_path, photo):
    """``data.decode_on=device``: nvJPEG applies no ICC profile and does not convert CMYK, so those JPEGs are
    decoded on the CPU by the reader; plain RGB and gray JPEGs go to the GPU as bytes."""
    image = Image.fromarray(photo)
    plain, gray = encoded_bytes(image, "JPEG"), encoded_bytes(Image.fromarray(gray_of(photo)), "JPEG")
    cmyk = encoded_bytes(image.convert("CMYK"), "JPEG")
    profiled = with_profile(photo, "Display P3", tmp_path / "p3.jpg", format="JPEG").read_bytes()
    assert [decodes_on_device(data) for data in (plain, gray, cmyk, profiled)] == [True, True, False, False]
    reader = DeviceDecodeReader()
    for name, data in (("plain.jpg", plain), ("p3.jpg", profiled)):
        (tmp_path / name).write_bytes(data)
    assert isinstance(reader(tmp_path / "plain.jpg"), torch.Tensor)
    decoded = reader(tmp_path / "p3.jpg")
    assert isinstance(decoded, Image.Image) and (pixels(decoded) == pixels(load_rgb(tmp_path / "p3.jpg"))).all()
    assert (reader.jpegs.value, reader.fallbacks.value) == (1, 1)


def test_max_image_pixels_raises_the_limit_past_pils_own(tmp_path):
    """PIL refuses images over 179 MP by itself; ``data.max_image_pixels`` decides instead, both ways."""
    path = tmp_path / "large.png"
    _bomb_png(path, side=14_000)  # 196 MP, ~30 kB
    assert check_image(path, max_pixels=200_000_000) is None
    with open_image(path, max_pixels=200_000_000) as image:
        assert image.size == (14_000, 14_000)
    bad = check_image(path)
    assert bad.kind == "too large" and "over the limit of 100 megapixels (data.max_image_pixels=100000000" in bad.reason


def test_heic_without_the_extra_names_the_extra_and_the_command(tmp_path, encoded):
    """With pillow-heif hidden from the importer, the scan and the reader say which extra reads HEIC."""
    path = encoded["HEIC"][0]
    code = ("import sys; sys.modules['pillow_heif'] = None\n"
            "from pathlib import Path\nfrom src.data.files.scan import check_image\n"
            f"print(check_image(Path({str(path)!r})).reason)")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'needs pillow-heif: install the heif extra (pip install -e ".[heif]")' in result.stdout
