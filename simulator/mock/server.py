"""The mock Realtime server: trio sockets around :class:`MockSession`.

One TCP port serves both what a bridge needs and what the harness needs:

* ``GET /v1/realtime?model=…`` with ``Upgrade: websocket`` — a Realtime session,
  refused at the handshake like the API (401 without a valid ``Authorization:
  Bearer``, 404 on another path, 429/500 when a ``refuse`` fault says so);
* plain HTTP under ``/_mock/`` — introspection (sessions, what each received
  and sent) and control (set the behaviour of the next sessions).

The request head is read once; WebSocket upgrades are handed with those bytes
to :mod:`callsim.simulator.net.wsconn` (``websockets``' sans-IO protocol over the trio socket),
plain HTTP requests are answered with h11. Each session is one nursery: a receiver task
and a timer task (:mod:`.driver`); when the socket goes, both go, and the session's record
stays for introspection (bounded to the last ``keep_sessions``). While nothing needs
awaiting, a session's caller messages are read and answered by the server's one
:class:`~callsim.simulator.net.reactor.Reactor` task instead of waking its receiver per message,
and its timers fired by the server's one :class:`~callsim.simulator.net.timers.TimerService`
task; both run in the server's nursery.
"""

from __future__ import annotations

import gc
import logging
import random
import socket
import struct
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator
from urllib.parse import parse_qs, urlsplit

import h11
import orjson
import trio

from ..net.clocks import MonotonicClock
from ..net.drive import CallServices, open_call_services
from ..net.http1 import read_request
from ..net.reactor import Reactor
from ..net.wsconn import ConnectionClosed, HandshakeError, ServerHandshake, WebSocket
from .behaviour import Behaviour, unknown_fixtures
from .dialect import BETA_HEADER
from .driver import run_session
from .recognizer import Recognizer
from .session import MockSession

log = logging.getLogger("callsim.mock")

MAX_HEAD_BYTES = 32 * 1024
MAX_BODY_BYTES = 1024 * 1024
MAX_MESSAGE_BYTES = 16 * 2**20  # the API accepts appends up to 15 MiB
REQUEST_TIMEOUT_S = 10.0  # a request head (and a control request's body) must be whole within this


@dataclass
class MockConfig:
    host: str = "127.0.0.1"
    port: int = 0
    api_key: str | None = None  # the key a client must present ...
    any_key: bool = False  # ... or accept any non-empty bearer token
    dialect: str = "ga"  # ga | beta | auto
    model: str = "gpt-realtime"
    behaviour: Behaviour = field(default_factory=Behaviour)
    validate_outgoing: bool = True  # check every sent event against the openai SDK types
    recognize: bool = True  # identify which fixture the caller said
    keep_sessions: int = 1000
    # Own process only (the CLI): move everything alive after warm-up (the openai/pydantic types,
    # ~175k objects) out of the collector's reach, so a full collection pauses the event loop for
    # ~1 ms instead of ~100 ms (a pause that would be measured as latency of the bridge under test).
    freeze_gc: bool = False
    # Sessions' caller messages are read and answered by one task for all sessions (callsim.simulator.net.reactor)
    # rather than by a task wake-up each, which costs a task switch per message. False: a task per read.
    reactor: bool = True


def _error_body(message: str, type_: str, code: str | None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "code": code, "param": None}})


