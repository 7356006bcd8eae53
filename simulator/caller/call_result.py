"""What one placed call leaves behind, whichever driver placed it.

A module of its own so that the measurements read a call's result without importing a
driver: importing it pulls in neither trio nor gevent, and the figures cannot depend on
which event loop ran the call. :class:`.dialer.Dialer` fills it in; the drivers add the
stream's milestones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .core import CallerCore
from .webhook import WebhookExchange


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
