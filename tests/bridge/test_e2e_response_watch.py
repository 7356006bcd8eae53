"""A model that stops answering, end to end: caller → our bridge → mock OpenAI on loopback.

The mock's faults do what the real service can do with its socket open: ``stall`` (from
``after_ms`` after the first audio delta it sends nothing more), ``fail_response`` (the
reply ends ``status: failed``) and a think time longer than any real model's (silent).
Dead air is measured from what the caller heard, as the harness measures it: the
harness's own ``dead_air_ms`` (the longest silence after the caller's last utterance),
and the gap from the last assistant audio heard to the apology's first loud frame.
Real time: these runs are about timing.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import trio
from callsim.bridge.app import APOLOGY
from callsim.simulator.audio.codec import FRAME_BYTES
from callsim.simulator.audio.utterances import default_bank
from callsim.simulator.caller.script import Hangup, Pause, Say, WaitForReply
from callsim.simulator.caller.trio_driver import place_call
from callsim.simulator.measure.metrics import Playout, measure_call
from callsim.simulator.mock.behaviour import Behaviour, Fault, ThinkTime

from .test_e2e import stack

LONG = default_bank().get("assistant_long_reply")
SHORT = default_bank().get("assistant_short_reply")
DEAD_AIR_MAX_MS = 3000


@pytest.fixture(autouse=True)
def _log_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="callsim.bridge.call")


async def _call(tmp_path, behaviour: Behaviour, script: list, **settings):
    async with stack(tmp_path, behaviour, **settings) as (mock, app, base):
        with trio.fail_after(40):
            result = await place_call(base + "/incoming-call", script)
        assert await mock.wait_all_closed(2.0)
        assert await app.wait_idle(2.0)
        (session,) = mock.sessions.values()
        snap = session.snapshot()
    return result, snap


def _apology_tick(po: Playout, heard: bytes) -> int:
    """The tick where the apology's audio starts (it plays unchanged: μ-law passthrough)."""
    probe = APOLOGY[4000:4800]  # a loud stretch of it: leading silence would match any silence
    at = heard.find(probe)
    assert at >= 0, "the caller never heard the apology"
    return (at - 4000) // FRAME_BYTES


def _gap_before_apology_ms(result) -> float:
    """Silence the caller heard between the last assistant audio and the apology's first loud frame."""
    po = Playout(result.core)
    a = _apology_tick(po, bytes(result.core.heard))
    first_loud = a + int(np.flatnonzero(po.loud[a:])[0])
    before = np.flatnonzero(po.loud[:a])
    assert len(before), "no assistant audio before the apology"
    return (first_loud - int(before[-1]) - 1) * 20.0


def _bridge_lines(caplog, level: int, *words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == level and r.name.startswith("callsim.bridge") and all(w in r.getMessage() for w in words)]


async def test_a_stall_mid_reply_gets_the_apology_not_dead_air(tmp_path, caplog):
    behaviour = Behaviour(replies=("assistant_long_reply",), think=ThinkTime("fixed", 200.0),
                          faults=(Fault("stall", after_ms=500),), seed=11)
    script = [Pause(300), Say("caller_weather_question"), WaitForReply(quiet_ms=4000, timeout_ms=15000),
              Pause(6000), Hangup()]
    result, snap = await _call(tmp_path, behaviour, script)
    m = measure_call(result, scenario="stall", mock=snap)
    gap = _gap_before_apology_ms(result)
    print(f"stall: gap before the apology {gap:.0f} ms, harness dead air {m.dead_air_ms:.0f} ms")
    assert gap <= DEAD_AIR_MAX_MS
    assert m.dead_air_ms <= DEAD_AIR_MAX_MS
    assert result.core.end_reason == "closed_by_app"  # the bridge ended the call after the apology
    assert snap["close"]["by"] == "client"  # and closed the stalled OpenAI session
    sid = result.core.ident.call_sid
    assert _bridge_lines(caplog, logging.ERROR, sid, "stalled", "apologising")


