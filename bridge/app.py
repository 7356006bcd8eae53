"""The bridge's HTTP + WebSocket application (ASGI, served by hypercorn on trio).

HTTP routes are a quart-trio app: ``/incoming-call`` (TwiML), ``/health``,
``/metrics``, and behind the console token the operator's console, its live feed,
history and settings (:mod:`.console`). The media stream (``/media-stream``) is the
hot path — 50 caller frames a second per call plus the replies: ``callsim
bridge`` serves it off the ASGI path altogether (:mod:`.frontdoor`,
:mod:`.wsconn`); under another ASGI server it is handled as raw ASGI before Quart
sees it. Both end in :meth:`BridgeApp.run_call`.

Security: with ``TWILIO_AUTH_TOKEN`` set, the webhook's ``X-Twilio-Signature``
is checked against the *configured* public URL (never an unchecked Host
header), the stream upgrade's signature against the stream URL, and the
per-call token the TwiML hands out against the stream's ``customParameters``:
a token opens one stream, once, within its TTL (:mod:`.security`).

Lines: a socket on ``/media-stream`` is *pending* until a valid ``start``
(accepted token) makes it a *call*. Only calls count against
``max_concurrent_calls`` — the webhook's busy TwiML and the upgrade's 503 — so
idle upgrades cannot make the bridge answer "all lines busy"; pending sockets
have their own cap (``max_pending_streams``) and are closed when no ``start``
comes (``stream_start_timeout_s``, :mod:`.liveness`).
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from . import console
from . import session_settings as ss
from .call import CallCore, CallStarted, Notice, SaveTranscript
from .codec import Transcoder
from .console_auth import ConsoleAuth
from .feed import FeedHub
from .driver import CallDriver, TwilioSocket
from .logsafe import wire
from .metrics import BridgeMetrics
from .phone_numbers import PhoneNumbers
from .phone_numbers import register_routes as register_number_routes
from .realtime import SessionParams
from .response_watch import WatchLimits
from .security import StreamTokens, stream_signature_ok, webhook_signature_ok
from .settings import Settings
from .store import AsyncStore, Store
from .call_control import END_CALL, TRANSFER_CALL, CallControl
from .tools import ToolRegistry, default_tools, register_end_call, register_transfer_call
from .transfer import Transfers
from .twiml import busy_twiml, connect_twiml
from .wsconn import ConnectionClosed

if TYPE_CHECKING:
    from .mcp_http import McpHttp

log = logging.getLogger("callsim.bridge")

APOLOGY = (Path(__file__).resolve().parent / "assets" / "apology.ulaw").read_bytes()


class BridgeApp:
    """Everything shared by the calls of one bridge process.

    Each call's :class:`.driver.CallDriver` reaches back here only through the
    :class:`.driver.CallHooks` it defines (``settings``, :meth:`call_started`,
    :meth:`save_transcript`, :meth:`run_tool`, :meth:`count_error`).
    """

    def __init__(self, settings: Settings | None = None, *, tools: ToolRegistry | None = None,
                 core_class: type[CallCore] = CallCore, driver_class: type[CallDriver] = CallDriver) -> None:
        # core_class/driver_class let tests build deliberately broken bridges (negative controls)
        self.core_class = core_class
        self.driver_class = driver_class
        self.settings = s = settings or Settings()
        self.metrics = BridgeMetrics()
        self.tools = tools or default_tools()
        if s.end_call_tool and END_CALL not in self.tools:
            register_end_call(self.tools)
        self.transfers = Transfers(s) if s.transfer_number else None
        if self.transfers is not None and TRANSFER_CALL not in self.tools:
            register_transfer_call(self.tools)
        self.control = CallControl(dtmf_mode=s.dtmf_mode, silence_reprompt_s=s.silence_reprompt_s,
                                   silence_max_prompts=s.silence_max_prompts, transfer=self.transfers is not None)
        self.store = AsyncStore(Store(s.database_path))
        secret = s.stream_token_secret or s.twilio_auth_token
        self.token_secret = secret.get_secret_value().encode() if secret else secrets.token_bytes(32)
        self.tokens = StreamTokens(self.token_secret, s.stream_token_ttl_s + _say_seconds(s.greeting_say))
        self.calls: set[CallCore] = set()  # calls: streams with a valid start
        self.pending: set[CallCore] = set()  # streams accepted, no valid start yet
        self._calls_changed = trio.Event()
        self.params = SessionParams(
            dialect=s.openai_dialect, model=s.openai_model, audio_mode=s.audio_mode, voice=s.voice,
            instructions=s.instructions, vad_type=s.vad_type, vad_threshold=s.vad_threshold,
            vad_prefix_padding_ms=s.vad_prefix_padding_ms, vad_silence_duration_ms=s.vad_silence_duration_ms,
            vad_eagerness=s.vad_eagerness, interrupt_response=s.interrupt_response,
            transcription_model=s.transcription_model or None, tools=tuple(self.tools.schemas()),
        )
        self.watch_limits = WatchLimits(s.response_first_audio_timeout_s, s.response_stall_timeout_s)
        self.console_auth = ConsoleAuth(s.console_token.get_secret_value() if s.console_token else None)
        self.mcp = self._build_mcp()
        self.numbers = PhoneNumbers(s)
        self.feed = FeedHub()
        self._started_at: dict[CallCore, float] = {}  # admitted calls -> wall-clock start (the console's list)
        self._tool_names = [t["name"] for t in self.tools.schemas()]
        self.session_configured = ss.configured(s, self._tool_names)
        self.session_values = self._stored_session_settings()
        self.params = ss.apply(self.params, self.session_values, self.tools.schemas())
        # one console change at a time: each reads the values, awaits the store, then sets them
        self._settings_lock = trio.Lock()
        self.quart = self._build_quart()
        self.console_auth.log_state()
        self.metrics.bind_calls(lambda: self.calls)
        self.metrics.bind_pending(lambda: len(self.pending))
        interrupted = self.store.store.mark_interrupted()
        if interrupted:
            log.warning("%d call(s) were still active in %s from a previous run (killed?): marked interrupted",
                        interrupted, s.database_path)

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "websocket" and scope["path"] == "/media-stream":
            await self.media_stream(scope, receive, send)
        elif self.mcp is not None and kind == "http" and self.mcp.handles(scope["path"]):
            await self.mcp(scope, receive, send)
        elif self.mcp is not None and kind == "lifespan":
            async with self.mcp.running():  # MCP sessions live in the server's nursery, for its whole life
                await self.quart(scope, receive, send)
        else:
            await self.quart(scope, receive, send)

    def _build_mcp(self) -> "McpHttp | None":
        """``/mcp`` when the console token is set (the SDK is imported only then)."""
        if not self.console_auth.enabled:
            return None
        from .mcp_http import McpHttp

        return McpHttp(self.store, self.console_auth)

    async def media_stream(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """``/media-stream`` through plain ASGI, for running BridgeApp under any ASGI server.

        ``callsim bridge`` does not come here: :mod:`.frontdoor` takes the media
        stream off hypercorn's ASGI path (it is the hot path); the checks and the
        call are the same (:meth:`media_stream_refusal`, :meth:`run_call`).
        """
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        client = scope.get("client") or ("?", 0)
        peer = f"{client[0]}:{client[1]}"
        refusal = self.media_stream_refusal(_header(scope, b"x-twilio-signature"), peer)
        if refusal is not None:
            await _reject(send, refusal[0], refusal[1].encode())
            return
        await send({"type": "websocket.accept"})
        await self.run_call(AsgiWebSocket(receive, send), peer=peer)

    def media_stream_refusal(self, signature: str | None, peer: str) -> tuple[int, str] | None:
        """Why a media-stream handshake is refused (HTTP status, body), or None to accept."""
        s = self.settings
        if s.twilio_auth_token is not None:
            if not stream_signature_ok(s.twilio_auth_token.get_secret_value(), s.stream_url, signature):
                self.count_error("stream_signature")
                log.warning("media stream refused: bad X-Twilio-Signature from %s", peer)
                return 403, "invalid signature"
        if len(self.calls) >= s.max_concurrent_calls:
            self.metrics.busy()
            return 503, "busy"
        if len(self.pending) >= s.max_pending_streams:
            self.count_error("pending_streams_full")
            log.warning("media stream refused: %d streams from %s and others are waiting for their start",
                        len(self.pending), peer)
            return 503, "busy"
        return None

    async def run_call(self, twilio: TwilioSocket, *, peer: str = "?") -> None:
        """One media stream, from the accepted upgrade to its end: pending until a valid start
        (:meth:`call_started`), a call from then on (and in the store).

        ``peer`` ("host:port") names the call in logs until its ``start`` gives it
        an id; by default it is the socket's own (:attr:`.wsconn.WebSocket.peer`).

        Nothing a call does may leave this method: a call's connection task is
        a child of the server's nursery, so an exception escaping here would
        end the process and every other call with it. The driver catches a bug
        in any of the call's tasks itself (:meth:`.CallDriver._guarded`); this
        is the last line, for a bug in the driver's own clean-up. Either way it
        is logged with its traceback and counted (``errors_total{kind="internal"}``).
        """
        s = self.settings
        if peer == "?":
            peer = getattr(twilio, "peer", "?")
        transcoder = Transcoder(s.resample_quality) if s.audio_mode == "transcode" else None
        core = self.core_class(self.params, transcoder=transcoder, apology_ulaw=APOLOGY, ai_greeting=s.ai_greeting,
                               watch_limits=self.watch_limits, peer=peer, control=self.control)
        driver = self.driver_class(self, core, twilio, peer=peer)
        self.pending.add(core)
        t_start = time.monotonic()
        try:
            await driver.run()
        except* Exception:  # Cancelled (a BaseException) still propagates: shutdown works
            self.count_error("internal")
            log.exception("call %s: internal error; the call is ended, the bridge carries on", core.tag)
        finally:
            core.flush_logs(time.monotonic_ns())
            self.pending.discard(core)
            admitted = core in self.calls
            self.calls.discard(core)
            self._started_at.pop(core, None)
            if admitted:
                self.metrics.call_ended(core.stats)
            else:
                self.metrics.stream_ended(core.stats)
            self._calls_changed.set()
            self._calls_changed = trio.Event()
            if admitted and core.call_sid:  # a refused stream's CallSid may be a live call's: never touch it
                status = driver.end_status or ("completed" if core.ended else "failed")
                self.feed.publish(core.call_sid, "call_ended", status=status,
                                  duration_s=round(time.monotonic() - t_start, 1),
                                  barge_ins=core.stats["barge_ins"], tool_calls=core.stats["tool_calls"])
                with trio.CancelScope(shield=True):
                    try:
                        await self.store.end_call(core.call_sid, status)
                    except Exception:
                        log.exception("call %s: could not record the end of the call", core.tag)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no call is active and no stream pending; False on timeout (a leak)."""
        with trio.move_on_after(timeout):
            while self.calls or self.pending:
                await self._calls_changed.wait()
            return True
        return False

    # ------------------------------------------------------ call callbacks

    async def call_started(self, driver: CallDriver, a: CallStarted) -> bool:
        """Take the per-call token, make the stream a call, record it. False = refuse the stream."""
        s = self.settings
        token = a.parameters.get("token")
        if token is not None or s.stream_token_required:
            verdict = self.tokens.redeem(a.call_sid, token, time.time())
            if verdict != "ok":
                self.count_error("call_token" if verdict in ("missing", "invalid") else f"call_token_{verdict}")
                log.warning("call %s: stream from %s refused: %s", driver.tag, driver.peer, _TOKEN_REFUSALS[verdict])
                return False
        if len(self.calls) >= s.max_concurrent_calls:  # streams that raced past the webhook's check
            self.metrics.busy()
            log.warning("call %s: stream refused: all %d lines are busy", driver.tag, s.max_concurrent_calls)
            return False
        self.pending.discard(driver.core)
        self.calls.add(driver.core)
        self._started_at[driver.core] = time.time()
        self.metrics.call_started()
        self.feed.publish(a.call_sid, "call_started", stream_sid=a.stream_sid,
                          from_number=a.parameters.get("from", ""), to_number=a.parameters.get("to", ""),
                          voice=driver.core.p.voice)
        try:
            await self.store.start_call(a.call_sid, a.stream_sid, a.parameters.get("from", ""),
                                        a.parameters.get("to", ""))
        except Exception:
            log.exception("call %s: could not record the call", a.call_sid)
        return True

    async def save_transcript(self, core: CallCore, t: SaveTranscript) -> None:
        if not core.call_sid:
            return
        self.feed.publish(core.call_sid, "transcript", role=t.role, item_id=t.item_id, text=t.text,
                          truncated=t.truncated, audio_end_ms=t.audio_end_ms)
        try:
            await self.store.put_utterance(core.call_sid, t.item_id, t.role, t.text,
                                           truncated=t.truncated, audio_end_ms=t.audio_end_ms)
        except Exception:
            log.exception("call %s: could not store a transcript", core.tag)

    async def run_tool(self, name: str, arguments: str, *, call_tag: str = "?") -> str:
        self.feed.publish(call_tag, "tool_call", name=wire(name, 64), arguments=_clip(arguments))
        t0 = time.monotonic()
        output = await self.tools.call(name, arguments, self.settings.tool_timeout_s, call_tag=call_tag)
        # The name comes from the model: only registered names become a metric label, so
        # made-up names cannot grow the metric's series without bound.
        label = name if name in self.tools else "unknown"
        ok = not output.startswith('{"error"')
        self.metrics.tool_call(label, "ok" if ok else "error")
        self.feed.publish(call_tag, "tool_result", name=wire(name, 64), output=_clip(output), ok=ok,
                          ms=round((time.monotonic() - t0) * 1000))
        return output

    async def transfer_call(self, core: CallCore) -> tuple[str | None, str]:
        """Redirect the call to ``TRANSFER_NUMBER`` (:mod:`.transfer`): (why it failed or None, the number)."""
        if self.transfers is None:
            return "no TRANSFER_NUMBER is set", ""
        t0 = time.monotonic()
        error = await self.transfers.redirect(core.call_sid or "")
        ms = round((time.monotonic() - t0) * 1000)
        if error is None:
            log.info("call %s: redirected to %s over Twilio's REST API (%d ms)", core.tag, self.transfers.number, ms)
            self.metrics.tool_call(TRANSFER_CALL, "ok")
        else:
            log.warning("call %s: transfer to %s failed after %d ms: %s; the call goes on", core.tag,
                        self.transfers.number, ms, error)
            self.metrics.tool_call(TRANSFER_CALL, "error")
            self.count_error("transfer")
        return error, self.transfers.number

    def count_error(self, kind: str) -> None:
        self.metrics.error(kind)

    def notice(self, core: CallCore, n: Notice) -> None:
        """What the call core wants the live feed to show (a barge-in, an OpenAI fault)."""
        if core.call_sid:
            self.feed.publish(core.call_sid, n.kind, **n.data)

    # ------------------------------------------------------------- console

    def active_calls(self) -> list[dict[str, Any]]:
        """The calls in progress, oldest first: caller, callee, start (epoch s) and state."""
        out = []
        for core, started in sorted(self._started_at.items(), key=lambda kv: kv[1]):
            state = "ending" if core.ending else "live" if core.openai_ready else "connecting"
            out.append({"call_sid": core.call_sid, "from_number": core.parameters.get("from", ""),
                        "to_number": core.parameters.get("to", ""), "started": started, "state": state,
                        "barge_ins": core.stats["barge_ins"], "tool_calls": core.stats["tool_calls"]})
        return out

    def _stored_session_settings(self) -> ss.SessionSettings:
        """The configured session settings with the console's stored changes over them."""
        stored = self.store.store.console_settings()
        if not stored:
            return self.session_configured
        try:
            values = ss.merged(self.session_configured, stored, self._tool_names)
        except (ss.ValidationError, ValueError) as exc:  # e.g. a tool no longer registered
            log.warning("console settings in %s ignored (%s): the configured ones apply",
                        self.settings.database_path, ss.describe(exc))
            return self.session_configured
        log.info("console settings from %s override the configured %s (reset them from the console)",
                 self.settings.database_path, ", ".join(sorted(k.upper() for k in stored)))
        return values

    def settings_view(self) -> dict[str, Any]:
        values = self.session_values.model_dump()
        configured = self.session_configured.model_dump()
        return {"values": values, "configured": configured,
                "overridden": sorted(k for k in values if values[k] != configured[k]),
                "tools_available": self._tool_names}

    async def change_session_settings(self, changes: dict[str, Any] | None, *, who: str) -> list[str]:
        """Apply ``changes`` to NEW calls (None: back to the configured values), store them, log
        who did it. Running calls keep the parameters they were built with. Returns what changed.

        Serialised: two changes at once would both start from the same values (the first one lost)
        and could leave the store and the running bridge with different ones.
        """
        async with self._settings_lock:
            before = self.session_values
            values = self.session_configured if changes is None else ss.merged(before, changes, self._tool_names)
            changed = sorted(k for k, v in values.model_dump().items() if v != getattr(before, k))
            await self.store.put_console_settings(ss.overrides_of(values, self.session_configured), who)
            self.session_values = values
            self.params = ss.apply(self.params, values, self.tools.schemas())
        log.info("console: session settings %s by %s: %s (new calls only)",
                 "reset" if changes is None else "changed", who, ", ".join(changed) or "nothing changed")
        return changed

    # ------------------------------------------------------------- HTTP

    def _build_quart(self) -> QuartTrio:
        app = QuartTrio("callsim-bridge")
        s = self.settings

        @app.route("/incoming-call", methods=["GET", "POST"])
        async def incoming_call():  # type: ignore[no-untyped-def]
            params = (await request.form).to_dict() if request.method == "POST" else request.args.to_dict()
            if s.twilio_auth_token is not None:
                url = s.public_url.rstrip("/") + request.path
                if request.query_string:
                    url += "?" + request.query_string.decode()
                if not webhook_signature_ok(s.twilio_auth_token.get_secret_value(), url,
                                            params if request.method == "POST" else {},
                                            request.headers.get("X-Twilio-Signature")):
                    self.count_error("webhook_signature")
                    log.warning("webhook refused: bad X-Twilio-Signature for %s (from %s)", wire(url, 200),
                                request.remote_addr)
                    return Response("invalid signature", status=403, content_type="text/plain")
            if len(self.calls) >= s.max_concurrent_calls:
                self.metrics.busy()
                return Response(busy_twiml(s.busy_message), content_type="text/xml")
            call_sid = params.get("CallSid", "")
            parameters = {"callSid": call_sid, "token": self.tokens.issue(call_sid, time.time()),
                          "from": params.get("From", ""), "to": params.get("To", "")}
            return Response(connect_twiml(s.stream_url, parameters, greeting=s.greeting_say),
                            content_type="text/xml")

        @app.get("/health")
        async def health():  # type: ignore[no-untyped-def]
            return {"status": "ok", "active_calls": len(self.calls), "pending_streams": len(self.pending)}

        @app.get("/metrics")
        async def metrics():  # type: ignore[no-untyped-def]
            body, ctype = self.metrics.render()
            return Response(body, content_type=ctype)

        console.install(self, app)
        register_number_routes(app, self.numbers, self.console_auth)
        return app


