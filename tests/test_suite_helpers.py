"""The suite's own rules: a test that needs a dev extra (or a system program CI installs) skips where it is
missing, but fails in CI, so that no test vanishes from CI's run unnoticed."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import PROJECT_ROOT, require_extra, require_programs

OUTCOMES = (pytest.fail.Exception, pytest.skip.Exception)


def test_a_missing_extra_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r'no_such_module is missing .*the audit extra, pip install -e "\.\[audit\]"'):
        require_extra("no_such_module", "audit")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(OUTCOMES) as outcome:  # a skip is caught too, so that it fails this test rather than skip it
        require_extra("no_such_module", "audit")
    assert outcome.type is pytest.fail.Exception
    assert re.search(r"CI=true: no_such_module is missing .*so this test must run", str(outcome.value))
    assert require_extra("json", "dev") is json  # an installed one is imported, in CI too


def test_a_missing_program_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs no-such-program"):
        require_programs("sh", "no-such-program")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(OUTCOMES) as outcome:
        require_programs("sh", "no-such-program")
    assert outcome.type is pytest.fail.Exception and "CI=true: needs no-such-program" in str(outcome.value)
    assert require_programs("sh")[0].endswith("/sh")


def test_every_optional_import_goes_through_require_extra():
    """pytest.importorskip skips in CI too: the one owner of that rule is conftest's require_extra."""
    users = [path.name for path in (PROJECT_ROOT / "tests").glob("*.py")
             if re.search(r"importorskip\(", path.read_text()) and path.name != "test_suite_helpers.py"]
    assert users == []


def test_ci_runs_with_ci_set():
    assert re.search(r"^export CI=true$", (PROJECT_ROOT / ".ci" / "run").read_text(), re.M)
