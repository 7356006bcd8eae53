"""What the fake caller observed during a call, one typed event per observation.

:class:`~..caller.core.CallerCore` appends an event for everything it sees or
does (a media message from the app, a mark echoed, a caller utterance starting,
the app closing the socket...) stamped with the driver's clock; the measurement
modules read them back by type (``timeline.of(ClearIn)``), so a misspelt event
name is an error at import rather than a silently empty list.

On disk (``timeline.json``) each event is the dict :meth:`Event.as_dict` makes:
``{"event": <kind>, "t_ns": …, "t_ms": …, <fields>…}``. ``t_ms`` (ms since the
stream start) is derived when the timeline is written, not stored: the core
appends one event per received media message, so an event holds no more than
it must.

Sans-IO: the core imports this module, so it imports neither trio nor the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Iterator, TypeVar


@dataclass(frozen=True, slots=True)
class Event:
    """One observation at ``t_ns`` (the driver's clock; ``time.monotonic_ns`` in real runs)."""

    kind: ClassVar[str]  # the event's name on disk
    t_ns: int

    def as_dict(self, t_ms: float) -> dict[str, Any]:
        """The event as ``timeline.json`` holds it (``t_ms``: ms since the stream started)."""
        d: dict[str, Any] = {"event": self.kind, "t_ns": self.t_ns, "t_ms": t_ms}
        for f in fields(self)[1:]:
            v = getattr(self, f.name)
            if f.name == "lost":
                if v:
                    d["lost"] = True
                continue
            d[f.name] = list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, dict) else v
        return d


# ----------------------------------------------------------------- the stream


@dataclass(frozen=True, slots=True)
class Connected(Event):
    """The caller sent ``connected``."""

    kind: ClassVar[str] = "connected"


@dataclass(frozen=True, slots=True)
class Start(Event):
    """The caller sent ``start``: the stream began (``t_ns`` is the frame grid's origin)."""

    kind: ClassVar[str] = "start"
    stream_sid: str
    call_sid: str
    custom_parameters: dict[str, str]


@dataclass(frozen=True, slots=True)
class Stop(Event):
    """The caller sent ``stop`` (``why``: script | end_of_script | max_duration | aborted)."""

    kind: ClassVar[str] = "stop"
    why: str


@dataclass(frozen=True, slots=True)
class ClosedByApp(Event):
    """The app closed the WebSocket, or it broke; ``after_stop``: the caller had hung up already."""

    kind: ClassVar[str] = "closed_by_app"
    code: int | None
    reason: str | None
    after_stop: bool


@dataclass(frozen=True, slots=True)
class MaxDuration(Event):
    """The call hit ``CallerConfig.max_duration_ms`` and was hung up whatever the script said."""

    kind: ClassVar[str] = "max_duration"
    ms: int


@dataclass(frozen=True, slots=True)
class TwilioWarning(Event):
    """A message Twilio would have flagged (its debugger warning ``code``)."""

    kind: ClassVar[str] = "warning"
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class DriverLate(Event):
    """The driver ran ``ticks`` ticks from ``first_tick`` too late (its own stall, not the app's)."""

    kind: ClassVar[str] = "driver_late"
    first_tick: int
    ticks: int


# ----------------------------------------------------- what the app sent, and its echoes


@dataclass(frozen=True, slots=True)
class MediaIn(Event):
    """A ``media`` message from the app: ``bytes`` of μ-law, ``queued`` in the buffer after it."""

    kind: ClassVar[str] = "media_in"
    bytes: int
    queued: int


@dataclass(frozen=True, slots=True)
class Overflow(Event):
    """The playback buffer was full: ``dropped_bytes`` of the app's audio were dropped."""

    kind: ClassVar[str] = "overflow"
    dropped_bytes: int


@dataclass(frozen=True, slots=True)
class MarkIn(Event):
    """A ``mark`` message from the app, queued behind ``queued`` bytes of audio."""

    kind: ClassVar[str] = "mark_in"
    name: str
    queued: int


@dataclass(frozen=True, slots=True)
class MarkEcho(Event):
    """The caller echoed a mark (``reason``: played | idle | cleared)."""

    kind: ClassVar[str] = "mark_echo"
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class ClearIn(Event):
    """A ``clear`` from the app: ``dropped_bytes`` of queued audio and the ``marks`` behind it went."""

    kind: ClassVar[str] = "clear_in"
    dropped_bytes: int
    marks: tuple[str, ...]


# --------------------------------------------------------------- what the caller heard


@dataclass(frozen=True, slots=True)
class PlaybackStart(Event):
    """App audio began playing at ``tick``."""

    kind: ClassVar[str] = "playback_start"
    tick: int


