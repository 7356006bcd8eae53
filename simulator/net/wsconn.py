"""A lean trio WebSocket: ``websockets``' sans-IO protocol over a trio stream.

The simulator's hot paths (the trio caller and the mock OpenAI server) move
50–200 small messages per second per call. trio-websocket runs wsproto plus a
reader task and a memory channel per connection; this module runs
``websockets.protocol.Protocol`` (frame masking in C) directly in the task that
receives, with no per-connection background task:

* :func:`connect` / :func:`open_websocket` — client side, ``ws://`` or ``wss://``;
  a refused upgrade raises :class:`ConnectionRejected` with the status, headers
  and body;
* :class:`ServerHandshake` — server side, built from a request head the server
  already read off the socket; :meth:`~ServerHandshake.accept` or
  :meth:`~ServerHandshake.reject`;
* :class:`WebSocket` — :meth:`~WebSocket.receive_message` (``str`` for text,
  ``bytes`` for binary, fragmented messages assembled), :meth:`~WebSocket.send_text`,
  :meth:`~WebSocket.send_bytes`, :meth:`~WebSocket.aclose`. Pings are answered
  and close frames echoed while receiving, so one task must keep receiving (both
  drivers always do). Any number of tasks may send at once.

A closed connection (close frame, broken socket, protocol error, a message over
``max_message_size`` → 1009) raises :class:`ConnectionClosed` with ``code`` and
``reason`` from every later receive or send.

A plain TCP connection is read and written through :class:`FdStream` (``os.read``
/ ``os.write`` on the socket's fd): a send the kernel takes whole does not yield,
and :meth:`WebSocket.send_texts_nowait` sends from synchronous code (the caller's
tick scheduler) without a task switch.

Plain text and binary frames skip the protocol's frame parser and serializer
(see :class:`WebSocket`): its generator-based parser was a visible share of the
mock's profile. Measured per 300-byte text message, one frame per read, on a
stream that costs nothing (so without the syscalls): :meth:`~WebSocket.receive_message`
13 → 3.8 µs on the server side (masked frames), 12 → 3.6 µs on the client side;
:meth:`~WebSocket.send_texts_nowait` 4.4 → 1.9 µs on the server side, 5.6 →
3.3 µs on the client side (masked; 0.6 µs of it the fresh key from ``os.urandom``).
Pings, closes, fragments and every malformed frame still go through
``websockets``, so they are answered and fail exactly as before.
"""

from __future__ import annotations

import errno
import http
import logging
import os
import ssl
import struct
from collections import deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, AsyncIterator, Callable, Iterable, Sequence

import trio
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState, InvalidStatus
from websockets.frames import OP_BINARY, OP_CONT, OP_TEXT, CloseCode
from websockets.headers import parse_subprotocol
from websockets.http11 import Request, Response
from websockets.protocol import OPEN, Protocol, Side
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

try:  # the C unmasking websockets itself uses when it was built with it (every wheel is)
    from websockets.speedups import apply_mask
except ImportError:  # a pure-Python install of websockets
    from websockets.utils import apply_mask  # type: ignore[no-redef]

if TYPE_CHECKING:
    from .reactor import Reactor

__all__ = [
    "ConnectionClosed", "ConnectionRejected", "ConnectionTimeout", "FdStream", "HandshakeError",
    "ServerHandshake", "WebSocket", "connect", "open_websocket",
]

# websockets logs "connection open"/"rejected" at INFO for every connection: keep it quiet.
_PROTO_LOG = logging.getLogger("callsim.wsconn.protocol")
_PROTO_LOG.setLevel(logging.WARNING)

RECEIVE_BYTES = 65536
DEFAULT_MAX_MESSAGE = 2**20
CLOSE_TIMEOUT = 2.0
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


class HandshakeError(Exception):
    """The opening handshake failed (the socket broke, a bad answer, a timeout)."""


