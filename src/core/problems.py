"""What a component says about settings it cannot work with: ``Problem`` records and ``ConfigError``.

Each component lists its own problems (the stage schedule, the split, the label sources, the
DataModule, the predictor) and its constructor raises them; ``src.runs.config_checks`` collects the
same lists from a whole config before any heavy work, so a run with three typos fails once,
listing three problems. This module sits below all of them and imports nothing of the project.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One setting that cannot work: its config key, the value given, what was expected, and the fix."""

    key: str
    value: Any
    expected: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}: expected {self.expected}; {self.fix}"


class ConfigError(ValueError):
    """A config with one or more problems; ``problems`` holds each, ``str`` lists them one per line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the config, nothing was run:\n{lines}")


def raise_problems(problems: Iterable[Problem]) -> None:
    """Raise :class:`ConfigError` listing ``problems``; return if there are none."""
    problems = list(problems)
    if problems:
        raise ConfigError(problems)


def is_number(value: Any) -> bool:
    """An int or a float, not a bool (YAML's ``true`` would otherwise pass as 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_whole_number(value: Any, minimum: int | None = None) -> bool:
    """An int (not a bool), at least ``minimum`` when given."""
    return isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum)
