"""The gevent driver of the fake caller: the twin of :mod:`.trio_driver`, for Locust.

Why a second driver: Locust runs on gevent, and gevent's monkey-patching breaks
trio (``select.epoll`` is gone, and trio in a thread dies with
``TrioInternalError``; see shared/stack.md). So inside a Locust process the
same sans-IO :class:`~.caller.CallerCore` is driven by greenlets instead:

* the call is placed by the same sans-IO :class:`.dialer.Dialer` as the trio
  driver's (same request, signature, TwiML reading and error messages); the
  webhook is POSTed with ``requests``;
* the media stream is a ``websocket-client`` connection;
* the calling greenlet is the *ticker*: it sleeps to the core's absolute
  deadline (``gevent.sleep`` of what remains on ``time.monotonic_ns``, the
  clock the bridge and the mock share) and sends what
  :meth:`~.caller.CallerCore.advance` returns;
* a *receiver* greenlet feeds every message to
  :meth:`~.caller.CallerCore.receive` and sends the immediate answers (mark
  echoes).

Nothing here monkey-patches: the process must already be patched (Locust does
it on import; a script calls ``gevent.monkey.patch_all()`` first), otherwise the
sockets block the whole process. Like the trio driver it never raises for what
the far end does — refusals, bad TwiML, broken sockets end up in
:attr:`CallResult.error` (or as ``closed_by_app``) with what was recorded so far.
The one exception that does propagate is the greenlet being killed
(``GreenletExit``, how Locust stops a user): the call is hung up like Twilio
would, the socket closed, and the kill goes on.
"""

from __future__ import annotations

import logging
import random
import struct
import time

import gevent
import requests
import websocket
from websocket import ABNF, WebSocketException

from ..audio.utterances import UtteranceBank
from ..core_io import Close, End, Outputs
from . import twilio_wire as tw
from .call_result import CallResult
from .core import CallerCore
from .dialer import DialFailed, Dialer, OpenStream, PostWebhook, tls_context
from .dialer import describe as _describe
from .impairments import Impairments
from .script import Step
from .webhook import CallParties

log = logging.getLogger("callsim.caller")

CLOSE_TIMEOUT_S = 2.0  # wait this long for the app's close frame after ours (trio driver: disconnect_timeout)
ABNORMAL_CLOSURE = 1006  # what a socket that just broke reports (RFC 6455), as trio-websocket does


def _post(req: PostWebhook, *, timeout: float, http: requests.Session | None = None) -> requests.Response:
    """The webhook POST with ``requests``. No redirects: the trio driver (httpx) does not
    follow them either, so both report the same."""
    post = http.post if http is not None else requests.post
    return post(req.url, data=req.form, headers=req.headers, timeout=timeout, allow_redirects=False)