class ConnectionRejected(HandshakeError):
    """The server answered the upgrade with another HTTP status than 101."""

    def __init__(self, status_code: int, headers: Headers, body: bytes) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code
        self.headers = headers
        self.body = body


class ConnectionTimeout(HandshakeError):
    """The connection and handshake took longer than ``connect_timeout``."""


class FdStream(trio.abc.HalfCloseableStream):
    """A connected TCP socket read and written with ``os.read``/``os.write`` on its fd.

    Why: in the harness profile trio's ``SocketStream`` layers (the conflict
    detector's context managers, ``_nonblocking_helper``, a reschedule after every
    send) cost more CPU than the WebSocket protocol itself. Here:

    * a send the kernel takes whole returns without yielding, and
      :meth:`send_nowait` does it from synchronous code; what the kernel does not
      take goes into an ordered backlog that :meth:`flush` writes out (one task
      at a time; any task may do it), so bytes never reorder whoever sends;
    * a read that came back short emptied the kernel's buffer, so the next
      :meth:`receive_some` waits for readability instead of first trying a read
      that would only fail with ``EAGAIN``. A read that returns at once still
      checkpoints, so a receive loop always yields.

    The fd number is read from the trio socket on every use, never cached: once
    anyone closes that socket (this stream's :meth:`aclose`, or the trio
    ``SocketStream`` closed directly, as the mock does to drop a session), its
    ``fileno()`` is -1 and every operation raises ``ClosedResourceError`` rather
    than touching a number the kernel may already have given to another socket.
    trio's ``close()`` calls ``notify_closing`` first, so a task waiting on the fd
    is woken with ``ClosedResourceError`` too. Holding the ``SocketStream`` also
    keeps the socket from being garbage-collected (and its fd closed behind
    epoll's back) while this stream is in use.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.socket = stream.socket
        self._fileno = stream.socket.fileno  # bound once: called on every operation
        self._backlog: deque[memoryview] = deque()
        self._flush_lock = trio.Lock()
        # the last read came back short: nothing left to read. True at first: the
        # handshake's reads emptied the socket, as far as anyone knows
        self._drained = True

    def _fd(self) -> int:
        fd = self._fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the socket was closed")
        return fd

    # -------------------------------------------------------------- receive

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = max_bytes or RECEIVE_BYTES
        fd = self._fd()
        waited = self._drained
        if waited:
            await trio.lowlevel.wait_readable(fd)
            fd = self._fd()
        while True:
            try:
                data = os.read(fd, size)
                break
            except BlockingIOError:  # woken without data (another reader, a spurious wake-up)
                await trio.lowlevel.wait_readable(fd)
                fd = self._fd()
                waited = True
            except OSError as exc:  # ECONNRESET, ETIMEDOUT, ...
                raise trio.BrokenResourceError(_os_reason(exc)) from exc
        self._drained = 0 < len(data) < size
        if not waited:
            await trio.lowlevel.checkpoint()
        return data

    def read_nowait(self, size: int = RECEIVE_BYTES) -> bytes | None:
        """One read without waiting (for a :class:`~callsim.simulator.net.reactor.Reactor` that saw
        the socket readable): the bytes, ``b""`` at the end of the stream, None when
        there is nothing to read after all."""
        try:
            data = os.read(self._fd(), size)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise trio.BrokenResourceError(_os_reason(exc)) from exc
        self._drained = 0 < len(data) < size
        return data

    # ----------------------------------------------------------------- send

    @property
    def backlog_bytes(self) -> int:
        """Bytes accepted by :meth:`send_nowait` that the kernel has not taken yet."""
        return sum(len(v) for v in self._backlog)

    def send_nowait(self, data: bytes | bytearray | memoryview) -> bool:
        """Write ``data`` now if the kernel takes it whole (True). Otherwise keep
        what is left, after anything already waiting, and return False: someone
        must then ``await flush()``. Never yields."""
        fd = self._fd()
        if self._backlog:  # earlier bytes are still waiting: these go after them
            self._backlog.append(memoryview(data))
            return False
        sent = _write(fd, data)
        if sent == len(data):
            return True
        self._backlog.append(memoryview(data)[sent:])
        return False

    async def flush(self) -> None:
        """Write the whole backlog, waiting for the socket to drain as needed."""
        if not self._backlog:
            return
        async with self._flush_lock:  # only one task may wait for writability on the fd
            backlog = self._backlog
            while backlog:
                fd = self._fd()
                view = backlog[0]
                sent = _write(fd, view)
                if sent == len(view):
                    backlog.popleft()
                else:
                    backlog[0] = view[sent:]
                    await trio.lowlevel.wait_writable(fd)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """As trio's, except that a send the kernel takes whole does not yield."""
        if not self.send_nowait(data):
            await self.flush()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self._fd())

    async def send_eof(self) -> None:
        await self.flush()
        await self._stream.send_eof()

    async def aclose(self) -> None:
        self._backlog.clear()
        await self._stream.aclose()  # trio wakes any task waiting on the fd with ClosedResourceError


