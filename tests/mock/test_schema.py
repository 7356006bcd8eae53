"""The mock's dialect layer: ids, event names, error events, and validation with the SDK's types.

Every example of protocols.md 2.3 (client) and 2.4 (server) is copied here as a
dict and must validate in its dialect; malformed client events must get the
real server's error, text for text (protocols.md 2.2-2.4, live captures).
"""

from __future__ import annotations

import copy
import random

import orjson
import pytest
from callsim.simulator.mock import errors, schema
from callsim.simulator.mock.dialect import BETA_HEADER, NAMES, looks_beta
from callsim.simulator.mock.ids import ID_RE, new_id
from callsim.simulator.mock.schema import (
    ClientEventError,
    client_event_names,
    client_event_type,
    parse_client_event,
    server_event_names,
    validate_server_event,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types import realtime as ga_types
from openai.types.beta import realtime as beta_types
from pydantic import ValidationError


def dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()


def err_of(result: object) -> dict:
    assert isinstance(result, ClientEventError), result
    assert set(result.error) == {"type", "error"} and result.error["type"] == "error"
    return result.error["error"]


def parse_ok(dialect: str, event: dict) -> tuple[dict, object]:
    result = parse_client_event(dialect, dumps(event))  # type: ignore[arg-type]
    assert not isinstance(result, ClientEventError), result.error
    return result


# ====================================================================== ids


@pytest.mark.parametrize("prefix", ["event", "sess", "conv", "resp", "item", "call"])
def test_new_id_shape(prefix: str) -> None:
    value = new_id(prefix)
    assert ID_RE.match(value) and value.startswith(prefix + "_") and len(value) == len(prefix) + 22


def test_new_id_seeded_and_checked() -> None:
    assert new_id("event", random.Random(7)) == new_id("event", random.Random(7))
    assert new_id("event", random.Random(7)) != new_id("event", random.Random(8))
    assert ID_RE.match("event_C9G5RJeJ2gF77mV7f2B1j") and ID_RE.match("sess_C9G5QPteg4UIbotdKLoYQ")
    with pytest.raises(ValueError):
        new_id("msg")


# ====================================================================== dialect table


def test_event_names_are_in_each_dialects_server_union() -> None:
    for dialect, names in NAMES.items():
        for field in ("audio_delta", "audio_done", "transcript_delta", "transcript_done", "text_delta",
                      "text_done", "item_created", "item_done"):
            name = getattr(names, field)
            if name is not None:
                assert name in server_event_names(dialect), (dialect, name)  # type: ignore[arg-type]
    assert NAMES["ga"].audio_delta == "response.output_audio.delta"
    assert NAMES["beta"].audio_delta == "response.audio.delta"
    assert NAMES["ga"].item_created == "conversation.item.added" and NAMES["ga"].item_done == "conversation.item.done"
    assert NAMES["beta"].item_created == "conversation.item.created" and NAMES["beta"].item_done is None
    assert (NAMES["ga"].output_audio_content_type, NAMES["beta"].output_audio_content_type) == ("output_audio", "audio")
    assert NAMES["ga"].audio_part_type == NAMES["beta"].audio_part_type == "audio"
    assert NAMES["ga"].input_audio_content_type == NAMES["beta"].input_audio_content_type == "input_audio"
    assert BETA_HEADER == ("openai-beta", "realtime=v1")


def test_ga_only_names_are_not_beta_and_vice_versa() -> None:
    assert "response.output_audio.delta" not in server_event_names("beta")
    assert "conversation.item.added" not in server_event_names("beta")
    assert "response.audio.delta" not in server_event_names("ga")


def test_content_types_from_the_table_validate() -> None:
    for dialect, names in NAMES.items():
        part = {"type": "response.content_part.added", "event_id": "event_1", "response_id": "resp_1",
                "item_id": "item_1", "output_index": 0, "content_index": 0,
                "part": {"type": names.audio_part_type, "transcript": ""}}
        validate_server_event(dialect, part)  # type: ignore[arg-type]
        item = {"id": "item_1", "object": "realtime.item", "type": "message", "status": "completed",
                "role": "assistant", "content": [{"type": names.output_audio_content_type, "transcript": "Hi"}]}
        added = {"type": "response.output_item.added", "event_id": "event_2", "response_id": "resp_1",
                 "output_index": 0, "item": item}
        validate_server_event(dialect, added)  # type: ignore[arg-type]
        user = {"type": "conversation.item.create",
                "item": {"type": "message", "role": "user",
                         "content": [{"type": names.input_audio_content_type, "audio": "AAAA"}]}}
        parse_ok(dialect, user)




@pytest.mark.parametrize("key", ["input_audio_format", "output_audio_format", "modalities", "voice",
                                 "turn_detection", "input_audio_transcription", "temperature",
                                 "max_response_output_tokens"])
def test_looks_beta_per_key(key: str) -> None:
    assert looks_beta({key: None})
    assert looks_beta({"type": "session.update", "session": {key: None}})
    assert not looks_beta({"type": "realtime", key: None})  # GA with a stray key: unknown_parameter instead


def test_looks_beta_negatives() -> None:
    assert not looks_beta({"type": "session.update", "session": {"type": "realtime", "audio": {}}})
    assert not looks_beta({"instructions": "hi", "tools": []})  # shared keys only
    assert not looks_beta({"type": "session.update", "session": "nope"})
    assert not looks_beta({})


# ====================================================================== errors module


def test_error_builders_exact() -> None:
    assert errors.error_event("m", code="c", param="p", event_id="e") == {
        "type": "error",
        "error": {"type": "invalid_request_error", "code": "c", "message": "m", "param": "p", "event_id": "e"},
    }
    assert errors.beta_shape_disabled()["error"] == {
        "type": "invalid_request_error", "code": "beta_api_shape_disabled",
        "message": "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.",
        "param": None, "event_id": None}
    e = errors.commit_empty(0, "evt_1")["error"]
    assert e["code"] == "input_audio_buffer_commit_empty" and e["event_id"] == "evt_1"
    assert e["message"] == ("Error committing input audio buffer: buffer too small. Expected at least 100ms "
                            "of audio, but buffer only has 0.00ms of audio.")
    assert errors.commit_empty(62.5, None)["error"]["message"].endswith("only has 62.50ms of audio.")
    e = errors.already_active_response("resp_X", "e2")["error"]
    assert (e["code"], e["message"]) == ("conversation_already_has_active_response",
                                         "Conversation already has an active response in progress: resp_X. "
                                         "Wait until the response is finished before creating a new one.")
    e = errors.cancel_not_active("e3")["error"]
    assert (e["code"], e["message"], e["event_id"]) == ("response_cancel_not_active",
                                                        "Cancellation failed: no active response found", "e3")
    e = errors.truncate_too_long(9800, 11579, None)["error"]
    assert e["message"] == "Audio content of 9800ms is already shorter than 11579ms"
    assert e["type"] == "invalid_request_error" and e["code"] == "invalid_value"  # code unconfirmed
    e = errors.unsupported_content_type("e4")["error"]
    assert (e["code"], e["message"]) == ("unsupported_content_type", "Only model output audio messages can be truncated")
    e = errors.item_not_found("item_9", "e5", "previous_item_id")["error"]
    assert (e["code"], e["param"], e["event_id"]) == ("item_not_found", "previous_item_id", "e5")
    assert "item_9" in e["message"]
    e = errors.invalid_event("Bad.", "e6", "x")["error"]
    assert (e["code"], e["message"], e["param"], e["event_id"]) == ("invalid_event", "Bad.", "x", "e6")
    e = errors.session_expired()["error"]
    assert (e["code"], e["message"]) == ("session_expired", "Your session hit the maximum duration of 60 minutes.")
    e = errors.server_error()["error"]
    assert (e["type"], e["code"], e["param"]) == ("server_error", None, None)
    assert e["message"] == "The server had an error while processing your request. Sorry about that!"
    assert errors.server_error("boom")["error"]["message"] == "boom"


def test_every_error_builder_validates_as_a_server_error_event() -> None:
    built = [errors.beta_shape_disabled(), errors.commit_empty(1.5, "e"), errors.already_active_response("r", None),
             errors.cancel_not_active(None), errors.truncate_too_long(1, 2, "e"), errors.unsupported_content_type(None),
             errors.item_not_found("i", None, "item_id"), errors.invalid_event("m", None), errors.session_expired(),
             errors.server_error(), errors.binary_frame(), errors.invalid_json(), errors.missing_type("e"),
             errors.cannot_update_voice("e"), errors.unknown_parameter("session.x", None),
             errors.missing_required_parameter("session.type", None),
             errors.out_of_range("session.temperature", 0.6, 0.2, below=True, integer=False)]
    for dialect in ("ga", "beta"):
        for ev in built:
            assert "event_id" not in ev  # the session adds the server event_id
            validate_server_event(dialect, {"event_id": "event_1", **ev})  # type: ignore[arg-type]


def test_supported_values_wording() -> None:
    assert errors.supported_values(["a"]) == "'a'"
    assert errors.supported_values(["a", "b"]) == "'a' and 'b'"
    assert errors.supported_values(["a", "b", "c"]) == "'a', 'b', and 'c'"


# ====================================================================== protocols.md 2.3 client examples

TOOLS = [{"type": "function", "name": "get_weather", "description": "…",
          "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}]

BETA_SESSION_UPDATE = {
    "type": "session.update",
    "session": {"modalities": ["text", "audio"], "instructions": "You are a helpful assistant.",
                "voice": "alloy", "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw",
                "input_audio_transcription": {"model": "whisper-1"},
                "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                   "silence_duration_ms": 500, "create_response": True, "interrupt_response": True},
                "tools": TOOLS, "tool_choice": "auto", "temperature": 0.8, "max_response_output_tokens": "inf"}}

GA_SESSION_UPDATE = {
    "type": "session.update",
    "session": {"type": "realtime", "model": "gpt-realtime", "output_modalities": ["audio"],
                "instructions": "You are a helpful assistant.",
                "audio": {"input": {"format": {"type": "audio/pcmu"},
                                    "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                                    "noise_reduction": None,
                                    "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                                       "silence_duration_ms": 500, "create_response": True,
                                                       "interrupt_response": True}},
                          "output": {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.0}},
                "tools": [{"type": "function", "name": "get_weather", "description": "…",
                           "parameters": {"type": "object", "properties": {}}}],
                "tool_choice": "auto", "max_output_tokens": "inf"}}

COMMON_CLIENT = [
    {"type": "input_audio_buffer.append", "audio": "//79/A=="},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {"type": "conversation.item.create", "previous_item_id": None,
     "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Greet the caller."}]}},
    {"type": "conversation.item.create",
     "item": {"type": "function_call_output", "call_id": "call_001", "output": "{\"temp\": 21}"}},
    {"type": "conversation.item.truncate", "item_id": "item_002", "content_index": 0, "audio_end_ms": 1500},
    {"type": "response.create"},
    {"type": "response.cancel"},
    {"type": "response.cancel", "response_id": "resp_001"},
]
GA_RESPONSE_CREATE = {
    "type": "response.create",
    "response": {"instructions": "Say goodbye.", "conversation": "auto", "output_modalities": ["audio"],
                 "tool_choice": "auto", "tools": [], "metadata": {"k": "v"},
                 "input": [{"type": "item_reference", "id": "item_12345"}]}}
