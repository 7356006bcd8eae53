"""The fake Twilio caller: a sans-IO core (no sockets, no clock of its own).

It stands where Twilio stands in a bidirectional ``<Connect><Stream>`` call.
Whoever drives it (the trio driver, a Locust greenlet, a test) feeds it the time
and what arrived on the socket, and sends what it returns (wire strings, as
:data:`~..core_io.Outputs`: the contract it shares with the mock's session; the
caller never ends the connection itself, so it returns no ``Close``/``Abort``):

* :meth:`CallerCore.begin` → ``connected`` and ``start``;
* :meth:`CallerCore.advance` at (or after) :meth:`next_deadline_ns` → the 20 ms
  ``media`` frames (speech from fixtures or line silence, *continuously*),
  ``dtmf``, mark echoes and finally ``stop``;
* :meth:`CallerCore.receive` for each message from the app → immediate mark
  echoes (nothing queued, or a ``clear``).

Frames are scheduled on an absolute grid ``t0 + k·20 ms`` so pacing never drifts:
a late driver gets every overdue frame at once rather than silently shifting the
rest. One 20 ms tick also plays one frame of the app's audio (see
:mod:`.playback`), which is recorded, so the heard audio lines up sample for
sample with the send grid.

Every observation lands in :attr:`timeline` as a typed event (:mod:`..measure.timeline`)
stamped with the driver's clock (``time.monotonic_ns`` in real runs — the clock the
mock and the bridge share).
"""

from __future__ import annotations

import base64
import heapq
import logging
import os
from array import array
from binascii import a2b_base64
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from zlib import crc32

from ..audio import linetag
from ..audio.codec import FRAME_MS, SILENCE_FRAME, SILENCE_PEAK, ULAW_MAGNITUDE
from ..audio.utterances import UtteranceBank, default_bank
from ..core_io import NOTHING, Outputs
from ..measure.timeline import (
    AudioOffset,
    AudioOnset,
    ClearIn,
    ClosedByApp,
    Connected,
    DriverLate,
    DtmfSent,
    MarkEcho,
    MarkIn,
    MaxDuration,
    MediaIn,
    Overflow,
    PlaybackStart,
    PlaybackStop,
    SpeechEnd,
    SpeechStart,
    Start,
    Stop,
    Timeline,
    TwilioWarning,
    UtteranceEnd,
    UtteranceStart,
    WaitTimeout,
)
from . import twilio_wire as tw
from .impairments import Impairer, Impairments
from .playback import Playback
from .script import (
    DTMF_DIGITS,
    Dtmf,
    Hangup,
    Pause,
    Say,
    Step,
    WaitForAudio,
    WaitForReply,
)

log = logging.getLogger("callsim.caller")

FRAME_NS = FRAME_MS * 1_000_000
_SILENCE_B64 = base64.b64encode(SILENCE_FRAME).decode("ascii")
# Non-silent audio separated by less than this is one stretch of assistant speech.
ONSET_HANGOVER_FRAMES = 15  # 300 ms
STALL_NS = 60_000_000  # a tick run this late means the driver stalled (see CallerCore._note_lateness)
# μ-law bytes quieter than SILENCE_PEAK. A frame is loud (codec.frame_peak(frame) >= SILENCE_PEAK)
# exactly when something is left after deleting these: bytes.translate does it in C, far cheaper
# than frame_peak's numpy lookup, on every tick that plays audio.
_QUIET_BYTES = bytes(b for b in range(256) if ULAW_MAGNITUDE[b] < SILENCE_PEAK)


def is_loud(frame: bytes) -> bool:
    """``codec.frame_peak(frame) >= SILENCE_PEAK``, fast."""
    return bool(frame.translate(None, _QUIET_BYTES))


@dataclass
class CallerConfig:
    identity: tw.StreamIdentity
    impairments: Impairments = field(default_factory=Impairments)
    wire_policy: tw.WirePolicy = field(default_factory=tw.WirePolicy)
    max_duration_ms: int = 300_000  # hang up whatever the script says, so no call runs forever
    max_queued_bytes: int = 8000 * 600
    record_media_in: bool = True  # one timeline event per received media message
    max_warnings_kept: int = 200  # warnings are all counted; this many are kept verbatim
    # Idle-line frames carry an inaudible tag (−72 dBFS; simulator/audio/linetag.py) naming this call and the
    # frame, so the harness pairs the call with the OpenAI session its bridge opened — and times each
    # frame's hop through the bridge — by what was sent, whatever the bridge's timing. Off: pure 0xFF.
    line_tag: bool = True


