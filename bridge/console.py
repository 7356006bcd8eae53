"""The operator console's routes: the page, its login, the live feed, history, settings, tools.

Everything here hands out what callers said or changes how the bridge talks to them, so every
route is behind :class:`.console_auth.ConsoleAuth`: the bearer token or the login session's
cookie, else 401. With no ``CONSOLE_TOKEN`` the routes answer 404, as if they did not exist.

The feed is Server-Sent Events (``text/event-stream``), not a WebSocket, because it is read-only
and one-way: it is a plain GET, so the same cookie/bearer check and the browser's same-origin
rule apply (a WebSocket has no same-origin protection, and a foreign page could open one with
the operator's cookie); ``EventSource`` reconnects by itself and sends ``Last-Event-ID``, from
which the replay resumes; and ``curl -N -H 'Authorization: Bearer …'`` reads it. The page is
static HTML, CSS and one vanilla script from the package (``assets/console.*``): no build step,
no CDN, a Content-Security-Policy of ``'self'`` only.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from functools import wraps
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import orjson
from quart import Quart, Response, redirect, request

from . import session_settings as ss
from .console_auth import COOKIE, SESSION_TTL_S
from .logsafe import wire

if TYPE_CHECKING:
    from .app import BridgeApp

log = logging.getLogger("callsim.bridge.console")

ASSETS = files(__package__) / "assets"
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
_STATIC = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}
HEARTBEAT_S = 15.0


def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def install(app: BridgeApp, quart: Quart) -> None:
    """Add the console's routes to ``quart`` (they answer 404 when the console is off)."""
    auth = app.console_auth

    def who() -> str | None:
        """``bearer`` or ``session:<short hash>`` for an allowed request, else None (for the logs)."""
        if auth.bearer_ok(request.headers.get("Authorization")):
            return "bearer"
        session = request.cookies.get(COOKIE)
        if auth.session_ok(session):
            return "session:" + hashlib.sha256(session.encode()).hexdigest()[:8]  # type: ignore[union-attr]
        return None

    def guarded(page: bool = False) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        def wrap(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            @wraps(fn)
            async def inner(*args: Any, **kwargs: Any) -> Any:
                if not auth.enabled:
                    return Response("not found", status=404, content_type="text/plain")
                if who() is None:
                    if page:
                        return _login_page(401)
                    return Response(orjson.dumps({"error": "unauthorized: Authorization: Bearer <CONSOLE_TOKEN>"}),
                                    status=401, content_type="application/json",
                                    headers={"WWW-Authenticate": 'Bearer realm="callsim console"'})
                return await fn(*args, **kwargs)
            return inner
        return wrap

    def _login_page(status: int, message: str = "") -> Response:
        body = _asset("login.html").replace("<!--MESSAGE-->", message)
        return Response(body, status=status, content_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    @quart.get("/")
    async def root():  # type: ignore[no-untyped-def]
        if not auth.enabled:
            return Response("not found", status=404, content_type="text/plain")
        return redirect("/console", 302)

    @quart.get("/console")
    @guarded(page=True)
    async def console_page():  # type: ignore[no-untyped-def]
        return Response(_asset("console.html"), content_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    @quart.get("/console/static/<name>")
    async def console_static(name: str):  # type: ignore[no-untyped-def]
        # not secret (the login page needs the style), but only there while the console is on
        if not auth.enabled or name not in _STATIC:
            return Response("not found", status=404, content_type="text/plain")
        return Response(_asset(name), content_type=_STATIC[name], headers={"Cache-Control": "no-cache"})

    @quart.post("/console/login")
    async def console_login():  # type: ignore[no-untyped-def]
        if not auth.enabled:
            return Response("not found", status=404, content_type="text/plain")
        form = await request.form
        session = auth.login(form.get("token"))
        if session is None:
            log.warning("console login refused: wrong token from %s", request.remote_addr)
            return _login_page(401, '<p class="error" role="alert">Wrong token.</p>')
        log.info("console login from %s", request.remote_addr)
        resp = redirect("/console", 303)
        resp.set_cookie(COOKIE, session, max_age=int(SESSION_TTL_S), httponly=True, samesite="Strict",
                        secure=app.settings.public_url.startswith("https://") or request.scheme == "https",
                        path="/")
        return resp

    @quart.post("/console/logout")
    async def console_logout():  # type: ignore[no-untyped-def]
        if not auth.enabled:
            return Response("not found", status=404, content_type="text/plain")
        auth.logout(request.cookies.get(COOKIE))
        resp = redirect("/console", 303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # ------------------------------------------------------------------ live calls and the feed

    @quart.get("/api/calls")
    @guarded()
    async def active_calls():  # type: ignore[no-untyped-def]
        return {"calls": app.active_calls(), "now": time.time()}

    @quart.get("/api/calls/<call_sid>/events")
    @guarded()
    async def call_events(call_sid: str):  # type: ignore[no-untyped-def]
        events = app.feed.backlog(call_sid)
        if events is None:
            return {"error": f"no live or recent call {wire(call_sid, 64)}"}, 404
        return {"call": call_sid, "live": app.feed.is_live(call_sid), "events": events}

    @quart.get("/api/feed")
    @guarded()
    async def feed_all():  # type: ignore[no-untyped-def]
        return _feed(None)

    @quart.get("/api/feed/<call_sid>")
    @guarded()
    async def feed_call(call_sid: str):  # type: ignore[no-untyped-def]
        if app.feed.backlog(call_sid) is None:
            return {"error": f"no live or recent call {wire(call_sid, 64)}"}, 404
        return _feed(call_sid)

    def _feed(call_sid: str | None) -> Response | tuple[dict[str, str], int]:
        try:
            after = int(request.headers.get("Last-Event-ID", "0"))
        except ValueError:
            after = 0
        if app.feed.full:
            return {"error": "too many feed subscribers"}, 503

        async def stream() -> AsyncIterator[bytes]:
            # subscribed here, as the body starts, not in the handler: a client gone before the
            # body starts never runs this generator, so its finally would never free the place
            sub = app.feed.subscribe(call_sid, after=after)
            if sub is None:  # the places filled up since the handler's check: the EventSource retries
                return
            try:
                yield b"retry: 2000\n\n"
                async for batch in sub.events(heartbeat_s=HEARTBEAT_S):
                    if not batch:
                        yield b": keep-alive\n\n"
                        continue
                    out = bytearray()
                    for ev in batch:
                        seq = ev.get("seq")
                        if seq is not None:
                            out += b"id: %d\n" % seq
                        out += b"data: " + orjson.dumps(ev) + b"\n\n"
                    yield bytes(out)
                    if call_sid is not None and any(ev["kind"] == "call_ended" for ev in batch):
                        return  # that call's feed is over (the page closes its EventSource on it)
            finally:
                app.feed.unsubscribe(sub)

        resp = Response(stream(), content_type="text/event-stream; charset=utf-8",
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        resp.timeout = None  # type: ignore[assignment]  # a feed lasts as long as the console is open
        return resp

    # ------------------------------------------------------------------ history

    @quart.get("/api/conversations")
    @guarded()
    async def conversations():  # type: ignore[no-untyped-def]
        a = request.args
        try:
            criteria: dict[str, Any] = {
                "number": a.get("number") or None, "text": a.get("q") or None,
                "since": date.fromisoformat(a["since"]) if a.get("since") else None,
                "until": date.fromisoformat(a["until"]) if a.get("until") else None,
                "limit": min(max(int(a.get("limit", "100")), 1), 1000),
            }
        except ValueError as exc:
            return {"error": f"bad query: {exc} (since/until are YYYY-MM-DD, limit 1..1000)"}, 400
        return {"conversations": await app.store.search_conversations(**criteria)}

    @quart.get("/api/conversations/<call_sid>")
    @guarded()
    async def conversation(call_sid: str):  # type: ignore[no-untyped-def]
        conv = await app.store.get_conversation(call_sid)
        if conv is None:
            return {"error": f"no conversation {wire(call_sid, 64)}"}, 404
        return conv

    # ------------------------------------------------------------------ settings and tools

    @quart.get("/api/settings")
    @guarded()
    async def get_settings():  # type: ignore[no-untyped-def]
        return app.settings_view()

    @quart.put("/api/settings")
    @guarded()
    async def put_settings():  # type: ignore[no-untyped-def]
        body = await request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            return {"error": "expected a JSON object of settings"}, 400
        try:
            changed = await app.change_session_settings(body, who=f"{who()} from {request.remote_addr}")
        except (ss.ValidationError, ValueError) as exc:
            return {"error": ss.describe(exc)}, 400
        return {**app.settings_view(), "changed": changed}

    @quart.delete("/api/settings")
    @guarded()
    async def reset_settings():  # type: ignore[no-untyped-def]
        changed = await app.change_session_settings(None, who=f"{who()} from {request.remote_addr}")
        return {**app.settings_view(), "changed": changed}

    @quart.get("/tools")
    @guarded()
    async def tools():  # type: ignore[no-untyped-def]
        on = set(app.session_values.tools)
        return {"tools": [{**s, "enabled": s["name"] in on} for s in app.tools.schemas()]}
