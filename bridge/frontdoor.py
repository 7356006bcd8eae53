"""One port, two paths: ``/media-stream`` on a lean WebSocket, everything else under hypercorn.

Twilio's TwiML names one URL for the webhook and the stream, so the bridge
serves both on one port. The webhook, ``/health``, ``/metrics`` and the
conversation API are ordinary, rare HTTP requests: hypercorn and Quart serve them.
The media stream is the hot path — 50 frames a second in, as many out, for the
whole call — and hypercorn's ASGI WebSocket (wsproto, a dict and a task hop per
message) took a large share of the bridge's CPU on it. So every connection's request
head is read here first: a ``GET /media-stream`` goes to :mod:`.wsconn`, anything
else is handed to hypercorn's own per-connection server with the head replayed.

:func:`serve` mirrors ``hypercorn.trio.run.worker_serve`` (lifespan, graceful
shutdown on the trigger, ``graceful_timeout`` for live calls) around that router.
It uses hypercorn's ``TCPServer`` (through :mod:`.httpconn`, which makes it
close what it means to close), ``Lifespan`` and ``WorkerContext`` directly;
pyproject pins hypercorn to the minor versions this was checked with.

Being the first to read every connection, the front door also bounds what one
peer can hold: connections over ``max_connections`` are answered 503
(:mod:`.connlimits`), a head must arrive within ``http_head_timeout_s`` (408)
and fit in :data:`.httphead.MAX_HEAD_BYTES` (431, on both paths), and an exception from one connection
is logged with its peer instead of stopping the server. Error answers end in a
lingering close, so a reset does not destroy them before the peer reads them.
"""

from __future__ import annotations

import logging
import resource
import socket
from functools import partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr, wrap_app
from .connlimits import ConnectionGate, Slot, connection_budget
from .httpconn import CLOSE_GRACE_S, HTTPConnection
from .httphead import MAX_HEAD_BYTES, head_end
from .wsconn import HandshakeError, accept

if TYPE_CHECKING:
    from .app import BridgeApp

log = logging.getLogger("callsim.bridge")

MEDIA_PATH = b"/media-stream"
TWILIO_MAX_MESSAGE = 2**20  # Twilio's messages are < 1 KB; a bigger one is closed with 1009
ANSWER_TIMEOUT_S = 2.0  # an error answer and its lingering close: then the socket is closed regardless
LINGER_MAX_BYTES = 1 << 20  # read and dropped after an error answer, at most


class _Replay(trio.abc.HalfCloseableStream):
    """A socket stream whose first read returns bytes already read from it.

    hypercorn's ``TCPServer`` reads the peer's address from ``.socket`` and
    half-closes with ``send_eof``; both pass through. ``on_close`` runs before
    the socket is closed (it gives back the connection's place under the cap).

    Sends are serialised: on a malformed request hypercorn answers 400 (and
    half-closes) from the connection's task while the app's task may still be
    sending its response on the same stream, and trio refuses two concurrent
    senders with ``BusyResourceError`` (found by ``loadtests/fuzz.py``: a chunked
    body cut short by the client).
    """

    def __init__(self, stream: trio.abc.HalfCloseableStream, head: bytes,
                 on_close: Callable[[], None] = lambda: None) -> None:
        self._stream = stream
        self._head = head
        self._on_close = on_close
        self._send_lock = trio.StrictFIFOLock()
        self.socket = _socket_of(stream)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._head:
            if max_bytes is None or max_bytes >= len(self._head):
                data, self._head = self._head, b""
            else:
                data, self._head = self._head[:max_bytes], self._head[max_bytes:]
            await trio.lowlevel.checkpoint()
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._send_lock:
            await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        async with self._send_lock:
            await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        async with self._send_lock:
            await self._stream.send_eof()

    async def aclose(self) -> None:
        self._on_close()
        await self._stream.aclose()


async def _read_head(stream: trio.abc.Stream, timeout: float) -> tuple[bytes, bool]:
    """(bytes up to the end of the request head and whatever followed in the same reads,
    whether ``timeout`` ran out first). Stops at EOF or past :data:`MAX_HEAD_BYTES`."""
    data = bytearray()
    with trio.move_on_after(timeout) as scope:
        while b"\r\n\r\n" not in data and len(data) < MAX_HEAD_BYTES:
            chunk = await stream.receive_some(MAX_HEAD_BYTES)
            if not chunk:
                break
            data += chunk
    return bytes(data), scope.cancelled_caught


