"""The one image reader of every path (training, evaluation, prediction, serving, inspect, shards):
a file as the 8-bit sRGB picture it shows, or an error that says why it cannot be.

The network's input is 8-bit RGB (the loaders hand uint8 images on; ImageNet weights were trained on
8-bit sRGB photos), so every file is brought to that, keeping what its pixels mean:

- 16-bit images (gray or RGB, PNG or TIFF, either byte order) keep their high byte: exact for 8-bit
  data stored as 16 bits (``x * 257`` or ``x * 256``) and within one level of ``v / 257`` otherwise.
  That is what Pillow's decoder gives 16-bit RGB files, so 16-bit gray (which Pillow keeps as 16-bit
  values, and its ``convert`` would clip at 255) is brought to the same rule.
- 32-bit integer images are read as 16-bit data (values 0 to 65535, what such files hold from 12- to
  16-bit sensors and what Pillow opens some 16-bit files as); values outside that range are refused.
- 32-bit float images are read in [0, 1] (the convention of float images in scikit-image and OpenCV,
  and what TIFF float files without a declared range hold); NaN or values outside [0, 1] are refused.
  A range taken from each image's own minimum and maximum was not chosen: it would stretch every
  image's contrast differently and hide an overexposed or dark photo from the model and the user.
- Transparent areas (RGBA, gray + alpha, palette with transparency) become white: the background of
  product photos.
- An embedded ICC profile (Display P3 from phones, Adobe RGB from cameras, CMYK from print) is
  converted to sRGB with LittleCMS (Pillow's ImageCms), relative colorimetric with black-point
  compensation (Photoshop's default conversion); images without a profile are taken as sRGB, and CMYK
  without one is converted by Pillow's formula.
- EXIF orientation is applied; an animated GIF, WebP or PNG is read as its first frame.
- HEIC/HEIF needs pillow-heif (the ``heif`` extra); AVIF is read by Pillow itself.

What cannot be read so raises :class:`UnfaithfulImageError` (a ``ValueError``), which the scan
reports per file (:func:`fidelity_problem`), so nothing is silently changed.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageCms, ImageOps

from src.core.extras import install_command

# What a file that is not a readable image raises in PIL: unidentified or truncated files are
# OSErrors, a decompression bomb its own error; ValueError for modes PIL cannot convert (and
# UnfaithfulImageError); broken PNG chunks raise SyntaxError and some cut-short headers EOFError
# (found by tests/test_scan_properties.py).
UNREADABLE_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
# Larger images are refused unread (PIL's own guard warns at 89 MP and only fails at 179 MP): a
# 100 MP RGB image is 300 MB decoded, per worker, and no classifier input needs it.
MAX_IMAGE_PIXELS = 100_000_000

HEIF_SUFFIXES = (".heic", ".heif")
# ISO base media files start with a box "ftyp" and a brand; these brands are HEIF images.
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")

SIXTEEN_BIT_GRAY = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
WITH_ALPHA = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# Modes Image.convert("RGB") maps faithfully (with the rules above for the rest).
CONVERTIBLE = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV"})
ICC_MODES = frozenset({"RGB", "RGBA", "CMYK"})
SRGB = ImageCms.createProfile("sRGB")


class UnfaithfulImageError(ValueError):
    """An image whose pixel values cannot be shown as 8-bit RGB without changing what they mean."""


@functools.cache
def _heif_registered() -> bool:
    """Register pillow-heif's HEIC/HEIF opener with PIL once per process; False where it is not installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:  # the heif extra is not installed: a HEIC file is then reported with the command
        return False
    register_heif_opener()
    return True


def is_heif(head: bytes) -> bool:
    """Whether a file's first bytes are those of a HEIF image (``ftyp`` box with a HEIF brand)."""
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


