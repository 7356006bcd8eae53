"""Keys, a silent caller, goodbyes (bridge/call_control.py, bridge/silence.py) in the sans-IO core."""

from __future__ import annotations


import pytest
from callsim.bridge.call import Hangup
from callsim.bridge.call_control import END_CALL, CallControl
from callsim.bridge.realtime import SessionParams

from .callcore_kit import (
    MS, audio_delta, b64, call_tool, kinds, marks, oa, oa_out, reply, response_created, response_done,
    speech_started, started_core, tw_out, ulaw,
)


# ---------------------------------------------------------------- DTMF

def test_a_keypress_reaches_the_model_as_a_user_item_and_asks_for_a_response():
    core, tw = started_core()
    msgs = oa_out(core.twilio_message(10 * MS, tw.dtmf("1")))
    assert msgs[0]["item"]["role"] == "user"
    assert msgs[0]["item"]["content"][0]["text"] == "The caller pressed 1 on the phone keypad."
    assert [m["type"] for m in msgs] == ["conversation.item.create", "response.create"]


def test_a_keypress_during_a_reply_asks_for_a_response_after_it():
    core, tw = started_core()
    core.openai_message(10 * MS, response_created("resp_1"))
    assert [m["type"] for m in oa_out(core.twilio_message(20 * MS, tw.dtmf("#")))] == ["conversation.item.create"]
    assert [m["type"] for m in oa_out(core.openai_message(30 * MS, response_done("resp_1")))] == ["response.create"]


@pytest.mark.parametrize("mode,want", [("item", ["conversation.item.create"]), ("off", [])])
def test_dtmf_mode(mode, want):
    core, tw = started_core(control=CallControl(dtmf_mode=mode))
    assert [m["type"] for m in oa_out(core.twilio_message(10 * MS, tw.dtmf("5")))] == want


def test_a_key_twilio_never_sends_is_a_bad_message():
    core, tw = started_core()
    assert core.twilio_message(10 * MS, tw.dtmf('1","x')) == []
    assert core.stats["twilio_bad"] == 1


# ---------------------------------------------------------------- silent caller

def _quiet_core(**kw):
    core, tw = started_core(control=CallControl(silence_reprompt_s=2.0, silence_max_prompts=2, **kw))
    return core, tw


def test_no_silence_timer_before_the_conversation_begins_nor_when_off():
    core, _ = _quiet_core()
    assert core.response_deadline_ns() is None  # a bridge that does not greet waits for the caller
    off, tw = started_core()
    reply(off, 10 * MS, "resp_1", "item_A")
    off.twilio_message(200 * MS, tw.mark("0:1:800"))
    assert off.response_deadline_ns() is None


def test_silent_caller_is_reprompted_from_the_mark_then_told_goodbye_and_hung_up_on():
    core, tw = _quiet_core()
    reply(core, 10 * MS, "resp_1", "item_A")  # 100 ms of audio
    assert core.response_deadline_ns() == 111 * MS + 2000 * MS  # the estimated end of playback + 2 s
    core.twilio_message(150 * MS, tw.mark("0:1:800"))  # played out later than estimated
    due = core.response_deadline_ns()
    assert due == 150 * MS + 2000 * MS
    assert core.tick(due - 1) == []
    first = oa_out(core.tick(due))
    assert first == [{"type": "response.create", "response": {"instructions": core.control.reprompt_instructions}}]
    t = due + 10 * MS
    for i, resp in enumerate(("resp_2", "resp_3")):
        reply(core, t, resp, f"item_{i}")
        core.twilio_message(t + 200 * MS, tw.mark(f"0:{i + 2}:800"))
        t = core.response_deadline_ns()
        acts = oa_out(core.tick(t))
        assert len(acts) == 1 and "instructions" in acts[0]["response"]
    assert acts[0]["response"]["instructions"] == core.control.silence_goodbye_instructions
    assert core.hangup_after == "silent caller"
    # the goodbye: its response.done marks the end of its audio; the hang-up waits for that mark
    out = reply(core, t + 10 * MS, "resp_4", "item_g")
    assert marks(out)[-1] == "goodbye"
    hang = [a for a in out if isinstance(a, Hangup)]
    assert hang and hang[0].after_mark == "goodbye" and 3.0 <= hang[0].grace_s <= 3.2
    assert "CloseOpenAI" in kinds(out) and core.ending
    assert core.twilio_message(t + 500 * MS, tw.mark("goodbye")) == [Hangup("goodbye played")]


def test_the_caller_speaking_stops_the_timer_and_resets_the_prompts():
    core, tw = _quiet_core()
    reply(core, 10 * MS, "resp_1", "item_A")
    core.twilio_message(150 * MS, tw.mark("0:1:800"))
    core.tick(core.response_deadline_ns())
    assert core.silence.prompts == 1
    core.openai_message(3000 * MS, speech_started())
    assert core.silence.prompts == 0
    assert core.response_deadline_ns() is None  # the caller holds the floor
    core.openai_message(4000 * MS, oa("input_audio_buffer.speech_stopped", audio_end_ms=3000, item_id="i"))
    assert core.response_deadline_ns() == 4000 * MS + 2000 * MS


# ---------------------------------------------------------------- end_call