async def test_a_model_that_never_answers_gets_the_apology(tmp_path, caplog):
    behaviour = Behaviour(think=ThinkTime("fixed", 8000.0), seed=12)
    script = [Pause(300), Say("caller_weather_question"), WaitForReply(quiet_ms=800, timeout_ms=12000),
              Pause(3000), Hangup()]
    result, snap = await _call(tmp_path, behaviour, script)
    m = measure_call(result, scenario="silent", mock=snap)
    print(f"silent: harness dead air {m.dead_air_ms:.0f} ms")
    assert m.dead_air_ms <= DEAD_AIR_MAX_MS
    assert abs(m.heard_ms - len(APOLOGY) / 8) < 40  # the apology, whole, and nothing else
    assert result.core.end_reason == "closed_by_app"
    assert snap["close"]["by"] == "client"
    assert _bridge_lines(caplog, logging.ERROR, result.core.ident.call_sid, "silent", "apologising")


async def test_a_failed_response_is_asked_for_again_and_the_caller_hears_the_reply(tmp_path, caplog):
    behaviour = Behaviour(think=ThinkTime("fixed", 200.0), faults=(Fault("fail_response", nth=1),), seed=13)
    script = [Pause(300), Say("caller_weather_question"), WaitForReply(timeout_ms=8000), Hangup()]
    result, snap = await _call(tmp_path, behaviour, script)
    m = measure_call(result, scenario="fail_once", mock=snap)
    print(f"failed once: turn latency {m.turns[0].latency_ms:.0f} ms, harness dead air {m.dead_air_ms:.0f} ms")
    assert [r["status"] for r in snap["responses"]] == ["failed", "completed"]
    assert snap["responses"][1]["trigger"] == "client"  # the bridge's response.create
    assert abs(m.heard_ms - SHORT.duration_ms) < 60  # the whole reply
    assert m.turns[0].latency_ms is not None and m.turns[0].latency_ms <= DEAD_AIR_MAX_MS
    assert result.core.end_reason == "hangup"  # the call went on
    assert _bridge_lines(caplog, logging.WARNING, result.core.ident.call_sid, "failed", "once more")


async def test_a_response_failing_twice_gets_the_apology(tmp_path, caplog):
    behaviour = Behaviour(think=ThinkTime("fixed", 200.0),
                          faults=(Fault("fail_response", nth=1), Fault("fail_response", nth=2)), seed=14)
    script = [Pause(300), Say("caller_weather_question"), WaitForReply(timeout_ms=8000), Pause(3000), Hangup()]
    result, snap = await _call(tmp_path, behaviour, script)
    m = measure_call(result, scenario="fail_twice", mock=snap)
    print(f"failed twice: harness dead air {m.dead_air_ms:.0f} ms")
    assert [r["status"] for r in snap["responses"]] == ["failed", "failed"]
    assert m.dead_air_ms <= DEAD_AIR_MAX_MS
    assert abs(m.heard_ms - len(APOLOGY) / 8) < 40
    assert result.core.end_reason == "closed_by_app"
    assert snap["close"]["by"] == "client"
    assert _bridge_lines(caplog, logging.ERROR, result.core.ident.call_sid, "failed again", "apologising")


async def test_a_slow_model_is_not_cut_off(tmp_path, caplog):
    """1.9 s of think time (plus the VAD wait): slow, but a real model can be; the reply plays whole."""
    behaviour = Behaviour(think=ThinkTime("fixed", 1900.0), seed=15)
    script = [Pause(300), Say("caller_weather_question"), WaitForReply(timeout_ms=8000), Hangup()]
    result, snap = await _call(tmp_path, behaviour, script)
    assert [r["status"] for r in snap["responses"]] == ["completed"]
    assert abs(measure_call(result, scenario="slow", mock=snap).heard_ms - SHORT.duration_ms) < 60
    assert result.core.end_reason == "hangup"
    assert not _bridge_lines(caplog, logging.ERROR, "")