BETA_RESPONSE_CREATE = {  # the same overrides in beta field names (protocols.md 2.3 list)
    "type": "response.create",
    "response": {"instructions": "Say goodbye.", "conversation": "auto", "modalities": ["text", "audio"],
                 "voice": "alloy", "output_audio_format": "g711_ulaw", "tool_choice": "auto", "tools": [],
                 "temperature": 0.8, "max_response_output_tokens": "inf", "metadata": {"k": "v"}}}

GA_CLIENT = [GA_SESSION_UPDATE, *COMMON_CLIENT, GA_RESPONSE_CREATE]
BETA_CLIENT = [BETA_SESSION_UPDATE, *COMMON_CLIENT, BETA_RESPONSE_CREATE]


@pytest.mark.parametrize("event", GA_CLIENT, ids=lambda e: e["type"])
def test_ga_client_examples_validate(event: dict) -> None:
    raw, model = parse_ok("ga", event)
    assert raw == event
    if event["type"] != "input_audio_buffer.append":
        assert model.type == event["type"]  # type: ignore[attr-defined]
        assert isinstance(model, ga_types.RealtimeClientEvent.__origin__.__args__)  # type: ignore[attr-defined]


@pytest.mark.parametrize("event", BETA_CLIENT, ids=lambda e: e["type"])
def test_beta_client_examples_validate(event: dict) -> None:
    raw, model = parse_ok("beta", event)
    assert raw == event
    if event["type"] != "input_audio_buffer.append":
        assert isinstance(model, beta_types.RealtimeClientEvent.__origin__.__args__)  # type: ignore[attr-defined]


