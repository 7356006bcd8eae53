"""Sans-IO tests of ``callsim.bridge.call.CallCore``: failures (OpenAI gone, errors, the apology) and the end of a call.

Driven on a synthetic clock with the hand-written messages and the Twilio playback model of
:mod:`tests.bridge.callcore_kit`.
"""

from __future__ import annotations

import numpy as np
import pytest
from callsim.bridge.call import (
    Notice,
    CallCore,
    CloseOpenAI,
    Hangup,
)
from callsim.bridge.codec import Transcoder
from callsim.bridge.realtime import SessionParams

from tests.bridge.callcore_kit import (
    APOLOGY,
    MS,
    Sim,
    TwilioMsgs,
    apology_msgs,
    audio_delta,
    audio_done,
    b64,
    kinds,
    oa,
    oa_out,
    run_until,
    schedule,
    started_core,
    tw_out,
    ulaw,
)

# ============================================================== failures


def test_openai_refused_after_start_apologises_and_hangs_up_after_the_mark() -> None:
    core = CallCore(SessionParams(), apology_ulaw=APOLOGY)
    tw = TwilioMsgs()
    core.twilio_message(0, tw.start())
    core.twilio_message(5 * MS, tw.media(b64(ulaw(160))))
    acts = core.openai_failed(10 * MS, "connect failed: HTTP 401")
    assert kinds(acts) == ["tw:media", "tw:mark", "Hangup", "CloseOpenAI", "Notice"]
    assert tw_out(acts) == apology_msgs(clear=False)
    assert acts[2] == Hangup("connect failed: HTTP 401", after_mark="apology")
    assert isinstance(acts[3], CloseOpenAI)
    # the call is over: nothing more goes anywhere, failures are not repeated
    assert core.twilio_message(30 * MS, tw.media(b64(ulaw(160)))) == []
    assert core.openai_failed(31 * MS, "again") == []
    assert core.twilio_message(500 * MS, tw.mark("apology")) == [Hangup("apology played")]
    assert core.twilio_message(500 * MS, tw.mark("apology"))[0].after_mark is None


def test_openai_failed_before_the_stream_started_just_hangs_up() -> None:
    core = CallCore(SessionParams(), apology_ulaw=APOLOGY)
    acts = core.openai_failed(0, "boom")
    assert acts == [Hangup("boom"), CloseOpenAI("boom"), Notice("openai_fault", {"reason": "boom"})]


def test_openai_dropped_mid_reply_clears_then_apologises() -> None:
    sim = Sim(apology=APOLOGY)
    run_until(sim, schedule(), 300 * MS)
    acts = sim.core.openai_failed(300 * MS, "closed: 1011")
    assert kinds(acts) == ["tw:clear", "tw:media", "tw:mark", "Hangup", "CloseOpenAI", "Notice"]
    assert tw_out(acts) == apology_msgs(clear=True)
    assert acts[3].after_mark == "apology"
    # no truncate, nothing to OpenAI: it is gone
    assert oa_out(acts) == []
    # old marks echoed by the clear are ignored; the apology mark ends the call
    assert sim.core.twilio_message(301 * MS, sim.tw.mark("0:1:800")) == []
    assert sim.core.twilio_message(900 * MS, sim.tw.mark("apology")) == [Hangup("apology played")]


def test_openai_dropped_when_nothing_plays_needs_no_clear() -> None:
    sim = Sim(apology=APOLOGY)
    run_until(sim, schedule(), 3000 * MS)
    acts = sim.core.openai_failed(3000 * MS, "closed")
    assert tw_out(acts) == apology_msgs(clear=False)


def test_no_apology_audio_hangs_up_at_once() -> None:
    core, _ = started_core()
    assert core.openai_failed(0, "x") == [Hangup("x"), CloseOpenAI("x"), Notice("openai_fault", {"reason": "x"})]


@pytest.mark.parametrize("code", ["session_expired", "beta_api_shape_disabled"])
def test_fatal_openai_errors_apologise(code: str) -> None:
    core, tw = started_core(apology_ulaw=APOLOGY)
    acts = core.openai_message(10 * MS, oa("error", error={"type": "invalid_request_error", "code": code,
                                                           "message": "no", "param": None}))
    assert kinds(acts) == ["tw:media", "tw:mark", "Hangup", "CloseOpenAI", "Notice"]
    assert tw_out(acts) == apology_msgs(clear=False)
    assert acts[2].after_mark == "apology"
    assert core.openai_message(11 * MS, audio_delta("item_A", "resp_1", b64(ulaw(160)))) == []


@pytest.mark.parametrize("code", ["response_cancel_not_active", "conversation_already_has_active_response"])
def test_benign_openai_errors_change_nothing(code: str) -> None:
    core, _ = started_core(apology_ulaw=APOLOGY)
    assert core.openai_message(10 * MS, oa("error", error={"type": "invalid_request_error", "code": code,
                                                           "message": "benign", "param": None})) == []
    assert kinds(core.openai_message(11 * MS, audio_delta("item_A", "resp_1", b64(ulaw(160))))) == \
        ["tw:media", "tw:mark"]
    assert core.stats["truncate_errors"] == 0


def test_truncate_too_long_error_is_counted_not_fatal() -> None:
    core, _ = started_core(apology_ulaw=APOLOGY)
    acts = core.openai_message(10 * MS, oa("error", error={
        "type": "invalid_request_error", "code": "invalid_value", "param": None, "event_id": None,
        "message": "Audio content of 9800ms is already shorter than 11579ms"}))
    # not fatal: only shown in the live feed
    assert acts == [Notice("error", {"source": "openai", "code": "invalid_value",
                                     "message": "Audio content of 9800ms is already shorter than 11579ms"})]
    assert core.stats["truncate_errors"] == 1
    assert core.stats["openai_errors"] == 1


# ============================================================== the end


def test_stop_closes_openai_once() -> None:
    core, tw = started_core()
    core.openai_message(10 * MS, audio_delta("item_A", "resp_1", b64(ulaw(160))))
    assert core.twilio_message(20 * MS, tw.stop()) == [CloseOpenAI("caller hung up")]
    assert core.twilio_closed(21 * MS) == []
    assert core.twilio_message(22 * MS, tw.stop()) == []
    # nothing more goes to either side
    assert core.twilio_message(23 * MS, tw.media(b64(ulaw(160)))) == []
    assert core.openai_message(24 * MS, audio_delta("item_A", "resp_1", b64(ulaw(160)))) == []
    assert core.openai_failed(25 * MS, "closed by us") == []


def test_socket_closed_without_stop_closes_openai() -> None:
    core, _ = started_core()
    acts = core.twilio_closed(5 * MS)
    assert len(acts) == 1 and isinstance(acts[0], CloseOpenAI)
    assert core.twilio_closed(6 * MS) == []


def test_transcode_audio_done_after_stop_sends_nothing() -> None:
    core, tw = started_core(SessionParams(audio_mode="transcode"), transcoder=Transcoder())
    pcm = (np.sin(np.arange(4800) * 2 * np.pi / 24) * 8000).astype("<i2").tobytes()
    core.openai_message(10 * MS, audio_delta("item_A", "resp_1", b64(pcm)))
    core.twilio_message(20 * MS, tw.stop())
    assert core.openai_message(21 * MS, audio_done("item_A", "resp_1")) == []
