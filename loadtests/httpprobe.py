"""Slow and idle peers: what a server does with connections that say little or nothing.

The fuzzer's examples each finish quickly; the attacks that cost a server most are the ones
that don't: a head or a body sent a byte at a time, sockets opened and left idle, a media
stream upgraded but never started, a call started but never sent audio. Each probe here
opens such a connection, waits up to a bound, and reports what the server did: answered,
closed (and after how long), or neither — and whether it went on serving everyone else.
They run at once, in threads, so the whole set takes about the longest bound.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any, Callable

import fuzzwire as fw

WAIT_S = 15.0  # how long a probe waits for the server to act


def _closed_within(w: fw.Wire, seconds: float) -> tuple[bool, float, int | None]:
    t0 = time.monotonic()
    a = w.read_until(None, seconds)
    return (a.eof or a.reset), time.monotonic() - t0, a.status


def connection_close(port: int, path: str) -> dict[str, Any]:
    w = fw.Wire(port)
    try:
        w.send(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        a = w.read_until(lambda a: w.response_complete(), 5)
        closed, after, _ = _closed_within(w, 2)
        return {"ok": a.status is not None and closed, "detail": f"status {a.status}, "
                + (f"closed {after:.2f} s after the response" if closed else "still open 2 s after the response")}
    finally:
        w.close()


def idle_keepalive(port: int, path: str) -> dict[str, Any]:
    w = fw.Wire(port)
    try:
        w.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        a = w.read_until(lambda a: w.response_complete(), 5)
        closed, after, _ = _closed_within(w, WAIT_S)
        return {"ok": closed, "detail": f"status {a.status}; idle keep-alive connection "
                + (f"closed after {after:.1f} s" if closed else f"still open after {WAIT_S:.0f} s")}
    finally:
        w.close()


def slow_head(port: int) -> dict[str, Any]:
    w = fw.Wire(port)
    try:
        w.send(b"POST /incoming-call HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        closed, after, status = _closed_within(w, WAIT_S)
        return {"ok": closed, "detail": (f"closed after {after:.1f} s (status {status})" if closed
                                         else f"a head that never ends still held after {WAIT_S:.0f} s")}
    finally:
        w.close()


def slow_body(port: int, path: str) -> dict[str, Any]:
    w = fw.Wire(port)
    try:
        w.send(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
               "Content-Length: 1000\r\n\r\nCallSid=CA".encode())
        closed, after, status = _closed_within(w, WAIT_S)
        return {"ok": closed, "detail": (f"closed after {after:.1f} s (status {status})" if closed
                                         else f"a body that never comes still waited for after {WAIT_S:.0f} s")}
    finally:
        w.close()


def idle_sockets(port: int, path: str, n: int = 300) -> dict[str, Any]:
    """``n`` connections that send nothing; then, can a fresh client still be served?"""
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        w = fw.Wire(port)
        try:
            w.send(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            a = w.read_until(lambda a: w.response_complete(), 5)
        finally:
            w.close()
        time.sleep(WAIT_S)  # then: how many of the idle ones did the server close?
        closed = sum(_eof_seen(s) for s in socks)
        return {"ok": a.status is not None and closed == n,
                "detail": f"with {n} idle sockets open a new request got {a.status}; "
                          f"{closed}/{n} idle sockets closed by the server within {WAIT_S:.0f} s"}
    finally:
        for s in socks:
            s.close()


def _eof_seen(s: socket.socket) -> bool:
    """The server closed ``s`` (after an answer, such as a 408, or none): read what is there."""
    s.setblocking(False)
    try:
        while True:
            if s.recv(65536) == b"":
                return True
    except BlockingIOError:
        return False
    except OSError:  # reset: closed as well
        return True


def stream_never_started(port: int, health: Callable[[], int | None], headers: list[tuple[str, str]],
                         n: int = 5) -> dict[str, Any]:
    """Media streams upgraded but never sent ``start``: counted as calls? closed in time?"""
    ws = []
    try:
        for _ in range(n):
            w = fw.Wire(port)
            w.send(fw.upgrade("/media-stream", port, headers))
            w.read_until(lambda a: a.status is not None, 5)
            ws.append(w)
        time.sleep(0.5)
        counted = health()
        # one deadline for all of them (each waited WAIT_S / n in turn before: the first
        # socket's 3 s ran out before a 5 s start timeout could close it)
        deadline = time.monotonic() + WAIT_S
        closed = sum(_closed_within(w, max(0.0, deadline - time.monotonic()))[0] for w in ws)
        return {"ok": closed == n and not counted,
                "detail": f"{n} streams without a start: active_calls {counted} meanwhile; "
                          f"{closed}/{n} closed within {WAIT_S:.0f} s"}
    finally:
        for w in ws:
            w.close()


def call_without_audio(port: int, start: bytes, headers: list[tuple[str, str]]) -> dict[str, Any]:
    """A call that starts and then sends nothing at all: does the bridge end it?"""
    w = fw.Wire(port)
    try:
        w.send(fw.upgrade("/media-stream", port, headers))
        w.read_until(lambda a: a.status is not None, 5)
        w.send(start)
        closed, after, _ = _closed_within(w, WAIT_S)
        return {"ok": closed, "detail": (f"ended by the bridge after {after:.1f} s of silence" if closed
                                         else f"a call with no media still open after {WAIT_S:.0f} s")}
    finally:
        w.close()


def run_all(probes: dict[str, Callable[[], dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Every probe at once, each in its own thread; an exception is a result too."""
    out: dict[str, dict[str, Any]] = {}

    def one(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        try:
            res = fn()
        except Exception as exc:  # noqa: BLE001 - a probe that broke says so in the report
            res = {"ok": False, "detail": f"probe failed: {type(exc).__name__}: {exc}"}
        if "ok" in res:
            out[name] = res
        else:  # several probes run one after the other (they would disturb each other at once)
            out.update({f"{name}: {k}": v for k, v in res.items()})

    threads = [threading.Thread(target=one, args=(k, f), daemon=True) for k, f in probes.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S * 3)
    return out


def start_message(call_sid: str, token: str) -> bytes:
    return fw.text(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ" + "1" * 32, "start": {
        "accountSid": "AC" + "0" * 32, "streamSid": "MZ" + "1" * 32, "callSid": call_sid, "tracks": ["inbound"],
        "customParameters": {"token": token}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                              "channels": 1}}}))


__all__ = ["run_all", "connection_close", "idle_keepalive", "slow_head", "slow_body", "idle_sockets",
           "stream_never_started", "call_without_audio", "start_message", "WAIT_S"]
