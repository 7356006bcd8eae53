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

:class:`MockSession` is made of parts, one module each, and dispatches the
client's events to them (``_HANDLERS``): :mod:`.input_audio` (the buffer, the
VAD, committed turns), :mod:`.conversation` (items), :mod:`.responses` (the
response state machine; one response is a :mod:`.response`), :mod:`.tools`,
:mod:`.faults`, :mod:`.timeouts` (maximum duration, idle timeout). The shared state and the outgoing-event plumbing are in
:mod:`.session_base`, the named timers in :mod:`.timers`.
"""

from __future__ import annotations

import random
from array import array
from collections import deque
from heapq import heappop
from typing import Any, Callable

from ..core_io import NOTHING, Outputs
from . import errors
from .behaviour import Behaviour
from .conversation import ConversationPart
from .dialect import NAMES, Dialect, looks_beta
from .faults import FaultsPart
from .ids import new_id
from .input_audio import InputAudioPart
from .logsafe import summary, type_for_log
from .outputs import session_outputs
from .recognizer import Recognizer
from .responses import ResponsesPart
from .schema import APPEND, ClientEventError, parse_client_event
from .session_base import Events, log
from .session_config import SessionConfig
from .session_timers import Timer, Timers
from .timeouts import TimeoutsPart
from .tools import ToolsPart

__all__ = ["MockSession"]

MAX_LOG_EVENTS = 2000  # per session, for introspection


class MockSession(InputAudioPart, ConversationPart, ResponsesPart, ToolsPart, FaultsPart, TimeoutsPart):
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
        self.dialect = "beta" if dialect == "beta" or (dialect == "auto" and beta_header) else "ga"
        self.names = NAMES[self.dialect]
        self.model = model
        self.behaviour = behaviour or Behaviour()
        seed = self.behaviour.seed
        self.rng = rng or random.Random(None if seed is None else f"{seed}:{index}")
        self.recognizer = recognizer
        self.validate_outgoing = validate_outgoing
        self.config = SessionConfig(self.dialect, _reportable_model(self.dialect, model), rng=self.rng,
                                    lifetime_s=self.behaviour.max_session_s)
        self.id = self.config.id
        self.conversation_id = new_id("conv", self.rng)
        self.faults = tuple(f for f in self.behaviour.faults if f.applies(index, self.rng))
        self.timers = Timers()
        self._timer_heap = self.timers.heap  # read on every message: one hop
        self.t_open_ns: int | None = None

        # what the driver must do
        self.close_request: tuple[int, str] | None = None  # send close frame with (code, reason)
        self.abort_request = False  # drop TCP without a close frame
        self.stalled = False
        self.closed = False

        # introspection
        self.log = deque(maxlen=MAX_LOG_EVENTS)
        self.errors_sent = []
        self.invalid_sent = []  # mock bugs: events failing SDK validation
        self.counts = {"appends": 0, "audio_in_bytes": 0, "events_in": 0, "events_out": 0,
                       "audio_out_bytes": 0, "dropped_input_bytes": 0}
        self.close_info: dict[str, Any] | None = None
        self.delta_ns = array("q")  # emission of each audio delta

        self._init_input_audio()
        self._init_conversation()
        self._init_responses()
        self._init_tools()
        self._init_timeouts()

    # ================================================================ API

    def open(self, now_ns: int) -> Outputs:
        """The socket is open: ``session.created`` (or the beta refusal)."""
        self.t_open_ns = now_ns
        out: Events = []
        if self.server_dialect == "ga" and self.beta_header:
            self._refuse_beta(now_ns, out, "OpenAI-Beta: realtime=v1 header")
        else:
            self._open_with_faults(now_ns, out)
            self._arm_max_duration(now_ns)
            self._idle_settings_changed(now_ns)
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

    def advance(self, now_ns: int) -> Outputs:
        """Fire due timers (think time over, next audio delta, transcription, faults)."""
        if self.closed or self.stalled:
            return NOTHING
        out: Events = []
        try:
            self._run_timers(now_ns, out)
        except Exception:
            return session_outputs(self, now_ns, self._internal_error(now_ns, "a timer", None))
        return session_outputs(self, now_ns, self._finish(now_ns, out))

    def next_deadline_ns(self) -> int | None:
        if self.closed or self.stalled or not self._timer_heap:
            return None
        return self._timer_heap[0][0]

    def pending_timers(self) -> list[Timer]:
        """What the session waits for, soonest first (a cancelled timer is not listed)."""
        return self.timers.pending()

    def on_closed(self, now_ns: int, by: str, code: int | None = None, reason: str | None = None) -> None:
        """The socket is gone (``by`` = client | server | abort)."""
        if self.closed:
            return
        self.closed = True
        self.timers.clear()
        self.close_info = {"t_ns": now_ns, "by": by, "code": code, "reason": reason}
        self._response_closed(now_ns)
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
            "faults": [f.kind for f in self.faults], "behaviour_tag": self.behaviour_tag, "dtmf": list(self.dtmf),
            "dtmf_ns": list(self.dtmf_ns),
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

    # ============================================================ dispatch

    def _receive(self, now_ns: int, raw: str | bytes) -> Events:
        out: Events = []
        if self.closed or self.stalled or self.close_request or self.abort_request:
            return out
        self.counts["events_in"] += 1
        parsed = parse_client_event(self.dialect, raw)
        if isinstance(parsed, ClientEventError):
            return self._invalid(now_ns, raw, parsed, out)
        event, _model = parsed
        etype = event["type"]
        eid = event.get("event_id")
        if etype == APPEND:  # 50 a second per call: straight to its handler, not logged
            self._on_input_audio_buffer_append(now_ns, event, eid, out)
        else:
            self._log(now_ns, "in", etype, **summary(event))
            handler = _HANDLERS.get(etype)
            if handler is None:
                self._emit(now_ns, out, errors.invalid_event(
                    f"Event type '{etype}' is not supported by this server.", eid, "type"))
            else:
                handler(self, now_ns, event, eid, out)
        timers = self._timer_heap
        if timers and timers[0][0] <= now_ns:
            self._run_timers(now_ns, out)
        return self._finish(now_ns, out)

    def _invalid(self, now_ns: int, raw: str | bytes, parsed: ClientEventError, out: Events) -> Events:
        """A client event the SDK's types reject: its error — unless it is the beta dialect."""
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
        self._log(now_ns, "in", type_for_log(ev), invalid=True)
        self._emit(now_ns, out, parsed.error)
        return self._finish(now_ns, out)

    def _run_timers(self, now_ns: int, out: Events) -> None:
        """Fire each live timer due by ``now_ns``, with its own deadline as "now"."""
        heap = self._timer_heap
        while heap and heap[0][0] <= now_ns and not (self.stalled or self.closed):
            due, seq, timer = heappop(heap)
            if timer.seq != seq:  # cancelled, or armed again for later
                continue
            timer.seq = 0
            timer.fire(max(due, 0), out)
            if self.close_request or self.abort_request:
                self.timers.clear()

    def _finish(self, now_ns: int, out: Events) -> Events:
        self.counts["events_out"] += len(out)
        return out

    def _internal_error(self, now_ns: int, what: str, raw: str | bytes | None) -> Events:
        """The mock failed on its own (a bug): log it with the session id, answer as the API answers
        its own failures (an ``error`` of type ``server_error``), and close with 1011 ("internal
        error", RFC 6455) — the session's state can no longer be trusted. Whether the real service
        closes after a server_error is unconfirmed; the mock does, so the failure cannot go unseen."""
        sample = "" if raw is None else repr(raw[:200])
        log.exception("session %s: mock bug while handling %s %s; closing the session (1011)", self.id, what, sample)
        self.timers.clear()
        out: Events = []
        try:
            self._emit(now_ns, out, errors.server_error())
        except Exception:  # even the error event failed: close all the same
            out = []
        self.close_request = (1011, "internal server error")
        return self._finish(now_ns, out)

    # ============================================================ the session itself

    def _on_session_update(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: Events) -> None:
        err = self.config.apply_update(ev["session"], eid)
        if err is not None:
            self._emit(now_ns, out, err)
            return
        self._rebuild_input()
        self._emit(now_ns, out, self._session_event("session.updated"))
        self._idle_settings_changed(now_ns)

    def _send_session_created(self, now_ns: int, out: Events) -> None:
        self._emit(now_ns, out, self._session_event("session.created"))

    def _refuse_beta(self, now_ns: int, out: Events, why: str) -> None:
        """Today's real answer to the retired beta dialect: an error, then close 4000."""
        self._log(now_ns, "in", "beta-dialect", why=why)
        self._emit(now_ns, out, errors.beta_shape_disabled())
        self.close_request = (4000, "beta_api_shape_disabled")

    def _switch_dialect(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.names = NAMES[dialect]
        old = self.config
        self.config = SessionConfig(dialect, _reportable_model(dialect, self.model), rng=self.rng,
                                    lifetime_s=self.behaviour.max_session_s)
        self.config.id = old.id  # type: ignore[misc]
        self.id = old.id
        self._rebuild_input()

    def _started_audio(self) -> bool:
        return self.counts["appends"] > 0 or self._responses > 0


_HandlerFn = Callable[[MockSession, int, dict[str, Any], "str | None", Events], None]

# Which part handles each client event type. Types the dialect's SDK union knows but the
# mock does not serve are absent: they are answered "not supported".
_HANDLERS: dict[str, _HandlerFn] = {
    "session.update": MockSession._on_session_update,
    "input_audio_buffer.append": MockSession._on_input_audio_buffer_append,
    "input_audio_buffer.commit": MockSession._on_input_audio_buffer_commit,
    "input_audio_buffer.clear": MockSession._on_input_audio_buffer_clear,
    "conversation.item.create": MockSession._on_conversation_item_create,
    "conversation.item.retrieve": MockSession._on_conversation_item_retrieve,
    "conversation.item.delete": MockSession._on_conversation_item_delete,
    "conversation.item.truncate": MockSession._on_conversation_item_truncate,
    "response.create": MockSession._on_response_create,
    "response.cancel": MockSession._on_response_cancel,
    "output_audio_buffer.clear": MockSession._on_output_audio_buffer_clear,
}


def _handler(etype: str) -> _HandlerFn | None:
    """The handler of a client event type (None: not served)."""
    return _HANDLERS.get(etype)


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