def unidentified_reason(source: Path | IO[bytes]) -> str | None:
    """Why PIL could not identify ``source``, where its first bytes tell more than PIL's "cannot identify":
    a HEIF image without pillow-heif installed, or a TIFF whose sample format Pillow cannot decode."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            head = f.read(12)
    else:
        position = source.tell()
        source.seek(0)
        head = source.read(12)
        source.seek(position)
    if is_heif(head) and not _heif_registered():
        return f"a HEIC/HEIF image, and reading one needs pillow-heif: install the heif extra ({install_command('heif')})"
    if head[:4] in TIFF_MAGIC:
        return ("a TIFF whose sample format Pillow cannot decode (such as float RGB, 16-bit float, 64-bit or "
                "unsigned 32-bit big-endian samples); save it with 8- or 16-bit integer samples, or as 32-bit "
                "float grayscale")
    return None


def open_image(source: Path | IO[bytes], max_pixels: int = MAX_IMAGE_PIXELS,
               limit_key: str = "data.max_image_pixels") -> Image.Image:
    """``Image.open`` with the project's decompression-bomb guard: over ``max_pixels`` (from the header,
    before any decoding) raises ``Image.DecompressionBombError`` naming the size and the setting
    (``limit_key``) that raises the limit.

    PIL's own process-wide guard (warning at 89 MP, refusing at 179 MP with its own message) is switched
    off here: it would refuse images that ``data.max_image_pixels`` allows, and every open goes through
    this check instead.
    """
    _heif_registered()
    Image.MAX_IMAGE_PIXELS = None
    try:
        image = Image.open(source)
    except Image.UnidentifiedImageError as error:
        reason = unidentified_reason(source)
        if reason is not None:
            raise Image.UnidentifiedImageError(reason) from error
        raise
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise Image.DecompressionBombError(
            f"{width}x{height} = {width * height / 1e6:.0f} megapixels, over the limit of {max_pixels / 1e6:g} "
            f"megapixels ({limit_key}={max_pixels}, a decompression-bomb guard); resize the image or raise "
            f"{limit_key}"
        )
    return image


def value_range_problem(image: Image.Image) -> str | None:
    """Why the pixel values of a 32-bit integer or float image are outside the range this reader maps to
    8 bits (None where they are inside, or where the mode has no such range)."""
    if image.mode == "I":
        values = np.asarray(image)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 65535:
            return (f"32-bit integer values from {low} to {high}, outside 0..65535 (read as 16-bit data); "
                    "save the image as 16-bit, or scale it to 0..65535")
    elif image.mode == "F":
        values = np.asarray(image)
        if not np.isfinite(values).all():
            return "32-bit float values include NaN or infinity; replace them, or save the image as 16-bit"
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 1.0:
            return (f"32-bit float values from {low:g} to {high:g}, outside [0, 1] (the range float images are "
                    "read in); scale the image to [0, 1], or save it as 16-bit")
    return None


def mode_problem(mode: str) -> str | None:
    """Why an image of this PIL mode cannot be read as RGB (None where it can)."""
    if mode in SIXTEEN_BIT_GRAY or mode in WITH_ALPHA or mode in CONVERTIBLE or mode in ("I", "F"):
        return None
    return (f"pixel mode {mode!r}, which this reader does not convert to RGB faithfully; save the image as "
            "8- or 16-bit RGB or grayscale")


def fidelity_problem(image: Image.Image) -> str | None:
    """Why an opened image cannot be read as the picture it holds (its mode, or for 32-bit images its
    values: those are decoded), or None. The scan reports it, and :func:`rgb_image` raises it."""
    problem = mode_problem(image.mode)
    if problem is None and image.mode in ("I", "F"):
        image.load()
        problem = value_range_problem(image)
    return problem


@functools.lru_cache(maxsize=16)
def _to_srgb(profile: bytes, mode: str) -> ImageCms.ImageCmsTransform:
    """The LittleCMS transform from an embedded profile to sRGB, built once per profile and mode: building
    one parses the profile (a few ms), and a folder of phone photos holds a handful of distinct profiles."""
    return ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(profile)), SRGB, mode, "RGBA" if mode == "RGBA" else "RGB",
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, flags=ImageCms.Flags.BLACKPOINTCOMPENSATION,
    )


def _high_byte(values: np.ndarray) -> Image.Image:
    return Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8), "L")


def rgb_image(image: Image.Image) -> Image.Image:
    """``image`` (already oriented) as the 8-bit RGB picture it shows, by the rules of the module docstring.
    Raises :class:`UnfaithfulImageError` where that would change the pixels' meaning."""
    problem = fidelity_problem(image)
    if problem is not None:
        raise UnfaithfulImageError(problem)
    mode = image.mode
    if mode in SIXTEEN_BIT_GRAY or mode == "I":
        return _high_byte(np.asarray(image)).convert("RGB")
    if mode == "F":
        return Image.fromarray(np.rint(np.asarray(image) * 255).astype(np.uint8), "L").convert("RGB")
    profile = image.info.get("icc_profile")
    if profile and mode in ICC_MODES:
        try:
            image = ImageCms.applyTransform(image, _to_srgb(profile, mode))
        except (ImageCms.PyCMSError, OSError) as error:
            raise UnfaithfulImageError(f"its embedded ICC colour profile cannot be read ({error}); "
                                       "save the image without a profile, or as sRGB") from error
        mode = image.mode
    if mode in WITH_ALPHA or (mode == "P" and "transparency" in image.info):
        # Composite on white: transparent areas of product photos are background, not black.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def load_rgb(source: Path | IO[bytes], max_pixels: int = MAX_IMAGE_PIXELS, min_size: int | None = None,
             limit_key: str = "data.max_image_pixels") -> Image.Image:
    """Read an image file (a path or a binary file object) as the 8-bit sRGB picture it shows
    (:func:`rgb_image`), EXIF orientation applied.

    With ``min_size``, a JPEG is decoded at 1/2, 1/4 or 1/8 scale where that still leaves both
    sides >= ``min_size`` (PIL's ``draft``: the decoder skips the detail, so a 12 MP photo for a
    224-pixel model decodes several times faster). The transforms resize to that size first, so
    nothing they keep is lost. Other formats decode in full.
    Raises ``Image.DecompressionBombError`` for an image over ``max_pixels``, before decoding it, and
    :class:`UnfaithfulImageError` for one that cannot be read faithfully.
    """
    with open_image(source, max_pixels, limit_key) as image:
        if min_size is not None:
            image.draft(image.mode, (min_size, min_size))  # a no-op for formats other than JPEG
        return oriented_rgb(image)


def oriented_rgb(image: Image.Image) -> Image.Image:
    """An opened image as :func:`load_rgb` reads a file: EXIF orientation applied, then :func:`rgb_image`
    (for PIL images handed to the Python API, so they give what their files give)."""
    return rgb_image(ImageOps.exif_transpose(image))
