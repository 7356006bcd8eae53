"""The bridge's WebSocket framing, apart from the I/O (as wsproto keeps ``frame_protocol.py`` apart).

:class:`FrameLane` is the sans-IO half of :class:`.wsconn.WebSocket`: bytes
read off the socket go in, messages (or frames for the ``websockets`` protocol)
come out; :func:`text_frame` is the bytes of one text message. Nothing here
reads, writes or waits, so the lane can be tested byte for byte against the
protocol alone, and :mod:`.wsconn` keeps only the socket and the handshakes.

The simulator has its own (``callsim.simulator.net.wsframes``, design.md rule 1).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from websockets.frames import (  # apply_mask: C when built
    CloseCode,
    Frame,
    Opcode,
    apply_mask,
)
from websockets.protocol import Protocol, Side, State


class ConnectionClosed(Exception):
    """The WebSocket is closed (by the peer, by us, or the socket broke: code 1006)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


class FrameLane:
    """The receive lane of one WebSocket over ``protocol`` (which has finished its handshake).

    **The fast lane.** Received bytes (``_buf``) are cut into whole frames here
    (the header says how long a frame is). A complete, unfragmented text or
    binary frame on an open connection — nearly every frame a call moves —
    becomes a message directly: header read, payload unmasked by
    ``websockets``' own ``apply_mask``. Every other frame (ping, pong, close,
    fragments, reserved bits, wrong masking, an oversized length) is handed
    *whole* to the ``websockets`` protocol, which answers it as before; since it
    only ever sees whole frames, it is always at a frame boundary and the two
    never disagree about where a frame starts. Why: the protocol's
    generator-based parser costs about twice the lane per frame. It is tested
    to give the same messages and the same bytes as the protocol alone.
    """

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self._pending: list[Frame] = []  # frames the protocol parsed, not yet returned
        self._eof = False
        # (code, reason) once closed. Never the exception itself: a raised exception
        # carries its traceback, whose frames hold this connection (and the call's
        # driver and core above it) — a reference cycle that only a full garbage
        # collection frees. Every raise builds a fresh ConnectionClosed instead.
        self._closed: tuple[int, str] | None = None
        self._buf = bytearray()  # received bytes not yet cut into frames
        self._server = protocol.side is Side.SERVER  # a server receives masked frames, sends unmasked

    def _cut(self) -> str | bytes | None:
        """Take the first whole frame off ``_buf``: a message from the fast lane, or
        None once the frame went to the protocol (its events are in ``_pending``)
        or when the frame is not complete yet."""
        buf, p = self._buf, self.protocol
        n = len(buf)
        if n < 2:
            return None
        b0, b1 = buf[0], buf[1]
        length, pos = b1 & 0x7F, 2
        if length == 126:
            if n < 4:
                return None
            length, pos = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            if n < 10:
                return None
            length, pos = int.from_bytes(buf[2:10], "big"), 10
        masked = b1 & 0x80
        if masked:
            pos += 4
        if p.max_size is not None and length > p.max_size:
            self._to_protocol(len(buf))  # it fails the connection with 1009 from the header alone
            return None
        end = pos + length
        if n < end:
            return None
        if (b0 == 0x81 or b0 == 0x82) and bool(masked) == self._server and p.cur_size is None \
                and p.state is State.OPEN:
            data = bytes(buf[pos:end])
            if masked:
                data = apply_mask(data, bytes(buf[pos - 4:pos]))
            del buf[:end]
            return self._decode(Opcode.TEXT if b0 == 0x81 else Opcode.BINARY, data)
        self._to_protocol(end)
        return None

    def _to_protocol(self, end: int) -> None:
        """Hand the first ``end`` bytes of ``_buf`` (whole frames, or a header it will refuse) to the protocol."""
        p = self.protocol
        p.receive_data(bytes(self._buf[:end]))
        del self._buf[:end]
        self._pending = p.events_received()  # type: ignore[assignment]
        if p.parser_exc is not None:  # e.g. a message over max_size (1009): no frame follows
            self._eof = True
            self._buf.clear()

    def _frame(self, frame: Frame) -> str | bytes | None:
        op = frame.opcode
        if op is Opcode.TEXT or op is Opcode.BINARY:
            if frame.fin:
                return self._decode(op, frame.data)
            self._fragment_opcode, self._fragments = op, [frame.data]
            return None
        if op is Opcode.CONT:
            self._fragments.append(frame.data)
            if not frame.fin:
                return None
            data, self._fragments = b"".join(self._fragments), []
            return self._decode(self._fragment_opcode or Opcode.BINARY, data)
        if op is Opcode.CLOSE:
            self._closed = self._close_args()
        return None  # ping/pong: already answered by the protocol

    def _decode(self, op: Opcode, data: bytes) -> str | bytes | None:
        if op is Opcode.BINARY:
            return data
        try:
            return data.decode()
        except UnicodeDecodeError:  # RFC 6455 §8.1: fail the connection with 1007
            self.protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text frame")
            self._pending = []
            self._closed = (CloseCode.INVALID_DATA, "invalid UTF-8 in a text frame")
            return None

    def _close_args(self) -> tuple[int, str]:
        p = self.protocol
        close = p.close_rcvd or p.close_sent
        if close is None:
            return CloseCode.ABNORMAL_CLOSURE, "connection lost"
        return close.code, close.reason

    def _take_eof(self) -> None:
        """The peer closed its side: a partial frame left over is the protocol's to judge (1006)."""
        p = self.protocol
        if self._buf:
            p.receive_data(bytes(self._buf))
            self._buf.clear()
        p.receive_eof()
        self._pending = p.events_received()  # type: ignore[assignment]


def text_frame(data: bytes, *, mask: bool) -> bytes:
    """One unfragmented text frame (RFC 6455 §5.2): what ``websockets`` would
    serialise, without building a ``Frame``. A client masks with a fresh key
    from ``os.urandom``, as §5.3 requires (``websockets`` does the same)."""
    n = len(data)
    m = 0x80 if mask else 0
    if n < 126:
        head = bytes((0x81, m | n))
    elif n < 65536:
        head = bytes((0x81, m | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, m | 127)) + n.to_bytes(8, "big")
    if not mask:
        return head + data
    key = os.urandom(4)
    return head + key + apply_mask(data, key)


def coalesce(chunks: Iterable[bytes]) -> list[bytes]:
    """Join consecutive data chunks into one write; keep ``b""`` (= send EOF) apart."""
    out: list[bytes] = []
    run: list[bytes] = []
    for c in chunks:
        if c:
            run.append(c)
        else:
            if run:
                out.append(b"".join(run))
                run = []
            out.append(b"")
    if run:
        out.append(b"".join(run))
    return out


__all__ = ["ConnectionClosed", "FrameLane", "coalesce", "text_frame"]
