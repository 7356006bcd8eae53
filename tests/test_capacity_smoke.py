"""The capacity benchmark runs end to end: `loadtests/capacity.py --quick` (2 and 5 calls, 4 s each).

Real processes (the mock, our bridge, a harness process) on loopback; it checks the
benchmark works — a table, figures, a clean leak check — not the machine's capacity.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_capacity_quick_prints_a_table_and_exits_0(tmp_path):
    out = tmp_path / "capacity.json"
    cmd = [sys.executable, str(ROOT / "loadtests" / "capacity.py"), "--quick", "--json", str(out),
           "--wait-quiet-s", "0", "--retries", "0"]  # a test must not wait for a quiet machine
    if shutil.which("taskset") is None:
        cmd.append("--no-pin")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["calls", "p50", "p99"])
    rows = [line.split() for line in lines[header + 3:] if re.match(r"\s+\d+\s+[\d.]+\s", line)]
    assert [r[0] for r in rows] == ["2", "5"], proc.stdout
    assert "SLO (p99" in proc.stdout

    doc = json.loads(out.read_text())
    assert [s["calls"] for s in doc["steps"]] == [2, 5]
    for s in doc["steps"]:
        assert s["placed"] == s["calls"] and s["paired"] == s["calls"] and not s["errors"], s
        assert s["latency_ms"]["frames"] > 0 and s["latency_ms"]["p99"] is not None
        assert s["pacing_ms"]["frames"] > 0
        # nothing left open (the 1 s deadline itself is for quiet machines, not for a busy CI box)
        assert s["leak"]["mock_sessions_still_open"] == 0 and s["leak"]["bridge_active_calls"] == 0, s["leak"]
        assert s["cpu"]["bridge"]["cpu_s"] > 0
