"""What a bridge did toward Twilio, read back from the fake caller's records.

The bridge profile (:mod:`.bridge_profile`) and the truncate diagnosis
(:mod:`.truncate_diagnosis`) both judge a bridge we may never have seen by the
wire alone (design.md rule 5); on the Twilio side the wire is what
:class:`~.caller.CallerCore` recorded in its timeline (:mod:`.timeline`):
:class:`MediaIn` (bytes), :class:`MarkIn`, :class:`MarkEcho` (with its reason:
played | idle | cleared), :class:`ClearIn`, the caller's own
:class:`UtteranceStart`/:class:`SpeechStart` and, per tick, the app bytes
played (``played_bytes``) and when each caller ``media`` frame left
(``media_sent_ns`` / ``media_sent_grid``). Pure functions, no I/O; nothing here
runs per frame during a call.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..audio.codec import FRAME_MS
from ..caller.core import FRAME_NS, CallerCore
from .timeline import ClearIn, MarkEcho, MarkIn, MediaIn, SpeechStart, UtteranceStart

BYTES_PER_MS = 8  # what Twilio plays: 8 kHz μ-law
#: a barge-in: the caller started speaking while a frame of app audio played within this many ticks
PLAYING_LOOKBACK_TICKS = 2


@dataclass
class TwilioSide:
    """The bridge's behaviour toward Twilio in one call."""

    media_messages: int = 0
    audio_ms: float = 0.0  # app audio received by the caller (before any clear)
    marks: int = 0
    mark_gaps_ms: list[float] = field(default_factory=list)  # audio between consecutive marks
    media_per_mark: list[int] = field(default_factory=list)  # media messages between consecutive marks
    clears: int = 0
    barge_ins: int = 0  # caller speech that started while app audio played
    barge_in_clears: int = 0  # ... answered by a clear before the next utterance
    audio_before_speech: bool = False  # app audio reached the caller before it first spoke
    warnings: dict[int, int] = field(default_factory=dict)  # Twilio warning code -> count
    warning_reason: str | None = None  # the first warning, verbatim


def twilio_side(core: CallerCore) -> TwilioSide:
    """Summarise one call's caller records (see :class:`TwilioSide`)."""
    side = TwilioSide(warnings=dict(core.warning_counts),
                      warning_reason=core.warnings[0]["reason"] if core.warnings else None)
    acc_bytes = acc_media = 0
    first_media_ns: int | None = None
    first_speech_ns: int | None = None
    for e in core.timeline.iter_of(MediaIn, MarkIn, ClearIn, SpeechStart):
        if isinstance(e, MediaIn):
            side.media_messages += 1
            side.audio_ms += e.bytes / BYTES_PER_MS
            acc_bytes += e.bytes
            acc_media += 1
            if first_media_ns is None:
                first_media_ns = e.t_ns
        elif isinstance(e, MarkIn):
            side.marks += 1
            if acc_bytes:
                side.mark_gaps_ms.append(acc_bytes / BYTES_PER_MS)
                side.media_per_mark.append(acc_media)
            acc_bytes = acc_media = 0
        elif isinstance(e, ClearIn):
            side.clears += 1
            acc_bytes = acc_media = 0  # the cleared tail is not a whole gap between marks
        elif first_speech_ns is None:
            first_speech_ns = e.t_ns
    if first_media_ns is not None:
        side.audio_before_speech = first_speech_ns is None or first_media_ns < first_speech_ns
    side.barge_ins, side.barge_in_clears = _barge_ins(core)
    return side


def _barge_ins(core: CallerCore) -> tuple[int, int]:
    """(barge-ins, those answered by a clear).

    Same rule as :mod:`.metrics` (which needs the fixture bank and the mock, so
    is not reused here): speech onset while app audio played, or a clear on the
    line noise before the speech while audio played at the utterance's start.
    """
    if core.t0_ns is None:
        return 0, 0
    utts: list[dict[str, Any]] = []  # {"start", "speech"}
    clears: list[int] = []
    for e in core.timeline.iter_of(UtteranceStart, SpeechStart, ClearIn):
        if isinstance(e, UtteranceStart):
            utts.append({"start": e.t_ns, "speech": None})
        elif isinstance(e, SpeechStart):
            if utts and utts[-1]["speech"] is None:
                utts[-1]["speech"] = e.t_ns
        else:
            clears.append(e.t_ns)
    barges = cleared = 0
    for i, u in enumerate(utts):
        if u["speech"] is None:
            continue
        hi = utts[i + 1]["start"] if i + 1 < len(utts) else None
        in_window = [c for c in clears if u["start"] <= c and (hi is None or c < hi)]
        early_clear = any(c <= u["speech"] for c in in_window)
        if _playing_at(core, u["speech"]) or (early_clear and _playing_at(core, u["start"])):
            barges += 1
            cleared += bool(in_window)
    return barges, cleared


