"""The session settings an operator may change at runtime from the console.

Only what shapes a *new* call's OpenAI session: instructions, voice, turn detection, which tools
the model is offered. A running call keeps the :class:`.realtime.SessionParams` it was built with
(the core holds its own), so a change never lands half-way through a conversation.

The configured values (environment, ``.env``, flags) are the base; the console's changes are
stored in the SQLite store and win over them, so a restart keeps what the operator set — the
bridge logs at startup which settings the store overrides, so nobody is left wondering why
``VOICE`` has no effect. Resetting from the console removes the overrides.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .realtime import SessionParams
from .settings import Settings

__all__ = ["SessionSettings", "configured", "merged", "apply", "describe", "ValidationError"]


class SessionSettings(BaseModel):
    """The editable subset, with the same bounds as :class:`.settings.Settings` (and a few more:
    a value typed in a browser is untrusted input)."""

    model_config = ConfigDict(extra="forbid")

    instructions: str = Field(max_length=20_000)
    voice: str = Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")
    vad_type: Literal["server_vad", "semantic_vad"]
    vad_threshold: float = Field(ge=0.0, le=1.0)
    vad_prefix_padding_ms: int = Field(ge=0, le=5_000)
    vad_silence_duration_ms: int = Field(ge=0, le=10_000)
    vad_eagerness: Literal["low", "medium", "high", "auto"]
    interrupt_response: bool
    tools: list[str] = Field(max_length=256, description="the tools offered to the model, by name")


def configured(settings: Settings, tool_names: list[str]) -> SessionSettings:
    """The values the bridge was started with (every registered tool on)."""
    return SessionSettings(
        instructions=settings.instructions, voice=settings.voice, vad_type=settings.vad_type,
        vad_threshold=settings.vad_threshold, vad_prefix_padding_ms=settings.vad_prefix_padding_ms,
        vad_silence_duration_ms=settings.vad_silence_duration_ms,
        vad_eagerness=settings.vad_eagerness if settings.vad_eagerness in ("low", "medium", "high") else "auto",
        interrupt_response=settings.interrupt_response, tools=list(tool_names))


def merged(base: SessionSettings, overrides: dict[str, Any], tool_names: list[str]) -> SessionSettings:
    """``base`` with ``overrides`` applied and checked; unknown tool names are refused.

    Raises :class:`pydantic.ValidationError` or :class:`ValueError` (the message names the setting).
    """
    out = SessionSettings.model_validate({**base.model_dump(), **overrides})
    unknown = [t for t in out.tools if t not in tool_names]
    if unknown:
        raise ValueError(f"tools: no such tool {', '.join(repr(t) for t in unknown)}")
    return out


def overrides_of(values: SessionSettings, base: SessionSettings) -> dict[str, Any]:
    """The settings that differ from the configured ones (what the store keeps)."""
    now, was = values.model_dump(), base.model_dump()
    return {k: v for k, v in now.items() if v != was[k]}


def apply(params: SessionParams, values: SessionSettings, schemas: list[dict[str, Any]]) -> SessionParams:
    """New calls' session parameters with ``values`` in; ``schemas`` are the registry's, filtered."""
    on = set(values.tools)
    return dataclasses.replace(
        params, instructions=values.instructions, voice=values.voice, vad_type=values.vad_type,
        vad_threshold=values.vad_threshold, vad_prefix_padding_ms=values.vad_prefix_padding_ms,
        vad_silence_duration_ms=values.vad_silence_duration_ms, vad_eagerness=values.vad_eagerness,
        interrupt_response=values.interrupt_response,
        tools=tuple(s for s in schemas if s.get("name") in on))


def describe(exc: ValidationError | ValueError) -> str:
    """A refused change as one line naming each bad setting."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: "
                         f"{str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors())
    return str(exc)
