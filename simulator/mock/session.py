"""One mock Realtime session: a sans-IO state machine.

The driver (trio server, or a test) feeds it the time and each client message
and sends back what it returns; timers (think time, paced audio deltas,
transcription, faults) fire from :meth:`MockSession.advance` at
:meth:`MockSession.next_deadline_ns`. No sockets, no clock of its own — so the
whole behaviour is testable with synthetic times, and the same core could run
under any driver.

What it emulates (protocols.md part 2 and 3): session.created/updated, input
audio buffer with server VAD (speech_started/stopped, committed, the user item),
manual commit/clear (with the "buffer too small" error), conversation items,
responses with the dialect's full event sequence and audio deltas faster than
real time, barge-in cancellation (``turn_detected``), response.cancel, the
"already has an active response" and "cancel not active" errors, truncation
with the real errors, tool calls, input transcription of recognised fixtures,
echo mode, and injected faults.

Where real behaviour is unknown it is written down as such, not invented
silently: the event order after a cancel, the truncate error's code, what the
server does with input audio beyond any buffer limit.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import logging
import random
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..core_io import NOTHING, Outputs
from . import errors
from .audio import BYTES_PER_MS, InputConverter, decode, encode, fixture_audio
from .behaviour import Behaviour, Fault, ToolCall
from .dialect import NAMES, Dialect, looks_beta
from .fingerprint import BLOCK_MS, BlockPrints
from .ids import new_id
from .line_tags import LineTagLog
from .outputs import session_outputs
from .recognizer import Recognizer
from .schema import APPEND, ClientEventError, parse_client_event, validate_server_event
from .session_config import SessionConfig
from .vad import ServerVad, VadEvent, VadParams

log = logging.getLogger("callsim.mock")

MS = 1_000_000  # ns
MAX_LOG_EVENTS = 2000  # per session, for introspection
MAX_RECORDS = 500  # turns / responses / truncates / errors kept per session
MAX_TIMINGS = 60_000  # per-append / per-delta timestamps kept (20 minutes of 20 ms frames)
MAX_ITEMS = 5000  # conversation items kept per session (the oldest are forgotten)
MAX_IDLE_BUFFER_MS = 2000  # with VAD on, audio kept while nobody speaks
MAX_TURN_MS = 120_000  # longest user turn kept (memory bound per session)
MIN_COMMIT_MS = 100  # real: "Expected at least 100ms of audio"
MAX_RECORD_TEXT = 1000  # an error message kept for introspection (the one sent is whole)


@dataclass
class Item:
    id: str
    type: str  # message | function_call | function_call_output
    role: str | None = None
    status: str = "completed"
    content: list[dict[str, Any]] = field(default_factory=list)
    name: str | None = None
    call_id: str | None = None
    arguments: str | None = None
    output: str | None = None
    audio_ms_sent: float = 0.0  # assistant audio items: audio the client has been sent
    has_audio: bool = False
    # an item type the mock does not model (the GA MCP items a client may create), kept as given:
    # what the real server echoes for one is unconfirmed, but its own fields are what the SDK requires
    as_given: dict[str, Any] | None = None

    def wire(self, with_object: bool = True) -> dict[str, Any]:
        if self.as_given is not None:
            return {**self.as_given, "id": self.id, "type": self.type}
        d: dict[str, Any] = {"id": self.id, "type": self.type}
        if with_object:
            d["object"] = "realtime.item"
        if self.type == "message":
            d.update(status=self.status, role=self.role, content=[dict(c) for c in self.content])
        elif self.type == "function_call":
            d.update(status=self.status, name=self.name, call_id=self.call_id, arguments=self.arguments or "")
        elif self.type == "function_call_output":
            d.update(call_id=self.call_id, output=self.output or "")
        return d


@dataclass
class Response:
    id: str
    trigger: str  # vad | client
    plan: str | ToolCall | bytes  # fixture name, tool call, or raw echo audio (output format)
    t_trigger_ns: int
    think_ms: float
    fail: bool = False
    status: str = "in_progress"
    reason: str | None = None
    items: list[Item] = field(default_factory=list)
    audio: bytes = b""
    transcript: str = ""
    sent_bytes: int = 0
    words_sent: int = 0
    phase: str = "created"  # created | thinking | streaming | done
    t_created_ns: int | None = None
    t_first_audio_ns: int | None = None
    t_done_ns: int | None = None
    next_ns: int | None = None
    conversation: str = "auto"
    metadata: dict[str, str] | None = None
    index: int = 0  # 1-based count of responses in the session
    tool_not_declared: str | None = None  # the behaviour's tool, which the session never declared
    tools_declared: list[str] | None = None  # the function tools it did declare (set with the above)

    def record(self) -> dict[str, Any]:
        plan = self.plan
        undeclared = ({"tool_not_declared": self.tool_not_declared, "tools_declared": self.tools_declared}
                      if self.tool_not_declared is not None else {})
        return {**undeclared,
            "id": self.id, "trigger": self.trigger, "index": self.index,
            "reply": plan if isinstance(plan, str) else ("tool:" + plan.name if isinstance(plan, ToolCall) else "echo"),
            "status": self.status, "reason": self.reason, "think_ms": round(self.think_ms, 3),
            "t_trigger_ns": self.t_trigger_ns, "t_created_ns": self.t_created_ns,
            "t_first_audio_ns": self.t_first_audio_ns, "t_done_ns": self.t_done_ns,
            "audio_ms_total": len(self.audio) and round(self.audio_ms_total, 3),
            "audio_ms_sent": round(self.audio_ms_sent, 3),
            "item_ids": [i.id for i in self.items],
        }

    bytes_per_ms: int = 8

    @property
    def audio_ms_total(self) -> float:
        return len(self.audio) / self.bytes_per_ms

    @property
    def audio_ms_sent(self) -> float:
        return self.sent_bytes / self.bytes_per_ms


class MockSession:
    """State of one WebSocket session. See the module docstring."""

    def __init__(
        self,
        *,
        index: int = 1,
        dialect: Dialect | str = "ga",
        beta_header: bool = False,
        model: str = "gpt-realtime",
        behaviour: Behaviour | None = None,
        recognizer: Recognizer | None = None,
        rng: random.Random | None = None,
        validate_outgoing: bool = True,
        behaviour_tag: str | None = None,
    ) -> None:
        self.index = index
        # the tag of the queued behaviour this session got (None: the default), so the
        # harness can check each call ran its own scenario's behaviour
        self.behaviour_tag = behaviour_tag
        self.server_dialect = dialect  # ga | beta | auto
        self.beta_header = beta_header
        self.dialect: Dialect = "beta" if dialect == "beta" or (dialect == "auto" and beta_header) else "ga"
        self.names = NAMES[self.dialect]
        self.model = model
        self.behaviour = behaviour or Behaviour()
        seed = self.behaviour.seed
        self.rng = rng or random.Random(None if seed is None else f"{seed}:{index}")
        self.recognizer = recognizer
        self.validate_outgoing = validate_outgoing
        self.config = SessionConfig(self.dialect, _reportable_model(self.dialect, model), rng=self.rng)
        self.id = self.config.id
        self.conversation_id = new_id("conv", self.rng)
        self.faults = tuple(f for f in self.behaviour.faults if f.applies(index, self.rng))

        # input side
        self._converter_kind: str = self.config.input_format.kind
        self._converter = InputConverter(self._converter_kind)
        self._vad: ServerVad | None = None
        self._vad_params: VadParams | None = None
        self._vad_offset_ms = 0.0
        self._buffer = bytearray()  # uncommitted input audio, wire format
        self._buffer_start_ms = 0.0  # input-buffer clock at _buffer[0]
        self._input_ms = 0.0  # total input audio appended (the buffer clock)
        self._append_times: deque[tuple[float, int]] = deque(maxlen=500)  # (buffer ms at end of append, t_ns)
        self._speech_item_id: str | None = None
        self._speech_start_ms = 0
        self._user_turns = 0
        self._last_turn_audio: bytes = b""
        self._last_turn_kind = "pcmu"
        self._last_heard: str | None = None
        self._rebuild_input()

        # conversation
        self.items: dict[str, Item] = {}
        self.order: list[str] = []
        self.response: Response | None = None
        self._responses = 0
        self._pending_tool: ToolCall | None = None

        # timers: (due_ns, seq, callback)
        self._timers: list[tuple[int, int, Callable[[int, list[dict[str, Any]]], None]]] = []
        self._tseq = 0
        self.t_open_ns: int | None = None

        # what the driver must do
        self.close_request: tuple[int, str] | None = None  # send close frame with (code, reason)
        self.abort_request = False  # drop TCP without a close frame
        self.stalled = False
        self.closed = False

        # introspection
        self.log: deque[dict[str, Any]] = deque(maxlen=MAX_LOG_EVENTS)
        self.turns: list[dict[str, Any]] = []
        self.response_records: list[dict[str, Any]] = []
        self.truncates: list[dict[str, Any]] = []
        self.errors_sent: list[dict[str, Any]] = []
        self.invalid_sent: list[str] = []  # mock bugs: events failing SDK validation
        self.counts: dict[str, int] = {"appends": 0, "audio_in_bytes": 0, "events_in": 0, "events_out": 0,
                                       "audio_out_bytes": 0, "dropped_input_bytes": 0}
        self.close_info: dict[str, Any] | None = None
        self.append_ns = array("q")  # arrival of each input_audio_buffer.append
        self.delta_ns = array("q")  # emission of each audio delta
        self.blocks = BlockPrints(MAX_TIMINGS)  # arrival + CRC of each 20 ms block of input audio
        self.line_tags = LineTagLog()  # which calls' tagged idle line reached this session (μ-law only)

    # ================================================================ API

    def open(self, now_ns: int) -> Outputs:
        """The socket is open: ``session.created`` (or the beta refusal)."""
        self.t_open_ns = now_ns
        out: list[dict[str, Any]] = []
        if self.server_dialect == "ga" and self.beta_header:
            self._refuse_beta(now_ns, out, "OpenAI-Beta: realtime=v1 header")
            return session_outputs(self, now_ns, self._finish(now_ns, out))
        slow = self._fault("slow_start")
        if slow is not None:
            self._at(now_ns + int(slow.after_ms * MS), lambda t, o: self._emit(t, o, self._session_event("session.created")))
        else:
            self._emit(now_ns, out, self._session_event("session.created"))
        for f in self.faults:
            if f.kind == "error":
                code = f.code if f.code is not None else None
                self._at(now_ns + int(f.after_ms * MS),
                         lambda t, o, c=code: self._emit(t, o, errors.server_error() if c is None
                                                         else errors.error_event("Injected fault", code=str(c), type="server_error")))
            elif f.kind == "expire":
                self._at(now_ns + int(f.after_ms * MS), self._expire)
        return session_outputs(self, now_ns, self._finish(now_ns, out))

    def receive(self, now_ns: int, raw: str | bytes) -> Outputs:
        """One client message; returns what to send now (events serialised, then a close or abort).

        A message the mock itself cannot handle (an exception: a mock bug, found by the fuzzer)
        ends only this session — see :meth:`_internal_error` — never the server with every
        other session on it.
        """
        try:
            events = self._receive(now_ns, raw)
        except Exception:
            events = self._internal_error(now_ns, "a client message", raw)
        return session_outputs(self, now_ns, events)

    def _receive(self, now_ns: int, raw: str | bytes) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.closed or self.stalled or self.close_request or self.abort_request:
            return out
        self.counts["events_in"] += 1
        parsed = parse_client_event(self.dialect, raw)
        if isinstance(parsed, ClientEventError):
            # A beta-shaped session.update on a GA-only server is the retired dialect: the
            # issue (and protocols.md's summary) say the real service answers it with
            # beta_api_shape_disabled + close 4000; protocols.md 2.3 also quotes a GA
            # validation error ("Missing required parameter: 'session.type'.") for a flat
            # update. Which one a given deployment sends is unconfirmed; we follow the issue.
            ev = _peek_json(raw)
            if (ev and ev.get("type") == "session.update" and isinstance(ev.get("session"), dict)
                    and looks_beta(ev["session"])):
                if self.server_dialect == "ga":
                    self._refuse_beta(now_ns, out, "beta-shaped session.update")
                    return self._finish(now_ns, out)
                if self.server_dialect == "auto" and self.dialect == "ga" and not self._started_audio():
                    self._switch_dialect("beta")
                    return self._receive(now_ns, raw)
            self._log(now_ns, "in", _type_for_log(ev), invalid=True)
            self._emit(now_ns, out, parsed.error)
            return self._finish(now_ns, out)
        event, _model = parsed
        etype = event["type"]
        eid = event.get("event_id")
        if etype == APPEND:  # 50 a second per call: straight to its handler, not logged
            self._on_input_audio_buffer_append(now_ns, event, eid, out)
        else:
            self._log(now_ns, "in", etype, **_summary(event))
            handler = _handler(etype)
            if handler is None:
                self._emit(now_ns, out, errors.invalid_event(
                    f"Event type '{etype}' is not supported by this server.", eid, "type"))
            else:
                handler(self, now_ns, event, eid, out)
        timers = self._timers
        if timers and timers[0][0] <= now_ns:
            self._run_timers(now_ns, out)
        return self._finish(now_ns, out)

    def advance(self, now_ns: int) -> Outputs:
        """Fire due timers (think time over, next audio delta, transcription, faults)."""
        if self.closed or self.stalled:
            return NOTHING
        out: list[dict[str, Any]] = []
        try:
            self._run_timers(now_ns, out)
        except Exception:
            return session_outputs(self, now_ns, self._internal_error(now_ns, "a timer", None))
        return session_outputs(self, now_ns, self._finish(now_ns, out))

    def _internal_error(self, now_ns: int, what: str, raw: str | bytes | None) -> list[dict[str, Any]]:
        """The mock failed on its own (a bug): log it with the session id, answer as the API answers
        its own failures (an ``error`` of type ``server_error``), and close with 1011 ("internal
        error", RFC 6455) — the session's state can no longer be trusted. Whether the real service
        closes after a server_error is unconfirmed; the mock does, so the failure cannot go unseen."""
        sample = "" if raw is None else repr(raw[:200])
        log.exception("session %s: mock bug while handling %s %s; closing the session (1011)", self.id, what, sample)
        self._timers.clear()
        out: list[dict[str, Any]] = []
        try:
            self._emit(now_ns, out, errors.server_error())
        except Exception:  # even the error event failed: close all the same
            out = []
        self.close_request = (1011, "internal server error")
        return self._finish(now_ns, out)

    def next_deadline_ns(self) -> int | None:
        if self.closed or self.stalled or not self._timers:
            return None
        return self._timers[0][0]

    def on_closed(self, now_ns: int, by: str, code: int | None = None, reason: str | None = None) -> None:
        """The socket is gone (``by`` = client | server | abort)."""
        if self.closed:
            return
        self.closed = True
        self._timers.clear()
        self.close_info = {"t_ns": now_ns, "by": by, "code": code, "reason": reason}
        if self.response is not None and self.response.phase != "done":
            self.response.status = "incomplete"
            self.response.reason = "connection_closed"
            self.response.t_done_ns = now_ns
            self._record_response(self.response)
            self.response = None
        self._log(now_ns, "closed", by, code=code, reason=reason)

    def snapshot(self, full: bool = True, timings: bool = False) -> dict[str, Any]:
        """Introspection: everything the harness may want to know about this session.

        ``timings`` adds the arrival time of every audio append and the send time
        of every audio delta (ns, shared clock): the k-th append is the caller's
        k-th frame, so per-frame latency through a bridge can be measured.
        """
        d: dict[str, Any] = {
            "id": self.id, "index": self.index, "dialect": self.dialect, "model": self.model,
            "open": not self.closed, "t_open_ns": self.t_open_ns, "close": self.close_info,
            "counts": dict(self.counts), "audio_in_ms": round(self._input_ms, 3),
            "turns": len(self.turns), "responses": len(self.response_records),
            "truncates": len(self.truncates), "errors_sent": len(self.errors_sent),
            "faults": [f.kind for f in self.faults], "behaviour_tag": self.behaviour_tag,
            **self.line_tags.as_snapshot(full),
        }
        if full:
            d.update(
                session=self.config.as_dict(), turns=list(self.turns),
                responses=list(self.response_records)
                + ([self.response.record()] if self.response is not None else []),
                truncates=list(self.truncates), errors=list(self.errors_sent),
                vad_decisions=list(self._vad.decisions) if self._vad else [],
                events=list(self.log), invalid_sent=list(self.invalid_sent),
            )
        if timings:
            d["append_ns"] = self.append_ns.tolist()
            d["delta_ns"] = self.delta_ns.tolist()
            d.update(self.blocks.timings())  # block_ns, block_crc: pair frames by content
        return d

    # ============================================================ plumbing

    def _at(self, due_ns: int, fn: Callable[[int, list[dict[str, Any]]], None]) -> None:
        self._tseq += 1
        heapq.heappush(self._timers, (due_ns, self._tseq, fn))

    def _run_timers(self, now_ns: int, out: list[dict[str, Any]]) -> None:
        while self._timers and self._timers[0][0] <= now_ns and not (self.stalled or self.closed):
            due, _, fn = heapq.heappop(self._timers)
            fn(max(due, 0), out)
            if self.close_request or self.abort_request:
                self._timers.clear()

    def _emit(self, now_ns: int, out: list[dict[str, Any]], ev: dict[str, Any]) -> None:
        ev = {"event_id": new_id("event", self.rng), **ev}
        if self.validate_outgoing:
            try:
                validate_server_event(self.dialect, ev)
            except Exception as exc:  # a mock bug: make it loud, keep serving
                msg = f"{ev.get('type')}: {exc}".splitlines()[0][:300]
                self.invalid_sent.append(msg)
                log.error("session %s: mock sent an event the SDK rejects: %s", self.id, msg)
        if ev["type"] == "error":
            err = ev["error"]
            if len(self.errors_sent) < MAX_RECORDS:  # bounded: a client can provoke errors at will ...
                # ... and their messages quote the client's values, which may be megabytes
                self.errors_sent.append({"t_ns": now_ns, **err, "message": _clip(err.get("message"), MAX_RECORD_TEXT)})
            log.info("session %s: error %s: %s", self.id, _for_log(err.get("code")), _for_log(err.get("message")))
        if ev["type"] not in (self.names.audio_delta, self.names.transcript_delta):
            self._log(now_ns, "out", ev["type"], **_summary(ev))
        out.append(ev)

    def _finish(self, now_ns: int, out: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.counts["events_out"] += len(out)
        return out

    def _log(self, now_ns: int, direction: str, etype: str, **fields: Any) -> None:
        self.log.append({"t_ns": now_ns, "dir": direction, "type": etype, **fields})

    def _fault(self, kind: str, nth: int | None = None) -> Fault | None:
        for f in self.faults:
            if f.kind == kind and (nth is None or f.nth in (0, nth)):
                return f
        return None

    def _session_event(self, etype: str) -> dict[str, Any]:
        return {"type": etype, "session": self.config.as_dict()}

    def _refuse_beta(self, now_ns: int, out: list[dict[str, Any]], why: str) -> None:
        """Today's real answer to the retired beta dialect: an error, then close 4000."""
        self._log(now_ns, "in", "beta-dialect", why=why)
        self._emit(now_ns, out, errors.beta_shape_disabled())
        self.close_request = (4000, "beta_api_shape_disabled")

    def _switch_dialect(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.names = NAMES[dialect]
        old = self.config
        self.config = SessionConfig(dialect, _reportable_model(dialect, self.model), rng=self.rng)
        self.config.id = old.id  # type: ignore[misc]
        self.id = old.id
        self._rebuild_input()

    def _started_audio(self) -> bool:
        return self.counts["appends"] > 0 or self._responses > 0

    def _rebuild_input(self) -> None:
        """(Re)build the input converter and VAD after the session's format or turn detection changed.

        A new VAD starts its own clock at 0; ``_vad_offset_ms`` maps it back onto
        the session's input-buffer clock so reported ms stay continuous.
        """
        kind = self.config.input_format.kind
        if self._converter_kind != kind:
            self._converter = InputConverter(kind)
            self._converter_kind = kind
        td = self.config.turn_detection
        if td is None:
            self._vad = None
            self._vad_params = None
            return
        params = VadParams(threshold=td.threshold, prefix_padding_ms=td.prefix_padding_ms,
                           silence_duration_ms=td.silence_duration_ms,
                           semantic=td.type == "semantic_vad", eagerness=td.eagerness)
        rate = self._converter.rate
        if params != self._vad_params or self._vad is None or self._vad.rate != rate:
            self._vad = ServerVad(params, rate)
            self._vad_params = params
            self._vad_offset_ms = self._input_ms

    # ======================================================== client events

    def _on_session_update(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: list) -> None:
        err = self.config.apply_update(ev["session"], eid)
        if err is not None:
            self._emit(now_ns, out, err)
            return
        self._rebuild_input()
        self._emit(now_ns, out, self._session_event("session.updated"))

    def _on_input_audio_buffer_append(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: list) -> None:
        """50 times a second per call: keep it lean (locals, no per-call lookups it can skip)."""
        try:
            data = _b64decode_strict(ev["audio"])
        except (binascii.Error, ValueError):
            self._emit(now_ns, out, errors.invalid_event("Invalid 'audio'. Expected base64-encoded audio data.",
                                                         eid, "audio"))
            return
        conv = self._converter
        bpm = BYTES_PER_MS[conv.kind]
        n = len(data)
        counts = self.counts
        counts["appends"] += 1
        counts["audio_in_bytes"] += n
        if len(self.append_ns) < MAX_TIMINGS:
            self.append_ns.append(now_ns)
        self.blocks.add(now_ns, data, BLOCK_MS * bpm)
        buf = self._buffer
        buf += data
        self._input_ms = input_ms = self._input_ms + n / bpm
        self._append_times.append((input_ms, now_ns))
        vad = self._vad
        # line tags survive only μ-law passthrough; the VAD hears tag frames as 0xFF (the buffer keeps them)
        heard = self.line_tags.observe(data, now_ns) if conv.kind == "pcmu" else data
        if vad is not None:
            silent = conv.digital_silence(heard)
            for vev in vad.feed_silence(silent) if silent else vad.feed(conv.feed(heard)):
                self._on_vad(now_ns, vev, out)
        if len(buf) > MAX_IDLE_BUFFER_MS * bpm:  # below the smaller bound there is nothing to trim
            self._trim_buffer(bpm)

    def _trim_buffer(self, bpm: int) -> None:
        """Bound memory: idle audio under VAD, and any turn beyond MAX_TURN_MS."""
        if self._vad is not None and self._speech_item_id is None:
            keep = MAX_IDLE_BUFFER_MS
        else:
            keep = MAX_TURN_MS
        excess = len(self._buffer) - keep * bpm
        if excess > 0:
            excess -= excess % (2 if bpm == 48 else 1)
            del self._buffer[:excess]
            self._buffer_start_ms += excess / bpm
            if self._vad is None or self._speech_item_id is not None:
                self.counts["dropped_input_bytes"] += excess

    def _on_vad(self, now_ns: int, vev: VadEvent, out: list) -> None:
        off = self._vad_offset_ms
        if vev.kind == "speech_started":
            self._speech_item_id = new_id("item", self.rng)
            self._speech_start_ms = int(vev.audio_ms + off)
            self._speech_onset_ms = int(vev.speech_onset_ms + off)
            self._emit(now_ns, out, {"type": "input_audio_buffer.speech_started",
                                     "audio_start_ms": self._speech_start_ms, "item_id": self._speech_item_id})
            self._t_speech_started = now_ns
            td = self.config.turn_detection
            r = self.response
            if r is not None and r.phase != "done" and td is not None and td.interrupt_response:
                self._cancel(now_ns, out, "turn_detected")
            return
        # speech_stopped
        item_id = self._speech_item_id or new_id("item", self.rng)
        end_ms = int(vev.audio_ms + off)
        speech_end = (vev.speech_end_ms + off) if vev.speech_end_ms is not None else end_ms
        self._emit(now_ns, out, {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end_ms, "item_id": item_id})
        turn = {
            "item_id": item_id, "audio_start_ms": self._speech_start_ms, "audio_end_ms": end_ms,
            "speech_onset_ms": self._speech_onset_ms, "speech_end_ms": round(speech_end, 1),
            "vad_wait_ms": round(end_ms - speech_end, 1),
            "t_speech_started_ns": self._t_speech_started, "t_speech_stopped_ns": now_ns,
            "t_last_speech_audio_ns": self._time_of_buffer_ms(speech_end),
        }
        if turn["t_last_speech_audio_ns"] is not None:
            turn["vad_wait_wall_ms"] = round((now_ns - turn["t_last_speech_audio_ns"]) / MS, 3)
        self._speech_item_id = None
        audio = self._take_buffer(self._speech_start_ms, end_ms)
        self._commit(now_ns, out, item_id, audio, None, turn)
        td = self.config.turn_detection
        if td is not None and td.create_response:
            if self.response is not None and self.response.phase != "done":
                turn["response_skipped"] = "active response"
            else:
                self._start_response(now_ns, out, "vad")

    def _time_of_buffer_ms(self, ms: float) -> int | None:
        """When did the append holding input-buffer time ``ms`` arrive?"""
        for end_ms, t in self._append_times:
            if end_ms >= ms:
                return t
        return None

    def _take_buffer(self, start_ms: float, end_ms: float) -> bytes:
        kind = self.config.input_format.kind
        bpm = BYTES_PER_MS[kind]
        a = max(0, int((start_ms - self._buffer_start_ms) * bpm))
        b = max(a, int((end_ms - self._buffer_start_ms) * bpm))
        if bpm == 48:
            a -= a % 2
            b -= b % 2
        audio = bytes(self._buffer[a:b])
        # everything up to the end of the turn is consumed
        del self._buffer[:b]
        self._buffer_start_ms += b / bpm
        return audio

    def _commit(self, now_ns: int, out: list, item_id: str, audio: bytes, eid: str | None,
                turn: dict[str, Any]) -> None:
        kind = self.config.input_format.kind
        previous = self.order[-1] if self.order else None
        self._emit(now_ns, out, {"type": "input_audio_buffer.committed", "previous_item_id": previous,
                                 "item_id": item_id})
        item = Item(item_id, "message", "user", content=[{"type": "input_audio", "transcript": None}])
        self._add_item(now_ns, out, item, previous)
        self._user_turns += 1
        self._last_turn_audio = audio
        self._last_turn_kind = kind
        heard, score = (None, 0.0)
        if self.recognizer is not None and audio:
            heard, score = self.recognizer.identify_turn(kind, audio)
        self._last_heard = heard
        turn.update(heard=heard, score=round(float(score), 3), audio_ms=round(len(audio) / BYTES_PER_MS[kind], 1),
                    t_committed_ns=now_ns)
        if len(self.turns) < MAX_RECORDS:
            self.turns.append(turn)
        if self.config.transcription_enabled:
            ms = len(audio) / BYTES_PER_MS[kind]
            text = self._transcript_for(heard, ms)
            self._at(now_ns + int(self.behaviour.transcription_delay_ms * MS),
                     lambda t, o: self._transcribe(t, o, item, text, ms / 1000))

    def _transcript_for(self, heard: str | None, ms: float) -> str:
        if heard is not None and self.recognizer is not None:
            fx = self.recognizer.library[heard] if hasattr(self.recognizer, "library") else None
            if fx is not None and fx.text:
                return fx.text
        return f"[unrecognised caller audio, {ms / 1000:.1f} s]"

    def _transcribe(self, now_ns: int, out: list, item: Item, text: str, seconds: float) -> None:
        if item.id not in self.items:
            return
        words = text.split(" ")
        half = max(1, len(words) // 2)
        for chunk in (" ".join(words[:half]), (" " + " ".join(words[half:])) if words[half:] else ""):
            if chunk:
                self._emit(now_ns, out, {"type": "conversation.item.input_audio_transcription.delta",
                                         "item_id": item.id, "content_index": 0, "delta": chunk})
        item.content[0]["transcript"] = text
        self._emit(now_ns, out, {"type": "conversation.item.input_audio_transcription.completed",
                                 "item_id": item.id, "content_index": 0, "transcript": text,
                                 "usage": {"type": "duration", "seconds": round(seconds, 3)}})

    def _remember_item(self, item: Item, pos: int | None = None) -> None:
        """Add an item to the conversation (at the end, or at index ``pos``), keeping it bounded:
        every path that adds an item comes here."""
        self.items[item.id] = item
        if pos is None:
            self.order.append(item.id)
        else:
            self.order.insert(pos, item.id)
        while len(self.order) > MAX_ITEMS:
            self.items.pop(self.order.pop(0), None)

    def _add_item(self, now_ns: int, out: list, item: Item, previous: str | None, pos: int | None = None) -> None:
        self._remember_item(item, pos)
        self._emit(now_ns, out, {"type": self.names.item_created, "previous_item_id": previous,
                                 "item": item.wire(self.dialect == "beta")})
        if self.names.item_done:
            self._emit(now_ns, out, {"type": self.names.item_done, "previous_item_id": previous,
                                     "item": item.wire(False)})

    def _on_input_audio_buffer_commit(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: list) -> None:
        kind = self.config.input_format.kind
        ms = len(self._buffer) / BYTES_PER_MS[kind]
        if ms < MIN_COMMIT_MS:
            self._emit(now_ns, out, errors.commit_empty(ms, eid))
            return
        item_id = self._speech_item_id or new_id("item", self.rng)
        self._speech_item_id = None
        audio = bytes(self._buffer)
        start = self._buffer_start_ms
        self._buffer_start_ms += ms
        self._buffer.clear()
        self._commit(now_ns, out, item_id, audio, eid,
                     {"item_id": item_id, "manual": True, "audio_start_ms": round(start, 1),
                      "audio_end_ms": round(start + ms, 1)})

    def _on_input_audio_buffer_clear(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: list) -> None:
        kind = self.config.input_format.kind
        self._buffer_start_ms += len(self._buffer) / BYTES_PER_MS[kind]
        self._buffer.clear()
        self._emit(now_ns, out, {"type": "input_audio_buffer.cleared"})

    def _on_conversation_item_create(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: list) -> None:
        raw = ev["item"]
        itype = raw.get("type", "message")
        prev = ev.get("previous_item_id")
        if prev not in (None, "root") and prev not in self.items:
            self._emit(now_ns, out, errors.item_not_found(prev, eid, "previous_item_id"))
            return
        item = Item(raw.get("id") or new_id("item", self.rng), itype)
        if itype == "message":
            item.role = raw.get("role")
            content = [dict(c) for c in raw.get("content") or []]
            if item.role == "assistant" and any(c.get("type") in ("audio", "output_audio") for c in content):
                self._emit(now_ns, out, errors.invalid_event(
                    "Assistant audio messages cannot be created by the client.", eid, "item.content"))
                return
            item.content = content
        elif itype == "function_call_output":
            item.call_id = raw.get("call_id")
            item.output = raw.get("output")
        elif itype == "function_call":
            item.call_id, item.name, item.arguments = raw.get("call_id"), raw.get("name"), raw.get("arguments")
        else:  # mcp_call, mcp_list_tools, ...: before, echoed as {id, type} alone, which the SDK rejects
            item.as_given = dict(raw)
        # omitted: append; "root": insert at the start; an item id: insert right after it
        if prev is None:
            previous, pos = (self.order[-1] if self.order else None), None
        elif prev == "root":
            previous, pos = None, 0
        else:
            previous, pos = prev, self.order.index(prev) + 1
        self._add_item(now_ns, out, item, previous, pos)

    def _on_conversation_item_retrieve(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: list) -> None:
        item = self.items.get(ev["item_id"])
        if item is None:
            self._emit(now_ns, out, errors.item_not_found(ev["item_id"], eid, "item_id"))
            return
        self._emit(now_ns, out, {"type": "conversation.item.retrieved", "item": item.wire(self.dialect == "beta")})

    def _on_conversation_item_delete(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: list) -> None:
        item_id = ev["item_id"]
        if item_id not in self.items:
            self._emit(now_ns, out, errors.item_not_found(item_id, eid, "item_id"))
            return
        del self.items[item_id]
        self.order.remove(item_id)
        self._emit(now_ns, out, {"type": "conversation.item.deleted", "item_id": item_id})

    def _on_conversation_item_truncate(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: list) -> None:
        item_id, end_ms, ci = ev["item_id"], int(ev["audio_end_ms"]), ev.get("content_index", 0)
        item = self.items.get(item_id)
        rec: dict[str, Any] = {"t_ns": now_ns, "item_id": item_id, "audio_end_ms": end_ms, "content_index": ci}
        if item is None:
            rec.update(accepted=False, error="item_not_found")
            self._emit(now_ns, out, errors.item_not_found(item_id, eid, "item_id"))
        elif not (item.type == "message" and item.role == "assistant" and item.has_audio):
            rec.update(accepted=False, error="unsupported_content_type")
            self._emit(now_ns, out, errors.unsupported_content_type(eid))
        else:
            have = int(item.audio_ms_sent)
            rec["audio_sent_ms"] = round(item.audio_ms_sent, 3)
            if end_ms > have:
                rec.update(accepted=False, error="audio_too_short")
                self._emit(now_ns, out, errors.truncate_too_long(have, end_ms, eid))
                if self.behaviour.clamp_truncate_after_error:
                    self._truncated(now_ns, out, item, ci, have)
                    rec["clamped_to_ms"] = have
            else:
                rec["accepted"] = True
                self._truncated(now_ns, out, item, ci, end_ms)
        if len(self.truncates) < MAX_RECORDS:
            self.truncates.append(rec)

    def _truncated(self, now_ns: int, out: list, item: Item, ci: int, end_ms: int) -> None:
        # the server drops the unheard transcript too (protocols.md 2.3)
        for c in item.content:
            if c.get("transcript"):
                c["transcript"] = _cut_text(c["transcript"], end_ms / max(item.audio_ms_sent, 1e-9))
        self._emit(now_ns, out, {"type": "conversation.item.truncated", "item_id": item.id,
                                 "content_index": ci, "audio_end_ms": end_ms})

    def _on_response_create(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: list) -> None:
        r = self.response
        if r is not None and r.phase != "done":
            self._emit(now_ns, out, errors.already_active_response(r.id, eid))
            return
        opts = ev.get("response") or {}
        self._start_response(now_ns, out, "client", opts)

    def _on_response_cancel(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: list) -> None:
        r = self.response
        want = ev.get("response_id")
        if r is None or r.phase == "done" or (want is not None and want != r.id):
            self._emit(now_ns, out, errors.cancel_not_active(eid))
            return
        self._cancel(now_ns, out, "client_cancelled")

    def _on_output_audio_buffer_clear(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: list) -> None:
        # WebRTC/SIP only (protocols.md 2.3); the WebSocket answer is unconfirmed.
        self._emit(now_ns, out, errors.invalid_event(
            "output_audio_buffer.clear is only supported for WebRTC and SIP sessions.", eid, "type"))

    # ============================================================ responses

    def _start_response(self, now_ns: int, out: list, trigger: str, opts: dict[str, Any] | None = None) -> None:
        opts = opts or {}
        self._responses += 1
        n = self._responses
        plan: str | ToolCall | bytes
        last = self.items[self.order[-1]] if self.order else None
        if self._pending_tool is not None and last is not None and last.type == "function_call_output":
            plan = self._pending_tool.then
            self._pending_tool = None
        elif self.behaviour.echo and self._last_turn_audio:
            plan = self._echo_audio()
        elif self._user_turns == 0:
            plan = self.behaviour.greeting
        else:
            plan = self.behaviour.reply_for(self._user_turns - 1, self._last_heard)
        undeclared: tuple[str, list[str]] | None = None
        if isinstance(plan, ToolCall):
            # The real model cannot call a tool it was never given: it answers without it.
            declared = _function_tool_names(opts["tools"] if "tools" in opts else self.config.tools)
            if plan.name not in declared:
                log.info("session %s: behaviour calls tool %s, which the session did not declare (declared: %s);"
                         " replying %s without it", self.id, plan.name, ", ".join(declared) or "none", plan.then)
                undeclared = (plan.name, declared)
                plan = plan.then
        think = self.behaviour.think.draw(self.rng)
        r = Response(new_id("resp", self.rng), trigger, plan, now_ns, think, index=n,
                     fail=self._fault("fail_response", n) is not None,
                     conversation=opts.get("conversation", "auto"), metadata=opts.get("metadata"))
        r.bytes_per_ms = BYTES_PER_MS[self.config.output_format.kind]
        if undeclared is not None:
            r.tool_not_declared, r.tools_declared = undeclared
        self.response = r
        self._at(now_ns + int(self.behaviour.created_delay_ms * MS), lambda t, o: self._response_created(t, o, r))

    def _echo_audio(self) -> bytes:
        out_kind = self.config.output_format.kind
        audio = self._last_turn_audio
        if self._last_turn_kind == out_kind:
            return audio
        rate_in = 24000 if self._last_turn_kind == "pcm16" else 8000
        return encode(out_kind, decode(self._last_turn_kind, audio), rate_in)

    def _response_obj(self, r: Response, status: str, details: dict[str, Any] | None,
                      output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        d: dict[str, Any] = {"id": r.id, "object": "realtime.response", "status": status,
                             "status_details": details, "output": output, "usage": usage,
                             "conversation_id": self.conversation_id if r.conversation != "none" else None,
                             "metadata": r.metadata}
        fmt = self.config.output_format
        if self.dialect == "ga":
            d.update(output_modalities=list(self.config.output_modalities), max_output_tokens="inf",
                     audio={"output": {"format": fmt.to_wire("ga"), "voice": self.config.voice}})
        else:
            d.update(modalities=list(self.config.output_modalities), voice=self.config.voice,
                     output_audio_format=fmt.to_wire("beta"), temperature=0.8, max_output_tokens="inf")
        return d

    def _response_created(self, now_ns: int, out: list, r: Response) -> None:
        if self.response is not r or r.phase != "created":
            return
        r.t_created_ns = now_ns
        r.phase = "thinking"
        self._emit(now_ns, out, {"type": "response.created",
                                 "response": self._response_obj(r, "in_progress", None, [], None)})
        self._at(now_ns + int(r.think_ms * MS), lambda t, o: self._response_output(t, o, r))

    def _response_output(self, now_ns: int, out: list, r: Response) -> None:
        if self.response is not r or r.phase != "thinking":
            return
        if r.fail:
            self._done(now_ns, out, r, "failed",
                       {"type": "failed", "error": {"type": "server_error", "code": "injected_failure"}})
            return
        previous = self.order[-1] if self.order else None
        if isinstance(r.plan, ToolCall):
            self._tool_call(now_ns, out, r, r.plan, previous)
            return
        if isinstance(r.plan, bytes):
            r.audio, r.transcript = r.plan, "(echo)"
        else:
            r.audio = fixture_audio(r.plan, self.config.output_format.kind)
            fx_text = self._fixture_text(r.plan)
            r.transcript = fx_text
        item = Item(new_id("item", self.rng), "message", "assistant", status="in_progress", has_audio=True)
        r.items.append(item)
        self._remember_item(item)
        self.config.audio_produced = True
        self._emit(now_ns, out, {"type": "response.output_item.added", "response_id": r.id, "output_index": 0,
                                 "item": item.wire(self.dialect == "beta")})
        self._emit(now_ns, out, {"type": self.names.item_created, "previous_item_id": previous,
                                 "item": item.wire(self.dialect == "beta")})
        self._emit(now_ns, out, {"type": "response.content_part.added", "response_id": r.id, "item_id": item.id,
                                 "output_index": 0, "content_index": 0,
                                 "part": {"type": "audio", "transcript": ""}})
        item.content = [{"type": self.names.output_audio_content_type, "transcript": ""}]
        r.phase = "streaming"
        r.t_first_audio_ns = now_ns
        for f in self.faults:
            if f.kind in ("drop", "stall", "close") and f.nth in (0, r.index):
                self._at(now_ns + int(f.after_ms * MS), lambda t, o, f=f: self._mid_response_fault(t, o, f))
        self._stream(now_ns, out, r)

    def _fixture_text(self, name: str) -> str:
        lib = getattr(self.recognizer, "library", None)
        if lib is not None and name in lib:
            return lib[name].text
        from ..audio.fixtures import default_library

        lib = default_library()
        return lib[name].text if name in lib else ""

    def _stream(self, now_ns: int, out: list, r: Response) -> None:
        """Send the next audio delta (and its share of transcript), then schedule the next."""
        if self.response is not r or r.phase != "streaming":
            return
        item = r.items[0]
        chunk = self.behaviour.chunk_ms * r.bytes_per_ms
        piece = r.audio[r.sent_bytes : r.sent_bytes + chunk]
        if piece:
            # transcript: words in proportion to the audio sent so far
            words = r.transcript.split(" ") if r.transcript else []
            upto = len(words) if r.sent_bytes + len(piece) >= len(r.audio) else \
                int(len(words) * (r.sent_bytes + len(piece)) / max(1, len(r.audio)))
            if upto > r.words_sent:
                delta = (" " if r.words_sent else "") + " ".join(words[r.words_sent:upto])
                r.words_sent = upto
                self._emit(now_ns, out, {"type": self.names.transcript_delta, "response_id": r.id,
                                         "item_id": item.id, "output_index": 0, "content_index": 0, "delta": delta})
            self._emit(now_ns, out, {"type": self.names.audio_delta, "response_id": r.id, "item_id": item.id,
                                     "output_index": 0, "content_index": 0,
                                     "delta": base64.b64encode(piece).decode("ascii")})
            r.sent_bytes += len(piece)
            if len(self.delta_ns) < MAX_TIMINGS:
                self.delta_ns.append(now_ns)
            item.audio_ms_sent = r.audio_ms_sent
            self.counts["audio_out_bytes"] += len(piece)
        if r.sent_bytes >= len(r.audio):
            self._finish_audio(now_ns, out, r, "completed")
            self._done(now_ns, out, r, "completed", None)
            return
        period_ns = int(len(piece) / r.bytes_per_ms / self.behaviour.realtime_factor * MS)
        self._at(now_ns + max(period_ns, 1), lambda t, o: self._stream(t, o, r))

    def _finish_audio(self, now_ns: int, out: list, r: Response, item_status: str) -> None:
        """The done events of an audio item (after completion or a cancel)."""
        if not r.items or r.items[0].type != "message":
            return
        item = r.items[0]
        sent_text = " ".join((r.transcript.split(" ") if r.transcript else [])[: r.words_sent])
        base = {"response_id": r.id, "item_id": item.id, "output_index": 0, "content_index": 0}
        self._emit(now_ns, out, {"type": self.names.audio_done, **base})
        self._emit(now_ns, out, {"type": self.names.transcript_done, **base, "transcript": sent_text})
        self._emit(now_ns, out, {"type": "response.content_part.done", **base,
                                 "part": {"type": "audio", "transcript": sent_text}})
        item.status = item_status
        item.content = [{"type": self.names.output_audio_content_type, "transcript": sent_text}]
        previous = self._previous_of(item.id)
        self._emit(now_ns, out, {"type": "response.output_item.done", "response_id": r.id, "output_index": 0,
                                 "item": item.wire(self.dialect == "beta")})
        if self.names.item_done:
            self._emit(now_ns, out, {"type": self.names.item_done, "previous_item_id": previous,
                                     "item": item.wire(False)})

    def _previous_of(self, item_id: str) -> str | None:
        try:
            i = self.order.index(item_id)
        except ValueError:
            return None
        return self.order[i - 1] if i > 0 else None

    def _tool_call(self, now_ns: int, out: list, r: Response, tool: ToolCall, previous: str | None) -> None:
        import json

        args = json.dumps(tool.arguments)
        item = Item(new_id("item", self.rng), "function_call", status="in_progress", name=tool.name,
                    call_id=new_id("call", self.rng), arguments="")
        r.items.append(item)
        self._remember_item(item)
        self._emit(now_ns, out, {"type": "response.output_item.added", "response_id": r.id, "output_index": 0,
                                 "item": item.wire(self.dialect == "beta")})
        self._emit(now_ns, out, {"type": self.names.item_created, "previous_item_id": previous,
                                 "item": item.wire(self.dialect == "beta")})
        step = max(1, len(args) // 3)
        for i in range(0, len(args), step):
            self._emit(now_ns, out, {"type": "response.function_call_arguments.delta", "response_id": r.id,
                                     "item_id": item.id, "output_index": 0, "call_id": item.call_id,
                                     "delta": args[i : i + step]})
        done = {"type": "response.function_call_arguments.done", "response_id": r.id, "item_id": item.id,
                "output_index": 0, "call_id": item.call_id, "arguments": args}
        if self.dialect == "ga":
            done["name"] = tool.name
        self._emit(now_ns, out, done)
        item.arguments = args
        item.status = "completed"
        self._emit(now_ns, out, {"type": "response.output_item.done", "response_id": r.id, "output_index": 0,
                                 "item": item.wire(self.dialect == "beta")})
        if self.names.item_done:
            self._emit(now_ns, out, {"type": self.names.item_done, "previous_item_id": previous,
                                     "item": item.wire(False)})
        self._pending_tool = tool
        self._done(now_ns, out, r, "completed", None)

    def _cancel(self, now_ns: int, out: list, reason: str) -> None:
        """Cancel the active response. Event order after a cancel is **unconfirmed**:
        we close the open audio item (done events, status incomplete), then response.done."""
        r = self.response
        if r is None or r.phase == "done":
            return
        if r.phase == "streaming":
            self._finish_audio(now_ns, out, r, "incomplete")
        self._done(now_ns, out, r, "cancelled", {"type": "cancelled", "reason": reason})

    def _done(self, now_ns: int, out: list, r: Response, status: str, details: dict[str, Any] | None) -> None:
        r.phase = "done"
        r.status = status
        r.reason = (details or {}).get("reason")
        r.t_done_ns = now_ns
        if r.t_created_ns is None:  # cancelled before response.created went out
            r.t_created_ns = now_ns
            self._emit(now_ns, out, {"type": "response.created",
                                     "response": self._response_obj(r, "in_progress", None, [], None)})
        out_tokens = int(r.audio_ms_sent / 1000 * 10) + len(r.transcript.split()) if r.transcript else 0
        usage = {"total_tokens": 100 + out_tokens, "input_tokens": 100, "output_tokens": out_tokens,
                 "input_token_details": {"text_tokens": 80, "audio_tokens": 20, "cached_tokens": 0},
                 "output_token_details": {"text_tokens": out_tokens // 4, "audio_tokens": out_tokens - out_tokens // 4}}
        output = [i.wire(self.dialect == "beta") for i in r.items]
        self._emit(now_ns, out, {"type": "response.done",
                                 "response": self._response_obj(r, status, details, output, usage)})
        self._emit(now_ns, out, {"type": "rate_limits.updated", "rate_limits": [
            {"name": "requests", "limit": 10000, "remaining": 9999, "reset_seconds": 0.006},
            {"name": "tokens", "limit": 2000000, "remaining": 1999000, "reset_seconds": 0.03}]})
        self._record_response(r)
        self.response = None

    def _record_response(self, r: Response) -> None:
        if len(self.response_records) < MAX_RECORDS:
            self.response_records.append(r.record())

    # ================================================================ faults

    def _mid_response_fault(self, now_ns: int, out: list, f: Fault) -> None:
        self._log(now_ns, "fault", f.kind, after_ms=f.after_ms)
        log.info("session %s: injecting fault %s", self.id, f.kind)
        if f.kind == "drop":
            self.abort_request = True
        elif f.kind == "close":
            self.close_request = (int(f.code) if isinstance(f.code, int) else 1011, "injected fault")
        elif f.kind == "stall":
            self.stalled = True
            self._timers.clear()

    def _expire(self, now_ns: int, out: list) -> None:
        self._emit(now_ns, out, errors.session_expired())
        self.close_request = (1000, "session expired")


def _function_tool_names(tools: Any) -> list[str]:
    """Names of the function tools in a session's (or a response's) ``tools`` list."""
    if not isinstance(tools, list):
        return []
    return [t["name"] for t in tools
            if isinstance(t, dict) and t.get("type", "function") == "function" and isinstance(t.get("name"), str)]


def _b64decode_strict(text: str) -> bytes:
    """``base64.b64decode(text, validate=True)`` without its Python wrapper (≈ 0.5 µs of
    ≈ 1.2 µs per append): the same C call, the same errors (``binascii.Error`` for bad
    base64, ``ValueError`` for a non-ASCII string). ``text`` is a str: validated upstream."""
    return binascii.a2b_base64(text, strict_mode=True)


_HandlerFn = Callable[["MockSession", int, dict[str, Any], "str | None", list], None]
_HANDLERS: dict[str, _HandlerFn | None] = {}


def _handler(etype: str) -> _HandlerFn | None:
    """``MockSession._on_<etype with dots as underscores>``, looked up once per event type.

    Only types the dialect's SDK union knows get here (validation rejects the
    rest first), so the cache stays as small as that union.
    """
    try:
        return _HANDLERS[etype]
    except KeyError:
        fn = _HANDLERS[etype] = getattr(MockSession, "_on_" + etype.replace(".", "_"), None)
        return fn


def _reportable_model(dialect: Dialect, model: str) -> str:
    """The beta SDK types only know eight model names; report one of them for beta sessions."""
    if dialect != "beta":
        return model
    import typing

    from openai.types.beta.realtime.session_update_event import Session

    allowed: set[str] = set()
    for arg in typing.get_args(Session.model_fields["model"].annotation):
        allowed.update(typing.get_args(arg))
    return model if model in allowed else "gpt-4o-realtime-preview"


def _peek_json(raw: str | bytes) -> dict[str, Any] | None:
    import orjson

    try:
        ev = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return None
    return ev if isinstance(ev, dict) else None


def _summary(ev: dict[str, Any]) -> dict[str, Any]:
    """Small identifying fields of an event for the log (never audio; a client's strings clipped)."""
    keep = {}
    for k in ("item_id", "response_id", "audio_start_ms", "audio_end_ms", "content_index"):
        if k in ev:
            keep[k] = ev[k]
    if "response" in ev and isinstance(ev["response"], dict):
        keep["response_id"] = ev["response"].get("id")
        keep["status"] = ev["response"].get("status")
    if "error" in ev and isinstance(ev["error"], dict):
        keep["code"] = ev["error"].get("code")
    if "item" in ev and isinstance(ev["item"], dict):
        keep["item_id"] = ev["item"].get("id")
    return {k: _clip(v, 200) if isinstance(v, str) else v for k, v in keep.items()}


def _type_for_log(ev: dict[str, Any] | None) -> str:
    """The ``type`` of an invalid event, as kept in the session's event log: a client may send any
    JSON there (a megabyte string, a deep list), and the log is kept after the session closes."""
    if ev is None:
        return "<unparseable>"
    t = ev.get("type")
    return _clip(t, 100) if isinstance(t, str) else f"<{type(t).__name__}>"


def _clip(text: Any, limit: int) -> Any:
    """``text`` cut to ``limit`` characters, saying how much was cut (non-strings as they are)."""
    if not isinstance(text, str) or len(text) <= limit:
        return text
    return f"{text[:limit]}...(+{len(text) - limit} chars)"


def _for_log(text: Any, limit: int = 300) -> str:
    """Client-controlled text made safe for a log line: clipped, control characters escaped
    (a newline in an item id must not forge a log line of its own)."""
    return repr(_clip(str(text), limit))[1:-1]


def _cut_text(text: str, fraction: float) -> str:
    words = text.split(" ")
    return " ".join(words[: max(0, min(len(words), round(len(words) * fraction)))])
