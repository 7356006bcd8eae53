"""``MockSession`` driven sans-IO: session.created and session.update, the two dialects, and invalid client events.

A fake nanosecond clock, no sockets, no sleeping (see ``Driver`` in conftest.py and the
helpers in session_helpers.py).
"""

from __future__ import annotations

import copy
import time

from callsim.simulator.mock.audio import fixture_audio
from callsim.simulator.mock.behaviour import Behaviour, Rule, ThinkTime, ToolCall
from callsim.simulator.mock.ids import ID_RE
from callsim.simulator.mock.session_config import DEFAULT_INSTRUCTIONS

from .session_helpers import (
    BETA_AUDIO_DELTAS,
    PCM,
    PCMU,
    SHORT,
    audio_of,
    configure,
    declared,
    err,
    ga_update,
    greet,
    shape,
    sil,
    since,
    text,
    ulaw,
)

# ============================================================ 1. session.created / update


def test_session_created_ga_defaults(drive):
    d = drive(open=False)
    out = d.open()
    assert d.types(out) == ["session.created"]
    ev = out[0]
    assert ID_RE.match(ev["event_id"]) and ev["event_id"].startswith("event_")
    s = ev["session"]
    assert ID_RE.match(s["id"]) and s["id"].startswith("sess_") and s["id"] == d.s.id
    assert abs(s.pop("expires_at") - (time.time() + 3600)) < 60
    assert s == {
        "type": "realtime", "object": "realtime.session", "id": d.s.id, "model": "gpt-realtime",
        "output_modalities": ["audio"], "instructions": DEFAULT_INSTRUCTIONS, "tools": [], "tool_choice": "auto",
        "max_output_tokens": "inf", "tracing": None, "truncation": "auto", "prompt": None,
        "audio": {
            "input": {"format": PCM, "transcription": None, "noise_reduction": None,
                      "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                         "silence_duration_ms": 200, "idle_timeout_ms": None,
                                         "create_response": True, "interrupt_response": True}},
            "output": {"format": PCM, "voice": "marin", "speed": 1},
        },
        "include": None,
    }
    assert list(ev) == ["event_id", "type", "session"]


def test_session_created_beta_defaults_flat(drive):
    d = drive(dialect="beta", open=False)
    out = d.open()
    assert d.types(out) == ["session.created"]
    s = out[0]["session"]
    assert "type" not in s and "audio" not in s
    assert s == {
        "id": d.s.id, "object": "realtime.session", "model": "gpt-realtime",
        "modalities": ["text", "audio"], "instructions": DEFAULT_INSTRUCTIONS, "voice": "alloy",
        "input_audio_format": "pcm16", "output_audio_format": "pcm16", "input_audio_transcription": None,
        "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                           "silence_duration_ms": 200, "create_response": True, "interrupt_response": True},
        "tools": [], "tool_choice": "auto", "temperature": 0.8, "max_response_output_tokens": "inf",
    }
    # a model the beta SDK types do not know is reported as one they do
    d = drive(dialect="beta", model="my-own-realtime-model")
    assert d.events[0]["session"]["model"] == "gpt-4o-realtime-preview"


def test_session_update_merges_and_reports_full_session(drive):
    d = drive()
    expected = copy.deepcopy(d.events[0]["session"])
    out = d.send({"type": "session.update", "event_id": "cli_upd_1",
                  "session": {"type": "realtime", "instructions": "Be brief.",
                              "audio": {"input": {"format": PCMU}}}})
    assert d.types(out) == ["session.updated"]
    assert out[0]["event_id"] != "cli_upd_1"  # the client's id is not echoed
    expected["instructions"] = "Be brief."
    expected["audio"]["input"]["format"] = PCMU  # only the input format; output stays pcm
    assert out[0]["session"] == expected
    assert (d.s.config.input_format.kind, d.s.config.output_format.kind) == ("pcmu", "pcm16")

    # a partial turn_detection object: the rest takes defaults; output side merges key by key
    out = d.send(ga_update(fmt_in=None, fmt_out=PCMU, turn_detection={"type": "server_vad", "silence_duration_ms": 500},
                           tools=[{"type": "function", "name": "get_weather", "description": "w",
                                   "parameters": {"type": "object", "properties": {}}}]))
    assert d.types(out) == ["session.updated"]
    expected["audio"]["output"]["format"] = PCMU
    expected["audio"]["input"]["turn_detection"]["silence_duration_ms"] = 500
    expected["tools"] = [{"type": "function", "name": "get_weather", "description": "w",
                          "parameters": {"type": "object", "properties": {}}}]
    assert out[0]["session"] == expected
    assert d.s._vad is not None and d.s._vad.params.silence_duration_ms == 500

    # VAD off
    out = d.send(ga_update(fmt_in=None, fmt_out=None, turn_detection=None))
    expected["audio"]["input"]["turn_detection"] = None
    assert out[0]["session"] == expected and d.s._vad is None


