"""The input audio buffer of a mock session, the server VAD around it, and committed turns.

``input_audio_buffer.append`` arrives 50 times a second per call, so its handler
reaches all it needs in one hop and is not logged. The buffer has its own clock
(``_input_ms``: milliseconds of audio appended), on which the VAD's and the
events' ``audio_start_ms``/``audio_end_ms`` are reported; a VAD rebuilt after a
format or turn-detection change starts at 0 and is mapped back onto it.

A committed turn (VAD speech_stopped, or a manual commit) becomes a user item,
is matched against the known fixtures (the recognizer), and — with input
transcription on — gets the fixture's text after the behaviour's delay.
Memory is bounded: idle audio under VAD, and any turn beyond ``MAX_TURN_MS``.
"""

from __future__ import annotations

import binascii
from array import array
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

from . import errors
from .audio import BYTES_PER_MS, InputConverter
from .conversation import Item
from .fingerprint import BLOCK_MS, BlockPrints
from .ids import new_id
from .line_tags import LineTagLog
from .session_base import MAX_RECORDS, MAX_TIMINGS, MS, Events, SessionBase
from .vad import ServerVad, VadEvent, VadParams

MAX_IDLE_BUFFER_MS = 2000  # with VAD on, audio kept while nobody speaks
MAX_TURN_MS = 120_000  # longest user turn kept (memory bound per session)
MIN_COMMIT_MS = 100  # real: "Expected at least 100ms of audio"


class InputAudioPart(SessionBase):
    """``input_audio_buffer.*`` client events, the VAD's events, committed turns and their transcription."""

    turns: list[dict[str, Any]]
    append_ns: array
    blocks: BlockPrints
    line_tags: LineTagLog

    if TYPE_CHECKING:  # what it uses of the other parts
        items: dict[str, Item]
        order: list[str]

        def _add_item(self, now_ns: int, out: Events, item: Item, previous: str | None,
                      pos: int | None = None) -> None: ...
        def _response_active(self) -> bool: ...
        def _cancel(self, now_ns: int, out: Events, reason: str) -> None: ...
        def _start_response(self, now_ns: int, out: Events, trigger: str,
                            opts: dict[str, Any] | None = None) -> None: ...
        def _idle_stop(self) -> None: ...
        def _idle_restart(self, from_ns: int) -> None: ...

    def _init_input_audio(self) -> None:
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
        self.turns = []
        self.append_ns = array("q")  # arrival of each input_audio_buffer.append
        self.blocks = BlockPrints(MAX_TIMINGS)  # arrival + CRC of each 20 ms block of input audio
        self.line_tags = LineTagLog()  # which calls' tagged idle line reached this session (μ-law only)

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

    # ------------------------------------------------------------ client events

    def _on_input_audio_buffer_append(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: Events) -> None:
        """50 times a second per call: keep it lean (locals, no per-call lookups it can skip)."""
        try:
            data = b64decode_strict(ev["audio"])
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

    def _on_input_audio_buffer_commit(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: Events) -> None:
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

    def _on_input_audio_buffer_clear(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: Events) -> None:
        kind = self.config.input_format.kind
        self._buffer_start_ms += len(self._buffer) / BYTES_PER_MS[kind]
        self._buffer.clear()
        self._emit(now_ns, out, {"type": "input_audio_buffer.cleared"})

    # ------------------------------------------------------------ the buffer

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

    # ------------------------------------------------------------ VAD and turns

    def _on_vad(self, now_ns: int, vev: VadEvent, out: Events) -> None:
        off = self._vad_offset_ms
        if vev.kind == "speech_started":
            self._speech_item_id = new_id("item", self.rng)
            self._speech_start_ms = int(vev.audio_ms + off)
            self._speech_onset_ms = int(vev.speech_onset_ms + off)
            self._emit(now_ns, out, {"type": "input_audio_buffer.speech_started",
                                     "audio_start_ms": self._speech_start_ms, "item_id": self._speech_item_id})
            self._t_speech_started = now_ns
            self._idle_stop()
            td = self.config.turn_detection
            if self._response_active() and td is not None and td.interrupt_response:
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
            if self._response_active():
                turn["response_skipped"] = "active response"
            else:
                self._start_response(now_ns, out, "vad")
        if not self._response_active():
            self._idle_restart(now_ns)

    def _commit(self, now_ns: int, out: Events, item_id: str, audio: bytes, eid: str | None,
                turn: dict[str, Any], *, caller_turn: bool = True) -> None:
        """A user item from the buffer. ``caller_turn`` is false for an idle timeout's silence: it is
        in the conversation, but the caller said nothing, so the replies to the caller's turns
        (``Behaviour.replies``) do not move on."""
        kind = self.config.input_format.kind
        previous = self.order[-1] if self.order else None
        self._emit(now_ns, out, {"type": "input_audio_buffer.committed", "previous_item_id": previous,
                                 "item_id": item_id})
        item = Item(item_id, "message", "user", content=[{"type": "input_audio", "transcript": None}])
        self._add_item(now_ns, out, item, previous)
        heard, score = (None, 0.0)
        if caller_turn:
            self._user_turns += 1
            self._last_turn_audio = audio
            self._last_turn_kind = kind
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
            self.timers.call_at(now_ns + int(self.behaviour.transcription_delay_ms * MS), "input.transcription",
                                partial(self._transcribe, item=item, text=text, seconds=ms / 1000))

    def _transcript_for(self, heard: str | None, ms: float) -> str:
        if heard is not None and self.recognizer is not None:
            fx = self.recognizer.library[heard] if hasattr(self.recognizer, "library") else None
            if fx is not None and fx.text:
                return fx.text
        return f"[unrecognised caller audio, {ms / 1000:.1f} s]"

    def _transcribe(self, now_ns: int, out: Events, *, item: Item, text: str, seconds: float) -> None:
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



def b64decode_strict(text: str) -> bytes:
    """``base64.b64decode(text, validate=True)`` without its Python wrapper: the same C call,
    the same errors (``binascii.Error`` for bad base64, ``ValueError`` for a non-ASCII string).
    ``text`` is a str: validated upstream."""
    return binascii.a2b_base64(text, strict_mode=True)