def _is_media_stream(head: bytes) -> bool:
    line = head.split(b"\r\n", 1)[0].split(b" ")
    if len(line) != 3 or line[0] != b"GET":
        return False
    return line[1].split(b"?", 1)[0] == MEDIA_PATH


def _socket_of(stream: Any) -> trio.socket.SocketType:
    """The TCP socket under a plain or TLS stream."""
    return stream.socket if hasattr(stream, "socket") else stream.transport_stream.socket


def _peer(stream: Any) -> str:
    try:
        host, port = _socket_of(stream).getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"


def _plain_answer(status: int, text: str, *extra: tuple[str, str]) -> bytes:
    body = text.encode()
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "content-type: text/plain; charset=utf-8",
            f"content-length: {len(body)}", "connection: close", *(f"{k}: {v}" for k, v in extra)]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


BUSY_ANSWER = _plain_answer(503, "too many connections\n", ("retry-after", "1"))


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close, then read what the peer still sends until it closes too (bounded by the caller).

    Closing a socket with unread bytes in it sends a TCP reset, which can
    destroy the answer just sent before the peer reads it — exactly when the
    answer is "your head was too big". (Apache and nginx call this a lingering close.)
    """
    if isinstance(stream, trio.abc.HalfCloseableStream):
        await stream.send_eof()
    drained = 0
    while drained < LINGER_MAX_BYTES and (chunk := await stream.receive_some(65536)):
        drained += len(chunk)


async def _answer(stream: trio.abc.Stream, answer: bytes) -> None:
    """Send an error answer and close gently; never raises, never takes longer than ANSWER_TIMEOUT_S."""
    with trio.move_on_after(ANSWER_TIMEOUT_S):
        try:
            if answer:
                await stream.send_all(answer)
            await _linger(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


class FrontDoor:
    """Every connection of one bridge: admitted under the cap, its head read, then routed.

    No exception from one connection reaches ``trio.serve_listeners``: there,
    it would cancel the listener and every live call with it.
    """

    def __init__(self, app: "BridgeApp", asgi: Any, config: Config, context: WorkerContext,
                 lifespan_state: dict[str, Any], gate: ConnectionGate) -> None:
        self.app = app
        self.asgi = asgi
        self.config = config
        self.context = context
        self.lifespan_state = lifespan_state
        self.gate = gate
        s = app.settings
        self.head_timeout_s = s.http_head_timeout_s
        self.request_timeout_s = s.http_request_timeout_s

    async def connection(self, stream: trio.abc.Stream) -> None:
        """``trio.serve_listeners``' handler: one connection, start to end."""
        peer = _peer(stream)
        slot = self.gate.admit()
        try:
            if slot is None:
                await self._refuse(stream, peer)
            else:
                await self._serve(stream, peer, slot)
        except* Exception as group:  # Cancelled (shutdown) passes
            self.app.count_error("connection_crash")
            log.error("connection from %s: unexpected error; connection closed, the bridge serves on",
                      peer, exc_info=group)
        finally:
            if slot is not None:
                slot.release()  # before the close: a peer that saw it close may connect again at once
            with trio.move_on_after(CLOSE_GRACE_S, shield=True):
                await stream.aclose()
            await trio.aclose_forcefully(stream)  # if the TLS close_notify took too long

    async def _refuse(self, stream: trio.abc.Stream, peer: str) -> None:
        """Over the cap: 503 (plain HTTP; a TLS handshake would cost what the cap saves), then close."""
        self.app.count_error("connection_cap")
        if n := self.gate.report_due(trio.current_time()):
            log.warning("connection cap reached (%d open): %d connection(s) refused with 503 since the "
                        "last report, the latest from %s (counted in errors_total{kind=\"connection_cap\"})",
                        self.gate.limit, n, peer)
        if not isinstance(stream, trio.SSLStream):
            with trio.move_on_after(ANSWER_TIMEOUT_S):
                try:
                    await stream.send_all(BUSY_ANSWER)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

    async def _serve(self, stream: trio.abc.Stream, peer: str, slot: Slot) -> None:
        try:
            head, timed_out = await _read_head(stream, self.head_timeout_s)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return  # gone, or a failed TLS handshake
        if timed_out:
            if head:  # an idle connection that never sent a byte is closed quietly, as hypercorn does
                self.app.count_error("http_head_timeout")
                log.info("request head from %s not complete within %.3g s: 408", peer, self.head_timeout_s)
                await _answer(stream, _plain_answer(408, "request head timeout\n"))
            return
        if not head:
            return
        end = head_end(head)
        if end < 0 or end > MAX_HEAD_BYTES:  # the end may come in a read that took the head past the limit
            if end >= 0 or len(head) >= MAX_HEAD_BYTES:
                self.app.count_error("http_head_too_large")
                log.info("request head from %s over %d bytes: 431", peer, MAX_HEAD_BYTES)
                await _answer(stream, _plain_answer(431, f"request head over {MAX_HEAD_BYTES} bytes\n"))
            else:  # the peer half-closed mid-head; h11 answers the same
                self.app.count_error("http_bad_head")
                log.info("request head from %s ended before its blank line: 400", peer)
                await _answer(stream, _plain_answer(400, "incomplete request head\n"))
            return
        if _is_media_stream(head):
            await self._media_stream(stream, peer, head)
        else:  # hypercorn answers everything else
            await HTTPConnection(self.asgi, self.config, self.context,
                                 ConnectionState(self.lifespan_state.copy()),  # type: ignore[arg-type]
                                 _Replay(stream, head, on_close=slot.release),
                                 request_timeout_s=self.request_timeout_s, peer=peer,
                                 count_error=self.app.count_error)

    async def _media_stream(self, stream: trio.abc.Stream, peer: str, head: bytes) -> None:
        """The WebSocket handshake for Twilio, then the call."""
        app = self.app
        try:
            conn = await accept(stream, head, max_message_size=TWILIO_MAX_MESSAGE,
                                refuse=lambda r: app.media_stream_refusal(r.headers.get("X-Twilio-Signature"), peer))
        except HandshakeError as exc:  # answered already; refusals were logged by the app
            log.info("media stream from %s not accepted: %s", peer, exc)
            if exc.status_code is not None:
                if exc.status_code in (400, 414, 431):
                    app.count_error("media_stream_bad_head")
                await _answer(stream, b"")  # the answer went out: close without resetting it away
            return
        await app.run_call(conn, peer=peer)


