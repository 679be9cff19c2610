"""Write Fashion-MNIST images as an image folder: ``OUT/<class name>/<split>_<index>.png``.

The source is Debian's ``dataset-fashion-mnist`` package (Zalando Research, MIT licence), which
puts the original idx files in /usr/share/datasets/fashion-mnist:

    apt-get install -y dataset-fashion-mnist
    python scripts/make_fashion_mnist_folder.py data/fashion-mnist-sample --per-class 500
    python scripts/make_fashion_mnist_folder.py /tmp/fashion-mnist            # all 60,000

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


def write_image_folder(
    source: Path, out: Path, split: str = "train", per_class: int | None = None
) -> dict[str, int]:
    """Write up to ``per_class`` images of each class (all when None); return the count per class."""
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
        Image.fromarray(image, mode="L").save(out / name / f"{split}_{index:05d}.png", optimize=True)
        counts[name] += 1
    return counts


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write <class>/<file>.png into")
    parser.add_argument("--per-class", type=int, default=None, help="images per class (default: all)")
    parser.add_argument("--split", choices=sorted(IDX_FILES), default="train")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = parser.parse_args()
    counts = write_image_folder(args.source, args.out, args.split, args.per_class)
    log.info("wrote %d images in %d class folders under %s", sum(counts.values()), len(counts), args.out)


if __name__ == "__main__":
    main()
