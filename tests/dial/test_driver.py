"""The dial's driver with the `twilio` package's client against the served emulator: the call is
created with the TwiML, and hung up over REST on every way out."""

from __future__ import annotations

import random
import time

import pytest
import trio
from callsim.simulator.dial.driver import NoStreamServer, TwilioRest, run_dial
from callsim.simulator.dial.plan import DialPlan
from callsim.simulator.dial.request import DialRequest
from callsim.simulator.twilio_emu.rest import RestCore
from callsim.simulator.twilio_emu.server import serve_rest

from .emulator import SID, TOKEN



def request(**kw) -> DialRequest:
    args = dict(to="+15551234567", from_="+15550001111", scenario="barge_in", public_url="wss://h.example/s",
                max_duration_s=60, stream_timeout_s=0.3)
    return DialRequest.checked(**{**args, **kw})


class Arrives:
    """A stream that connects at once; the call answers and runs ``run``."""

    def __init__(self, emu: RestCore, run=None) -> None:
        self.emu, self.run, self.sid = emu, run, None

    async def wait(self) -> None:
        (self.sid,) = self.emu.store.calls
        self.emu.store.set_status(self.sid, "ringing", time.time())
        self.emu.store.set_status(self.sid, "in-progress", time.time())

    async def run_call(self):
        return await self.run(self) if self.run else (True, "the scenario ran")


def emu_core() -> RestCore:
    return RestCore(SID, TOKEN, clock=time.time, rng=random.Random(2))


async def dial(emu: RestCore, url: str, stream, token: str = TOKEN, **kw):
    plan = DialPlan(request(**kw))
    lines: list[str] = []
    done = await run_dial(plan, TwilioRest(SID, token, url), stream, lines.append)
    return plan, done, lines


async def test_no_stream_creates_the_call_then_hangs_it_up():
    emu = emu_core()
    async with serve_rest(emu) as url:
        plan, done, lines = await dial(emu, url, NoStreamServer())
    (call,) = emu.store.calls.values()
    assert '<Stream url="wss://h.example/s"><Parameter name="callsim_scenario" value="barge_in" />' in call.instructions.twiml
    assert call.status == "canceled" and call.status_callback == "https://h.example/dial-status"
    assert done.exit_code == 1 and done.summary.startswith(f"call {call.sid} hung up (canceled): no media stream")
    assert any(f"call {call.sid} created (queued)" in line for line in lines)


async def test_a_call_that_ran_is_hung_up_completed_and_exits_0():
    emu = emu_core()
    async with serve_rest(emu) as url:
        plan, done, _ = await dial(emu, url, Arrives(emu))
    (call,) = emu.store.calls.values()
    assert call.status == "completed" and done.exit_code == 0 and "(completed)" in done.summary


async def test_a_call_the_other_side_ended_is_reported_as_ended():
    emu = emu_core()

    async def they_hang_up(stream):
        emu.store.hang_up(stream.sid, "completed", time.time())
        return True, "the scenario ran"

    async with serve_rest(emu) as url:
        _, done, _ = await dial(emu, url, Arrives(emu, they_hang_up))
    assert done.exit_code == 0 and "had already ended (completed)" in done.summary


async def test_max_duration_cuts_a_running_call():
    emu = emu_core()

    async def forever(stream):
        await trio.sleep_forever()

    request_cap = 1
    async with serve_rest(emu) as url:
        with trio.fail_after(10):
            _, done, lines = await dial(emu, url, Arrives(emu, forever), max_duration_s=request_cap)
    (call,) = emu.store.calls.values()
    assert call.status == "completed" and done.exit_code == 1
    assert "--max-duration-s 1" in done.summary


async def test_an_error_while_the_call_runs_hangs_it_up_and_propagates():
    emu = emu_core()

    async def boom(stream):
        raise RuntimeError("boom")

    async with serve_rest(emu) as url:
        plan = DialPlan(request())
        with pytest.raises(RuntimeError):
            await run_dial(plan, TwilioRest(SID, TOKEN, url), Arrives(emu, boom), lambda line: None)
    (call,) = emu.store.calls.values()
    assert call.status == "completed" and plan.finish.exit_code == 1 and "RuntimeError: boom" in plan.finish.summary


async def test_a_cancel_while_waiting_still_hangs_up():
    emu = emu_core()
    async with serve_rest(emu) as url:
        plan = DialPlan(request(stream_timeout_s=60))
        with trio.move_on_after(0.5):
            await run_dial(plan, TwilioRest(SID, TOKEN, url), NoStreamServer(), lambda line: None)
    (call,) = emu.store.calls.values()
    assert call.status == "canceled" and plan.finish.exit_code == 130


async def test_a_refused_create_places_nothing():
    emu = emu_core()
    async with serve_rest(emu) as url:
        _, done, _ = await dial(emu, url, NoStreamServer(), token="wrong")
    assert emu.store.calls == {}
    assert done.exit_code == 1 and "no call placed: Twilio answered HTTP 401, error 20003" in done.summary


async def test_an_unreachable_api_is_one_line():
    async with serve_rest(emu_core()) as url:
        pass  # stopped: nothing listens there now
    _, done, _ = await dial(None, url, NoStreamServer())
    assert done.exit_code == 1 and done.summary == f"no call placed: cannot reach {url}: Connection refused"
    assert "\n" not in done.summary
