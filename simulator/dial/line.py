"""The server side of Twilio Media Streams for ``callsim dial``, without I/O: the caller's core on a real line.

On a dialled call Twilio is the client: it opens the WebSocket to callsim, sends ``connected`` and
``start``, then the called party's voice (the AGENT under test) as ``media`` every 20 ms, and
echoes each ``mark`` callsim sent once the audio queued before it has played into the call.
Callsim serves the side a bridge serves: its ``media`` are the scenario's caller utterances.

Rather than a second caller, :class:`LineCore` runs the scenario with the fake caller's own
:class:`~..caller.core.CallerCore` (script, utterances, playback, timeline, recording) and
mirrors its wire:

* the frames of the script's utterances (paced on the core's 20 ms grid, so a barge-in starts
  when the script says) go out as the server's ``media``, with a ``mark`` after each frame that
  starts or ends an utterance or its speech (:data:`MARKED`). The core's idle line between
  utterances is not sent: Twilio plays silence when its queue is empty, as it does for a bridge,
  and an empty queue is what lets each utterance start playing the moment it arrives;
* Twilio's inbound ``media`` (the agent's voice, already played out in real time by Twilio) is
  fed to the core as the app's audio, so onsets, offsets, the recording and every measurement
  of ``callsim call`` work unchanged. Frames of an idle line (every sample under
  :data:`LINE_QUIET_PEAK`, −60 dBFS) are not fed: a phone line never stops sending ``media``,
  and "the agent's audio stopped" (talk-over, barge-in reaction) must mean its voice stopped;
* the core's ``stop`` (the script hung up) becomes a close of the WebSocket, which ends the
  ``<Connect>`` (the dial then hangs up over REST); Twilio's ``stop`` (the other party hung up)
  ends the core as an app closing the stream would.

Times on the line: the core stamps its utterance events when their frame is *sent*; on a real
call Twilio queues the audio and plays it later. Each mark's echo says when its frame finished
playing, so after the call :func:`to_line_time` moves every marked event to the line:
``speech_end``/``utterance_end`` to the echo itself (the last speech sample has played), and
``utterance_start``/``speech_start`` to the echo minus one frame (when that frame began to play).
Turn latency is then the echo after our last speech frame → the onset of the agent's reply in
the inbound audio, as the issue defines it; an event whose mark never came back keeps its send
time, and :attr:`LineCore.unechoed` says how many.

Audio continuity is read from Twilio's own numbering (:class:`Continuity`): a ``chunk`` skipped
is inbound audio the line lost (20 ms each). The ``timestamp`` is Twilio's media clock, not 20 ms
per chunk exactly (protocols.md), so its steps are kept apart as drift, never counted as loss.
"""

from __future__ import annotations

import dataclasses
import logging
from binascii import Error, a2b_base64
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any, Final

import orjson

from ..audio.codec import FRAME_MS, ULAW_MAGNITUDE
from ..caller.core import FRAME_NS, CallerCore
from ..caller.script import Dtmf
from ..core_io import NOTHING, Close, Outputs
from ..measure.timeline import CallerSpeech, Event, SpeechEnd, SpeechStart, Timeline, UtteranceEnd, UtteranceStart
from .request import TOKEN_PARAM

log = logging.getLogger("callsim.dial")

#: below this peak (μ-law magnitude of −60 dBFS) a frame is an idle line, not the agent's voice
LINE_QUIET_PEAK: Final = 33
_LINE_QUIET_BYTES = bytes(b for b in range(256) if ULAW_MAGNITUDE[b] < LINE_QUIET_PEAK)
#: the caller events a mark follows, so that the echo places them on the line
MARKED: Final = (UtteranceStart, SpeechStart, SpeechEnd, UtteranceEnd)
#: continuity gaps kept verbatim (all are counted)
MAX_GAPS_KEPT: Final = 100
#: how the core ends a stream the script hung up (the close that ends ``<Connect>``)
SCRIPT_DONE: Final = Close(1000, "callsim: scenario done")


#: why a scenario that presses keys is not dialled
NO_KEYPRESSES: Final = ("a caller's keypresses cannot be sent on a bidirectional media stream (Twilio sends "
                        "`dtmf`, it takes none), so `callsim dial` cannot press keys: run it with `callsim call`")


def cannot_play(steps: Sequence[object]) -> str | None:
    """Why a script cannot be played on a line (None: it can). Its ``Dtmf`` steps have no wire on
    the server side of a media stream: :class:`LineCore` would drop the keys and the scenario
    would be judged as if they had been pressed."""
    return NO_KEYPRESSES if any(isinstance(step, Dtmf) for step in steps) else None


