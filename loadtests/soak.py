#!/usr/bin/env python
"""Soak: K calls at a time, back to back, for M minutes; does anything grow?

    python loadtests/soak.py --minutes 10                # 4 calls at a time
    python loadtests/soak.py --minutes 30 --concurrency 8 --json soak.json

The mock (keeping only ``--keep-sessions`` records of closed sessions, so that its
introspection memory levels off within the first minute) and the bridge run as processes
of their own; K callers (:mod:`goodcall`, a process of its own) loop good calls through the
bridge's webhook for the whole run. Every ``--every-s`` seconds (30) it prints the RSS and
open fds of both servers, the bridge's active calls, the mock's open sessions, and the
calls passed/failed so far. At the end: the memory **slope** of each server, by least
squares over the samples after ``--warmup-s`` (allocator arenas and caches fill first), in
MB per minute, and the verdict **flat** when it is below ``--flat-mb-per-min`` (0.5 MB/min:
a leak of 16 KB per call at 32 calls a minute); plus the fd slope and the leak check (no
active call, no open session 1 s after the last call). Exit status 1 on a crash, a failed
call, a leak, or memory that is not flat.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import servers
from goodcall import GoodCaller


def slope_per_min(samples: list[dict[str, Any]], key: str, warmup_s: float) -> float | None:
    """Least-squares slope of ``key`` over time (per minute), after the warm-up."""
    pts = [(s["t_s"] / 60, s[key]) for s in samples if s["t_s"] >= warmup_s and s.get(key) is not None]
    if len(pts) < 3:
        return None
    t, v = np.array(pts).T
    return float(np.polyfit(t, v, 1)[0])


def sample(t0: float, bridge: servers.Server, mock: servers.Server, callers: GoodCaller) -> dict[str, Any]:
    b, m = bridge.stats(), mock.stats()
    return {"t_s": round(time.monotonic() - t0, 1), "bridge_rss_mb": b["rss_mb"], "bridge_fds": b["fds"],
            "mock_rss_mb": m["rss_mb"], "mock_fds": m["fds"],
            "active_calls": servers.bridge_active_calls(bridge) if bridge.alive else None,
            "open_sessions": servers.mock_open_sessions(mock) if mock.alive else None,
            "passed": callers.passed, "failed": len(callers.failed)}


def run(a: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(a.tmp or tempfile.mkdtemp(prefix="callsim-soak-"))
    tmp.mkdir(parents=True, exist_ok=True)
    mock = servers.start_mock(tmp, extra=["--keep-sessions", str(a.keep_sessions)])
    bridge = servers.start_bridge(tmp, mock)
    seconds = a.minutes * 60
    samples: list[dict[str, Any]] = []
    try:
        t0 = time.monotonic()
        callers = GoodCaller(bridge.url + "/incoming-call", seconds=seconds, every=0, concurrency=a.concurrency,
                             log=tmp / "callers.log")
        print(f"{'t s':>6} {'bridge MB':>10} {'fds':>4} {'mock MB':>8} {'fds':>4} {'active':>7} {'open':>5} "
              f"{'passed':>7} {'failed':>7}", flush=True)
        next_t = 0.0
        while True:
            s = sample(t0, bridge, mock, callers)
            samples.append(s)
            print(f"{s['t_s']:>6.0f} {_n(s['bridge_rss_mb']):>10} {_n(s['bridge_fds']):>4} {_n(s['mock_rss_mb']):>8} "
                  f"{_n(s['mock_fds']):>4} {_n(s['active_calls']):>7} {_n(s['open_sessions']):>5} {s['passed']:>7} "
                  f"{s['failed']:>7}", flush=True)
            if time.monotonic() - t0 >= seconds or not (bridge.alive and mock.alive):
                break
            next_t += a.every_s
            time.sleep(max(0.0, min(t0 + next_t, t0 + seconds) - time.monotonic()))
        callers.wait(120)
        settled = servers.wait_settled(bridge if bridge.alive else None, mock if mock.alive else None, 1.0)
        final = sample(t0, bridge, mock, callers)
        crashes = {s.name: s.exit_code for s in (bridge, mock) if not s.alive}
        tracebacks = {s.name: servers.log_tracebacks(s.log) for s in (bridge, mock)}
    finally:
        bridge.stop()
        mock.stop()
    slopes = {k: slope_per_min(samples, k, a.warmup_s)
              for k in ("bridge_rss_mb", "mock_rss_mb", "bridge_fds", "mock_fds")}
    flat = {k: (v is not None and v < a.flat_mb_per_min) for k, v in slopes.items() if k.endswith("rss_mb")}
    return {"minutes": a.minutes, "concurrency": a.concurrency, "samples": samples, "final": final,
            "calls": {"passed": callers.passed, "failed": callers.failed}, "slopes_per_min": slopes,
            "flat": flat, "flat_threshold_mb_per_min": a.flat_mb_per_min, "warmup_s": a.warmup_s,
            "leaks": settled, "crashes": crashes, "tracebacks_logged": tracebacks, "logs": str(tmp)}


def report(doc: dict[str, Any]) -> int:
    c = doc["calls"]
    print(f"\n{c['passed']} calls passed, {len(c['failed'])} failed"
          + "".join(f"\n  failed: {f['why']}" for f in c["failed"][:5]))
    sl = doc["slopes_per_min"]
    for name in ("bridge", "mock"):
        v = sl[f"{name}_rss_mb"]
        verdict = "flat" if doc["flat"][f"{name}_rss_mb"] else ("too short to tell" if v is None else "GROWING")
        fds = sl[f"{name}_fds"]
        print(f"{name}: RSS slope {_n(v, '{:+.3f}')} MB/min after the first {doc['warmup_s']:.0f} s "
              f"(flat below {doc['flat_threshold_mb_per_min']} MB/min): {verdict}; fds slope {_n(fds, '{:+.2f}')}/min")
    print(f"leak check 1 s after the last call: {doc['leaks']}; crashes: {doc['crashes'] or 'none'}; "
          f"tracebacks logged: {doc['tracebacks_logged']}")
    bad = doc["crashes"] or c["failed"] or any(v for v in doc["leaks"].values()) or not all(doc["flat"].values())
    return 1 if bad else 0


def _n(v: Any, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v) if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    p.add_argument("--concurrency", type=int, default=4, help="calls at a time (default 4)")
    p.add_argument("--every-s", type=float, default=30.0, help="seconds between samples (default 30)")
    p.add_argument("--warmup-s", type=float, default=60.0, help="samples before this are left out of the slope")
    p.add_argument("--flat-mb-per-min", type=float, default=0.5, help="RSS slope below which memory is flat")
    p.add_argument("--keep-sessions", type=int, default=20, help="the mock's records of closed sessions")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--tmp", help="directory for the servers' logs")
    a = p.parse_args(argv)
    doc = run(a)
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=2, default=str))
    return report(doc)


if __name__ == "__main__":
    sys.exit(main())