def _playing_at(core: CallerCore, t_ns: int) -> bool:
    played = core.played_bytes
    k = min((t_ns - core.t0_ns) // FRAME_NS, len(played) - 1)  # type: ignore[operator]
    return k >= 0 and any(played[max(0, k - PLAYING_LOOKBACK_TICKS + 1): k + 1])


# ------------------------------------------------------------- one assistant item


@dataclass
class ItemAudio:
    """One assistant item's audio as it reached the caller, up to a moment (the truncate)."""

    first_ns: int  # its first media message reached the caller
    sent_ms: float  # its audio the caller had received by ``until_ns``
    marks_ms: list[float]  # per mark the item sent, in order: the item's audio queued before it
    echoes: list[tuple[int, str, float]]  # (t_ns, reason, audio before the mark) of its marks echoed

    def gaps_ms(self) -> list[float]:
        """Audio between the item's consecutive marks."""
        cuts = sorted(set(self.marks_ms))
        return [b - a for a, b in zip([0.0] + cuts, cuts) if b > a]

    def last_echo_ms(self, before_ns: int, reasons: tuple[str, ...]) -> float | None:
        """Audio before the last of the item's marks echoed for ``reasons`` by ``before_ns``."""
        hits = [ms for t, r, ms in self.echoes if t <= before_ns and r in reasons]
        return hits[-1] if hits else None


def item_audio(core: CallerCore, first_after_ns: int, until_ns: int) -> ItemAudio | None:
    """The item whose first media message is the first one at or after ``first_after_ns``."""
    start = next((i for i, e in enumerate(core.timeline)
                  if isinstance(e, MediaIn) and e.t_ns >= first_after_ns), None)
    if start is None or core.timeline[start].t_ns > until_ns:
        return None
    return _collect(core, start, until_ns)


def item_audio_playing_at(core: CallerCore, t_ns: int) -> ItemAudio | None:
    """Fallback when the mock cannot say when the item began: the run of media that
    started into an empty buffer last before ``t_ns`` (a reply's first delta finds the
    buffer empty; later deltas queue behind it)."""
    start = None
    for i, e in enumerate(core.timeline):
        if e.t_ns > t_ns:
            break
        if isinstance(e, MediaIn) and e.queued == e.bytes:
            start = i
    return None if start is None else _collect(core, start, t_ns)


def _collect(core: CallerCore, start: int, until_ns: int) -> ItemAudio:
    """Marks are matched to echoes in queue order, not by name: Twilio echoes them FIFO
    (played, or all at once on clear), and bridges reuse names (the Twilio sample sends
    every mark as "responsePart")."""
    tl = core.timeline
    queue: deque[float | None] = deque()  # pending marks; None = an earlier item's
    sent = 0
    marks: list[float] = []
    echoes: list[tuple[int, str, float]] = []
    for i, e in enumerate(tl):
        if e.t_ns > until_ns and i >= start:
            break
        if isinstance(e, MarkIn):
            ms = sent / BYTES_PER_MS if i >= start else None
            queue.append(ms)
            if ms is not None:
                marks.append(ms)
        elif isinstance(e, MarkEcho):
            if queue:
                ms = queue.popleft()
                if ms is not None:
                    echoes.append((e.t_ns, e.reason, ms))
        elif isinstance(e, MediaIn) and i >= start:
            sent += e.bytes
    return ItemAudio(tl[start].t_ns, sent / BYTES_PER_MS, marks, echoes)


def first_media_ns(core: CallerCore) -> int | None:
    """When the call's first app audio reached the caller."""
    first = core.timeline.first(MediaIn)
    return None if first is None else first.t_ns


def media_timestamp_at(core: CallerCore, t_ns: int) -> int | None:
    """The ``timestamp`` of the caller's latest ``media`` frame sent by ``t_ns`` (ms since the
    stream start: what a bridge holding "the latest media timestamp" had then).

    The caller numbers frame *k* ``k·20`` ms (twilio_wire / caller); an impairment's
    ``ts_shift_ms`` would move it by that shift, which is not recorded per frame.
    """
    i = bisect.bisect_right(core.media_sent_ns, t_ns) - 1
    return None if i < 0 else core.media_sent_grid[i] * FRAME_MS
