"""The smallest image side the networks take, and the one rule every size setting is checked by."""

from __future__ import annotations

from typing import Any

from src.core.problems import Problem, is_whole_number

MIN_IMAGE_SIZE = 32  # a ResNet downsamples by 32: below that its last feature map is empty


def image_size_problems(key: str, size: Any, fix: str, allowed_null: str | None = None) -> list[Problem]:
    """``size`` (the value of ``key``) must be a whole number >= :data:`MIN_IMAGE_SIZE` (or None where
    ``allowed_null`` says what null means)."""
    if (size is None and allowed_null) or is_whole_number(size, minimum=MIN_IMAGE_SIZE):
        return []
    expected = f"a whole number >= {MIN_IMAGE_SIZE} (a ResNet downsamples by 32)"
    return [Problem(key, size, expected + (f", or null for {allowed_null}" if allowed_null else ""), fix)]
