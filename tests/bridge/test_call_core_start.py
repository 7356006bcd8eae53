"""Sans-IO tests of ``callsim.bridge.call.CallCore``: start of a call: ``connected``/``start``, ``session.update``, and the caller audio that arrives before OpenAI is ready.

Driven on a synthetic clock with the hand-written messages and the Twilio playback model of
:mod:`tests.bridge.callcore_kit`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from callsim.bridge.call import (
    MAX_EARLY_FRAMES,
    CallCore,
    CallStarted,
    ConnectOpenAI,
    ToOpenAI,
)
from callsim.bridge.codec import Transcoder
from callsim.bridge.realtime import SessionParams

from tests.bridge.callcore_kit import (
    CALL_SID,
    CUSTOM,
    FRAME_NS,
    MS,
    STREAM_SID,
    WEATHER_TOOL,
    TwilioMsgs,
    b64,
    kinds,
    non_canonical_b64,
    oa_out,
    session_updated,
    ulaw,
)

# ============================================================== start and session.update


def test_connected_then_start_reports_the_call_and_opens_openai() -> None:
    core = CallCore(SessionParams())
    tw = TwilioMsgs()
    assert core.twilio_message(0, tw.connected()) == []
    acts = core.twilio_message(1 * MS, tw.start())
    assert acts == [CallStarted(CALL_SID, STREAM_SID, CUSTOM), ConnectOpenAI()]
    assert core.stats["twilio_bad"] == 0


def test_openai_opened_sends_exactly_one_session_update_ga_shape() -> None:
    params = SessionParams(voice="cedar", instructions="Be brief.", vad_threshold=0.7, vad_prefix_padding_ms=250,
                           vad_silence_duration_ms=400, transcription_model="whisper-1", tools=(WEATHER_TOOL,))
    core = CallCore(params)
    tw = TwilioMsgs()
    core.twilio_message(0, tw.connected())
    core.twilio_message(1 * MS, tw.start())
    acts = core.openai_opened(2 * MS)
    assert len(acts) == 1 and isinstance(acts[0], ToOpenAI)
    msg = json.loads(acts[0].text)
    assert msg["type"] == "session.update"
    s = msg["session"]
    assert s["type"] == "realtime"
    assert s["model"] == "gpt-realtime"
    assert s["instructions"] == "Be brief."
    assert s["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert s["audio"]["input"]["turn_detection"] == {
        "type": "server_vad", "threshold": 0.7, "prefix_padding_ms": 250, "silence_duration_ms": 400,
        "create_response": True, "interrupt_response": True}
    assert s["audio"]["input"]["transcription"] == {"model": "whisper-1"}
    assert s["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "cedar"}
    assert s["tools"] == [WEATHER_TOOL]
    assert s["tool_choice"] == "auto"
    for beta_key in ("input_audio_format", "output_audio_format", "voice", "modalities", "turn_detection",
                     "input_audio_transcription"):
        assert beta_key not in s


def test_session_update_without_tools_or_transcription_omits_them() -> None:
    core = CallCore(SessionParams(transcription_model=None, interrupt_response=False))
    s = json.loads(core.openai_opened(0)[0].text)["session"]
    assert "tools" not in s and "tool_choice" not in s
    assert "transcription" not in s["audio"]["input"]
    assert s["audio"]["input"]["turn_detection"]["interrupt_response"] is False


def test_session_update_semantic_vad_has_eagerness_not_threshold() -> None:
    core = CallCore(SessionParams(vad_type="semantic_vad", vad_eagerness="high"))
    td = json.loads(core.openai_opened(0)[0].text)["session"]["audio"]["input"]["turn_detection"]
    assert td == {"type": "semantic_vad", "eagerness": "high", "create_response": True, "interrupt_response": True}


def test_session_update_beta_dialect_is_flat_g711_ulaw() -> None:
    params = SessionParams(dialect="beta", voice="alloy", tools=(WEATHER_TOOL,))
    s = json.loads(CallCore(params).openai_opened(0)[0].text)["session"]
    assert s["input_audio_format"] == "g711_ulaw"
    assert s["output_audio_format"] == "g711_ulaw"
    assert s["voice"] == "alloy"
    assert s["modalities"] == ["text", "audio"]
    assert s["turn_detection"] == {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                   "silence_duration_ms": 500, "create_response": True, "interrupt_response": True}
    assert s["input_audio_transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert s["tools"] == [WEATHER_TOOL]
    assert "type" not in s and "audio" not in s


@pytest.mark.parametrize("dialect,fmt", [("ga", {"type": "audio/pcm", "rate": 24000}), ("beta", "pcm16")])
def test_session_update_transcode_mode_asks_for_pcm16_24k(dialect: str, fmt: Any) -> None:
    core = CallCore(SessionParams(dialect=dialect, audio_mode="transcode"), transcoder=Transcoder())
    s = json.loads(core.openai_opened(0)[0].text)["session"]
    if dialect == "ga":
        assert s["audio"]["input"]["format"] == fmt
        assert s["audio"]["output"]["format"] == fmt
    else:
        assert s["input_audio_format"] == fmt
        assert s["output_audio_format"] == fmt


def test_transcode_mode_without_transcoder_is_refused() -> None:
    with pytest.raises(ValueError):
        CallCore(SessionParams(audio_mode="transcode"))


# ============================================================== early audio


def test_early_frames_are_held_then_flushed_in_order_unchanged() -> None:
    core = CallCore(SessionParams())
    tw = TwilioMsgs()
    core.twilio_message(0, tw.connected())
    core.twilio_message(1 * MS, tw.start())
    payloads = [non_canonical_b64(ulaw(160, seed=i)) for i in range(5)]
    t = 2 * MS
    for p in payloads[:2]:  # before the socket is even open
        assert core.twilio_message(t, tw.media(p)) == []
        t += 20 * MS
    assert kinds(core.openai_opened(t)) == ["oa:session.update"]
    for p in payloads[2:]:  # open, but session.updated not yet seen
        assert core.twilio_message(t, tw.media(p)) == []
        t += 20 * MS
    acts = core.openai_message(t, session_updated())
    assert all(isinstance(a, ToOpenAI) for a in acts)
    assert [json.loads(a.text) for a in acts] == [{"type": "input_audio_buffer.append", "audio": p}
                                                   for p in payloads]
    # the very same base64 text: no decode / re-encode (the pad bits would change)
    for a, p in zip(acts, payloads):
        assert f'"{p}"' in a.text
    # later frames go at once, one append each
    later = non_canonical_b64(ulaw(160, seed=99))
    acts = core.twilio_message(t + 20 * MS, tw.media(later))
    assert acts == [ToOpenAI(json.dumps({"type": "input_audio_buffer.append", "audio": later},
                                        separators=(",", ":")))]
    assert core.early_dropped == 0
    assert core.stats["frames_in"] == 6
    # a second session.updated (e.g. after another session.update) flushes nothing twice
    assert core.openai_message(t + 40 * MS, session_updated()) == []


def test_early_buffer_is_bounded_oldest_dropped() -> None:
    core = CallCore(SessionParams())
    tw = TwilioMsgs()
    core.twilio_message(0, tw.start())
    extra = 7
    payloads = [b64(i.to_bytes(4, "big") * 40) for i in range(MAX_EARLY_FRAMES + extra)]
    for i, p in enumerate(payloads):
        assert core.twilio_message(i * FRAME_NS, tw.media(p)) == []
    assert core.early_dropped == extra
    core.openai_opened(10_000 * MS)
    acts = core.openai_message(10_001 * MS, session_updated())
    assert [json.loads(a.text)["audio"] for a in acts] == payloads[extra:]


def test_greeting_follows_session_updated() -> None:
    core = CallCore(SessionParams(), ai_greeting="Greet the caller warmly.")
    tw = TwilioMsgs()
    core.twilio_message(0, tw.start())
    early = b64(ulaw(160))
    core.twilio_message(1 * MS, tw.media(early))
    core.openai_opened(2 * MS)
    msgs = oa_out(core.openai_message(3 * MS, session_updated()))
    assert msgs == [
        {"type": "input_audio_buffer.append", "audio": early},
        {"type": "conversation.item.create",
         "item": {"type": "message", "role": "user", "content": [{"type": "input_text",
                                                                  "text": "Greet the caller warmly."}]}},
        {"type": "response.create"},
    ]
    assert core.openai_message(4 * MS, session_updated()) == []  # greeted once


def test_no_greeting_by_default() -> None:
    core = CallCore(SessionParams())
    core.twilio_message(0, TwilioMsgs().start())
    core.openai_opened(1)
    assert core.openai_message(2, session_updated()) == []
