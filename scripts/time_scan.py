"""Time the scan of a data folder with and without the scan cache, and the split, split.csv and class list.

    python scripts/make_synthetic_folder.py /tmp/synthetic-200k --count 200000
    python scripts/time_scan.py /tmp/synthetic-200k --sizes 50000 100000 200000

Prints one line per measurement: the cold scan (every file opened; the scan cache of this root is
rebuilt), the cached rescan (a second DataModule, nothing opened), the cache's bytes per image, and
for the first N images of each ``--sizes`` the stratified split, ``split.csv`` and the class list.
``--executor process`` times the header checks in processes instead of threads (for comparison).
The page cache is not dropped: "cold" means without a scan cache, the file system's own cache warm.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from src.data.files.listing import list_images
from src.data.labels.sources import index_folder
from src.data.files.scan import FileScan, check_image
from src.data.files.scan_cache import ScanCache
from src.data.labels.split import stratified_split, write_split_csv


def _timed(label: str, function, *args):
    """Wall time, and CPU time of this process (all its threads; not its child processes): on a loaded
    machine the CPU time is the figure that does not depend on the other programs."""
    started, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    print(f"{label}: {time.perf_counter() - started:.2f} s wall, {time.process_time() - cpu:.2f} s CPU")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--sizes", type=int, nargs="*", default=[])
    parser.add_argument("--workers", type=int, default=8, help="data.scan_workers (default 8)")
    parser.add_argument("--executor", choices=["thread", "process"], default=None,
                        help="also time the header checks alone in this kind of pool")
    args = parser.parse_args()
    cache_dir = Path(tempfile.mkdtemp(prefix="scan-cache-"))

    def scan(rescan: bool) -> tuple:
        file_scan = FileScan(workers=args.workers, cache=ScanCache(cache_dir, args.root, FileScan.max_pixels, rescan))
        index = index_folder(args.root, 0.2, 42, file_scan)
        file_scan.save_cache()
        return index, file_scan

    index, cold = _timed("cold scan (every file opened)", scan, True)
    _, warm = _timed("cached rescan", scan, False)
    size = next(cache_dir.iterdir()).stat().st_size
    print(f"opened {cold.opened} then {warm.opened}; cache {size} bytes, {size / max(1, cold.kept):.1f} bytes per image")
    if args.executor:
        paths = list_images(args.root)
        pool = ProcessPoolExecutor if args.executor == "process" else None
        if pool is None:
            _timed(f"header checks, {args.workers} threads", FileScan(workers=args.workers).keep_readable, paths)
        else:
            def in_processes():
                with ProcessPoolExecutor(args.workers) as executor:
                    return list(executor.map(check_image, paths, chunksize=256))
            _timed(f"header checks, {args.workers} processes", in_processes)
    samples = sorted(index.train + index.valid, key=lambda s: str(s.path))
    for n in args.sizes:
        part = samples[:n]
        train, valid = _timed(f"{n} images: stratified split", stratified_split, part, 0.2, 42)
        out = cache_dir / "split.csv"
        _timed(f"{n} images: split.csv", write_split_csv, out, args.root, index.classes,
               {"train": train, "valid": valid})
        _timed(f"{n} images: class list", lambda: sorted({index.classes[s.label] for s in part}))


if __name__ == "__main__":
    main()