def test_slow_path_returns_the_sdk_model_for_append() -> None:
    ev = {"type": "input_audio_buffer.append", "audio": "AAAA", "event_id": "c1"}
    raw, model = schema._parse("ga", dumps(ev), fast=False)  # type: ignore[misc]
    assert raw == ev and model.audio == "AAAA" and model.event_id == "c1"  # type: ignore[attr-defined]
    raw, model = parse_client_event("ga", dumps(ev))  # type: ignore[misc]
    assert raw == ev and model is None  # fast path: no pydantic


def test_dialect_specific_shapes_are_rejected_in_the_other_dialect() -> None:
    e = err_of(parse_client_event("beta", dumps(GA_RESPONSE_CREATE)))
    assert (e["code"], e["param"]) == ("unknown_parameter", "response.output_modalities")
    e = err_of(parse_client_event("ga", dumps(BETA_RESPONSE_CREATE)))
    assert (e["code"], e["message"]) == ("unknown_parameter", "Unknown parameter: 'response.modalities'.")
    e = err_of(parse_client_event("beta", dumps(GA_SESSION_UPDATE)))
    assert e["message"] == "Unknown parameter: 'session.type'."
    assert parse_ok("beta", {"type": "transcription_session.update", "session": {}})
    e = err_of(parse_client_event("ga", dumps({"type": "transcription_session.update", "session": {}})))
    assert (e["code"], e["param"]) == ("invalid_value", "type")


