"""What the call core asks its driver to do: the typed outputs of :class:`.call.CallCore`.

Frozen dataclasses, so the core's decisions can be compared whole in tests; the driver
(:mod:`.driver`) matches on their types and carries each out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToTwilio:
    text: str


@dataclass(frozen=True)
class ToOpenAI:
    text: str


@dataclass(frozen=True)
class ConnectOpenAI:
    """Open the OpenAI socket now (the stream has started)."""


@dataclass(frozen=True)
class CloseOpenAI:
    reason: str


@dataclass(frozen=True)
class Hangup:
    """Close the Twilio stream once mark ``after_mark`` is echoed (or at once if None); if the mark
    does not come back within ``grace_s`` (None: the driver's default), close it anyway."""

    reason: str
    after_mark: str | None = None
    grace_s: float | None = None


@dataclass(frozen=True)
class TransferCall:
    """Redirect the live call to the transfer number over Twilio's REST API once mark ``after_mark``
    is echoed (at once if None); if the mark does not come back within ``grace_s``, call
    :meth:`.call.CallCore.transfer_mark_late`. Answer with :meth:`.call.CallCore.transfer_done`."""

    after_mark: str | None = None
    grace_s: float | None = None


@dataclass(frozen=True)
class RunTool:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class SaveTranscript:
    item_id: str
    role: str  # caller | assistant
    text: str
    truncated: bool = False
    audio_end_ms: int | None = None


@dataclass(frozen=True)
class CallStarted:
    call_sid: str
    stream_sid: str
    parameters: dict[str, str]


@dataclass(frozen=True)
class Notice:
    """Something the operator's live feed shows (:mod:`.feed`): a barge-in, an OpenAI fault.

    Emitted on events only, never per audio frame, and never carrying audio; the driver hands it
    to its hooks and does nothing else with it.
    """

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


Action = (ToTwilio | ToOpenAI | ConnectOpenAI | CloseOpenAI | Hangup | TransferCall | RunTool | SaveTranscript
          | CallStarted | Notice)