def _gate(app: "BridgeApp") -> ConnectionGate:
    """The connection cap from the settings, lowered (and said so) if the descriptor limit cannot hold it."""
    s = app.settings
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = connection_budget(s.max_connections, s.max_concurrent_calls, soft)
    if limit < s.max_connections:
        log.warning("max_connections %d lowered to %d: the descriptor limit (ulimit -n) is %d and %d calls "
                    "hold one more each; raise the limit to allow more", s.max_connections, limit, soft,
                    s.max_concurrent_calls)
    return ConnectionGate(limit)


async def serve(app: "BridgeApp", config: Config, sock: socket.socket, *,
                shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
                task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` on the listening socket ``sock`` until cancelled or the trigger returns."""
    asgi = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(asgi, config, lifespan_state)
    context = WorkerContext(None)
    door = FrontDoor(app, asgi, config, context, lifespan_state, _gate(app))
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            sock.listen(config.backlog)
            listener: trio.abc.Listener[Any] = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            scheme = "http"
            if config.ssl_enabled:  # TLS here (TCPServer then sees a plain stream: it is already decrypted)
                listener = trio.SSLListener(listener, config.create_ssl_context(), https_compatible=True)
                scheme = "https"
            bind = f"{scheme}://{repr_socket_addr(sock.family, sock.getsockname())}"
            await config.log.info(f"Running on {bind} (CTRL + C to quit)")
            task_status.started(bind)
            try:
                async with trio.open_nursery(strict_exception_groups=True) as nursery:
                    if shutdown_trigger is not None:
                        nursery.start_soon(raise_shutdown, shutdown_trigger)
                    nursery.start_soon(raise_shutdown, context.terminate.wait)
                    nursery.start_soon(partial(
                        trio.serve_listeners,
                        door.connection,
                        [listener], handler_nursery=server_nursery))
                    await trio.sleep_forever()
            except BaseExceptionGroup as error:
                _, other = error.split((ShutdownError, KeyboardInterrupt))
                if other is not None:
                    raise other
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
