"""The OpenAI Realtime side of the bridge: what to send, in which dialect.

GA is the current dialect; beta (header ``OpenAI-Beta: realtime=v1``, flat
session, ``response.audio.delta``) was retired in 2026 but some deployments
and proxies still speak it, so the bridge can too. Everything dialect-specific
lives here; the call logic asks for a message and gets the right shape.
Hot-path messages (audio appends) are built from string templates: the payload
is base64, which needs no JSON escaping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

Dialect = Literal["ga", "beta"]
AudioMode = Literal["passthrough", "transcode"]


@dataclass(frozen=True)
class SessionParams:
    dialect: Dialect = "ga"
    model: str = "gpt-realtime"
    audio_mode: AudioMode = "passthrough"
    voice: str = "marin"
    instructions: str = "You are a helpful voice assistant on a phone call."
    vad_type: str = "server_vad"
    vad_threshold: float = 0.5
    vad_prefix_padding_ms: int = 300
    vad_silence_duration_ms: int = 500
    vad_eagerness: str = "auto"
    interrupt_response: bool = True
    transcription_model: str | None = "gpt-4o-mini-transcribe"
    tools: tuple[dict[str, Any], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class EventNames:
    audio_delta: str
    audio_done: str
    transcript_done: str


NAMES: dict[str, EventNames] = {
    "ga": EventNames("response.output_audio.delta", "response.output_audio.done",
                     "response.output_audio_transcript.done"),
    "beta": EventNames("response.audio.delta", "response.audio.done", "response.audio_transcript.done"),
}

# OpenAI output audio bytes per ms, by mode: μ-law 8 kHz or pcm16 24 kHz.
OUTPUT_BYTES_PER_MS = {"passthrough": 8, "transcode": 48}


def connect_headers(api_key: str, dialect: Dialect) -> list[tuple[bytes, bytes]]:
    headers = [(b"Authorization", b"Bearer " + api_key.encode())]
    if dialect == "beta":
        headers.append((b"OpenAI-Beta", b"realtime=v1"))
    return headers


def _turn_detection(p: SessionParams) -> dict[str, Any]:
    td: dict[str, Any] = {"type": p.vad_type, "create_response": True, "interrupt_response": p.interrupt_response}
    if p.vad_type == "semantic_vad":
        td["eagerness"] = p.vad_eagerness
    else:
        td.update(threshold=p.vad_threshold, prefix_padding_ms=p.vad_prefix_padding_ms,
                  silence_duration_ms=p.vad_silence_duration_ms)
    return td


def session_update(p: SessionParams) -> str:
    """The first message of every call: formats, VAD, voice, tools — before any audio."""
    if p.dialect == "ga":
        fmt: Any = {"type": "audio/pcmu"} if p.audio_mode == "passthrough" else {"type": "audio/pcm", "rate": 24000}
        audio_in: dict[str, Any] = {"format": fmt, "turn_detection": _turn_detection(p)}
        if p.transcription_model:
            audio_in["transcription"] = {"model": p.transcription_model}
        session: dict[str, Any] = {
            "type": "realtime", "model": p.model, "instructions": p.instructions,
            "output_modalities": ["audio"],
            "audio": {"input": audio_in, "output": {"format": fmt, "voice": p.voice}},
        }
    else:
        fmt = "g711_ulaw" if p.audio_mode == "passthrough" else "pcm16"
        session = {
            "modalities": ["text", "audio"], "instructions": p.instructions, "voice": p.voice,
            "input_audio_format": fmt, "output_audio_format": fmt, "turn_detection": _turn_detection(p),
        }
        if p.transcription_model:
            session["input_audio_transcription"] = {"model": p.transcription_model}
    if p.tools:
        session["tools"] = list(p.tools)
        session["tool_choice"] = "auto"
    return orjson.dumps({"type": "session.update", "session": session}).decode()


def append(payload_b64: str) -> str:
    return '{"type":"input_audio_buffer.append","audio":"%s"}' % payload_b64


def truncate(item_id: str, audio_end_ms: int) -> str:
    return orjson.dumps({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                         "audio_end_ms": audio_end_ms}).decode()


def response_create(instructions: str | None = None) -> str:
    """Ask for a response; ``instructions`` replace the session's for this one response only."""
    if instructions is None:
        return '{"type":"response.create"}'
    return orjson.dumps({"type": "response.create", "response": {"instructions": instructions}}).decode()


def response_cancel() -> str:
    return '{"type":"response.cancel"}'


def user_text(text: str) -> str:
    return orjson.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}).decode()


def system_text(text: str) -> str:
    return orjson.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "system", "content": [{"type": "input_text", "text": text}]}}).decode()


def tool_output(call_id: str, output: str) -> str:
    return orjson.dumps({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": call_id, "output": output}}).decode()
