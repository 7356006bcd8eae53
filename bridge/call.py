"""One phone call through the bridge: a sans-IO state machine.

The driver feeds it Twilio and OpenAI messages (and the outcome of things it
asked for: the OpenAI socket opening or failing, a tool's result) and carries
out the :class:`Action`\\ s it returns. No sockets, no clock of its own, so every
decision below is testable with synthetic times.

What it does better than the seeds (protocols.md part 3):

* **Nothing before the session is configured**: the OpenAI socket is opened
  when the stream starts and ``session.update`` goes first; caller audio that
  arrives before ``session.updated`` is buffered (bounded), never dropped or
  sent in the wrong format.
* **Barge-in from what the caller actually heard.** Every audio delta forwarded
  to Twilio is followed by a *named* mark ``gen:item:end_byte``. An echoed mark
  of the current playback generation says exactly how much of that item has
  played; between marks, playback advances at 8 bytes/ms, capped at the next
  unacknowledged mark. On ``speech_started`` the bridge computes
  ``audio_end_ms`` from that *before* sending ``clear``, clamps it to the audio
  received for the item, skips the truncate if nothing is playing, bumps the
  generation (so marks echoed by the clear are ignored), drops late deltas of
  the cancelled response, and sends ``response.cancel`` only when the server
  will not cancel by itself (``interrupt_response`` off).
* **Never dead air**: if OpenAI refuses, fails or drops, the caller hears a
  short apology and the stream is closed. A reply that does not come, a
  response that stops mid-way with the socket open, or one that fails twice
  is caught by :mod:`.response_watch` (a failed one is asked for once more);
  the driver calls :meth:`CallCore.tick` at :meth:`CallCore.response_deadline_ns`.
* **Nothing from the wire is trusted**: ``start`` is checked whole before any
  state changes (:mod:`.twilio_start`); every buffer a peer can fill is bounded
  in bytes, not only in count; wire values reach log lines only through
  :func:`.logsafe.wire`, and bad-message warnings are rate-limited per
  connection (:class:`.logsafe.WarnLimiter`), each naming the call — or, before
  ``start``, the peer's address.

The class is one state machine in three files, each a base class of :class:`CallCore`:
:mod:`.call_playback` (reply audio to Twilio, the transcript, barge-in), :mod:`.call_endings`
(keys, a silent caller, goodbyes, transfers) and this one (Twilio's and OpenAI's messages, the
watch, tools, the end); the bounded wire values they share are :mod:`.call_values`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections import deque
from typing import Any, Callable

import orjson

from . import realtime as rt
from . import twilio_wire as tw
from .call_control import END_CALL, TRANSFER_CALL, CallControl
from .call_endings import CallEndingsPart
from .call_playback import CallPlaybackPart
from .call_values import MAX_REMEMBERED, is_b64, remember, response_details, wire_id, wire_str, wire_transcript
from .actions import (  # noqa: F401 (re-exported: the driver, the app and tests import them from here)
    Action, CallStarted, CloseOpenAI, ConnectOpenAI, Hangup, Notice, RunTool, SaveTranscript, ToOpenAI, ToTwilio,
    TransferCall,
)
from .item_playback import MAX_PENDING_MARKS, ItemPlayback  # noqa: F401 (the bound, re-exported)
from .logsafe import WarnLimiter, wire
from .realtime import NAMES, OUTPUT_BYTES_PER_MS, SessionParams
from .response_watch import ResponseWatch, Verdict, WatchLimits
from .silence import SilenceWatch
from .twilio_start import BadStart, parse_start

log = logging.getLogger("callsim.bridge.call")

# Caller audio held while the OpenAI session is being set up: 10 s, bounded in
# bytes too (500 frames of 1 MB each was 477 MB per unauthenticated connection).
MAX_EARLY_FRAMES = 500
MAX_EARLY_MS = 10_000
# One media payload: Twilio sends 160 bytes (216 base64 chars) every 20 ms. A
# payload over a second of audio is not Twilio's, and is refused as a bad message.
MAX_MEDIA_CHARS = 10_668  # base64 of 8000 μ-law bytes
# What OpenAI can make the call hold (it is a peer too, and can be buggy):
MAX_TOOL_ARGS_CHARS = 64 * 1024
MAX_PENDING_TOOLS = 8
MAX_TOOL_NAME_CHARS = 64  # OpenAI's own limit for a function name


class CallCore(CallPlaybackPart, CallEndingsPart):
    def __init__(self, params: SessionParams, *, transcoder: Any = None, apology_ulaw: bytes = b"",
                 ai_greeting: str | None = None, watch_limits: WatchLimits | None = None,
                 peer: str | None = None, control: CallControl | None = None) -> None:
        self.p = params
        self.control = c = control or CallControl()
        self.silence = SilenceWatch(c.silence_reprompt_s, c.silence_max_prompts)
        self._end_call: tuple[str, str | None] | None = None  # (call id, response id) of an end_call
        self.hangup_after: str | None = None  # why the call ends once the response under way is done
        # a transfer_call under way: (call id, response id, whether its output was sent) and its phase:
        # asked (the phrase is this response or the next) > phrase (the next response is the phrase)
        # > playing (waiting for the mark after it) > redirecting (REST under way) > done
        self._transfer: tuple[str, str | None, bool] | None = None
        self.transfer_phase: str | None = None
        self.names = NAMES[params.dialect]
        self.out_bpm = OUTPUT_BYTES_PER_MS[params.audio_mode]
        self.transcoder = transcoder
        if params.audio_mode == "transcode" and transcoder is None:
            raise ValueError("transcode mode needs a transcoder")
        self.apology = apology_ulaw
        self.ai_greeting = ai_greeting
        self.peer = peer  # "host:port" of the Twilio side: names the call in logs before `start`

        self.call_sid: str | None = None
        self.stream_sid: str | None = None
        self.parameters: dict[str, str] = {}
        self.openai_ready = False
        self.openai_open = False
        self.ending = False
        self.ended = False
        # set by the driver when it renews sessions (.renewal_driver): a session_expired is then its
        # to handle (switch to the next session), not the end of the call
        self.on_session_expired: Callable[[int], None] | None = None
        self._early: deque[str] = deque()  # payloads before session.updated
        self._early_bytes = 0  # decoded bytes in _early
        self._early_max_bytes = MAX_EARLY_MS * self.out_bpm  # OpenAI's input format = its output format
        self.early_dropped = 0
        #: frames_in - early_dropped when the current session's input clock began (its audio_start_ms
        #: count from there): 0 for the first session, moved at each switch (.renewal)
        self.frames_base = 0

        self.gen = 0  # playback generation, bumped by every clear
        self._seq = 0
        self.items: dict[str, ItemPlayback] = {}
        self._by_seq: dict[int, ItemPlayback] = {}
        # Items Twilio has been given and not finished playing, in playback order:
        # a second reply can be queued behind one still playing (e.g. "let me check"
        # then the answer after a tool call).
        self.queue: deque[ItemPlayback] = deque()
        self.active_response: str | None = None
        # ordered sets (dicts), the oldest forgotten past MAX_REMEMBERED
        self._dropped_responses: dict[str, None] = {}
        self._dropped_items: dict[str, None] = {}
        self._pending_tools: set[str] = set()
        self._want_response = False
        self._tool_names: dict[str, str] = {}
        self.stats: dict[str, int] = {
            "frames_in": 0, "frames_out": 0, "barge_ins": 0, "truncates": 0, "truncate_errors": 0,
            "marks_ignored": 0, "deltas_dropped": 0, "openai_errors": 0, "twilio_bad": 0, "openai_bad": 0,
            "tool_calls": 0, "response_retries": 0, "response_stalls": 0, "log_suppressed": 0,
        }
        self.watch_limits = watch_limits
        self.watch = ResponseWatch(watch_limits)
        self.truncates: deque[dict[str, Any]] = deque(maxlen=MAX_REMEMBERED)
        self._twilio_warn = WarnLimiter(log, "ignoring bad Twilio message")
        self._openai_warn = WarnLimiter(log, "ignoring bad OpenAI message")
        self._openai_err_warn = WarnLimiter(log, "OpenAI error")
        self._dtmf_log = WarnLimiter(log, "DTMF", burst=32, level=logging.INFO)

    @property
    def tag(self) -> str:
        """The call in log lines: its CallSid, its StreamSid, or before ``start`` its peer.

        Safe to print as is: the SIDs passed :data:`.twilio_start.SID` before being set.
        """
        if self.call_sid or self.stream_sid:
            return self.call_sid or self.stream_sid  # type: ignore[return-value]
        return f"? (peer {self.peer})" if self.peer else "?"

    def _warn(self, limiter: WarnLimiter, now_ns: int, why: str) -> None:
        if not limiter.warn(now_ns, self.tag, why):
            self.stats["log_suppressed"] += 1

    # ============================================================ Twilio side

    def twilio_message(self, now_ns: int, data: str | bytes) -> list[Action]:
        if isinstance(data, (bytes, bytearray)):
            return self._bad_twilio(now_ns, f"binary frame {wire(data, 40)}")
        try:
            msg = orjson.loads(data)
            event = msg["event"]
        except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
            return self._bad_twilio(now_ns, f"not a Twilio event: {wire(data, 80)}")
        try:
            if event == "media":
                return self._twilio_media(now_ns, msg["media"]["payload"])
            if event == "mark":
                return self._twilio_mark(now_ns, msg["mark"]["name"])
            if event == "start":
                return self._twilio_start(msg)
            if event == "stop":
                return self._end("call transferred" if self.transfer_phase == "done" else "caller hung up")
            if event == "connected":
                return []
            if event == "dtmf":
                digit = msg["dtmf"]["digit"]
                if not isinstance(digit, str) or not digit:
                    raise TypeError("dtmf.digit is not a string")
                self._warn(self._dtmf_log, now_ns, wire(digit, 8))
                return self._dtmf(now_ns, digit)
        except BadStart as exc:
            return self._bad_twilio(now_ns, f"malformed start: {exc}")
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            return self._bad_twilio(now_ns, f"malformed {wire(event, 40)}: {type(exc).__name__} {wire(str(exc))}")
        return self._bad_twilio(now_ns, f"unknown event {wire(event, 40)}")

    def _bad_twilio(self, now_ns: int, why: str) -> list[Action]:
        """Count it, log it (rate-limited), carry on: Twilio itself just ignores what it cannot use."""
        self.stats["twilio_bad"] += 1
        self._warn(self._twilio_warn, now_ns, why)
        return []

    def _twilio_start(self, msg: dict[str, Any]) -> list[Action]:
        """Start the call: every field is checked first, so a bad start changes nothing.

        A well-formed start in a format the bridge cannot play (anything but
        8 kHz mono μ-law: it forwards the caller's bytes to OpenAI as ``pcmu`` and
        Twilio's to the caller as they come) ends the stream at once: no OpenAI
        session is opened, the caller is not left in silence, and Twilio moves on
        to the TwiML after ``<Connect>``.
        """
        if self.stream_sid is not None:
            raise BadStart("a second start on one stream")
        if self.ending:
            raise BadStart("a start after the stream was refused or ended")
        start = parse_start(msg)
        if not start.playable:
            self.ending = True
            log.warning("call %s: refusing stream %s (call %s): media format %s, the bridge plays only "
                        "8 kHz mono audio/x-mulaw", self.tag, start.stream_sid, start.call_sid or "?",
                        wire(start.format_text))
            return [Hangup("unsupported media format")]
        self.stream_sid, self.call_sid, self.parameters = start.stream_sid, start.call_sid, start.parameters
        log.info("call %s: stream %s started", self.tag, self.stream_sid)
        return [CallStarted(self.call_sid or "", self.stream_sid, self.parameters), ConnectOpenAI()]

    def _twilio_media(self, now_ns: int, payload: str) -> list[Action]:
        if not isinstance(payload, str):
            raise TypeError("payload is not a string")
        if len(payload) > MAX_MEDIA_CHARS:
            raise ValueError(f"payload of {len(payload)} chars (Twilio sends 216; at most {MAX_MEDIA_CHARS})")
        if self.transcoder is None and not is_b64(payload):
            raise ValueError("payload is not base64")
        self.stats["frames_in"] += 1
        if self.ending or not payload:  # an empty media message carries no audio: nothing to append
            return []
        if self.transcoder is not None:
            try:
                pcm = self.transcoder.inbound(base64.b64decode(payload, validate=True))
            except (binascii.Error, ValueError):
                return self._bad_twilio(now_ns, "media payload is not base64")
            if not pcm:  # the resampler is holding this frame back: nothing to append yet
                return []
            payload = base64.b64encode(pcm).decode("ascii")
        if not self.openai_ready:
            self._early.append(payload)
            self._early_bytes += tw.b64_len(payload)
            while len(self._early) > MAX_EARLY_FRAMES or self._early_bytes > self._early_max_bytes:
                self._early_bytes -= tw.b64_len(self._early.popleft())
                self.early_dropped += 1
            return []
        return [ToOpenAI(rt.append(payload))]

    def _twilio_mark(self, now_ns: int, name: str) -> list[Action]:
        if name == "apology" or name == "goodbye":
            return [Hangup(f"{name} played")] if self.ending else []
        try:
            gen_s, seq_s, end_s = name.split(":")
            gen, seq, end = int(gen_s), int(seq_s), int(end_s)
        except ValueError:
            if name == "transfer":  # checked here, off the path of the playback marks
                return self._redirect_now("the pre-transfer phrase played")
            self.stats["marks_ignored"] += 1
            return []
        item = self._by_seq.get(seq)
        if gen != self.gen or item is None:
            self.stats["marks_ignored"] += 1  # echoed by a clear: says nothing about playback
            return []
        while item.pending and item.pending[0] <= end:
            item.pending.popleft()
        if end > item.acked:
            item.acked = end
            item.t_ref_ns = now_ns
        # Finished items leave the queue; the next one starts playing now.
        while self.queue and not self.queue[0].playing:
            self.queue.popleft()
            if self.queue and self.queue[0].acked == 0:
                self.queue[0].t_ref_ns = now_ns
        if not self.queue:
            self.silence.quiet_from(now_ns)  # the assistant's audio has played out
        return []

    # ============================================================ OpenAI side

    def openai_opened(self, now_ns: int) -> list[Action]:
        self.openai_open = True
        return [ToOpenAI(rt.session_update(self.p))]

    def openai_failed(self, now_ns: int, reason: str) -> list[Action]:
        """Could not connect, or the socket broke: apologise and end the call."""
        self.openai_open = False
        self.openai_ready = False
        if self.ended or self.ending:
            return []
        log.error("call %s: OpenAI session failed: %s", self.tag, wire(reason, 200))
        self.stats["openai_errors"] += 1
        return [*self._apologise(reason), Notice("openai_fault", {"reason": wire(reason, 200)})]

    def _apologise(self, reason: str, *, cut: bool = True) -> list[Action]:
        """The apology, then hang up. ``cut=False`` when what is queued at Twilio has (by the
        estimate) played out: a ``clear`` would only chop the last word whose mark is in flight."""
        self.ending = True
        actions: list[Action] = []
        if self.stream_sid is None:
            return [Hangup(reason), CloseOpenAI(reason)]
        if cut and any(i.playing for i in self.queue):
            actions.append(ToTwilio(tw.clear(self.stream_sid)))
            self.gen += 1
        if self.apology:
            actions.append(ToTwilio(tw.media(self.stream_sid, base64.b64encode(self.apology).decode("ascii"))))
            actions.append(ToTwilio(tw.mark(self.stream_sid, "apology")))
            actions.append(Hangup(reason, after_mark="apology"))
        else:
            actions.append(Hangup(reason))
        actions.append(CloseOpenAI(reason))
        return actions

    def openai_message(self, now_ns: int, data: str | bytes) -> list[Action]:
        try:
            ev = orjson.loads(data)
            etype = ev["type"]
            if not isinstance(etype, str):
                raise TypeError("type is not a string")
        except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
            self.stats["openai_bad"] += 1
            self._warn(self._openai_warn, now_ns, f"not an event: {wire(data, 80)}")
            return []
        self.watch.event(now_ns)
        try:
            if etype == self.names.audio_delta:
                return self._delta(now_ns, ev)
            if etype == "input_audio_buffer.speech_started":
                self.silence.caller_started()
                return self._speech_started(now_ns, ev.get("audio_start_ms"))
            if etype == "input_audio_buffer.speech_stopped":
                self.silence.caller_stopped(now_ns)
                return []
            if etype == "response.created":
                self.active_response = wire_id(ev["response"]["id"])
                self.watch.created(now_ns, self.active_response)
                return []
            if etype == "response.done":
                return self._response_done(now_ns, ev)
            if etype == "input_audio_buffer.committed":
                self.watch.committed(now_ns)
                self.silence.caller_stopped(now_ns)
                return []
            if etype == self.names.audio_done:
                return self._audio_done(now_ns, ev)
            if etype == self.names.transcript_done:
                return self._assistant_transcript(ev)
            if etype == "conversation.item.input_audio_transcription.completed":
                return [SaveTranscript(wire_id(ev["item_id"]), "caller", wire_transcript(ev.get("transcript") or ""))]
            if etype == "response.function_call_arguments.done":
                return self._tool_call(now_ns, ev)
            if etype == "session.updated":
                return self._session_ready(now_ns)
            if etype == "error":
                return self._openai_error(now_ns, ev.get("error") or {})
            if etype == "response.output_item.added":
                item = ev.get("item") or {}
                if item.get("type") == "function_call":
                    name = wire_str(item.get("name", ""))
                    if len(name) > MAX_TOOL_NAME_CHARS:
                        raise ValueError(f"a tool name of {len(name)} chars")
                    remember(self._tool_names, wire_id(item["id"]), name)
                return []
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            self.stats["openai_bad"] += 1
            self._warn(self._openai_warn, now_ns,
                       f"malformed {wire(etype, 60)}: {type(exc).__name__} {wire(str(exc))}")
        return []

    def _session_ready(self, now_ns: int) -> list[Action]:
        if self.openai_ready:
            return []
        self.openai_ready = True
        actions: list[Action] = [ToOpenAI(rt.append(p)) for p in self._early]
        self._early.clear()
        self._early_bytes = 0
        if self.early_dropped:
            log.warning("call %s: dropped %d early frames (session set-up took > %d ms)",
                        self.tag, self.early_dropped, MAX_EARLY_MS)
        if self.ai_greeting:
            actions += [ToOpenAI(rt.user_text(self.ai_greeting)), ToOpenAI(rt.response_create())]
            self.watch.asked(now_ns)
        return actions

    def _openai_error(self, now_ns: int, err: dict[str, Any]) -> list[Action]:
        code = err.get("code")
        self.stats["openai_errors"] += 1
        if code in ("conversation_already_has_active_response", "response_cancel_not_active"):
            log.info("call %s: OpenAI: %s (benign)", self.tag, code)
            return []
        message = err.get("message", "")
        message = message[:1000] if isinstance(message, str) else ""
        if "truncat" in message.lower() or "shorter than" in message:
            self.stats["truncate_errors"] += 1
        self._warn(self._openai_err_warn, now_ns, f"{wire(code, 60)}: {wire(message, 200)}")
        if code == "session_expired" and self.on_session_expired is not None and not self.ending:
            self.on_session_expired(now_ns)  # the driver switches to the next session
            return []
        notice = Notice("error", {"source": "openai", "code": wire(code, 60), "message": wire(message, 200)})
        if code in ("beta_api_shape_disabled", "session_expired", "invalid_api_key"):
            return [*self._apologise(f"OpenAI error {code}"), notice]
        return [notice]

    def _response_done(self, now_ns: int, ev: dict[str, Any]) -> list[Action]:
        r = ev["response"]
        rid = r.get("id")
        if rid == self.active_response:
            self.active_response = None
        status = r.get("status")
        if status == "failed":
            self.stats["openai_errors"] += 1
        elif status == "incomplete":  # not retried: the same request would end the same way
            self._warn(self._openai_err_warn, now_ns, f"response {wire(rid, 60)} incomplete: {response_details(r)}")
        # A failed response the caller already talked over needs no second try: their turn comes next.
        verdict = self.watch.done(now_ns, rid, "cancelled" if rid in self._dropped_responses else status)
        if (self.hangup_after is not None or self._end_call is not None) and not self.ending:
            ending = self._goodbye_step(now_ns, rid)
            if ending is not None:
                return ending
        if self.transfer_phase in ("asked", "phrase") and not self.ending:
            step = self._transfer_step(now_ns, rid)
            if step is not None:
                return step
        if self._want_response and not self._pending_tools:
            self._want_response = False
            self.watch.asked(now_ns)
            return [ToOpenAI(rt.response_create())]
        if verdict is Verdict.RETRY and not self.ending:
            self.stats["response_retries"] += 1
            log.warning("call %s: response %s failed (%s); asking OpenAI once more", self.tag, wire(rid, 60), response_details(r))
            return [ToOpenAI(rt.response_create()),
                    Notice("openai_fault", {"reason": f"response failed ({response_details(r)}); asked once more"})]
        if verdict is Verdict.FAILED and not self.ending:
            log.error("call %s: response %s failed again (%s); apologising and ending the call",
                      self.tag, wire(rid, 60), response_details(r))
            return [*self._apologise("OpenAI response failed twice"),
                    Notice("openai_fault", {"reason": f"response failed twice ({response_details(r)}); call ended"})]
        if status == "failed":
            self._warn(self._openai_err_warn, now_ns, f"response {wire(rid, 60)} failed: {response_details(r)}")
        return []

    @property
    def tools_pending(self) -> bool:
        return bool(self._pending_tools)

    @property
    def caller_speaking(self) -> bool:
        """Between the session's speech_started and speech_stopped: kept once, by the silence watch."""
        return self.silence.caller_speaking

    def session_switched(self, now_ns: int, *, ready: bool) -> None:
        """The driver moved the call to a new OpenAI session (:mod:`.renewal`): forget what belonged
        to the old one. ``ready=False``: the new one is not configured yet, so caller audio is held
        (bounded, as before the first session) until its ``session.updated``; no greeting again."""
        self.ai_greeting = None
        self.silence.session_switched(now_ns)
        self.frames_base = self.stats["frames_in"] - self.early_dropped
        if self.active_response is not None:  # a forced switch mid-reply: that reply will not finish
            remember(self._dropped_responses, self.active_response)
            self.active_response = None
        self._pending_tools.clear()
        self._want_response = False
        self.watch = ResponseWatch(self.watch_limits)
        if not ready:
            self.openai_ready = False

    # ============================================================ the watch

    def response_deadline_ns(self) -> int | None:
        """When the driver must call :meth:`tick` (None: no reply is due, nothing to watch)."""
        if self.ending or not self.openai_ready:
            return None
        d = self.watch.deadline_ns()
        return d if d is not None else self._silence_deadline_ns()

    def tick(self, now_ns: int) -> list[Action]:
        """The driver's wake-up at :meth:`response_deadline_ns`: a reply that never came, or a
        response that stopped mid-way with the socket open, ends the call with the apology."""
        if self.ending or not self.openai_ready:
            return []
        if self.watch.deadline_ns() is None:
            quiet = self._silence_deadline_ns()
            return self._silent_caller(now_ns) if quiet is not None and now_ns >= quiet else []
        exp = self.watch.expired(now_ns)
        if exp is None:
            return []
        self.stats["response_stalls"] += 1
        self.stats["openai_errors"] += 1
        waited = exp.waited_ns / 1e9
        if exp.verdict is Verdict.SILENT:
            log.error("call %s: OpenAI silent: no reply audio %.1f s after it was due (response %s);"
                      " apologising and ending the call", self.tag, waited, wire(exp.response_id, 60) if exp.response_id else "never created")
        else:
            log.error("call %s: OpenAI stalled: response %s sent nothing for %.1f s before it was done;"
                      " apologising and ending the call", self.tag, wire(exp.response_id, 60), waited)
        # the deadline is never before the queued audio's estimated end: nothing left to clear
        return [*self._apologise(f"OpenAI {exp.verdict.value}", cut=False),
                Notice("openai_fault", {"reason": f"OpenAI {exp.verdict.value} for {waited:.1f} s; call ended"})]

    # =================================================================== tools

    def _tool_call(self, now_ns: int, ev: dict[str, Any]) -> list[Action]:
        call_id = wire_id(ev["call_id"])
        # GA names the function here; beta only in response.output_item.added
        name = wire_str(ev.get("name") or self._tool_names.get(ev.get("item_id", ""), ""))
        arguments = wire_str(ev.get("arguments") or "{}")
        if len(name) > MAX_TOOL_NAME_CHARS:
            raise ValueError(f"a tool name of {len(name)} chars")
        if call_id in self._pending_tools:
            raise ValueError("a second call of a tool call still running")
        if name == END_CALL:
            return self._end_call_asked(call_id, ev.get("response_id"), arguments)
        if name == TRANSFER_CALL and self.control.transfer and self._transfer is None:
            return self._transfer_asked(call_id, ev.get("response_id"), arguments)
        self._pending_tools.add(call_id)
        self._want_response = True
        self.watch.tool_started()
        self.stats["tool_calls"] += 1
        # Answered, not dropped: the model waits for an output for every call it makes.
        if len(arguments) > MAX_TOOL_ARGS_CHARS:
            return self.tool_result(now_ns, call_id, orjson.dumps(
                {"error": f"arguments too long ({len(arguments)} chars, at most {MAX_TOOL_ARGS_CHARS})"}).decode())
        if len(self._pending_tools) > MAX_PENDING_TOOLS:
            return self.tool_result(now_ns, call_id, orjson.dumps(
                {"error": f"too many tool calls at once (at most {MAX_PENDING_TOOLS})"}).decode())
        return [RunTool(call_id, name, arguments)]

    def tool_result(self, now_ns: int, call_id: str, output: str) -> list[Action]:
        if call_id not in self._pending_tools or self.ending:
            return []
        self._pending_tools.discard(call_id)
        actions: list[Action] = [ToOpenAI(rt.tool_output(call_id, output))]
        if not self._pending_tools and self.active_response is None and self._want_response:
            self._want_response = False
            actions.append(ToOpenAI(rt.response_create()))
            self.watch.asked(now_ns)
        return actions

    # ================================================================ the end

    def _end(self, reason: str) -> list[Action]:
        if self.ended:
            return []
        self.ended = True
        self.ending = True
        log.info("call %s: ending: %s", self.tag, reason)
        return [CloseOpenAI(reason)]

    def twilio_closed(self, now_ns: int) -> list[Action]:
        self.flush_logs(now_ns)
        return self._end("Twilio stream closed")

    def flush_logs(self, now_ns: int) -> None:
        """Log the counts of warnings still held back by the rate limits (the call is over)."""
        for limiter in (self._twilio_warn, self._openai_warn, self._openai_err_warn, self._dtmf_log):
            limiter.flush(now_ns, self.tag)


