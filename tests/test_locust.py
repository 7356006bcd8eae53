"""The gevent caller and the Locust load test, against our bridge + the mock run here under trio.

gevent must never be imported into this (trio) process — its monkey-patching
would break trio — so everything gevent runs as a subprocess: a small script for
the driver, the ``locust`` command for the load test. The bridge and the mock
run in this process's trio loop, which keeps serving them while the subprocess
runs (``trio.run_process``).
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import trio
from callsim.bridge.server import embedded
from callsim.simulator.audio.utterances import default_bank
from callsim.simulator.caller.script import Hangup, Pause, Say, WaitForReply
from callsim.simulator.caller.trio_driver import place_call
from callsim.simulator.measure.recording import pacing_stats
from callsim.simulator.mock.behaviour import Behaviour
from callsim.simulator.mock.server import MockConfig, running_mock

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
REPLY = "assistant_short_reply"

SCRIPT = [Pause(300), Say("caller_greeting"), WaitForReply(quiet_ms=800, timeout_ms=8000), Hangup()]
GEVENT_CALL = r"""
from gevent import monkey
monkey.patch_all()

import json, random, sys
from callsim.simulator.caller.gevent_driver import place_call_gevent
from callsim.simulator.measure.recording import pacing_stats  # imports caller_trio, hence trio: importing is fine
from callsim.simulator.caller.script import Hangup, Pause, Say, WaitForReply

r = place_call_gevent(sys.argv[1], [Pause(300), Say("caller_greeting"),
                                    WaitForReply(quiet_ms=800, timeout_ms=8000), Hangup()],
                      webhook_path="/incoming-call", rng=random.Random(7))
refused = place_call_gevent("http://127.0.0.1:9", [Hangup()], connect_timeout=2)
bad_ws = place_call_gevent(sys.argv[1].replace("http", "ws") + "/no-such-stream", [Hangup()])

# A Locust user is killed once. Killed while waiting for an app that never answers our close
# frame, it must die — not swallow the kill and place calls forever.
import base64, gevent, hashlib
from gevent.server import StreamServer

def mute_app(sock, _addr):
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    while sock.recv(65536):
        pass

server = StreamServer(("127.0.0.1", 0), mute_app)
server.start()
calls = []

def user():
    while True:
        calls.append(place_call_gevent(f"ws://127.0.0.1:{server.server_port}/", [Pause(100), Hangup()]))

g = gevent.spawn(user)
gevent.sleep(0.6)  # the first call hung up at 0.1 s and waits up to 2 s for the close reply
g.kill(block=True, timeout=1)