class MockServer:
    """Runs sessions; keeps their records; usable from Python and over HTTP."""

    def __init__(self, config: MockConfig | None = None) -> None:
        self.config = config or MockConfig()
        self.sessions: OrderedDict[str, MockSession] = OrderedDict()
        self.port: int | None = None
        self.session_count = 0
        self.refused = 0
        self._next_behaviours: list[tuple[Behaviour, str | None]] = []  # (behaviour, tag), next session first
        self._rng = random.Random(self.config.behaviour.seed)
        self.recognizer = Recognizer() if self.config.recognize else None
        self._changed = trio.Event()
        self._clock = MonotonicClock()  # the sessions' clock: the one the caller and the bridge share
        self.services: CallServices | None = None  # the sessions' timer service and reactor: set by serve()
        self.reactor: Reactor | None = None  # ... the reactor of those, when config.reactor

    # ---------------------------------------------------------------- info

    @property
    def base_url(self) -> str:
        """What to give a client as its WebSocket base (the SDK's ``websocket_base_url``)."""
        return f"ws://{self.config.host}:{self.port}/v1"

    @property
    def realtime_url(self) -> str:
        """The full Realtime URL, for a bridge's ``OPENAI_REALTIME_URL``."""
        return f"{self.base_url}/realtime"

    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def open_sessions(self) -> int:
        return sum(1 for s in self.sessions.values() if not s.closed)

    def set_behaviour(self, behaviour: Behaviour, *, next_sessions: int | None = None,
                      tag: str | None = None) -> None:
        """Default behaviour from now on, or only for the next ``next_sessions`` sessions.

        ``tag`` (queued behaviours only) names the entries so they can be taken back
        with :meth:`withdraw_behaviour` — a scenario whose call never opened a session
        must not leave its behaviour to the next scenario — and each session that
        gets one reports it as ``behaviour_tag``.
        """
        if next_sessions is None:
            if tag is not None:
                raise ValueError("a tag names queued behaviours: give next_sessions too")
            self.config.behaviour = behaviour
        else:
            self._next_behaviours.extend([(behaviour, tag)] * next_sessions)

    def withdraw_behaviour(self, tag: str) -> int:
        """Remove every still-queued behaviour tagged ``tag``; how many were removed."""
        kept = [e for e in self._next_behaviours if e[1] != tag]
        n = len(self._next_behaviours) - len(kept)
        self._next_behaviours = kept
        if n:
            log.info("mock: withdrew %d queued behaviour(s) tagged %r", n, tag)
        return n

    async def wait_all_closed(self, timeout: float) -> bool:
        """Wait until no session is open; False on timeout (a leak the harness must report)."""
        with trio.move_on_after(timeout):
            while self.open_sessions:
                await self._changed.wait()
            return True
        return False

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -------------------------------------------------------------- serving

    def warm_up(self) -> None:
        """Build the SDK validators and caches once, before the first caller.

        The first session otherwise pays ~150 ms of one-off pydantic schema
        building inside the event loop — stalling every other call in the process.
        """
        for dialect in ("ga", "beta"):
            s = MockSession(dialect=dialect, behaviour=Behaviour(seed=0), recognizer=self.recognizer,
                            validate_outgoing=self.config.validate_outgoing)
            s.open(0)
            update = ({"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}
                      if dialect == "ga" else {"input_audio_format": "g711_ulaw"})
            s.receive(0, orjson.dumps({"type": "session.update", "session": update}).decode())
            s.receive(0, '{"type":"input_audio_buffer.append","audio":"//8="}')

    async def serve(self, *, task_status: trio.TaskStatus[MockServer] = trio.TASK_STATUS_IGNORED) -> None:
        self.warm_up()
        if self.config.freeze_gc:
            gc.collect()
            gc.freeze()
        listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
        self.port = listeners[0].socket.getsockname()[1]
        log.info("mock OpenAI Realtime listening on %s (dialect %s)", self.realtime_url, self.config.dialect)
        async with open_call_services(self._clock, reactor=self.config.reactor) as services:
            self.services, self.reactor = services, services.reactor
            task_status.started(self)
            await trio.serve_listeners(self._handle_conn, listeners)

    async def _handle_conn(self, stream: trio.SocketStream) -> None:
        try:
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        head = b""
        try:
            with trio.move_on_after(REQUEST_TIMEOUT_S) as timer:
                while b"\r\n\r\n" not in head:
                    data = await stream.receive_some(4096)
                    if not data:
                        return
                    head += data
                    if len(head) > MAX_HEAD_BYTES:
                        await stream.send_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n")
                        return
            if timer.cancelled_caught:  # a head that never ends (slowloris) must not hold a task and an fd forever
                log.info("mock: no whole request head from %s within %.0f s; answered 408", _peer(stream),
                         REQUEST_TIMEOUT_S)
                await stream.send_all(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                return
            if b"upgrade: websocket" in head.lower():
                try:
                    request = ServerHandshake(stream, head, max_message_size=MAX_MESSAGE_BYTES)
                except HandshakeError as exc:
                    body = _error_body(f"Bad WebSocket upgrade: {exc}", "invalid_request_error", None)
                    await stream.send_all(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                                          b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
                    return
                await self._handle_ws(request, stream)
            else:
                await self._handle_http(stream, head)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed):
            pass  # the peer went away; for the websocket these come out of a nursery, grouped
        except* Exception as group:  # a mock bug on one connection must not take down every other session
            log.error("mock: connection from %s failed on a mock bug; closed, serving the others",
                      _peer(stream), exc_info=group)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    # ------------------------------------------------------------ websocket

    async def _handle_ws(self, request: ServerHandshake, raw: trio.SocketStream) -> None:
        url = urlsplit(request.path)
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        if url.path.rstrip("/") != "/v1/realtime":
            await request.reject(404, body=_error_body(f"Invalid URL (GET {url.path})", "invalid_request_error", None))
            return
        scheme, _, token = headers.get("authorization", "").strip().partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
        protocols = [p.strip() for p in request.proposed_subprotocols if p.strip()]
        for p in protocols:  # browser-style auth (protocols.md 2.1)
            if p.startswith("openai-insecure-api-key."):
                key = key or p.removeprefix("openai-insecure-api-key.")
        cfg = self.config
        if not key or (not cfg.any_key and cfg.api_key is not None and key != cfg.api_key) or \
                (not cfg.any_key and cfg.api_key is None and not key):
            self.refused += 1
            log.info("mock: refused a session: bad API key")
            await request.reject(401, extra_headers=[(b"content-type", b"application/json")], body=_error_body(
                "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error", "invalid_api_key"))
            return
        self.session_count += 1
        index = self.session_count
        behaviour, behaviour_tag = self._next_behaviours.pop(0) if self._next_behaviours else (cfg.behaviour, None)
        frng = random.Random(None if behaviour.seed is None else f"{behaviour.seed}:{index}:handshake")
        for f in behaviour.faults:
            if f.kind == "refuse" and f.applies(index, frng):
                self.refused += 1
                log.info("mock: session %d refused with HTTP %d (fault)", index, f.status)
                msg = "Rate limit reached" if f.status == 429 else "The server had an error"
                await request.reject(f.status, extra_headers=[(b"content-type", b"application/json")],
                                     body=_error_body(msg, "rate_limit_error" if f.status == 429 else "server_error",
                                                      None))
                return
        beta = headers.get(BETA_HEADER[0], "").strip().lower() == BETA_HEADER[1]
        model = parse_qs(url.query).get("model", [cfg.model])[0]
        session = MockSession(index=index, dialect=cfg.dialect, beta_header=beta, model=model,
                              behaviour=behaviour, recognizer=self.recognizer,
                              validate_outgoing=cfg.validate_outgoing, behaviour_tag=behaviour_tag)
        try:
            ws = await request.accept(subprotocol="realtime" if "realtime" in protocols else None)
        except HandshakeError as exc:  # a malformed upgrade, answered 400/426 by the protocol
            log.info("mock: bad upgrade request: %s", exc)
            return
        self._register(session)
        log.info("mock: session %s opened (#%d, %s, model %r)", session.id, index, session.dialect, model[:100])
        try:
            await self._run_session(session, ws, raw)
        finally:
            session.on_closed(time.monotonic_ns(), session.close_info["by"] if session.close_info else "client")
            log.info("mock: session %s closed", session.id)
            self._notify()

    def _register(self, session: MockSession) -> None:
        self.sessions[session.id] = session
        while len(self.sessions) > self.config.keep_sessions:
            oldest, s = next(iter(self.sessions.items()))
            if not s.closed:
                break
            del self.sessions[oldest]
        self._notify()

    async def _run_session(self, session: MockSession, ws: WebSocket, raw: trio.SocketStream) -> None:
        async def abort() -> None:
            _set_linger_zero(raw)  # RST, no close frame: an abrupt drop
            await raw.aclose()

        assert self.services is not None, "sessions are served from serve()"
        await run_session(session, ws, self.services, clock=self._clock, abort=abort)

    # ----------------------------------------------------------------- http

    async def _handle_http(self, stream: trio.SocketStream, head: bytes) -> None:
        """Answer one plain HTTP request (introspection/control), then close."""
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(head)
        status: int
        payload: Any
        req: Any = None
        try:
            with trio.move_on_after(REQUEST_TIMEOUT_S) as timer:
                req, body, too_big = await read_request(conn, stream, MAX_BODY_BYTES)
            if timer.cancelled_caught:
                status, payload = 408, {"error": f"no whole request within {REQUEST_TIMEOUT_S:.0f} s"}
                req = None
            elif req is None:
                return  # the peer went away before its request was whole
            elif too_big:
                status, payload = 413, {"error": f"body over {MAX_BODY_BYTES} bytes"}
            else:
                try:
                    status, payload = self._route(req.method.decode(), req.target.decode(), body)
                except Exception as exc:  # a control-request bug must not take the whole server down
                    log.exception("mock: error answering %s %s", req.method, req.target)
                    status, payload = 500, {"error": repr(exc)}
        except h11.RemoteProtocolError as exc:
            status, payload = 400, {"error": str(exc)}
            req = None
        if req is None:  # answer on a fresh connection state: the request's own is broken or unfinished
            conn = h11.Connection(h11.SERVER)
            conn.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            conn.next_event()
        data = orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
        resp = h11.Response(status_code=status, headers=[("content-type", "application/json"),
                                                          ("content-length", str(len(data))),
                                                          ("connection", "close")])
        # A HEAD is answered with the head alone (RFC 9110 9.3.2; h11 refuses a body for it)
        out = conn.send(resp)
        if req is None or req.method != b"HEAD":
            out += conn.send(h11.Data(data=data))
        await stream.send_all(out + conn.send(h11.EndOfMessage()))

    def _route(self, method: str, target: str, body: bytes) -> tuple[int, Any]:
        url = urlsplit(target)
        path = url.path.rstrip("/")
        if path == "/_mock/health":
            return 200, {"ok": True, "open_sessions": self.open_sessions, "sessions": self.session_count}
        if path == "/_mock/sessions" and method == "GET":
            return 200, {"open_sessions": self.open_sessions, "sessions_total": self.session_count,
                         "refused": self.refused,
                         "sessions": [s.snapshot(full=False) for s in self.sessions.values()]}
        if path.startswith("/_mock/sessions/") and method == "GET":
            sid = path.rsplit("/", 1)[1]
            s = self.sessions.get(sid)
            if s is None and sid.isdigit():  # by 1-based index
                s = next((x for x in self.sessions.values() if x.index == int(sid)), None)
            timings = parse_qs(url.query).get("timings", ["0"])[0] not in ("0", "false", "")
            return (200, s.snapshot(full=True, timings=timings)) if s else (404, {"error": f"no session {sid}"})
        if path == "/_mock/behaviour" and method == "DELETE":
            tag = parse_qs(url.query, keep_blank_values=True).get("tag")
            if not tag or not tag[0]:
                return 400, {"error": "DELETE /_mock/behaviour needs ?tag=T (the tag of the queued behaviours)"}
            return 200, {"withdrawn": self.withdraw_behaviour(tag[0])}
        if path == "/_mock/behaviour" and method in ("POST", "PUT"):
            n = parse_qs(url.query).get("next_sessions")
            if n and not (n[0].isdigit() and int(n[0]) > 0):
                return 400, {"error": f"next_sessions must be a positive integer, got {n[0]!r}"}
            tag = parse_qs(url.query, keep_blank_values=True).get("tag")
            if tag and (not tag[0] or not n):
                return 400, {"error": "tag must be a non-empty string, with next_sessions (it names queued behaviours)"}
            try:
                b = Behaviour.from_dict(orjson.loads(body or b"{}"))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:  # bad JSON is a ValueError
                return 400, {"error": f"invalid behaviour: {exc!r}"}
            if unknown := unknown_fixtures(b):
                return 400, {"error": f"unknown fixture(s) {', '.join(unknown)}"}
            self.set_behaviour(b, next_sessions=int(n[0]) if n else None, tag=tag[0] if tag else None)
            return 200, {"ok": True}
        if path.startswith("/v1/realtime"):
            return 426, {"error": {"message": "WebSocket upgrade required", "type": "invalid_request_error"}}
        return 404, {"error": f"no route {method} {path}"}


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"


def _set_linger_zero(stream: trio.SocketStream) -> None:
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


@asynccontextmanager
async def running_mock(config: MockConfig | None = None) -> AsyncIterator[MockServer]:
    """``async with running_mock(MockConfig(any_key=True)) as mock: ... mock.realtime_url``"""
    server = MockServer(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
