"""Small ASGI apps in tests (a voice webhook, a status-callback receiver) share this: the
lifespan handshake hypercorn starts with, and reading a request's whole body."""

from __future__ import annotations

from typing import Any


async def serve_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> bool:
    """Answer a ``lifespan`` scope until shutdown; False for any other scope (the caller serves it)."""
    if scope["type"] != "lifespan":
        return False
    while True:
        m = await receive()
        if m["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif m["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return True


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            return body
