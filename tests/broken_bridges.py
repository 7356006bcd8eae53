"""Deliberately broken bridges: the negative controls of the harness.

Each is our bridge with one defect the seeds and peers really have
(protocols.md part 3), exposed as a bridge hook (``tests.broken_bridges:NAME``)
so the harness runs it exactly like any other bridge. A harness that passes
these would be worthless; the tests in test_negative_controls.py assert that
the matching expectation fails with a message a user understands.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import trio
from callsim.bridge.call import Action, CallCore, Hangup, ItemPlayback, ToTwilio
from callsim.bridge.driver import CallDriver
from callsim.bridge.renewal import quiet
from callsim.bridge.renewal_driver import OpenAISession, Renewer
from callsim.bridge.server import embedded


class NoClearCore(CallCore):
    """Truncates on barge-in but never tells Twilio to stop playing (cloudflare/agents#2261)."""

    def _speech_started(self, now_ns: int, audio_start_ms: Any = None) -> list[Action]:
        return [a for a in super()._speech_started(now_ns, audio_start_ms)
                if not (isinstance(a, ToTwilio) and '"event":"clear"' in a.text)]


class BytesSentItem(ItemPlayback):
    """Counts audio as heard as soon as it was forwarded (pitfall 5: bytes sent ≠ audio heard)."""

    def played(self, now_ns: int) -> int:
        return self.sent


class BytesSentTruncateCore(CallCore):
    def _delta(self, now_ns: int, ev: dict[str, Any]) -> list[Action]:
        item_id = ev.get("item_id")
        if isinstance(item_id, str) and item_id not in self.items and not self.ending:
            self._seq += 1
            item = BytesSentItem(item_id, self._seq, ev.get("response_id"))
            self.items[item_id] = item
            self._by_seq[item.seq] = item
        return super()._delta(now_ns, ev)


class LeakyDriver(CallDriver):
    """Leaves the OpenAI session open after the caller hangs up (it costs money)."""

    async def _close_openai(self, reason: str) -> None:
        pass

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._twilio_reader()
            await trio.sleep(3)  # the OpenAI task lives on after the call
            nursery.cancel_scope.cancel()


class WrongFormatCore(CallCore):
    """Asks OpenAI for pcm16 but forwards the deltas to Twilio as if they were μ-law."""

    def _delta(self, now_ns: int, ev: dict[str, Any]) -> list[Action]:
        saved, self.transcoder = self.transcoder, None
        try:
            return super()._delta(now_ns, ev)
        finally:
            self.transcoder = saved


class NoRepromptCore(CallCore):
    """Never re-prompts a silent caller: the line stays dead until the caller gives up."""

    def _silence_deadline_ns(self) -> int | None:
        return None


class IgnoresDtmfCore(CallCore):
    """Logs the caller's keypresses and tells the model nothing (the common case before issue 17)."""

    def _dtmf(self, now_ns: int, key: str) -> list[Action]:
        return []


class HastyTransferCore(CallCore):
    """Redirects the call as soon as the pre-transfer phrase has arrived (its response.done), not once
    it has played: Twilio drops what it still had queued for the stream."""

    def _after_phrase(self, now_ns: int) -> list[Action]:
        self.transfer_phase = "playing"
        return self._redirect_now("the phrase has arrived")


class NeverTransfersDriver(CallDriver):
    """Declares transfer_call and plays the phrase, then skips the REST request and believes the call
    was transferred: the caller is left on the line with an agent that says nothing more."""

    async def _transfer(self) -> None:
        await self._do(self.core.transfer_done(time.monotonic_ns(), None, self.app.settings.transfer_number or ""))


class HastyGoodbyeCore(CallCore):
    """Hangs up as soon as the goodbye's last audio was forwarded (its response.done), not when it
    has played: Twilio drops what it still had queued."""

    def _goodbye(self, now_ns: int, reason: str) -> list[Action]:
        return [Hangup(reason), *self._end(f"goodbye ({reason})")]


def _hook(*, settings: dict[str, Any] | None = None, **classes: Any) -> Any:
    """A bridge hook (``tests.broken_bridges:NAME``): our embedded bridge with one defect, as a core
    or driver class in place of ours, and ``settings`` over the scenario's ``[bridge]`` table."""

    @asynccontextmanager
    async def hook(config: dict[str, Any]) -> AsyncIterator[str]:
        async with embedded({**config, **(settings or {})}, **classes) as url:
            yield url

    return hook


no_clear = _hook(core_class=NoClearCore)

bytes_sent_truncate = _hook(core_class=BytesSentTruncateCore)

leaky_openai = _hook(driver_class=LeakyDriver)

wrong_format = _hook(settings={"audio_mode": "transcode"}, core_class=WrongFormatCore)

#: our bridge with session renewal off: the call ends with the first OpenAI session
no_renewal = _hook(settings={"openai_renew_before_s": 0})


#: what a real reconnect costs before the new session is configured (TLS, the WebSocket handshake and
#: session.update's round trip to api.openai.com: hundreds of ms); on loopback the gap would hide
RECONNECT_S = 0.3


class CloseThenOpenRenewer(Renewer):
    """Renews the naive way: at a quiet moment it closes the session, then opens the next one; the
    caller's frames in between are sent nowhere."""

    async def _renew(self, cur: OpenAISession) -> None:
        assert cur.t_open_ns is not None
        while quiet(self.driver.core) is not None and time.monotonic_ns() < self.policy.hard_ns(cur.t_open_ns):
            await trio.sleep(0.02)
        self.driver.openai = None  # frames go nowhere from here
        cur.current = False
        cur.close()
        await trio.sleep(RECONNECT_S)
        nxt = self._open_next()
        await nxt.ready.wait()
        cur.current = True  # so that _switch retires it (it is closed already)
        self._switch(0, "quiet", nxt)


class CloseThenOpenDriver(CallDriver):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        if self.renewer is not None:
            self.renewer = CloseThenOpenRenewer(self, self.renewer.policy)
            self.core.on_session_expired = self.renewer.expired


close_then_open = _hook(driver_class=CloseThenOpenDriver)

no_reprompt = _hook(core_class=NoRepromptCore)

ignores_dtmf = _hook(core_class=IgnoresDtmfCore)

hasty_goodbye = _hook(core_class=HastyGoodbyeCore)

hasty_transfer = _hook(core_class=HastyTransferCore)

never_transfers = _hook(driver_class=NeverTransfersDriver)
