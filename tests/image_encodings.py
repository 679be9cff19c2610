"""One real picture written in every encoding the reader supports, with the 8-bit RGB it must read as.

The picture is a colour photo made of three real Fashion-MNIST products (one per channel), enlarged
and not square, so a clipped value, a lost channel or a wrong rotation changes what the model sees.
The files are written by independent encoders (pypng for 16-bit PNG, tifffile for TIFF, NumPy for the
EXIF rotations and the colour maths), not by the code under test.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import png  # pypng: writes 16-bit PNGs, which Pillow cannot
import tifffile
from PIL import Image

from tests.conftest import SAMPLE

SIZE = (60, 40)  # width x height: not square, so a rotation shows


def reference_photo() -> np.ndarray:
    """(40, 60, 3) uint8: three real products as the red, green and blue channels, enlarged smoothly."""
    folders = sorted(p for p in SAMPLE.iterdir() if p.is_dir())
    channels = [Image.open(sorted(folder.iterdir())[0]).convert("L").resize(SIZE, Image.Resampling.BICUBIC)
                for folder in (folders[0], folders[3], folders[8])]
    return np.stack([np.asarray(c) for c in channels], axis=-1)


def gray_of(rgb: np.ndarray) -> np.ndarray:
    """The gray picture of the gray encodings: the red channel (a real product photo), as H x W uint8."""
    return rgb[..., 0].copy()


def as_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


@dataclass(frozen=True)
class Encoding:
    """A way to write the picture, the 8-bit RGB it must read back as, and how far a lossy codec may be off."""

    name: str
    suffix: str
    write: Callable[[np.ndarray, Path], None]  # (the reference RGB picture, the file)
    expected: Callable[[np.ndarray], np.ndarray]  # reference RGB -> what the reader must return
    tolerance: int = 0  # grey levels; 0 for every lossless encoding

    def file(self, rgb: np.ndarray, folder: Path) -> Path:
        path = folder / f"{self.name}{self.suffix}"
        self.write(rgb, path)
        return path


def _png16(array: np.ndarray, path: Path, mode: str) -> None:
    height, width = array.shape[:2]
    png.from_array(array.reshape(height, -1).tolist(), mode).save(str(path))


def _alpha(array: np.ndarray, value: int) -> np.ndarray:
    return np.concatenate([array, np.full(array.shape[:2] + (1,), value, array.dtype)], axis=-1)


def _palette_with_transparency(rgb: np.ndarray, path: Path) -> None:
    image = Image.fromarray(gray_of(rgb), "L").convert("P")  # a gray palette: every level representable
    image.save(path, transparency=0)  # palette entry 0 (black) is transparent


def _palette_expected(rgb: np.ndarray) -> np.ndarray:
    gray = gray_of(rgb)
    return as_rgb(np.where(gray == 0, 255, gray).astype(np.uint8))  # transparent pixels become white


def _animated(rgb: np.ndarray, path: Path, **options) -> None:
    first = Image.fromarray(rgb if path.suffix == ".webp" else gray_of(rgb), "RGB" if path.suffix == ".webp" else "L")
    second = Image.fromarray(255 - np.asarray(first))
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0, **options)


def _heic(rgb: np.ndarray, path: Path) -> None:
    from pillow_heif import from_bytes

    from_bytes(mode="RGB", size=SIZE, data=rgb.tobytes()).save(str(path), quality=-1, chroma=444)  # lossless mode


# EXIF orientation n: how the stored pixels relate to the picture shown (EXIF 2.32, tag 0x0112), written with
# NumPy: the stored rows and columns for each tag, so that the reader's rotation must undo exactly this.
STORED_FOR_ORIENTATION: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # upside down
    4: lambda a: a[::-1, :],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # the 0th row is the left side: transposed
    6: lambda a: np.rot90(a, 1),  # the 0th row is the right side: shown turned 90 degrees clockwise
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],  # transverse
    8: lambda a: np.rot90(a, -1),  # the 0th row is the left side, bottom up: shown turned anticlockwise
}


def _exif_rotated(orientation: int) -> Callable[[np.ndarray, Path], None]:
    def write(rgb: np.ndarray, path: Path) -> None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(np.ascontiguousarray(STORED_FOR_ORIENTATION[orientation](rgb))).save(path, exif=exif)

    return write


def _identity(rgb: np.ndarray) -> np.ndarray:
    return rgb


def _gray_rgb(rgb: np.ndarray) -> np.ndarray:
    return as_rgb(gray_of(rgb))


LOSSLESS: list[Encoding] = [
    Encoding("8-bit RGB PNG", ".png", lambda a, p: Image.fromarray(a).save(p), _identity),
    Encoding("16-bit gray PNG", ".png", lambda a, p: _png16(gray_of(a).astype(np.uint16) * 257, p, "L;16"), _gray_rgb),
    Encoding("16-bit gray PNG shifted", ".png", lambda a, p: _png16(gray_of(a).astype(np.uint16) << 8, p, "L;16"),
             _gray_rgb),
    Encoding("16-bit gray TIFF little-endian", ".tif",
             lambda a, p: tifffile.imwrite(p, gray_of(a).astype(np.uint16) * 257, byteorder="<"), _gray_rgb),
    Encoding("16-bit gray TIFF big-endian", ".tif",
             lambda a, p: tifffile.imwrite(p, gray_of(a).astype(np.uint16) * 257, byteorder=">"), _gray_rgb),
    Encoding("16-bit RGB PNG", ".png", lambda a, p: _png16(a.astype(np.uint16) * 257, p, "RGB;16"), _identity),
    Encoding("16-bit RGBA PNG opaque", ".png",
             lambda a, p: _png16(_alpha(a.astype(np.uint16) * 257, 65535), p, "RGBA;16"), _identity),
    Encoding("16-bit gray+alpha PNG opaque", ".png",
             lambda a, p: _png16(_alpha(gray_of(a)[..., None].astype(np.uint16) * 257, 65535), p, "LA;16"), _gray_rgb),
    Encoding("16-bit RGB TIFF little-endian", ".tif",
             lambda a, p: tifffile.imwrite(p, a.astype(np.uint16) * 257, byteorder="<", photometric="rgb"), _identity),
    Encoding("16-bit RGB TIFF big-endian", ".tif",
             lambda a, p: tifffile.imwrite(p, a.astype(np.uint16) * 257, byteorder=">", photometric="rgb"), _identity),
    Encoding("32-bit integer gray TIFF", ".tif",
             lambda a, p: tifffile.imwrite(p, gray_of(a).astype(np.int32) * 257), _gray_rgb),
    Encoding("32-bit float gray TIFF little-endian", ".tif",
             lambda a, p: tifffile.imwrite(p, gray_of(a).astype(np.float32) / 255, byteorder="<"), _gray_rgb),
    Encoding("32-bit float gray TIFF big-endian", ".tif",
             lambda a, p: tifffile.imwrite(p, gray_of(a).astype(np.float32) / 255, byteorder=">"), _gray_rgb),
    Encoding("8-bit gray+alpha PNG opaque", ".png",
             lambda a, p: Image.fromarray(_alpha(gray_of(a)[..., None], 255), "LA").save(p), _gray_rgb),
    Encoding("palette PNG with a transparent entry", ".png", _palette_with_transparency, _palette_expected),
    Encoding("CMYK TIFF", ".tif", lambda a, p: Image.fromarray(a).convert("CMYK").save(p), _identity),
    Encoding("animated GIF", ".gif", _animated, _gray_rgb),
    Encoding("animated WebP lossless", ".webp", lambda a, p: _animated(a, p, lossless=True), _identity),
    *[Encoding(f"EXIF orientation {n} PNG", ".png", _exif_rotated(n), _identity) for n in STORED_FOR_ORIENTATION],
]

# The phone formats are lossy even at their best settings: the tolerance is their codecs' RGB <-> YCbCr rounding
# (4:4:4, highest quality; measured on noise, the worst case: AVIF 3 levels, HEIC 1).
PHONE: list[Encoding] = [
    Encoding("AVIF", ".avif", lambda a, p: Image.fromarray(a).save(p, quality=100, subsampling="4:4:4"), _identity, 4),
    Encoding("HEIC", ".heic", _heic, _identity, 2),
]


# --- ICC profiles: matrix/TRC display profiles written from their published primaries ---------------------------

D65 = (0.3127, 0.3290)
PRIMARIES = {  # (red, green, blue) chromaticities x, y
    "sRGB": ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06)),
    "Display P3": ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)),
    "Adobe RGB (1998)": ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06)),
}
ADOBE_GAMMA = 563 / 256  # Adobe RGB (1998)'s transfer function; Display P3 uses sRGB's


def _xyz(xy: tuple[float, float]) -> np.ndarray:
    x, y = xy
    return np.array([x / y, 1.0, (1 - x - y) / y])


def rgb_to_xyz(primaries) -> np.ndarray:
    """The RGB -> XYZ matrix of a colour space with white D65 (columns: the primaries, scaled to white)."""
    columns = np.stack([_xyz(p) for p in primaries], axis=1)
    return columns * np.linalg.solve(columns, _xyz(D65))


BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
D50_XYZ = np.array([0.9642, 1.0, 0.8249])  # the ICC's profile connection space white


def to_d50(matrix: np.ndarray) -> np.ndarray:
    """A D65 RGB -> XYZ matrix adapted to D50 (Bradford), as ICC profiles store their colorants."""
    cone = BRADFORD @ _xyz(D65), BRADFORD @ D50_XYZ
    return np.linalg.inv(BRADFORD) @ np.diag(cone[1] / cone[0]) @ BRADFORD @ matrix


def srgb_decode(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def srgb_encode(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.power(np.clip(v, 0.0031308, None), 1 / 2.4) - 0.055)


def _s15f16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def icc_profile(name: str) -> bytes:
    """A version 2 RGB display profile (matrix and tone curves) of ``name`` in :data:`PRIMARIES`."""
    matrix = to_d50(rgb_to_xyz(PRIMARIES[name]))
    if name == "Adobe RGB (1998)":
        curve = b"curv" + bytes(4) + struct.pack(">I", 1) + struct.pack(">H", round(ADOBE_GAMMA * 256)) + bytes(2)
    else:  # the sRGB curve: parametric function type 3
        params = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)
        curve = b"para" + bytes(4) + struct.pack(">HH", 3, 0) + b"".join(_s15f16(p) for p in params)
    text = name.encode("ascii") + b"\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    tags = [(b"desc", desc), (b"cprt", b"text" + bytes(4) + b"no copyright, test profile\0"),
            (b"wtpt", b"XYZ " + bytes(4) + b"".join(_s15f16(v) for v in D50_XYZ))]
    tags += [(sig, b"XYZ " + bytes(4) + b"".join(_s15f16(v) for v in matrix[:, i]))
             for i, sig in enumerate((b"rXYZ", b"gXYZ", b"bXYZ"))]
    tags += [(sig, curve) for sig in (b"rTRC", b"gTRC", b"bTRC")]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for sig, body in tags:
        body += bytes(-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + bytes(12)
              + b"acsp" + bytes(4 + 4 + 4 + 4 + 8) + struct.pack(">I", 0)
              + b"".join(_s15f16(v) for v in D50_XYZ) + bytes(4 + 16 + 28))
    return header + struct.pack(">I", len(tags)) + table + data


def in_srgb(rgb: np.ndarray, name: str) -> np.ndarray:
    """What ``rgb`` (8-bit values in the colour space ``name``) looks like in sRGB, by the colour maths alone:
    decode, the D65 matrices (the D50 adaptation of both profiles cancels), clip to sRGB's gamut, encode."""
    values = rgb.astype(np.float64) / 255
    linear = values ** ADOBE_GAMMA if name == "Adobe RGB (1998)" else srgb_decode(values)
    to_srgb = np.linalg.inv(rgb_to_xyz(PRIMARIES["sRGB"])) @ rgb_to_xyz(PRIMARIES[name])
    return np.rint(srgb_encode(np.clip(linear @ to_srgb.T, 0, 1)) * 255).astype(np.uint8)


def with_profile(rgb: np.ndarray, name: str, path: Path, format: str = "PNG") -> Path:
    Image.fromarray(rgb).save(path, format=format, icc_profile=icc_profile(name), **({"quality": 100} if format == "JPEG"
                                                                                        else {}))
    return path


def encoded_bytes(image: Image.Image, format: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=format, **options)
    return out.getvalue()
