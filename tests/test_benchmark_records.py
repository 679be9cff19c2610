"""Every measurement in benchmarks/ says when, where and how it was made."""

from __future__ import annotations

import json
import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_every_record_names_its_command_date_and_machine() -> None:
    problems = []
    records = sorted(BENCHMARKS.glob("*.json"))
    assert records, f"no measurements in {BENCHMARKS}"
    for path in records:
        record = json.loads(path.read_text())
        missing = [key for key in ("command", "date", "cpu", "native_bf16") if key not in record]
        if missing:
            problems.append(f"{path.name}: missing {missing}")
        elif not isinstance(record["native_bf16"], bool):
            problems.append(f"{path.name}: native_bf16 is {record['native_bf16']!r}, expected true or false")
        elif not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(record["date"])) or record["date"] not in path.name:
            problems.append(f"{path.name}: date {record['date']!r} is not a YYYY-MM-DD in the file name")
    assert not problems, "\n".join(problems)