def test_discriminated_union_is_strict_and_complete() -> None:
    for dialect in ("ga", "beta"):
        names = client_event_names(dialect)  # type: ignore[arg-type]
        assert len(set(names)) == len(names)
        assert names[0] == "session.update" and "input_audio_buffer.append" in names
        adapter = client_event_type(dialect)  # type: ignore[arg-type]
        assert adapter is client_event_type(dialect)  # type: ignore[arg-type]  # cached
        with pytest.raises(ValidationError):
            adapter.validate_python({"type": "nope"})


# ====================================================================== client errors, text for text

SUPPORTED_GA = ("'session.update', 'input_audio_buffer.append', 'input_audio_buffer.commit', "
                "'input_audio_buffer.clear', 'conversation.item.create', 'conversation.item.truncate', "
                "'conversation.item.delete', 'conversation.item.retrieve', 'response.create', "
                "'response.cancel', and 'output_audio_buffer.clear'")


def test_unknown_type() -> None:
    e = err_of(parse_client_event("ga", '{"type": "nope", "event_id": "evt_7"}'))
    assert e == {"type": "invalid_request_error", "code": "invalid_value",
                 "message": f"Invalid value: 'nope'. Supported values are: {SUPPORTED_GA}.",
                 "param": "type", "event_id": "evt_7"}
    e = err_of(parse_client_event("beta", '{"type": "ping"}'))
    assert e["message"].startswith("Invalid value: 'ping'. Supported values are: 'session.update', "
                                   "'transcription_session.update', 'input_audio_buffer.append',")
    assert e["event_id"] is None


def test_missing_type() -> None:
    e = err_of(parse_client_event("ga", '{"event_id": "event_567", "audio": "AAAA"}'))
    assert e == {"type": "invalid_request_error", "code": "invalid_event",
                 "message": "The 'type' field is missing.", "param": None, "event_id": "event_567"}


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_bad_frames(dialect: str) -> None:
    e = err_of(parse_client_event(dialect, "not json"))  # type: ignore[arg-type]
    assert (e["code"], e["message"], e["param"], e["event_id"]) == (
        "invalid_json", "Invalid event: failed to parse JSON value.", None, None)
    e = err_of(parse_client_event(dialect, b'{"type": "input_audio_buffer.commit"}'))  # type: ignore[arg-type]
    assert (e["code"], e["message"]) == ("invalid_event",
                                         "Expected a text WebSocket message; binary frames are not supported.")
    assert err_of(parse_client_event(dialect, bytearray(b"{}")))["code"] == "invalid_event"  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parse_client_event(dialect, 5)  # type: ignore[arg-type]

    class Text(str):
        pass

    assert parse_ok(dialect, {"type": "input_audio_buffer.clear"})
    assert not isinstance(parse_client_event(dialect, Text('{"type": "input_audio_buffer.clear"}')),  # type: ignore[arg-type]
                          ClientEventError)
    e = err_of(parse_client_event(dialect, "[1, 2]"))  # type: ignore[arg-type]
    assert e["code"] == "invalid_event" and e["message"].endswith("but got an array instead.")
    e = err_of(parse_client_event(dialect, '{"type": 5}'))  # type: ignore[arg-type]
    assert (e["code"], e["param"]) == ("invalid_type", "type")


