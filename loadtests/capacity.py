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
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from callsim.simulator.measure.framepairing import pair_frames

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
FRAME_NS = 20_000_000
MS = 1_000_000
DEFAULT_BRIDGE_CMD = "{python} -m callsim.bridge --host 127.0.0.1 --port {port} --openai-url {openai_url}"
DEFAULT_STEPS = "10,25,50,100,150,200"
FIXTURES = ("caller_greeting", "caller_weather_question")


# ===================================================================== worker
# One harness process: N calls at once, then the raw per-call arrays to a JSON file.


def _b64(a: Any) -> str:
    return base64.b64encode(np.asarray(a, dtype=np.int64).tobytes()).decode("ascii")


def _unb64(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=np.int64)


def worker_main(cfg_path: str) -> int:
    import gc
    import random

    import trio
    from callsim.simulator.audio.utterances import default_bank
    from callsim.simulator.caller.script import Pause, Say, WaitForReply
    from callsim.simulator.caller.trio_driver import place_call
    from callsim.simulator.measure.metrics import measure_call
    from callsim.simulator.net.drive import open_call_services

    cfg = json.loads(Path(cfg_path).read_text())
    bank = default_bank()
    for f in cfg["fixtures"]:
        bank.get(f)  # convert once, before the clock starts
    duration_ms = int(cfg["duration_ms"])

    def script(i: int) -> list[Any]:
        steps: list[Any] = [Pause(200 + (i * 53) % 600)]  # desynchronise the calls' turns
        n = duration_ms // 2000 + 5  # more turns than fit: the call ends by max_duration
        for j in range(n):
            steps += [Say(cfg["fixtures"][(i + j) % len(cfg["fixtures"])]),
                      WaitForReply(quiet_ms=cfg["quiet_ms"], timeout_ms=10_000), Pause(300)]
        return steps

    # What is alive now (imports, fixtures) never becomes garbage: keep it out of the collector's
    # reach, or each full collection stalls every call of this process for tens of ms.
    gc.collect()
    gc.freeze()
    print("ready", flush=True)
    line = sys.stdin.readline().split()
    if len(line) != 2 or line[0] != "go":
        return 2
    t_go = int(line[1])
    results: dict[int, Any] = {}

    async def one(i: int, start_ns: int, services: Any) -> None:
        await trio.sleep(max(0.0, (start_ns - time.monotonic_ns()) / 1e9))
        results[i] = await place_call(cfg["target"], script(i), bank=bank, max_duration_ms=duration_ms,
                                      rng=random.Random(cfg["seed"] * 100_003 + i),
                                      connect_timeout=cfg["connect_timeout_s"], services=services)

    async def main() -> None:
        # one timer task and one reactor for all the calls of this process
        async with open_call_services() as services, trio.open_nursery() as nursery:
            for i, offset in cfg["calls"]:
                nursery.start_soon(one, i, t_go + offset, services)

    trio.run(main)
    t_done = time.monotonic_ns()

    calls = []
    for i, res in sorted(results.items()):
        core = res.core
        rec: dict[str, Any] = {"i": i, "error": res.error, "t_done_ns": t_done}
        if core is not None and core.t0_ns is not None:
            m = measure_call(res, scenario="capacity", call_index=i, bank=bank)
            tl = core.timeline
            rec.update(
                end_reason=core.end_reason, t0_ns=core.t0_ns,
                stop_ns=next((e["t_ns"] for e in reversed(tl) if e["event"] == "stop"), None),
                sent_ns=_b64(core.media_sent_ns), grid=_b64(core.media_sent_grid),
                sent_crc=_b64(core.media_sent_crc),
                media_in_ns=_b64([e["t_ns"] for e in tl if e["event"] == "media_in"]),
                underrun_ms=m.underrun_ms, heard_ms=m.heard_ms, turns=len(m.turns),
                warnings=sum(core.warning_counts.values()),
                duration_ms=len(core.tick_ns) * 20,
                msgs_sent=len(core.media_sent_ns) + sum(core.marks_echoed.values()) + 3,  # + connected, start, stop
                msgs_received=core.counts["media_in"] + core.counts["mark_in"] + core.counts["clear_in"],
            )
        calls.append(rec)
    Path(cfg["out"]).write_text(json.dumps({"calls": calls}))
    print("done", flush=True)
    return 0


# ================================================================ processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, b""


def wait_port(port: int, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s:\n{_tail(log)}")


def wait_line(path: Path, needle: str, proc: subprocess.Popen, timeout: float, what: str) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = path.read_text(errors="replace") if path.exists() else ""
        for line in text.splitlines():
            if needle in line:
                return line
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(path)}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready within {timeout:.0f} s:\n{_tail(path)}")


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def stop_proc(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """End a process this benchmark started (by its own handle), politely first."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    except ProcessLookupError:
        pass


class Meter:
    """CPU time and RSS of a process and its children (psutil)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)

    def _procs(self) -> list[psutil.Process]:
        try:
            return [self.proc] + self.proc.children(recursive=True)
        except psutil.Error:
            return []

    def cpu_s(self) -> float:
        total = 0.0
        for p in self._procs():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def rss(self) -> int:
        total = 0
        for p in self._procs():
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total


def core_busy(a: list[Any], b: list[Any], cpus: list[int]) -> float | None:
    """Busy fraction of ``cpus`` between two ``psutil.cpu_times(percpu=True)`` readings."""
    if not cpus:
        return None
    busy = total = 0.0
    for c in cpus:
        if c >= len(a):
            continue
        t0 = sum(a[c]) - a[c].idle - getattr(a[c], "iowait", 0.0)
        t1 = sum(b[c]) - b[c].idle - getattr(b[c], "iowait", 0.0)
        busy += t1 - t0
        total += sum(b[c]) - sum(a[c])
    return busy / total if total > 0 else None


def core_fields(a: list[Any], b: list[Any], cpus: list[int]) -> dict[str, float]:
    """Share of ``cpus``' time per kind (user, system, softirq, steal, ...) between two readings."""
    out: dict[str, float] = defaultdict(float)
    total = 0.0
    for c in cpus:
        if c >= len(a):
            continue
        total += sum(b[c]) - sum(a[c])
        for k in b[c]._fields:
            out[k] += getattr(b[c], k) - getattr(a[c], k)
    return {k: round(v / total, 4) for k, v in out.items()} if total > 0 else {}


