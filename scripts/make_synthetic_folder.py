"""Write a large synthetic image folder, to measure the scan and start-up at scale (issue 16).

``OUT/class_<k>/<index>.png`` (or ``.jpg``): ``--count`` small images (32x32 by default) spread
evenly over ``--classes`` class folders, written in parallel by ``--processes`` processes. Each
image is a flat colour with a little noise drawn from a generator seeded by its index, so the
same arguments always write the same files. Not for training quality: for the scan's cost.

    python scripts/make_synthetic_folder.py /tmp/synthetic-200k --count 200000
    python scripts/make_synthetic_folder.py /tmp/synthetic-50k --count 50000 --format jpeg

The output goes outside the repository (``/tmp``): 200,000 PNGs of 32x32 are ~0.9 GB on disk
with 4 kB blocks.
"""

from __future__ import annotations

import argparse
import os
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

SUFFIX = {"png": ".png", "jpeg": ".jpg"}


def _write_range(args: tuple[Path, int, int, int, int, str]) -> int:
    out, start, stop, classes, size, image_format = args
    for index in range(start, stop):
        rng = np.random.default_rng(index)
        colour = rng.integers(0, 256, size=3, dtype=np.uint8)
        pixels = np.clip(colour + rng.integers(-12, 13, size=(size, size, 3)), 0, 255).astype(np.uint8)
        path = out / f"class_{index % classes}" / f"{index:07d}{SUFFIX[image_format]}"
        Image.fromarray(pixels).save(path, format=image_format.upper())
    return stop - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to create (must not exist)")
    parser.add_argument("--count", type=int, default=200_000, help="number of images (default 200000)")
    parser.add_argument("--classes", type=int, default=10, help="number of class folders (default 10)")
    parser.add_argument("--size", type=int, default=32, help="side of the square images in pixels (default 32)")
    parser.add_argument("--format", choices=sorted(SUFFIX), default="png", dest="image_format")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; give a new folder (or delete it first)")
    if args.count < args.classes or args.classes < 2:
        raise SystemExit(f"--count {args.count} --classes {args.classes}: need >= 2 classes and >= 1 image per class")
    for k in range(args.classes):
        (args.out / f"class_{k}").mkdir(parents=True)
    chunk = 2_000  # small enough to balance the processes, large enough that scheduling costs nothing
    jobs = [(args.out, start, min(start + chunk, args.count), args.classes, args.size, args.image_format)
            for start in range(0, args.count, chunk)]
    started = time.perf_counter()
    with Pool(max(1, args.processes)) as pool:
        written = sum(pool.imap_unordered(_write_range, jobs))
    print(f"wrote {written} images to {args.out} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
