"""transfer_call in the sans-IO core: the phrase plays out (its mark), then one redirect; a failed
redirect goes back to the model and the call goes on; no renewal switch while a transfer is under way."""

from __future__ import annotations

import json

from callsim.bridge.call import TransferCall
from callsim.bridge.call_control import TRANSFER_CALL, CallControl
from callsim.bridge.renewal import quiet

from .callcore_kit import (
    MS, audio_delta, b64, call_tool, kinds, marks, oa_out, reply, response_created, response_done, started_core, ulaw,
)

ON = CallControl(transfer=True)


def _transfers(actions: list) -> list[TransferCall]:
    return [a for a in actions if isinstance(a, TransferCall)]


def test_the_call_is_redirected_only_once_the_phrase_that_followed_the_call_has_played():
    core, tw = started_core(control=ON)
    core.openai_message(10 * MS, response_created("resp_1"))
    call_tool(core, 20 * MS, "resp_1", TRANSFER_CALL, "wants a person")
    asked = oa_out(core.openai_message(30 * MS, response_done("resp_1")))  # no audio: ask for the phrase
    assert [m["type"] for m in asked] == ["conversation.item.create", "response.create"]
    assert asked[0]["item"]["call_id"] == "call_1" and json.loads(asked[0]["item"]["output"])["status"] == "pending"
    out = reply(core, 40 * MS, "resp_2", "item_p", n=8000)  # a 1 s phrase, all received
    assert marks(out)[-1] == "transfer"
    (wait,) = _transfers(out)
    assert wait.after_mark == "transfer" and 3.9 < wait.grace_s < 4.1  # ~1 s left + the 3 s grace
    assert not core.ending  # the call stays up until Twilio ends the stream
    assert core.twilio_message(1090 * MS, tw.mark("0:1:8000")) == []
    assert quiet(core) == "a transfer is under way"  # no renewal switch between the phrase and the stream's end
    assert core.twilio_message(1100 * MS, tw.mark("transfer")) == [TransferCall()]
    assert core.transfer_mark_late(5000 * MS) == []  # the deadline after the mark: nothing twice
    out = core.transfer_done(1300 * MS, None, "+15550009999")
    assert [(n.kind, n.data) for n in out] == [("transferred", {"to": "+15550009999"})]
    end = core.twilio_message(1400 * MS, tw.stop())
    assert kinds(end) == ["CloseOpenAI"] and end[0].reason == "call transferred" and core.ended


def test_a_phrase_in_the_same_response_as_the_call_asks_for_nothing_more():
    core, tw = started_core(control=ON)
    core.openai_message(10 * MS, response_created("resp_1"))
    core.openai_message(11 * MS, audio_delta("item_A", "resp_1", b64(ulaw(800))))
    call_tool(core, 20 * MS, "resp_1", TRANSFER_CALL, "wants a person")
    out = core.openai_message(30 * MS, response_done("resp_1"))
    assert oa_out(out) == [] and marks(out) == ["transfer"] and _transfers(out)[0].after_mark == "transfer"


def test_a_mark_that_never_comes_back_still_transfers_once():
    core, tw = started_core(control=ON)
    core.openai_message(10 * MS, response_created("resp_1"))
    core.openai_message(11 * MS, audio_delta("item_A", "resp_1", b64(ulaw(800))))
    call_tool(core, 20 * MS, "resp_1", TRANSFER_CALL, "wants a person")
    core.openai_message(30 * MS, response_done("resp_1"))
    assert core.transfer_mark_late(4000 * MS) == [TransferCall()]
    assert core.twilio_message(4100 * MS, tw.mark("transfer")) == []


def test_a_failed_redirect_is_the_tool_s_error_output_and_the_call_goes_on():
    core, tw = started_core(control=ON)
    core.openai_message(10 * MS, response_created("resp_1"))
    core.openai_message(11 * MS, audio_delta("item_A", "resp_1", b64(ulaw(800))))
    core.twilio_message(200 * MS, tw.mark("0:1:800"))  # the phrase already played
    call_tool(core, 210 * MS, "resp_1", TRANSFER_CALL, "wants a person")
    assert _transfers(core.openai_message(220 * MS, response_done("resp_1"))) == [TransferCall()]
    out = core.transfer_done(300 * MS, "Twilio answered HTTP 404 (20404): not found", "+15550009999")
    told = oa_out(out)
    assert [m["type"] for m in told] == ["conversation.item.create", "response.create"]
    assert told[0]["item"]["type"] == "function_call_output" and told[0]["item"]["call_id"] == "call_1"
    assert "404" in json.loads(told[0]["item"]["output"])["error"]
    assert [n.kind for n in out if type(n).__name__ == "Notice"] == ["transfer_failed"]
    assert not core.ending and not core.transfer_pending


def test_a_failed_redirect_after_the_pending_output_is_told_as_a_system_item():
    core, tw = started_core(control=ON)
    core.openai_message(10 * MS, response_created("resp_1"))
    call_tool(core, 20 * MS, "resp_1", TRANSFER_CALL, "wants a person")
    core.openai_message(30 * MS, response_done("resp_1"))
    reply(core, 40 * MS, "resp_2", "item_p", n=800)
    core.twilio_message(300 * MS, tw.mark("transfer"))
    told = oa_out(core.transfer_done(400 * MS, "Twilio did not answer within 10 s"))
    assert told[0]["item"]["role"] == "system" and "did not answer" in told[0]["item"]["content"][0]["text"]


def test_without_the_setting_the_call_is_an_ordinary_tool_call():
    core, tw = started_core()  # control.transfer off: the registry answers (unknown or its stub)
    core.openai_message(10 * MS, response_created("resp_1"))
    out = core.openai_message(20 * MS, json.dumps({
        "type": "response.function_call_arguments.done", "response_id": "resp_1", "item_id": "fc_1",
        "call_id": "call_1", "name": TRANSFER_CALL, "arguments": "{}"}))
    assert kinds(out) == ["RunTool"] and not core.transfer_pending