def wait_quiet(a: argparse.Namespace, own: list[int]) -> float:
    """Wait (up to ``--wait-quiet-s``) until the machine is quiet apart from our own processes.

    Another job on a shared machine (a CI run, a Locust test) would steal the pinned cores
    and show up as latency the bridge did not cause. Returns the seconds waited.
    """
    t_start = time.monotonic()
    said = False
    quiet_run = 0
    mine = [psutil.Process(p) for p in own if psutil.pid_exists(p)]
    while True:
        c0 = psutil.cpu_times()
        own0 = sum(sum(p.cpu_times()[:2]) for p in mine if p.is_running())
        time.sleep(1.0)
        c1 = psutil.cpu_times()
        own1 = sum(sum(p.cpu_times()[:2]) for p in mine if p.is_running())
        total = sum(c1) - sum(c0)
        busy = (total - (c1.idle - c0.idle) - (c1.iowait - c0.iowait) - (own1 - own0)) / total if total else 0.0
        waited = time.monotonic() - t_start
        quiet_run = quiet_run + 1 if busy <= a.quiet_busy else 0
        if quiet_run >= 3 or waited >= a.wait_quiet_s:
            if said:
                print(f"  ... {'quiet' if busy <= a.quiet_busy else 'still busy, going on'} after {waited:.0f} s",
                      flush=True)
            return waited
        if not said and busy > a.quiet_busy:
            top = sorted(((p.info["cpu_percent"] or 0.0, p.info["pid"], " ".join(p.info["cmdline"] or [])[:90])
                          for p in psutil.process_iter(["pid", "cpu_percent", "cmdline"])
                          if p.info["pid"] not in own and p.info["pid"] != os.getpid()), reverse=True)[:3]
            print(f"  waiting for the machine to be quiet: {100 * busy:.0f}% busy with other work "
                  f"(e.g. {'; '.join(t[2] for t in top if t[2])})", flush=True)
            said = True