CASES = [  # (dialect, event, code, message, param)
    ("ga", {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0},
     "missing_required_parameter", "Missing required parameter: 'audio_end_ms'.", "audio_end_ms"),
    ("ga", {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "c"}},
     "missing_required_parameter", "Missing required parameter: 'item.output'.", "item.output"),
    ("ga", {"type": "conversation.item.create", "item": {"type": "message", "role": "user"}},
     "missing_required_parameter", "Missing required parameter: 'item.content'.", "item.content"),
    ("ga", {"type": "conversation.item.truncate", "item_id": "i", "content_index": "0", "audio_end_ms": 10},
     "invalid_type", "Invalid type for 'content_index': expected an integer, but got a string instead.",
     "content_index"),
    ("ga", {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": 1.5},
     "invalid_type", "Invalid type for 'audio_end_ms': expected an integer, but got a decimal instead.",
     "audio_end_ms"),
    ("ga", {"type": "input_audio_buffer.append", "audio": 5},
     "invalid_type", "Invalid type for 'audio': expected a string, but got an integer instead.", "audio"),
    ("ga", {"type": "input_audio_buffer.append"},
     "missing_required_parameter", "Missing required parameter: 'audio'.", "audio"),
    ("ga", {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"format": "pcm16"}}}},
     "invalid_type",
     "Invalid type for 'session.audio.input.format': expected an object, but got a string instead.",
     "session.audio.input.format"),
    ("ga", {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"format": "g711_ulaw"}}}},
     "invalid_type",
     "Invalid type for 'session.audio.output.format': expected an object, but got a string instead.",
     "session.audio.output.format"),
    ("ga", {"type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}},
     "integer_below_min_value",
     "Invalid 'session.audio.input.format.rate': integer below minimum value. Expected a value >= 24000, "
     "but got 16000 instead.", "session.audio.input.format.rate"),
    ("ga", {"type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "vad"}}}}},
     "invalid_value", "Invalid value: 'vad'. Supported values are: 'server_vad' and 'semantic_vad'.",
     "session.audio.input.turn_detection.type"),
    ("ga", {"type": "session.update", "session": {"type": "realtime",
            "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": "high"}}}}},
     "invalid_type", "Invalid type for 'session.audio.input.turn_detection.threshold': expected a decimal, "
     "but got a string instead.", "session.audio.input.turn_detection.threshold"),
    ("ga", {"type": "session.update", "session": {"type": "conversation"}},
     "invalid_value", "Invalid value: 'conversation'. Supported values are: 'realtime' and 'transcription'.",
     "session.type"),
    ("ga", {"type": "session.update", "session": {"type": "realtime", "tool_choice": "sometimes"}},
     "invalid_value", "Invalid value: 'sometimes'. Supported values are: 'none', 'auto', and 'required'.",
     "session.tool_choice"),
    ("ga", {"type": "session.update", "session": "realtime"},
     "invalid_type", "Invalid type for 'session': expected an object, but got a string instead.", "session"),
    ("ga", {"type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "text", "text": "hi"}]}},
     "invalid_value", "Invalid value: 'text'. Supported values are: 'input_text', 'input_audio', and 'input_image'.",
     "item.content[0].type"),
    ("ga", {"type": "session.update", "session": {"type": "realtime", "bogus_field": 1}},
     "unknown_parameter", "Unknown parameter: 'session.bogus_field'.", "session.bogus_field"),
    ("ga", {"type": "input_audio_buffer.commit", "audio": "AAAA"},
     "unknown_parameter", "Unknown parameter: 'audio'.", "audio"),
    ("ga", {"type": "response.create", "response": {"tools": [{"type": "function", "name": "f", "strict": True}]}},
     "unknown_parameter", "Unknown parameter: 'response.tools[0].strict'.", "response.tools[0].strict"),
    ("ga", {"type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x", "lang": "en"}]}},
     "unknown_parameter", "Unknown parameter: 'item.content[0].lang'.", "item.content[0].lang"),
    ("beta", {"type": "session.update", "session": {"input_audio_format": "mp3"}},
     "invalid_value", "Invalid value: 'mp3'. Supported values are: 'pcm16', 'g711_ulaw', and 'g711_alaw'.",
     "session.input_audio_format"),
    ("beta", {"type": "session.update", "session": {"voice": "alloy", "speeed": 1}},
     "unknown_parameter", "Unknown parameter: 'session.speeed'.", "session.speeed"),
    ("beta", {"type": "conversation.item.truncate", "item_id": "i", "audio_end_ms": 5},
     "missing_required_parameter", "Missing required parameter: 'content_index'.", "content_index"),
]


@pytest.mark.parametrize("dialect,event,code,message,param", CASES, ids=[c[3][:60] for c in CASES])
def test_client_errors_exact(dialect: str, event: dict, code: str, message: str, param: str) -> None:
    for eid in (None, "client_evt_1"):
        ev = dict(event, event_id=eid) if eid else event
        e = err_of(parse_client_event(dialect, dumps(ev)))  # type: ignore[arg-type]
        assert e == {"type": "invalid_request_error", "code": code, "message": message, "param": param,
                     "event_id": eid}


def test_beta_shaped_update_on_ga() -> None:
    flat = {"type": "session.update", "event_id": "c9", "session": copy.deepcopy(BETA_SESSION_UPDATE["session"])}
    assert looks_beta(flat) and looks_beta(flat["session"])
    e = err_of(parse_client_event("ga", dumps(flat)))
    assert e == {"type": "invalid_request_error", "code": "missing_required_parameter",
                 "message": "Missing required parameter: 'session.type'.", "param": "session.type", "event_id": "c9"}
    typed = {"type": "session.update", "session": {"type": "realtime", "input_audio_format": "g711_ulaw"}}
    assert not looks_beta(typed)
    e = err_of(parse_client_event("ga", dumps(typed)))
    assert (e["code"], e["message"], e["param"]) == (
        "unknown_parameter", "Unknown parameter: 'session.input_audio_format'.", "session.input_audio_format")
    # And the same beta update is fine where beta is spoken.
    parse_ok("beta", flat)


def test_non_string_event_id_is_not_echoed() -> None:
    e = err_of(parse_client_event("ga", '{"type": "nope", "event_id": 12}'))
    assert e["event_id"] is None
    e = err_of(parse_client_event("ga", '{"type": "response.cancel", "event_id": 12}'))
    assert (e["code"], e["param"], e["event_id"]) == ("invalid_type", "event_id", None)


