"""Write an imbalanced copy of the demo sample, as product-photo folders are: a few classes with
hundreds of photos, many with ten (the measurements of docs/regularisation-and-imbalance.md).

    python scripts/make_imbalanced_sample.py data/fashion-mnist-sample /tmp/imbalanced
    python -m src.train experiment=demo data.root=/tmp/imbalanced data.sampler=balanced

``OUT/train/<class>/`` holds the first 400 images of five classes and the first 10-25 of the
other five (:data:`SMALL`); ``OUT/valid/<class>/`` the images 400-499 of every class, so each
class's validation recall is measured on 100 images. Files are taken in name order: the same
arguments always write the same folder.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

SMALL = {"bag": 10, "t-shirt_top": 12, "dress": 15, "sandal": 20, "shirt": 25}  # training images of the small classes
LARGE = 400  # training images of the others
VALID = (400, 500)  # the image range of every class held out for validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a folder of class folders with at least 500 images each")
    parser.add_argument("out", type=Path, help="where to write train/ and valid/ (must not exist)")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; choose a new folder")
    for folder in sorted(p for p in args.source.iterdir() if p.is_dir()):
        images = sorted(folder.iterdir())
        if len(images) < VALID[1]:
            raise SystemExit(f"{folder} has {len(images)} images; expected at least {VALID[1]}")
        for subset, chosen in (("train", images[:SMALL.get(folder.name, LARGE)]), ("valid", images[VALID[0]:VALID[1]])):
            (args.out / subset / folder.name).mkdir(parents=True)
            for image in chosen:
                shutil.copy(image, args.out / subset / folder.name / image.name)
    print(f"wrote {args.out}/train and {args.out}/valid")


if __name__ == "__main__":
    main()
