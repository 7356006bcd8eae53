"""The driver's response watchdog, with fake sockets: a reply the core asks for on a *Twilio*
message (a keypress with DTMF_MODE=respond) is timed like one asked for on an OpenAI message,
though OpenAI then sends nothing at all."""

from __future__ import annotations

import json
import time
from typing import Any

import trio
from callsim.bridge.call import CallCore
from callsim.bridge.call_control import CallControl
from callsim.bridge.driver import CallDriver
from callsim.bridge.response_watch import WatchLimits
from callsim.bridge.settings import Settings

from .callcore_kit import started_core

FIRST_AUDIO_S = 0.2


class FakeTwilio:
    """Twilio's socket: hands out ``incoming`` 50 ms apart (the watchdog is asleep by then, with
    nothing to watch), then waits for ever; keeps what the bridge sends."""

    def __init__(self, incoming: list[str]) -> None:
        self.incoming = incoming
        self.sent: list[dict[str, Any]] = []
        self.got_media = trio.Event()

    async def receive_message(self) -> str:
        await trio.sleep(0.05)
        if self.incoming:
            return self.incoming.pop(0)
        await trio.sleep_forever()
        raise AssertionError

    async def send_text(self, text: str) -> None:
        self.sent.append(msg := json.loads(text))
        if msg.get("event") == "media":
            self.got_media.set()

    async def aclose(self, code: int) -> None:
        pass


class Hooks:
    settings = Settings(_env_file=None, openai_api_key="k", openai_renew_before_s=0)

    async def call_started(self, driver: CallDriver, a: Any) -> bool:
        return True

    async def save_transcript(self, core: CallCore, t: Any) -> None:
        pass

    async def run_tool(self, name: str, arguments: str, *, call_tag: str = "?") -> str:
        return "{}"

    async def transfer_call(self, core: CallCore) -> tuple[str | None, str]:
        return None, ""

    def count_error(self, kind: str) -> None:
        pass

    def notice(self, core: CallCore, n: Any) -> None:
        pass


async def test_a_keypress_reply_that_never_comes_gets_the_apology():
    core, tw = started_core(control=CallControl(dtmf_mode="respond"), apology_ulaw=b"\xff" * 1600,
                            watch_limits=WatchLimits(first_audio_s=FIRST_AUDIO_S))
    assert core.response_deadline_ns() is None  # nothing owed yet
    twilio = FakeTwilio([tw.dtmf("5")])
    driver = CallDriver(Hooks(), core, twilio)  # type: ignore[arg-type]
    t0 = time.monotonic()
    with trio.move_on_after(FIRST_AUDIO_S + 2.0):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(driver.run)
            await twilio.got_media.wait()
            nursery.cancel_scope.cancel()
    assert twilio.got_media.is_set(), "the silent model's reply was never timed: no apology"
    assert time.monotonic() - t0 < FIRST_AUDIO_S + 1.0
