"""Twilio's side of a dialled call, for tests: a scripted AGENT on a media stream to callsim.

The fake caller's own :class:`CallerCore` is exactly a Twilio-side client: it sends ``connected``,
``start`` and 20 ms ``media`` (here the agent's voice, from its script), plays what callsim sends at
real time and echoes each mark once played. :class:`Downlink` holds what callsim sends for a while
before it is played — Twilio's playout buffer — so a mark's echo comes measurably later than its send.
It connects to ``ws://127.0.0.1:PORT/path`` and signs the PUBLIC ``wss://`` URL, as through a tunnel.
"""

from __future__ import annotations

from collections import deque

from callsim.simulator.caller import twilio_wire as tw
from callsim.simulator.caller.core import CallerConfig, CallerCore
from callsim.simulator.caller.webhook import sign
from callsim.simulator.core_io import NOTHING
from callsim.simulator.net.clocks import MonotonicClock
from callsim.simulator.net.drive import drive_call, open_call_services
from callsim.simulator.net.wsconn import open_websocket

ACCOUNT = "AC" + "12" * 16
AUTH = "emulator-token"
PUBLIC = "wss://dial.example/stream"


class Downlink:
    """The agent's core, hearing what callsim sends ``delay_ms`` late (Twilio's playout buffer)."""

    def __init__(self, inner: CallerCore, delay_ms: float) -> None:
        self.inner, self.delay_ns = inner, int(delay_ms * 1e6)
        self.held: deque[tuple[int, str | bytes]] = deque()

    @property
    def finished(self) -> bool:
        return self.inner.finished

    def next_deadline_ns(self):
        d = self.inner.next_deadline_ns()
        if self.held and not self.inner.finished:
            d = self.held[0][0] if d is None else min(d, self.held[0][0])
        return d

    def receive(self, now_ns, data):
        if not self.delay_ns:
            return self.inner.receive(now_ns, data)
        self.held.append((now_ns + self.delay_ns, data))
        return NOTHING

    def advance(self, now_ns):
        out = []
        while self.held and self.held[0][0] <= now_ns:
            _, data = self.held.popleft()
            out += self.inner.receive(now_ns, data)
        out += self.inner.advance(now_ns)
        return out

    def peer_closed(self, now_ns, code=None, reason=None):
        self.inner.peer_closed(now_ns, code, reason)

    def hang_up(self, now_ns):
        return self.inner.hang_up(now_ns)


def agent(script, *, call_sid: str, token: str, scenario: str = "greeting_two_turns",
          stream_sid: str = "MZ" + "ab" * 16) -> CallerCore:
    ident = tw.StreamIdentity(ACCOUNT, call_sid, stream_sid,
                              {"callsim_scenario": scenario, "callsim_token": token})
    return CallerCore(CallerConfig(ident, line_tag=False), list(script))


async def run_agent(port: int, core: CallerCore, *, delay_ms: float = 0.0, path: str = "/stream",
                    signed_url: str = PUBLIC, auth: str | None = AUTH) -> Downlink:
    """Open the stream to callsim and run the agent until either side ends it."""
    headers = [(b"X-Twilio-Signature", sign(auth, signed_url).encode())] if auth else []
    clock = MonotonicClock()
    wrapped = Downlink(core, delay_ms)
    async with open_websocket(f"ws://127.0.0.1:{port}{path}", headers, connect_timeout=5) as ws:
        async with open_call_services(clock) as services:
            await drive_call(wrapped, ws, clock, services, begin=core.begin, rewake=True)
    return wrapped
