"""A scanned :class:`~src.data.labels.sources.SampleIndex` (and what the scan left out) as plain JSON values.

What rank 0 hands to the DDP processes it launches (:mod:`src.core.launch_handoff`), so they use
its split and class list without opening the files. The settings the index depends on travel
with it: a process whose own settings differ refuses it rather than train on another split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from src.data.files.listing import Sample
from src.data.labels.sources import SampleIndex
from src.data.files.scan import BadFile

SUBSETS = ("train", "valid", "test")


def index_payload(index: SampleIndex, bad: list[BadFile], kept: int, settings: dict[str, Any]) -> dict[str, Any]:
    """``index`` and the scan's ``bad`` files and ``kept`` count, with the ``settings`` that made them."""

    def label(value: int | tuple[int, ...]) -> int | list[int]:
        return list(value) if isinstance(value, tuple) else value

    return {
        "settings": settings,
        "layout": index.layout,
        "classes": list(index.classes),
        **{subset: [[str(s.path), label(s.label)] for s in getattr(index, subset)] for subset in SUBSETS},
        "bad": [[str(b.path), b.kind, b.reason, b.ignored] for b in bad],
        "kept": kept,
    }


def index_from_payload(payload: dict[str, Any], settings: dict[str, Any]) -> tuple[SampleIndex, list[BadFile], int]:
    """The index, bad files and kept count of :func:`index_payload`; raises when it was made with other ``settings``."""
    if payload["settings"] != settings:
        differing = sorted(k for k in settings.keys() | payload["settings"].keys()
                           if settings.get(k) != payload["settings"].get(k))
        raise ValueError(f"rank 0's scan was made with other data settings ({', '.join(differing)}: "
                         f"{[payload['settings'].get(k) for k in differing]} there, "
                         f"{[settings.get(k) for k in differing]} here); every process of a run must get the "
                         "same data.* overrides")

    def samples(rows: list) -> list[Sample]:
        return [Sample(Path(path), tuple(label) if isinstance(label, list) else label) for path, label in rows]

    index = SampleIndex(payload["layout"], list(payload["classes"]), *(samples(payload[s]) for s in SUBSETS))
    bad = [BadFile(Path(path), kind, reason, ignored) for path, kind, reason, ignored in payload["bad"]]
    return index, bad, int(payload["kept"])
