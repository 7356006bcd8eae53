"""Session defaults and session.update merging, both dialects (protocols.md 2.2-2.4).

Every session object the config reports is wrapped in session.created /
session.updated and validated with the SDK's server-event types.
"""

from __future__ import annotations

import copy
import random

import pytest
from callsim.simulator.mock.errors import cannot_update_voice
from callsim.simulator.mock.ids import ID_RE
from callsim.simulator.mock.schema import validate_server_event
from callsim.simulator.mock.session_config import (
    DEFAULT_INSTRUCTIONS,
    PCM16,
    PCMA,
    PCMU,
    AudioFormat,
    SessionConfig,
    TurnDetection,
)

NOW = 1756321025
GA_MODEL = "gpt-realtime-2025-08-28"
BETA_MODEL = "gpt-4o-realtime-preview-2024-12-17"


def ga() -> SessionConfig:
    return SessionConfig("ga", GA_MODEL, random.Random(1), now=NOW)


def beta() -> SessionConfig:
    return SessionConfig("beta", BETA_MODEL, random.Random(1), now=NOW)


def check(cfg: SessionConfig, kind: str = "session.updated") -> dict:
    """Wrap the session as the server would send it; validate with the SDK types."""
    event = {"type": kind, "event_id": "event_C9G5RJeJ2gF77mV7f2B1j", "session": cfg.as_dict()}
    model = validate_server_event(cfg.dialect, event)
    assert model.type == kind
    return event["session"]


def ok(cfg: SessionConfig, update: dict) -> dict:
    err = cfg.apply_update(update)
    assert err is None, err
    return check(cfg)


def error_of(cfg: SessionConfig, update: object, event_id: str | None = None) -> dict:
    before = cfg.as_dict()
    err = cfg.apply_update(update, event_id)
    assert err is not None and err["type"] == "error"
    assert cfg.as_dict() == before  # a rejected update is discarded whole
    validate_server_event(cfg.dialect, {"event_id": "event_1", **err})
    return err["error"]


# ====================================================================== formats / VAD values


def test_audio_formats() -> None:
    assert (PCM16.kind, PCM16.rate, PCM16.bytes_per_ms) == ("pcm16", 24000, 48)
    assert (PCMU.kind, PCMU.rate, PCMU.bytes_per_ms) == ("pcmu", 8000, 8)
    assert (PCMA.kind, PCMA.rate, PCMA.bytes_per_ms) == ("pcma", 8000, 8)
    assert PCM16.to_wire("ga") == {"type": "audio/pcm", "rate": 24000}
    assert PCMU.to_wire("ga") == {"type": "audio/pcmu"}
    assert PCMA.to_wire("ga") == {"type": "audio/pcma"}
    assert (PCM16.to_wire("beta"), PCMU.to_wire("beta"), PCMA.to_wire("beta")) == ("pcm16", "g711_ulaw", "g711_alaw")
    for fmt in (PCM16, PCMU, PCMA):
        assert AudioFormat.from_wire(fmt.to_wire("ga")) == fmt == AudioFormat.from_wire(fmt.to_wire("beta"))
        assert AudioFormat.from_wire(fmt) is fmt
    assert AudioFormat.from_wire({"type": "audio/pcm"}) == PCM16
    for bad in ("mp3", {"type": "audio/opus"}, {"type": "audio/pcm", "rate": 16000}, None, 5):
        with pytest.raises(ValueError):
            AudioFormat.from_wire(bad)
    with pytest.raises(ValueError):
        AudioFormat("pcmu", 16000)


