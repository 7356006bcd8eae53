"""Is the model still answering? A sans-IO watch over one call's OpenAI responses.

Why: the Realtime API can go quiet with its socket open (a *stall*: no more
events, no close) or end a reply with ``status: failed``. Neither closes the
socket, so nothing else in the bridge notices, and the caller sits in silence
until they give up. This watch turns "a reply is due and is not coming" into a
deadline; the driver sleeps until it and calls :meth:`CallCore.tick`, which
apologises and ends the call (a failed reply is first asked for once more).

Definitions (times are the driver's monotonic ns; limits in :class:`WatchLimits`):

* **Owed.** A reply is owed from the moment the caller's turn is committed
  (``input_audio_buffer.committed``: server VAD ended the turn and, with
  ``create_response``, a response follows), or the bridge sent
  ``response.create`` (greeting, tool output, retry), or — if neither was
  seen — ``response.created``. It is paid by the first audio delta forwarded
  to the caller. No audio ``first_audio`` after it was owed → **silent**.
  The clock is not restarted by a retry: the caller's silence began at the
  commit, whatever the bridge did since.
* An owed reply is **forgiven** when the caller speaks again
  (``speech_started``: the turn is not over; a new commit will come), when a
  response ends ``completed``/``cancelled``/``incomplete`` (nothing more is
  coming for it), and while a tool call runs (``tool_timeout_s`` bounds that;
  the reply is owed again when the bridge sends the output and asks for it).
* **Active.** From ``response.created`` to its ``response.done`` every server
  event is progress. No event for ``stall`` once its audio has started (for
  ``first_audio`` before) → **stalled**. The real API sends audio faster than
  real time, so a quiet socket is not heard until Twilio's queue runs dry: the
  deadline is never before the end of the audio already queued (nothing the
  model said is cut), and after that the caller hears at most ``stall`` of
  silence.
* **Failed.** ``response.done`` with ``status: failed`` is a server error the
  caller did not cause (``server_error``, rate limit…): asking once more is
  cheap and invisible to the caller, so it is retried once per caller turn;
  a second failure in the same turn ends the call. ``incomplete``
  (``max_output_tokens``, ``content_filter``) is not retried — the same
  request would end the same way — and ``cancelled`` is a barge-in.

Why apologise rather than retry or reconnect on silence or a stall: a session
that sends nothing at all for seconds is more likely dead than slow (the
real API's first audio comes well under ``first_audio``), it would not answer a
``response.create`` either, and a new session loses the conversation and
needs a handshake and ``session.update`` — more dead air than the bound allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class WatchLimits:
    """The bounds, in seconds (``Settings.response_first_audio_timeout_s`` / ``_stall_timeout_s``)."""

    first_audio_s: float = 2.2
    stall_s: float = 2.0


class Verdict(Enum):
    SILENT = "silent"  # a reply was owed and no audio came
    STALLED = "stalled"  # an active response stopped sending events
    RETRY = "retry"  # a response failed: ask once more
    FAILED = "failed"  # a response failed again in the same turn


@dataclass(frozen=True)
class Expired:
    """Why the deadline passed, for the log line and the apology's reason."""

    verdict: Verdict
    response_id: str | None
    waited_ns: int


class ResponseWatch:
    """The state behind :meth:`deadline_ns`; fed by :class:`callsim.bridge.call.CallCore`."""

    def __init__(self, limits: WatchLimits | None = None) -> None:
        lim = limits or WatchLimits()
        self.first_audio_ns = int(lim.first_audio_s * NS_PER_S)
        self.stall_ns = int(lim.stall_s * NS_PER_S)
        self.owed_since: int | None = None
        self.active: str | None = None  # the response between created and done
        self.active_audio = False  # its audio has reached the caller
        self.last_event_ns = 0  # last server event while a response is active
        self.playback_end_ns = 0  # when the audio handed to Twilio will have played
        self.tools_running = False
        self.retried = False  # a failed response was asked again since the caller's last turn

    # ---------------------------------------------------------------- inputs

    def event(self, now_ns: int) -> None:
        """Any server event: the session is alive."""
        self.last_event_ns = now_ns

    def committed(self, now_ns: int) -> None:
        """The caller's turn ended; a reply is due (a new turn: a retry is allowed again)."""
        self.retried = False
        if self.owed_since is None:
            self.owed_since = now_ns

    def asked(self, now_ns: int) -> None:
        """The bridge sent ``response.create`` (greeting, tool output): a reply is due from now."""
        self.tools_running = False
        self.owed_since = now_ns

    def created(self, now_ns: int, response_id: str) -> None:
        self.active, self.active_audio = response_id, False
        self.last_event_ns = now_ns
        if self.owed_since is None and not self.tools_running:
            self.owed_since = now_ns

    def audio(self, now_ns: int, response_id: str | None, ulaw_bytes: int) -> None:
        """Audio forwarded to the caller: the owed reply is paid; Twilio's queue grows."""
        self.owed_since = None
        if response_id is not None and response_id == self.active:
            self.active_audio = True
        self.playback_end_ns = max(self.playback_end_ns, now_ns) + ulaw_bytes * 125_000  # 8 bytes/ms

    def playback_cleared(self, now_ns: int) -> None:
        """``clear`` sent: nothing queued at Twilio any more."""
        self.playback_end_ns = now_ns

    def caller_speaks(self) -> None:
        """``speech_started``: the caller holds the floor; no reply is due until their turn ends."""
        self.owed_since = None

    def tool_started(self) -> None:
        self.tools_running = True
        self.owed_since = None

    def done(self, now_ns: int, response_id: str | None, status: str | None) -> Verdict | None:
        """``response.done``: RETRY or FAILED for a failed response, else None (nothing more is coming)."""
        had_audio = response_id is not None and response_id == self.active and self.active_audio
        if response_id is not None and response_id == self.active:
            self.active = None
        if status != "failed":
            if status == "completed":
                self.retried = False
            self.owed_since = None
            return None
        if self.tools_running:
            return None  # the tool's output will ask for the reply again
        if self.retried:
            return Verdict.FAILED
        self.retried = True
        if had_audio or self.owed_since is None:
            self.owed_since = now_ns  # the caller heard part of it: their silence starts now
        return Verdict.RETRY

    # --------------------------------------------------------------- outputs

    def deadline_ns(self) -> int | None:
        """When to call :meth:`expired` (None: nothing is due)."""
        d: int | None = None
        if self.owed_since is not None:
            d = self.owed_since + self.first_audio_ns
        if self.active is not None:
            a = self.last_event_ns + (self.stall_ns if self.active_audio else self.first_audio_ns)
            d = a if d is None else min(d, a)
        if d is None:
            return None
        return max(d, self.playback_end_ns)

    def expired(self, now_ns: int) -> Expired | None:
        """What passed by ``now_ns``, if anything; after it nothing more is watched."""
        d = self.deadline_ns()
        if d is None or now_ns < d:
            return None
        silent = self.owed_since is not None and self.owed_since + self.first_audio_ns <= d
        since = self.owed_since if silent and self.owed_since is not None else self.last_event_ns
        out = Expired(Verdict.SILENT if silent else Verdict.STALLED, self.active, now_ns - since)
        self.owed_since = self.active = None
        return out
