"""The mock capacity benchmark runs end to end: `loadtests/mock_capacity.py` at 2 sessions.

A real mock process on loopback, driven by the benchmark's own generator; it checks the
benchmark works — a table, decisions measured, replies paced, a clean leak check — not
the machine's capacity (the step's verdict depends on how busy the machine is).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mock_capacity_measures_decisions_deltas_and_leaks(tmp_path):
    out = tmp_path / "mock.json"
    cmd = [sys.executable, str(ROOT / "loadtests" / "mock_capacity.py"), "--steps", "2", "--hold-s", "8",
           "--stagger-s", "0.2", "--lead-s", "2", "--json", str(out), "--keep-going"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    assert "served up to:" in proc.stdout, proc.stdout + proc.stderr
    [step] = json.loads(out.read_text())["steps"]
    assert step["sessions"] == 2 and step["errors"] == 0 and step["closed"] == 0, step
    # each session says a fixture inside the window: its speech_stopped is timed against its append
    assert step["decisions"] >= 2 and step["lag_p50_ms"] is not None and step["lag_p50_ms"] >= 0, step
    assert step["deltas"] > 10 and step["delta_late_p99_ms"] is not None, step  # the replies' pacing
    assert step["mock_cpu_ms_per_session_s"] > 0
    assert step["leak_ms"] is not None, "the mock still had open sessions after every close"