def test_turn_detection_defaults_and_partial_objects() -> None:
    td = TurnDetection("server_vad")
    assert (td.threshold, td.prefix_padding_ms, td.silence_duration_ms) == (0.5, 300, 200)
    assert (td.create_response, td.interrupt_response, td.eagerness, td.idle_timeout_ms) == (True, True, "auto", None)
    assert TurnDetection.from_wire({"type": "server_vad", "silence_duration_ms": 700}) == TurnDetection(
        "server_vad", silence_duration_ms=700)
    assert TurnDetection.from_wire({"threshold": 0.7}).type == "server_vad"  # beta: type optional
    assert TurnDetection("semantic_vad", eagerness="high").to_wire("ga") == {
        "type": "semantic_vad", "eagerness": "high", "create_response": True, "interrupt_response": True}
    assert list(td.to_wire("ga")) == ["type", "threshold", "prefix_padding_ms", "silence_duration_ms",
                                      "idle_timeout_ms", "create_response", "interrupt_response"]
    assert "idle_timeout_ms" not in td.to_wire("beta")


# ====================================================================== defaults


def test_ga_defaults_exact() -> None:
    cfg = ga()
    session = check(cfg, "session.created")
    assert ID_RE.match(session["id"]) and session["id"].startswith("sess_") and session["id"] == cfg.id
    assert session == {
        "type": "realtime", "object": "realtime.session", "id": cfg.id, "model": GA_MODEL,
        "output_modalities": ["audio"], "instructions": DEFAULT_INSTRUCTIONS, "tools": [], "tool_choice": "auto",
        "max_output_tokens": "inf", "tracing": None, "truncation": "auto", "prompt": None,
        "expires_at": NOW + 3600,
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}, "transcription": None,
                            "noise_reduction": None,
                            "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                               "silence_duration_ms": 200, "idle_timeout_ms": None,
                                               "create_response": True, "interrupt_response": True}},
                  "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1}},
        "include": None,
    }
    assert DEFAULT_INSTRUCTIONS.startswith("Your knowledge cutoff is 2023-10. You are a helpful, witty")
    assert (cfg.input_format, cfg.output_format, cfg.voice) == (PCM16, PCM16, "marin")
    assert cfg.turn_detection == TurnDetection("server_vad")
    assert (cfg.transcription_enabled, cfg.output_modalities, cfg.tools) == (False, ["audio"], [])
    assert cfg.instructions == DEFAULT_INSTRUCTIONS and cfg.dialect == "ga" and cfg.audio_produced is False


def test_beta_defaults_exact() -> None:
    cfg = beta()
    session = check(cfg, "session.created")
    assert session == {
        "id": cfg.id, "object": "realtime.session", "model": BETA_MODEL, "modalities": ["text", "audio"],
        "instructions": DEFAULT_INSTRUCTIONS, "voice": "alloy", "input_audio_format": "pcm16",
        "output_audio_format": "pcm16", "input_audio_transcription": None,
        "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                           "silence_duration_ms": 200, "create_response": True, "interrupt_response": True},
        "tools": [], "tool_choice": "auto", "temperature": 0.8, "max_response_output_tokens": "inf",
    }
    assert (cfg.input_format, cfg.output_format, cfg.voice, cfg.output_modalities) == (
        PCM16, PCM16, "alloy", ["text", "audio"])


def test_ids_seeded_and_reassignable() -> None:
    assert ga().id == ga().id
    cfg = beta()
    cfg.id = "sess_AAAAAAAAAAAAAAAAAAAAA"  # the session keeps its id across a dialect switch
    assert cfg.as_dict()["id"] == "sess_AAAAAAAAAAAAAAAAAAAAA"
    assert cfg.as_dict() is not cfg.as_dict()  # copies: callers may mutate
    cfg.as_dict()["tools"].append({"x": 1})
    assert cfg.as_dict()["tools"] == []


# ====================================================================== GA updates

GA_UPDATE = {  # protocols.md 2.3 "session.update — GA"
    "type": "realtime", "model": "gpt-realtime", "output_modalities": ["audio"],
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
    "tool_choice": "auto", "max_output_tokens": "inf"}


