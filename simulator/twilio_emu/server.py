"""The emulator's REST API over HTTP: a tiny ASGI app around :class:`~.rest.RestCore`, served by
hypercorn on trio.

Everything Twilio-shaped is in the core; this module only reads a request whole (bounded),
hands it to the core and writes the answer. It binds to 127.0.0.1 by default: the emulator
holds an auth token and answers anyone who can reach it.

    async with serve_rest(core) as url:           # url = "http://127.0.0.1:PORT"
        client = twilio.rest.Client(sid, token)
        client.api.base_url = url                  # the only change a client needs

:func:`serve_rest` serves the REST API alone; :func:`serve_emulator` also sends the status
callbacks, as ``callsim twilio-emulator`` does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from .callback_sender import CallbackSender
from .engine import CallEngine
from .errors import TwilioError
from .rest import JSON_HEADERS, RestCore
from .tunnels import Tunnels

log = logging.getLogger("callsim.twilio_emu")

MAX_BODY_BYTES = 64 * 1024  # a Calls request is a short form; Twiml itself is capped at 4000 chars

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def serve_lifespan(scope: Scope, receive: Receive, send: Send) -> bool:
    """Answer a ``lifespan`` scope (hypercorn starts with it) until shutdown and say True; False for
    any other scope, which the caller serves."""
    if scope["type"] != "lifespan":
        return False
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return True


class RestApp:
    """ASGI: HTTP requests to the core; lifespan acknowledged; nothing else served."""

    def __init__(self, core: RestCore) -> None:
        self.core = core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await serve_lifespan(scope, receive, send) or scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                # Twilio's own code for an oversized request is unconfirmed: the emulator answers
                # in Twilio's error shape with the HTTP status as the code.
                await _send(send, 413, JSON_HEADERS, TwilioError(
                    413, f"Request body over {MAX_BODY_BYTES} bytes", 413).body())
                return
            if not message.get("more_body", False):
                break
        target = scope["path"]
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        response = self.core.handle(scope["method"], target, headers, bytes(body))
        log.info("%s %s -> %d", scope["method"], scope["path"], response.status)
        await _send(send, response.status, response.headers, response.body)


async def _send(send: Send, status: int, headers: tuple[tuple[str, str], ...], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serve_rest(core: RestCore | None = None, *, host: str = "127.0.0.1", port: int = 0,
                     account_sid: str | None = None, auth_token: str | None = None) -> AsyncIterator[str]:
    """Serve ``core`` (or a new one for ``account_sid``/``auth_token`` on the wall clock) and
    yield its base URL; the server stops when the block ends."""
    if core is None:
        if not (account_sid and auth_token):
            raise ValueError("serve_rest needs a RestCore or an account_sid and auth_token")
        core = RestCore(account_sid, auth_token, clock=time.time)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(
            RestApp(core), config, shutdown_trigger=stop.wait, task_status=task_status))
        core.base_url = binds[0]
        try:
            yield binds[0]
        finally:
            stop.set()


@asynccontextmanager
async def serve_emulator(core: RestCore, *, host: str = "127.0.0.1", port: int = 0,
                         tunnels: Tunnels | None = None, legs: bool = True) -> AsyncIterator[str]:
    """The REST API plus the status callbacks it causes (:mod:`.callback_sender`) and the call
    legs (:mod:`.engine`: calls ring, answer, stream and end; ``legs=False`` leaves the calls'
    statuses to the caller, as a test of the REST surface alone wants); yields the base URL.
    ``tunnels``: public origins the emulator signs, mapped to the local ones it reaches.
    Callbacks and calls still running when the block ends are abandoned."""
    async with trio.open_nursery() as nursery:
        await nursery.start(CallbackSender(core.store, core.auth_token, tunnels=tunnels).run)
        if legs:
            await nursery.start(CallEngine(core, tunnels).run)
        try:
            async with serve_rest(core, host=host, port=port) as url:
                yield url
        finally:
            nursery.cancel_scope.cancel()
