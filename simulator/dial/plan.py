"""The REST lifecycle of one ``callsim dial``, without I/O.

    create the call ─▶ wait for Twilio's media stream ─▶ run the call ─▶ hang up ─▶ finish
                  ╰─ refused: finish        ╰─ none in time: hang up       ▲
    any time after the call exists: interrupted / max duration / error ───╯

The driver feeds events in (``created``, ``stream_timed_out``, ``interrupted``, …) and performs the
actions that come back (:class:`Create`, :class:`AwaitStream`, :class:`RunCall`, :class:`HangUp`,
:class:`Say`, :class:`Finish`). The one promise the plan keeps whatever happens: once a call
exists it is hung up over REST exactly once before the plan finishes, so a real call never rings
on (and bills) after callsim is done with it. :attr:`DialPlan.must_hang_up` is what a driver's
``finally`` checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from .request import DialRequest

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_INTERRUPTED: Final = 130


@dataclass(frozen=True, slots=True)
class Say:
    """A progress line for the user."""

    line: str


@dataclass(frozen=True, slots=True)
class Create:
    """``client.calls.create(**params)``; answer :meth:`DialPlan.created` or :meth:`DialPlan.create_failed`."""

    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AwaitStream:
    """Wait up to ``timeout_s`` for the media stream; answer :meth:`DialPlan.stream_arrived` or
    :meth:`DialPlan.stream_timed_out`."""

    timeout_s: float


@dataclass(frozen=True, slots=True)
class RunCall:
    """Play the scenario on the stream; answer :meth:`DialPlan.call_ended`."""


@dataclass(frozen=True, slots=True)
class HangUp:
    """``client.calls(sid).update(status="completed")``; answer :meth:`DialPlan.hung_up` or
    :meth:`DialPlan.hang_up_failed`."""

    sid: str


@dataclass(frozen=True, slots=True)
class Finish:
    """The end: the exit status and the one-line summary (the call's SID and final status)."""

    exit_code: int
    summary: str


Action = Say | Create | AwaitStream | RunCall | HangUp | Finish
Phase = Literal["new", "creating", "waiting", "running", "hanging_up", "done"]


class DialPlan:
    """One dial's lifecycle; every method returns the actions to perform next, in order."""

    def __init__(self, request: DialRequest) -> None:
        self.request = request
        self.phase: Phase = "new"
        self.sid: str | None = None
        self.final_status: str | None = None
        self.finish: Finish | None = None
        self._exit = EXIT_OK
        self._why = ""

    @property
    def must_hang_up(self) -> bool:
        """A call exists and no hang-up has been asked for yet."""
        return self.sid is not None and self.phase in ("waiting", "running")

    def start(self) -> list[Action]:
        assert self.phase == "new"
        self.phase = "creating"
        r = self.request
        return [Say(f"dialling {r.to} from {r.from_} (scenario {r.scenario}, at most {r.max_duration_s} s)"),
                Create(r.create_params())]

    def created(self, sid: str, status: str) -> list[Action]:
        self.sid, self.final_status = sid, status
        self.phase = "waiting"
        timeout = self.request.stream_timeout_s
        return [Say(f"call {sid} created ({status}); waiting up to {timeout:g} s for Twilio's media stream "
                    f"at {self.request.stream_url}"), AwaitStream(timeout)]

    def create_failed(self, reason: str) -> list[Action]:
        return self._finish(EXIT_FAILED, f"no call placed: {reason}")

    def stream_arrived(self) -> list[Action]:
        if self.phase != "waiting":
            return []
        self.phase = "running"
        return [Say(f"media stream of {self.sid} connected"), RunCall()]

    def stream_timed_out(self) -> list[Action]:
        if self.phase != "waiting":
            return []
        return self._hang_up(EXIT_FAILED, f"no media stream arrived within {self.request.stream_timeout_s:g} s "
                                          f"(is --public-url reaching callsim's stream server?)")

    def call_ended(self, ok: bool, why: str = "") -> list[Action]:
        if self.phase != "running":
            return []
        return self._hang_up(EXIT_OK if ok else EXIT_FAILED, why or ("the scenario ran" if ok else "the call failed"))

    def max_duration_reached(self) -> list[Action]:
        if self.must_hang_up:
            return self._hang_up(EXIT_FAILED, f"the call reached --max-duration-s {self.request.max_duration_s}")
        return []

    def interrupted(self) -> list[Action]:
        """Ctrl-C: hang up if a call exists; the run's status becomes 130 whatever it was."""
        self._exit, self._why = EXIT_INTERRUPTED, "interrupted"
        if self.must_hang_up:
            return self._hang_up(EXIT_INTERRUPTED, "interrupted")
        if self.phase in ("new", "creating"):
            return self._finish(EXIT_INTERRUPTED, "interrupted before a call was placed")
        return []

    def failed(self, reason: str) -> list[Action]:
        """An unexpected error in the driver: hang up if a call exists, then exit 1."""
        if self.must_hang_up:
            return self._hang_up(EXIT_FAILED, reason)
        if self.phase != "done":
            return self._finish(EXIT_FAILED, reason)
        return []

    def hung_up(self, status: str) -> list[Action]:
        self.final_status = status
        return self._finish(self._exit, f"call {self.sid} hung up ({status}): {self._why}")

    def hang_up_failed(self, reason: str, status: str | None = None) -> list[Action]:
        """The hang-up was refused or never answered. ``status``: the call's status if it could be
        fetched (an already ended call is fine; a live one is still capped by Twilio's TimeLimit)."""
        if status is not None:
            self.final_status = status
        code = EXIT_INTERRUPTED if self._exit == EXIT_INTERRUPTED else EXIT_FAILED
        if status in ("completed", "canceled", "busy", "failed", "no-answer"):
            return self._finish(self._exit, f"call {self.sid} had already ended ({status}): {self._why}")
        return self._finish(code, f"call {self.sid} could NOT be hung up ({reason}); Twilio ends it after "
                                  f"--max-duration-s {self.request.max_duration_s} s: {self._why}")

    def _hang_up(self, exit_code: int, why: str) -> list[Action]:
        assert self.sid is not None
        if self._exit != EXIT_INTERRUPTED:
            self._exit, self._why = exit_code, why
        self.phase = "hanging_up"
        lines: list[Action] = [] if exit_code in (EXIT_OK, EXIT_INTERRUPTED) else [Say(why)]
        return [*lines, HangUp(self.sid)]

    def _finish(self, exit_code: int, summary: str) -> list[Action]:
        self.phase = "done"
        self.finish = Finish(exit_code, summary)
        return [self.finish]