def test_ga_protocols_example_update() -> None:
    cfg = ga()
    session = ok(cfg, copy.deepcopy(GA_UPDATE))
    assert session["model"] == GA_MODEL  # the URL fixes the model
    assert session["instructions"] == "You are a helpful assistant."
    assert session["audio"] == {
        "input": {"format": {"type": "audio/pcmu"},
                  "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en", "prompt": None},
                  "noise_reduction": None,
                  "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                     "silence_duration_ms": 500, "idle_timeout_ms": None,
                                     "create_response": True, "interrupt_response": True}},
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.0}}
    assert session["tools"] == GA_UPDATE["tools"] and session["expires_at"] == NOW + 3600
    assert (cfg.input_format, cfg.output_format) == (PCMU, PCMU)
    assert cfg.input_format.bytes_per_ms == 8
    assert cfg.turn_detection == TurnDetection("server_vad", silence_duration_ms=500)
    assert cfg.transcription_enabled and cfg.transcription == {
        "model": "gpt-4o-mini-transcribe", "language": "en", "prompt": None}
    assert cfg.tools == GA_UPDATE["tools"] and cfg.voice == "marin"


def test_ga_nested_merge_only_changes_what_is_sent() -> None:
    cfg = ga()
    ok(cfg, copy.deepcopy(GA_UPDATE))
    before = cfg.as_dict()
    session = ok(cfg, {"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcma"}}}})
    assert session["audio"]["output"] == {"format": {"type": "audio/pcma"}, "voice": "marin", "speed": 1.0}
    assert session["audio"]["input"] == before["audio"]["input"]
    assert {k: v for k, v in session.items() if k != "audio"} == {k: v for k, v in before.items() if k != "audio"}
    assert (cfg.input_format, cfg.output_format) == (PCMU, PCMA)
    # A bare {"type": "audio/pcm"} is reported with its rate, as the server does.
    session = ok(cfg, {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm"}}}})
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert cfg.input_format == PCM16
    # An empty update changes nothing.
    assert ok(cfg, {"type": "realtime"}) == cfg.as_dict()


def test_ga_turn_detection_null_partial_and_semantic() -> None:
    cfg = ga()
    ok(cfg, {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 800,
                                                                         "threshold": 0.7}}}})
    assert cfg.turn_detection == TurnDetection("server_vad", threshold=0.7, silence_duration_ms=800)
    # Partial object: unspecified fields reset to defaults (openai-realtime-console#35, unconfirmed).
    session = ok(cfg, {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad",
                                                                                   "create_response": False}}}})
    assert session["audio"]["input"]["turn_detection"] == {
        "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 200,
        "idle_timeout_ms": None, "create_response": False, "interrupt_response": True}
    session = ok(cfg, {"type": "realtime", "audio": {"input": {"turn_detection": None}}})
    assert session["audio"]["input"]["turn_detection"] is None and cfg.turn_detection is None
    session = ok(cfg, {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "semantic_vad",
                                                                                   "eagerness": "low"}}}})
    assert session["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad", "eagerness": "low", "create_response": True, "interrupt_response": True}
    assert cfg.turn_detection == TurnDetection("semantic_vad", eagerness="low")
    ok(cfg, {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}}})
    assert cfg.turn_detection is not None and cfg.turn_detection.idle_timeout_ms == 5000


def test_ga_clearing_fields() -> None:
    cfg = ga()
    ok(cfg, copy.deepcopy(GA_UPDATE))
    session = ok(cfg, {"type": "realtime", "instructions": "", "tools": [],
                       "audio": {"input": {"transcription": None}}})
    assert session["instructions"] == "" and session["tools"] == []
    assert session["audio"]["input"]["transcription"] is None and not cfg.transcription_enabled
    assert cfg.instructions == "" and cfg.tools == []
    session = ok(cfg, {"type": "realtime", "output_modalities": ["text"], "tracing": "auto",
                       "include": ["item.input_audio_transcription.logprobs"], "max_output_tokens": 200})
    assert (session["output_modalities"], session["tracing"], session["max_output_tokens"]) == (["text"], "auto", 200)
    assert session["include"] == ["item.input_audio_transcription.logprobs"] and cfg.output_modalities == ["text"]