def others_cpu(own: set[int]) -> dict[int, float]:
    """CPU seconds so far of every process that is not ours (to notice another job mid-window)."""
    out = {}
    for p in psutil.process_iter():
        if p.pid in own:
            continue
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def parse_cpus(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out += list(range(int(lo), int(hi) + 1))
        elif part.strip():
            out.append(int(part))
    return out


# ================================================================== a step


class Servers:
    """The mock and the target bridge, each its own (pinned) process."""

    def __init__(self, args: argparse.Namespace, tmp: Path, tag: str) -> None:
        self.args, self.tmp, self.tag = args, tmp, tag
        self.mock: subprocess.Popen | None = None
        self.bridge: subprocess.Popen | None = None
        self.mock_port = self.bridge_port = 0
        self.commands: dict[str, str] = {}

    def start(self) -> None:
        a = self.args
        self.mock_port = free_port()
        cmd = a.pin("mock") + [PY, "-m", "callsim.simulator", "mock-openai", "--port", str(self.mock_port), "--any-key",
                               *shlex.split(a.mock_args)]
        self.commands["mock"] = shlex.join(cmd)
        mlog = self.tmp / f"mock-{self.tag}.log"
        with open(mlog, "wb") as fh:
            self.mock = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_line(mlog, "mock OpenAI Realtime on", self.mock, 120, "the mock")

        self.bridge_port = free_port()
        openai_url = f"ws://127.0.0.1:{self.mock_port}/v1/realtime"
        bcmd = a.pin("bridge") + shlex.split(a.bridge_cmd.format(
            python=shlex.quote(PY), port=self.bridge_port, openai_url=openai_url, host="127.0.0.1"))
        env = {**os.environ, "OPENAI_API_KEY": "sk-callsim-capacity", "OPENAI_REALTIME_URL": openai_url,
               "PORT": str(self.bridge_port), "HOST": "127.0.0.1",
               "PUBLIC_URL": f"http://127.0.0.1:{self.bridge_port}",
               "DATABASE_PATH": str(self.tmp / f"bridge-{self.tag}.sqlite3"), "MAX_CONCURRENT_CALLS": "100000"}
        env.pop("TWILIO_AUTH_TOKEN", None)
        for kv in a.bridge_env:
            k, _, v = kv.partition("=")
            env[k] = v
        self.commands["bridge"] = shlex.join(bcmd)
        blog = self.tmp / f"bridge-{self.tag}.log"
        with open(blog, "wb") as fh:
            self.bridge = subprocess.Popen(bcmd, stdout=fh, stderr=subprocess.STDOUT, cwd=a.bridge_cwd, env=env)
        wait_port(self.bridge_port, self.bridge, 120, "the bridge", blog)
        time.sleep(0.3)  # let it finish starting (first requests, imports done lazily)

    @property
    def target(self) -> str:
        if self.args.stream_path:  # straight at the media-stream WebSocket, no webhook
            return f"ws://127.0.0.1:{self.bridge_port}{self.args.stream_path}"
        return f"http://127.0.0.1:{self.bridge_port}{self.args.target_path}"

    @property
    def mock_http(self) -> str:
        return f"http://127.0.0.1:{self.mock_port}"

    def active_calls(self) -> int | None:
        status, body = http_get(f"http://127.0.0.1:{self.bridge_port}{self.args.metrics_path}", timeout=2)
        if status != 200:
            return None
        m = re.search(rb"^callsim_bridge_active_calls\s+([0-9.eE+-]+)", body, re.M)
        return int(float(m.group(1))) if m else None

    def mock_open(self) -> tuple[int, int] | None:
        status, body = http_get(f"{self.mock_http}/_mock/health", timeout=2)
        if status != 200:
            return None
        d = json.loads(body)
        return int(d["open_sessions"]), int(d["sessions"])

    def stop(self) -> None:
        stop_proc(self.bridge)
        stop_proc(self.mock)


def run_step(args: argparse.Namespace, servers: Servers, n_calls: int, tmp: Path) -> dict[str, Any]:
    started: list[subprocess.Popen] = []
    try:
        return _run_step(args, servers, n_calls, tmp, started)
    finally:
        for p in started:  # only if something went wrong: normally they have all exited
            stop_proc(p, timeout=2)


def _run_step(args: argparse.Namespace, servers: Servers, n_calls: int, tmp: Path,
              started: list[subprocess.Popen]) -> dict[str, Any]:
    a = args
    n_workers = max(1, min(a.workers, n_calls))
    stagger_ns = int(a.stagger_s * 1e9)
    duration_ms = int((a.stagger_s + a.lead_s + a.hold_s + a.tail_s) * 1000)
    sessions_before = (servers.mock_open() or (0, 0))[1]
    bridge_m, mock_m = Meter(servers.bridge.pid), Meter(servers.mock.pid)  # type: ignore[union-attr]

    # -- harness processes, idle until "go"
    workers: list[tuple[subprocess.Popen, Path, Path]] = []
    for w in range(n_workers):
        calls = [(i, i * stagger_ns // n_calls) for i in range(w, n_calls, n_workers)]
        cfg = {"target": servers.target, "calls": calls, "duration_ms": duration_ms, "fixtures": list(FIXTURES),
               "quiet_ms": a.quiet_ms, "seed": a.seed, "connect_timeout_s": 10.0,
               "out": str(tmp / f"result-{n_calls}-{w}.json")}
        cfg_path = tmp / f"worker-{n_calls}-{w}.json"
        cfg_path.write_text(json.dumps(cfg))
        log = tmp / f"worker-{n_calls}-{w}.log"
        cmd = a.pin("harness") + [PY, str(Path(__file__).resolve()), "_worker", str(cfg_path)]
        a.commands["harness"] = shlex.join(cmd)
        with open(log, "wb") as fh:
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        workers.append((p, log, Path(cfg["out"])))
        started.append(p)
    for p, log, _ in workers:
        wait_line(log, "ready", p, 120, "a harness process")
    worker_m = [Meter(p.pid) for p, _, _ in workers]
    waited = wait_quiet(a, [servers.bridge.pid, servers.mock.pid] + [p.pid for p, _, _ in workers])  # type: ignore[union-attr]
    rss0 = {"bridge": bridge_m.rss(), "mock": mock_m.rss(), "harness": sum(m.rss() for m in worker_m)}

    # -- go; then measure the window
    t_go = time.monotonic_ns() + 200 * MS
    for p, _, _ in workers:
        assert p.stdin is not None
        p.stdin.write(f"go {t_go}\n".encode())
        p.stdin.close()
    w0 = t_go + stagger_ns + int(a.lead_s * 1e9)
    w1 = w0 + int(a.hold_s * 1e9)
    time.sleep(max(0.0, (w0 - time.monotonic_ns()) / 1e9))
    own = {os.getpid(), servers.bridge.pid, servers.mock.pid} | {p.pid for p, _, _ in workers}  # type: ignore[union-attr]
    for m in (bridge_m, mock_m):
        own |= {c.pid for c in m._procs()}
    others0 = others_cpu(own)
    pcpu0, cpu0 = psutil.cpu_times(percpu=True), _cpu_all(bridge_m, mock_m, worker_m)
    profilers = start_profilers(a, n_calls, servers, workers, tmp) if n_calls in a.profile_steps else []
    started += [p for p, _, _ in profilers]
    time.sleep(max(0.0, (w1 - time.monotonic_ns()) / 1e9))
    pcpu1, cpu1 = psutil.cpu_times(percpu=True), _cpu_all(bridge_m, mock_m, worker_m)
    t_w1 = time.monotonic_ns()
    others1 = others_cpu(own | {p.pid for p, _, _ in profilers})
    others_s = sum(v - others0.get(pid, 0.0) for pid, v in others1.items())
    rss1 = {"bridge": bridge_m.rss(), "mock": mock_m.rss(), "harness": sum(m.rss() for m in worker_m)}
    mock_at_w1 = servers.mock_open()
    active_at_w1 = servers.active_calls()
    window_s = (t_w1 - w0) / 1e9

    # -- hang-ups: watch the mock and the bridge reach zero
    t_mock_zero = t_bridge_zero = None
    bridge_active_last = None
    deadline = time.monotonic() + duration_ms / 1000 + 120 + a.leak_wait_s
    t_workers_done = None
    while time.monotonic() < deadline:
        now = time.monotonic_ns()
        mo = servers.mock_open()
        if t_mock_zero is None and mo is not None and mo[0] == 0 and mo[1] > sessions_before:
            t_mock_zero = now
        ac = servers.active_calls()
        bridge_active_last = ac
        if t_bridge_zero is None and ac == 0:
            t_bridge_zero = now
        if t_workers_done is None and all(p.poll() is not None for p, _, _ in workers):
            t_workers_done = now
        if t_workers_done is not None and (  # no metrics endpoint (ac None): the mock alone tells
                (t_mock_zero and (t_bridge_zero or ac is None)) or now - t_workers_done > a.leak_wait_s * 1e9):
            break
        time.sleep(0.05)
    for p, _, _ in profilers:
        try:
            p.wait(a.hold_s + 30)
        except subprocess.TimeoutExpired:
            stop_proc(p)
    calls: list[dict[str, Any]] = []
    worker_errors = []
    for p, log, out in workers:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            stop_proc(p)
        if out.exists():
            calls += json.loads(out.read_text())["calls"]
        else:
            worker_errors.append(f"harness process failed (exit {p.returncode}):\n{_tail(log)}")

    # -- the mock's record of every session of this step
    status, body = http_get(f"{servers.mock_http}/_mock/sessions", timeout=30)
    listed = json.loads(body)["sessions"] if status == 200 else []
    sessions = []
    for s in listed:
        if s["index"] <= sessions_before:
            continue
        st, b = http_get(f"{servers.mock_http}/_mock/sessions/{s['id']}?timings=1", timeout=30)
        if st == 200:
            full = json.loads(b)
            sessions.append({"id": full["id"], "t_open_ns": full["t_open_ns"], "counts": full.get("counts", {}),
                             "close_ns": (full.get("close") or {}).get("t_ns"),
                             "append_ns": np.asarray(full.get("append_ns", []), dtype=np.int64),
                             "block_ns": np.asarray(full.get("block_ns", []), dtype=np.int64),
                             "block_crc": np.asarray(full.get("block_crc", []), dtype=np.int64),
                             "delta_ns": np.asarray(full.get("delta_ns", []), dtype=np.int64)})

    if a.keep_tmp:  # raw material for a closer look
        (tmp / f"sessions-{n_calls}.json").write_text(json.dumps(
            [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in s.items()} for s in sessions]))
    step = analyse(a, n_calls, calls, sessions, w0, t_w1)
    step["worker_errors"] = worker_errors
    step["workers"] = n_workers
    step["window_s"] = window_s
    step["window_start_ns"] = w0
    step["profiled"] = bool(profilers)
    step["waited_for_quiet_s"] = round(waited, 1)
    step["other_processes_core_share"] = others_s / window_s
    # -- CPU and memory
    per_call_s = n_calls * window_s
    d = {k: cpu1[k] - cpu0[k] for k in cpu0}
    step["cpu"] = {
        k: {"cpu_s": d[k], "core_share": d[k] / window_s, "ms_per_call_s": 1000 * d[k] / per_call_s}
        for k in ("bridge", "mock", "harness")
    }
    if step.get("bridge_msgs_per_call_s"):
        step["bridge_cpu_us_per_msg"] = 1000 * step["cpu"]["bridge"]["ms_per_call_s"] / step["bridge_msgs_per_call_s"]
    step["rss"] = {k: {"idle_mb": rss0[k] / 2**20, "loaded_mb": rss1[k] / 2**20,
                       "per_call_mb": (rss1[k] - rss0[k]) / n_calls / 2**20} for k in rss0}
    bcpus, hcpus = a.cpus["bridge"], a.cpus["harness"]
    # How busy each pinned core was, from the CPU time of the processes pinned there (the kernel's
    # per-CPU counters were seen to be unreliable on this VM; they are kept as *_kernel).
    def load(cpus: list[int]) -> float | None:
        if not cpus:
            return None
        share = sum(d[k] for k in ("bridge", "harness", "mock") if a.cpus[k] == cpus) / window_s
        return share / len(cpus)
    step["cores"] = {"bridge_cpus_busy": load(bcpus), "harness_cpus_busy": load(hcpus),
                     "bridge_cpus_busy_kernel": core_busy(pcpu0, pcpu1, bcpus),
                     "harness_cpus_busy_kernel": core_busy(pcpu0, pcpu1, hcpus),
                     "all_busy_kernel": core_busy(pcpu0, pcpu1, list(range(len(pcpu0)))),
                     "per_cpu_kernel": {c: core_fields(pcpu0, pcpu1, [c]) for c in range(len(pcpu0))}}
    if not hcpus:  # nothing pinned: the harness's own share of one core
        step["cores"]["harness_cpus_busy"] = d["harness"] / window_s / max(1, n_workers)
    # -- the leak check
    last_hangup = max((c.get("stop_ns") or 0) for c in calls) if calls else None
    mock_lag = (t_mock_zero - last_hangup) / 1e6 if (t_mock_zero and last_hangup) else None
    close_ns = [s["close_ns"] for s in sessions if s["close_ns"]]
    close_lag = (max(close_ns) - last_hangup) / 1e6 if (close_ns and last_hangup) else None
    still_open = sum(1 for s in sessions if not s["close_ns"])
    step["leak"] = {
        "mock_open_at_window_end": mock_at_w1[0] if mock_at_w1 else None,
        "bridge_active_at_window_end": active_at_w1,
        "mock_zero_after_last_hangup_ms": mock_lag,
        "mock_last_close_after_last_hangup_ms": close_lag,
        "mock_sessions_still_open": still_open,
        "bridge_active_calls": bridge_active_last,
        "bridge_zero_after_last_hangup_ms": (t_bridge_zero - last_hangup) / 1e6
        if (t_bridge_zero and last_hangup) else None,
    }
    step["leak"]["ok"] = bool(
        mock_lag is not None and mock_lag <= 1000 and still_open == 0
        and (bridge_active_last in (0, None)))
    judge(a, step)
    return step


def _cpu_all(bridge: Meter, mock: Meter, workers: list[Meter]) -> dict[str, float]:
    return {"bridge": bridge.cpu_s(), "mock": mock.cpu_s(), "harness": sum(w.cpu_s() for w in workers)}


# ================================================================ analysis


_KEY_BITS = 31  # pairing keys: CRC-32 above, µs since the run's first frame below (35 minutes)
_KEY_MASK = (1 << _KEY_BITS) - 1


def pair(calls: list[dict[str, Any]], sessions: list[dict[str, Any]]) -> tuple[dict[int, int], set[int]]:
    """Call index → session index, by what was sent; and the calls that had to be paired by index.

    For up to 48 frames of each call whose content occurs once in that call (speech, or an idle
    line the caller tagged), spread over it, the cost of a session is the median offset from the
    frame's sending to the first block of the same CRC the session received at or after it —
    infinite when fewer than half are found. For the true session that is the bridge's latency;
    another call's session carries the same fixture at other times, or a tagged line never. Greedy
    over the cost. Calls no session matches by content (a transcoding bridge: the mock's blocks are
    not the caller's μ-law) fall back to :func:`pair_by_index` over the sessions left.
    """
    cs = [c for c in calls if "sent" in c and len(c["sent"]) and len(c.get("crc", ()))]
    s_idx = [j for j, s in enumerate(sessions) if len(s.get("block_ns", ()))]
    out: dict[int, int] = {}
    if cs and s_idx:
        base = min(min(int(c["sent"][0]) for c in cs), min(int(sessions[j]["block_ns"][0]) for j in s_idx))

        def keys(crc: np.ndarray, ns: np.ndarray) -> np.ndarray:
            return (crc << _KEY_BITS) | np.clip((ns - base) // 1000, 0, _KEY_MASK)

        q = np.full((len(cs), 48), -1, dtype=np.int64)
        for row, c in enumerate(cs):
            _, inv, cnt = np.unique(c["crc"], return_inverse=True, return_counts=True)
            pick = np.flatnonzero(cnt[inv] == 1)
            if len(pick) < 8:  # nothing distinctive (an untagged silent call): any frames
                pick = np.arange(len(c["crc"]))
            pick = pick[np.unique(np.linspace(0, len(pick) - 1, num=min(48, len(pick))).astype(int))]
            q[row, :len(pick)] = keys(c["crc"][pick], c["sent"][pick])
        cost = np.full((len(cs), len(s_idx)), np.inf)
        for col, j in enumerate(s_idx):
            sk = np.sort(keys(sessions[j]["block_crc"], sessions[j]["block_ns"]))
            at = sk[np.minimum(np.searchsorted(sk, q), len(sk) - 1)]
            hit = ((at >> _KEY_BITS) == (q >> _KEY_BITS)) & (at >= q)
            off = np.where(hit, (at & _KEY_MASK) - (q & _KEY_MASK), np.inf)
            off[q < 0] = np.nan  # padding
            cost[:, col] = np.nanmedian(off, axis=1)
        out = {cs[ci]["i"]: s_idx[si] for ci, si in _greedy(cost)}
    left_c = [c for c in calls if c.get("i") not in out]
    used = set(out.values())
    left_s = [j for j in range(len(sessions)) if j not in used]
    by_index = pair_by_index(left_c, [sessions[j] for j in left_s])
    out.update({ci: left_s[sj] for ci, sj in by_index.items()})
    return out, set(by_index)


def _greedy(cost: np.ndarray) -> list[tuple[int, int]]:
    """Row/column pairs in order of increasing finite cost, each row and column once."""
    used_r: set[int] = set()
    used_c: set[int] = set()
    out = []
    for flat in np.argsort(cost, axis=None):
        r, c = divmod(int(flat), cost.shape[1])
        if not math.isfinite(cost[r, c]):
            break
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        out.append((r, c))
        if len(used_r) == cost.shape[0]:
            break
    return out


def pair_by_index(calls: list[dict[str, Any]], sessions: list[dict[str, Any]]) -> dict[int, int]:
    """Call index → session index when content cannot tell: the smallest causal offsets by index.

    For a true pair the k-th append arrives a little *after* the caller sent frame k, on every
    frame; for a wrong pair the offset is another call's start difference, often negative.
    Greedy over (median offset) with "never negative" as the constraint.
    """
    cs = [c for c in calls if "sent" in c and len(c["sent"])]
    s_idx = [j for j, s in enumerate(sessions) if len(s["append_ns"])]
    ss = [sessions[j] for j in s_idx]
    if not cs or not ss:
        return {}
    n = min(min(len(c["sent"]) for c in cs), min(len(s["append_ns"]) for s in ss))
    lo = min(75, n // 3)  # past the early frames the bridge buffers until session.updated
    ks = np.unique(np.linspace(lo, n - 1, num=min(48, max(1, n - lo))).astype(int))
    sent = np.stack([c["sent"][ks] for c in cs])  # calls × K
    app = np.stack([s["append_ns"][ks] for s in ss])  # sessions × K
    diff = app[None, :, :] - sent[:, None, :]  # calls × sessions × K
    cost = np.median(diff, axis=2).astype(np.float64)
    cost[diff.min(axis=2) < 0] = np.inf
    return {cs[ci]["i"]: s_idx[si] for ci, si in _greedy(cost)}


def _pct(v: np.ndarray, q: float) -> float | None:
    return float(np.percentile(v, q)) if len(v) else None


def analyse(a: argparse.Namespace, n_calls: int, calls: list[dict[str, Any]], sessions: list[dict[str, Any]],
            w0: int, w1: int) -> dict[str, Any]:
    for c in calls:
        if c.get("sent_ns"):
            c["sent"] = _unb64(c["sent_ns"])
            c["grid_k"] = _unb64(c["grid"])
            c["media_in"] = _unb64(c["media_in_ns"])
            c["crc"] = _unb64(c["sent_crc"]) if c.get("sent_crc") else np.zeros(0, dtype=np.int64)
    pairs, by_index = pair(calls, sessions)
    skip_ns = int(a.skip_s * 1e9)
    lat_all: list[np.ndarray] = []
    late_all: list[np.ndarray] = []
    down_all: list[np.ndarray] = []
    frames_vs_appends = 0
    late_frames: list[tuple[float, float, int]] = []
    lost_start: list[int] = []  # per call measured by content: frames before the first one received
    fr = Counter()  # frame fates, summed over the calls measured by content
    for c in calls:
        if "sent" not in c:
            continue
        sent, k = c["sent"], c["grid_k"]
        in_win = (sent >= max(w0, c["t0_ns"] + skip_ns)) & (sent <= w1)
        late_all.append((sent - (c["t0_ns"] + k * FRAME_NS))[in_win])
        si = pairs.get(c["i"])
        if si is None:
            continue
        s = sessions[si]
        fp = None if c["i"] in by_index else pair_frames(sent, c["crc"], s["block_ns"], s["block_crc"])
        if fp is not None and fp.paired:  # by content: each frame with the block that carried it
            k_in = fp.sent[in_win[fp.sent]]
            lat = fp.latency_ns[in_win[fp.sent]]
            lost_start.append(fp.lost_start)
            fr.update(lost_in_window=int(np.count_nonzero(fp.lost_mask() & in_win)), lost_later=fp.lost_later,
                      lost_end=fp.lost_end, duplicated=fp.duplicated, unpaired_blocks=fp.unpaired)
        else:  # content never matched (a transcoding bridge): k-th frame → k-th append
            fr["calls_measured_by_index"] += 1
            app = s["append_ns"]
            n = min(len(sent), len(app))
            if len(sent) != len(app):
                frames_vs_appends += 1
            k_in = np.flatnonzero(in_win[:n])
            lat = app[k_in] - sent[k_in]
        lat_all.append(lat)
        bad = np.flatnonzero(lat > a.late_ms * MS)
        late_frames += [((int(sent[k_in[j]]) - w0) / 1e6, int(lat[j]) / 1e6, c["i"]) for j in bad[:50]]
        d, m = s["delta_ns"], c["media_in"]
        nd = min(len(d), len(m))
        if nd:
            down = m[:nd] - d[:nd]
            down_all.append(down[(m[:nd] >= w0) & (m[:nd] <= w1)])
    lat = np.concatenate(lat_all) / 1e6 if lat_all else np.zeros(0)
    late = np.concatenate(late_all) / 1e6 if late_all else np.zeros(0)
    down = np.concatenate(down_all) / 1e6 if down_all else np.zeros(0)
    errors = Counter(c["error"] for c in calls if c.get("error"))
    # WebSocket messages through the bridge per second of call: both legs, both directions
    call_s = sum(c.get("duration_ms", 0) for c in calls) / 1000
    msgs = sum(c.get("msgs_sent", 0) + c.get("msgs_received", 0) for c in calls) + sum(
        s.get("counts", {}).get("events_in", 0) + s.get("counts", {}).get("events_out", 0) for s in sessions)
    placed = sum(1 for c in calls if "sent" in c)
    return {
        "calls": n_calls,
        "placed": placed,
        "errors": dict(errors),
        "paired": len(pairs),
        "sessions": len(sessions),
        "calls_appends_mismatch": frames_vs_appends,
        # caller frames by content (callsim.simulator.measure.framepairing): lost ones are never counted as latency
        "frames": {
            "lost_at_start": int(sum(lost_start)),
            "lost_at_start_ms_per_call": {
                "mean": float(np.mean(lost_start)) * FRAME_NS / MS if lost_start else None,
                "max": max(lost_start) * FRAME_NS / MS if lost_start else None},
            "calls_lost_at_start": sum(1 for v in lost_start if v),
            "lost_in_window": fr["lost_in_window"],  # after each call's first received frame, in the window
            "lost_later": fr["lost_later"],  # whole calls, after the first received frame ...
            "lost_at_end": fr["lost_end"],  # ... of which after the last one (the hang-up's tail)
            "duplicated": fr["duplicated"], "unpaired_blocks": fr["unpaired_blocks"],
            "calls_measured_by_index": fr["calls_measured_by_index"],
        },
        "latency_ms": {"frames": int(len(lat)), "p50": _pct(lat, 50), "p99": _pct(lat, 99),
                       "max": float(lat.max()) if len(lat) else None,
                       "late": int(np.count_nonzero(lat > a.late_ms)), "late_threshold_ms": a.late_ms},
        "late_frames": sorted(late_frames)[:300],  # (ms into the window, latency ms, call)
        "downstream_ms": {"deltas": int(len(down)), "p50": _pct(down, 50), "p99": _pct(down, 99),
                          "max": float(down.max()) if len(down) else None},
        "pacing_ms": {"frames": int(len(late)), "p50": _pct(late, 50), "p99": _pct(late, 99),
                      "max": float(late.max()) if len(late) else None},
        "underrun_ms_total": float(sum(c.get("underrun_ms") or 0.0 for c in calls)),
        "calls_with_underrun": sum(1 for c in calls if (c.get("underrun_ms") or 0) > 0),
        "turns_per_call": float(np.mean([c.get("turns", 0) for c in calls])) if calls else 0.0,
        "heard_s_per_call": float(np.mean([c.get("heard_ms", 0) for c in calls]) / 1000) if calls else 0.0,
        "calls_heard_nothing": sum(1 for c in calls if "sent" in c and not c.get("heard_ms")),
        "bridge_msgs_per_call_s": msgs / call_s if call_s else None,
        "twilio_warnings": int(sum(c.get("warnings", 0) for c in calls)),
        "end_reasons": dict(Counter(c.get("end_reason") for c in calls)),
    }


def judge(a: argparse.Namespace, step: dict[str, Any]) -> None:
    why = []
    if step["placed"] < step["calls"] or step["errors"]:
        why.append(f"{step['calls'] - step['placed'] or sum(step['errors'].values())} call(s) failed")
    if step["paired"] < step["placed"]:
        why.append(f"{step['placed'] - step['paired']} call(s) unpaired")
    lat = step["latency_ms"]
    if lat["p99"] is None or lat["p99"] > a.slo_p99_ms:
        why.append(f"p99 {lat['p99'] if lat['p99'] is None else round(lat['p99'], 2)} ms > {a.slo_p99_ms}")
    if lat["late"]:
        why.append(f"{lat['late']} late frame(s)")
    if step["frames"]["lost_in_window"]:
        why.append(f"{step['frames']['lost_in_window']} frame(s) lost")
    if step["underrun_ms_total"] > 0:
        why.append(f"underruns {step['underrun_ms_total']:.0f} ms in {step['calls_with_underrun']} call(s)")
    if step["calls_heard_nothing"]:
        why.append(f"{step['calls_heard_nothing']} call(s) heard no reply")
    if not step["leak"]["ok"]:
        lk = step["leak"]
        why.append(f"leak check failed ({lk['mock_sessions_still_open']} mock session(s) still open, "
                   f"bridge active calls {lk['bridge_active_calls']}, mock at 0 "
                   f"{_f(lk['mock_zero_after_last_hangup_ms'], '{:.0f}')} ms after the last hang-up)")
    step["slo_ok"] = not why
    step["slo_why"] = why
    flags = []
    pac = step["pacing_ms"]["p99"]
    hb = step["cores"]["harness_cpus_busy"]
    if (pac is not None and pac > a.harness_pacing_ms) or (hb is not None and hb > a.harness_busy):
        flags.append("harness-limited")
    if step["other_processes_core_share"] > a.disturbed:
        flags.append(f"disturbed (other processes used {100 * step['other_processes_core_share']:.0f}% of a core)")
    if step["profiled"]:
        flags.append("profiled")
    step["flags"] = flags


# =================================================================== report


def _f(v: Any, fmt: str = "{:.1f}") -> str:
    return "—" if v is None else fmt.format(v)


COLUMNS = [  # (name, unit, width)
    ("calls", "", 5), ("p50", "ms", 6), ("p99", "ms", 7), ("max", "ms", 7), ("late", "frames", 6),
    ("lost", "frames", 6), ("lost@start", "ms/call", 10),
    ("underrun", "ms", 8), ("pacing p99", "ms", 10), ("bridge cpu", "ms/call·s", 10), ("b-core", "%", 6),
    ("bridge RSS", "MB/call", 10), ("harn cpu", "ms/call·s", 9), ("harn RSS", "MB/call", 8),
    ("mock cpu", "ms/call·s", 9), ("h-core", "%", 6), ("leak", "ms / active", 14), ("SLO", "", 4),
]


def table_header() -> str:
    head = " ".join(f"{name:>{w}}" for name, _, w in COLUMNS)
    units = " ".join(f"{unit:>{w}}" for _, unit, w in COLUMNS)
    return head + "\n" + units + "\n" + "-" * len(head)


def table_row(s: dict[str, Any]) -> str:
    lat, cpu, rss, cores, leak = s["latency_ms"], s["cpu"], s["rss"], s["cores"], s["leak"]
    mock_lag = leak["mock_zero_after_last_hangup_ms"]
    if leak["ok"]:
        word = "ok "
    elif leak["mock_sessions_still_open"] or leak["bridge_active_calls"]:
        word = "LEAK "  # something never closed
    else:
        word = "slow "  # everything closed, but not within 1 s of the last hang-up
    leak_s = word + _f(mock_lag, "{:.0f}") + "/" + _f(leak["bridge_active_calls"], "{}")
    cells = [
        str(s["calls"]), _f(lat["p50"], "{:.2f}"), _f(lat["p99"], "{:.2f}"), _f(lat["max"], "{:.1f}"),
        str(lat["late"]), str(s["frames"]["lost_in_window"]),
        _f(s["frames"]["lost_at_start_ms_per_call"]["mean"], "{:.0f}"), f"{s['underrun_ms_total']:.0f}", _f(s["pacing_ms"]["p99"], "{:.2f}"),
        _f(cpu["bridge"]["ms_per_call_s"], "{:.2f}"), _f(cores["bridge_cpus_busy"] and 100 * cores["bridge_cpus_busy"], "{:.0f}"),
        _f(rss["bridge"]["per_call_mb"], "{:.2f}"), _f(cpu["harness"]["ms_per_call_s"], "{:.2f}"),
        _f(rss["harness"]["per_call_mb"], "{:.2f}"), _f(cpu["mock"]["ms_per_call_s"], "{:.2f}"),
        _f(cores["harness_cpus_busy"] and 100 * cores["harness_cpus_busy"], "{:.0f}"), leak_s,
        "yes" if s["slo_ok"] else "NO",
    ]
    row = " ".join(f"{c:>{w}}" for c, (_, _, w) in zip(cells, COLUMNS))
    notes = list(s["flags"]) + ([] if s["slo_ok"] else s["slo_why"])
    return row + ("   " + "; ".join(notes) if notes else "")


def summary(a: argparse.Namespace, steps: list[dict[str, Any]]) -> dict[str, Any]:
    held = None
    for s in steps:  # the ramp is monotone: the first failure ends it
        if not s["slo_ok"]:
            break
        held = s["calls"]
    first_fail = next((s for s in steps if not s["slo_ok"]), None)
    # Per-call CPU is only meaningful while the harness really ran the calls in real time: past
    # that, frames go out late and the bridge gets less than real-time traffic per call.
    best = [s for s in steps if s["cpu"]["bridge"]["ms_per_call_s"] > 0
            and (s["pacing_ms"]["p99"] or 1e9) <= a.realtime_pacing_ms] or steps[:1]
    # calls one bridge core could carry at 100 % busy, from the per-call CPU of the largest step
    per_call = best[-1]["cpu"]["bridge"]["ms_per_call_s"] if best else None
    return {
        "slo": {"p99_ms": a.slo_p99_ms, "late_ms": a.late_ms, "underruns": 0},
        "max_calls_slo_held": held,
        "first_failure": None if first_fail is None else {
            "calls": first_fail["calls"], "why": first_fail["slo_why"], "flags": first_fail["flags"]},
        "harness_limited_steps": [s["calls"] for s in steps if "harness-limited" in s["flags"]],
        "per_call_figures_from_step": best[-1]["calls"] if best else None,
        "bridge_ms_cpu_per_call_s": per_call,
        "bridge_cpu_us_per_msg": best[-1].get("bridge_cpu_us_per_msg") if best else None,
        "bridge_msgs_per_call_s": best[-1].get("bridge_msgs_per_call_s") if best else None,
        "bridge_calls_per_core_by_cpu": (1000 / per_call) if per_call else None,
        "harness_ms_cpu_per_call_s": best[-1]["cpu"]["harness"]["ms_per_call_s"] if best else None,
        "harness_calls_per_core_by_cpu": (1000 / best[-1]["cpu"]["harness"]["ms_per_call_s"])
        if best and best[-1]["cpu"]["harness"]["ms_per_call_s"] else None,
        "mock_ms_cpu_per_call_s": best[-1]["cpu"]["mock"]["ms_per_call_s"] if best else None,
        "mock_sessions_per_core_by_cpu": (1000 / best[-1]["cpu"]["mock"]["ms_per_call_s"])
        if best and best[-1]["cpu"]["mock"]["ms_per_call_s"] else None,
        "bridge_rss_mb_per_call": best[-1]["rss"]["bridge"]["per_call_mb"] if best else None,
    }


# ================================================================= profiling


def start_profilers(a: argparse.Namespace, n: int, servers: Servers,
                    workers: list[tuple[subprocess.Popen, Path, Path]], tmp: Path) -> list[tuple[subprocess.Popen, str, Path]]:
    if not a.py_spy:
        return []
    exe = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    out_dir = Path(a.py_spy)
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for role, pid in (("bridge", servers.bridge.pid), ("mock", servers.mock.pid),  # type: ignore[union-attr]
                      ("harness", workers[0][0].pid)):
        out = out_dir / f"{role}-{n}.txt"
        cmd = a.pin("harness") + [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(a.hold_s) - 1)),
                                  "--rate", str(a.py_spy_rate), "--format", "raw",
                                  "--output", str(out)]
        procs.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), role, out))
    return procs


