"""The servers under test as processes of their own, and what ``/proc`` says about them.

The robustness tools (``fuzz.py``, ``fault_matrix.py``, ``soak.py``) judge a server by
what an operator would see: did the process die (a crash is its exit, nothing subtler),
how much memory and how many file descriptors does it hold, and how many calls and
sessions does it still think are open. So each server runs as ``python -m callsim.bridge`` /
``python -m callsim.simulator mock-openai`` in a process started here, logging to a file, and
is read from outside: RSS and open fds (psutil, from ``/proc``), the bridge's
``/health`` and the mock's ``/_mock/health``.

The process helpers themselves (free port, a logged process, waiting for a port or a log
line, a polite stop) are :mod:`bench`'s.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from bench import PY, free_port, http_get, start_logged, stop_proc, wait_line, wait_port

API_KEY = "sk-callsim-robustness"


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MB, None once it is gone (psutil, as :class:`bench.Meter` reads it)."""
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return None


def open_fds(pid: int) -> int | None:
    try:
        return psutil.Process(pid).num_fds()
    except psutil.Error:
        return None


def log_tracebacks(path: Path) -> int:
    """Tracebacks a server logged: not a crash, but an exception nobody handled on purpose."""
    try:
        return path.read_text(errors="replace").count("Traceback (most recent call last)")
    except OSError:
        return 0


def log_lines(path: Path, needle: str) -> list[str]:
    """Lines of a server's log that contain ``needle`` (e.g. the mock's own "SDK rejects")."""
    try:
        return [ln for ln in path.read_text(errors="replace").splitlines() if needle in ln]
    except OSError:
        return []


@dataclass
class Server:
    """One server process: its command, its log, how it ended."""

    name: str
    proc: subprocess.Popen
    port: int
    log: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self.proc.poll()

    def stats(self) -> dict[str, Any]:
        return {"rss_mb": rss_mb(self.proc.pid), "fds": open_fds(self.proc.pid)}

    def tail(self, n: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        stop_proc(self.proc)


def start_mock(tmp: Path, *, name: str = "mock", extra: list[str] | None = None) -> Server:
    port = free_port()
    log = tmp / f"{name}.log"
    cmd = [PY, "-m", "callsim.simulator", "mock-openai", "--port", str(port), "--any-key", "-v", *(extra or [])]
    proc = start_logged(cmd, log)
    wait_line(log, "mock OpenAI Realtime on", proc, 60, name)
    return Server(name, proc, port, log)


def start_bridge(tmp: Path, mock: Server, *, name: str = "bridge", auth_token: str | None = None,
                 env: dict[str, str] | None = None) -> Server:
    """``python -m callsim.bridge`` against ``mock``; with ``auth_token``, signatures and call tokens are checked."""
    port = free_port()
    log = tmp / f"{name}.log"
    openai_url = f"ws://127.0.0.1:{mock.port}/v1/realtime"
    penv = {**os.environ, "PYTHONUNBUFFERED": "1", "OPENAI_API_KEY": API_KEY, "OPENAI_REALTIME_URL": openai_url,
            "PORT": str(port), "HOST": "127.0.0.1", "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "DATABASE_PATH": str(tmp / f"{name}.sqlite3"), "MAX_CONCURRENT_CALLS": "1000"}
    penv.pop("TWILIO_AUTH_TOKEN", None)
    if auth_token:
        penv["TWILIO_AUTH_TOKEN"] = auth_token
    penv.update(env or {})
    proc = start_logged([PY, "-m", "callsim.bridge", "--env-file", "/nonexistent"], log, env=penv)
    wait_port(port, proc, 60, name, log)
    return Server(name, proc, port, log)


def bridge_active_calls(bridge: Server) -> int | None:
    status, body = http_get(f"{bridge.url}/health", timeout=3)
    if status != 200:
        return None
    try:
        return int(json.loads(body)["active_calls"])
    except (ValueError, KeyError, TypeError):
        return None


def mock_open_sessions(mock: Server) -> int | None:
    status, body = http_get(f"{mock.url}/_mock/health", timeout=3)
    if status != 200:
        return None
    try:
        return int(json.loads(body)["open_sessions"])
    except (ValueError, KeyError, TypeError):
        return None


def wait_settled(bridge: Server | None, mock: Server | None, within_s: float) -> dict[str, int | None]:
    """Poll until the bridge has no active call and the mock no open session (or ``within_s`` passes);
    returns the last readings: anything above 0 is a leak."""
    end = time.monotonic() + within_s
    while True:
        out = {"bridge_active_calls": bridge_active_calls(bridge) if bridge and bridge.alive else None,
               "mock_open_sessions": mock_open_sessions(mock) if mock and mock.alive else None}
        if all(not v for v in out.values()) or time.monotonic() >= end:
            return out
        time.sleep(0.1)


__all__ = ["API_KEY", "Server", "start_mock", "start_bridge", "bridge_active_calls", "mock_open_sessions",
           "wait_settled", "rss_mb", "open_fds", "log_tracebacks", "log_lines", "free_port", "http_get"]
