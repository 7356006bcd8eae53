"""One step of the capacity benchmark: its processes, its measured window, its raw figures.

:class:`Servers` starts the mock and the target bridge (each its own pinned process);
:func:`run_step` starts the harness processes (``capacity.py _worker``, idle until
``go``), waits for a quiet machine, lets the calls start, meters CPU and RSS over the
window, watches the mock and the bridge reach zero after the hang-ups (the leak check),
fetches the mock's record of every session and hands it all to
:func:`capacity_analysis.analyse` and :func:`capacity_analysis.judge`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from bench import (
    MS,
    PY,
    Meter,
    core_busy,
    core_fields,
    free_port,
    http_get,
    others_cpu,
    py_spy,
    start_logged,
    stop_proc,
    tail,
    wait_line,
    wait_port,
    wait_quiet,
)
from capacity_analysis import analyse, judge

CAPACITY_PY = Path(__file__).resolve().with_name("capacity.py")  # its ``_worker`` command runs a harness process
FIXTURES = ("caller_greeting", "caller_weather_question")


class Servers:
    """The mock and the target bridge, each its own (pinned) process."""

    def __init__(self, args: argparse.Namespace, tmp: Path, tag: str) -> None:
        self.args, self.tmp, self.tag = args, tmp, tag
        self.mock: subprocess.Popen | None = None
        self.bridge: subprocess.Popen | None = None
        self.feeds: subprocess.Popen | None = None  # --feeds N: the console subscribers
        self.mock_port = self.bridge_port = 0
        self.commands: dict[str, str] = {}

    def start(self) -> None:
        a = self.args
        self.mock_port = free_port()
        cmd = a.pin("mock") + [PY, "-m", "callsim.simulator", "mock-openai", "--port", str(self.mock_port), "--any-key",
                               *shlex.split(a.mock_args)]
        self.commands["mock"] = shlex.join(cmd)
        mlog = self.tmp / f"mock-{self.tag}.log"
        self.mock = start_logged(cmd, mlog)
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
        feeds = getattr(a, "feeds", 0)
        if feeds:
            env["CONSOLE_TOKEN"] = secrets.token_hex(24)
        self.bridge = start_logged(bcmd, blog, cwd=a.bridge_cwd, env=env)
        wait_port(self.bridge_port, self.bridge, 120, "the bridge", blog)
        time.sleep(0.3)  # let it finish starting (first requests, imports done lazily)
        if feeds:  # N open consoles, in a process of their own pinned with the harness
            fcmd = a.pin("harness") + [PY, str(Path(__file__).resolve().parent / "feed_readers.py"), "-n", str(feeds),
                                       "--url", f"http://127.0.0.1:{self.bridge_port}/api/feed",
                                       "--out", str(self.tmp / f"feeds-{self.tag}.json")]
            self.commands["feeds"] = shlex.join(fcmd)
            self.feeds = start_logged(fcmd, self.tmp / f"feeds-{self.tag}.log",
                                      env={**os.environ, "PYTHONUNBUFFERED": "1", "CONSOLE_TOKEN": env["CONSOLE_TOKEN"]})

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
        if self.feeds is not None:
            stop_proc(self.feeds)
            tally = self.tmp / f"feeds-{self.tag}.json"
            if tally.exists():
                t = json.loads(tally.read_text())
                print(f"  feeds: {t['open']}/{t['subscribers']} open, {t['events']} events read, "
                      f"{t['dropped_events']} dropped, {len(t['errors'])} errors", flush=True)
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
        cmd = a.pin("harness") + [PY, str(CAPACITY_PY), "_worker", str(cfg_path)]
        a.commands["harness"] = shlex.join(cmd)
        p = start_logged(cmd, log, stdin=subprocess.PIPE)
        workers.append((p, log, Path(cfg["out"])))
        started.append(p)
    for p, log, _ in workers:
        wait_line(log, "ready", p, 120, "a harness process")
    worker_m = [Meter(p.pid) for p, _, _ in workers]
    waited = wait_quiet([servers.bridge.pid, servers.mock.pid] + [p.pid for p, _, _ in workers],  # type: ignore[union-attr]
                        a.quiet_busy, a.wait_quiet_s)
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
        own |= {c.pid for c in m.procs()}
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
            worker_errors.append(f"harness process failed (exit {p.returncode}):\n{tail(log)}")

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




def start_profilers(a: argparse.Namespace, n: int, servers: Servers,
                    workers: list[tuple[subprocess.Popen, Path, Path]], tmp: Path) -> list[tuple[subprocess.Popen, str, Path]]:
    if not a.py_spy:
        return []
    exe = py_spy()
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
