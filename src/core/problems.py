"""What a component says about settings it cannot work with: ``Problem`` records and ``ConfigError``.

Each component lists its own problems (the stage schedule, the split, the label sources, the
DataModule, the predictor) and its constructor raises them; ``src.runs.config_checks`` collects the
same lists from a whole config before any heavy work, so a run with three typos fails once,
listing three problems. This module sits below all of them and imports nothing of the project.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
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


def problems_by_name(problems: Callable[..., list[Problem]], settings: Mapping[str, Any], **given: Any) -> list[Problem]:
    """``problems`` called with each of its parameters taken by name from ``given``, else from ``settings``.

    A component's ``problems`` names its parameters as its config keys, so a check reads each setting
    by that name and no argument list is written a second time (where a new parameter would be
    passed in the wrong place). A parameter with a default may be absent from both.
    """
    arguments = {}
    for name, parameter in inspect.signature(problems).parameters.items():
        if name in given:
            arguments[name] = given[name]
        elif name in settings:
            arguments[name] = settings[name]
        elif parameter.default is inspect.Parameter.empty:
            raise TypeError(f"{problems.__qualname__} takes {name!r}, which neither the settings nor the caller give")
    return problems(**arguments)
