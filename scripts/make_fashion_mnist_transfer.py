"""Fashion-MNIST split by class for a transfer-learning experiment (docs/transfer-learning.md).

Writes, from Debian's ``dataset-fashion-mnist`` idx files:

- ``OUT/source/<class>/``: the first five classes (t-shirt_top, trouser, pullover, dress, coat),
  ``--source-per-class`` training images each: what the body is trained on;
- ``OUT/target/train/<class>/``: the other five (sandal, shirt, sneaker, bag, ankle_boot),
  ``--target-per-class`` training images each (fastai's "a few images per class" case);
- ``OUT/target/valid/<class>/``: the same five classes, ``--valid-per-class`` images each from the
  separate test split, so the error rates of the small target set are measured on many images.

    python scripts/make_fashion_mnist_transfer.py /tmp/fmnist-transfer

Images are taken in file order, so the same arguments always write the same files.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from PIL import Image

from make_fashion_mnist_folder import CLASS_NAMES, DEFAULT_SOURCE, IDX_FILES, read_idx

log = logging.getLogger(__name__)

SOURCE_CLASSES, TARGET_CLASSES = CLASS_NAMES[:5], CLASS_NAMES[5:]


def write_classes(source: Path, split: str, classes: tuple[str, ...], per_class: int, out: Path) -> int:
    """Write the first ``per_class`` images of each of ``classes`` from ``split`` under ``out/<class>/``."""
    images_file, labels_file = IDX_FILES[split]
    images, labels = read_idx(source / images_file), read_idx(source / labels_file)
    counts = dict.fromkeys(classes, 0)
    for name in classes:
        (out / name).mkdir(parents=True, exist_ok=True)
    for index, (image, label) in enumerate(zip(images, labels)):
        name = CLASS_NAMES[label]
        if name in counts and counts[name] < per_class:
            Image.fromarray(image, mode="L").save(out / name / f"{split}_{index:05d}.png", optimize=True)
            counts[name] += 1
    return sum(counts.values())


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--source-per-class", type=int, default=1000)
    parser.add_argument("--target-per-class", type=int, default=50)
    parser.add_argument("--valid-per-class", type=int, default=200)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = parser.parse_args()
    for what, split, classes, count, out in (
        ("source", "train", SOURCE_CLASSES, args.source_per_class, args.out / "source"),
        ("target training", "train", TARGET_CLASSES, args.target_per_class, args.out / "target" / "train"),
        ("target validation", "test", TARGET_CLASSES, args.valid_per_class, args.out / "target" / "valid"),
    ):
        log.info("%s: %d images under %s", what, write_classes(args.source, split, classes, count, out), out)


if __name__ == "__main__":
    main()
