"""Shared by the ``test_session_*`` files: fixtures' audio and text, session.update builders,
event-shape helpers. Each file drives a ``MockSession`` sans-IO (see ``Driver`` in conftest.py);
every event the session emits is validated against the openai SDK's types, and the ``drive``
fixture asserts ``session.invalid_sent == []`` for every session at the end of every test.
"""

from __future__ import annotations

import base64
from typing import Any

from callsim.simulator.audio.codec import SILENCE_BYTE
from callsim.simulator.audio.fixtures import default_library
from callsim.simulator.audio.utterances import default_bank

from .conftest import Driver

LIB = default_library()
SHORT, LONG = "assistant_short_reply", "assistant_long_reply"
PCMU = {"type": "audio/pcmu"}
PCM = {"type": "audio/pcm", "rate": 24000}
_UNSET: Any = object()

GA_AUDIO_DELTAS = {"response.output_audio.delta", "response.output_audio_transcript.delta"}
BETA_AUDIO_DELTAS = {"response.audio.delta", "response.audio_transcript.delta"}
GA_REPLY = ["response.created", "response.output_item.added", "conversation.item.added",
            "response.content_part.added", "DELTAS", "response.output_audio.done",
            "response.output_audio_transcript.done", "response.content_part.done", "response.output_item.done",
            "conversation.item.done", "response.done", "rate_limits.updated"]
GA_USER_TURN = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]


def ulaw(name: str) -> bytes:
    return default_bank().get(name).ulaw


def sil(ms: int) -> bytes:
    return bytes([SILENCE_BYTE]) * (ms * 8)


def text(name: str) -> str:
    return LIB[name].text


def ga_update(*, fmt_in: Any = PCMU, fmt_out: Any = PCMU, turn_detection: Any = _UNSET,
              transcription: Any = _UNSET, event_id: str | None = None, **extra: Any) -> dict[str, Any]:
    inp: dict[str, Any] = {}
    if fmt_in is not None:
        inp["format"] = fmt_in
    if turn_detection is not _UNSET:
        inp["turn_detection"] = turn_detection
    if transcription is not _UNSET:
        inp["transcription"] = transcription
    audio: dict[str, Any] = {"input": inp}
    if fmt_out is not None:
        audio["output"] = {"format": fmt_out}
    ev: dict[str, Any] = {"type": "session.update", "session": {"type": "realtime", "audio": audio, **extra}}
    if event_id is not None:
        ev["event_id"] = event_id
    return ev


def declared(*names: str) -> list[dict[str, Any]]:
    """A session's ``tools`` declaring function tools ``names`` (the mock calls only declared tools)."""
    return [{"type": "function", "name": n, "description": n, "parameters": {"type": "object", "properties": {}}}
            for n in names]


def configure(d: Driver, **kw: Any) -> dict[str, Any]:
    out = d.send(ga_update(**kw))
    assert d.types(out) == ["session.updated"], out
    return out[0]["session"]


def shape(types: list[str], deltas: set[str] = GA_AUDIO_DELTAS) -> list[str]:
    """Event types with every run of audio/transcript deltas collapsed to "DELTAS"."""
    out: list[str] = []
    for t in types:
        if t in deltas:
            if not out or out[-1] != "DELTAS":
                out.append("DELTAS")
        else:
            out.append(t)
    return out


def audio_of(events: list[dict[str, Any]], response_id: str | None = None,
             delta_type: str = "response.output_audio.delta") -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events
                    if e["type"] == delta_type and (response_id is None or e["response_id"] == response_id))


def since(d: Driver, n: int) -> list[dict[str, Any]]:
    return d.events[n:]


def greet(d: Driver, *, text_: str = "Greet the caller.") -> list[dict[str, Any]]:
    """The bridge's greeting: a user text item, then response.create."""
    out = d.send({"type": "conversation.item.create",
                  "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text_}]}})
    return out + d.send({"type": "response.create"})


def truncate(d: Driver, item_id: str, ms: int, eid: str) -> list[dict[str, Any]]:
    return d.send({"type": "conversation.item.truncate", "event_id": eid, "item_id": item_id,
                   "content_index": 0, "audio_end_ms": ms})


def until_type(etype: str):
    return lambda e: e["type"] == etype


def err(code: str | None, message: str, event_id: str | None = None, param: str | None = None,
        type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"type": type_, "code": code, "message": message, "param": param, "event_id": event_id}
