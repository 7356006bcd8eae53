"""Small ASGI apps in tests (a voice webhook, a status-callback receiver) share this: the
lifespan handshake hypercorn starts with (the emulator's own), reading a request's whole body, and
serving an app on loopback for the length of a block."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from callsim.simulator.twilio_emu.server import serve_lifespan

__all__ = ["read_body", "serve_app", "serve_lifespan"]


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            return body


@asynccontextmanager
async def serve_app(app: Any) -> AsyncIterator[str]:
    """``app`` served by hypercorn on 127.0.0.1 (a free port); yields its base URL."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as n:
        binds = await n.start(lambda task_status: serve(app, config, shutdown_trigger=stop.wait,
                                                         task_status=task_status))
        try:
            yield binds[0]
        finally:
            stop.set()
