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
/ ``os.write`` on the socket's fd, :mod:`.fdstream`): a send the kernel takes
whole does not yield, and :meth:`WebSocket.send_texts_nowait` sends from
synchronous code (the timer service's task) without a task switch.

The framing (the fast lanes that skip the protocol's frame parser and
serializer for plain text and binary frames) is :mod:`.wsframes`, sans-IO;
this module is the I/O, the tasks and the handshakes.
"""

from __future__ import annotations

import http
import logging
import ssl
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, AsyncIterator, Callable, Iterable, Sequence

import trio
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState, InvalidStatus
from websockets.headers import parse_subprotocol
from websockets.http11 import Request, Response
from websockets.protocol import OPEN, Protocol
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from .fdstream import RECEIVE_BYTES, FdStream
from .wsframes import ABNORMAL_CLOSURE as ABNORMAL_CLOSURE  # still importable from here
from .wsframes import ConnectionClosed, FrameLane

if TYPE_CHECKING:
    from .reactor import Reactor

__all__ = [
    "ConnectionClosed", "ConnectionRejected", "ConnectionTimeout", "FdStream", "HandshakeError",
    "ServerHandshake", "WebSocket", "connect", "open_websocket",
]

# websockets logs "connection open"/"rejected" at INFO for every connection: keep it quiet.
_PROTO_LOG = logging.getLogger("callsim.wsconn.protocol")
_PROTO_LOG.setLevel(logging.WARNING)

DEFAULT_MAX_MESSAGE = 2**20
# how long aclose() waits for the peer's close frame after ours: a peer that answers at all
# answers within a round trip; the close code and reason are known before it (the bridge's is equal)
CLOSE_TIMEOUT = 0.5


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


class WebSocket(FrameLane):
    """One open WebSocket over a trio stream (see the module docstring).

    The frames are cut and made by :class:`.wsframes.FrameLane` (the fast
    lanes); this class reads and writes them, parks the receiving task (in
    :meth:`receive_message` or, through a reactor, :meth:`receive_via`) and
    closes the connection.
    """

    def __init__(self, stream: trio.abc.Stream, proto: Protocol) -> None:
        super().__init__(proto)
        if type(stream) is trio.SocketStream:
            stream = FdStream(stream)
        self.stream = stream
        # None for a TLS stream: its sends go through the lock and may yield
        self._fd_stream = stream if isinstance(stream, FdStream) else None
        self._eof_due = False  # the protocol asked for a half-close once the data is out
        self._send_lock = trio.Lock()
        self._receiving = False
        self._closer_reading = False  # aclose() itself is reading, for the peer's close frame
        self._parked: tuple[Reactor, int, trio.lowlevel.Task] | None = None  # a receive_via's park
        self._waiters = 0  # tasks parked until the receiving task is done (see _wait_for_reader)
        self._lot = trio.lowlevel.ParkingLot()
        self._eof_sent = False

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

    async def _send_replies(self) -> None:
        """Write what receiving queued (pongs, the close echo, EOF); a broken socket
        is for the next receive to report."""
        try:
            await self._flush()
        except ConnectionClosed:
            pass

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

