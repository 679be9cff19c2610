"""Write Fashion-MNIST images as an image folder: ``OUT/<class name>/<split>_<index>.png``.

``--image-size 400 --format jpeg`` writes them upscaled as 400x400 JPEGs (quality 90), for
benchmarking a pipeline at photo sizes, where decoding costs what it costs on photos.

The source is Debian's ``dataset-fashion-mnist`` package (Zalando Research, MIT licence), which
puts the original idx files in /usr/share/datasets/fashion-mnist:

    apt-get install -y dataset-fashion-mnist
    python scripts/make_fashion_mnist_folder.py data/fashion-mnist-sample --per-class 500
    python scripts/make_fashion_mnist_folder.py /tmp/fashion-mnist            # all 60,000
    python scripts/make_fashion_mnist_folder.py /tmp/jpeg400 --per-class 300 --image-size 400 --format jpeg

The committed demo sample ``data/fashion-mnist-sample`` is made by the second line. Images are
taken in file order, so the same arguments always write the same files.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import struct
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
# The label names of https://github.com/zalandoresearch/fashion-mnist, in label order.
CLASS_NAMES = (
    "t-shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) idx file, the format of MNIST and Fashion-MNIST, into a uint8 array."""
    with gzip.open(path, "rb") as f:
        zero, dtype_code, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype_code != 0x08:
            raise ValueError(f"{path} is not a uint8 idx file (header {zero}, {dtype_code:#x})")
        shape = struct.unpack(f">{ndim}I", f.read(4 * ndim))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(shape)


FORMATS = {"png": ("PNG", {"optimize": True}), "jpeg": ("JPEG", {"quality": 90})}


def write_image_folder(
    source: Path,
    out: Path,
    split: str = "train",
    per_class: int | None = None,
    image_size: int | None = None,
    image_format: str = "png",
) -> dict[str, int]:
    """Write up to ``per_class`` images of each class (all when None), ``image_size`` pixels square
    (bicubic upscaling; None keeps 28x28), as ``image_format`` (png or jpeg); return the count per class."""
    if image_format not in FORMATS:
        raise ValueError(f"image format {image_format!r}; expected one of {', '.join(FORMATS)}")
    pil_format, save_options = FORMATS[image_format]
    suffix = ".jpg" if image_format == "jpeg" else ".png"
    images_file, labels_file = IDX_FILES[split]
    if not (source / images_file).is_file():
        raise FileNotFoundError(
            f"{source / images_file} not found: install Debian's package with "
            "`apt-get install -y dataset-fashion-mnist` or pass --source DIR"
        )
    images = read_idx(source / images_file)
    labels = read_idx(source / labels_file)
    counts = dict.fromkeys(CLASS_NAMES, 0)
    for folder in CLASS_NAMES:
        (out / folder).mkdir(parents=True, exist_ok=True)
    for index, (image, label) in enumerate(zip(images, labels)):
        name = CLASS_NAMES[label]
        if per_class is not None and counts[name] >= per_class:
            continue
        picture = Image.fromarray(image, mode="L")
        if image_size is not None:
            picture = picture.resize((image_size, image_size), Image.Resampling.BICUBIC)
        picture.save(out / name / f"{split}_{index:05d}{suffix}", pil_format, **save_options)
        counts[name] += 1
    return counts


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write <class>/<file>.png into")
    parser.add_argument("--per-class", type=int, default=None, help="images per class (default: all)")
    parser.add_argument("--split", choices=sorted(IDX_FILES), default="train")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--image-size", type=int, default=None, help="square side in pixels (default: 28)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="png")
    args = parser.parse_args()
    counts = write_image_folder(args.source, args.out, args.split, args.per_class, args.image_size, args.format)
    log.info("wrote %d images in %d class folders under %s", sum(counts.values()), len(counts), args.out)


if __name__ == "__main__":
    main()
