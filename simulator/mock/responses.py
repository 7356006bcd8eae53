"""A mock session's responses: a state machine with one named timer per response.

The transitions, in one place (``NEXT`` checks them; each waiting state's
timer is named in ``TIMER_NAMES``, and ``_STEPS`` at the end says what it does)::

    CREATED    --"response.created" (created_delay_ms)-->   response.created; THINKING
    THINKING   --"response.think" (the think time)-->        output item; STREAMING
                                                             (a tool call, an injected failure: DONE)
    STREAMING  --"response.audio_delta" (paced)-->           the next delta; after the last: DONE
    any but DONE  --cancel (response.cancel, barge-in)-->    DONE

Audio deltas go out faster than real time by the behaviour's factor. The
event order after a cancel is **unconfirmed**: the open audio item is closed
(its done events, status incomplete), then response.done.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from . import errors
from .audio import BYTES_PER_MS, decode, encode, fixture_audio
from .behaviour import ToolCall
from .conversation import Item
from .ids import new_id
from .response import Phase, Response
from .session_base import MAX_RECORDS, MAX_TIMINGS, MS, Events, SessionBase
from .session_timers import Timer

if TYPE_CHECKING:
    from .behaviour import Fault


NEXT: dict[Phase, frozenset[Phase]] = {
    Phase.CREATED: frozenset({Phase.THINKING, Phase.DONE}),
    Phase.THINKING: frozenset({Phase.STREAMING, Phase.DONE}),
    Phase.STREAMING: frozenset({Phase.DONE}),
    Phase.DONE: frozenset(),
}
TIMER_NAMES: dict[Phase, str] = {
    Phase.CREATED: "response.created",
    Phase.THINKING: "response.think",
    Phase.STREAMING: "response.audio_delta",
}


class ResponsesPart(SessionBase):
    """The active response (``response``: None when there is none), its records, and the response events."""

    response: Response | None
    response_records: list[dict[str, Any]]
    conversation_id: str

    if TYPE_CHECKING:  # what it uses of the other parts
        items: dict[str, Item]
        order: list[str]
        faults: tuple[Fault, ...]
        _user_turns: int
        _last_heard: str | None
        _last_turn_audio: bytes
        _last_turn_kind: str

        def _remember_item(self, item: Item, pos: int | None = None) -> None: ...
        def _previous_of(self, item_id: str) -> str | None: ...
        def _tool_followup(self) -> str | None: ...
        def _declared_or_reply(self, plan: str | ToolCall | bytes, opts: dict[str, Any]
                               ) -> tuple[str | ToolCall | bytes, tuple[str, list[str]] | None]: ...
        def _tool_call(self, now_ns: int, out: Events, r: Response, tool: ToolCall,
                       previous: str | None) -> None: ...
        def _fault(self, kind: str, nth: int | None = None) -> Fault | None: ...
        def _arm_response_faults(self, now_ns: int, r: Response) -> None: ...
        def _idle_stop(self) -> None: ...
        def _idle_after_response(self, r: Response) -> None: ...

    def _init_responses(self) -> None:
        self.response = None
        self._responses = 0
        self.response_records = []

    def _response_active(self) -> bool:
        r = self.response
        return r is not None and r.phase != Phase.DONE

    # ------------------------------------------------------------ client events

    def _on_response_create(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: Events) -> None:
        r = self.response
        if r is not None and r.phase != Phase.DONE:
            self._emit(now_ns, out, errors.already_active_response(r.id, eid))
            return
        opts = ev.get("response") or {}
        self._start_response(now_ns, out, "client", opts)

    def _on_response_cancel(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: Events) -> None:
        r = self.response
        want = ev.get("response_id")
        if r is None or r.phase == Phase.DONE or (want is not None and want != r.id):
            self._emit(now_ns, out, errors.cancel_not_active(eid))
            return
        self._cancel(now_ns, out, "client_cancelled")

    def _on_output_audio_buffer_clear(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: Events) -> None:
        # WebRTC/SIP only (protocols.md 2.3); the WebSocket answer is unconfirmed.
        self._emit(now_ns, out, errors.invalid_event(
            "output_audio_buffer.clear is only supported for WebRTC and SIP sessions.", eid, "type"))

    # ------------------------------------------------------------ the state machine

    def _enter(self, r: Response, phase: Phase) -> None:
        if phase not in NEXT[r.phase]:
            raise RuntimeError(f"response {r.id}: no transition {r.phase} -> {phase}")
        r.phase = phase
        if phase in TIMER_NAMES:
            r.timer.name = TIMER_NAMES[phase]  # type: ignore[union-attr]

    def _response_timer(self, now_ns: int, out: Events) -> None:
        """The active response's timer fired: the step of the state it waits in."""
        r = self.response
        if r is not None:
            _STEPS[r.phase](self, now_ns, out, r)

    def _start_response(self, now_ns: int, out: Events, trigger: str, opts: dict[str, Any] | None = None) -> None:
        opts = opts or {}
        self._idle_stop()
        self._responses += 1
        n = self._responses
        plan: str | ToolCall | bytes
        followup = self._tool_followup()
        if followup is not None:
            plan = followup
        elif trigger == "idle_timeout" and self.behaviour.idle_reply:
            plan = self.behaviour.idle_reply
        elif (keyed := self.behaviour.reply_to_request(opts.get("instructions"), self._pending_key)) is not None:
            plan = keyed
        elif self.behaviour.echo and self._last_turn_audio:
            plan = self._echo_audio()
        elif self._user_turns == 0:
            plan = self.behaviour.greeting
        else:
            plan = self.behaviour.reply_for(self._user_turns - 1, self._last_heard)
        self._pending_key = None  # this response answers the keypress
        plan, undeclared = self._declared_or_reply(plan, opts)
        think = self.behaviour.think.draw(self.rng)
        r = Response(new_id("resp", self.rng), trigger, plan, now_ns, think, index=n,
                     fail=self._fault("fail_response", n) is not None,
                     conversation=opts.get("conversation", "auto"), metadata=opts.get("metadata"))
        r.bytes_per_ms = BYTES_PER_MS[self.config.output_format.kind]
        if undeclared is not None:
            r.tool_not_declared, r.tools_declared = undeclared
        self.response = r
        r.timer = Timer(TIMER_NAMES[Phase.CREATED], self._response_timer)
        self.timers.arm(r.timer, now_ns + int(self.behaviour.created_delay_ms * MS))

    def _send_created(self, now_ns: int, out: Events, r: Response) -> None:
        r.t_created_ns = now_ns
        self._enter(r, Phase.THINKING)
        self._emit(now_ns, out, {"type": "response.created",
                                 "response": self._response_obj(r, "in_progress", None, [], None)})
        self.timers.arm(r.timer, now_ns + int(r.think_ms * MS))  # type: ignore[arg-type]

    def _send_output(self, now_ns: int, out: Events, r: Response) -> None:
        if r.fail:
            self._done(now_ns, out, r, "failed",
                       {"type": "failed", "error": {"type": "server_error", "code": "injected_failure"}})
            return
        previous = self.order[-1] if self.order else None
        if isinstance(r.plan, ToolCall):
            self._tool_call(now_ns, out, r, r.plan, previous)
            self._done(now_ns, out, r, "completed", None)
            return
        if isinstance(r.plan, bytes):
            r.audio, r.transcript = r.plan, "(echo)"
        else:
            r.audio = fixture_audio(r.plan, self.config.output_format.kind)
            r.transcript = self._fixture_text(r.plan)
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
        self._enter(r, Phase.STREAMING)
        r.t_first_audio_ns = now_ns
        self._arm_response_faults(now_ns, r)
        self._stream(now_ns, out, r)

    def _stream(self, now_ns: int, out: Events, r: Response) -> None:
        """Send the next audio delta (and its share of transcript), then arm the timer for the next."""
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
        self.timers.arm(r.timer, now_ns + max(period_ns, 1))  # type: ignore[arg-type]

    def _cancel(self, now_ns: int, out: Events, reason: str) -> None:
        """Cancel the active response (the event order after a cancel is unconfirmed: see the module)."""
        r = self.response
        if r is None or r.phase == Phase.DONE:
            return
        if r.phase == Phase.STREAMING:
            self._finish_audio(now_ns, out, r, "incomplete")
        self._done(now_ns, out, r, "cancelled", {"type": "cancelled", "reason": reason})

    def _done(self, now_ns: int, out: Events, r: Response, status: str, details: dict[str, Any] | None) -> None:
        self.timers.cancel(r.timer)  # type: ignore[arg-type]
        self._enter(r, Phase.DONE)
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
        self._idle_after_response(r)

    def _response_closed(self, now_ns: int) -> None:
        """The socket went: the active response ends incomplete, nothing sent."""
        r = self.response
        if r is not None and r.phase != Phase.DONE:
            self.timers.cancel(r.timer)  # type: ignore[arg-type]
            r.status = "incomplete"
            r.reason = "connection_closed"
            r.t_done_ns = now_ns
            self._record_response(r)
            self.response = None

    # ------------------------------------------------------------ what a response says

    def _finish_audio(self, now_ns: int, out: Events, r: Response, item_status: str) -> None:
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

    def _echo_audio(self) -> bytes:
        out_kind = self.config.output_format.kind
        audio = self._last_turn_audio
        if self._last_turn_kind == out_kind:
            return audio
        rate_in = 24000 if self._last_turn_kind == "pcm16" else 8000
        return encode(out_kind, decode(self._last_turn_kind, audio), rate_in)

    def _fixture_text(self, name: str) -> str:
        lib = getattr(self.recognizer, "library", None)
        if lib is not None and name in lib:
            return lib[name].text
        from ..audio.fixtures import default_library

        lib = default_library()
        return lib[name].text if name in lib else ""

    def _record_response(self, r: Response) -> None:
        if len(self.response_records) < MAX_RECORDS:
            self.response_records.append(r.record())


# what the response's timer does in each state that waits on it
_STEPS = {
    Phase.CREATED: ResponsesPart._send_created,
    Phase.THINKING: ResponsesPart._send_output,
    Phase.STREAMING: ResponsesPart._stream,
}