LAYERS = [  # first match on the file path of a frame wins (py-spy paths are relative to sys.path)
    ("hypercorn", re.compile(r"(^|/)hypercorn/")),
    ("wsproto", re.compile(r"(^|/)wsproto/")),
    ("h11", re.compile(r"(^|/)h11/")),
    ("quart/werkzeug", re.compile(r"(^|/)(quart|quart_trio|werkzeug)/")),
    ("trio-websocket", re.compile(r"(^|/)trio_websocket/")),
    ("trio: socket I/O (syscalls)", re.compile(r"(^|/)trio/(_socket|_highlevel_socket)\.py")),
    ("trio: epoll", re.compile(r"(^|/)trio/_core/_io_epoll\.py")),
    ("trio: threads", re.compile(r"(^|/)trio/(_core/_thread_cache|_threads)\.py")),
    ("trio: scheduler/checkpoints/sync", re.compile(r"(^|/)(trio|outcome)/|<attrs generated methods (trio|outcome)")),
    ("openai/pydantic (validation)", re.compile(r"(^|/)(openai|pydantic|pydantic_core|typing_extensions)/")),
    ("prometheus", re.compile(r"(^|/)prometheus_client/")),
    ("httpx/httpcore", re.compile(r"(^|/)(httpx|httpcore|anyio|sniffio)/")),
    ("numpy", re.compile(r"(^|/)numpy/")),
    ("soxr/webrtcvad", re.compile(r"(^|/)(soxr|webrtcvad)")),
    ("bridge: call core", re.compile(r"(^|/)bridge/(call|realtime|twilio_wire|codec)\.py")),
    ("bridge: driver/app", re.compile(r"(^|/)bridge/")),
    ("simulator: WebSocket + reactor", re.compile(r"(^|/)simulator/(wsconn|reactor)\.py")),
    ("mock: session/vad/audio", re.compile(r"(^|/)simulator/mock/")),
    ("harness: caller core", re.compile(r"(^|/)simulator/")),
    ("SQLite (bridge store thread)", re.compile(r"(^|/)sqlite3/")),
]
# Pipeline stages, by function name; a sample goes to the first stage (in this order) on its stack.
STAGES = [
    ("bridge core logic (CallCore: parse, decide, build JSON)", re.compile(r"^CallCore\.")),
    ("caller core logic (CallerCore, playback, wire format)", re.compile(r"^(CallerCore\.|Playback\.|frame_peak$)")),
    ("mock: VAD + audio conversion", re.compile(r"^(ServerVad\.|InputConverter\.|Vad)")),
    ("mock: recogniser", re.compile(r"^Recognizer\.")),
    ("mock: SDK validation of events", re.compile(r"^(parse_client_event|validate_server_event)$")),
    ("mock: session logic", re.compile(r"^MockSession\.")),
    ("trio-websocket send (wsproto framing + masking + socket)", re.compile(r"^WebSocketConnection\.(send_message|_send)$")),
    ("trio-websocket reader task (socket + wsproto parse)", re.compile(r"^WebSocketConnection\._reader_task$")),
    ("hypercorn send to Twilio (WSStream.app_send: wsproto + socket)", re.compile(r"^WSStream\.app_send$")),
    ("hypercorn read from Twilio (socket, h11/wsproto parse, ASGI events)", re.compile(r"^TCPServer\._read_data$")),
    ("hypercorn other (timeouts, idle checks, task group)", re.compile(r"^(TCPServer|H11Protocol|WSStream|TaskGroup)\.")),
    ("bridge driver: ASGI receive() + dispatch", re.compile(r"^CallDriver\._twilio_reader$")),
    ("bridge driver: OpenAI loop + dispatch", re.compile(r"^CallDriver\._openai_task$")),
    ("bridge driver/app other", re.compile(r"^(CallDriver|BridgeApp)\.")),
    ("mock server loop (receiver/timer tasks)", re.compile(r"^MockServer\.")),
    ("mock driver (message handler, its sends, timer)", re.compile(r"^run_session\.")),
    ("shared driver loop (message handler, timer firing, their sends: caller and mock)",
     re.compile(r"^(drive\.|apply_nowait$|finish$|apply$|Timer\.|TimerService\.|SessionCore\.)")),
    ("WebSocket reads, frames, writes + reactor (simulator)", re.compile(r"^(WebSocket\.|FdStream\.|Reactor\.)")),
    ("caller driver loop (ticker, receiver, sleeps)", re.compile(r"^(_run|place_call|MonotonicClock\..*)$")),
    ("trio run loop (scheduling, epoll, timers)", re.compile(r"^(unrolled_run|run)$")),
]
IDLE_LEAVES = {"WorkerThread._work"}  # trio's thread cache: a worker blocked on its lock, waiting for a job
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.+?)(?::(?P<line>\d+))?\)$")