def voiced(frame: bytes) -> bool:
    """Some sample of this μ-law frame is at or above :data:`LINE_QUIET_PEAK`."""
    return bool(frame.translate(None, _LINE_QUIET_BYTES))


# ================================================================ the start


@dataclass(frozen=True, slots=True)
class StreamStart:
    """What a ``start`` message announced."""

    call_sid: str
    stream_sid: str
    account_sid: str
    parameters: dict[str, str]
    encoding: str | None


def parse_start(data: str | bytes) -> StreamStart | str:
    """The ``start`` of a stream, or why this message is not one."""
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "not JSON"
    if not isinstance(msg, dict) or msg.get("event") != "start":
        return f"event {msg.get('event')!r} where 'start' was expected" if isinstance(msg, dict) else "not an object"
    start = msg.get("start")
    if not isinstance(start, dict):
        return "start without a 'start' object"
    params = start.get("customParameters") if isinstance(start.get("customParameters"), dict) else {}
    fmt = start.get("mediaFormat") if isinstance(start.get("mediaFormat"), dict) else {}
    return StreamStart(str(start.get("callSid") or ""), str(start.get("streamSid") or msg.get("streamSid") or ""),
                       str(start.get("accountSid") or ""), {str(k): str(v) for k, v in params.items()},
                       fmt.get("encoding"))


def refusal(start: StreamStart, *, call_sid: str | None, token: str) -> str | None:
    """Why this stream is not the dialled call's (None: it is). The token is the secret that
    matters (a fresh one per dial, in the TwiML only); the call SID must match once it is known."""
    got = start.parameters.get(TOKEN_PARAM)
    if not got:
        return f"no {TOKEN_PARAM} parameter (not a stream of this dial's TwiML)"
    if got != token:
        return f"wrong {TOKEN_PARAM} (a stream of another dial?)"
    if call_sid is not None and start.call_sid != call_sid:
        return f"callSid {start.call_sid or '(none)'} is not the dialled call {call_sid}"
    if start.encoding not in (None, "audio/x-mulaw"):
        return f"media format {start.encoding!r}; callsim speaks audio/x-mulaw only"
    return None


# =========================================================== continuity


@dataclass
class Continuity:
    """Twilio's inbound numbering: frames received, chunks skipped (the audio lost), and the media
    clock's drift.

    Lost audio is counted from ``chunk`` alone: each number skipped is a 20 ms frame that never
    arrived. Twilio's ``timestamp`` is a media clock whose steps vary around 20 ms (20/21/19/20 on
    a healthy line), so a step over 20 ms is not loss, and counting only those would add up a
    healthy line's jitter as gaps. Its net drift from 20 ms per chunk (``timestamp_drift_ms``, signed)
    and its longest step are kept as figures of their own."""

    frames: int = 0
    missing_chunks: int = 0
    gap_ms: float = 0.0  # missing_chunks × 20 ms: the inbound audio the line lost
    gaps: list[dict[str, Any]] = field(default_factory=list)  # {"t_ns", "after_ms", "ms", "chunks"}
    max_arrival_gap_ms: float = 0.0  # the longest wait between two inbound frames
    max_timestamp_step_ms: int | None = None  # the media clock's longest step between two frames
    _chunk: int | None = None
    _ts: int | None = None
    _t_ns: int | None = None
    _first: tuple[int, int] | None = None  # (chunk, timestamp) of the first frame numbered both ways
    _last: tuple[int, int] | None = None

    def note(self, now_ns: int, chunk: Any, timestamp: Any) -> None:
        self.frames += 1
        if self._t_ns is not None:
            self.max_arrival_gap_ms = max(self.max_arrival_gap_ms, (now_ns - self._t_ns) / 1e6)
        self._t_ns = now_ns
        try:
            c = int(chunk) if chunk is not None else None
            ts = int(timestamp) if timestamp is not None else None
        except (TypeError, ValueError):
            return
        lost_chunks = c - self._chunk - 1 if c is not None and self._chunk is not None else 0
        if lost_chunks > 0:
            ms = float(lost_chunks * FRAME_MS)
            self.missing_chunks += lost_chunks
            self.gap_ms += ms
            if len(self.gaps) < MAX_GAPS_KEPT:
                self.gaps.append({"t_ns": now_ns, "after_ms": self._ts, "ms": ms, "chunks": lost_chunks})
        if ts is not None and self._ts is not None:
            step = ts - self._ts
            if self.max_timestamp_step_ms is None or step > self.max_timestamp_step_ms:
                self.max_timestamp_step_ms = step
        if c is not None and ts is not None:
            self._last = (c, ts)
            if self._first is None:
                self._first = self._last
        self._chunk = c if c is not None else self._chunk
        self._ts = ts if ts is not None else self._ts

    @property
    def timestamp_drift_ms(self) -> int | None:
        """How far the media clock ran from 20 ms per chunk between the first and the last frame
        (positive: ahead); None until two frames carried both numbers."""
        if self._first is None or self._last is None or self._first == self._last:
            return None
        (c0, t0), (c1, t1) = self._first, self._last
        return (t1 - t0) - (c1 - c0) * FRAME_MS

    def to_json(self) -> dict[str, Any]:
        return {"frames": self.frames, "missing_chunks": self.missing_chunks, "gap_ms": self.gap_ms,
                "timestamp_drift_ms": self.timestamp_drift_ms, "max_timestamp_step_ms": self.max_timestamp_step_ms,
                "max_arrival_gap_ms": round(self.max_arrival_gap_ms, 1), "gaps": self.gaps}


