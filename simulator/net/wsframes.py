"""The simulator's WebSocket framing, apart from the I/O (as wsproto keeps ``frame_protocol.py`` apart).

:class:`FrameLane` is the sans-IO half of :class:`.wsconn.WebSocket`: bytes
read off the socket go in (:meth:`FrameLane._take`), whole messages come out
(``_messages``), and text messages become frame bytes queued on the
``websockets`` protocol (:meth:`FrameLane._frame_texts`). Nothing here reads,
writes or waits, so it can be tested byte for byte against the protocol alone,
and :mod:`.wsconn` keeps only the socket, the tasks and the handshakes.

Why lanes at all: ``websockets``' generator-based frame parser and its
per-message ``Frame`` objects were a visible share of the mock's profile.
Pings, closes, fragments and every malformed frame still go through
``websockets``, so they are answered and fail exactly as the protocol alone.

The bridge has its own (``callsim.bridge.wsframes``, design.md rule 1).
"""

from __future__ import annotations

import os
import struct
from collections import deque
from typing import Iterable

from websockets.frames import OP_BINARY, OP_CONT, OP_TEXT, CloseCode
from websockets.protocol import OPEN, Protocol, Side

try:  # the C unmasking websockets itself uses when it was built with it (every wheel is)
    from websockets.speedups import apply_mask
except ImportError:  # a pure-Python install of websockets
    from websockets.utils import apply_mask  # type: ignore[no-redef]

__all__ = ["ABNORMAL_CLOSURE", "ConnectionClosed", "FrameLane"]

ABNORMAL_CLOSURE = 1006  # no close frame: the socket broke (RFC 6455 7.1.5)

# RFC 6455 5.2 frame headers: the 16- and 64-bit extended payload lengths, read in
# place; a text frame's header (FIN + opcode 1, then MASK + 7-bit length) and its
# extended forms, written
_U16 = struct.Struct("!H").unpack_from
_U64 = struct.Struct("!Q").unpack_from
_TEXT_HEAD = struct.Struct("!BB").pack
_TEXT_HEAD16 = struct.Struct("!BBH").pack
_TEXT_HEAD64 = struct.Struct("!BBQ").pack


class ConnectionClosed(Exception):
    """The WebSocket is closed: ``code`` (1006 when the socket just broke) and ``reason``."""

    def __init__(self, code: int, reason: str | None) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"WebSocket closed ({self.code}{': ' + self.reason if self.reason else ''})"


