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
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "loadtests"))
import capacity_analysis  # noqa: E402


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


CAREFUL = ROOT / "tests" / "foreign" / "careful.py"


def test_a_bridge_dropping_its_first_frame_loses_a_frame_not_20ms_of_latency(tmp_path):
    """A foreign bridge (WebSocket only, no webhook, no /metrics) that drops every frame before
    its OpenAI socket is open: frames pair by content, so the loss is counted as caller audio
    lost at call start and the added latency stays ≈ 0 over loopback (index pairing said +20 ms)."""
    out = tmp_path / "capacity.json"
    cmd = [sys.executable, str(ROOT / "loadtests" / "capacity.py"), "--steps", "3", "--hold-s", "3",
           "--stagger-s", "0.3", "--lead-s", "1", "--json", str(out), "--wait-quiet-s", "0", "--retries", "0",
           "--stream-path", "/media-stream", "--leak-wait-s", "5",
           "--bridge-cmd", f"{{python}} {CAREFUL} --drop-until-open --port {{port}} --openai-url {{openai_url}}"]
    if shutil.which("taskset") is None:
        cmd.append("--no-pin")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lost@start" in proc.stdout
    (s,) = json.loads(out.read_text())["steps"]
    assert s["placed"] == s["paired"] == 3 and not s["errors"], s
    fr, lat = s["frames"], s["latency_ms"]
    assert fr["calls_measured_by_index"] == 0, fr
    assert fr["calls_lost_at_start"] == 3 and fr["lost_at_start"] >= 3, fr
    assert fr["lost_at_start_ms_per_call"]["mean"] >= 20, fr
    assert fr["lost_in_window"] == 0, fr
    assert lat["frames"] > 0 and lat["p50"] < 5, lat


def _pairing_fixture(n_calls: int = 4, dropped: int = 1):
    """Calls saying the same utterance at nearly the same time over an untagged silent line, and
    their sessions (in another order) from a bridge that dropped each call's first frame(s)."""
    rng = np.random.default_rng(2)
    speech = rng.integers(0, 2**32, 80, dtype=np.int64)
    silence = zlib.crc32(b"\xff" * 160)
    calls, sessions = [], []
    for i in range(n_calls):
        crc = np.concatenate([np.full(20 + 3 * i, silence), speech, np.full(200, silence)]).astype(np.int64)
        sent = 10**12 + i * 7_000_000 + np.arange(len(crc), dtype=np.int64) * 20_000_000
        calls.append({"i": i, "sent": sent, "crc": crc})
        got = sent[dropped:] + 400_000
        sessions.append({"block_ns": got, "block_crc": crc[dropped:], "append_ns": got})
    order = [2, 0, 3, 1][:n_calls]
    return calls, [sessions[k] for k in order], order


def test_calls_pair_with_sessions_by_content():
    calls, sessions, order = _pairing_fixture()
    pairs, by_index = capacity_analysis.pair(calls, sessions)
    assert pairs == {i: order.index(i) for i in range(4)} and not by_index


def test_calls_fall_back_to_index_pairing_when_no_content_matches():
    """A transcoding bridge (forwarding every frame): the mock's blocks are not the caller's μ-law."""
    calls, sessions, order = _pairing_fixture(dropped=0)
    for s in sessions:
        s["block_crc"] = s["block_crc"] ^ 0x5A5A5A5A
    pairs, by_index = capacity_analysis.pair(calls, sessions)
    assert pairs == {i: order.index(i) for i in range(4)} and by_index == {0, 1, 2, 3}