# ================================================================= marks


@dataclass
class LineMark:
    """A mark sent after the frame of one caller event; ``echo_ns`` when Twilio echoed it."""

    name: str
    event: CallerSpeech
    sent_ns: int
    echo_ns: int | None = None


class _MarkingTimeline(Timeline):
    """The core's timeline, noting after which sent media frame each caller event came.

    :class:`CallerCore` appends an utterance event right after it released that event's frame,
    so the number of frames sent so far places the mark exactly, however many frames a late
    tick releases at once."""

    __slots__ = ("core", "pending")

    def __init__(self, core: CallerCore) -> None:
        super().__init__()
        self.core = core
        self.pending: list[tuple[int, CallerSpeech]] = []

    def append(self, ev: Event) -> None:
        super().append(ev)
        if isinstance(ev, MARKED):
            self.pending.append((len(self.core.media_sent_grid), ev))  # type: ignore[arg-type]


# ================================================================== core


class LineCore:
    """One accepted stream: the scenario's :class:`CallerCore` behind the server side of the wire
    (see the module docstring). Shaped as :class:`~..net.drive.Core` for the shared loop."""

    def __init__(self, core: CallerCore, start: StreamStart) -> None:
        if core.t0_ns is not None or len(core.timeline):
            raise ValueError("the caller core must be fresh")
        self.core = core
        self.start = start
        self._marked = _MarkingTimeline(core)
        core.timeline = self._marked
        self.marks: dict[str, LineMark] = {}
        self.continuity = Continuity()
        self.counts: dict[str, int] = {"media_in": 0, "fed": 0, "marks_sent": 0, "echoes": 0, "unknown_echoes": 0,
                                       "dtmf_in": 0, "other_in": 0}
        self.stopped_by_twilio = False
        self._in_utterance = False
        self._fed_prefix = '{"event":"media","streamSid":"%s","media":{"payload":"' % core.ident.stream_sid
        self._out_prefix = '{"event":"media","streamSid":"%s","media":{"payload":"' % start.stream_sid

    def begin(self, now_ns: int) -> Outputs:
        """The stream started (``start`` arrived) at ``now_ns``: the answer, the frame grid's origin."""
        self.core.begin(now_ns)  # its connected/start are Twilio's, already received
        return NOTHING

    # ------------------------------------------------------------- Core

    @property
    def finished(self) -> bool:
        return self.core.finished

    def next_deadline_ns(self) -> int | None:
        return self.core.next_deadline_ns()

    def advance(self, now_ns: int) -> Outputs:
        sent_before = len(self.core.media_sent_grid)
        outs = self.core.advance(now_ns)
        if not outs:
            return NOTHING
        pending = self._marked.pending
        wire: list[str | Close] = []
        sent = sent_before
        for msg in outs:
            if not isinstance(msg, str):
                continue
            if msg.startswith('{"event":"media"'):
                sent += 1
                events = []
                while pending and pending[0][0] <= sent:
                    events.append(pending.pop(0)[1])
                if any(isinstance(ev, UtteranceStart) for ev in events):
                    self._in_utterance = True
                if self._in_utterance:  # the idle line between utterances is Twilio's to fill
                    i = msg.index('"payload":"') + 11
                    wire.append(self._out_prefix + msg[i:msg.index('"', i)] + '"}}')
                    wire.extend(self._mark(now_ns, ev) for ev in events)
                if any(isinstance(ev, UtteranceEnd) for ev in events):
                    self._in_utterance = False
            elif msg.startswith('{"event":"stop"'):
                wire.append(SCRIPT_DONE)
                break
            # the core's dtmf has no server-side equivalent on a media stream: such a scenario is
            # never dialled (cannot_play)
        return wire

    def receive(self, now_ns: int, data: str | bytes) -> Outputs:
        if self.core.finished:
            return NOTHING
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.counts["other_in"] += 1
            return NOTHING
        event = msg.get("event") if isinstance(msg, dict) else None
        if event == "media":
            media = msg.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(payload, str) or media.get("track", "inbound") not in ("inbound", "inbound_track"):  # type: ignore[union-attr]
                self.counts["other_in"] += 1
                return NOTHING
            self.counts["media_in"] += 1
            self.continuity.note(now_ns, media.get("chunk"), media.get("timestamp"))
            if voiced(_b64decode(payload)):
                self.counts["fed"] += 1
                self.core.receive(now_ns, self._fed_prefix + payload + '"}}')
            return NOTHING
        if event == "mark":
            mark_msg = msg.get("mark")
            name = mark_msg.get("name") if isinstance(mark_msg, dict) else None
            mark = self.marks.get(name) if isinstance(name, str) else None
            if mark is None or mark.echo_ns is not None:
                self.counts["unknown_echoes"] += 1
            else:
                mark.echo_ns = now_ns
                self.counts["echoes"] += 1
            return NOTHING
        if event == "stop":
            self.stopped_by_twilio = True
            self.core.peer_closed(now_ns, None, "Twilio sent stop: the call ended")
            return [Close(1000, "stop received")]
        self.counts["dtmf_in" if event == "dtmf" else "other_in"] += 1
        return NOTHING

    def peer_closed(self, now_ns: int, code: int | None = None, reason: str | None = None) -> None:
        self.core.peer_closed(now_ns, code, reason)

    def hang_up(self, now_ns: int) -> Outputs:
        """End now whatever the script says (the dial was cancelled): close the stream."""
        self.core.hang_up(now_ns)
        return [SCRIPT_DONE]

    # --------------------------------------------------------- results

    @property
    def unechoed(self) -> int:
        return sum(m.echo_ns is None for m in self.marks.values())

    def _mark(self, now_ns: int, ev: CallerSpeech) -> str:
        name = f"{ev.kind}:{ev.fixture}:{len(self.marks) + 1}"
        self.marks[name] = LineMark(name, ev, now_ns)
        self.counts["marks_sent"] += 1
        return orjson.dumps({"event": "mark", "streamSid": self.start.stream_sid, "mark": {"name": name}}).decode()


