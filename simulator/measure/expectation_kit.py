"""What every expectation check is made of: the failure record, the call naming, the rounding, and
the two shapes of a check (each call judged on its own; the same needing the mock's session).

Each check is ``(limit, calls, ctx) -> (measured, failures, message when it holds)``: see
:mod:`.expectations`, which holds the checks and the API, and :mod:`.expectations_calls`, the
checks of how a call ends and lasts (goodbye, renewal, silence, keys, transfer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .measurements import CallMetrics

SKIP_NO_TWILIO = ("needs Twilio's REST records of the call, which only `callsim dial` has (through Twilio or "
                  "`callsim twilio-emulator`)")
SKIP_NO_MOCK = ("needs the mock OpenAI server in the loop (start `callsim mock-openai` "
                "and point the bridge at it)")
NO_MOCK_SESSION = ("the mock OpenAI server has no session for this call{where} — the bridge never connected "
                   "to it (check its OpenAI URL and API key settings)")
NO_BARGE_IN = "no barge-in happened{where}: the caller never talked over assistant audio — {why}"
BETA_REFUSED = ("OpenAI refused the session{where}: the bridge speaks the retired beta dialect "
                "(OpenAI-Beta: realtime=v1 or a beta-shaped session.update), which the real API answers with "
                "beta_api_shape_disabled and close code 4000 — move to the GA session shape "
                "(session.type \"realtime\", audio.input/output.format)")
#: said wherever a call the bridge should have ended was not: Media Streams alone cannot see a REST hang-up
REST_HANGUP = ("a bridge that hangs up over Twilio's REST API (calls(CallSid).update(status=\"completed\")) "
               "instead of closing the stream is seen only through `callsim dial` with `callsim twilio-emulator`")
END_REASONS = {"hangup": "the caller hung up", "closed_by_app": "the bridge closed the stream",
               "max_duration": "the call hit its maximum duration", "aborted": "the call was aborted"}


@dataclass
class _Fail:
    call: CallMetrics
    message: str
    measured: Any = None
    severity: float = float("inf")  # the worst failure gives the expectation's message
    #: the harness could not measure it (e.g. a bridge that converts the audio, so caller frames cannot be
    #: recognised by content): no verdict on the bridge; an expectation whose every failure is this is skipped
    unmeasured: bool = False


class _Ctx:
    def __init__(self, calls: list[CallMetrics]) -> None:
        self.many = len(calls) > 1

    def where(self, c: CallMetrics, extra: str = "") -> str:
        """`` (call 2)`` / `` (turn 1 of call 2)`` when there are several calls, else `` (turn 1)`` or ``''``."""
        parts = [p for p in (extra, f"call {c.call_index}" if self.many else "") if p]
        return f" ({' of '.join(parts)})" if parts else ""


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f} ms"


def _r(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(float(v), nd)


def _p95(values: list[float]) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), 95))


Check = Callable[[Any, list[CallMetrics], _Ctx], tuple[Any, list[_Fail], str]]


def _per_call(fn: Callable[[Any, CallMetrics, _Ctx], _Fail | None], measure: Callable[[CallMetrics], Any],
              worst: Callable[[list[Any]], Any], ok: Callable[[Any, Any], str]) -> Check:
    """A check each call passes or fails on its own; measured = the worst failure's value, else ``worst``."""
    def check(limit: Any, calls: list[CallMetrics], ctx: _Ctx) -> tuple[Any, list[_Fail], str]:
        fails = [f for c in calls if (f := fn(limit, c, ctx))]
        if fails:
            return max(fails, key=lambda f: f.severity).measured, fails, ""
        m = worst([measure(c) for c in calls])
        return m, fails, ok(limit, m)
    return check


def _with_mock(fn: Callable[[Any, CallMetrics, _Ctx], _Fail | None], measure: Callable[[CallMetrics], Any],
               worst: Callable[[list[Any]], Any], ok: Callable[[Any, Any], str]) -> Check:
    """A per-call check that needs the call's mock session: a call without one fails on that."""
    def one(limit: Any, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
        return _Fail(c, NO_MOCK_SESSION.format(where=ctx.where(c))) if c.mock is None else fn(limit, c, ctx)
    return _per_call(one, measure, worst, ok)
