"""What the benchmarks in ``loadtests/`` share: their processes, their meters, their figures.

* **processes**: a free port, a process started with its output in a log file, waiting for
  it to listen or to log a line, a polite stop — only ever of a process we started, by
  its own handle;
* **pinning**: ``taskset`` CPU lists, so the server under test and the load run on cores
  of their own and one cannot steal the other's time;
* **meters**: CPU time and RSS of a process tree (psutil), how busy a set of cores was
  between two readings, and the wait for a quiet machine — another job on a shared
  machine would show up as latency the server under test did not cause;
* **figures**: percentiles and the cell format of the tables ("—" for no value).

Scripts run as ``python loadtests/x.py`` have ``loadtests/`` first on ``sys.path``, so
they ``import bench``; the tests that import a loadtests module put it there first.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
MS = 1_000_000
FRAME_NS = 20 * MS  # one Twilio media frame


# ================================================================ processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, b""


def start_logged(cmd: list[str], log: Path, *, cwd: Path | str = ROOT, env: dict[str, str] | None = None,
                 stdin: int | IO[Any] | None = None) -> subprocess.Popen:
    """Start ``cmd`` with its stdout and stderr in ``log`` (unbuffered Python output by default)."""
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, stdin=stdin, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"} if env is None else env)


def wait_port(port: int, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s:\n{tail(log)}")


def wait_line(path: Path, needle: str, proc: subprocess.Popen, timeout: float, what: str) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = path.read_text(errors="replace") if path.exists() else ""
        for line in text.splitlines():
            if needle in line:
                return line
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(path)}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready within {timeout:.0f} s:\n{tail(path)}")


def tail(path: Path, n: int = 30) -> str:
    """The last ``n`` lines of a log, for an error message."""
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


def py_spy() -> str:
    """The py-spy executable: on the PATH, or next to this Python."""
    return shutil.which("py-spy") or str(Path(PY).parent / "py-spy")


# ================================================================== pinning


def parse_cpus(spec: str) -> list[int]:
    """A ``taskset`` CPU list ("0", "0,2", "1-3") as CPU numbers."""
    out: list[int] = []
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out += list(range(int(lo), int(hi) + 1))
        elif part.strip():
            out.append(int(part))
    return out


def taskset(spec: str | None) -> list[str]:
    """The command prefix that pins a process to ``spec`` (nothing for no spec)."""
    return ["taskset", "-c", spec] if spec else []


# =================================================================== meters


class Meter:
    """CPU time and RSS of a process and its children (psutil)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)

    def procs(self) -> list[psutil.Process]:
        try:
            return [self.proc] + self.proc.children(recursive=True)
        except psutil.Error:
            return []

    def cpu_s(self) -> float:
        total = 0.0
        for p in self.procs():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def rss(self) -> int:
        total = 0
        for p in self.procs():
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


def wait_quiet(own: list[int], busy_limit: float, max_wait_s: float) -> float:
    """Wait (up to ``max_wait_s``) until the machine is quiet apart from our own processes:
    other processes using at most ``busy_limit`` of it for 3 s in a row.

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
        quiet_run = quiet_run + 1 if busy <= busy_limit else 0
        if quiet_run >= 3 or waited >= max_wait_s:
            if said:
                print(f"  ... {'quiet' if busy <= busy_limit else 'still busy, going on'} after {waited:.0f} s",
                      flush=True)
            return waited
        if not said and busy > busy_limit:
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


# ================================================================== figures


def pct(v: Sequence[float] | np.ndarray, q: float) -> float | None:
    """The ``q``-th percentile of ``v``; None for no values."""
    return float(np.percentile(v, q)) if len(v) else None


def fmt(v: Any, spec: str = "{:.1f}") -> str:
    """A table cell: ``v`` in ``spec``, or "—" for no value."""
    return "—" if v is None else spec.format(v)


def row(cells: Sequence[Any], widths: Sequence[int], sep: str = " ") -> str:
    """One line of a table: each cell right-aligned in its width."""
    return sep.join(f"{c:>{w}}" for c, w in zip(cells, widths))
