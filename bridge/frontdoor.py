"""One port, two paths: ``/media-stream`` on a lean WebSocket, everything else under hypercorn.

Twilio's TwiML names one URL for the webhook and the stream, so the bridge
serves both on one port. The webhook, ``/health``, ``/metrics`` and the
conversation API are ordinary, rare HTTP requests: hypercorn and Quart serve them.
The media stream is the hot path — 50 frames a second in, as many out, for the
whole call — and hypercorn's ASGI WebSocket (wsproto, a dict and a task hop per
message) was measured as 43 % of the bridge's CPU. So every connection's request
head is read here first: a ``GET /media-stream`` goes to :mod:`.wsconn`, anything
else is handed to hypercorn's own per-connection server with the head replayed.

:func:`serve` mirrors ``hypercorn.trio.run.worker_serve`` (lifespan, graceful
shutdown on the trigger, ``graceful_timeout`` for live calls) around that router.
It uses hypercorn's ``TCPServer``, ``Lifespan`` and ``WorkerContext`` directly;
pyproject pins hypercorn to the minor versions this was checked with.
"""

from __future__ import annotations

import logging
import socket
from functools import partial
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr, wrap_app
from .wsconn import HandshakeFailed, accept

if TYPE_CHECKING:
    from .app import BridgeApp

log = logging.getLogger("callsim.bridge")

MEDIA_PATH = b"/media-stream"
TWILIO_MAX_MESSAGE = 2**20  # Twilio's messages are < 1 KB; a bigger one is closed with 1009
MAX_HEAD_BYTES = 16 * 1024  # hypercorn's h11 default is the same order; Twilio's heads are < 2 KB
HEAD_TIMEOUT_S = 10.0


class _Replay(trio.abc.HalfCloseableStream):
    """A socket stream whose first read returns bytes already read from it.

    hypercorn's ``TCPServer`` reads the peer's address from ``.socket`` and
    half-closes with ``send_eof``; both pass through.
    """

    def __init__(self, stream: trio.abc.HalfCloseableStream, head: bytes) -> None:
        self._stream = stream
        self._head = head
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
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _read_head(stream: trio.abc.Stream) -> bytes:
    """Bytes up to the end of the request head (and whatever followed in the same reads)."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < MAX_HEAD_BYTES:
        chunk = await stream.receive_some(MAX_HEAD_BYTES)
        if not chunk:
            break
        data += chunk
    return data


def _is_media_stream(head: bytes) -> bool:
    line = head.split(b"\r\n", 1)[0].split(b" ")
    if len(line) != 3 or line[0] != b"GET":
        return False
    return line[1].split(b"?", 1)[0] == MEDIA_PATH


async def _media_stream(app: "BridgeApp", stream: trio.SocketStream, head: bytes) -> None:
    """The WebSocket handshake for Twilio, then the call."""
    peer = _peer(stream)
    try:
        conn = await accept(stream, head, max_message_size=TWILIO_MAX_MESSAGE,
                            refuse=lambda r: app.media_stream_refusal(r.headers.get("X-Twilio-Signature"), peer))
    except HandshakeFailed as exc:  # answered already; refusals were logged by the app
        log.info("media stream from %s not accepted: %s", peer, exc)
        return
    await app.run_call(conn, peer=peer)


def _socket_of(stream: Any) -> trio.socket.SocketType:
    """The TCP socket under a plain or TLS stream."""
    return stream.socket if hasattr(stream, "socket") else stream.transport_stream.socket


def _peer(stream: Any) -> str:
    try:
        host, port = _socket_of(stream).getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"


async def _connection(app: "BridgeApp", asgi: Any, config: Config, context: WorkerContext,
                      state: dict[str, Any], stream: trio.SocketStream) -> None:
    try:
        with trio.fail_after(HEAD_TIMEOUT_S):
            head = await _read_head(stream)
    except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await stream.aclose()
        return
    if not head:
        await stream.aclose()
        return
    if _is_media_stream(head):
        try:
            await _media_stream(app, stream, head)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
    else:  # hypercorn answers everything else, including heads that are too big or malformed
        await TCPServer(asgi, config, context, ConnectionState(state.copy()),  # type: ignore[arg-type]
                        _Replay(stream, head))


async def serve(app: "BridgeApp", config: Config, sock: socket.socket, *,
                shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
                task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` on the listening socket ``sock`` until cancelled or the trigger returns."""
    asgi = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(asgi, config, lifespan_state)
    context = WorkerContext(None)
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
                        partial(_connection, app, asgi, config, context, lifespan_state),
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