def _b64decode(payload: str) -> bytes:
    try:
        return a2b_base64(payload)
    except Error:
        return b""


def to_line_time(line: LineCore) -> int:
    """Move the core's marked utterance events to when they played on the line (see the module
    docstring); returns how many were moved. Call once, after the call."""
    by_event = {id(m.event): m for m in line.marks.values() if m.echo_ns is not None}
    timeline = line.core.timeline
    moved = 0
    for i, ev in enumerate(timeline):
        mark = by_event.get(id(ev))
        if mark is None:
            continue
        assert mark.echo_ns is not None
        t = mark.echo_ns - (FRAME_NS if isinstance(ev, (UtteranceStart, SpeechStart)) else 0)
        timeline[i] = dataclasses.replace(ev, t_ns=t)  # type: ignore[type-var]
        moved += 1
    return moved


def greeting_ms(line: LineCore) -> float | None:
    """Answer (the stream's ``start``) → the first loud frame of the agent's voice, when the agent
    spoke before our first utterance began on the line (None: no greeting)."""
    return core_greeting_ms(line.core)


def core_greeting_ms(core: CallerCore) -> float | None:
    """:func:`greeting_ms` of any caller core: the same figure for a ``callsim call`` (its answer is
    the stream's start too), so the two paths can be compared."""
    from ..measure.metrics import Playout

    if core.t0_ns is None:
        return None
    po = Playout(core)
    first_say = core.timeline.first(UtteranceStart)
    end = po.tick_of(first_say.t_ns) if first_say is not None else po.n
    k = po.first(po.loud, 0, end)
    return None if k is None else (po.played_ns(k) - core.t0_ns) / 1e6