class FrameLane:
    """The frames of one WebSocket over ``proto`` (which has finished its handshake).

    **Fast lanes.** Received bytes are cut into frames here (a frame's header
    says how long it is). A whole, unfragmented (FIN, no RSV bit) text or binary
    frame, masked as the peer must mask it and within ``max_message_size``,
    while the connection is open and no fragmented message is under way, is
    unmasked and becomes a message on the spot: nearly every frame a call
    moves. Every other frame (ping, pong, close, fragments, anything malformed
    or too big) goes to the ``websockets`` protocol, which answers and judges it
    as it always did. The protocol is given every byte before the frame being
    cut and nothing after it, so whenever the lane takes a frame the protocol
    is between two frames and would have parsed that one next; once the
    connection is closing it is given everything. Likewise a text message is
    framed here (masked with a fresh random key on the client side) and queued
    behind whatever the protocol queued (a pong, a close), after checking the
    protocol's state as ``Protocol.send_text`` does.
    """

    def __init__(self, proto: Protocol) -> None:
        self._proto = proto
        self._messages: deque[str | bytes] = deque()
        self._fragments: list[bytes | bytearray] | None = None
        self._fragment_text = False
        self._closed: tuple[int, str | None] | None = None
        # receive lane (see _cut): the start of a frame not complete yet, the size that
        # frame needs (0 while its header is incomplete), and the bytes still due to the
        # protocol of the frame it is parsing
        self._partial = bytearray()
        self._partial_need = 0
        self._given = 0  # bytes of _partial the protocol has had (see _cut)
        self._owed = 0
        # RFC 6455 5.1: a client masks every frame it sends, a server none
        self._mask_in = 0x80 if proto.side is Side.SERVER else 0
        self._mask_out = 0x80 ^ self._mask_in

    # ---------------------------------------------------------------- state

    @property
    def subprotocol(self) -> str | None:
        return self._proto.subprotocol

    @property
    def closed(self) -> ConnectionClosed | None:
        """Why the connection is closed, or None while it is open."""
        return None if self._closed is None else ConnectionClosed(*self._closed)

    def _close_info(self) -> tuple[int, str | None]:
        p = self._proto
        close = p.close_rcvd if p.close_rcvd is not None else p.close_sent
        if close is None:
            return ABNORMAL_CLOSURE, None
        return close.code, close.reason or None  # an empty reason reads as None, as in trio-websocket

    def _set_closed(self) -> None:
        if self._closed is None:
            self._closed = self._close_info()

    def _exc(self) -> ConnectionClosed:
        self._set_closed()
        assert self._closed is not None
        return ConnectionClosed(*self._closed)

    def take_pending(self) -> list[str | bytes]:
        """The messages read but not yet received, taken off the queue — for a peer that closed right
        after sending them: they were sent, so whoever serves the connection still handles them."""
        out = list(self._messages)
        self._messages.clear()
        return out

    # -------------------------------------------------------------- receive

    def _take(self, data: bytes) -> None:
        """Handle bytes read off the socket (``b""``: its end), then note a close."""
        proto = self._proto
        if data:
            self._cut(data)
        else:
            # _partial holds a header the protocol has had already or the start of a frame
            # sound so far: either way the end of the stream ends it as it always did (1006)
            proto.receive_eof()
        if not data or proto.close_rcvd is not None or proto.parser_exc is not None:
            self._set_closed()

    def _cut(self, data: bytes) -> None:
        """Cut ``data`` into frames (see the class docstring): the lane's become
        messages, the others go to the protocol, in order.

        Why: ``Protocol.receive_data`` parses with generators (``Frame.parse`` over
        ``StreamReader.read_exact``), several times the lane's cost. The protocol has been
        given every byte before ``pos``. A frame that is not the lane's goes to it
        as its bytes arrive, not once it is whole, so it fails a malformed or
        oversized frame from its header as early as it always did, and a large
        fragment is not buffered here: ``_owed`` counts the bytes of that frame
        the protocol has not had yet, ``_given`` the bytes of a header cut short
        that it has had (a frame its first two bytes keep out of the lane).
        """
        partial = self._partial
        given = 0  # bytes at the start of data that the protocol has had already
        if partial:
            partial += data
            if len(partial) < self._partial_need:
                return
            data, given = bytes(partial), self._given
            partial.clear()
        proto = self._proto
        max_size = proto.max_size
        mask_in = self._mask_in
        n = len(data)
        pos = need = 0
        while pos < n:
            owed = self._owed
            if owed:
                end = min(n, pos + owed)
                self._owed = owed - (end - pos)
                self._feed(data[pos:end])
                pos = end
                continue
            if proto.state is not OPEN:  # closing: the protocol echoes, fails or discards the rest
                self._feed(data[pos + given:])
                return
            if n - pos < 2:
                break
            b0, b1 = data[pos], data[pos + 1]
            lane = (b0 == 0x81 or b0 == 0x82) and (b1 & 0x80) == mask_in and proto.cur_size is None
            length, start = b1 & 0x7F, pos + 2
            if length > 125:  # a 16- or 64-bit length follows
                size = 2 if length == 126 else 8
                if n < start + size:
                    if not lane:  # judged from its first two bytes: let the protocol have them now
                        self._feed(data[pos + given:])
                        given = n - pos
                    break
                (length,) = (_U16 if size == 2 else _U64)(data, start)
                start += size
            if b1 & 0x80:
                start += 4  # the masking key
            end = start + length
            if lane and (max_size is None or length <= max_size):
                if end > n:
                    need = end - pos
                    break
                payload = data[start:end]
                if mask_in:
                    payload = apply_mask(payload, data[start - 4:start])
                self._deliver(payload, b0 == 0x81)
                pos = end
            else:
                pos += given
                self._owed = end - pos
                given = 0
        if pos < n:
            partial += data[pos:] if pos else data
            self._partial_need = need
            self._given = given

    def _feed(self, data: bytes) -> None:
        """Give the protocol bytes; handle the frames it parsed (it queued any pong or close echo)."""
        proto = self._proto
        proto.receive_data(data)
        events = proto.events_received()
        if events:
            self._handle(events)

    def _handle(self, events: Iterable[object]) -> None:
        for frame in events:
            op = frame.opcode  # type: ignore[attr-defined]
            if op is OP_TEXT or op is OP_BINARY:
                if frame.fin:  # type: ignore[attr-defined]
                    self._deliver(frame.data, op is OP_TEXT)  # type: ignore[attr-defined]
                else:
                    self._fragments = [frame.data]  # type: ignore[attr-defined]
                    self._fragment_text = op is OP_TEXT
            elif op is OP_CONT and self._fragments is not None:
                self._fragments.append(frame.data)  # type: ignore[attr-defined]
                if frame.fin:  # type: ignore[attr-defined]
                    data = b"".join(self._fragments)
                    self._fragments = None
                    self._deliver(data, self._fragment_text)
            # ping: the protocol queued the pong; close: handled by the caller of _handle

    def _deliver(self, data: bytes | bytearray | memoryview, text: bool) -> None:
        if self._closed is not None:
            return
        if text:
            try:
                self._messages.append(bytes(data).decode() if isinstance(data, memoryview) else data.decode())
            except UnicodeDecodeError as exc:
                if self._proto.state is OPEN:
                    self._proto.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
                self._set_closed()
        else:
            self._messages.append(data if type(data) is bytes else bytes(data))

    # ----------------------------------------------------------------- send

    def _frame_texts(self, messages: Iterable[str | bytes]) -> None:
        """Queue a text frame per message behind what the protocol queued (pongs, a close).

        Why not ``proto.send_text``: it builds, checks and serializes a ``Frame``
        object per message, several times what :meth:`_text_frame` costs. The
        protocol's state still decides, as there: once a close was sent or
        received, or the connection failed, this raises.
        """
        proto = self._proto
        for m in messages:
            if proto.state is not OPEN:
                raise self._exc()
            proto.writes.append(self._text_frame(m.encode() if isinstance(m, str) else m))

    def _text_frame(self, data: bytes) -> bytes:
        """One unfragmented text frame, as ``Frame(OP_TEXT, data).serialize()`` makes it:
        bare from a server; from a client masked with a fresh key from the OS's
        CSPRNG, since RFC 6455 5.3 wants it unpredictable."""
        n = len(data)
        mask = self._mask_out
        if n < 126:
            head = _TEXT_HEAD(0x81, mask | n)
        elif n < 65536:
            head = _TEXT_HEAD16(0x81, mask | 126, n)
        else:
            head = _TEXT_HEAD64(0x81, mask | 127, n)
        if not mask:
            return head + data
        key = os.urandom(4)
        return head + key + apply_mask(data, key)
