#!/usr/bin/env python
"""Mock capacity: how many Realtime sessions the mock OpenAI server serves on one core.

    python loadtests/mock_capacity.py                          # steps 50,100,150,200,250
    python loadtests/mock_capacity.py --steps 200 --hold-s 20 --json mock.json
    python loadtests/mock_capacity.py --mock-args=--no-validate

Why a benchmark of its own: in ``capacity.py`` the mock shares a core with the harness
and is driven through a bridge, so its per-session CPU can only be read off a run that
is limited by something else. Here the mock is alone on its core (``--mock-cpus``,
default 0) and this process is the load on the other (``--gen-cpus``, default 1): for
each step it starts a fresh ``callsim mock-openai`` and opens N sessions the way a μ-law
bridge does — ``session.update`` with ``audio/pcmu`` both ways and ``server_vad``,
then one ``input_audio_buffer.append`` of 20 ms every 20 ms, in real time, of a caller
fixture followed by line silence, round and round (the mock hears the speech, decides
``speech_stopped``, commits, thinks, streams its reply as deltas faster than real
time). The generator is lean on purpose — every append is a frame built once, masked,
and written with ``os.write`` from one epoll loop — so that it is never the bottleneck;
its own pacing is measured and reported.

Measured over the window (``--hold-s`` after every session is up and past its first
utterance's start):

* **mock CPU** per session-second (psutil, the mock process) and how busy its core was;
  RSS growth per session over the idle process;
* **decision lag**: for each ``speech_stopped``, its arrival here minus the time the
  append that carried the audio at its ``audio_end_ms`` was sent (the VAD decides on
  that audio; G.711 reaches it undelayed). It is every wait in the mock's queue plus its
  processing; an overloaded mock shows up here first;
* **delta lateness**: each audio delta's gap from the previous one, minus the gap the
  mock's pacing asks for (``--chunk-ms`` / ``--realtime-factor``): how late its timers fire;
* errors (any ``error`` event), sessions the mock closed, and the generator's pacing.

After each step, the leak check: every session is closed (close frame 1000) and the
mock's ``/_mock/health`` must report 0 open sessions within 1 s.

A step is *served* when the decision lag p99 ≤ ``--lag-ms`` and the delta lateness p99 ≤
``--late-ms`` (both 20 ms by default: the mock adds at most one caller frame of delay),
no error, no closed session and no leak; it is *generator-limited* when
the generator's pacing p99 > 2 ms. The run prints a table and the highest count served.
"""

from __future__ import annotations

import argparse
import base64
import heapq
import json
import math
import os
import select
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
from bench import (
    FRAME_NS,
    MS,
    PY,
    Meter,
    core_busy,
    fmt,
    free_port,
    http_get,
    pct,
    py_spy,
    row,
    start_logged,
    stop_proc,
    taskset,
    wait_line,
)
from callsim.simulator.audio import codec
from callsim.simulator.audio.fixtures import default_library
from callsim.simulator.mock.audio import CONVERTER_DELAY_MS

FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law
DECISION_DELAY_MS = CONVERTER_DELAY_MS["pcmu"]
MASK = b"\x5a\xa5\x3c\xc3"  # one key for all frames: the mock only unmasks, any key is valid

SESSION_UPDATE = {
    "type": "session.update",
    "session": {
        "type": "realtime",
        "audio": {
            "input": {"format": {"type": "audio/pcmu"},
                      "turn_detection": {"type": "server_vad", "silence_duration_ms": 200}},
            "output": {"format": {"type": "audio/pcmu"}},
        },
    },
}


