"""The two Realtime dialects: GA (current) and beta (retired, emulated on request).

Most of the protocol is shared; what differs is a handful of server event
names, the content type of assistant audio, and the session shape (nested with
``session.type`` in GA, flat in beta). Keeping the names in one table means the
session state machine is written once and asks ``NAMES[dialect]`` instead of
branching on the dialect everywhere (protocols.md 2.4 "Name map beta → GA").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Dialect = Literal["ga", "beta"]
DIALECTS: tuple[Dialect, ...] = ("ga", "beta")

# What the beta client sends on the handshake (protocols.md 2.1); lower-case
# because HTTP header names are case-insensitive and servers see them folded.
BETA_HEADER = ("openai-beta", "realtime=v1")


@dataclass(frozen=True)
class EventNames:
    """Server event type names (and content types) that differ between dialects."""

    audio_delta: str
    audio_done: str
    transcript_delta: str
    transcript_done: str
    text_delta: str
    text_done: str
    item_created: str  # "conversation.item.added" (GA) / "conversation.item.created" (beta)
    item_done: str | None  # "conversation.item.done" (GA); beta has no such event
    # ``part.type`` of response.content_part.added/done for audio: the schema enum
    # is "audio" | "text" in *both* dialects (protocols.md 2.4).
    audio_part_type: str
    output_audio_content_type: str  # item content type of assistant audio
    input_audio_content_type: str  # item content type of user audio


NAMES: dict[Dialect, EventNames] = {
    "ga": EventNames(
        audio_delta="response.output_audio.delta",
        audio_done="response.output_audio.done",
        transcript_delta="response.output_audio_transcript.delta",
        transcript_done="response.output_audio_transcript.done",
        text_delta="response.output_text.delta",
        text_done="response.output_text.done",
        item_created="conversation.item.added",
        item_done="conversation.item.done",
        audio_part_type="audio",
        output_audio_content_type="output_audio",
        input_audio_content_type="input_audio",
    ),
    "beta": EventNames(
        audio_delta="response.audio.delta",
        audio_done="response.audio.done",
        transcript_delta="response.audio_transcript.delta",
        transcript_done="response.audio_transcript.done",
        text_delta="response.text.delta",
        text_done="response.text.done",
        item_created="conversation.item.created",
        item_done=None,
        audio_part_type="audio",
        output_audio_content_type="audio",
        input_audio_content_type="input_audio",
    ),
}

# Keys that only exist at the top of a *beta* session object. GA moved them
# under ``audio.input`` / ``audio.output`` or renamed them (modalities →
# output_modalities, max_response_output_tokens → max_output_tokens) or
# dropped them (temperature). ``input_audio_noise_reduction`` and ``speed`` are
# beta-only at the top level too, so they count as well.
BETA_ONLY_SESSION_KEYS = frozenset(
    {
        "input_audio_format",
        "output_audio_format",
        "modalities",
        "voice",
        "turn_detection",
        "input_audio_transcription",
        "input_audio_noise_reduction",
        "temperature",
        "max_response_output_tokens",
        "speed",
    }
)


def looks_beta(session_update: dict[str, Any]) -> bool:
    """True if a session.update's session object is beta-shaped.

    Accepts either the whole ``session.update`` event or just its ``session``
    object (an event is recognised by ``type == "session.update"``, which no
    session object has). Beta-shaped means: no ``type`` key (GA requires
    ``session.type``) and at least one beta-only top-level key. A GA session
    that merely contains a stray beta key (``type`` present) is *not* beta: the
    real GA server answers that with ``unknown_parameter``.
    """
    if not isinstance(session_update, dict):
        return False
    session = session_update.get("session") if session_update.get("type") == "session.update" else session_update
    if not isinstance(session, dict) or "type" in session:
        return False
    return any(key in BETA_ONLY_SESSION_KEYS for key in session)
