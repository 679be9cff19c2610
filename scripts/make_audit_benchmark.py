"""A folder of real photos with known problems, for measuring ``python -m src.audit``: ``OUT/<class>/*.png``
plus ``OUT.truth.json`` (outside the folder) listing what was injected.

From a folder of class folders (the committed ``data/fashion-mnist-sample`` by default):
- ``--moved`` of the images (5 %) are moved to another class folder, at random (labels moved);
- ``--near`` near-duplicates are added: a copy of an image resized (x1.5), re-compressed (JPEG
  quality 75) or slightly cropped (2 pixels off each side, back to the size), a third of them filed under
  another class (label conflicts); whether a pair straddles the split is up to the split, as in a real
  folder, and the truth file lets the measurement say which did.

    python scripts/make_audit_benchmark.py /tmp/audit-bench
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
from pathlib import Path

from PIL import Image

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "fashion-mnist-sample"


def near_copy(image: Image.Image, how: str) -> Image.Image:
    width, height = image.size
    if how == "resized":
        return image.resize((round(width * 1.5), round(height * 1.5)), Image.Resampling.BICUBIC)
    if how == "recompressed":
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=75)
        return Image.open(io.BytesIO(buffer.getvalue())).convert(image.mode)
    return image.crop((2, 2, width - 2, height - 2)).resize((width, height), Image.Resampling.BICUBIC)


def build(source: Path, out: Path, moved_fraction: float, near: int, seed: int) -> dict:
    rng = random.Random(seed)
    shutil.copytree(source, out)
    classes = sorted(p.name for p in out.iterdir() if p.is_dir())
    files = sorted(p for p in out.rglob("*.png"))
    chosen = rng.sample(files, round(moved_fraction * len(files)) + near)
    to_move, to_copy = chosen[:-near], chosen[-near:]
    moved = []
    for path in to_move:
        target = rng.choice([c for c in classes if c != path.parent.name])
        new = out / target / f"moved_{path.parent.name}_{path.name}"
        path.rename(new)
        moved.append({"path": new.relative_to(out).as_posix(), "true_label": path.parent.name, "given_label": target})
    pairs = []
    for number, original in enumerate(to_copy):
        how = ("resized", "recompressed", "cropped")[number % 3]
        across = number % 3 == 1  # a third under another class
        folder = rng.choice([c for c in classes if c != original.parent.name]) if across else original.parent.name
        copy = out / folder / f"near_{how}_{original.stem}.png"
        near_copy(Image.open(original), how).save(copy)
        pairs.append({"original": original.relative_to(out).as_posix(), "copy": copy.relative_to(out).as_posix(),
                      "how": how, "across_classes": across})
    return {"source": str(source), "seed": seed, "moved": moved, "near_duplicates": pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--source", type=Path, default=SAMPLE)
    parser.add_argument("--moved", type=float, default=0.05)
    parser.add_argument("--near", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    truth = build(args.source, args.out, args.moved, args.near, args.seed)
    truth_path = args.out.with_name(args.out.name + ".truth.json")
    truth_path.write_text(json.dumps(truth, indent=1))
    print(f"{args.out}: {len(truth['moved'])} labels moved, {len(truth['near_duplicates'])} near-duplicates; "
          f"truth in {truth_path}")


if __name__ == "__main__":
    main()
