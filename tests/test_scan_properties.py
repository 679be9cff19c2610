"""Property-based tests over file contents: the scan classifies any bytes without raising, and
what it passes either loads or fails with an error the training dataset skips (a header check
cannot see a flipped byte inside JPEG data: that is what ImageDataset's replacement is for)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
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
# One valid file per suffix the scan lists: the property starts from these, since random bytes never pass
# the scan (no header matches) and "what passes loads" would never be reached.
VALID = {".png": PNG, ".jpg": JPEG, ".gif": _encoded("GIF"), ".webp": _encoded("WEBP"), ".bmp": _encoded("BMP"),
         ".tif": _encoded("TIFF")}
LOSSLESS = {".png", ".bmp", ".tif"}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_a_prefix_of_a_valid_file_with_any_tail_is_classified_and_what_passes_loads(tmp_path: Path):
    """A valid file cut anywhere (or whole), then any bytes: the scan classifies it without raising, and a
    file it passes loads as RGB at the photo's size (the header the scan read), or fails with an error the
    training dataset skips (the scan reads headers and structure, not every pixel row of every format; a
    PNG's chunks show any cut, so a PNG that passes always loads); a whole lossless file loads as the photo's
    pixels."""
    loaded_formats = []

    @settings(max_examples=300, deadline=None)
    @given(suffix=st.sampled_from(sorted(VALID)), whole=st.booleans(), cut=st.floats(0.0, 1.0),
           tail=st.binary(max_size=64))
    def classified(suffix: str, whole: bool, cut: float, tail: bytes):
        valid = VALID[suffix]
        path = tmp_path / f"x{suffix}"
        path.write_bytes((valid if whole else valid[: int(len(valid) * cut)]) + tail)
        if check_image(path) is not None:
            return
        try:
            loaded = load_rgb(path)
        except UNREADABLE_IMAGE_ERRORS:
            assert not whole, f"a whole {suffix} file with {len(tail)} bytes after it passed the scan but not the load"
            assert suffix != ".png", "a cut-short PNG passed the scan (its chunk structure and CRCs show the cut)"
            return
        assert loaded.mode == "RGB" and loaded.size == PHOTO.size
        if whole and suffix in LOSSLESS:
            assert np.array_equal(np.asarray(loaded), np.asarray(PHOTO)), suffix
        loaded_formats.append(suffix)

    classified()
    # the property was reached for every format, not only stated
    assert set(loaded_formats) == set(VALID), sorted(set(VALID) - set(loaded_formats))


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
