"""Sans-IO tests of ``callsim.bridge.call.CallCore``: bad input from either side, by hand and fuzzed: never an exception, never a bad message passed on.

Driven on a synthetic clock with the hand-written messages and the Twilio playback model of
:mod:`tests.bridge.callcore_kit`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from callsim.bridge.call import (
    CallCore,
    RunTool,
    SaveTranscript,
    ToOpenAI,
    ToTwilio,
)
from callsim.bridge.codec import Transcoder
from callsim.bridge.realtime import SessionParams
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.bridge.callcore_kit import (
    CALL_SID,
    MS,
    STREAM_SID,
    TwilioMsgs,
    audio_delta,
    audio_done,
    b64,
    kinds,
    oa,
    oa_out,
    response_created,
    session_updated,
    speech_started,
    started_core,
    tw_out,
    ulaw,
)

# ============================================================== bad input


GOOD_MEDIA = b64(ulaw(160, 5))

BAD_TWILIO: list[str | bytes] = [
    b'{"event": "media"}', b"\x00\xff\x10", "not json", "", "[]", "5", '"media"', "null",
    json.dumps({"event": "bogus"}), json.dumps({"no_event": 1}), json.dumps({"event": 5}),
    json.dumps({"event": ["media"]}), json.dumps({"event": {"a": 1}}),
    json.dumps({"event": "media"}), json.dumps({"event": "media", "media": "x"}),
    json.dumps({"event": "media", "media": {"payload": 5}}), json.dumps({"event": "media", "media": None}),
    json.dumps({"event": "media", "media": {"payload": None}}),
    json.dumps({"event": "media", "media": {"payload": 'AAAA","type":"response.create'}}),
    json.dumps({"event": "media", "media": {"payload": "not base64!"}}),
    json.dumps({"event": "mark"}), json.dumps({"event": "mark", "mark": {}}),
    json.dumps({"event": "mark", "mark": {"name": 5}}), json.dumps({"event": "mark", "mark": {"name": None}}),
    json.dumps({"event": "mark", "mark": ["0:1:1"]}),
    json.dumps({"event": "start"}), json.dumps({"event": "start", "start": []}),
    json.dumps({"event": "start", "start": "x", "streamSid": STREAM_SID}),
    json.dumps({"event": "start", "start": [], "streamSid": STREAM_SID}),
    json.dumps({"event": "dtmf", "dtmf": []}),
]


def test_bad_twilio_messages_are_counted_and_survived() -> None:
    core, tw = started_core()
    for i, msg in enumerate(BAD_TWILIO):
        before = core.stats["twilio_bad"]
        assert core.twilio_message((10 + i) * MS, msg) == [], msg
        assert core.stats["twilio_bad"] == before + 1, msg
    assert core.stream_sid == STREAM_SID
    # good messages still work, on both sides
    assert oa_out(core.twilio_message(100 * MS, tw.media(GOOD_MEDIA))) == [
        {"type": "input_audio_buffer.append", "audio": GOOD_MEDIA}]
    assert kinds(core.openai_message(101 * MS, audio_delta("item_A", "resp_1", b64(ulaw(160))))) == \
        ["tw:media", "tw:mark"]
    # a keypress reaches the model (DTMF_MODE=respond by default): the key as a user item, then a response
    assert [e["type"] for e in oa_out(core.twilio_message(102 * MS, tw.dtmf("7")))] == \
        ["conversation.item.create", "response.create"]
    assert core.stats["openai_bad"] == 0


BAD_OPENAI: list[str | bytes] = [
    b"\xff\xfe", "nope", "", "[]", "{}", "7", json.dumps({"type": 5}), json.dumps({"type": None}),
    json.dumps({"type": "response.output_audio.delta"}),
    json.dumps({"type": "response.output_audio.delta", "item_id": "item_X", "response_id": "r", "delta": 5}),
    json.dumps({"type": "response.output_audio.delta", "item_id": ["x"], "delta": "AAAA"}),
    json.dumps({"type": "response.output_audio.delta", "item_id": "item_X", "delta": 'AA","event":"clear'}),
    json.dumps({"type": "response.created"}), json.dumps({"type": "response.created", "response": []}),
    json.dumps({"type": "response.created", "response": {"id": ["r"]}}),
    json.dumps({"type": "response.done"}), json.dumps({"type": "response.done", "response": []}),
    json.dumps({"type": "response.done", "response": "x"}),
    json.dumps({"type": "error", "error": "boom"}), json.dumps({"type": "error", "error": [1, 2]}),
    json.dumps({"type": "response.output_item.added", "item": [1]}),
    json.dumps({"type": "response.output_item.added", "item": {"type": "function_call"}}),
    json.dumps({"type": "conversation.item.input_audio_transcription.completed"}),
    json.dumps({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u",
                "transcript": 5}),
    json.dumps({"type": "response.output_audio_transcript.done"}),
    json.dumps({"type": "response.output_audio_transcript.done", "item_id": "item_A", "transcript": ["x"]}),
    json.dumps({"type": "response.function_call_arguments.done"}),
    json.dumps({"type": "response.function_call_arguments.done", "call_id": "c", "arguments": {"a": 1}}),
    json.dumps({"type": "response.function_call_arguments.done", "call_id": ["c"], "arguments": "{}"}),
]


def test_bad_openai_messages_are_counted_and_survived() -> None:
    core, tw = started_core()
    # an item that has been truncated, so a late transcript of a wrong type would hit the cut
    core.openai_message(5 * MS, audio_delta("item_A", "resp_0", b64(ulaw(1600))))
    core.openai_message(6 * MS, speech_started())
    for i, msg in enumerate(BAD_OPENAI):
        before = core.stats["openai_bad"]
        acts = core.openai_message((10 + i) * MS, msg)
        assert [a for a in acts if not isinstance(a, ToTwilio)] == [], msg
        assert tw_out(acts) == [], msg
        assert core.stats["openai_bad"] == before + 1, msg
    assert core.stats["tool_calls"] == 0
    # unknown (or merely uninteresting) event types are ignored, not "bad"
    before = core.stats["openai_bad"]
    for etype in ("rate_limits.updated", "response.output_audio_transcript.delta", "conversation.item.added",
                  "some.future.event"):
        assert core.openai_message(90 * MS, oa(etype)) == []
    assert core.stats["openai_bad"] == before
    # good messages still work, on both sides
    assert kinds(core.openai_message(100 * MS, audio_delta("item_B", "resp_1", b64(ulaw(160))))) == \
        ["tw:media", "tw:mark"]
    assert core.openai_message(101 * MS, response_created("resp_2")) == []
    assert len(oa_out(core.twilio_message(102 * MS, tw.media(GOOD_MEDIA)))) == 1
    assert core.stats["twilio_bad"] == 0


def test_a_second_start_is_refused() -> None:
    core, tw = started_core()
    other = TwilioMsgs("MZ" + "9" * 32)
    assert core.twilio_message(10 * MS, other.start()) == []  # no second OpenAI session
    assert core.stats["twilio_bad"] == 1
    assert core.stream_sid == STREAM_SID


def test_start_with_an_unsafe_stream_sid_is_refused() -> None:
    core = CallCore(SessionParams())
    assert core.twilio_message(0, TwilioMsgs('MZ"x').start()) == []
    assert core.stats["twilio_bad"] == 1 and core.stream_sid is None
    assert kinds(core.twilio_message(1, TwilioMsgs().start())) == ["CallStarted", "ConnectOpenAI"]


def test_openai_audio_before_the_stream_started_is_survived() -> None:
    core = CallCore(SessionParams())
    acts = core.openai_message(0, audio_delta("item_A", "resp_1", b64(ulaw(160))))
    assert acts == []
    assert core.openai_message(1, audio_done("item_A", "resp_1")) == []


# ------------------------------------------------------------------- fuzzing both sides

_leaf = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=8)
_json = st.recursive(
    _leaf,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["id", "name", "payload", "type", "event", ""]) | st.text(max_size=4), children, max_size=3),
    max_leaves=4,
)
_ids = st.sampled_from(["item_A", "item_B", "fc_1", "resp_1", "call_1", "", "0:1:160"]) | _json
_payloads = st.sampled_from([GOOD_MEDIA, "", "AA==", "AAA=", "====", "A", '"', "\\"]) | st.text(max_size=30) | _json
_marks = st.sampled_from(["0:1:160", "0:1:320", "1:1:160", "0:2:99", "apology", "::", "a:b:c"]) | _json

_twilio_dicts = st.fixed_dictionaries(
    {"event": st.sampled_from(["connected", "start", "media", "mark", "dtmf", "stop", "clear", "bogus"]) | _json},
    optional={
        "streamSid": st.sampled_from([STREAM_SID, "MZ1", '"', ""]) | _json,
        "sequenceNumber": st.text(max_size=4) | _json,
        "media": st.fixed_dictionaries({}, optional={"payload": _payloads, "track": _json}) | _json,
        "mark": st.fixed_dictionaries({}, optional={"name": _marks}) | _json,
        "start": st.fixed_dictionaries({}, optional={
            "streamSid": st.sampled_from([STREAM_SID, '"quote', "MZ\\x"]) | _json,
            "callSid": st.sampled_from([CALL_SID]) | _json, "customParameters": _json,
            "mediaFormat": _json}) | _json,
        "dtmf": st.fixed_dictionaries({}, optional={"digit": _json}) | _json,
    },
)
_OA_TYPES = ["response.output_audio.delta", "response.audio.delta", "response.output_audio.done",
             "response.audio.done", "response.output_audio_transcript.done", "response.audio_transcript.done",
             "input_audio_buffer.speech_started", "response.created", "response.done",
             "conversation.item.input_audio_transcription.completed", "response.function_call_arguments.done",
             "response.output_item.added", "session.updated", "error", "rate_limits.updated"]
_openai_dicts = st.fixed_dictionaries(
    {"type": st.sampled_from(_OA_TYPES) | _json},
    optional={
        "item_id": _ids, "response_id": _ids, "call_id": _ids, "name": _json, "arguments": _json,
        "delta": _payloads, "transcript": _json,
        "response": st.fixed_dictionaries({}, optional={"id": _ids, "status": _json}) | _json,
        "error": st.fixed_dictionaries({}, optional={
            "code": st.sampled_from(["session_expired", "response_cancel_not_active", "x"]) | _json,
            "message": st.sampled_from(["Audio content of 1ms is already shorter than 2ms"]) | _json}) | _json,
        "item": st.fixed_dictionaries({}, optional={
            "type": st.sampled_from(["function_call", "message"]) | _json, "id": _ids, "name": _json}) | _json,
    },
)


def _encode(d: Any) -> str:
    return json.dumps(d)


_message = st.one_of(
    st.tuples(st.just("tw"), _twilio_dicts.map(_encode)),
    st.tuples(st.just("oa"), _openai_dicts.map(_encode)),
    st.tuples(st.sampled_from(["tw", "oa"]), st.text(max_size=40) | st.binary(max_size=40)),
    st.tuples(st.sampled_from(["tw", "oa"]), _json.map(_encode)),
    # the driver hands back the call_id of a RunTool: always a string
    st.tuples(st.just("tool"), st.tuples(st.sampled_from(["call_1", "call_2", ""]) | st.text(max_size=6),
                                         st.text(max_size=10))),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(["none", "started", "ready"]), mode=st.sampled_from(["passthrough", "transcode"]),
       dialect=st.sampled_from(["ga", "beta"]), msgs=st.lists(_message, max_size=20))
def test_fuzz_both_sides_never_raise(prefix: str, mode: str, dialect: str, msgs: list[tuple[str, Any]]) -> None:
    core = CallCore(SessionParams(audio_mode=mode, dialect=dialect),  # type: ignore[arg-type]
                    transcoder=Transcoder() if mode == "transcode" else None, apology_ulaw=b"\x7f" * 160)
    tw = TwilioMsgs()
    if prefix != "none":
        core.twilio_message(0, tw.start())
        core.openai_opened(1)
    if prefix == "ready":
        core.openai_message(2, session_updated())
    t = 10 * MS
    for side, data in msgs:
        t += 7 * MS
        if side == "tw":
            acts = core.twilio_message(t, data)
        elif side == "oa":
            acts = core.openai_message(t, data)
        else:
            acts = core.tool_result(t, *data)
        for a in acts:
            if isinstance(a, (ToTwilio, ToOpenAI)):
                msg = json.loads(a.text)  # always valid JSON
                assert isinstance(msg, dict)
                if isinstance(a, ToTwilio):
                    assert msg["event"] in ("media", "mark", "clear")
                    assert isinstance(msg["streamSid"], str)
                    if msg["event"] == "media":
                        base64.b64decode(msg["media"]["payload"], validate=True)
                else:
                    assert isinstance(msg["type"], str)
                    if msg["type"] == "input_audio_buffer.append":
                        assert msg["audio"] and base64.b64decode(msg["audio"], validate=True)
            elif isinstance(a, SaveTranscript):
                assert isinstance(a.text, str)
            elif isinstance(a, RunTool):
                assert isinstance(a.arguments, str) and isinstance(a.name, str)
    # still alive: a well-formed call works afterwards unless it has ended
    if not core.ending and core.stream_sid == STREAM_SID and core.openai_ready:
        acts = core.twilio_message(t + MS, tw.media(GOOD_MEDIA))
        assert len(acts) <= 1


@pytest.mark.parametrize("mode", ["passthrough", "transcode"])
def test_an_empty_media_payload_is_not_forwarded_as_an_empty_append(mode: str) -> None:
    """Found by the fuzzer: ``"payload": ""`` became ``input_audio_buffer.append`` with no audio."""
    core = CallCore(SessionParams(audio_mode=mode), transcoder=Transcoder() if mode == "transcode" else None,  # type: ignore[arg-type]
                    apology_ulaw=b"\x7f" * 160)
    tw = TwilioMsgs()
    core.twilio_message(0, tw.start())
    core.openai_opened(1)
    core.openai_message(2, session_updated())
    assert core.twilio_message(10 * MS, tw.media("")) == []
    assert core.twilio_message(30 * MS, tw.media(GOOD_MEDIA))  # the call goes on