class GeventCall:
    """One call placed from a greenlet.

    :meth:`run` blocks the calling greenlet until the call is over and returns
    the :class:`CallResult`; :attr:`core` and :attr:`result` can be read while it
    runs. :meth:`hang_up` ends a call in progress from anywhere (a Locust
    ``on_stop``, another greenlet) and is a no-op once the call is over, so it
    is always safe to call.
    """

    def __init__(
        self,
        target: str,
        script: list[Step],
        *,
        auth_token: str | None = None,
        bank: UtteranceBank | None = None,
        impairments: Impairments | None = None,
        wire_policy: tw.WirePolicy | None = None,
        parties: CallParties | None = None,
        custom_parameters: dict[str, str] | None = None,
        max_duration_ms: int = 300_000,
        rng: random.Random | None = None,
        connect_timeout: float = 10.0,
        webhook_path: str | None = None,
        http: requests.Session | None = None,
    ) -> None:
        self.url = target.rstrip("/") + "/" + webhook_path.lstrip("/") if webhook_path else target
        self.dialer = Dialer(self.url, list(script), auth_token=auth_token, bank=bank, impairments=impairments,
                             wire_policy=wire_policy, parties=parties, custom_parameters=custom_parameters,
                             max_duration_ms=max_duration_ms, rng=rng)
        self.connect_timeout = connect_timeout
        self.http = http
        self.result = self.dialer.result
        self.core: CallerCore | None = None
        self.ws: websocket.WebSocket | None = None
        self._receiver: gevent.Greenlet | None = None
        self._closed = False

    # ------------------------------------------------------------------ API

    def run(self) -> CallResult:
        """Place the call and drive it to its end (see the module docstring)."""
        dialer, result = self.dialer, self.result
        step = dialer.start(time.monotonic_ns())
        if isinstance(step, PostWebhook):
            try:
                resp = _post(step, timeout=self.connect_timeout, http=self.http)
            except requests.Timeout:
                dialer.webhook_timed_out(self.connect_timeout)
                return result
            except requests.RequestException as exc:
                dialer.webhook_failed(exc)
                return result
            step = dialer.webhook_answered(time.monotonic_ns(), resp.status_code, resp.headers.get("content-type"),
                                           resp.text, resp.content)
        if isinstance(step, DialFailed):
            return result
        assert isinstance(step, OpenStream)
        if step.preamble_s is not None:  # <Say>/<Pause> play first
            gevent.sleep(step.preamble_s)

        self.core = core = step.core
        try:
            self.ws = _connect(step, self.connect_timeout)
        except (WebSocketException, OSError) as exc:
            dialer.stream_failed(time.monotonic_ns(), exc)
            return result
        result.timings["connected_ns"] = time.monotonic_ns()
        if self._closed:  # hung up from elsewhere while connecting
            self.ws.shutdown()
            return dialer.aborted()
        try:
            self._drive(self.ws, core)
        finally:  # also on GreenletExit: hang up like Twilio, close, let the kill go on
            self.hang_up()
        return dialer.ended()

    def hang_up(self) -> None:
        """End the call now if it is in progress (``stop``, then close the socket); idempotent.

        Even when the greenlet is killed in the middle of it, the socket is shut
        down and the receiver goes (``finally``): a second call finds nothing to do.
        """
        if self._closed:
            return
        self._closed = True
        core, ws, receiver = self.core, self.ws, self._receiver
        try:
            if core is not None and ws is not None and not core.finished:
                msgs = core.hang_up(time.monotonic_ns())  # a core never begun gives []
                self._send_all(ws, core, msgs, force=True)
            if receiver is not None and not receiver.dead:
                receiver.kill(block=True, timeout=1)  # one reader at a time: the close handshake reads next
            if ws is not None:
                _close_handshake(ws)
        finally:
            if ws is not None:
                ws.shutdown()
            if receiver is not None and not receiver.dead:
                receiver.kill(block=False)

    # ------------------------------------------------------------ internals

    def _drive(self, ws: websocket.WebSocket, core: CallerCore) -> None:
        """The ticker: absolute deadlines, one ``advance`` per wake-up."""
        self._send_all(ws, core, core.begin(time.monotonic_ns()))
        self.result.timings["started_ns"] = time.monotonic_ns()
        self._receiver = gevent.spawn(self._receive, ws, core)
        while not self._closed and (deadline := core.next_deadline_ns()) is not None:
            wait_ns = deadline - time.monotonic_ns()
            if wait_ns > 0:
                gevent.sleep(wait_ns / 1e9)
            self._send_all(ws, core, core.advance(time.monotonic_ns()))

    def _receive(self, ws: websocket.WebSocket, core: CallerCore) -> None:
        """The receiver greenlet: every message into the core, its answers straight back."""
        sid = core.ident.call_sid
        try:
            while not core.finished:
                opcode, frame = ws.recv_data_frame(True)  # answers pings itself
                now = time.monotonic_ns()
                if opcode == ABNF.OPCODE_TEXT:
                    # utf-8 is checked here, not by websocket-client (its pure-Python check is slow);
                    # undecodable text becomes invalid JSON for the core, i.e. a 31951 warning.
                    data: str | bytes = frame.data.decode("utf-8", "replace")
                elif opcode == ABNF.OPCODE_BINARY:
                    data = bytes(frame.data)
                elif opcode == ABNF.OPCODE_CLOSE:  # websocket-client has already answered it
                    code, reason = _close_payload(frame.data)
                    core.peer_closed(now, code, reason)
                    log.info("call %s: stream closed by the app (%s %s)", sid, code, reason)
                    return
                else:
                    continue  # ping / pong
                self._send_all(ws, core, core.receive(now, data))
        except (WebSocketException, OSError) as exc:
            # The socket broke under us: the same as trio-websocket's 1006, an end of the
            # stream by the app, not an error of the call.
            core.peer_closed(time.monotonic_ns(), ABNORMAL_CLOSURE, _describe(exc))
            log.info("call %s: stream lost (%s)", sid, _describe(exc))

    def _send_all(self, ws: websocket.WebSocket, core: CallerCore, msgs: Outputs, *,
                  force: bool = False) -> None:
        for m in msgs:
            if self._closed and not force:
                return  # hung up from elsewhere while this batch was going out: stop goes last
            try:
                if isinstance(m, End):  # always last (the caller core sends none today)
                    if isinstance(m, Close):
                        ws.send_close(m.code, m.reason.encode())
                    else:
                        ws.shutdown()
                    return
                ws.send(m)
            except (WebSocketException, OSError) as exc:
                core.peer_closed(time.monotonic_ns(), ABNORMAL_CLOSURE, _describe(exc))
                return


