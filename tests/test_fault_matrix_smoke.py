"""The fault matrix, short, in the suite: four cells of ``loadtests/fault_matrix.py``, one call each.

Real processes on loopback (the mock with a fault queued per call, our bridge, this process
as Twilio). A healthy call must come out clean — or the matrix would be crying wolf — and a
dropped OpenAI socket must end in the bridge's apology and hang-up; in every cell nothing may
crash or leak. A stalled response and a failed one must not leave the caller in dead air
(both did before issue 18: 8.4 s and 6.0 s).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CELLS = ["none:after", "drop:never", "stall:never", "fail_response:after"]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    out = tmp_path_factory.mktemp("matrix") / "matrix.json"
    cmd = [sys.executable, str(ROOT / "loadtests" / "fault_matrix.py"), "--cells", ",".join(CELLS), "--calls", "1",
           "--wait-ms", "4000", "--never-ms", "7500", "--json", str(out)]  # never: the apology lasts 5.6 s
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert out.exists(), proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    doc["stdout"] = proc.stdout
    doc["returncode"] = proc.returncode
    return doc


def cell(doc, name: str) -> dict:
    fault, moment = name.split(":")
    return next(c for c in doc["cells"] if c["fault"] == fault and c["moment"] == moment)


def test_the_matrix_prints_a_table_and_totals_and_nothing_crashed_or_leaked(matrix):
    assert "totals:" in matrix["stdout"] and "dead air max" in matrix["stdout"], matrix["stdout"]
    t = matrix["totals"]
    assert t["cells"] == len(CELLS) and t["calls"] == len(CELLS)
    assert t["crashes"] == 0 and t["sessions_open_1s_after"] == 0 and t["bridge_active_calls_after"] == 0, t
    assert matrix["returncode"] == (1 if t["cells_failed"] else 0)


def test_a_healthy_call_has_no_dead_air(matrix):
    (call,) = [c for c in matrix["calls"] if c["fault"] == "none"]
    assert call["heard_ms"] > 2000 and call["dead_air_ms"] < 2000, call  # the reply, whole
    assert call["ended_by"] == "hangup" and cell(matrix, "none:after")["ok"]


def test_a_dropped_openai_socket_ends_in_an_apology_and_a_hang_up(matrix):
    (call,) = [c for c in matrix["calls"] if c["fault"] == "drop"]
    assert call["ended_by"] == "closed_by_app" and call["dead_air_ms"] < 2000, call
    assert call["heard_ms"] > 5000, call  # what was sent of the reply, then the 5.6 s apology
    assert cell(matrix, "drop:never")["ok"]


@pytest.mark.parametrize("name", ["stall:never", "fail_response:after"])
def test_a_stalled_or_failed_response_leaves_no_dead_air(matrix, name):
    c = cell(matrix, name)
    assert c["dead_air_over"] == 0, c
