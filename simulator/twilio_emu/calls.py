"""The emulator's Calls: their state, the status transitions Twilio allows, and what happened.

A call is created ``queued``; the call legs (:mod:`.engine`) move it on through ``ringing`` and
``in-progress`` to an end status, and the REST API hangs it up or redirects it. Every change is
recorded as a :class:`CallEvent` in :attr:`CallStore.events`, which the legs drain
(:meth:`CallStore.drain_events`) to act on: dial the number, stop the current TwiML and run the
new one, hang up. Time comes from the caller (``at``, seconds since the Unix epoch, UTC): the
store reads no clock.

Status words and their order are Twilio's (``CallInstance.Status`` in the ``twilio`` package).
What a REST hang-up does to a call not yet answered follows Twilio's Update Call page:
``completed`` "will attempt to hang up a call even if it's already in progress", and a call
ended before it was answered is ``canceled`` ("canceled via the REST API while queued or
ringing").
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from ..caller.sids import make_sid
from .errors import CALL_NOT_IN_PROGRESS, TwilioError

Status = Literal["queued", "ringing", "in-progress", "completed", "busy", "failed", "no-answer", "canceled"]

QUEUED: Final = "queued"
RINGING: Final = "ringing"
IN_PROGRESS: Final = "in-progress"
COMPLETED: Final = "completed"
BUSY: Final = "busy"
FAILED: Final = "failed"
NO_ANSWER: Final = "no-answer"
CANCELED: Final = "canceled"

ENDED: Final = frozenset({COMPLETED, BUSY, FAILED, NO_ANSWER, CANCELED})

# Which status may follow which. An unanswered call ends busy, failed, no-answer or canceled;
# only an answered one ends completed.
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    QUEUED: frozenset({RINGING, IN_PROGRESS, BUSY, FAILED, NO_ANSWER, CANCELED}),
    RINGING: frozenset({IN_PROGRESS, BUSY, FAILED, NO_ANSWER, CANCELED}),
    IN_PROGRESS: frozenset({COMPLETED, FAILED}),
}

DEFAULT_TIMEOUT_S: Final = 60  # Twilio's default ring time for a REST-created call


@dataclass(slots=True)
class Instructions:
    """What to run when the call is answered (or now, after a redirect): inline TwiML or a URL."""

    twiml: str | None = None
    url: str | None = None
    method: str = "POST"


@dataclass(slots=True)
class Call:
    """One call as the store holds it; :mod:`.rest` renders it as Twilio's JSON."""

    sid: str
    account_sid: str
    to: str
    from_: str
    instructions: Instructions
    date_created: float
    date_updated: float
    status: str = QUEUED
    direction: str = "outbound-api"
    start_time: float | None = None
    end_time: float | None = None
    status_callback: str | None = None
    status_callback_method: str = "POST"
    status_callback_events: tuple[str, ...] = ()
    record: bool = False
    recording_channels: int = 1  # RecordingChannels: mono (Twilio's default) or dual
    timeout_s: int = DEFAULT_TIMEOUT_S
    parent_call_sid: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def duration_s(self) -> int | None:
        """Whole seconds from answer to end; ``None`` until an answered call ends (Twilio leaves
        it empty for busy, failed, unanswered or ongoing calls)."""
        if self.start_time is None or self.end_time is None:
            return None
        return int(self.end_time - self.start_time)


@dataclass(frozen=True, slots=True)
class CallEvent:
    """Something that happened to a call, for the call legs to act on.

    ``kind``: ``created`` (dial it), ``status`` (its status changed to ``status``),
    ``redirected`` (stop the current TwiML, run ``instructions``), ``hung_up`` (a REST
    hang-up: end the legs; ``status`` is the end status it got)."""

    kind: Literal["created", "status", "redirected", "hung_up"]
    sid: str
    at: float
    status: str
    instructions: Instructions | None = None


@dataclass
class CallStore:
    """The calls of one emulated account, newest last, and the events not yet drained.

    ``listeners`` are called with each event as it happens, after the call has changed (the
    status callbacks read the call as it is at that moment); the call legs drain ``events``."""

    account_sid: str
    rng: random.Random = field(default_factory=random.Random)
    calls: dict[str, Call] = field(default_factory=dict)
    events: list[CallEvent] = field(default_factory=list)
    listeners: list[Callable[[CallEvent], None]] = field(default_factory=list)

    def create(self, *, to: str, from_: str, instructions: Instructions, at: float, **options) -> Call:
        sid = make_sid("CA", self.rng)
        while sid in self.calls:
            sid = make_sid("CA", self.rng)
        call = Call(sid=sid, account_sid=self.account_sid, to=to, from_=from_, instructions=instructions,
                    date_created=at, date_updated=at, **options)
        self.calls[sid] = call
        self._record(CallEvent("created", sid, at, call.status, instructions))
        return call

    def get(self, sid: str) -> Call | None:
        return self.calls.get(sid)

    def newest_first(self) -> list[Call]:
        """Twilio lists calls newest first; ties keep the reverse of creation order."""
        return list(reversed(self.calls.values()))

    def set_status(self, sid: str, status: str, at: float) -> Call:
        """Move a call on (what the call legs report); a move Twilio never makes is a bug in the
        caller, so it raises ``ValueError`` rather than answering like the API."""
        call = self.calls[sid]
        if status not in TRANSITIONS.get(call.status, frozenset()):
            raise ValueError(f"call {sid}: no transition {call.status} -> {status}")
        self._move(call, status, at)
        self._record(CallEvent("status", sid, at, status))
        return call

    def hang_up(self, sid: str, status: str, at: float) -> Call:
        """``Status=completed`` or ``Status=canceled`` over REST.

        ``completed`` ends the call whatever it is doing (``canceled`` if it was not yet
        answered); ``canceled`` ends only a call not yet answered and leaves one in progress
        alone, as Twilio's Update Call page says. An ended call answers 21220 (unconfirmed for
        hang-ups: Twilio's page documents 21220 for redirects and recordings of ended calls)."""
        call = self.calls[sid]
        if call.ended:
            raise TwilioError(CALL_NOT_IN_PROGRESS, "Call is not in-progress. Cannot redirect.", 400)
        if call.status == IN_PROGRESS:
            if status == CANCELED:
                return call
            end = COMPLETED
        else:
            end = CANCELED
        self._move(call, end, at)
        self._record(CallEvent("hung_up", sid, at, end))
        return call

    def redirect(self, sid: str, instructions: Instructions, at: float) -> Call:
        """``Url``/``Twiml`` on a live call: the TwiML running now stops and the new one runs."""
        call = self.calls[sid]
        if call.ended:
            raise TwilioError(CALL_NOT_IN_PROGRESS, "Call is not in-progress. Cannot redirect.", 400)
        call.instructions = instructions
        call.date_updated = at
        self._record(CallEvent("redirected", sid, at, call.status, instructions))
        return call

    def drain_events(self) -> list[CallEvent]:
        """The events since the last drain, oldest first."""
        events, self.events = self.events, []
        return events

    def _record(self, event: CallEvent) -> None:
        self.events.append(event)
        for listener in self.listeners:
            listener(event)

    @staticmethod
    def _move(call: Call, status: str, at: float) -> None:
        if status == IN_PROGRESS:
            call.start_time = at
        if status in ENDED:
            call.end_time = at
        call.status = status
        call.date_updated = at