def _layer(path: str) -> str | None:
    """The layer of a frame's file; ``None`` for the standard library (charged to its caller)."""
    for name, rx in LAYERS:
        if rx.search(path):
            return name
    return None


def profile_report(path: Path, top: int = 25) -> dict[str, Any]:
    """Break a py-spy raw (collapsed) profile down by layer (self time, stdlib charged to its
    caller) and by function (inclusive), in % of the sampled busy time."""
    by_layer: Counter[str] = Counter()
    by_stage: Counter[str] = Counter()
    stdlib_leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = []
        for fr in stack.split(";"):
            m = _FRAME.match(fr.strip())
            if m:
                frames.append((m["func"], m["file"]))
        if not frames:
            by_layer["(unknown)"] += n
            continue
        leaf_func, leaf_file = frames[-1]
        if leaf_func in IDLE_LEAVES:  # a thread waiting for work, which py-spy reports as busy
            idle += n
            total -= n
            continue
        layer = None
        for func, file in reversed(frames):
            layer = _layer(file)
            if layer is not None:
                break
        by_layer[layer or "stdlib"] += n
        funcs = [f for f, _ in frames]
        stage = next((label for label, rx in STAGES if any(rx.search(f) for f in funcs)), "other")
        by_stage[stage] += n
        if _layer(leaf_file) is None:
            stdlib_leaf[f"{leaf_func} ({Path(leaf_file).name})"] += n
        self_fn[f"{leaf_func} ({_short(leaf_file)})"] += n
        for key in {f"{f} ({_short(p)})" for f, p in frames}:
            inclusive[key] += n
    pct = (lambda c: 100.0 * c / total) if total else (lambda c: 0.0)
    return {
        "samples": total,
        "idle_thread_samples_excluded": idle,
        "by_layer_pct": {k: round(pct(v), 1) for k, v in by_layer.most_common()},
        "by_stage_pct": {k: round(pct(v), 1) for k, v in by_stage.most_common()},
        "stdlib_leaves_pct": {k: round(pct(v), 1) for k, v in stdlib_leaf.most_common(12)},
        "self_pct": {k: round(pct(v), 1) for k, v in self_fn.most_common(top)},
        "inclusive_pct": {k: round(pct(v), 1) for k, v in inclusive.most_common(top + 15)},
    }


