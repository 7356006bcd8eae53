"""Raw HTTP and WebSocket bytes for the fuzzer: heads, frames, and one exchange over a socket.

Why by hand and not through a WebSocket library: a library refuses to send what the
fuzzer is for — unmasked client frames, reserved opcodes and bits, fragmented control
frames, lengths that lie, close codes no one may send, half a frame and then EOF. So
requests and frames are built byte by byte here (RFC 6455 §5.2), sent over a plain
blocking socket, and what comes back is read the same way: an HTTP status line, then
(after a 101) the server's frames, until the server closes or the time is up.

Synchronous on purpose: Hypothesis drives the fuzzer example by example, and a
blocking socket with a timeout is the simplest thing that can neither hang nor hide
an answer.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from dataclasses import dataclass, field

from websockets.frames import (
    apply_mask,  # C when built: a fuzzed frame may be megabytes
)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = True,
          length: int | None = None, key: bytes | None = None) -> bytes:
    """One frame, as RFC 6455 §5.2 lays it out — or not: ``rsv`` sets the reserved bits,
    ``mask=False`` sends a client frame unmasked, ``length`` declares a length other than
    the payload's (a lie), and ``opcode`` may be any 4-bit value."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    m = 0x80 if mask else 0
    if n < 126:
        head = bytes((b0, m | n))
    elif n < 65536:
        head = bytes((b0, m | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, m | 127)) + (n & (2**64 - 1)).to_bytes(8, "big")
    if not mask:
        return head + payload
    key = key if key is not None else os.urandom(4)
    return head + key + apply_mask(payload, key)


def text(data: str | bytes, **kw: object) -> bytes:
    return frame(OP_TEXT, data.encode() if isinstance(data, str) else data, **kw)  # type: ignore[arg-type]


def close(code: int | None = 1000, reason: bytes = b"", **kw: object) -> bytes:
    payload = b"" if code is None else struct.pack("!H", code & 0xFFFF) + reason
    return frame(OP_CLOSE, payload, **kw)  # type: ignore[arg-type]


def upgrade(path: str, port: int, headers: list[tuple[str, str]] = (), *, key: str | None = None,  # type: ignore[assignment]
            version: str = "13", method: str = "GET") -> bytes:
    """A WebSocket upgrade request head (valid unless the arguments say otherwise)."""
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", f"Sec-WebSocket-Version: {version}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


@dataclass
class Answer:
    """What the server sent back on one connection, and how the connection ended."""

    status: int | None = None  # the HTTP status of the first response (None: no status line came)
    head: bytes = b""
    body: bytes = b""
    frames: list[tuple[int, bytes]] = field(default_factory=list)  # (opcode, payload) after a 101
    eof: bool = False  # the server closed (FIN)
    reset: bool = False  # ... or reset the connection
    timed_out: bool = False  # neither before the time was up
    elapsed_s: float = 0.0
    trailing: int = 0  # bytes after the last whole frame (a frame cut short)

    @property
    def close_code(self) -> int | None:
        for op, payload in self.frames:
            if op == OP_CLOSE:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        return None

    def texts(self) -> list[str]:
        return [p.decode("utf-8", "replace") for op, p in self.frames if op == OP_TEXT]


class Wire:
    """One TCP connection to a server under test, read and parsed as it arrives."""

    def __init__(self, port: int, *, connect_timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.answer = Answer()
        self._buf = bytearray()
        self._t0 = time.monotonic()
        self._head_done = False
        self._body_left: int | None = None

    def send(self, data: bytes) -> bool:
        """False once the server has gone (reset, broken pipe): what is left is not sent."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            self.answer.reset = True
            return False

    def half_close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def read_until(self, done: "callable[[Answer], bool] | None", timeout: float) -> Answer:  # type: ignore[valid-type]
        """Read until ``done(answer)`` holds, the server closes, or ``timeout`` seconds pass."""
        a = self.answer
        end = time.monotonic() + timeout
        while not (a.eof or a.reset) and not (done is not None and done(a)):
            left = end - time.monotonic()
            if left <= 0:
                a.timed_out = True
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                a.timed_out = True
                break
            except OSError:
                a.reset = True
                break
            if not data:
                a.eof = True
                break
            self._feed(data)
        a.elapsed_s = time.monotonic() - self._t0
        return a

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # ------------------------------------------------------------ parsing

    def _feed(self, data: bytes) -> None:
        a = self.answer
        self._buf += data
        if not self._head_done:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if not self._buf.startswith(b"HTTP/") and len(self._buf) >= 5:
                    self._head_done = True  # not HTTP: frames straight away (or junk)
                return
            a.head = bytes(self._buf[:end + 4])
            del self._buf[:end + 4]
            self._head_done = True
            first = a.head.split(b"\r\n", 1)[0].split(b" ")
            if len(first) >= 2 and first[1].isdigit():
                a.status = int(first[1])
            self._body_left = _content_length(a.head)
        if a.status is not None and a.status != 101:
            a.body += bytes(self._buf)
            self._buf.clear()
            return
        while True:
            parsed = parse_frame(self._buf)
            if parsed is None:
                break
            op, payload, used = parsed
            a.frames.append((op, payload))
            del self._buf[:used]
        a.trailing = len(self._buf)

    def response_complete(self, head_request: bool = False) -> bool:
        """A whole non-101 HTTP response has arrived (by its Content-Length, or a chunked body's end)."""
        a = self.answer
        if a.status is None or a.status == 101:
            return False
        if head_request or a.status in (204, 304) or 100 <= a.status < 200:
            return True
        if self._body_left is not None:
            return len(a.body) >= self._body_left
        return b"transfer-encoding: chunked" in a.head.lower() and a.body.endswith(b"0\r\n\r\n")


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


def parse_frame(buf: bytearray) -> tuple[int, bytes, int] | None:
    """(opcode, unmasked payload, bytes used) of the first whole frame in ``buf``, or None."""
    if len(buf) < 2:
        return None
    n, pos = buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, pos = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, pos = int.from_bytes(buf[2:10], "big"), 10
    key = None
    if buf[1] & 0x80:
        key, pos = bytes(buf[pos:pos + 4]), pos + 4
    if len(buf) < pos + n:
        return None
    payload = bytes(buf[pos:pos + n])
    if key:
        payload = apply_mask(payload, key)
    return buf[0] & 0x0F, payload, pos + n


__all__ = ["Answer", "Wire", "frame", "parse_frame", "text", "close", "upgrade",
           "OP_CONT", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG"]