def place_call_gevent(
    target: str,
    script: list[Step],
    *,
    auth_token: str | None = None,
    bank: UtteranceBank | None = None,
    impairments: Impairments | None = None,
    parties: CallParties | None = None,
    custom_parameters: dict[str, str] | None = None,
    max_duration_ms: int = 300_000,
    rng: random.Random | None = None,
    connect_timeout: float = 10.0,
    webhook_path: str | None = None,
    wire_policy: tw.WirePolicy | None = None,
    http: requests.Session | None = None,
) -> CallResult:
    """Place one call at ``target`` and return when it is over; the twin of
    :func:`.trio_driver.place_call`.

    ``target`` is an ``http(s)://`` voice webhook or a ``ws(s)://`` stream URL;
    with ``webhook_path`` it is a base URL and the path is appended (Locust's
    ``--host`` + ``--webhook-path``). Use :class:`GeventCall` directly to be able
    to hang up from elsewhere.
    """
    return GeventCall(
        target, script, auth_token=auth_token, bank=bank, impairments=impairments, wire_policy=wire_policy,
        parties=parties, custom_parameters=custom_parameters, max_duration_ms=max_duration_ms, rng=rng,
        connect_timeout=connect_timeout, webhook_path=webhook_path, http=http,
    ).run()


# ---------------------------------------------------------------- helpers

def _connect(step: OpenStream, timeout: float) -> websocket.WebSocket:
    headers = [f"{k.decode()}: {v.decode()}" for k, v in step.headers]
    ws = websocket.create_connection(
        step.url, timeout=timeout, header=headers,
        enable_multithread=True,  # the ticker and the receiver both send: one lock per frame
        skip_utf8_validation=True,  # see _receive
        suppress_origin=True,  # Twilio's media client sends no Origin; trio-websocket neither
        sslopt={"context": tls_context()} if step.tls else None,
    )
    ws.settimeout(None)  # the connect timeout must not become a receive timeout mid-call
    return ws


def _close_handshake(ws: websocket.WebSocket) -> None:
    """Our close frame, then wait (at most :data:`CLOSE_TIMEOUT_S`) for the app's.

    Not ``WebSocket.close()``: its bare ``except:`` swallows ``GreenletExit``, so a
    Locust user killed while closing would live on and keep placing calls.
    """
    if not ws.connected or ws.sock is None:
        return  # a close frame already went out: websocket-client answered the app's close
    try:
        ws.send_close(websocket.STATUS_NORMAL)
        ws.sock.settimeout(CLOSE_TIMEOUT_S)
        give_up = time.monotonic() + CLOSE_TIMEOUT_S
        while time.monotonic() < give_up:
            if ws.recv_frame().opcode == ABNF.OPCODE_CLOSE:
                return
    except (WebSocketException, OSError, struct.error, AttributeError):  # AttributeError: sock gone
        pass


def _close_payload(data: bytes) -> tuple[int | None, str | None]:
    if len(data) < 2:
        return None, None  # a close frame without a code: 1005 "no status", reported as None
    return struct.unpack("!H", data[:2])[0], data[2:].decode("utf-8", "replace") or None