def test_bad_session_update_errors_with_event_id_and_changes_nothing(drive):
    d = drive()
    before = copy.deepcopy(d.events[0]["session"])
    # schema error (GA formats are objects)
    out = d.send({"type": "session.update", "event_id": "bad_1",
                  "session": {"type": "realtime", "instructions": "changed",
                              "audio": {"input": {"format": "g711_ulaw"}}}})
    assert d.errors(out) == [err("invalid_type", "Invalid type for 'session.audio.input.format': expected an object, "
                                 "but got a string instead.", "bad_1", "session.audio.input.format")]
    assert d.types(out) == ["error"]
    # range error: the valid part of the update (instructions) is discarded too
    out = d.send(ga_update(fmt_in=None, fmt_out=None, event_id="bad_2", instructions="changed",
                           turn_detection={"type": "server_vad", "threshold": 1.5}))
    [e] = d.errors(out)
    assert (e["code"], e["param"], e["event_id"]) == (
        "decimal_above_max_value", "session.audio.input.turn_detection.threshold", "bad_2")
    # unknown parameter
    out = d.send({"type": "session.update", "event_id": "bad_3", "session": {"type": "realtime", "bogus": 1}})
    assert d.errors(out) == [err("unknown_parameter", "Unknown parameter: 'session.bogus'.", "bad_3", "session.bogus")]
    # GA update without session.type (and no beta-only key: not the beta dialect)
    out = d.send({"type": "session.update", "event_id": "bad_4", "session": {"instructions": "x"}})
    assert d.errors(out) == [err("missing_required_parameter", "Missing required parameter: 'session.type'.",
                                 "bad_4", "session.type")]
    assert d.s.close_request is None
    # the session goes on, unchanged
    out = d.send({"type": "session.update", "session": {"type": "realtime"}})
    assert d.types(out) == ["session.updated"]
    after = out[0]["session"]
    assert after == before
    assert [e["code"] for e in d.s.errors_sent] == ["invalid_type", "decimal_above_max_value", "unknown_parameter",
                                                    "missing_required_parameter"]


# ============================================================ 10. dialects


BETA_UPDATE = {"type": "session.update", "session": {
    "modalities": ["text", "audio"], "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw",
    "voice": "alloy", "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}}


def test_beta_server_speaks_beta(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 100), seed=20), dialect="beta")
    out = d.send(BETA_UPDATE)
    assert d.types(out) == ["session.updated"]
    s = out[0]["session"]
    assert (s["input_audio_format"], s["output_audio_format"]) == ("g711_ulaw", "g711_ulaw")
    assert s["turn_detection"] == {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                   "silence_duration_ms": 300, "create_response": True, "interrupt_response": True}
    assert "type" not in s
    n = len(d.events)
    d.append(ulaw("caller_greeting") + sil(800))
    d.settle()
    ev = since(d, n)
    assert shape(d.types(ev), BETA_AUDIO_DELTAS) == [
        "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
        "conversation.item.created", "response.created", "response.output_item.added", "conversation.item.created",
        "response.content_part.added", "DELTAS", "response.audio.done", "response.audio_transcript.done",
        "response.content_part.done", "response.output_item.done", "response.done", "rate_limits.updated"]
    assert not {"conversation.item.added", "conversation.item.done", "response.output_audio.delta"} & set(d.types())
    assert audio_of(ev, delta_type="response.audio.delta") == fixture_audio(SHORT, "pcmu")
    user = d.of("conversation.item.created")[0]["item"]
    assert user["object"] == "realtime.item" and user["role"] == "user"
    resp = d.one("response.done")["response"]
    assert resp["output_audio_format"] == "g711_ulaw" and resp["voice"] == "alloy" and "audio" not in resp
    assert resp["output"][0]["content"] == [{"type": "audio", "transcript": text(SHORT)}]
    assert d.one("response.audio_transcript.done")["transcript"] == text(SHORT)


def test_beta_tool_call_arguments_done_has_no_name(drive):
    tool = ToolCall("get_weather", {"city": "Paris"})
    d = drive(Behaviour(think=ThinkTime("fixed", 0), rules=(Rule("caller_weather_question", tool=tool),), seed=21),
              dialect="beta")
    d.send({"type": "session.update", "session": {"input_audio_format": "g711_ulaw", "turn_detection": None,
                                                  "tools": declared("get_weather")}})
    d.append(ulaw("caller_weather_question"))
    d.send({"type": "input_audio_buffer.commit"})
    d.send({"type": "response.create"})
    d.settle()
    done = d.one("response.function_call_arguments.done")
    assert "name" not in done and done["arguments"] == '{"city": "Paris"}'
    assert d.one("response.output_item.added")["item"]["name"] == "get_weather"
    assert "conversation.item.done" not in d.types()


