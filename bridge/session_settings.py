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
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .realtime import SessionParams
from .settings import (Instructions, Settings, VadEagerness, VadPrefixPaddingMs, VadSilenceDurationMs,
                       VadThreshold, VadType, Voice)

__all__ = ["SessionSettings", "configured", "merged", "apply", "describe", "ValidationError"]


class SessionSettings(BaseModel):
    """The editable subset. Every field but ``tools`` has the very type of its namesake in
    :class:`.settings.Settings` (shared there), so any value the bridge starts with is one the
    console accepts, and the other way round."""

    model_config = ConfigDict(extra="forbid")

    instructions: Instructions
    voice: Voice
    vad_type: VadType
    vad_threshold: VadThreshold
    vad_prefix_padding_ms: VadPrefixPaddingMs
    vad_silence_duration_ms: VadSilenceDurationMs
    vad_eagerness: VadEagerness
    interrupt_response: bool
    tools: list[str] = Field(max_length=256, description="the tools offered to the model, by name")


#: the fields a :class:`SessionSettings` shares, by name, with :class:`.settings.Settings` and
#: :class:`.realtime.SessionParams` (``tools`` differs: names here, schemas there)
SHARED = tuple(f for f in SessionSettings.model_fields if f != "tools")


def configured(settings: Settings, tool_names: list[str]) -> SessionSettings:
    """The values the bridge was started with (every registered tool on)."""
    return SessionSettings(**{f: getattr(settings, f) for f in SHARED}, tools=list(tool_names))


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
    return dataclasses.replace(params, **{f: getattr(values, f) for f in SHARED},
                               tools=tuple(s for s in schemas if s.get("name") in on))


def describe(exc: ValidationError | ValueError) -> str:
    """A refused change as one line naming each bad setting."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: "
                         f"{str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors())
    return str(exc)
