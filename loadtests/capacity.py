#!/usr/bin/env python
"""Capacity benchmark: how many concurrent real-time calls a bridge carries at the SLO.

    python loadtests/capacity.py                                  # our bridge, default ramp
    python loadtests/capacity.py --steps 25,50,75 --hold-s 20 --json cap.json
    python loadtests/capacity.py --bridge-cmd "node peer.js --port {port} --openai {openai_url}"
    python loadtests/capacity.py --quick                          # smoke test, ~30 s

For every step of the ramp it starts, each in its own process:

* the mock OpenAI Realtime server (``python -m callsim.simulator mock-openai --any-key``),
* the **target bridge command** (ours by default: ``python -m callsim.bridge --port {port}
  --openai-url {openai_url}``; any command line with those placeholders), pinned to
  the bridge core(s) with ``taskset`` (default core 0),
* one or more harness processes (``capacity.py _worker``) pinned to the other core,
  each running N trio ``place_call``\\ s at once, started staggered over ~1 s; every
  call follows Twilio's webhook → TwiML → media stream and loops "say a fixture,
  wait for the reply" until it hangs up,

holds the step for ``--hold-s`` seconds (the *window*: every call is up, each is past
its first seconds) and measures, over the window:

* **added per-frame latency through the bridge**: for every caller media frame sent in
  the window, the mock's arrival time of the 20 ms block that carried it minus the time
  the caller released it (one monotonic clock for all processes). Frames are paired with
  blocks *by content* — the caller records the CRC-32 of each frame it sends, the mock
  the CRC of each 160-byte block it receives — with a monotone alignment
  (:mod:`callsim.simulator.measure.framepairing`), and calls with mock sessions by the same CRCs (the
  session that received the call's distinctive frames soonest after they were sent).
  The first second of each call is skipped. p50/p99/max, and **late frames** (>
  ``--late-ms``);
* **lost frames**: caller frames no block carried, after the call's first forwarded
  frame (in the window; an SLO failure), and, as a figure of its own, the **caller audio
  lost at call start** (frames before the first forwarded one: a bridge discarding
  audio until its OpenAI socket is open) — never counted as latency; duplicated frames
  and unmatched blocks go to the JSON;
* **underruns** (silence inside assistant replies; :func:`callsim.simulator.measure.metrics.measure_call`,
  whole calls) and the downstream latency (mock audio delta → caller), for information;
* **harness pacing**: how late the caller frames left their 20 ms slots (p99);
* **CPU and RSS**: psutil CPU-time deltas of the bridge (its process tree), the mock and
  the harness processes over the window, as ms of CPU per second of call, and their RSS
  growth over the idle process per call; the busy share of each pinned core (another
  process on a core shows up as ``other``).

After each step, the **leak check**: the mock must report 0 open sessions within 1 s of
the last hang-up, and the bridge's ``/metrics`` ``callsim_bridge_active_calls`` must read 0.

The SLO holds at a step when every call was placed and paired, p99 added latency ≤
``--slo-p99-ms`` (5), no late frame, no frame lost in the window, no underrun and no
leak (audio lost at call start is reported, not judged: bridges differ by design). A step is
*harness-limited* when the harness's pacing p99 > 2 ms or its core was > 90 % busy: its
figures then say more about the harness than about the bridge. The run prints a table and
the highest concurrency at which the SLO held; ``--json OUT`` writes every figure.

``--py-spy DIR`` (with ``--profile-steps``) records the bridge, the mock and the first
harness process with py-spy during the window; ``capacity.py profile-report FILE`` turns
a raw py-spy file into a breakdown by layer (hypercorn, wsproto, trio, our code, ...).

Pairing by content needs μ-law passthrough (batched or re-chunked appends are fine). A
transcoding bridge's blocks never match the caller's frames: those calls fall back to
index order (*k*-th frame → *k*-th append, ``calls_measured_by_index`` in the JSON), which
is only right while the bridge forwards every frame.

A bridge without a webhook (WebSocket only): ``--stream-path /media-stream`` connects the
caller straight to ``ws://…/media-stream``; without a ``--metrics-path`` endpoint the leak
check relies on the mock alone.

This module is the command line and the ramp; one step is :mod:`capacity_step`, a harness
process :mod:`capacity_worker`, the pairing, figures and verdicts :mod:`capacity_analysis`,
the table :mod:`capacity_table`, the profile breakdown :mod:`pyspy_report`; the process and
meter helpers it shares with ``mock_capacity.py`` are :mod:`bench`'s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from bench import PY, ROOT, fmt, parse_cpus
from capacity_analysis import summary
from capacity_step import Servers, run_step
from capacity_table import table_header, table_row

DEFAULT_BRIDGE_CMD = "{python} -m callsim.bridge --host 127.0.0.1 --port {port} --openai-url {openai_url}"
DEFAULT_STEPS = "10,25,50,100,150,200"


# ====================================================================== main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loadtests/capacity.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", default=DEFAULT_STEPS, help=f"concurrent calls per step (default {DEFAULT_STEPS})")
    p.add_argument("--hold-s", type=float, default=20.0, help="measured window per step, s (default 20)")
    p.add_argument("--stagger-s", type=float, default=1.0, help="calls start spread over this long (default 1)")
    p.add_argument("--lead-s", type=float, default=2.0,
                   help="after the last call started, wait this long before measuring (default 2)")
    p.add_argument("--tail-s", type=float, default=0.5, help="calls last this long past the window (default 0.5)")
    p.add_argument("--skip-s", type=float, default=1.0, help="ignore each call's first seconds (default 1)")
    p.add_argument("--quick", action="store_true", help="smoke test: steps 2,5, hold 4 s")
    p.add_argument("--bridge-cmd", default=DEFAULT_BRIDGE_CMD,
                   help="target bridge command; placeholders {port} {openai_url} {python} {host}; the env also "
                        "carries PORT, OPENAI_REALTIME_URL, OPENAI_API_KEY, DATABASE_PATH (default: ours)")
    p.add_argument("--bridge-env", action="append", default=[], metavar="K=V", help="extra env for the bridge")
    p.add_argument("--feeds", type=int, default=0, metavar="N",
                   help="keep N console live-feed subscribers (/api/feed, all calls) open for each step, as N "
                        "open consoles: the bridge gets a CONSOLE_TOKEN; compare with a run without (default 0)")
    p.add_argument("--bridge-cwd", default=str(ROOT), help="working directory of the bridge command")
    p.add_argument("--target-path", default="/incoming-call",
                   help="voice webhook path (default /incoming-call): the harness POSTs it and follows the TwiML "
                        "like Twilio")
    p.add_argument("--stream-path", default=None, metavar="PATH",
                   help="connect straight to ws://…PATH (e.g. /media-stream) instead of going through the webhook")
    p.add_argument("--metrics-path", default="/metrics", help="Prometheus path with callsim_bridge_active_calls")
    p.add_argument("--mock-args", default="",
                   help="extra arguments for `callsim mock-openai`, e.g. --mock-args=--no-validate (note the =)")
    p.add_argument("--workers", type=int, default=1, help="harness processes (default 1)")
    p.add_argument("--bridge-cpus", default="0", help="taskset CPU list for the bridge (default 0)")
    p.add_argument("--harness-cpus", default="1", help="taskset CPU list for the harness (default 1)")
    p.add_argument("--mock-cpus", default=None, help="taskset CPU list for the mock (default: the harness's)")
    p.add_argument("--no-pin", action="store_true", help="do not pin anything")
    p.add_argument("--reuse-servers", action="store_true",
                   help="one mock and one bridge for the whole ramp (default: fresh ones per step, so RSS per "
                        "call is measured against an idle process)")
    p.add_argument("--quiet-ms", type=int, default=600, help="caller waits this much quiet after a reply")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--slo-p99-ms", type=float, default=5.0)
    p.add_argument("--late-ms", type=float, default=20.0, help="a frame later than this through the bridge is late")
    p.add_argument("--harness-pacing-ms", type=float, default=2.0)
    p.add_argument("--harness-busy", type=float, default=0.90)
    p.add_argument("--realtime-pacing-ms", type=float, default=20.0,
                   help="steps whose harness pacing p99 exceeds this did not run in real time: their per-call "
                        "CPU is not used for the per-call figures (default 20)")
    p.add_argument("--leak-wait-s", type=float, default=30.0,
                   help="after the last call, how long to wait for the mock and the bridge to reach 0 (default 30)")
    p.add_argument("--disturbed", type=float, default=0.05,
                   help="flag (and rerun) a step when other processes used more than this share of a core "
                        "during its window (default 0.05)")
    p.add_argument("--stop-after", type=int, default=2, help="stop the ramp after this many failing steps in a row")
    p.add_argument("--keep-going", action="store_true", help="run every step whatever happens")
    p.add_argument("--quiet-busy", type=float, default=0.15,
                   help="before each step, wait until other processes use less than this share of the machine")
    p.add_argument("--wait-quiet-s", type=float, default=600.0, help="... for at most this long (default 600)")
    p.add_argument("--retries", type=int, default=2, help="rerun a step disturbed by other processes (default 2)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write every figure as JSON")
    p.add_argument("--py-spy", default=None, metavar="DIR", help="record py-spy profiles (raw) during the window")
    p.add_argument("--profile-steps", default="", help="steps to profile with --py-spy (default: all)")
    p.add_argument("--py-spy-rate", type=int, default=100)
    p.add_argument("--keep-tmp", action="store_true", help="keep the logs and raw results")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        from capacity_worker import worker_main

        return worker_main(argv[1])
    if argv[:1] == ["profile-report"]:
        from pyspy_report import print_profile, profile_report

        for f in argv[1:]:
            print_profile(Path(f), profile_report(Path(f)))
        return 0
    a = build_parser().parse_args(argv)
    if a.quick:
        a.steps, a.hold_s, a.stagger_s, a.lead_s = "2,5", min(a.hold_s, 4.0), 0.5, 1.5
    steps = [int(x) for x in a.steps.split(",") if x.strip()]
    a.profile_steps = set(steps) if (a.py_spy and not a.profile_steps) else {
        int(x) for x in a.profile_steps.split(",") if x.strip()}
    a.commands = {}

    # -- pinning
    notes = []
    a.cpus = {"bridge": [], "harness": [], "mock": []}
    pin_ok = not a.no_pin and shutil.which("taskset") is not None
    if not a.no_pin and not pin_ok:
        notes.append("taskset not found: nothing pinned")
    if pin_ok:
        avail = os.sched_getaffinity(0)
        want = {"bridge": parse_cpus(a.bridge_cpus), "harness": parse_cpus(a.harness_cpus),
                "mock": parse_cpus(a.mock_cpus if a.mock_cpus is not None else a.harness_cpus)}
        if not all(set(v) <= avail for v in want.values()) or len(avail) < 2:
            notes.append(f"CPUs {sorted(avail)} available: nothing pinned")
            pin_ok = False
        else:
            a.cpus = want
    spec = {"bridge": a.bridge_cpus, "harness": a.harness_cpus,
            "mock": a.mock_cpus if a.mock_cpus is not None else a.harness_cpus}
    a.pin = lambda role: ["taskset", "-c", spec[role]] if pin_ok else []  # noqa: E731

    if pin_ok:  # this process mostly sleeps; keep it off the bridge's core all the same
        os.sched_setaffinity(0, set(a.cpus["harness"]))

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    tmp = Path(tempfile.mkdtemp(prefix="callsim-capacity-"))
    print(f"callsim capacity benchmark — {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, "
          f"{psutil.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}")
    print(f"steps {steps}, hold {a.hold_s:g} s/step, SLO p99 ≤ {a.slo_p99_ms:g} ms, no frame > {a.late_ms:g} ms, "
          f"no underrun; pinning: " + (", ".join(f"{k} → CPU {v}" for k, v in spec.items()) if pin_ok else "off"))
    for n in notes:
        print("note:", n)

    results: list[dict[str, Any]] = []
    servers: Servers | None = None
    rc = 0
    header_done = False
    try:
        for n in steps:
            if servers is None or not a.reuse_servers:
                if servers is not None:
                    servers.stop()
                servers = Servers(a, tmp, str(n))
                servers.start()
            if not header_done:
                for role in ("mock", "bridge"):
                    print(f"{role}: {servers.commands[role]}")
                print()
                print(table_header())
                header_done = True
            step = run_step(a, servers, n, tmp)
            attempts = 1
            while any(f.startswith("disturbed") for f in step["flags"]) and attempts <= a.retries:
                print(f"  ({n} calls: disturbed by other processes — {', '.join(step['flags'])}; rerunning)",
                      flush=True)
                if not a.reuse_servers:
                    servers.stop()
                    servers = Servers(a, tmp, f"{n}r{attempts}")
                    servers.start()
                step = run_step(a, servers, n, tmp)
                attempts += 1
            step["attempts"] = attempts
            step["commands"] = dict(servers.commands, harness=a.commands.get("harness"))
            results.append(step)
            print(table_row(step), flush=True)
            for e in step["worker_errors"]:
                print(e, file=sys.stderr)
            recent = results[-a.stop_after:]
            if not a.keep_going and len(recent) == a.stop_after and not any(r["slo_ok"] for r in recent) \
                    and n != steps[-1]:
                print(f"  (the SLO failed at {a.stop_after} steps in a row: stopping the ramp; --keep-going runs "
                      f"every step)", flush=True)
                break
            if step["placed"] == 0:
                rc = 1
                print("no call could be placed; stopping", file=sys.stderr)
                break
    except RuntimeError as exc:
        print(f"capacity: {exc}", file=sys.stderr)
        rc = 1
    except KeyboardInterrupt:
        rc = 130
    finally:
        if servers is not None:
            servers.stop()

    if results:
        print("-" * 40)
        print("columns: added latency caller → bridge → mock per frame, over the frames paired by content"
              " (window, first second of each call skipped); late = frames over the threshold; lost = caller frames"
              " the mock never received (window); lost@start = caller audio lost at call start, before the first"
              " frame the bridge forwarded (mean per call; never counted as latency); underrun = ms of silence inside replies (all calls);"
              " cpu = ms of CPU per second of call; MB = RSS growth per call over the idle process;"
              " b-core/h-core = how busy the bridge's / the harness's pinned core was (CPU of the processes pinned there); leak = ok / slow (all closed, but not within 1 s) / LEAK, ms from the last hang-up until the"
              " mock had 0 open sessions / the bridge's active calls at the end")
        s = summary(a, results)
        held = s["max_calls_slo_held"]
        print(f"SLO (p99 ≤ {a.slo_p99_ms:g} ms, no late or lost frame, no underrun, no leak) held up to: "
              f"{held if held is not None else 'none of the steps'} concurrent calls")
        if s["first_failure"]:
            ff = s["first_failure"]
            print(f"first failing step: {ff['calls']} calls — {'; '.join(ff['why'])}"
                  + (f" [{', '.join(ff['flags'])}]" if ff["flags"] else ""))
        if s["harness_limited_steps"]:
            print(f"harness-limited steps: {s['harness_limited_steps']}")
        print(f"per call (at {s['per_call_figures_from_step']} calls, the largest step the harness ran in real time; "
              f"{fmt(s['bridge_msgs_per_call_s'], '{:.0f}')} WebSocket messages/s per call through the bridge, "
              f"{fmt(s['bridge_cpu_us_per_msg'], '{:.0f}')} µs of bridge CPU each):")
        print(f"  bridge {fmt(s['bridge_ms_cpu_per_call_s'], '{:.2f}')} ms CPU/s "
              f"(≈ {fmt(s['bridge_calls_per_core_by_cpu'], '{:.0f}')} calls per core at 100 %), "
              f"{fmt(s['bridge_rss_mb_per_call'], '{:.2f}')} MB RSS; harness "
              f"{fmt(s['harness_ms_cpu_per_call_s'], '{:.2f}')} ms CPU/s (≈ "
              f"{fmt(s['harness_calls_per_core_by_cpu'], '{:.0f}')} calls per core); mock "
              f"{fmt(s['mock_ms_cpu_per_call_s'], '{:.2f}')} ms CPU/s (≈ "
              f"{fmt(s['mock_sessions_per_core_by_cpu'], '{:.0f}')} sessions per core)")
        if a.json:
            doc = {"argv": [PY, str(Path(__file__))] + argv, "config": {
                k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(a).items()
                if k not in ("pin", "json") and not callable(v)}, "summary": s, "steps": results}
            a.json.write_text(json.dumps(doc, indent=2, default=str))
            print(f"figures: {a.json}")
        if a.py_spy:
            print(f"profiles (py-spy raw): {a.py_spy}; break them down with: "
                  f"python loadtests/capacity.py profile-report {a.py_spy}/bridge-N.txt")
    if a.keep_tmp or rc:
        print(f"logs and raw results: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