# ====================================================================== append fast path == slow path

_JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False, allow_infinity=False)
                     | st.text(max_size=5), lambda inner: st.lists(inner, max_size=2)
                     | st.dictionaries(st.text(max_size=4), inner, max_size=2), max_leaves=4)
_MISSING = object()


@st.composite
def _append_events(draw: st.DrawFn) -> str:
    ev: dict = {}
    etype = draw(st.sampled_from(["input_audio_buffer.append"] * 4 + ["input_audio_buffer.commit", "nope", _MISSING]))
    if etype is not _MISSING:
        ev["type"] = etype
    audio = draw(st.sampled_from([_MISSING, "text", "json"]) if draw(st.booleans()) else st.just("text"))
    if audio == "text":
        ev["audio"] = draw(st.text(alphabet="AZaz09+/=", max_size=12))
    elif audio == "json":
        ev["audio"] = draw(_JSON)
    eid = draw(st.sampled_from([_MISSING, None, "str", "json"]))
    if eid is None:
        ev["event_id"] = None
    elif eid == "str":
        ev["event_id"] = draw(st.text(max_size=6))
    elif eid == "json":
        ev["event_id"] = draw(_JSON)
    if draw(st.integers(0, 4)) == 0:
        ev[draw(st.sampled_from(["foo", "audio_format", "item_id"]))] = draw(_JSON)
    items = list(ev.items())
    order = draw(st.permutations(range(len(items))))
    return dumps(dict(items[i] for i in order))


@settings(max_examples=400, deadline=None)
@given(raw=_append_events(), dialect=st.sampled_from(["ga", "beta"]))
def test_append_fast_path_matches_slow_path(raw: str, dialect: str) -> None:
    fast = schema._parse(dialect, raw, fast=True)  # type: ignore[arg-type]
    slow = schema._parse(dialect, raw, fast=False)  # type: ignore[arg-type]
    if isinstance(slow, ClientEventError):
        assert fast == slow
        return
    assert not isinstance(fast, ClientEventError)
    assert fast[0] == slow[0] == orjson.loads(raw)
    if fast[1] is not None:  # slow path taken for both (e.g. not an append)
        assert fast[1] == slow[1]
    else:
        model = slow[1]
        assert model.type == "input_audio_buffer.append"  # type: ignore[attr-defined]
        assert model.model_dump(exclude_unset=True) == fast[0]  # type: ignore[attr-defined]


# ====================================================================== protocols.md 2.4 server examples

SESSION_CREATED_GA = {
    "type": "session.created", "event_id": "event_C9G5RJeJ2gF77mV7f2B1j",
    "session": {"type": "realtime", "object": "realtime.session", "id": "sess_C9G5QPteg4UIbotdKLoYQ",
                "model": "gpt-realtime-2025-08-28", "output_modalities": ["audio"], "instructions": "…default…",
                "tools": [], "tool_choice": "auto", "max_output_tokens": "inf", "tracing": None, "prompt": None,
                "expires_at": 1756324625, "include": None,
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}, "transcription": None,
                                    "noise_reduction": None,
                                    "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                                       "prefix_padding_ms": 300, "silence_duration_ms": 200,
                                                       "idle_timeout_ms": None, "create_response": True,
                                                       "interrupt_response": True}},
                          "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1}}}}
SESSION_CREATED_BETA = {
    "type": "session.created", "event_id": "event_1234",
    "session": {"id": "sess_001", "object": "realtime.session", "model": "gpt-4o-realtime-preview-2024-12-17",
                "modalities": ["text", "audio"], "instructions": "…default…", "voice": "sage",
                "input_audio_format": "pcm16", "output_audio_format": "pcm16", "input_audio_transcription": None,
                "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                   "silence_duration_ms": 200},
                "tools": [], "tool_choice": "auto", "temperature": 0.8, "max_response_output_tokens": "inf"}}
ERROR = {"type": "error", "event_id": "event_890",
         "error": {"type": "invalid_request_error", "code": "invalid_event",
                   "message": "The 'type' field is missing.", "param": None, "event_id": "event_567"}}
VAD = [
    {"type": "input_audio_buffer.speech_started", "event_id": "event_1516", "audio_start_ms": 1000, "item_id": "msg_003"},
    {"type": "input_audio_buffer.speech_stopped", "event_id": "event_1718", "audio_end_ms": 2000, "item_id": "msg_003"},
    {"type": "input_audio_buffer.committed", "event_id": "event_1121", "previous_item_id": "msg_001", "item_id": "msg_002"},
    {"type": "input_audio_buffer.cleared", "event_id": "event_1314"},
]
TIMEOUT_TRIGGERED = {"type": "input_audio_buffer.timeout_triggered", "event_id": "event_…", "audio_start_ms": 13216,
                     "audio_end_ms": 19232, "item_id": "item_…"}
