"""The seeded fuzz suite (tests/fuzz/cases.py) in CI: no crash, no hang, no code execution, every refusal names
the file, key or argument.  It runs in its own process with a bounded address space (runner.py), so a runaway
allocation shows up as a crash instead of taking the machine down."""
import json
import subprocess
import sys

import pytest

from tests.fuzz.cases import KINDS
from tests.helpers import REPO

pytestmark = [pytest.mark.export, pytest.mark.slow]


def test_seeded_fuzz_cases_all_end_cleanly(tmp_path):
    out = tmp_path / "fuzz.json"
    run = subprocess.run([sys.executable, "-m", "tests.fuzz.runner", "--cases-per-kind", "20", "--budget-s", "100",
                          "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    summary = json.loads(out.read_text())
    assert summary["failures"] == [], run.stderr[-4000:]
    assert run.returncode == 0
    assert summary["cases"] >= 4 * len(KINDS) and set(summary["by_kind"]) == set(KINDS)
    assert summary["refusals_named"] >= summary["cases"] // 3       # most cases are broken inputs, refused by name