def _write(fd: int, data: bytes | bytearray | memoryview) -> int:
    """``os.write`` that answers 0 for a full socket buffer and trio's error for a broken socket."""
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError as exc:  # EPIPE, ECONNRESET
        raise trio.BrokenResourceError(_os_reason(exc)) from exc


def _os_reason(exc: OSError) -> str:
    return f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror}"


class WebSocket:
    """One open WebSocket over a trio stream (see the module docstring).

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

    def __init__(self, stream: trio.abc.Stream, proto: Protocol) -> None:
        if type(stream) is trio.SocketStream:
            stream = FdStream(stream)
        self.stream = stream
        # None for a TLS stream: its sends go through the lock and may yield
        self._fd_stream = stream if isinstance(stream, FdStream) else None
        self._eof_due = False  # the protocol asked for a half-close once the data is out
        self._proto = proto
        self._send_lock = trio.Lock()
        self._messages: deque[str | bytes] = deque()
        self._fragments: list[bytes | bytearray] | None = None
        self._fragment_text = False
        self._closed: tuple[int, str | None] | None = None
        self._receiving = False
        self._closer_reading = False  # aclose() itself is reading, for the peer's close frame
        self._parked: tuple[Reactor, int, trio.lowlevel.Task] | None = None  # a receive_via's park
        self._waiters = 0  # tasks parked until the receiving task is done (see _wait_for_reader)
        self._lot = trio.lowlevel.ParkingLot()
        self._eof_sent = False
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

    # -------------------------------------------------------------- receive

    async def receive_message(self) -> str | bytes:
        """The next whole message: ``str`` (text) or ``bytes`` (binary)."""
        messages = self._messages
        while not messages:
            if self._closed is not None:
                raise ConnectionClosed(*self._closed)
            if self._closer_reading:
                # aclose() is reading for the close frame (it got there first: its close
                # frame went out without yielding): wait for it rather than fail as a second reader
                await self._wait_for_reader()
            else:
                await self._receive_some()
        return messages.popleft()

    def take_pending(self) -> list[str | bytes]:
        """The messages read but not yet received, taken off the queue — for a peer that closed right
        after sending them: they were sent, so whoever serves the connection still handles them."""
        out = list(self._messages)
        self._messages.clear()
        return out

    async def receive_via(self, reactor: Reactor, handle: Callable[[str | bytes], bool]) -> bool:
        """Let ``reactor`` read this connection and give each message to ``handle``
        in the reactor's task, synchronously, while this task stays parked.

        Why: waking the receiving task for every 20 ms frame costs more CPU than
        the frame's own work in the mock (see :mod:`callsim.simulator.net.reactor`).

        ``handle`` returns True to go on, False when the receiving task must act
        (something to await): the messages after that one stay queued for
        :meth:`receive_message`. This returns when ``handle`` returned False,
        when the connection closed, or when something read needs writing that
        the kernel did not take at once (a pong, the close echo): the caller then
        awaits :meth:`flush` and goes on with :meth:`receive_message`, which
        reports the close. An exception from ``handle`` is raised here.

        Returns False at once, doing nothing, when the reactor cannot be used:
        a TLS stream, another task receiving, messages already queued, or a
        closed connection.

        :meth:`aclose` wakes a task parked here when it closes the socket, as
        trio wakes a task waiting in :meth:`receive_message`. A socket closed
        behind this object's back (the trio stream closed directly) does not:
        whoever does that must cancel the parked task.
        """
        fd_stream = self._fd_stream
        if fd_stream is None or self._receiving or self._messages or self._closed is not None:
            return False
        messages = self._messages

        def on_readable() -> bool:
            # The messages that came in the same read as a close frame are handled first: a peer
            # that sends its last appends and closes at once must lose none of them (rule 7).
            go_on = self._read_nowait(fd_stream)
            while messages:
                if not handle(messages.popleft()):
                    return False
            return go_on

        self._receiving = True  # aclose() from another task waits for this reader, as for a receive
        fd = fd_stream._fd()
        self._parked = (reactor, fd, trio.lowlevel.current_task())
        try:
            await reactor.wait(fd, on_readable)
        finally:
            self._parked = None
            self._receiving = False
            if self._waiters:
                self._lot.unpark_all()
        return True

    def _read_nowait(self, fd_stream: FdStream) -> bool:
        """:meth:`_receive_some` without waiting: one read, its frames handled and
        the protocol's replies written if the kernel takes them whole. False
        when the receiving task must take over (closed, or replies left to flush)."""
        try:
            data = fd_stream.read_nowait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if data is None:  # nothing there after all
            return True
        self._take(data)  # an aclose() waiting for the peer's close is unparked by receive_via once closed
        if self._proto.writes:
            try:
                if not self._send_queued():
                    return False
            except ConnectionClosed:
                return False
        return self._closed is None

    async def _wait_for_reader(self) -> None:
        """Park until the task that is reading has handled what it read."""
        self._waiters += 1
        try:
            await self._lot.park()
        finally:
            self._waiters -= 1

    async def _receive_some(self) -> None:
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving from this WebSocket")
        self._receiving = True
        try:
            try:
                data = await self.stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            self._take(data)
            if self._proto.writes:  # pongs, the close echo, EOF
                await self._send_replies()
        finally:
            self._receiving = False
            if self._waiters:
                self._lot.unpark_all()

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
        ``StreamReader.read_exact``), about 11 µs a frame. The protocol has been
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

    async def _send_replies(self) -> None:
        """Write what receiving queued (pongs, the close echo, EOF); a broken socket
        is for the next receive to report."""
        try:
            await self._flush()
        except ConnectionClosed:
            pass

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

    async def send_text(self, message: str | bytes) -> None:
        """Send a text message (``bytes`` are taken as already UTF-8 encoded)."""
        self._frame_texts((message,))
        await self._flush()

    async def send_texts(self, messages: Iterable[str | bytes]) -> None:
        """Send several text messages in one write."""
        self._frame_texts(messages)
        if self._proto.writes:
            await self._flush()

    def send_texts_nowait(self, messages: Iterable[str | bytes]) -> bool:
        """Send several text messages in one write from synchronous code.

        True when the kernel took every byte. False when some must still be
        written (a full socket buffer, a write another task is finishing, a TLS
        stream): they are queued in order, and the caller must ``await flush()``
        before it counts them as sent. Raises :class:`ConnectionClosed`.
        """
        self._frame_texts(messages)
        return self._send_queued()

    def _frame_texts(self, messages: Iterable[str | bytes]) -> None:
        """Queue a text frame per message behind what the protocol queued (pongs, a close).

        Why not ``proto.send_text``: it builds, checks and serializes a ``Frame``
        object per message, 2.9 µs for 300 bytes (4.6 µs masked) against 0.5 µs
        (1.7 µs) for :meth:`_text_frame`. The protocol's state still decides, as
        there: once a close was sent or received, or the connection failed, this
        raises.
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

    async def send_bytes(self, message: bytes | bytearray | memoryview) -> None:
        """Send a binary message."""
        try:
            self._proto.send_binary(message)
        except InvalidState:
            raise self._exc() from None
        await self._flush()

    async def send_message(self, message: str | bytes) -> None:
        """trio-websocket's spelling: ``str`` as text, ``bytes`` as binary."""
        if isinstance(message, str):
            await self.send_text(message)
        else:
            await self.send_bytes(message)

    async def ping(self, payload: bytes = b"") -> None:
        try:
            self._proto.send_ping(payload)
        except InvalidState:
            raise self._exc() from None
        await self._flush()

    async def flush(self) -> None:
        """Write out whatever is queued (see :meth:`send_texts_nowait`)."""
        await self._flush()

    def _send_queued(self) -> bool:
        """Hand what the protocol queued to the :class:`FdStream`, in order; True
        when all of it (and anything queued before) is written. Never yields."""
        fd_stream = self._fd_stream
        if fd_stream is None:
            return not self._proto.writes
        chunks = self._proto.data_to_send()
        if chunks and chunks[-1] == b"":  # SEND_EOF: half-close after the data
            chunks.pop()
            self._eof_due = not self._eof_sent
        try:
            if chunks:
                done = fd_stream.send_nowait(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            else:
                done = not fd_stream._backlog
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._set_closed()
            raise self._exc() from exc
        return done and not self._eof_due

    async def _flush(self) -> None:
        """Write what the protocol queued, in order, one writer at a time."""
        fd_stream = self._fd_stream
        if fd_stream is not None:
            if self._send_queued():
                return
            try:
                await fd_stream.flush()
                if self._eof_due:
                    self._eof_due = False
                    self._eof_sent = True
                    await fd_stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._set_closed()
                raise self._exc() from exc
            return
        chunks = self._proto.data_to_send()
        if not chunks:
            return
        eof = False
        if chunks[-1] == b"":  # SEND_EOF: half-close after the data
            chunks.pop()
            eof = True
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        async with self._send_lock:
            try:
                if data:
                    await self.stream.send_all(data)
                if eof and not self._eof_sent:
                    self._eof_sent = True
                    send_eof = getattr(self.stream, "send_eof", None)
                    if send_eof is not None:  # SocketStream; an SSLStream has none
                        await send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._set_closed()
                raise self._exc() from exc

    # ---------------------------------------------------------------- close

    async def aclose(self, code: int = 1000, reason: str = "", timeout: float = CLOSE_TIMEOUT) -> None:
        """Close handshake (send ``code``/``reason``, wait for the peer's close up to
        ``timeout`` s), then close the socket — always, even when cancelled (as
        trio-websocket: a cancelled caller does not wait for the handshake). Idempotent."""
        try:
            await self._close_handshake(code, reason, timeout)
        finally:
            self._set_closed()
            await self._close_stream()

    async def _close_stream(self) -> None:
        """Close the socket; shielded, but bounded (a TLS close_notify may not get out)."""
        if self._parked is not None:  # a task parked in receive_via: the reactor would never wake it
            reactor, fd, task = self._parked
            reactor.release(fd, task)
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await self.stream.aclose()

    async def _close_handshake(self, code: int, reason: str, timeout: float) -> None:
        with trio.move_on_after(timeout):
            proto = self._proto
            if self._closed is None and proto.state is OPEN:
                try:
                    proto.send_close(code, reason or "")
                    await self._flush()
                except ConnectionClosed:
                    pass
                while self._closed is None:
                    if self._receiving:  # another task is receiving: it will see the close
                        await self._wait_for_reader()
                    else:
                        self._closer_reading = True
                        try:
                            await self._receive_some()
                        finally:
                            self._closer_reading = False

    async def __aenter__(self) -> WebSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# ---------------------------------------------------------------- client


async def connect(
    url: str,
    extra_headers: Sequence[tuple[bytes | str, bytes | str]] = (),
    *,
    connect_timeout: float = 10.0,
    max_message_size: int | None = DEFAULT_MAX_MESSAGE,
    ssl_context: ssl.SSLContext | None = None,
    subprotocols: Sequence[str] | None = None,
) -> WebSocket:
    """Open ``ws://`` or ``wss://`` ``url``: TCP (+TLS), HTTP upgrade, within ``connect_timeout``.

    Raises :class:`ConnectionRejected` (status, headers, body) when the server
    answers something else than 101, :class:`ConnectionTimeout`, another
    :class:`HandshakeError`, or ``OSError`` from the connection itself.
    """
    uri = parse_uri(url)
    try:
        with trio.fail_after(connect_timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(uri.host, uri.port)
            try:
                if uri.secure:
                    stream = trio.SSLStream(stream, ssl_context or ssl.create_default_context(),
                                            server_hostname=uri.host, https_compatible=True)
                    await stream.do_handshake()
                return await _client_handshake(stream, uri, extra_headers, max_message_size, subprotocols)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
    except trio.TooSlowError:
        raise ConnectionTimeout(f"no WebSocket after {connect_timeout:g} s") from None
    except trio.BrokenResourceError as exc:  # TLS failures arrive wrapped like this
        cause = exc.__cause__ or exc
        raise HandshakeError(f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__) from exc


async def _client_handshake(stream: trio.abc.Stream, uri: object, extra_headers: Sequence[tuple[bytes | str, bytes | str]],
                            max_message_size: int | None, subprotocols: Sequence[str] | None) -> WebSocket:
    proto = ClientProtocol(uri, max_size=max_message_size, logger=_PROTO_LOG,  # type: ignore[arg-type]
                           subprotocols=subprotocols)  # type: ignore[arg-type]
    request = proto.connect()
    for k, v in extra_headers:
        request.headers[k.decode("latin-1") if isinstance(k, bytes) else k] = (
            v.decode("latin-1") if isinstance(v, bytes) else v)
    proto.send_request(request)
    await stream.send_all(b"".join(proto.data_to_send()))
    events: list[object] = []
    # the protocol gets the response head only: frames the server sent right behind
    # its 101 (``rest``) are the WebSocket's, whose lane needs the protocol between frames
    tail: bytes | None = b""  # the head's last bytes so far; None once it is complete
    rest = b""
    while not events:
        data = await stream.receive_some(RECEIVE_BYTES)
        if data and tail is not None:
            end = _head_end(tail, data)
            if end < 0:
                tail = (tail + data)[-3:]
            else:
                data, rest, tail = data[:end], data[end:], None
        if data:
            proto.receive_data(data)
        else:
            proto.receive_eof()
        if rest and proto.state is not OPEN:  # the body of a refusal: the protocol's
            proto.receive_data(rest)
            rest = b""
        events = proto.events_received()
        if not events and (proto.handshake_exc is not None or not data):
            exc = proto.handshake_exc
            cause = exc.__cause__ if exc is not None and exc.__cause__ is not None else exc
            raise HandshakeError(f"{exc}: {cause}" if cause is not exc else str(exc or "connection closed")) from exc
    response = events[0]
    assert isinstance(response, Response)
    exc = proto.handshake_exc
    if isinstance(exc, InvalidStatus):
        raise ConnectionRejected(response.status_code, response.headers, response.body)
    if exc is not None:
        raise HandshakeError(str(exc)) from exc
    ws = WebSocket(stream, proto)
    if rest:
        ws._take(rest)
        await ws._send_replies()  # a pong or close echo those frames asked for
    return ws


def _head_end(tail: bytes, data: bytes) -> int:
    """Where in ``data`` an HTTP head ends (just past its blank line) given the bytes of
    the head read before it (their last 3 are enough); -1 when it does not end there."""
    end = (tail + data).find(b"\r\n\r\n")
    return end if end < 0 else end + 4 - len(tail)


@asynccontextmanager
async def open_websocket(url: str, extra_headers: Sequence[tuple[bytes | str, bytes | str]] = (), *,
                         connect_timeout: float = 10.0, max_message_size: int | None = DEFAULT_MAX_MESSAGE,
                         ssl_context: ssl.SSLContext | None = None, subprotocols: Sequence[str] | None = None,
                         close_timeout: float = CLOSE_TIMEOUT) -> AsyncIterator[WebSocket]:
    """``async with open_websocket(url) as ws:`` — :func:`connect`, then :meth:`WebSocket.aclose` (1000)."""
    ws = await connect(url, extra_headers, connect_timeout=connect_timeout, max_message_size=max_message_size,
                       ssl_context=ssl_context, subprotocols=subprotocols)
    try:
        yield ws
    finally:
        await ws.aclose(timeout=close_timeout)


# ---------------------------------------------------------------- server


class ServerHandshake:
    """A WebSocket upgrade request whose head the server already read off ``stream``.

    ``head`` is every byte read so far (the head and anything after it). Raises
    :class:`HandshakeError` when it is not a valid HTTP request.
    """

    def __init__(self, stream: trio.abc.Stream, head: bytes, *,
                 max_message_size: int | None = DEFAULT_MAX_MESSAGE) -> None:
        self.stream = stream
        self._proto = ServerProtocol(max_size=max_message_size, logger=_PROTO_LOG)
        # frames a client sent right behind its request (it must not, but may) are the
        # WebSocket's, handled once the 101 is out: the protocol gets the head only
        end = _head_end(b"", head)
        self._rest = b"" if end < 0 else head[end:]
        self._proto.receive_data(head if end < 0 else head[:end])
        events = self._proto.events_received()
        if not events or not isinstance(events[0], Request):
            exc = self._proto.handshake_exc
            raise HandshakeError(str(exc.__cause__ or exc) if exc else "incomplete request head")
        self.request: Request = events[0]
        self.path: str = self.request.path
        self.headers: Headers = self.request.headers
        self.proposed_subprotocols: list[str] = [
            p for value in self.headers.get_all("Sec-WebSocket-Protocol") for p in _subprotocols(value)]

    async def accept(self, subprotocol: str | None = None) -> WebSocket:
        """Answer 101 (choosing ``subprotocol`` if given). A malformed upgrade is
        answered 400/426 by the protocol and raises :class:`HandshakeError`."""
        proto = self._proto
        proto.available_subprotocols = [subprotocol] if subprotocol else None  # type: ignore[list-item]
        response = proto.accept(self.request)
        proto.send_response(response)
        ws = WebSocket(self.stream, proto)
        await ws._flush()
        if response.status_code != 101:
            raise HandshakeError(f"bad upgrade request: {proto.handshake_exc}")
        if self._rest:
            ws._take(self._rest)
            await ws._send_replies()  # a pong or close echo those frames asked for
        return ws

    async def reject(self, status: int, *, body: bytes = b"",
                     extra_headers: Sequence[tuple[bytes | str, bytes | str]] = ()) -> None:
        """Answer ``status`` with ``body``, then half-close."""
        headers = Headers([("Content-Length", str(len(body))), ("Connection", "close")])
        for k, v in extra_headers:
            headers[k.decode("latin-1") if isinstance(k, bytes) else k] = (
                v.decode("latin-1") if isinstance(v, bytes) else v)
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        self._proto.send_response(Response(status, phrase, headers, body))
        try:
            await WebSocket(self.stream, self._proto)._flush()
        except ConnectionClosed:
            pass


def _subprotocols(value: str) -> list[str]:
    try:
        return [str(p) for p in parse_subprotocol(value)]
    except Exception:  # a malformed header: fall back to a plain split
        return [p.strip() for p in value.split(",") if p.strip()]

