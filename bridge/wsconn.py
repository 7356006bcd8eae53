"""A lean trio WebSocket: the ``websockets`` library's sans-IO protocol over a trio stream.

Why not trio-websocket (wsproto) or hypercorn's ASGI WebSocket: a call moves
about 120 WebSocket messages a second through the bridge, so the per-message
cost bounds how many calls a core carries; ``websockets``' protocol (with its C
unmasking) costs a fraction of wsproto's, and hypercorn adds an ASGI dict, a
``fail_after`` scope and a task hop per message on top. This module adds no
task and no queue: the caller of :meth:`WebSocket.receive_message` reads the
socket itself. The framing is :mod:`.wsframes` (sans-IO), the socket under a
plain TCP connection :mod:`.fdstream`; this module is the I/O and the handshakes.

Both legs of a call use it: the Twilio leg as a server (the request head is
read in :mod:`.frontdoor`, the handshake answered by :func:`accept`) and the
OpenAI leg as a client (:func:`connect`, ``ws://`` or ``wss://``). The
simulator uses its own WebSocket code (design.md rule 1).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import trio
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake, InvalidStatus, SecurityError
from websockets.frames import CloseCode
from websockets.http11 import MAX_LINE_LENGTH, Request, Response
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from .fdstream import RECEIVE_BYTES, FdStream
from .httphead import MAX_HEAD_BYTES, split_head
from .wsframes import ConnectionClosed, FrameLane, coalesce, text_frame

# websockets logs every open/close at INFO; the bridge logs its calls itself
_PROTO_LOG = logging.getLogger("callsim.bridge.websocket")
_PROTO_LOG.setLevel(logging.WARNING)
# how long aclose() waits for the peer's close frame after ours: a peer that answers at all
# answers within a round trip, and until then a gone peer holds a line (the simulator's is equal)
CLOSE_TIMEOUT = 0.5


class HandshakeError(Exception):
    """The opening handshake failed; ``status_code`` is the HTTP status answered (by the server,
    or by :func:`accept` to the client), None if there was no HTTP answer."""

    def __init__(self, message: str, status_code: int | None = None, body: bytes = b"") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class ConnectionRejected(HandshakeError):
    """The server answered the upgrade with another HTTP status than 101."""

    def __init__(self, status_code: int, headers: Headers, body: bytes, message: str = "") -> None:
        super().__init__(message or f"HTTP {status_code}", status_code, body)
        self.headers = headers


class WebSocket(FrameLane):
    """One open WebSocket on ``stream``; ``protocol`` has finished its handshake.

    The frames are cut and made by :class:`.wsframes.FrameLane`; this class
    reads and writes them. Sends may come from several tasks of a call: each
    serialises a whole frame and writes it through :class:`.fdstream.FdStream`
    (which keeps the order of senders) or, on any other stream, under one lock,
    so frames never interleave and trio's conflict detector never fires.
    Receiving is for one task at a time. A text frame is sent by writing its
    header and payload, unless the protocol has something queued or a
    fragmented send is under way.
    """

    def __init__(self, stream: trio.abc.Stream, protocol: Protocol) -> None:
        super().__init__(protocol)
        if isinstance(stream, trio.SocketStream):
            stream = FdStream(stream)
        self.stream = stream
        self.peer = peer_of(stream)  # "host:port": names the connection in logs before anything else can
        self._send_lock = trio.Lock()
        self._receiving = False  # a task is blocked in receive_message (aclose must not read too)

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
                data = await self.stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise self._close_now(CloseCode.ABNORMAL_CLOSURE, f"socket error: {type(exc).__name__}")
            finally:
                self._receiving = False
            if data:
                self._buf += data
                continue
            self._take_eof()
            await self._flush()
            self._eof = True

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
                for chunk in coalesce(chunks):
                    if chunk:
                        await self.stream.send_all(chunk)
                    elif isinstance(self.stream, trio.abc.HalfCloseableStream):
                        await self.stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._close_now(CloseCode.ABNORMAL_CLOSURE, f"socket error: {type(exc).__name__}")

    async def aclose(self, code: int = 1000, reason: str = "", timeout: float = CLOSE_TIMEOUT) -> None:
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


async def connect(url: str, headers: Iterable[tuple[str | bytes, str | bytes]], *, timeout: float,
                  max_message_size: int, ssl_context: ssl.SSLContext | None = None) -> WebSocket:
    """Open a client WebSocket (``ws://`` or ``wss://``) within ``timeout`` seconds.

    Raises :class:`HandshakeError` (with the HTTP status when there was one) or
    ``OSError`` when the server cannot be reached.
    """
    uri = parse_uri(url)
    protocol = ClientProtocol(uri, max_size=max_message_size, logger=_PROTO_LOG)
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
            conn = WebSocket(stream, protocol)
            await conn._flush()  # the request
            raw, head_done = bytearray(), False
            while protocol.handshake_exc is None and protocol.state is State.CONNECTING:
                data = await stream.receive_some(RECEIVE_BYTES)
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


def _handshake_failure(protocol: ClientProtocol, events: list, url: str) -> HandshakeError:
    exc = protocol.handshake_exc
    response = next((e for e in events if isinstance(e, Response)), None)
    if isinstance(exc, InvalidStatus):
        response = exc.response
    if response is not None and response.status_code != 101:
        return ConnectionRejected(response.status_code, response.headers, response.body or b"",
                                  f"HTTP {response.status_code} from {urlsplit(url).netloc}")
    if isinstance(exc, InvalidHandshake):
        return HandshakeError(f"bad handshake: {exc}")
    return HandshakeError("the server closed the connection during the handshake")


async def accept(stream: trio.abc.Stream, head: bytes, *, max_message_size: int,
                 refuse: Callable[[Request], tuple[int, str] | None]) -> WebSocket:
    """Answer a WebSocket upgrade whose request head (and whatever followed it) was read already.

    ``refuse`` sees the request and returns (HTTP status, body) to turn it down,
    or None. Raises :class:`HandshakeError` once the refusal, or the 400/426 for
    a request that is not a valid upgrade (400/414/431 for one that does not
    parse: :func:`head_error`), has been sent.
    """
    protocol = ServerProtocol(max_size=max_message_size, logger=_PROTO_LOG)
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
            raise HandshakeError("the client went away during the handshake") from None
        why = f"request head over {MAX_HEAD_BYTES} bytes" if too_big else _why(protocol.handshake_exc)
        raise HandshakeError(f"HTTP {response.status_code}: {why}", response.status_code)
    refusal = refuse(request)
    response = protocol.reject(*refusal) if refusal is not None else protocol.accept(request)
    protocol.send_response(response)
    conn = WebSocket(stream, protocol)
    if request_head:
        conn._buf = bytearray(rest)  # frames sent right behind the upgrade: the fast lane's
    try:
        await conn._flush()
    except ConnectionClosed:
        raise HandshakeError("the client went away during the handshake") from None
    if response.status_code != 101:
        raise HandshakeError(f"HTTP {response.status_code}: {_why(protocol.handshake_exc)}", response.status_code)
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


__all__ = ["ConnectionClosed", "ConnectionRejected", "FdStream", "HandshakeError", "WebSocket", "accept", "connect",
           "text_frame"]
