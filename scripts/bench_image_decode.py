"""Time the image reader (src/data/files/image_reader.py) per file format: milliseconds to read one image as the
model's 8-bit sRGB picture, at phone-photo size and at a smaller size, the median of several reads.

    .venv/bin/python scripts/bench_image_decode.py benchmarks/image-decode-$(date +%F).json

Needs the dev extras (pypng and tifffile write the 16-bit and float files, pillow-heif the HEIC). The picture is
a real Fashion-MNIST photo enlarged with a little noise (so the codecs have texture to encode).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.files.image_reader import load_rgb  # noqa: E402
from tests.image_encodings import _png16, icc_profile, reference_photo  # noqa: E402

SIZES = {"12 MP (4032x3024)": (4032, 3024), "0.8 MP (1024x768)": (1024, 768)}
MODEL_SIZE = 224  # what a JPEG is drafted down to (load_rgb's min_size), as the loaders read it


def picture(size: tuple[int, int]) -> np.ndarray:
    enlarged = Image.fromarray(reference_photo()).resize(size, Image.Resampling.BICUBIC)
    noise = np.random.default_rng(0).normal(0, 6, (size[1], size[0], 3))
    return np.clip(np.asarray(enlarged) + noise, 0, 255).astype(np.uint8)


def write_files(rgb: np.ndarray, folder: Path) -> dict[str, tuple[Path, int | None]]:
    """format name -> (file, min_size passed to load_rgb)."""
    import tifffile

    image = Image.fromarray(rgb)
    files: dict[str, tuple[Path, int | None]] = {}

    def add(name: str, suffix: str, write, min_size: int | None = None) -> None:
        path = folder / f"{len(files)}{suffix}"
        write(path)
        files[name] = (path, min_size)

    add("JPEG q90, full size", ".jpg", lambda p: image.save(p, quality=90))
    add("JPEG q90, drafted to 224", ".jpg", lambda p: image.save(p, quality=90), MODEL_SIZE)
    add("JPEG q90 + Display P3 profile, drafted to 224", ".jpg",
        lambda p: image.save(p, quality=90, icc_profile=icc_profile("Display P3")), MODEL_SIZE)
    add("PNG 8-bit RGB", ".png", lambda p: image.save(p))
    add("PNG 8-bit RGB + Display P3 profile", ".png", lambda p: image.save(p, icc_profile=icc_profile("Display P3")))
    add("PNG 16-bit RGB", ".png", lambda p: _png16(rgb.astype(np.uint16) * 257, p, "RGB;16"))
    add("PNG 16-bit gray", ".png", lambda p: _png16(rgb[..., 0].astype(np.uint16) * 257, p, "L;16"))
    add("TIFF 16-bit RGB", ".tif", lambda p: tifffile.imwrite(p, rgb.astype(np.uint16) * 257, photometric="rgb"))
    add("TIFF 32-bit float gray", ".tif", lambda p: tifffile.imwrite(p, rgb[..., 0].astype(np.float32) / 255))
    add("AVIF q90", ".avif", lambda p: image.save(p, quality=90))
    add("HEIC q90", ".heic", lambda p: _heic_at(rgb, p))
    return files


def _heic_at(rgb: np.ndarray, path: Path) -> None:
    from pillow_heif import from_bytes

    from_bytes(mode="RGB", size=(rgb.shape[1], rgb.shape[0]), data=rgb.tobytes()).save(str(path), quality=90)


def median_ms(path: Path, min_size: int | None, repeats: int) -> float:
    load_rgb(path, min_size=min_size)  # warm-up: caches, the ICC transform
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        load_rgb(path, min_size=min_size)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="the JSON file to write")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size_name, size in SIZES.items():
            folder = Path(tmp) / str(size[0])
            folder.mkdir()
            files = write_files(picture(size), folder)
            results[size_name] = {name: {"ms": median_ms(path, min_size, args.repeats),
                                         "file_kB": round(path.stat().st_size / 1024)}
                                  for name, (path, min_size) in files.items()}
            for name, row in results[size_name].items():
                print(f"{size_name:18s} {name:48s} {row['ms']:8.2f} ms  {row['file_kB']:6d} kB")
    import PIL
    import pillow_heif

    report = {
        "command": "python scripts/bench_image_decode.py " + str(args.output),
        "date": time.strftime("%Y-%m-%d"),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": next((line.split(":", 1)[1].strip() for line in flags.splitlines()
                           if line.startswith("model name")), None),
        "native_bf16": "avx512_bf16" in flags or "amx_bf16" in flags,
        "pillow": PIL.__version__, "pillow_heif": pillow_heif.__version__,
        "median_of": args.repeats,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