def test_end_call_then_the_goodbye_hangs_up_once_the_goodbye_played():
    core, tw = started_core(SessionParams())
    core.openai_message(10 * MS, response_created("resp_1"))
    call_tool(core, 20 * MS, "resp_1", END_CALL, "bye")
    asked = oa_out(core.openai_message(30 * MS, response_done("resp_1")))  # no audio: ask for the goodbye
    assert [m["type"] for m in asked] == ["conversation.item.create", "response.create"]
    assert asked[0]["item"]["type"] == "function_call_output" and asked[0]["item"]["call_id"] == "call_1"
    assert not core.ending
    out = reply(core, 40 * MS, "resp_2", "item_g", n=8000)  # a 1 s goodbye, all received
    assert marks(out)[-1] == "goodbye" and core.ending and core.ended
    assert [a for a in out if isinstance(a, Hangup)][0].after_mark == "goodbye"
    assert core.twilio_message(60 * MS, tw.media(b64(ulaw(160)))) == []  # nothing more goes to OpenAI
    assert core.twilio_message(1100 * MS, tw.mark("goodbye")) == [Hangup("goodbye played")]


def test_end_call_with_its_farewell_in_the_same_response_asks_for_nothing_more():
    core, tw = started_core()
    core.openai_message(10 * MS, response_created("resp_1"))
    core.openai_message(11 * MS, audio_delta("item_A", "resp_1", b64(ulaw(800))))
    call_tool(core, 20 * MS, "resp_1", END_CALL, "bye")
    out = core.openai_message(30 * MS, response_done("resp_1"))
    assert oa_out(out) == [] and marks(out)[-1] == "goodbye" and core.ending


def test_goodbye_already_played_hangs_up_at_once():
    core, tw = started_core()
    core.openai_message(10 * MS, response_created("resp_1"))
    core.openai_message(11 * MS, audio_delta("item_A", "resp_1", b64(ulaw(800))))
    core.twilio_message(200 * MS, tw.mark("0:1:800"))
    call_tool(core, 210 * MS, "resp_1", END_CALL, "bye")
    out = core.openai_message(220 * MS, response_done("resp_1"))
    assert [a for a in out if isinstance(a, Hangup)] == [Hangup("end_call")]
    assert kinds(out) == ["Hangup", "CloseOpenAI"] and tw_out(out) == []  # no goodbye mark to wait for


def test_a_key_pressed_while_the_caller_speaks_leaves_them_speaking():
    """dtmf_mode=item, the caller speaking: a key is no end of their speech, so no silence
    deadline arms (a re-prompt would talk over them); their speech's end counts from then."""
    core, tw = _quiet_core(dtmf_mode="item")
    reply(core, 10 * MS, "resp_1", "item_A")
    core.twilio_message(150 * MS, tw.mark("0:1:800"))
    core.tick(core.response_deadline_ns())
    assert core.silence.prompts == 1
    core.openai_message(3000 * MS, speech_started())
    core.twilio_message(3100 * MS, tw.dtmf("5"))
    assert core.caller_speaking and core.silence.prompts == 0
    assert core.response_deadline_ns() is None
    assert core.tick(9000 * MS) == []  # long after 2 s: no re-prompt over the caller
    core.openai_message(10_000 * MS, oa("input_audio_buffer.speech_stopped", audio_end_ms=9000, item_id="i"))
    assert not core.caller_speaking and core.response_deadline_ns() == 12_000 * MS


def test_a_key_in_silence_restarts_the_count():
    core, tw = _quiet_core(dtmf_mode="item")
    reply(core, 10 * MS, "resp_1", "item_A")
    core.twilio_message(150 * MS, tw.mark("0:1:800"))
    assert core.response_deadline_ns() == 2150 * MS
    core.twilio_message(1000 * MS, tw.dtmf("1"))
    assert not core.caller_speaking and core.response_deadline_ns() == 3000 * MS


def test_a_session_switch_mid_speech_leaves_the_caller_quiet_from_the_switch():
    """The new session never says the old one's speech stopped: the one record of it is reset."""
    core, _ = _quiet_core()
    reply(core, 10 * MS, "resp_1", "item_A")
    core.openai_message(3000 * MS, speech_started())
    assert core.caller_speaking and core.response_deadline_ns() is None
    core.session_switched(3500 * MS, ready=True)
    assert not core.caller_speaking and not core.silence.caller_speaking
    assert core.response_deadline_ns() == 5500 * MS


def test_the_bridges_own_call_tools_take_only_an_optional_reason():
    """end_call and transfer_call: the model can pass nothing that steers the call (no number, no
    delay), only a reason for the log; OpenAI's function schema shape."""
    from callsim.bridge.call_control import END_CALL_SCHEMA, TRANSFER_CALL, TRANSFER_CALL_SCHEMA

    for schema, name in ((END_CALL_SCHEMA, END_CALL), (TRANSFER_CALL_SCHEMA, TRANSFER_CALL)):
        assert schema["type"] == "function" and schema["name"] == name and len(schema["description"]) > 50
        params = schema["parameters"]
        assert params == {"type": "object", "required": [], "additionalProperties": False,
                          "properties": {"reason": {"type": "string",
                                                    "description": params["properties"]["reason"]["description"]}}}
