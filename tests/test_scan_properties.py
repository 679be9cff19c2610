"""Property-based tests over file contents: the scan classifies any bytes without raising, and
what it passes either loads or fails with an error the training dataset skips (a header check
cannot see a flipped byte inside JPEG data: that is what ImageDataset's replacement is for)."""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from src.data.files.image_reader import UNREADABLE_IMAGE_ERRORS, load_rgb
from src.data.files.scan import check_image
from tests.conftest import SAMPLE

PHOTO = Image.open(next((SAMPLE / "bag").glob("*.png"))).convert("RGB").resize((64, 48))


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    PHOTO.save(buffer, fmt)
    return buffer.getvalue()


PNG, JPEG = _encoded("PNG"), _encoded("JPEG")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".png", ".jpg", ".gif", ".webp", ".bmp", ".tif"]))
def test_any_bytes_are_classified_and_what_passes_loads(tmp_path: Path, data: bytes, suffix: str):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data)
    if check_image(path) is None:
        assert load_rgb(path).mode == "RGB"


@SETTINGS
@given(fmt=st.sampled_from(["png", "jpeg"]), cut=st.floats(0.0, 0.99))
def test_a_cut_short_png_or_jpeg_is_a_bad_file(tmp_path: Path, fmt: str, cut: float):
    """Cut anywhere before the last 1 %: (a PNG cut inside its 12-byte IEND still holds every pixel)."""
    data = PNG if fmt == "png" else JPEG
    path = tmp_path / f"x.{fmt}"
    path.write_bytes(data[: int(len(data) * cut)])
    bad = check_image(path)
    assert bad is not None and bad.kind in {"empty file", "not an image", "truncated or corrupt"}


@SETTINGS
@given(fmt=st.sampled_from(["png", "jpeg"]), position=st.floats(0.0, 0.999), byte=st.integers(0, 255))
def test_a_flipped_byte_fails_the_scan_or_the_load_with_a_skippable_error(tmp_path, fmt, position, byte):
    data = bytearray(PNG if fmt == "png" else JPEG)
    data[int(len(data) * position)] = byte
    path = tmp_path / f"x.{fmt}"
    path.write_bytes(bytes(data))
    if check_image(path) is None:
        try:
            assert load_rgb(path).mode == "RGB"
        except UNREADABLE_IMAGE_ERRORS:
            assert fmt == "jpeg"  # PNG checksums catch every flipped byte in the scan
