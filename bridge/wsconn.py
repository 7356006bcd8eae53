"""A lean trio WebSocket: the `websockets` library's sans-IO protocol over a trio stream.

Why not trio-websocket (wsproto) or hypercorn's ASGI WebSocket: a call moves
~120 WebSocket messages a second through the bridge, so the per-message cost
bounds how many calls a core carries. Measured here on 300-byte text frames
(receive + send): wsproto ≈ 55 µs, `websockets`' sans-IO ``Protocol`` (with its C
unmasking) ≈ 16 µs; hypercorn adds an ASGI dict, a ``fail_after`` scope and a
task hop per message on top. This module adds no task and no queue: the caller
of :meth:`WSConnection.receive_message` reads the socket itself.

Both legs of a call use it: the Twilio leg as a server (the handshake is done in
:mod:`.frontdoor`) and the OpenAI leg as a client (:func:`connect`, ``ws://`` or
``wss://``). The simulator uses its own WebSocket code (design.md rule 1).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import trio
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidStatus, SecurityError
from websockets.frames import (  # apply_mask: C when built
    CloseCode,
    Frame,
    Opcode,
    apply_mask,
)
from websockets.http11 import MAX_LINE_LENGTH, Request, Response
from websockets.protocol import Protocol, Side, State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from .httphead import MAX_HEAD_BYTES, split_head

RECV_BYTES = 65536
# websockets logs every open/close at INFO; the bridge logs its calls itself
PROTOCOL_LOG = logging.getLogger("callsim.bridge.websocket")
PROTOCOL_LOG.setLevel(logging.WARNING)
CLOSE_TIMEOUT_S = 0.5


class ConnectionClosed(Exception):
    """The WebSocket is closed (by the peer, by us, or the socket broke: code 1006)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


class HandshakeFailed(Exception):
    """The server did not switch protocols; ``status_code`` is None if there was no HTTP answer."""

    def __init__(self, message: str, status_code: int | None = None, body: bytes = b"") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class FdStream(trio.abc.HalfCloseableStream):
    """A connected TCP socket read and written with ``os.read``/``os.write`` on its fd.

    Why: in the profile of the bridge at 25 calls, trio's ``SocketStream`` layers
    (conflict detector context managers, ``_nonblocking_helper``, and a
    reschedule after *every* send that completed at once) were about half of all
    CPU. Here a send that the kernel takes whole returns without yielding (a
    bridge's sends almost always fit), and a read yields only by waiting for the
    fd or once when data was already there, so each call's loop still
    checkpoints on every message.

    Several tasks may send: a write that would block takes ``_send_lock``, and
    a sender that finds it held queues behind it, so bytes keep their order.
    The fd number is never touched after :meth:`aclose` (it may be reused).
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.socket = stream.socket
        self._fd = stream.socket.fileno()
        self._send_lock = trio.Lock()
        self._closed = False
        self._drained = False  # the last read returned less than asked: the socket had no more

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Read what is there, waiting for the fd only when needed.

        After a short read the socket is known to be empty, so the next call
        waits for readability first instead of paying for a read that fails
        with EAGAIN (a syscall and a Python exception per message).
        """
        want = max_bytes or RECV_BYTES
        waited = False
        if self._drained:
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            await trio.lowlevel.wait_readable(self._fd)
            waited = True
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            try:
                data = os.read(self._fd, want)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._fd)
                waited = True
                continue
            except OSError as exc:  # ECONNRESET and the like
                raise trio.BrokenResourceError(str(exc)) from exc
            self._drained = len(data) < want
            if not waited:
                await trio.lowlevel.checkpoint()
            return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._send_lock.locked():  # another sender is blocked mid-write: keep the order
            async with self._send_lock:
                await self._send_rest(memoryview(data))
            return
        view = memoryview(data)
        sent = self._write(view)
        if sent == len(view):
            return
        async with self._send_lock:
            await self._send_rest(view[sent:])

    def _write(self, view: memoryview) -> int:
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        try:
            return os.write(self._fd, view)
        except BlockingIOError:
            return 0
        except OSError as exc:  # EPIPE, ECONNRESET
            raise trio.BrokenResourceError(str(exc)) from exc

    async def _send_rest(self, view: memoryview) -> None:
        while view:
            sent = self._write(view)
            view = view[sent:]
            if view:
                await trio.lowlevel.wait_writable(self._fd)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self._fd)

    async def send_eof(self) -> None:
        if not self._closed:
            await self._stream.send_eof()

    async def aclose(self) -> None:
        self._closed = True
        await self._stream.aclose()  # trio wakes any task waiting on the fd with ClosedResourceError