#: an event to record when its message is released (or its frame lost): its type and its
#: fields after ``t_ns``, which is the release time
Tag = tuple[Any, ...]


@dataclass(frozen=True)
class _Out:
    """A message waiting in the outbox; sequence numbers are given at release time."""

    kind: str  # media | dtmf | mark | stop
    arg: Any
    tags: tuple[Tag, ...] = ()


class CallerCore:
    def __init__(self, config: CallerConfig, script: list[Step], bank: UtteranceBank | None = None) -> None:
        self.config = config
        self.ident = config.identity
        #: this call's tag on its idle-line frames (None when off): random, not derived from the SIDs,
        #: which repeat from run to run with --seed — a tag must name this call and no earlier one
        self.line_tag: int | None = int.from_bytes(os.urandom(4), "big") if config.line_tag else None
        self.script = list(script)
        self.bank = bank or default_bank()
        for step in self.script:  # fail before the call, not in the middle of it
            if isinstance(step, Say) and step.fixture not in self.bank:
                raise KeyError(f"unknown fixture {step.fixture!r}; known: {', '.join(self.bank.library.names())}")
            if isinstance(step, Dtmf) and not set(step.digits) <= DTMF_DIGITS:
                raise ValueError(f"DTMF digits must be in {''.join(sorted(DTMF_DIGITS))}: {step.digits!r}")
        self.playback = Playback(config.max_queued_bytes)
        self.impairer = Impairer(config.impairments)

        self.timeline = Timeline()
        self.warnings: list[dict[str, Any]] = []
        self.warning_counts: Counter[int] = Counter()
        self.heard = bytearray()  # μ-law, one 160-byte frame per tick, silence where nothing played
        self.tick_ns = array("q")  # when each tick was processed (shared clock)
        self.played_bytes = array("H")  # app audio bytes in each tick's frame
        self.media_sent_grid = array("q")  # grid index of each media frame sent ...
        self.media_sent_ns = array("q")  # ... and when it was released to the socket
        self.media_sent_crc = array("I")  # ... and the CRC-32 of its μ-law bytes (pairs it by content)
        self.marks_echoed: Counter[str] = Counter()  # by reason: played | idle | cleared
        self.counts: Counter[str] = Counter()

        self.t0_ns: int | None = None
        self._tick = 0
        self._seq = 0  # sequenceNumber: one counter for everything after 'connected'
        self._chunk = 0
        self._outbox: list[tuple[int, int, _Out]] = []  # heap of (due_ns, order, message)
        self._order = 0
        self._hung_up = False
        self.finished = False
        self.end_reason: str | None = None
        # app audio still queued at Twilio when the stream ended: never played (a goodbye cut off)
        self.unplayed_at_end_bytes = 0

        # script state
        self._step_i = -1
        self._step: Step | None = None
        self._step_tick = 0  # ticks spent in the current step
        self._step_mark = 0  # step-specific progress
        self._step_heard = -1  # tick of first non-silent audio heard during the step
        # playback state for events
        self._was_playing = False
        self._loud_run_end = -10**9  # last tick with non-silent audio
        self._in_audio = False
        self._late_tick = -10**9  # last tick the driver ran more than STALL_NS after its due time
        self._late_since = -1  # first tick of the current late run, for the ``driver_late`` event
        self._next_step()

    # ------------------------------------------------------------------ API

    def begin(self, now_ns: int) -> Outputs:
        """Start the stream: ``connected`` then ``start``; frames follow from ``now_ns``."""
        if self.t0_ns is not None:
            raise RuntimeError("begin() called twice")
        self.t0_ns = now_ns
        self.timeline.begin(now_ns)
        self._seq = 1
        self.timeline.append(Connected(now_ns))
        self.timeline.append(Start(now_ns, self.ident.stream_sid, self.ident.call_sid, dict(self.ident.custom_parameters)))
        return [tw.connected_message(), tw.start_message(self.ident, 1)]

    def next_deadline_ns(self) -> int | None:
        """When :meth:`advance` must next be called; ``None`` once the call is over."""
        if self.finished or self.t0_ns is None:
            return None
        due = [] if self._hung_up else [self.t0_ns + self._tick * FRAME_NS]
        if self._outbox:
            due.append(self._outbox[0][0])
        return min(due) if due else None

    def advance(self, now_ns: int) -> Outputs:
        """Run every tick due by ``now_ns`` and release due messages."""
        if self.t0_ns is None or self.finished:
            return NOTHING
        while not self._hung_up and self.t0_ns + self._tick * FRAME_NS <= now_ns:
            self._run_tick(now_ns)
        return self._release(now_ns)

    def receive(self, now_ns: int, data: str | bytes) -> Outputs:
        """Handle one message from the app; returns what to send back at once."""
        if self.t0_ns is None or self._hung_up or self.finished:
            self.counts["before_start" if self.t0_ns is None else "after_stop"] += 1
            return NOTHING
        parsed = tw.parse_outbound(data, self.ident.stream_sid, self.config.wire_policy)
        if isinstance(parsed, tw.Invalid):
            self._warn(now_ns, parsed)
            if parsed.salvaged is None:
                return NOTHING
            parsed = parsed.salvaged
        if isinstance(parsed, tw.OutMedia):
            self.counts["media_in"] += 1
            dropped = self.playback.add_audio(parsed.payload)
            if self.config.record_media_in:
                self.timeline.append(MediaIn(now_ns, len(parsed.payload), self.playback.queued_bytes))
            if dropped:
                self.timeline.append(Overflow(now_ns, dropped))
            return NOTHING
        if isinstance(parsed, tw.OutMark):
            self.counts["mark_in"] += 1
            self.timeline.append(MarkIn(now_ns, parsed.name, self.playback.queued_bytes))
            if self.playback.add_mark(parsed.name):
                self._queue(now_ns, _Out("mark", parsed.name, ((MarkEcho, parsed.name, "idle"),)))
                return self._release(now_ns)
            return NOTHING
        # clear
        self.counts["clear_in"] += 1
        dropped, names = self.playback.clear()
        self.timeline.append(ClearIn(now_ns, dropped, tuple(names)))
        for name in names:
            self._queue(now_ns, _Out("mark", name, ((MarkEcho, name, "cleared"),)))
        return self._release(now_ns)

    def peer_closed(self, now_ns: int, code: int | None = None, reason: str | None = None) -> None:
        """The app closed the WebSocket (or it broke): the stream is over."""
        if self.finished:
            return
        self.timeline.append(ClosedByApp(now_ns, code, reason, self._hung_up))
        self._finish(now_ns, "hangup" if self._hung_up else "closed_by_app")

    def hang_up(self, now_ns: int) -> Outputs:
        """Hang up now, whatever the script says (e.g. the driver was cancelled)."""
        if self.t0_ns is None or self.finished:
            return NOTHING
        if not self._hung_up:
            self._do_hangup(now_ns, "aborted")
        # Flush at once: frames an impairment was holding go out now, then stop.
        return self._release(max([now_ns] + [d for d, _, _ in self._outbox]))

    # ------------------------------------------------------------- summary

    @property
    def stream_sid(self) -> str:
        return self.ident.stream_sid

    def summary(self) -> dict[str, Any]:
        pb = self.playback
        return {
            "call_sid": self.ident.call_sid,
            "stream_sid": self.ident.stream_sid,
            "end_reason": self.end_reason,
            "duration_ms": self._tick * FRAME_MS,
            "frames_sent": len(self.media_sent_ns),
            "frames_lost": self.impairer.lost,
            "audio_received_ms": pb.bytes_received / 8,
            "audio_played_ms": pb.bytes_played / 8,
            "audio_cleared_ms": pb.bytes_cleared / 8,
            "audio_dropped_ms": pb.bytes_dropped / 8,
            "audio_unplayed_at_end_ms": self.unplayed_at_end_bytes / 8,
            "partial_frames": pb.partial_frames,
            "marks_echoed": dict(self.marks_echoed),
            "clears": self.counts["clear_in"],
            "media_in": self.counts["media_in"],
            "warnings": {str(k): v for k, v in sorted(self.warning_counts.items())},
            "utterances": self.timeline.count_of(UtteranceStart),
        }

    # ------------------------------------------------------------ internals

    def _warn(self, now_ns: int, inv: tw.Invalid) -> None:
        self.warning_counts[inv.code] += 1
        if len(self.warnings) < self.config.max_warnings_kept:
            self.warnings.append({"t_ns": now_ns, "code": inv.code, "reason": inv.reason})
        self.timeline.append(TwilioWarning(now_ns, inv.code, inv.reason))
        log.warning("call %s: Twilio warning %d: %s", self.ident.call_sid, inv.code, inv.reason)

    def _queue(self, due_ns: int, out: _Out) -> None:
        self._order += 1
        heapq.heappush(self._outbox, (due_ns, self._order, out))

    def _release(self, now_ns: int) -> Outputs:
        msgs: list[str] = []
        box = self._outbox
        while box and box[0][0] <= now_ns:
            _, _, out = heapq.heappop(box)
            self._seq += 1
            if out.kind == "media":
                grid, ts, b64 = out.arg
                self._chunk += 1
                msgs.append(tw.media_message(self.ident.stream_sid, self._seq, self._chunk, ts, b64))
                self.media_sent_grid.append(grid)
                self.media_sent_ns.append(now_ns)
                self.media_sent_crc.append(crc32(a2b_base64(b64)))
            elif out.kind == "mark":
                msgs.append(tw.mark_message(self.ident.stream_sid, self._seq, out.arg))
            elif out.kind == "dtmf":
                msgs.append(tw.dtmf_message(self.ident.stream_sid, self._seq, out.arg))
            elif out.kind == "stop":
                msgs.append(tw.stop_message(self.ident, self._seq))
            for cls, *args in out.tags:
                ev = cls(now_ns, *args)
                if cls is MarkEcho:
                    self.marks_echoed[ev.reason] += 1
                self.timeline.append(ev)
        if self._hung_up and not box and not self.finished:
            self._finish(now_ns, self.end_reason or "hangup")
        return msgs

    def _finish(self, now_ns: int, reason: str) -> None:
        """The stream is over. What the app had queued and Twilio had not yet played is dropped
        (the line is gone, or the app closed the stream: whether real Twilio plays out its buffer
        after the app's close is not documented; the common report is a goodbye cut off)."""
        self.unplayed_at_end_bytes = self.playback.queued_bytes
        self.finished = True
        self.end_reason = reason
        self._outbox.clear()

    def _next_step(self) -> None:
        self._step_i += 1
        self._step = self.script[self._step_i] if self._step_i < len(self.script) else Hangup()
        self._step_tick = 0
        self._step_mark = 0
        # audio heard on the tick this step begins counts for it (playback runs before the script)
        self._step_heard = self._tick if self._loud_run_end == self._tick else -1

    def _do_hangup(self, now_ns: int, why: str) -> None:
        grid = self.t0_ns + self._tick * FRAME_NS  # type: ignore[operator]
        last_due = max((d for d, _, _ in self._outbox), default=grid)
        self._queue(max(grid, last_due), _Out("stop", None, ((Stop, why),)))
        self._hung_up = True
        self.end_reason = "hangup" if why in ("script", "end_of_script") else why

    def _note_lateness(self, k: int, late_ns: int, now_ns: int) -> None:
        """Remember ticks the *driver* ran late, so its own stall is not taken for the app's.

        When the harness process stalls (a loaded CI box, a GC pause), the
        overdue ticks run back to back *before* the driver reads what the app
        sent meanwhile, so playback underruns although the audio was sitting in
        the socket on time. Playing silence there is what a phone would do had
        the audio been late; but deciding from that silence that the reply is
        over (:class:`WaitForReply`) would hang up on a bridge that did nothing
        wrong. So quiet is counted only from ticks that ran on time, and each
        late run is recorded as a ``driver_late`` event (the report's pacing
        figures come from :attr:`tick_ns` either way).
        """
        if late_ns > STALL_NS:
            if self._late_since < 0:
                self._late_since = k
            self._late_tick = k
        elif self._late_since >= 0:
            self.timeline.append(DriverLate(now_ns, self._late_since, k - self._late_since))
            self._late_since = -1

    def _run_tick(self, now_ns: int) -> None:
        k = self._tick
        grid_ns = self.t0_ns + k * FRAME_NS  # type: ignore[operator]
        self.tick_ns.append(now_ns)
        self._note_lateness(k, now_ns - grid_ns, now_ns)

        # 1. playback: finish the last frame, play the next
        frame = self.playback.tick()
        self.heard += frame.audio
        self.played_bytes.append(frame.played_bytes)
        for name in frame.echoed:
            self._queue(grid_ns, _Out("mark", name, ((MarkEcho, name, "played"),)))
        playing = frame.played_bytes > 0
        if playing != self._was_playing:
            if playing:
                self.timeline.append(PlaybackStart(now_ns, k))
            else:
                self.timeline.append(PlaybackStop(now_ns, k, self.playback.queued_bytes))
            self._was_playing = playing
        loud = playing and is_loud(frame.audio)
        if loud:
            if not self._in_audio:
                self.timeline.append(AudioOnset(now_ns, k))
                self._in_audio = True
            self._loud_run_end = k
            if self._step_heard < 0:
                self._step_heard = k
        elif self._in_audio and k - self._loud_run_end >= ONSET_HANGOVER_FRAMES:
            self.timeline.append(AudioOffset(now_ns, self._loud_run_end + 1))
            self._in_audio = False

        # 2. the caller's side of the line
        if k * FRAME_MS >= self.config.max_duration_ms:
            self.timeline.append(MaxDuration(now_ns, self.config.max_duration_ms))
            self._do_hangup(now_ns, "max_duration")
            self._tick += 1
            return
        b64, tags = self._script_frame(now_ns, k)
        if self._hung_up:
            self._tick += 1
            return
        fate = self.impairer.fate(grid_ns)
        if fate.send:
            self._queue(grid_ns + fate.delay_ns, _Out("media", (k, k * FRAME_MS + fate.ts_shift_ms, b64), tags))
        elif tags:  # a lost frame still carried speech: keep its timeline marks
            for cls, *args in tags:
                self.timeline.append(cls(now_ns, *args, lost=True))
        self._tick += 1

    def _idle(self, k: int) -> str:
        """The idle line for tick ``k``: line silence, tagged with the call and the frame when enabled."""
        if self.line_tag is None:
            return _SILENCE_B64
        return base64.b64encode(linetag.tag_frame(self.line_tag, k)).decode("ascii")

    def _script_frame(self, now_ns: int, k: int) -> tuple[str, tuple[Tag, ...]]:
        """Advance the script by one frame; return the payload to send and timeline tags."""
        while True:
            step = self._step
            if isinstance(step, Say):
                utt = self.bank.get(step.fixture)
                i = self._step_mark
                if i >= utt.frame_count:
                    self._next_step()
                    continue
                tags: list[Tag] = []
                if i == 0:
                    tags.append((UtteranceStart, utt.name, utt.text))
                if i == utt.speech_start_frame:
                    tags.append((SpeechStart, utt.name))
                if i == utt.speech_end_frame:
                    tags.append((SpeechEnd, utt.name))
                if i == utt.frame_count - 1:
                    tags.append((UtteranceEnd, utt.name))
                self._step_mark += 1
                return utt.frames_b64[i], tuple(tags)
            if isinstance(step, Pause):
                if self._step_tick * FRAME_MS >= step.ms:
                    self._next_step()
                    continue
                self._step_tick += 1
                return self._idle(k), ()
            if isinstance(step, Dtmf):
                i = self._step_mark
                if i >= len(step.digits):
                    self._next_step()
                    continue
                gap = max(1, step.gap_ms // FRAME_MS)
                if self._step_tick % gap == 0:
                    digit = step.digits[i]
                    self._queue(self.t0_ns + k * FRAME_NS,  # type: ignore[operator]
                                _Out("dtmf", digit, ((DtmfSent, digit),)))
                    self._step_mark += 1
                self._step_tick += 1
                return self._idle(k), ()
            if isinstance(step, WaitForReply):
                elapsed = self._step_tick * FRAME_MS
                # silence counts only from ticks the driver ran on time (see _note_lateness)
                quiet = (k - max(self._loud_run_end, self._late_tick)) * FRAME_MS
                if self._step_heard >= 0 and quiet >= step.quiet_ms and not self.playback.busy:
                    self._next_step()
                    continue
                if step.start_ms is not None and self._step_heard < 0 and elapsed >= step.start_ms:
                    self._next_step()  # nothing to wait for (no greeting)
                    continue
                if elapsed >= step.timeout_ms:
                    self.timeline.append(WaitTimeout(now_ns, "wait_for_reply", self._step_heard >= 0))
                    self._next_step()
                    continue
                self._step_tick += 1
                return self._idle(k), ()
            if isinstance(step, WaitForAudio):
                if self._step_heard >= 0 and (k - self._step_heard) * FRAME_MS >= step.after_ms:
                    self._next_step()
                    continue
                if self._step_tick * FRAME_MS >= step.timeout_ms:
                    self.timeline.append(WaitTimeout(now_ns, "wait_for_audio", self._step_heard >= 0))
                    self._next_step()
                    continue
                self._step_tick += 1
                return self._idle(k), ()
            # Hangup (explicit, or the script ran out)
            self._do_hangup(now_ns, "script")
            return self._idle(k), ()