print(json.dumps({
    "error": r.error, "stream_url": r.stream_url, "timings": sorted(r.timings), "setup_ms": r.setup_ms,
    "summary": r.core.summary(), "pacing": pacing_stats(r),
    "refused": refused.error, "bad_ws": bad_ws.error,
    "killed_while_closing": {"dead": g.dead, "calls_finished": len(calls)},
}))
"""


def _behaviour() -> Behaviour:
    return Behaviour(replies=(REPLY,))


async def test_gevent_driver_gives_what_the_trio_driver_gives(tmp_path):
    script = tmp_path / "gevent_call.py"
    script.write_text(GEVENT_CALL)
    reply_ms = default_bank().get(REPLY).duration_ms
    async with running_mock(MockConfig(any_key=True, behaviour=_behaviour())) as mock:
        async with embedded({"openai_realtime_url": mock.realtime_url,
                             "database_path": tmp_path / "b.sqlite3"}) as base:
            done: dict[str, object] = {}

            async def gevent_call() -> None:
                done["proc"] = await trio.run_process([sys.executable, str(script), base], capture_stdout=True,
                                                      capture_stderr=True, check=False, env=ENV)

            async def trio_call() -> None:
                done["ref"] = await place_call(base + "/incoming-call", SCRIPT)

            async with trio.open_nursery() as nursery:  # both at once: half the wall time
                nursery.start_soon(gevent_call)
                nursery.start_soon(trio_call)
            proc, ref = done["proc"], done["ref"]
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    got = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert ref.ok, ref.error
    assert got["error"] is None, got

    want = ref.core.summary()
    summary = got["summary"]
    # Same shape: the same keys with the same types (JSON turns ints into ints, dicts into dicts).
    assert set(summary) == set(want)
    for k, v in want.items():
        assert isinstance(summary[k], type(v)) or (isinstance(v, float) and isinstance(summary[k], int)), k
    assert summary["end_reason"] == want["end_reason"] == "hangup"
    assert summary["utterances"] == want["utterances"] == 1
    assert summary["warnings"] == want["warnings"] == {}
    assert got["stream_url"].startswith(base.replace("http", "ws")) and ref.stream_url.startswith(base.replace("http", "ws"))
    # Frames flow every 20 ms on absolute deadlines, from the whole call.
    pacing, ref_pacing = got["pacing"], pacing_stats(ref)
    assert set(pacing) == set(ref_pacing)
    # one frame per 20 ms tick but the last (the tick that hangs up sends `stop` instead)
    assert pacing["frames"] == summary["frames_sent"] == summary["duration_ms"] // 20 - 1
    assert want["frames_sent"] == want["duration_ms"] // 20 - 1
    # (bounds as loose as test_caller_wire's: the machine may be shared while the suite runs)
    assert abs(pacing["interval_ms_median"] - 20.0) <= 1.0, pacing
    assert abs(pacing["drift_frames"]) < 3, pacing
    assert pacing["lateness_ms_p99"] < 40, pacing
    # The reply was heard whole (marks echoed as it played), as by the trio driver.
    assert abs(summary["audio_played_ms"] - reply_ms) <= 40, (summary["audio_played_ms"], reply_ms)
    assert abs(summary["audio_played_ms"] - want["audio_played_ms"]) <= 40
    assert summary["marks_echoed"].get("played", 0) > 0 and want["marks_echoed"].get("played", 0) > 0
    assert abs(summary["duration_ms"] - want["duration_ms"]) <= 1000
    # Call set-up milestones on the shared clock; the trio driver records the same ones.
    assert got["timings"] == sorted(ref.timings) == ["connected_ns", "placed_ns", "started_ns", "webhook_ns"]
    assert 0 < got["setup_ms"] < 2000 and 0 < ref.setup_ms < 2000
    # What the far end does never raises: it is in the result.
    assert got["refused"].startswith("webhook failed"), got["refused"]
    assert got["bad_ws"].startswith("stream connect to ") and "HTTP" in got["bad_ws"], got["bad_ws"]
    assert got["killed_while_closing"] == {"dead": True, "calls_finished": 0}


def _stats(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


async def _gauge_settles_to_zero(base: str, name: str, within_s: float) -> float:
    """Poll the bridge's Prometheus gauge until it reads 0 or ``within_s`` passes; its last value."""
    async with httpx.AsyncClient() as http:
        with trio.move_on_after(within_s):
            while True:
                text = (await http.get(base + "/metrics")).text
                m = re.search(rf"^{name} (\S+)$", text, re.M)
                assert m, text[:2000]
                if float(m.group(1)) == 0:
                    break
                await trio.sleep(0.05)
    return float(m.group(1))


async def test_headless_locust_run_reports_the_caller_metrics(tmp_path):
    """barge_in (≈ 14 s a call) covers every metric name; 20 s of run time gives each of the 3
    users one whole call and cuts its second one, which must be hung up without a leak."""
    async with running_mock(MockConfig(any_key=True)) as mock:
        async with embedded({"openai_realtime_url": mock.realtime_url,
                             "database_path": tmp_path / "b.sqlite3"}) as base:
            t = time.monotonic()
            proc = await trio.run_process(
                [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "3", "-r", "3",
                 "-t", "20s", "--host", base, "--csv", str(tmp_path / "stats"), "--only-summary",
                 "--scenario", "barge_in", "--mock-url", mock.http_url, "--loglevel", "WARNING"],
                capture_stdout=True, capture_stderr=True, check=False, env=ENV, cwd=tmp_path)
            ended = time.monotonic()
            closed = await mock.wait_all_closed(1.0)
            active = await _gauge_settles_to_zero(base, "callsim_bridge_active_calls", 1.0)
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, out[-4000:]
    assert ended - t < 40, ended - t
    assert closed, f"{mock.open_sessions} mock session(s) still open 1 s after Locust ended"
    assert active == 0
    stats = _stats(tmp_path / "stats_stats.csv")
    for name in ("call_setup", "call", "turn_latency", "overhead", "barge_in_clear", "truncate_error",
                 "pacing_jitter"):
        assert name in stats, (name, sorted(stats), out[-3000:])
        row = stats[name]
        assert row["Type"] == "call"
        assert int(row["Request Count"]) >= 3, (name, row)
        assert int(row["Failure Count"]) == 0, (name, row, out[-3000:])
    assert int(stats["Aggregated"]["Failure Count"]) == 0
    assert 500 < float(stats["turn_latency"]["Median Response Time"]) < 3000
    assert float(stats["truncate_error"]["Average Response Time"]) <= 20
    assert float(stats["pacing_jitter"]["Average Response Time"]) < 40
    assert float(stats["call_setup"]["Median Response Time"]) < 1000


