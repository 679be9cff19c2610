"""docs/configuration-reference.md is generated from conf/: it must match what the script writes now."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = PROJECT_ROOT / "scripts" / "make_config_reference.py"


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location("make_config_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module, module.build()


def test_every_key_has_a_description(reference) -> None:
    _, built = reference
    if built.undescribed:
        pytest.fail(
            "keys without a comment in conf/ (write one on the key's line or just above it):\n  "
            + "\n  ".join(built.undescribed)
        )


def test_the_reference_is_up_to_date(reference) -> None:
    module, built = reference
    written = module.OUTPUT.read_text() if module.OUTPUT.exists() else ""
    if written != built.text:
        changed = [line for line in built.text.splitlines() if line not in set(written.splitlines())]
        pytest.fail(
            f"{module.OUTPUT.relative_to(PROJECT_ROOT)} differs from conf/: run `{module.REGENERATE}` and commit it."
            + ("\nlines it lacks:\n  " + "\n  ".join(changed[:10]) if changed else "")
        )


def test_it_lists_every_group_option_and_entry_point(reference) -> None:
    module, built = reference
    for option in sorted(module.CONF.glob("*/*.yaml")) + sorted(module.CONF.glob("*/*/*.yaml")):
        group = option.parent.relative_to(module.CONF).as_posix()
        assert option.stem in built.text, f"{group}={option.stem} missing from the reference"
    for name, command in module.ENTRIES:
        assert f"## `{command}` (conf/{name}.yaml)" in built.text
    # Spot checks that the defaults are the composed ones, not the files' text.
    assert "| `data.batch_size` | `64` |" in built.text
    assert "| `trainer.precision` | `auto` |" in built.text
