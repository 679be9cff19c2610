"""Files written atomically: a crash mid-write leaves the old file (or none), never a truncated one.

The temporary file sits next to the target (same folder, so the same file system), is flushed to
disk and renamed over the target with ``os.replace``, which is atomic on POSIX and Windows. Every
file a run leaves (config, metrics, split, bad files, checkpoints) is written through here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` for writing (``"w"`` or ``"wb"``; ``open_kwargs`` such as ``newline=""``),
    whose content replaces ``path`` only once the block has finished without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The process id in the name: DDP processes, or runs sharing a scan cache, may write one file at once.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open(mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: str | Path, data: dict[str, Any]) -> None:
    """``data`` as indented JSON with sorted keys, written atomically (:func:`atomic_open`)."""
    with atomic_open(path) as f:
        f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