@dataclass(frozen=True, slots=True)
class PlaybackStop(Event):
    """App audio stopped playing at ``tick`` (``queued``: what was left in the buffer)."""

    kind: ClassVar[str] = "playback_stop"
    tick: int
    queued: int


@dataclass(frozen=True, slots=True)
class AudioOnset(Event):
    """Audible app audio began at ``tick`` (silence in the app's stream does not count)."""

    kind: ClassVar[str] = "audio_onset"
    tick: int


@dataclass(frozen=True, slots=True)
class AudioOffset(Event):
    """Audible app audio ended at ``tick`` (recorded after the onset hangover)."""

    kind: ClassVar[str] = "audio_offset"
    tick: int


# ----------------------------------------------------------------- what the caller said


@dataclass(frozen=True, slots=True)
class CallerSpeech(Event):
    """A mark in a caller utterance, stamped when its frame was sent; ``lost``: an impairment
    dropped that frame (the mark is kept so the utterance still reads whole)."""

    lost: bool = field(default=False, kw_only=True)
    fixture: str


@dataclass(frozen=True, slots=True)
class UtteranceStart(CallerSpeech):
    """The first frame of a fixture (its leading line noise included)."""

    kind: ClassVar[str] = "utterance_start"
    text: str


@dataclass(frozen=True, slots=True)
class SpeechStart(CallerSpeech):
    """The fixture's speech begins (its manifest's ``speech_start``)."""

    kind: ClassVar[str] = "speech_start"


@dataclass(frozen=True, slots=True)
class SpeechEnd(CallerSpeech):
    """The fixture's last frame of speech."""

    kind: ClassVar[str] = "speech_end"


@dataclass(frozen=True, slots=True)
class UtteranceEnd(CallerSpeech):
    """The fixture's last frame."""

    kind: ClassVar[str] = "utterance_end"


@dataclass(frozen=True, slots=True)
class DtmfSent(Event):
    """The caller sent a ``dtmf`` message."""

    kind: ClassVar[str] = "dtmf"
    digit: str


@dataclass(frozen=True, slots=True)
class WaitTimeout(Event):
    """A ``wait_for_reply``/``wait_for_audio`` step gave up (``heard``: some audio had come)."""

    kind: ClassVar[str] = "wait_timeout"
    step: str
    heard: bool


EVENT_TYPES: tuple[type[Event], ...] = (
    Connected, Start, Stop, ClosedByApp, MaxDuration, TwilioWarning, DriverLate,
    MediaIn, Overflow, MarkIn, MarkEcho, ClearIn,
    PlaybackStart, PlaybackStop, AudioOnset, AudioOffset,
    UtteranceStart, SpeechStart, SpeechEnd, UtteranceEnd, DtmfSent, WaitTimeout,
)

E = TypeVar("E", bound=Event)


class Timeline(list[Event]):
    """The call's events in the order they happened, with typed queries.

    A list, so the core's per-message ``append`` costs what a list's does.
    :meth:`begin` marks the stream start, from which :meth:`as_dicts` counts ``t_ms``.
    """

    __slots__ = ("t0_ns", "_begun_at")

    def __init__(self) -> None:
        super().__init__()
        self.t0_ns: int | None = None
        self._begun_at = 0  # events before this index came before the stream started

    def begin(self, t0_ns: int) -> None:
        self.t0_ns = t0_ns
        self._begun_at = len(self)

    def of(self, *types: type[E]) -> list[E]:
        """The events of these types, in order."""
        return [e for e in self if isinstance(e, types)]  # type: ignore[misc]

    def iter_of(self, *types: type[E]) -> Iterator[E]:
        """The events of these types, in order, lazily."""
        return (e for e in self if isinstance(e, types))  # type: ignore[misc]

    def first(self, *types: type[E]) -> E | None:
        """The first event of these types, or None."""
        return next((e for e in self if isinstance(e, types)), None)  # type: ignore[misc]

    def times(self, *types: type[E]) -> list[int]:
        """``t_ns`` of the events of these types, in order."""
        return [e.t_ns for e in self if isinstance(e, types)]

    def count_of(self, *types: type[E]) -> int:
        """How many events of these types."""
        return sum(1 for e in self if isinstance(e, types))

    def end_ns(self) -> int | None:
        """The latest event's time (None when empty)."""
        return max(e.t_ns for e in self) if self else None

    def t_ms(self, i: int) -> float:
        """Event ``i``'s time in ms since the stream start (0 for events before it started)."""
        t0 = self.t0_ns if i >= self._begun_at else None
        t_ns = self[i].t_ns
        return round((t_ns - (t0 or t_ns)) / 1e6, 3)

    def as_dicts(self) -> list[dict[str, Any]]:
        """The timeline as ``timeline.json`` holds it."""
        return [e.as_dict(self.t_ms(i)) for i, e in enumerate(self)]
