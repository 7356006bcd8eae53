"""Callsim's stream server for ``callsim dial``: where Twilio's media stream and status callbacks land.

One TCP port (``--host``/``--port``) serves, like the mock OpenAI server, on the simulator's own
sockets (:mod:`..net.wsconn` for the WebSocket, h11 for plain HTTP) — the same code and the same
timer service/reactor loop (:func:`~..net.drive.drive`) the caller runs on, rather than a second
web stack for two routes:

* the path of ``--public-url`` with ``Upgrade: websocket``: Twilio's media stream. The upgrade
  must carry ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, the PUBLIC ``wss://`` URL, the
  one in the TwiML)), else 403. The stream's ``start`` must carry this dial's token (and the
  dialled call's SID): any other stream is closed with a log line and the dial keeps waiting.
  The accepted one runs the scenario (:class:`~.line.LineCore`);
* ``POST /dial-status``: Twilio's status callbacks (initiated, ringing, answered, completed),
  checked with the ``twilio`` package's ``RequestValidator`` against the public ``https://`` URL
  and the form, recorded for the report and printed as progress lines.

**Behind a tunnel.** Twilio reaches ``wss://HOST/path`` over TLS; a tunnel (ngrok, cloudflared, a
reverse proxy) terminates TLS and forwards plain HTTP to callsim's ``--host:--port``. So callsim
listens on plain TCP but checks signatures against the public URL, exactly as Twilio computed
them — which is also how the tests drive it: a client connects to ``ws://127.0.0.1:PORT/stream``
and signs ``wss://dial.example/stream``.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import trio

from ..caller import twilio_wire as tw
from ..caller.call_result import CallResult
from ..caller.core import CallerConfig, CallerCore
from ..core_io import Close
from ..net.clocks import MonotonicClock
from ..net.drive import CallServices, drive_call, open_call_services
from ..net.http1 import read_request
from ..net.wsconn import ConnectionClosed, HandshakeError, ServerHandshake, WebSocket
from ..scenario import Scenario
from .line import LineCore, StreamStart, parse_start, refusal
from .request import STATUS_CALLBACK_PATH, DialRequest, status_callback_url

log = logging.getLogger("callsim.dial")

MAX_HEAD_BYTES = 32 * 1024
MAX_BODY_BYTES = 64 * 1024
REQUEST_TIMEOUT_S = 10.0
#: a stream must send its ``start`` within this of the upgrade
START_TIMEOUT_S = 10.0
#: a stream whose ``start`` arrives before ``calls.create`` has answered waits this long for the call's SID
SID_WAIT_S = 10.0
MAX_MESSAGE_BYTES = 1 * 2**20
#: the statuses that end a call: Twilio's last status callback carries one of them
FINAL_STATUSES = frozenset({"completed", "canceled", "busy", "failed", "no-answer"})
#: the close code for a stream that is not this dial's (policy violation)
REFUSED = Close(1008, "not this dial's stream")


@dataclass
class Refusal:
    """A connection the server turned away, and why (kept for the report and the tests)."""

    what: str  # upgrade | stream | status
    why: str
    t: float = field(default_factory=time.time)


class DialStreamServer:
    """The :class:`~.driver.StreamSide` of ``callsim dial``: serve, wait for the dialled call's
    stream, run the scenario on it (see the module docstring).

    ``call_sid`` reads the dialled call's SID (None until ``calls.create`` answered); ``say``
    prints a progress line; ``judge`` turns the finished call into ``(ok, why)`` (measure,
    judge, write the report)."""

    def __init__(self, request: DialRequest, scenario: Scenario, auth_token: str, *,
                 call_sid: Callable[[], str | None], say: Callable[[str], None] = lambda line: None,
                 judge: Callable[[CallResult, LineCore], tuple[bool, str]] | None = None,
                 before_judge: Callable[[], Awaitable[None]] | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        from twilio.request_validator import RequestValidator

        self.request, self.scenario = request, scenario
        self.validator = RequestValidator(auth_token)
        self.call_sid, self.say, self.judge = call_sid, say, judge
        self.before_judge = before_judge  # e.g. read Twilio's records of the call, once the stream has ended
        self.host, self.port = host, port
        self.stream_path = urlsplit(request.stream_url).path or "/"
        self.statuses: list[dict[str, Any]] = []
        self.refusals: list[Refusal] = []
        self.line: LineCore | None = None
        self.result: CallResult | None = None
        self._clock = MonotonicClock()
        self._services: CallServices | None = None
        self._accepted = trio.Event()
        self._done = trio.Event()
        self._final = trio.Event()

    # ------------------------------------------------------------ StreamSide

    async def wait(self) -> None:
        await self._accepted.wait()

    async def run_call(self) -> tuple[bool, str]:
        await self._done.wait()
        assert self.result is not None and self.line is not None
        if self.judge is None:
            return self.result.error is None, self.result.error or "the scenario ran"
        if self.before_judge is not None:
            await self.before_judge()
        return self.judge(self.result, self.line)

    async def wait_final_status(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the call's final status callback (Twilio posts ``completed``
        after the hang-up, so the report waits for it); whether it came."""
        with trio.move_on_after(timeout_s):
            await self._final.wait()
        return self._final.is_set()

    # ----------------------------------------------------------------- serve

    async def serve(self, *, task_status: trio.TaskStatus[DialStreamServer] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        log.info("dial: stream server on %s:%d for %s", self.host, self.port, self.request.stream_url)
        async with open_call_services(self._clock) as services:
            self._services = services
            task_status.started(self)
            await trio.serve_listeners(self._handle_conn, listeners)

    def _refuse(self, what: str, why: str) -> None:
        self.refusals.append(Refusal(what, why))
        log.warning("dial: refused a %s: %s", what, why)
        self.say(f"refused a {what}: {why}")

    async def _handle_conn(self, stream: trio.SocketStream) -> None:
        try:
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        try:
            head = b""
            with trio.move_on_after(REQUEST_TIMEOUT_S):
                while b"\r\n\r\n" not in head and len(head) <= MAX_HEAD_BYTES:
                    data = await stream.receive_some(4096)
                    if not data:
                        return
                    head += data
            if b"\r\n\r\n" not in head:
                await stream.send_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                return
            if b"upgrade: websocket" in head.lower():
                try:
                    request = ServerHandshake(stream, head, max_message_size=MAX_MESSAGE_BYTES)
                except HandshakeError:
                    await stream.send_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    return
                await self._handle_ws(request)
            else:
                await self._handle_http(stream, head)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    # ------------------------------------------------------------ the stream

    async def _handle_ws(self, request: ServerHandshake) -> None:
        path = urlsplit(request.path).path
        if path != self.stream_path:
            self._refuse("stream upgrade", f"path {path!r} is not the stream's {self.stream_path!r}")
            await request.reject(404)
            return
        signature = request.headers.get("X-Twilio-Signature", "")
        url = self.request.stream_url
        if not signature or not self.validator.validate(url, {}, signature):
            self._refuse("stream upgrade", "missing X-Twilio-Signature" if not signature else
                         f"X-Twilio-Signature does not match {url} signed with the account's auth token")
            await request.reject(403)
            return
        try:
            ws = await request.accept()
        except HandshakeError as exc:
            log.info("dial: bad upgrade: %s", exc)
            return
        start = await self._read_start(ws)
        if start is None:
            return
        why = await self._check(start)
        if why is not None:
            self._refuse("stream", f"{start.stream_sid or '(no streamSid)'}: {why}")
            await ws.aclose(REFUSED.code, REFUSED.reason)
            return
        await self._run(ws, start)

    async def _read_start(self, ws: WebSocket) -> StreamStart | None:
        with trio.move_on_after(START_TIMEOUT_S):
            while True:
                data = await ws.receive_message()
                parsed = parse_start(data)
                if isinstance(parsed, StreamStart):
                    return parsed
                if '"connected"' not in (data if isinstance(data, str) else data.decode("utf-8", "replace")):
                    self._refuse("stream", f"before its start: {parsed}")
                    await ws.aclose(REFUSED.code, REFUSED.reason)
                    return None
        self._refuse("stream", f"no start within {START_TIMEOUT_S:g} s")
        await ws.aclose(REFUSED.code, REFUSED.reason)
        return None

    async def _check(self, start: StreamStart) -> str | None:
        why = refusal(start, call_sid=None, token=self.request.token)
        if why is not None:
            return why
        with trio.move_on_after(SID_WAIT_S):
            while self.call_sid() is None:  # Twilio answered before calls.create's answer reached us
                await trio.sleep(0.02)
        why = refusal(start, call_sid=self.call_sid(), token=self.request.token)
        if why is None and self.line is not None:
            why = f"the dialled call's stream {self.line.start.stream_sid} is already running"
        return why

    async def _run(self, ws: WebSocket, start: StreamStart) -> None:
        s = self.scenario
        ident = tw.StreamIdentity(start.account_sid, start.call_sid, start.stream_sid, start.parameters)
        core = CallerCore(CallerConfig(ident, max_duration_ms=min(s.max_duration_ms,
                                                                    self.request.max_duration_s * 1000),
                                       line_tag=False), list(s.steps), s.utterance_bank())
        line = self.line = LineCore(core, start)
        result = self.result = CallResult(self.request.stream_url, core=core, stream_url=self.request.stream_url)
        clock, services = self._clock, self._services
        assert services is not None
        line.begin(clock.now_ns())
        result.timings["started_ns"] = core.t0_ns or 0
        self.say(f"stream {start.stream_sid} of {start.call_sid} accepted: playing scenario {s.name}")
        self._accepted.set()
        try:
            closed = await drive_call(line, ws, clock, services)  # cancelled (max duration, Ctrl-C): hangs up
            if closed is not None:
                log.info("dial: stream closed by Twilio (%s)", closed)
        except BaseException as exc:
            if not isinstance(exc, trio.Cancelled):
                result.error = f"the stream broke: {type(exc).__name__}: {exc}"
            raise
        finally:
            self._done.set()

    # ------------------------------------------------------------ status callbacks

    async def _handle_http(self, stream: trio.SocketStream, head: bytes) -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(head)
        status = 404
        try:
            with trio.move_on_after(REQUEST_TIMEOUT_S):
                req, body, too_big = await read_request(conn, stream, MAX_BODY_BYTES)
                if req is None or too_big:
                    return
                target = urlsplit(req.target.decode("latin-1"))
                if target.path == STATUS_CALLBACK_PATH and req.method == b"POST":
                    status = self._status_callback(req, body)
                elif target.path == STATUS_CALLBACK_PATH:
                    status = 405
        except h11.RemoteProtocolError:
            status = 400
        out = (b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
               % (status, {200: b"OK", 204: b"No Content", 400: b"Bad Request", 403: b"Forbidden",
                           404: b"Not Found", 405: b"Method Not Allowed"}[status]))
        await stream.send_all(out)

    def _status_callback(self, req: h11.Request, body: bytes) -> int:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in req.headers}
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        url = status_callback_url(self.request.public_url)
        query = urlsplit(req.target.decode("latin-1")).query
        signed_url = f"{url}?{query}" if query else url
        signature = headers.get("x-twilio-signature", "")
        if not signature or not self.validator.validate(signed_url, form, signature):
            self._refuse("status callback", "missing X-Twilio-Signature" if not signature else
                         f"X-Twilio-Signature does not match {signed_url} and its form")
            return 403
        known = self.call_sid()
        sid, call_status = form.get("CallSid", ""), form.get("CallStatus", "")
        if known is not None and sid != known:
            self._refuse("status callback", f"CallSid {sid} is not the dialled call {known}")
            return 403
        entry = {"status": call_status, "sid": sid, "t_ns": self._clock.now_ns(), "t": time.time(),
                 "sequence": form.get("SequenceNumber"), "timestamp": form.get("Timestamp"),
                 "duration_s": form.get("CallDuration")}
        self.statuses.append({k: v for k, v in entry.items() if v is not None})
        if call_status in FINAL_STATUSES:
            self._final.set()
        self.say(f"call {sid}: {call_status}")
        return 204