def test_ga_errors_exact() -> None:
    cfg = ga()
    flat = {"modalities": ["text", "audio"], "voice": "alloy", "input_audio_format": "g711_ulaw"}
    assert error_of(cfg, flat, "evt_1") == {
        "type": "invalid_request_error", "code": "missing_required_parameter",
        "message": "Missing required parameter: 'session.type'.", "param": "session.type", "event_id": "evt_1"}
    assert error_of(cfg, {"type": "realtime", "input_audio_format": "g711_ulaw"}) == {
        "type": "invalid_request_error", "code": "unknown_parameter",
        "message": "Unknown parameter: 'session.input_audio_format'.", "param": "session.input_audio_format",
        "event_id": None}
    e = error_of(cfg, {"type": "realtime", "voice": "cedar"})
    assert (e["code"], e["message"]) == ("unknown_parameter", "Unknown parameter: 'session.voice'.")
    e = error_of(cfg, {"type": "realtime", "audio": {"input": {"format": "g711_ulaw"}}})
    assert (e["code"], e["message"], e["param"]) == (
        "invalid_type", "Invalid type for 'session.audio.input.format': expected an object, but got a string instead.",
        "session.audio.input.format")
    e = error_of(cfg, {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}})
    assert (e["code"], e["param"]) == ("integer_below_min_value", "session.audio.input.format.rate")
    assert "Expected a value >= 24000" in e["message"]
    e = error_of(cfg, {"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcm", "rate": 48000}}}})
    assert (e["code"], e["param"]) == ("integer_above_max_value", "session.audio.output.format.rate")
    e = error_of(cfg, {"type": "realtime", "audio": {"input": {"format": {}}}})
    assert (e["code"], e["param"]) == ("missing_required_parameter", "session.audio.input.format.type")
    e = error_of(cfg, {"type": "transcription"})
    assert e["param"] == "session.type"
    e = error_of(cfg, {"type": "realtime", "output_modalities": ["text", "audio"]})
    assert e["param"] == "session.output_modalities"
    e = error_of(cfg, {"type": "realtime", "max_output_tokens": 0})
    assert (e["code"], e["param"]) == ("integer_below_min_value", "session.max_output_tokens")
    e = error_of(cfg, "realtime")
    assert (e["code"], e["param"]) == ("invalid_type", "session")
    # An update that is wrong anywhere changes nothing, even the valid parts.
    e = error_of(cfg, {"type": "realtime", "instructions": "new", "audio": {"input": {"format": "pcm16"}}})
    assert cfg.instructions == DEFAULT_INSTRUCTIONS


def test_ga_voice_fixed_once_audio_was_produced() -> None:
    cfg = ga()
    ok(cfg, {"type": "realtime", "audio": {"output": {"voice": "cedar"}}})
    assert cfg.voice == "cedar"
    cfg.audio_produced = True
    assert error_of(cfg, {"type": "realtime", "audio": {"output": {"voice": "marin"}}}, "e7") == \
        cannot_update_voice("e7")["error"]
    assert cfg.voice == "cedar"
    ok(cfg, {"type": "realtime", "instructions": "x", "audio": {"output": {"voice": "cedar"}}})  # same voice is fine
    assert cfg.instructions == "x"


def test_ga_custom_voice_object() -> None:
    cfg = ga()
    session = ok(cfg, {"type": "realtime", "audio": {"output": {"voice": {"id": "voice_123"}}}})
    assert session["audio"]["output"]["voice"] == {"id": "voice_123"} and cfg.voice == "voice_123"


# ====================================================================== beta updates