def masked_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A client → server WebSocket frame (FIN, masked with :data:`MASK`)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    key = np.frombuffer(MASK * (n // 4 + 1), np.uint8)[:n]
    body = (np.frombuffer(payload, np.uint8) ^ key).tobytes()
    return head + MASK + body


def script_frames(fixtures: list[str], silence_s: float) -> list[bytes]:
    """The caller's audio as append frames: each fixture (8 kHz μ-law) then line silence."""
    lib = default_library()
    out: list[bytes] = []
    for name in fixtures:
        pcm, rate = lib.read_pcm(name)
        audio = codec.to_ulaw_8k(pcm, rate) + b"\xff" * int(silence_s * 8000)
        audio += b"\xff" * (-len(audio) % FRAME_BYTES)
        for i in range(0, len(audio), FRAME_BYTES):
            msg = orjson.dumps({"type": "input_audio_buffer.append",
                                "audio": base64.b64encode(audio[i:i + FRAME_BYTES]).decode()})
            out.append(masked_frame(msg))
    return out


@dataclass
class Session:
    idx: int
    sock: socket.socket
    fd: int
    phase: int  # offset into the script, in frames
    buf: bytearray = field(default_factory=bytearray)
    sent_ns: list[int] = field(default_factory=list)  # send time of append k (k = 0, 1, ...)
    pending: bytes = b""  # bytes of a frame the kernel did not take
    closed: str | None = None
    errors: int = 0
    last_delta_ns: int | None = None
    decisions: list[tuple[int, float]] = field(default_factory=list)  # (t_arrival, lag ms)
    delta_late: list[tuple[int, float]] = field(default_factory=list)  # (t_arrival, lateness ms)


class Generator:
    """N sessions on one epoll loop: appends on a 20 ms grid, events parsed as they come."""

    def __init__(self, port: int, n: int, frames: list[bytes], stagger_s: float, period_ns: float,
                 vad: bool = True) -> None:
        self.port, self.n, self.frames = port, n, frames
        update = json.loads(json.dumps(SESSION_UPDATE))
        if not vad:
            update["session"]["audio"]["input"]["turn_detection"] = None
        self.session_update = masked_frame(orjson.dumps(update))
        self.stagger_s = stagger_s
        self.period_ns = period_ns  # expected gap between two audio deltas
        self.sessions: list[Session] = []
        self.ep = select.epoll()
        self.by_fd: dict[int, Session] = {}
        self.pacing: list[tuple[int, int]] = []  # (due_ns, lateness ns)
        self.heap: list[tuple[int, int]] = []

    # ------------------------------------------------------------- set-up
    def open_one(self, idx: int) -> Session:
        s = socket.create_connection(("127.0.0.1", self.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                   f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer sk-bench\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError(f"session {idx}: the mock closed during the handshake")
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"session {idx}: handshake refused: {head[:200]!r}")
        s.sendall(self.session_update)
        s.setblocking(False)
        sess = Session(idx, s, s.fileno(), phase=(idx * 37) % len(self.frames))
        sess.buf += rest
        self.sessions.append(sess)
        self.by_fd[sess.fd] = sess
        self.ep.register(sess.fd, select.EPOLLIN)
        return sess

    # --------------------------------------------------------------- loop
    def run(self, until_ns: int, start_ns: int) -> None:
        """Open the sessions staggered from ``start_ns`` and drive them until ``until_ns``."""
        gap = int(self.stagger_s * 1e9 / max(1, self.n))
        opened = len(self.sessions)
        heap = self.heap
        frames, nf = self.frames, len(self.frames)
        while True:
            now = time.monotonic_ns()
            if now >= until_ns:
                return
            while opened < self.n and now >= start_ns + opened * gap:
                sess = self.open_one(opened)
                heapq.heappush(heap, (time.monotonic_ns() + FRAME_NS, sess.idx))
                opened += 1
                now = time.monotonic_ns()
            while heap and heap[0][0] <= now:
                due, i = heap[0]
                sess = self.sessions[i]
                if sess.closed is None:
                    t = time.monotonic_ns()
                    self._send(sess, frames[(sess.phase + len(sess.sent_ns)) % nf], t)
                    sess.sent_ns.append(t)
                    self.pacing.append((due, t - due))
                    heapq.heapreplace(heap, (due + FRAME_NS, i))
                else:
                    heapq.heappop(heap)
                now = time.monotonic_ns()
            nxt = heap[0][0] if heap else now + FRAME_NS
            if opened < self.n:
                nxt = min(nxt, start_ns + opened * gap)
            timeout = max(0.0, (nxt - time.monotonic_ns()) / 1e9)
            for fd, _ev in self.ep.poll(timeout):
                sess = self.by_fd.get(fd)
                if sess is not None:
                    self._read(sess)

    def _send(self, sess: Session, frame: bytes, t: int) -> None:
        data = sess.pending + frame if sess.pending else frame
        try:
            n = os.write(sess.fd, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            sess.closed = f"write: {exc}"
            return
        sess.pending = data[n:]

    def _read(self, sess: Session) -> None:
        try:
            data = os.read(sess.fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError as exc:
            sess.closed = f"read: {exc}"
            self.ep.unregister(sess.fd)
            return
        if not data:
            sess.closed = sess.closed or "EOF"
            self.ep.unregister(sess.fd)
            return
        t = time.monotonic_ns()
        buf = sess.buf
        buf += data
        pos = 0
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, hl = b1 & 0x7F, 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, hl = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, hl = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if len(buf) - pos < hl + n:
                break
            payload = bytes(buf[pos + hl:pos + hl + n])
            pos += hl + n
            op = b0 & 0x0F
            if op == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                sess.closed = sess.closed or f"close {code} {payload[2:].decode(errors='replace')}"
            elif op == 1:
                self._event(sess, t, payload)
        del buf[:pos]

    def _event(self, sess: Session, t: int, payload: bytes) -> None:
        # the type is the second key the mock writes ({"event_id":…,"type":…}); only a few types matter
        if b'"response.output_audio.delta"' in payload[:120] or b'"response.audio.delta"' in payload[:120]:
            if sess.last_delta_ns is not None:
                sess.delta_late.append((t, (t - sess.last_delta_ns - self.period_ns) / MS))
            sess.last_delta_ns = t
            return
        ev = orjson.loads(payload)
        etype = ev.get("type")
        if etype == "input_audio_buffer.speech_stopped":
            end_ms = ev["audio_end_ms"]
            # the append holding the last sample the decision needs (plus what the converter holds back)
            k = math.ceil((end_ms + DECISION_DELAY_MS) * 8 / FRAME_BYTES) - 1
            if 0 <= k < len(sess.sent_ns):
                sess.decisions.append((t, (t - sess.sent_ns[k]) / MS))
        elif etype in ("response.done", "response.created"):
            sess.last_delta_ns = None
        elif etype == "error":
            sess.errors += 1
            print(f"  session {sess.idx}: error {ev.get('error')}", file=sys.stderr)

    def close_all(self) -> None:
        close = masked_frame((1000).to_bytes(2, "big"), opcode=8)
        for s in self.sessions:
            try:
                s.sock.settimeout(2.0)  # a mock that stopped reading must not hang the benchmark
                s.sock.sendall(s.pending + close)
            except OSError:
                pass
        for s in self.sessions:
            try:
                s.sock.close()
            except OSError:
                pass
        self.ep.close()


def run_step(a: argparse.Namespace, n: int, frames: list[bytes], tmp: Path) -> dict[str, Any]:
    port = free_port()
    cmd = taskset(a.mock_cpus) + [
        PY, "-m", "callsim.simulator", "mock-openai", "--port", str(port), "--any-key",
        "--chunk-ms", str(a.chunk_ms), "--realtime-factor", str(a.realtime_factor), *shlex.split(a.mock_args)]
    log = tmp / f"mock-{n}.log"
    proc = start_logged(cmd, log)
    try:
        wait_line(log, "mock OpenAI Realtime on", proc, 120, "the mock")
        time.sleep(0.5)
        meter = Meter(proc.pid)
        rss0 = meter.rss()
        gen = Generator(port, n, frames, a.stagger_s, a.chunk_ms / a.realtime_factor * MS, vad=not a.no_vad)
        t0 = time.monotonic_ns()
        w0 = t0 + int((a.stagger_s + a.lead_s) * 1e9)
        gen.run(w0, t0)  # open everything, let it settle
        spy = None
        if a.py_spy:  # sampled during the window only
            spy = subprocess.Popen([py_spy(), "record", "--pid", str(proc.pid), "--rate", "200", "--format", "raw",
                                    "--duration", str(int(a.hold_s)), "--nonblocking",
                                    "--output", str(Path(a.py_spy) / f"mock-{n}.txt")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        c0, cpu0, wall0 = psutil.cpu_times(percpu=True), meter.cpu_s(), time.monotonic()
        w1 = w0 + int(a.hold_s * 1e9)
        gen.run(w1, t0)
        c1, cpu1, wall1 = psutil.cpu_times(percpu=True), meter.cpu_s(), time.monotonic()
        if spy is not None:
            spy.wait(30)
        rss1 = meter.rss()
        gen.run(w1 + int(0.3e9), t0)  # what was decided in the window arrives
        gen.close_all()
        t_closed = time.monotonic()
        leak_ms: float | None = None
        while time.monotonic() - t_closed < a.leak_wait_s:
            status, body = http_get(f"http://127.0.0.1:{port}/_mock/health", timeout=2)
            if status == 200 and json.loads(body)["open_sessions"] == 0:
                leak_ms = (time.monotonic() - t_closed) * 1000
                break
            time.sleep(0.02)
    finally:
        stop_proc(proc)
    in_win = lambda xs: [v for t, v in xs if w0 <= t < w1]  # noqa: E731
    lags = [v for s in gen.sessions for v in in_win(s.decisions)]
    late = [v for s in gen.sessions for v in in_win(s.delta_late)]
    pacing = [v / MS for d, v in gen.pacing if w0 <= d < w1]
    secs = n * (wall1 - wall0)
    mock_cpus = [int(c) for c in a.mock_cpus.split(",")] if a.mock_cpus else []
    gen_cpus = sorted(os.sched_getaffinity(0))
    r: dict[str, Any] = {
        "sessions": n, "window_s": round(wall1 - wall0, 2),
        "mock_cpu_ms_per_session_s": round((cpu1 - cpu0) * 1000 / secs, 2),
        "mock_core_busy": core_busy(c0, c1, mock_cpus),
        "gen_core_busy": core_busy(c0, c1, gen_cpus),
        "mock_rss_mb_per_session": round((rss1 - rss0) / n / 2**20, 3),
        "decisions": len(lags), "lag_p50_ms": pct(lags, 50), "lag_p99_ms": pct(lags, 99),
        "lag_max_ms": max(lags) if lags else None,
        "deltas": len(late), "delta_late_p50_ms": pct(late, 50), "delta_late_p99_ms": pct(late, 99),
        "pacing_p99_ms": pct(pacing, 99), "errors": sum(s.errors for s in gen.sessions),
        "closed": sum(1 for s in gen.sessions if s.closed), "leak_ms": leak_ms,
    }
    why = []
    if r["closed"]:
        why.append(f"{r['closed']} closed: {next(s.closed for s in gen.sessions if s.closed)}")
    if r["errors"]:
        why.append(f"{r['errors']} errors")
    if not lags:
        if not a.no_vad:
            why.append("no speech_stopped in the window")
    elif r["lag_p99_ms"] > a.lag_ms:
        why.append(f"decision lag p99 {r['lag_p99_ms']:.1f} ms > {a.lag_ms}")
    if late and r["delta_late_p99_ms"] > a.late_ms:
        why.append(f"delta lateness p99 {r['delta_late_p99_ms']:.1f} ms > {a.late_ms}")
    if leak_ms is None or leak_ms > 1000:
        why.append("LEAK: sessions still open" if leak_ms is None else f"slow close {leak_ms:.0f} ms")
    r["served"] = not why
    r["why"] = "; ".join(why)
    r["generator_limited"] = r["pacing_p99_ms"] is not None and r["pacing_p99_ms"] > 2.0
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--steps", default="50,100,150,200,250", help="concurrent sessions per step")
    p.add_argument("--hold-s", type=float, default=15.0, help="measured window per step, s")
    p.add_argument("--stagger-s", type=float, default=2.0, help="sessions open spread over this long")
    p.add_argument("--lead-s", type=float, default=3.0, help="after the last session opened, wait this long")
    p.add_argument("--fixtures", default="caller_weather_question,caller_greeting",
                   help="caller fixtures, in turn (each followed by --silence-s of line silence)")
    p.add_argument("--silence-s", type=float, default=3.5, help="line silence after each utterance")
    p.add_argument("--chunk-ms", type=int, default=100, help="the mock's audio per delta")
    p.add_argument("--realtime-factor", type=float, default=5.0, help="the mock's delta pacing")
    p.add_argument("--mock-args", default="", help="more `callsim mock-openai` arguments (use --mock-args=...)")
    p.add_argument("--mock-cpus", default="0", help="taskset CPU list for the mock ('' = no pinning)")
    p.add_argument("--gen-cpus", default="1", help="CPU list for this generator ('' = no pinning)")
    p.add_argument("--no-vad", action="store_true",
                   help="sessions without turn detection: the mock only buffers the audio (the cost of "
                        "carrying the messages alone; no decisions, no replies)")
    p.add_argument("--lag-ms", type=float, default=20.0, help="decision lag p99 limit (one append is 20 ms)")
    p.add_argument("--late-ms", type=float, default=20.0, help="delta lateness p99 limit (one frame)")
    p.add_argument("--leak-wait-s", type=float, default=5.0)
    p.add_argument("--keep-going", action="store_true", help="run every step even after one is not served")
    p.add_argument("--json", default=None, metavar="OUT")
    p.add_argument("--py-spy", default=None, metavar="DIR",
                   help="record the mock with py-spy during each window (DIR/mock-N.txt; "
                        "break it down with: python loadtests/capacity.py profile-report FILE)")
    a = p.parse_args(argv)
    usable = os.sched_getaffinity(0)
    for opt in ("mock_cpus", "gen_cpus"):  # a CPU this machine does not have: run unpinned, and say so
        want = {int(c) for c in getattr(a, opt).split(",") if c.strip()}
        if want and not want <= usable:
            print(f"--{opt.replace('_', '-')} {getattr(a, opt)}: not on this machine (CPUs {sorted(usable)}); "
                  "not pinning", file=sys.stderr)
            setattr(a, opt, "")
    if a.mock_cpus and shutil.which("taskset") is None:
        print("taskset not found: the mock runs unpinned", file=sys.stderr)
        a.mock_cpus = ""
    if a.gen_cpus:
        os.sched_setaffinity(0, {int(c) for c in a.gen_cpus.split(",")})
    if a.py_spy:
        Path(a.py_spy).mkdir(parents=True, exist_ok=True)
    steps = [int(x) for x in a.steps.split(",") if x.strip()]
    frames = script_frames(a.fixtures.split(","), a.silence_s)
    print(f"callsim mock capacity — {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC, "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}; mock on CPU {a.mock_cpus or 'any'}, "
          f"generator on CPU {a.gen_cpus or 'any'}; hold {a.hold_s:.0f} s; script {len(frames) * 20 / 1000:.1f} s "
          f"({a.fixtures}, each + {a.silence_s} s silence); mock args: {a.mock_args or '(none)'}")
    cols = ("sessions", "mock cpu", "m-core", "RSS", "lag p50", "lag p99", "late p99", "pacing",
            "g-core", "errors", "leak", "served")
    widths = [9] * len(cols)
    print(row(cols, widths, sep=""))
    print(row(("", "ms/ses·s", "%", "MB/ses", "ms", "ms", "ms", "p99 ms", "%", "", "ms", ""), widths, sep=""))
    results = []
    with tempfile.TemporaryDirectory(prefix="callsim-mockcap-") as tmp:
        for n in steps:
            r = run_step(a, n, frames, Path(tmp))
            results.append(r)
            print(row((
                n, fmt(r["mock_cpu_ms_per_session_s"], "{:.2f}"), fmt(r["mock_core_busy"] and r["mock_core_busy"] * 100, "{:.0f}"),
                fmt(r["mock_rss_mb_per_session"], "{:.3f}"), fmt(r["lag_p50_ms"]), fmt(r["lag_p99_ms"]),
                fmt(r["delta_late_p99_ms"]), fmt(r["pacing_p99_ms"], "{:.2f}"),
                fmt(r["gen_core_busy"] and r["gen_core_busy"] * 100, "{:.0f}"), r["errors"], fmt(r["leak_ms"], "{:.0f}"),
                "yes" if r["served"] else "NO"), widths, sep="") + (f"   {r['why']}" if r["why"] else "")
                + ("   [generator-limited]" if r["generator_limited"] else ""), flush=True)
            if not r["served"] and not a.keep_going:
                break
    served = [r["sessions"] for r in results if r["served"] and not r["generator_limited"]]
    print(f"served up to: {max(served) if served else 'none of the steps'} concurrent sessions on one core "
          f"(lag p99 ≤ {a.lag_ms} ms, delta lateness p99 ≤ {a.late_ms} ms, no error, no leak)")
    ok = [r for r in results if r["served"]]
    if ok:
        best = ok[-1]
        per = best["mock_cpu_ms_per_session_s"]
        print(f"at {best['sessions']} sessions: {per:.2f} ms of mock CPU per session-second "
              f"(≈ {1000 / per:.0f} sessions per core at 100 %), {best['mock_rss_mb_per_session']:.3f} MB RSS per session")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "steps": results}, indent=1))
    return 0 if served else 1


if __name__ == "__main__":
    raise SystemExit(main())