def test_ga_server_refuses_beta_header(drive):
    d = drive(beta_header=True, open=False)
    out = d.open()
    assert [e["error"] for e in out] == [err("beta_api_shape_disabled",
                                             "The Realtime Beta API is no longer supported. Please use /v1/realtime "
                                             "for the GA API.")]
    assert d.s.close_request == (4000, "beta_api_shape_disabled")
    assert d.send({"type": "response.create"}) == []
    assert d.s.next_deadline_ns() is None


def test_ga_server_refuses_beta_shaped_update(drive):
    d = drive()
    out = d.send(BETA_UPDATE)
    assert [e["error"]["code"] for e in out] == ["beta_api_shape_disabled"]
    assert d.s.close_request == (4000, "beta_api_shape_disabled")
    assert d.send(ga_update()) == []


def test_auto_dialect(drive):
    # header -> beta from the start
    d = drive(dialect="auto", beta_header=True)
    assert d.s.dialect == "beta"
    s = d.events[0]["session"]
    assert "type" not in s and s["input_audio_format"] == "pcm16"
    # no header: GA, until a beta-shaped first update switches to beta
    d = drive(Behaviour(think=ThinkTime("fixed", 0), seed=22), dialect="auto")
    created = d.events[0]["session"]
    assert created["type"] == "realtime"
    out = d.send(BETA_UPDATE)
    assert d.types(out) == ["session.updated"] and d.s.dialect == "beta"
    s = out[0]["session"]
    assert "type" not in s and "audio" not in s
    assert s["id"] == created["id"] and s["input_audio_format"] == "g711_ulaw"
    assert d.s.close_request is None
    greet(d)
    d.settle()
    assert "response.audio.delta" in d.types() and "response.output_audio.delta" not in d.types()
    # once audio flowed, a beta-shaped update is just an invalid GA update
    d = drive(dialect="auto")
    configure(d)
    d.append(sil(100))
    out = d.send(BETA_UPDATE)
    assert d.types(out) == ["error"] and d.s.dialect == "ga" and d.s.close_request is None


# ============================================================ 11. invalid client events


def test_invalid_client_events_then_a_turn_still_works(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 50), seed=23))
    configure(d)
    cases: list[tuple[str | bytes, str, str | None, str | None]] = [
        ("not json", "invalid_json", None, None),
        (b"\x00\x01binary", "invalid_event", None, None),
        ("[1, 2]", "invalid_event", None, None),
        ('{"event_id": "e_notype"}', "invalid_event", "e_notype", None),
        ('{"type": "nope", "event_id": "e_unknown"}', "invalid_value", "e_unknown", "type"),
        ('{"type": "conversation.item.truncate", "event_id": "e_missing", "content_index": 0, "audio_end_ms": 5}',
         "missing_required_parameter", "e_missing", "item_id"),
        ('{"type": "conversation.item.truncate", "event_id": "e_type", "item_id": "x", "content_index": 0,'
         ' "audio_end_ms": "5"}', "invalid_type", "e_type", "audio_end_ms"),
        ('{"type": "input_audio_buffer.append", "event_id": "e_b64", "audio": "!!!not base64"}',
         "invalid_event", "e_b64", "audio"),
        ('{"type": "input_audio_buffer.append", "event_id": "e_noaudio"}', "missing_required_parameter",
         "e_noaudio", "audio"),
        ('{"type": "input_audio_buffer.append", "event_id": "e_int", "audio": 5}', "invalid_type", "e_int", "audio"),
        ('{"type": "response.create", "event_id": "e_extra", "bogus": true}', "unknown_parameter", "e_extra", "bogus"),
        ('{"type": "conversation.item.delete", "event_id": "e_del", "item_id": "item_nope"}', "item_not_found",
         "e_del", "item_id"),
    ]
    for raw, code, eid, param in cases:
        out = d.send(raw)
        assert d.types(out) == ["error"], (raw, out)
        e = out[0]["error"]
        assert (e["type"], e["code"], e["event_id"], e["param"]) == ("invalid_request_error", code, eid, param), raw
        assert e["message"]
    assert d.errors()[0]["message"] == "Invalid event: failed to parse JSON value."
    assert d.errors()[1]["message"] == "Expected a text WebSocket message; binary frames are not supported."
    assert d.errors()[3]["message"] == "The 'type' field is missing."
    assert d.errors()[4]["message"].startswith("Invalid value: 'nope'. Supported values are: 'session.update', ")
    assert d.errors()[5]["message"] == "Missing required parameter: 'item_id'."
    assert d.errors()[6]["message"] == ("Invalid type for 'audio_end_ms': expected an integer, "
                                        "but got a string instead.")
    assert len(d.s.errors_sent) == len(cases)
    assert d.s.counts["appends"] == 0 and d.s.order == []
    # still fully working
    d.append(ulaw("caller_stop") + sil(800))
    d.settle()
    assert d.one("response.done")["response"]["status"] == "completed"
    assert d.s.turns[0]["heard"] == "caller_stop"