class WSConnection:
    """One open WebSocket on ``stream``; ``protocol`` has finished its handshake.

    Sends may come from several tasks of a call: each serialises a whole frame
    and writes it through :class:`FdStream` (which keeps the order of senders)
    or, on any other stream, under one lock, so frames never interleave and
    trio's conflict detector never fires. Receiving is for one task at a time.

    **The fast lane.** Received bytes are cut into whole frames here (the
    header says how long a frame is). A complete, unfragmented text or binary
    frame on an open connection — nearly every frame a call moves — becomes a
    message directly: header read, payload unmasked by ``websockets``' own
    ``apply_mask``. Every other frame (ping, pong, close, fragments, reserved
    bits, wrong masking, an oversized length) is handed *whole* to the
    ``websockets`` protocol, which answers it as before; since it only ever
    sees whole frames, it is always at a frame boundary and the two never
    disagree about where a frame starts. Likewise a text frame is sent by
    writing its header and payload, unless the protocol has something queued
    or a fragmented send is under way. Why, measured on a 384-byte Twilio media
    frame: receiving costs 5.1 µs in the lane against 10.8 µs in the protocol's
    generator-based parser, and sending 1.2 µs (2.6 µs masked) against 3.5 µs
    (5.4 µs). It is tested to give the same messages and the same bytes as the
    protocol alone.
    """

    def __init__(self, stream: trio.abc.Stream, protocol: Protocol) -> None:
        if isinstance(stream, trio.SocketStream):
            stream = FdStream(stream)
        self.stream = stream
        self.peer = peer_of(stream)  # "host:port": names the connection in logs before anything else can
        self.protocol = protocol
        self._send_lock = trio.Lock()
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self._pending: list[Frame] = []  # frames the protocol parsed, not yet returned
        self._eof = False
        self._receiving = False  # a task is blocked in receive_message (aclose must not read too)
        # (code, reason) once closed. Never the exception itself: a raised exception
        # carries its traceback, whose frames hold this connection (and the call's
        # driver and core above it) — a reference cycle that only a full garbage
        # collection frees. Every raise builds a fresh ConnectionClosed instead.
        self._closed: tuple[int, str] | None = None
        self._buf = bytearray()  # received bytes not yet cut into frames
        self._server = protocol.side is Side.SERVER  # a server receives masked frames, sends unmasked

    # ------------------------------------------------------------ receive

    async def receive_message(self) -> str | bytes:
        """The next whole message (text as ``str``); raises :class:`ConnectionClosed`."""
        while True:
            while self._pending:
                message = self._frame(self._pending.pop(0))
                if message is not None:
                    return message
            if self.protocol.writes:
                await self._flush()  # pongs, close replies, the close after a protocol error
            if self._buf and not self._eof and self._closed is None:
                message = self._cut()
                if message is not None:
                    return message
                if self._pending or self.protocol.writes or self._eof:
                    continue
            if self._closed is None and self._eof:
                self._closed = self._close_args()
            if self._closed is not None:
                await self._flush()  # e.g. the close frame of a failed UTF-8 check
                raise ConnectionClosed(*self._closed)
            self._receiving = True
            try:
                data = await self.stream.receive_some(RECV_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise self._close_now(CloseCode.ABNORMAL_CLOSURE, f"socket error: {type(exc).__name__}")
            finally:
                self._receiving = False
            if data:
                self._buf += data
                continue
            p = self.protocol  # EOF: a partial frame left over is the protocol's to judge (1006)
            if self._buf:
                p.receive_data(bytes(self._buf))
                self._buf.clear()
            p.receive_eof()
            self._pending = p.events_received()  # type: ignore[assignment]
            await self._flush()
            self._eof = True

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

    def _close_now(self, code: int, reason: str) -> ConnectionClosed:
        self._closed = (code, reason)
        return ConnectionClosed(code, reason)

    # ------------------------------------------------------------ send

    async def send_text(self, text: str | bytes) -> None:
        """Send one text frame; raises :class:`ConnectionClosed` once the socket is closed."""
        p = self.protocol
        if self._closed is not None or p.state is not State.OPEN:
            raise ConnectionClosed(*(self._closed or self._close_args()))
        data = text.encode() if isinstance(text, str) else text
        if p.writes or p.expect_continuation_frame:
            p.send_text(data)  # keep the order of what the protocol queued; it judges fragments
            await self._flush()
            return
        await self._write(text_frame(data, mask=not self._server))

    async def _write(self, frame: bytes) -> None:
        """One whole frame: FdStream keeps the order of senders itself; other streams take the lock."""
        try:
            if isinstance(self.stream, FdStream):
                await self.stream.send_all(frame)
                return
            async with self._send_lock:
                await self.stream.send_all(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._close_now(CloseCode.ABNORMAL_CLOSURE, f"socket error: {type(exc).__name__}")

    async def _flush(self) -> None:
        chunks = self.protocol.data_to_send()
        if not chunks:
            return
        if len(chunks) == 1 and chunks[0]:  # one frame (a pong, a close): no EOF to send after it
            await self._write(chunks[0])
            return
        try:
            async with self._send_lock:
                for chunk in _coalesce(chunks):
                    if chunk:
                        await self.stream.send_all(chunk)
                    elif isinstance(self.stream, trio.abc.HalfCloseableStream):
                        await self.stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._close_now(CloseCode.ABNORMAL_CLOSURE, f"socket error: {type(exc).__name__}")

    async def aclose(self, code: int = 1000, reason: str = "", timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Close handshake (bounded by ``timeout``), then the socket. Never raises.

        If another task is blocked reading, the peer's answer is not waited for
        (two readers on one stream is an error in trio): the close frame goes
        out, the socket is closed, and that reader gets :class:`ConnectionClosed`.
        """
        with trio.CancelScope(shield=True):
            with trio.move_on_after(timeout):
                try:
                    if self.protocol.state is State.OPEN and self._closed is None:
                        self.protocol.send_close(code, reason[:120])
                        await self._flush()
                    while not self._receiving:  # until the peer's close frame (or EOF)
                        await self.receive_message()  # messages after our close are dropped
                except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
            if self._closed is None:
                self._closed = (code, reason)
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, OSError):
                pass


def peer_of(stream: object) -> str:
    """The remote ``host:port`` of a socket stream (plain or TLS), or "?" when there is none."""
    sock = getattr(stream, "socket", None)
    if sock is None:
        sock = getattr(getattr(stream, "transport_stream", None), "socket", None)
    try:
        host, port = sock.getpeername()[:2]  # type: ignore[union-attr]
    except (AttributeError, OSError, TypeError, ValueError):
        return "?"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


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


def _coalesce(chunks: Iterable[bytes]) -> list[bytes]:
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


async def connect(url: str, headers: Iterable[tuple[str | bytes, str | bytes]], *, timeout: float,
                  max_message_size: int, ssl_context: ssl.SSLContext | None = None) -> WSConnection:
    """Open a client WebSocket (``ws://`` or ``wss://``) within ``timeout`` seconds.

    Raises :class:`HandshakeFailed` (with the HTTP status when there was one) or
    ``OSError`` when the server cannot be reached.
    """
    uri = parse_uri(url)
    protocol = ClientProtocol(uri, max_size=max_message_size, logger=PROTOCOL_LOG)
    with trio.fail_after(timeout):
        stream: trio.abc.Stream = await trio.open_tcp_stream(uri.host, uri.port)
        try:
            if uri.secure:
                stream = trio.SSLStream(stream, ssl_context or ssl.create_default_context(), server_hostname=uri.host,
                                        https_compatible=True)
                await stream.do_handshake()
            request = protocol.connect()
            for name, value in headers:
                request.headers[name.decode() if isinstance(name, bytes) else name] = (
                    value.decode() if isinstance(value, bytes) else value)
            protocol.send_request(request)
            conn = WSConnection(stream, protocol)
            await conn._flush()  # the request
            raw, head_done = bytearray(), False
            while protocol.handshake_exc is None and protocol.state is State.CONNECTING:
                data = await stream.receive_some(RECV_BYTES)
                if not data:
                    protocol.receive_eof()
                    break
                if head_done:  # a refusal's body
                    protocol.receive_data(data)
                    continue
                raw += data
                head, rest = split_head(raw)
                if head:
                    head_done = True
                    protocol.receive_data(head)
                    if protocol.state is State.CONNECTING and rest:
                        protocol.receive_data(rest)
                    else:
                        conn._buf = bytearray(rest)  # frames that came with the 101: the fast lane's
            events = protocol.events_received()
            if protocol.state is not State.OPEN:
                raise _handshake_failure(protocol, events, url)
            return conn
        except BaseException:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            raise


def _handshake_failure(protocol: ClientProtocol, events: list, url: str) -> HandshakeFailed:
    exc = protocol.handshake_exc
    response = next((e for e in events if isinstance(e, Response)), None)
    if isinstance(exc, InvalidStatus):
        response = exc.response
    if response is not None and response.status_code != 101:
        return HandshakeFailed(f"HTTP {response.status_code} from {urlsplit(url).netloc}",
                               response.status_code, response.body or b"")
    if isinstance(exc, InvalidHandshake):
        return HandshakeFailed(f"bad handshake: {exc}")
    return HandshakeFailed("the server closed the connection during the handshake")


async def accept(stream: trio.abc.Stream, head: bytes, *, max_message_size: int,
                 refuse: Callable[[Request], tuple[int, str] | None]) -> WSConnection:
    """Answer a WebSocket upgrade whose request head (and whatever followed it) was read already.

    ``refuse`` sees the request and returns (HTTP status, body) to turn it down,
    or None. Raises :class:`HandshakeFailed` once the refusal, or the 400/426 for
    a request that is not a valid upgrade (400/414/431 for one that does not
    parse: :func:`head_error`), has been sent.
    """
    protocol = ServerProtocol(max_size=max_message_size, logger=PROTOCOL_LOG)
    request_head, rest = split_head(head)
    too_big = len(request_head) > MAX_HEAD_BYTES  # refused as the front door refuses it
    if not too_big:
        protocol.receive_data(request_head or head)
    events = protocol.events_received()
    request = events[0] if events and isinstance(events[0], Request) else None
    if request is None:
        # for a head it cannot parse the protocol only half-closes: answer as HTTP servers do
        response = protocol.reject(*((431, "request head too large\n") if too_big
                                     else head_error(head, protocol.handshake_exc)))
        try:
            await stream.send_all(response.serialize())
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise HandshakeFailed("the client went away during the handshake") from None
        why = f"request head over {MAX_HEAD_BYTES} bytes" if too_big else _why(protocol.handshake_exc)
        raise HandshakeFailed(f"HTTP {response.status_code}: {why}", response.status_code)
    refusal = refuse(request)
    response = protocol.reject(*refusal) if refusal is not None else protocol.accept(request)
    protocol.send_response(response)
    conn = WSConnection(stream, protocol)
    if request_head:
        conn._buf = bytearray(rest)  # frames sent right behind the upgrade: the fast lane's
    try:
        await conn._flush()
    except ConnectionClosed:
        raise HandshakeFailed("the client went away during the handshake") from None
    if response.status_code != 101:
        raise HandshakeFailed(f"HTTP {response.status_code}: {_why(protocol.handshake_exc)}", response.status_code)
    return conn


def _why(exc: Exception | None) -> str:
    if exc is None:
        return "refused"
    return f"{exc}: {exc.__cause__}" if exc.__cause__ is not None else str(exc)


def head_error(head: bytes, exc: Exception | None) -> tuple[int, str]:
    """(status, body) for a WebSocket request head the protocol could not parse.

    ``websockets`` limits a line to MAX_LINE_LENGTH bytes and a head to
    MAX_NUM_HEADERS headers (both 8 KiB / 128, as nginx and h11 roughly do):
    past them the answer is 414 (the request line) or 431 (the headers), as
    RFC 9110 and RFC 6585 name them; anything else unparseable is 400.
    """
    cause = exc.__cause__ if exc is not None else None
    if isinstance(cause, SecurityError):
        if len(head.split(b"\r\n", 1)[0]) + 2 > MAX_LINE_LENGTH:  # the limit counts the CRLF
            return 414, "request line too long\n"
        return 431, f"request header fields too large: {cause}\n"
    if exc is None:  # nothing wrong was found: the head never ended
        return (431, "request head too large\n") if len(head) > MAX_LINE_LENGTH else (400, "incomplete request head\n")
    return 400, f"bad request: {cause or exc}\n"


__all__ = ["ConnectionClosed", "HandshakeFailed", "WSConnection", "accept", "connect", "text_frame"]