BETA_UPDATE = {  # protocols.md 2.3 "session.update — beta"
    "modalities": ["text", "audio"], "instructions": "You are a helpful assistant.",
    "voice": "alloy", "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw",
    "input_audio_transcription": {"model": "whisper-1"},
    "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                       "silence_duration_ms": 500, "create_response": True, "interrupt_response": True},
    "tools": [{"type": "function", "name": "get_weather", "description": "…",
               "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}],
    "tool_choice": "auto", "temperature": 0.8, "max_response_output_tokens": "inf"}


def test_beta_protocols_example_update() -> None:
    cfg = beta()
    session = ok(cfg, copy.deepcopy(BETA_UPDATE))
    assert session == {
        "id": cfg.id, "object": "realtime.session", "model": BETA_MODEL, "modalities": ["text", "audio"],
        "instructions": "You are a helpful assistant.", "voice": "alloy", "input_audio_format": "g711_ulaw",
        "output_audio_format": "g711_ulaw", "input_audio_transcription": {"model": "whisper-1"},
        "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                           "silence_duration_ms": 500, "create_response": True, "interrupt_response": True},
        "tools": BETA_UPDATE["tools"], "tool_choice": "auto", "temperature": 0.8,
        "max_response_output_tokens": "inf"}
    assert (cfg.input_format, cfg.output_format) == (PCMU, PCMU)
    assert cfg.transcription_enabled and cfg.turn_detection == TurnDetection("server_vad", silence_duration_ms=500)


def test_beta_merges_and_vad() -> None:
    cfg = beta()
    ok(cfg, copy.deepcopy(BETA_UPDATE))
    session = ok(cfg, {"output_audio_format": "g711_alaw", "modalities": ["text"]})
    assert (session["input_audio_format"], session["output_audio_format"]) == ("g711_ulaw", "g711_alaw")
    assert (cfg.output_format, cfg.output_modalities) == (PCMA, ["text"])
    session = ok(cfg, {"turn_detection": {"threshold": 0.6}})  # beta: type optional, rest reset
    assert session["turn_detection"] == {"type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 300,
                                         "silence_duration_ms": 200, "create_response": True,
                                         "interrupt_response": True}
    session = ok(cfg, {"turn_detection": None, "input_audio_transcription": None})
    assert session["turn_detection"] is None and cfg.turn_detection is None and not cfg.transcription_enabled
    session = ok(cfg, {"turn_detection": {"type": "semantic_vad", "eagerness": "medium"}})
    assert session["turn_detection"] == {"type": "semantic_vad", "eagerness": "medium", "create_response": True,
                                         "interrupt_response": True}


def test_beta_errors() -> None:
    cfg = beta()
    e = error_of(cfg, {"type": "realtime", "audio": {}}, "b1")
    assert (e["code"], e["message"], e["event_id"]) == ("unknown_parameter", "Unknown parameter: 'session.type'.", "b1")
    e = error_of(cfg, {"input_audio_format": {"type": "audio/pcmu"}})
    assert (e["code"], e["param"]) == ("invalid_type", "session.input_audio_format")
    e = error_of(cfg, {"temperature": 0.2})
    assert (e["code"], e["param"]) == ("decimal_below_min_value", "session.temperature")
    assert e["message"] == ("Invalid 'session.temperature': decimal below minimum value. "
                            "Expected a value >= 0.6, but got 0.2 instead.")
    cfg.audio_produced = True
    assert error_of(cfg, {"voice": "verse"})["code"] == "cannot_update_voice"
    ok(cfg, {"voice": "alloy"})


def test_many_updates_stay_valid_in_both_dialects() -> None:
    """A run of mixed updates; every intermediate session validates through the SDK."""
    cfg = ga()
    for update in (GA_UPDATE, {"type": "realtime", "audio": {"input": {"noise_reduction": {"type": "near_field"}}}},
                   {"type": "realtime", "tool_choice": "required"},
                   {"type": "realtime", "audio": {"output": {"speed": 1.2, "voice": "cedar"}}},
                   {"type": "realtime", "audio": {"input": {"turn_detection": None, "transcription": None}}},
                   {"type": "realtime", "truncation": "disabled", "prompt": {"id": "pmpt_1"}}):
        ok(cfg, copy.deepcopy(update))
    assert cfg.as_dict()["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    cfg = beta()
    for update in (BETA_UPDATE, {"input_audio_noise_reduction": {"type": "far_field"}}, {"speed": 1.1},
                   {"tool_choice": "none", "tools": []}, {"turn_detection": None}, {"instructions": ""}):
        ok(cfg, copy.deepcopy(update))
    assert cfg.as_dict()["speed"] == 1.1