async def _free_port() -> int:
    s = trio.socket.socket()
    await s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_distributed_run_master_and_worker_processes(tmp_path):
    """A Locust master and a separate worker process (as on two machines, here on one):
    the worker's callers run, their metrics reach the master's CSV, nothing leaks."""
    port = await _free_port()
    async with running_mock(MockConfig(any_key=True)) as mock:
        async with embedded({"openai_realtime_url": mock.realtime_url,
                             "database_path": tmp_path / "b.sqlite3"}) as base:
            common = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--loglevel", "WARNING"]
            async with trio.open_nursery() as n:
                n.start_soon(partial(
                    trio.run_process, common + [
                        "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                        "--expect-workers", "1", "--headless", "-u", "2", "-r", "2", "-t", "12s",
                        "--host", base, "--csv", str(tmp_path / "dist"), "--only-summary",
                        "--scenario", "hangup_mid_reply"],
                    capture_stdout=True, capture_stderr=True, check=True, env=ENV, cwd=tmp_path))
                n.start_soon(partial(
                    trio.run_process, common + [
                        "--worker", "--master-host", "127.0.0.1", "--master-port", str(port),
                        "--scenario", "hangup_mid_reply"],
                    capture_stdout=True, capture_stderr=True, check=True, env=ENV, cwd=tmp_path))
            closed = await mock.wait_all_closed(1.0)
            active = await _gauge_settles_to_zero(base, "callsim_bridge_active_calls", 1.0)
    assert closed and active == 0
    stats = _stats(tmp_path / "dist_stats.csv")
    for name in ("call_setup", "turn_latency", "pacing_jitter"):
        assert name in stats, (name, sorted(stats))
        assert int(stats[name]["Request Count"]) >= 2 and int(stats[name]["Failure Count"]) == 0, stats[name]
    assert int(stats["Aggregated"]["Failure Count"]) == 0


async def test_processes_flag_forks_workers_on_one_machine(tmp_path):
    """``--processes 2``: Locust forks two worker processes under one master."""
    async with running_mock(MockConfig(any_key=True)) as mock:
        async with embedded({"openai_realtime_url": mock.realtime_url,
                             "database_path": tmp_path / "b.sqlite3"}) as base:
            proc = await trio.run_process(
                [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--processes", "2", "--headless",
                 "-u", "4", "-r", "4", "-t", "12s", "--host", base, "--csv", str(tmp_path / "procs"),
                 "--only-summary", "--scenario", "hangup_mid_reply", "--loglevel", "WARNING"],
                capture_stdout=True, capture_stderr=True, check=False, env=ENV, cwd=tmp_path)
            closed = await mock.wait_all_closed(1.0)
            active = await _gauge_settles_to_zero(base, "callsim_bridge_active_calls", 1.0)
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, out[-4000:]
    assert closed and active == 0
    stats = _stats(tmp_path / "procs_stats.csv")
    assert int(stats["turn_latency"]["Request Count"]) >= 4, stats["turn_latency"]
    assert int(stats["Aggregated"]["Failure Count"]) == 0, out[-3000:]
    assert len(mock.sessions) >= 4
