"""What one placed call leaves behind, whichever driver placed it.

It lives on its own, apart from :mod:`.caller_trio`, so the gevent driver (the
Locust one) and the metrics can share it without tying the result to one event
loop: importing this module pulls in neither trio nor gevent.
:mod:`.caller_trio` re-exports it, so ``from callsim.simulator.caller.trio_driver import
CallResult`` keeps working and names the same class.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..audio.utterances import UtteranceBank
from . import twilio_wire as tw
from .core import CallerConfig, CallerCore
from .impairments import Impairments
from .script import Step
from .sids import make_sid
from .webhook import CallParties, NoStream, StreamTarget, WebhookExchange


@dataclass
class CallResult:
    target: str
    core: CallerCore | None = None
    stream_url: str | None = None
    webhook: WebhookExchange | None = None
    error: str | None = None  # the call could not be placed or broke abnormally
    notes: list[str] = field(default_factory=list)
    #: setup milestones on the shared clock (ns), for drivers that record them:
    #: ``placed_ns`` (before the webhook POST), ``webhook_ns`` (TwiML read),
    #: ``connected_ns`` (WebSocket handshake done), ``started_ns`` (``connected`` and
    #: ``start`` written to the socket; the core's frame grid starts at ``core.t0_ns``).
    timings: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.core is not None

    @property
    def setup_ms(self) -> float | None:
        """Webhook POST + WebSocket connect + ``connected``/``start`` sent, in ms (None if unknown)."""
        placed = self.timings.get("placed_ns")
        started = self.timings.get("started_ns")
        if placed is None or started is None:
            return None
        return (started - placed) / 1e6

    def summary_line(self) -> str:
        if self.core is None or self.core.t0_ns is None:
            return f"call to {self.target} failed: {self.error}"
        s = self.core.summary()
        marks = s["marks_echoed"]
        warn = sum(s["warnings"].values())
        line = (
            f"call {s['call_sid']} → {self.stream_url}: {s['duration_ms'] / 1000:.1f} s, "
            f"said {s['utterances']} utterance(s), heard {s['audio_played_ms'] / 1000:.2f} s of app audio "
            f"({s['audio_cleared_ms'] / 1000:.2f} s cleared), marks echoed {sum(marks.values())} "
            f"({marks.get('cleared', 0)} by clear), {s['clears']} clear(s), {warn} warning(s), "
            f"ended: {s['end_reason']}"
        )
        if self.error:
            line += f"; error: {self.error}"
        return line


# The steps both drivers take around their I/O, kept in one place so the trio and
# gevent callers cannot drift apart.


def target_kind(target: str) -> str | None:
    """``"webhook"`` for http(s)://, ``"stream"`` for ws(s)://, else None."""
    scheme = target.split(":", 1)[0].lower()
    return "webhook" if scheme in ("http", "https") else "stream" if scheme in ("ws", "wss") else None


def bad_target(result: CallResult) -> CallResult:
    result.error = f"target must be http(s):// (voice webhook) or ws(s):// (stream), not {result.target!r}"
    return result


def follow_twiml(result: CallResult, params: dict[str, str]) -> dict[str, str] | None:
    """Apply the webhook's answer to ``result``: the stream URL and its parameters
    (``params`` win over the TwiML's), or an error and None when there is no stream."""
    assert result.webhook is not None
    answer = result.webhook.result
    result.notes += result.webhook.notes
    if isinstance(answer, NoStream):
        result.error = f"no stream: {answer.reason}" + (f" (said: {' / '.join(answer.says)})" if answer.says else "")
        return None
    assert isinstance(answer, StreamTarget)
    result.stream_url = answer.url
    result.notes += list(answer.notes)
    return {**answer.parameters, **params}


def new_core(parties: CallParties, params: dict[str, str], rng: random.Random, script: list[Step],
             bank: UtteranceBank | None, *, impairments: Impairments | None = None,
             wire_policy: tw.WirePolicy | None = None, max_duration_ms: int = 300_000,
             **_: Any) -> CallerCore:
    ident = tw.StreamIdentity(parties.account_sid, parties.call_sid, make_sid("MZ", rng), params)
    return CallerCore(CallerConfig(ident, impairments=impairments or Impairments(),
                                   wire_policy=wire_policy or tw.WirePolicy(), max_duration_ms=max_duration_ms),
                      script, bank)