ITEM_CREATED = {"type": "conversation.item.created", "event_id": "event_1920", "previous_item_id": "msg_002",
                "item": {"id": "msg_003", "object": "realtime.item", "type": "message", "status": "completed",
                         "role": "user", "content": []}}
ITEM_ADDED = {"type": "conversation.item.added", "event_id": "event_C9G8pjSJCfRNEhMEnYAVy", "previous_item_id": None,
              "item": {"id": "item_C9G8pGVKYnaZu8PH5YQ9O", "type": "message", "status": "completed", "role": "user",
                       "content": [{"type": "input_text", "text": "hi"}]}}
ITEM_DONE = {"type": "conversation.item.done", "event_id": "event_CCXLgMZPo3qioWCeQa4WH",
             "previous_item_id": "item_CCXLecNJVIVR2HUy3ABLj",
             "item": {"id": "item_CCXLfxmM5sXVJVz4mCa2S", "type": "message", "status": "completed", "role": "assistant",
                      "content": [{"type": "output_audio", "transcript": "Oh, I can hear you loud and clear! …"}]}}
ITEM_TRUNCATED = {"type": "conversation.item.truncated", "event_id": "event_2526", "item_id": "msg_004",
                  "content_index": 0, "audio_end_ms": 1500}
TRANSCRIPTION = [
    {"type": "conversation.item.input_audio_transcription.delta", "event_id": "event_…", "item_id": "item_…",
     "content_index": 0, "delta": "Hey", "obfuscation": "aLxx0jTEciOGe"},
    {"type": "conversation.item.input_audio_transcription.completed", "event_id": "event_…", "item_id": "item_…",
     "content_index": 0, "transcript": "Hey, can you hear me?",
     "usage": {"type": "tokens", "total_tokens": 22, "input_tokens": 13,
               "input_token_details": {"text_tokens": 0, "audio_tokens": 13}, "output_tokens": 9}},
]
RESPONSE_START = [
    {"type": "response.created", "event_id": "event_2930",
     "response": {"id": "resp_001", "object": "realtime.response", "status": "in_progress",
                  "status_details": None, "output": [], "usage": None}},
    {"type": "response.output_item.added", "event_id": "event_3334", "response_id": "resp_001", "output_index": 0,
     "item": {"id": "msg_007", "object": "realtime.item", "type": "message", "status": "in_progress",
              "role": "assistant", "content": []}},
    {"type": "response.content_part.added", "event_id": "event_3738", "response_id": "resp_001",
     "item_id": "msg_007", "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}},
]
DELTA_FIELDS = {"event_id": "event_4950", "response_id": "resp_001", "item_id": "msg_008", "output_index": 0,
                "content_index": 0}
AUDIO_GA = [
    {"type": "response.output_audio.delta", **DELTA_FIELDS, "delta": "<base64 audio>"},
    {"type": "response.output_audio.done", **DELTA_FIELDS},
    {"type": "response.output_audio_transcript.delta", **DELTA_FIELDS, "delta": "Hello, how can I a"},
    {"type": "response.output_audio_transcript.done", **DELTA_FIELDS, "transcript": "Hello, how can I assist you today?"},
    {"type": "response.output_text.delta", **DELTA_FIELDS, "delta": "Hi"},
    {"type": "response.output_text.done", **DELTA_FIELDS, "text": "Hi there, friend!"},
]
AUDIO_BETA = [
    {"type": "response.audio.delta", **DELTA_FIELDS, "delta": "<base64 audio>"},
    {"type": "response.audio.done", **DELTA_FIELDS},
    {"type": "response.audio_transcript.delta", **DELTA_FIELDS, "delta": "Hello, how can I a"},
    {"type": "response.audio_transcript.done", **DELTA_FIELDS, "transcript": "Hello, how can I assist you today?"},
    {"type": "response.text.delta", **DELTA_FIELDS, "delta": "Hi"},
    {"type": "response.text.done", **DELTA_FIELDS, "text": "Hi there, friend!"},
]
FUNCTION_CALL = [
    {"type": "response.output_item.added", "response_id": "resp_002", "output_index": 0,
     "item": {"id": "fc_001", "type": "function_call", "status": "in_progress", "name": "get_weather",
              "call_id": "call_001", "arguments": ""}, "event_id": "event_…"},
    {"type": "response.function_call_arguments.delta", "event_id": "event_5354", "response_id": "resp_002",
     "item_id": "fc_001", "output_index": 0, "call_id": "call_001", "delta": "{\"location\": \"San\""},
]
ARGS_DONE_GA = {"type": "response.function_call_arguments.done", "event_id": "event_5556", "response_id": "resp_002",
                "item_id": "fc_001", "output_index": 0, "call_id": "call_001", "name": "get_weather",
                "arguments": "{\"location\": \"San Francisco\"}"}
ARGS_DONE_BETA = {k: v for k, v in ARGS_DONE_GA.items() if k != "name"}  # beta types have no `name`
USAGE = {"total_tokens": 253, "input_tokens": 132, "output_tokens": 121,
         "input_token_details": {"text_tokens": 119, "audio_tokens": 13, "image_tokens": 0, "cached_tokens": 64,
                                 "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0, "image_tokens": 0}},
         "output_token_details": {"text_tokens": 30, "audio_tokens": 91}}
RESPONSE_DONE_GA = {
    "type": "response.done", "event_id": "event_CCXHxcMy86rrKhBLDdqCh",
    "response": {"object": "realtime.response", "id": "resp_CCXHw0UJld10EzIUXQCNh", "status": "completed",
                 "status_details": None, "conversation_id": "conv_CCXHsurMKcaVxIZvaCI5m",
                 "output": [{"id": "item_CCXHwGjjDUfOXbiySlK7i", "type": "message", "status": "completed",
                             "role": "assistant", "content": [{"type": "output_audio", "transcript": "Loud and clear! …"}]}],
                 "output_modalities": ["audio"], "max_output_tokens": "inf",
                 "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}},
                 "usage": USAGE, "metadata": None}}
RESPONSE_DONE_BETA = {
    "type": "response.done", "event_id": "event_3132",
    "response": {"id": "resp_001", "object": "realtime.response", "status": "cancelled",
                 "status_details": {"type": "cancelled", "reason": "turn_detected"},
                 "output": [{"id": "msg_008", "object": "realtime.item", "type": "message", "status": "incomplete",
                             "role": "assistant", "content": [{"type": "audio", "transcript": "Hello, how"}]}],
                 "usage": USAGE, "conversation_id": "conv_001", "modalities": ["text", "audio"], "voice": "alloy",
                 "output_audio_format": "g711_ulaw", "temperature": 0.8, "max_output_tokens": "inf",
                 "metadata": None}}
RATE_LIMITS = {"type": "rate_limits.updated", "event_id": "event_5758",
               "rate_limits": [{"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60},
                               {"name": "tokens", "limit": 50000, "remaining": 49950, "reset_seconds": 60}]}

SHARED_SERVER = [ERROR, *VAD, ITEM_CREATED, ITEM_TRUNCATED, *TRANSCRIPTION, *RESPONSE_START, *FUNCTION_CALL,
                 RATE_LIMITS]
GA_SERVER = [SESSION_CREATED_GA, *SHARED_SERVER, TIMEOUT_TRIGGERED, ITEM_ADDED, ITEM_DONE, *AUDIO_GA,
             ARGS_DONE_GA, RESPONSE_DONE_GA]
BETA_SERVER = [SESSION_CREATED_BETA, *SHARED_SERVER, *AUDIO_BETA, ARGS_DONE_BETA, RESPONSE_DONE_BETA]


@pytest.mark.parametrize("event", GA_SERVER, ids=lambda e: e["type"])
def test_ga_server_examples_validate(event: dict) -> None:
    model = validate_server_event("ga", event)
    assert model.type == event["type"] and type(model).__module__.startswith("openai.types.realtime")


@pytest.mark.parametrize("event", BETA_SERVER, ids=lambda e: e["type"])
def test_beta_server_examples_validate(event: dict) -> None:
    model = validate_server_event("beta", event)
    assert model.type == event["type"] and type(model).__module__.startswith("openai.types.beta.realtime")


@pytest.mark.parametrize("event", [*AUDIO_GA, ITEM_ADDED, ITEM_DONE, TIMEOUT_TRIGGERED], ids=lambda e: e["type"])
def test_ga_names_raise_on_beta(event: dict) -> None:
    with pytest.raises(ValueError, match="not a beta server event type"):
        validate_server_event("beta", event)


@pytest.mark.parametrize("event", AUDIO_BETA, ids=lambda e: e["type"])
def test_beta_names_raise_on_ga(event: dict) -> None:
    with pytest.raises(ValueError, match="not a ga server event type"):
        validate_server_event("ga", event)


def test_invalid_server_events_raise_validation_error() -> None:
    bad = dict(ITEM_TRUNCATED, audio_end_ms="1500")  # strict: a string is not an integer
    with pytest.raises(ValidationError):
        validate_server_event("ga", bad)
    no_id = {k: v for k, v in VAD[0].items() if k != "event_id"}
    with pytest.raises(ValidationError):
        validate_server_event("ga", no_id)
    with pytest.raises(ValueError):
        validate_server_event("ga", {"no": "type"})
    with pytest.raises(ValueError):
        validate_server_event("ga", dict(VAD[0], type="input_audio_buffer.speech_begun"))