def _short(p: str) -> str:
    return p


def print_profile(path: Path, rep: dict[str, Any]) -> None:
    print(f"\n{path}: {rep['samples']} busy samples ({rep['idle_thread_samples_excluded']} of idle worker threads "
          f"left out)")
    for title, key in (("by layer (self time; stdlib charged to its caller)", "by_layer_pct"),
                       ("by pipeline stage", "by_stage_pct"),
                       ("stdlib leaves", "stdlib_leaves_pct"), ("self time by function", "self_pct"),
                       ("inclusive time by function", "inclusive_pct")):
        print(f"  {title}:")
        for k, v in rep[key].items():
            print(f"    {v:5.1f}%  {k}")


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
        return worker_main(argv[1])
    if argv[:1] == ["profile-report"]:
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
              f"{_f(s['bridge_msgs_per_call_s'], '{:.0f}')} WebSocket messages/s per call through the bridge, "
              f"{_f(s['bridge_cpu_us_per_msg'], '{:.0f}')} µs of bridge CPU each):")
        print(f"  bridge {_f(s['bridge_ms_cpu_per_call_s'], '{:.2f}')} ms CPU/s "
              f"(≈ {_f(s['bridge_calls_per_core_by_cpu'], '{:.0f}')} calls per core at 100 %), "
              f"{_f(s['bridge_rss_mb_per_call'], '{:.2f}')} MB RSS; harness "
              f"{_f(s['harness_ms_cpu_per_call_s'], '{:.2f}')} ms CPU/s (≈ "
              f"{_f(s['harness_calls_per_core_by_cpu'], '{:.0f}')} calls per core); mock "
              f"{_f(s['mock_ms_cpu_per_call_s'], '{:.2f}')} ms CPU/s (≈ "
              f"{_f(s['mock_sessions_per_core_by_cpu'], '{:.0f}')} sessions per core)")
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