_TOKEN_REFUSALS = {
    "missing": "no per-call token (the TwiML's <Parameter name=\"token\">)",
    "invalid": "wrong per-call token (not ours, or not for this CallSid)",
    "expired": "per-call token expired",
    "reused": "per-call token already used (replayed TwiML parameters)",
}


def _clip(text: str, limit: int = 4000) -> str:
    """A tool's arguments or output for the feed: bounded (the model and the tool choose its size)."""
    return text if len(text) <= limit else text[:limit] + " …"


def _say_seconds(text: str | None) -> float:
    """How long Twilio may take to speak ``text`` (a slow 100 words a minute): the stream opens after it."""
    return len(text.split()) * 0.6 if text else 0.0


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return v.decode("latin-1")
    return None


async def _reject(send: Any, status: int, body: bytes) -> None:
    await send({"type": "websocket.http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "websocket.http.response.body", "body": body})


class AsgiWebSocket:
    """An ASGI WebSocket seen through the driver's :class:`TwilioSocket` interface."""

    def __init__(self, receive: Any, send: Any) -> None:
        self._receive = receive
        self._send = send
        self._lock = trio.StrictFIFOLock()  # the call's tasks send concurrently
        self._closed = False

    async def receive_message(self) -> str | bytes:
        msg = await self._receive()
        if msg["type"] == "websocket.receive":
            text = msg.get("text")
            return text if text is not None else msg.get("bytes") or b""
        self._closed = True
        raise ConnectionClosed(msg.get("code", 1005), "disconnected")

    async def send_text(self, text: str) -> None:
        if self._closed:
            raise ConnectionClosed(1006, "closed")
        async with self._lock:
            try:
                await self._send({"type": "websocket.send", "text": text})
            except Exception as exc:  # hypercorn raises on a socket that went away
                self._closed = True
                raise ConnectionClosed(1006, type(exc).__name__) from exc

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._send({"type": "websocket.close", "code": code})
        except Exception:
            pass
