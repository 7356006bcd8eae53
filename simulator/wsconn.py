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
"""

from __future__ import annotations

import http
import logging
import ssl
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator, Iterable, Sequence

import trio
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState, InvalidStatus
from websockets.frames import OP_BINARY, OP_CONT, OP_TEXT, CloseCode
from websockets.headers import parse_subprotocol
from websockets.http11 import Request, Response
from websockets.protocol import OPEN, Protocol
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

__all__ = [
    "ConnectionClosed", "ConnectionRejected", "ConnectionTimeout", "HandshakeError",
    "ServerHandshake", "WebSocket", "connect", "open_websocket",
]

# websockets logs "connection open"/"rejected" at INFO for every connection: keep it quiet.
_PROTO_LOG = logging.getLogger("callsim.wsconn.protocol")
_PROTO_LOG.setLevel(logging.WARNING)

RECEIVE_BYTES = 65536
DEFAULT_MAX_MESSAGE = 2**20
CLOSE_TIMEOUT = 2.0
ABNORMAL_CLOSURE = 1006  # no close frame: the socket broke (RFC 6455 7.1.5)


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


class WebSocket:
    """One open WebSocket over a trio stream (see the module docstring)."""

    def __init__(self, stream: trio.abc.Stream, proto: Protocol, events: Iterable[object] = ()) -> None:
        self.stream = stream
        self._proto = proto
        self._send_lock = trio.Lock()
        self._messages: deque[str | bytes] = deque()
        self._fragments: list[bytes | bytearray] | None = None
        self._fragment_text = False
        self._closed: tuple[int, str | None] | None = None
        self._receiving = False
        self._waiters = 0  # tasks in aclose() waiting for the receiving task to see the close
        self._lot = trio.lowlevel.ParkingLot()
        self._eof_sent = False
        if events:
            self._handle(events)

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
            await self._receive_some()
        return messages.popleft()

    async def _receive_some(self) -> None:
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving from this WebSocket")
        self._receiving = True
        try:
            try:
                data = await self.stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            proto = self._proto
            if data:
                proto.receive_data(data)
            else:
                proto.receive_eof()
            events = proto.events_received()
            if events:
                self._handle(events)
            if not data or proto.close_rcvd is not None or proto.parser_exc is not None:
                self._set_closed()
            if proto.writes:  # pongs, the close echo, EOF
                try:
                    await self._flush()
                except ConnectionClosed:
                    pass
        finally:
            self._receiving = False
            if self._waiters:
                self._lot.unpark_all()

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
        try:
            self._proto.send_text(message.encode() if isinstance(message, str) else message)
        except InvalidState:
            raise self._exc() from None
        await self._flush()

    async def send_texts(self, messages: Iterable[str | bytes]) -> None:
        """Send several text messages in one write."""
        proto = self._proto
        try:
            for m in messages:
                proto.send_text(m.encode() if isinstance(m, str) else m)
        except InvalidState:
            raise self._exc() from None
        if proto.writes:
            await self._flush()

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

    async def _flush(self) -> None:
        """Write what the protocol queued, in order, one writer at a time."""
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
                        self._waiters += 1
                        try:
                            await self._lot.park()
                        finally:
                            self._waiters -= 1
                    else:
                        await self._receive_some()

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
    while not events:
        data = await stream.receive_some(RECEIVE_BYTES)
        if data:
            proto.receive_data(data)
        else:
            proto.receive_eof()
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
    return WebSocket(stream, proto, events[1:])


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
        self._proto.receive_data(head)
        events = self._proto.events_received()
        if not events or not isinstance(events[0], Request):
            exc = self._proto.handshake_exc
            raise HandshakeError(str(exc.__cause__ or exc) if exc else "incomplete request head")
        self.request: Request = events[0]
        self._rest = events[1:]  # frames a client sent before the answer (it must not, but may)
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
            ws._handle(self._rest)
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

