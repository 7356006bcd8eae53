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
from typing import Callable, Iterable
from urllib.parse import urlsplit

import trio
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

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

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        waited = False
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            try:
                data = os.read(self._fd, max_bytes or RECV_BYTES)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._fd)
                waited = True
                continue
            except OSError as exc:  # ECONNRESET and the like
                raise trio.BrokenResourceError(str(exc)) from exc
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

    Sends may come from several tasks of a call: each serialises a frame and
    writes it under one lock, so frames never interleave and trio's conflict
    detector never fires. Receiving is for one task at a time.
    """

    def __init__(self, stream: trio.abc.Stream, protocol: Protocol, pending: Iterable[Frame] = ()) -> None:
        if isinstance(stream, trio.SocketStream):
            stream = FdStream(stream)
        self.stream = stream
        self.protocol = protocol
        self._send_lock = trio.Lock()
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self._pending: list[Frame] = list(pending)  # frames that came with the handshake
        self._eof = False
        self._receiving = False  # a task is blocked in receive_message (aclose must not read too)
        self._closed: ConnectionClosed | None = None

    # ------------------------------------------------------------ receive

    async def receive_message(self) -> str | bytes:
        """The next whole message (text as ``str``); raises :class:`ConnectionClosed`."""
        while True:
            while self._pending:
                message = self._frame(self._pending.pop(0))
                if message is not None:
                    return message
            if self._closed is None and self._eof:
                self._closed = ConnectionClosed(*self._close_args())
            if self._closed is not None:
                await self._flush()  # e.g. the close frame of a failed UTF-8 check
                raise self._closed
            self._receiving = True
            try:
                data = await self.stream.receive_some(RECV_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise self._close_now(CloseCode.ABNORMAL_CLOSURE, f"socket error: {type(exc).__name__}")
            finally:
                self._receiving = False
            p = self.protocol
            if data:
                p.receive_data(data)
            else:
                p.receive_eof()
            self._pending = p.events_received()  # type: ignore[assignment]
            await self._flush()  # pongs, close replies, the close after a protocol error
            # after EOF or a protocol error (e.g. a message over max_size: 1009) no frame follows
            self._eof = not data or p.parser_exc is not None

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
            self._closed = ConnectionClosed(*self._close_args())
        return None  # ping/pong: already answered by the protocol

    def _decode(self, op: Opcode, data: bytes) -> str | bytes | None:
        if op is Opcode.BINARY:
            return data
        try:
            return data.decode()
        except UnicodeDecodeError:  # RFC 6455 §8.1: fail the connection with 1007
            self.protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text frame")
            self._pending = []
            self._closed = ConnectionClosed(CloseCode.INVALID_DATA, "invalid UTF-8 in a text frame")
            return None

    def _close_args(self) -> tuple[int, str]:
        p = self.protocol
        close = p.close_rcvd or p.close_sent
        if close is None:
            return CloseCode.ABNORMAL_CLOSURE, "connection lost"
        return close.code, close.reason

    def _close_now(self, code: int, reason: str) -> ConnectionClosed:
        self._closed = ConnectionClosed(code, reason)
        return self._closed

    # ------------------------------------------------------------ send

    async def send_text(self, text: str | bytes) -> None:
        """Send one text frame; raises :class:`ConnectionClosed` once the socket is closed."""
        if self._closed is not None or self.protocol.state is not State.OPEN:
            raise self._closed or ConnectionClosed(*self._close_args())
        self.protocol.send_text(text.encode() if isinstance(text, str) else text)
        await self._flush()

    async def _flush(self) -> None:
        chunks = self.protocol.data_to_send()
        if not chunks:
            return
        try:
            if len(chunks) == 1 and chunks[0] and isinstance(self.stream, FdStream):
                await self.stream.send_all(chunks[0])  # the hot path: one frame, ordered by FdStream
                return
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
                self._closed = ConnectionClosed(code, reason)
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, OSError):
                pass


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
            while protocol.handshake_exc is None and protocol.state is State.CONNECTING:
                data = await stream.receive_some(RECV_BYTES)
                if not data:
                    protocol.receive_eof()
                    break
                protocol.receive_data(data)
            events = protocol.events_received()
            if protocol.state is not State.OPEN:
                raise _handshake_failure(protocol, events, url)
            conn._pending = [e for e in events if isinstance(e, Frame)]
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
    a request that is not a valid upgrade, has been sent.
    """
    protocol = ServerProtocol(max_size=max_message_size, logger=PROTOCOL_LOG)
    protocol.receive_data(head)
    events = protocol.events_received()
    request = events[0] if events and isinstance(events[0], Request) else None
    response: Response | None = None
    if request is not None:  # else the protocol has queued its 400
        refusal = refuse(request)
        response = protocol.reject(*refusal) if refusal is not None else protocol.accept(request)
        protocol.send_response(response)
    conn = WSConnection(stream, protocol, pending=[e for e in events if isinstance(e, Frame)])
    try:
        await conn._flush()
    except ConnectionClosed:
        raise HandshakeFailed("the client went away during the handshake") from None
    if response is None or response.status_code != 101:
        status = response.status_code if response is not None else 400
        raise HandshakeFailed(f"HTTP {status}: {protocol.handshake_exc or 'refused'}", status)
    return conn


__all__ = ["ConnectionClosed", "HandshakeFailed", "WSConnection", "accept", "connect"]
