"""MCP over streamable HTTP at ``/mcp`` inside the bridge, behind the console token.

:class:`.app.BridgeApp` dispatches ``/mcp`` here as raw ASGI before Quart sees the request (the
SDK's endpoint is a Starlette app); without ``CONSOLE_TOKEN`` it is never built and ``/mcp`` is
Quart's 404. Every request must carry ``Authorization: Bearer <CONSOLE_TOKEN>`` (401 otherwise):
the console's login cookie does not open it, so a browser tab holding a console session cannot be
used to reach the history through this endpoint.

The SDK's session manager keeps its sessions in an anyio task group; :meth:`McpHttp.running` is
entered by the bridge's ASGI lifespan, i.e. in the server's own nursery (:func:`.frontdoor.serve`
runs the lifespan there), so MCP sessions start after the bridge does and end before it stops.

DNS-rebinding protection (the SDK's Host/Origin allow-list, on by default for a 127.0.0.1 bind) is
off: the bridge is reached under its public host name, and a page that rebinds a name to the
bridge still cannot send the bearer token it does not know.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings

from .console_auth import ConsoleAuth
from .mcp_server import build_server
from .store import AsyncStore

log = logging.getLogger("callsim.bridge.mcp")

PATH = "/mcp"
#: live MCP sessions at most (each is an assistant connected to this bridge)
MAX_SESSIONS = 100
#: a session nobody used for this long is closed
SESSION_IDLE_TIMEOUT_S = 30 * 60.0

_UNAUTHORIZED = b'{"error": "unauthorized: send Authorization: Bearer <CONSOLE_TOKEN>"}'


class McpHttp:
    """The ``/mcp`` endpoint: the token check, then the SDK's streamable HTTP app."""

    def __init__(self, store: AsyncStore, auth: ConsoleAuth) -> None:
        self.auth = auth
        self.server = build_server(store)
        self.asgi = self.server.streamable_http_app(
            streamable_http_path=PATH, max_sessions=MAX_SESSIONS, session_idle_timeout=SESSION_IDLE_TIMEOUT_S,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))

    @staticmethod
    def handles(path: str) -> bool:
        return path == PATH or path.startswith(PATH + "/")

    def running(self) -> AbstractAsyncContextManager[None]:
        """The session manager's task group; enter it once, for the life of the server."""
        return self.server.session_manager.run()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        authorization = next((v.decode("latin-1") for k, v in scope.get("headers", ())
                              if k.lower() == b"authorization"), None)
        if not self.auth.bearer_ok(authorization):
            client = scope.get("client") or ("?", 0)
            log.info("MCP request from %s refused: %s", client[0],
                     "wrong bearer token" if authorization else "no Authorization header")
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"www-authenticate", b'Bearer realm="callsim-bridge"'),
                                    (b"content-length", str(len(_UNAUTHORIZED)).encode())]})
            await send({"type": "http.response.body", "body": _UNAUTHORIZED})
            return
        await self.asgi(scope, receive, send)
