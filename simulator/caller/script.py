"""What a simulated caller does, step by step.

A script is a list of steps the caller core walks through on its 20 ms clock.
Every step is measured in frames, never in wall-clock time, so the same script
behaves identically under a real clock, trio's ``MockClock`` or a Locust
greenlet. Steps only *decide what to send*; playback runs regardless, so a
``Say`` during assistant audio is a barge-in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Say:
    """Send a fixture's audio, frame by frame."""

    fixture: str


@dataclass(frozen=True)
class Pause:
    """Send line silence for ``ms``."""

    ms: int


@dataclass(frozen=True)
class Dtmf:
    """Send ``dtmf`` events, one digit every ``gap_ms``, with silence on the line."""

    digits: str
    gap_ms: int = 100


@dataclass(frozen=True)
class WaitForReply:
    """Stay silent until the assistant has spoken and then been quiet for ``quiet_ms``.

    Gives up after ``timeout_ms`` (recorded as a ``wait_timeout`` event) so a
    silent bridge cannot hang a CI job. With ``start_ms``, it also moves on when
    nothing at all was heard by then, without a ``wait_timeout``: that is how a
    caller lets a greeting finish when there may be none (:data:`GREETING_GRACE`).
    """

    quiet_ms: int = 800
    timeout_ms: int = 15000
    start_ms: int | None = None


#: Before a scenario's first step the caller listens, as a person who picks up does: if the bridge
#: greets (its audio starts within ``start_ms``), the caller waits until the greeting has finished;
#: if not, it goes on. Without this a greeting bridge would turn every scenario's first utterance
#: into a barge-in — a verdict that depends on how the bridge is built (design.md rule 5).
GREETING_GRACE = WaitForReply(quiet_ms=800, timeout_ms=20000, start_ms=1500)


@dataclass(frozen=True)
class WaitForAudio:
    """Stay silent until ``after_ms`` of assistant audio has played (then, e.g., barge in)."""

    after_ms: int = 0
    timeout_ms: int = 15000


@dataclass(frozen=True)
class Hangup:
    """Send ``stop`` and close the socket, as Twilio does when the caller hangs up."""


Step = Say | Pause | Dtmf | WaitForReply | WaitForAudio | Hangup

DTMF_DIGITS = frozenset("0123456789*#ABCD")


def conversation(fixtures: list[str], *, first_pause_ms: int = 500, gap_ms: int = 300,
                 quiet_ms: int = 800, timeout_ms: int = 15000) -> list[Step]:
    """The ``callsim call --say A --say B`` script: say each, wait for the reply, hang up."""
    steps: list[Step] = [Pause(first_pause_ms)]
    for i, name in enumerate(fixtures):
        if i:
            steps.append(Pause(gap_ms))
        steps.append(Say(name))
        steps.append(WaitForReply(quiet_ms=quiet_ms, timeout_ms=timeout_ms))
    steps.append(Hangup())
    return steps
