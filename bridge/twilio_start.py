"""Twilio's ``start`` message, checked whole before the call acts on any of it.

``start`` is the one Twilio message that changes what a call *is*: its stream
and call ids (which go into every message we send, the per-call token check,
the store and every log line), its custom parameters, its audio format. So it
is validated field by field, types first, and only a :class:`Start` that passed
every check reaches the call: a malformed one leaves the call exactly as it was
(not started, a later valid ``start`` still welcome). Before this, a start with
``"mediaFormat": "x"`` set the stream id and then failed, leaving a call that
was neither started nor able to start; one with ``"callSid": 123`` reached the
token check as an int and took the whole process down.

Shapes from protocols.md 1.2: every value named "string" is a JSON string; SIDs
are two letters and 32 hex digits (we accept any short id of safe characters,
as Twilio-compatible services and our own tests use other forms);
``customParameters`` is an object of string to string; ``mediaFormat`` is
``{"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Ids are pasted unescaped into JSON templates (twilio_wire) and into log lines:
# only let through what needs no escaping in either.
SID = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# <Parameter> values come from our own TwiML (callSid, token, from, to) or the
# operator's; Twilio does not document a limit. These are far above any real use
# and keep one start from holding more than ~32 KB of a connection's memory.
MAX_PARAMETERS = 32
MAX_PARAMETER_NAME = 128
MAX_PARAMETER_VALUE = 1024
MAX_PARAMETERS_TOTAL = 16 * 1024
MAX_TRACKS = 4

MULAW = "audio/x-mulaw"


class BadStart(ValueError):
    """The start message is malformed; the text says which field and why (log-safe: ours)."""


@dataclass(frozen=True)
class Start:
    stream_sid: str
    call_sid: str | None
    parameters: dict[str, str]
    encoding: str = MULAW
    sample_rate: int = 8000
    channels: int = 1

    @property
    def playable(self) -> bool:
        """The bridge passes caller audio through as 8 kHz mono μ-law and plays only that."""
        return (self.encoding, self.sample_rate, self.channels) == (MULAW, 8000, 1)

    @property
    def format_text(self) -> str:
        return f"{self.encoding} {self.sample_rate} Hz × {self.channels}"


def parse_start(msg: dict[str, Any]) -> Start:
    """The checked content of a ``start`` message, or :class:`BadStart`.

    Pure: reads ``msg`` only. Optional fields (``callSid``, ``accountSid``,
    ``tracks``, ``customParameters``, ``mediaFormat`` and its keys) may be absent
    or null; when present they must have their documented type.
    """
    start = msg.get("start")
    if not isinstance(start, dict):
        raise BadStart(f"start is {_kind(start)}, not an object")
    top, inner = msg.get("streamSid"), start.get("streamSid")
    stream_sid = top if top is not None else inner
    _sid("streamSid", stream_sid)
    if top is not None and inner is not None and top != inner:
        raise BadStart("streamSid differs between the message and start")
    call_sid = start.get("callSid")
    if call_sid is not None:
        _sid("callSid", call_sid)
    if start.get("accountSid") is not None:
        _sid("accountSid", start["accountSid"])
    tracks = start.get("tracks")
    if tracks is not None and not (isinstance(tracks, list) and len(tracks) <= MAX_TRACKS
                                   and all(isinstance(t, str) and len(t) <= 32 for t in tracks)):
        raise BadStart("tracks is not a short list of strings")
    parameters = _parameters(start.get("customParameters"))
    fmt = start.get("mediaFormat")
    if fmt is None:  # not sent: assume Twilio's only format
        return Start(stream_sid, call_sid, parameters)
    if not isinstance(fmt, dict):
        raise BadStart(f"mediaFormat is {_kind(fmt)}, not an object")
    encoding = fmt.get("encoding", MULAW)
    rate = fmt.get("sampleRate", 8000)
    channels = fmt.get("channels", 1)
    if not isinstance(encoding, str) or not 0 < len(encoding) <= 64 or not encoding.isprintable():
        raise BadStart(f"mediaFormat.encoding is {_kind(encoding)}, not a short printable string")
    for name, v in (("sampleRate", rate), ("channels", channels)):
        if not _is_int(v) or not 0 < v <= 1_000_000:
            raise BadStart(f"mediaFormat.{name} is {_kind(v)}, not a positive integer")
    return Start(stream_sid, call_sid, parameters, encoding, rate, channels)


def _parameters(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadStart(f"customParameters is {_kind(raw)}, not an object")
    if len(raw) > MAX_PARAMETERS:
        raise BadStart(f"customParameters has {len(raw)} entries (at most {MAX_PARAMETERS})")
    total = 0
    for k, v in raw.items():  # JSON object keys are strings; the values need checking
        if not isinstance(v, str):
            raise BadStart(f"customParameters value is {_kind(v)}, not a string")
        if len(k) > MAX_PARAMETER_NAME or len(v) > MAX_PARAMETER_VALUE:
            raise BadStart(f"a customParameters entry is too long ({len(k)} + {len(v)} chars)")
        total += len(k) + len(v)
    if total > MAX_PARAMETERS_TOTAL:
        raise BadStart(f"customParameters hold {total} chars (at most {MAX_PARAMETERS_TOTAL})")
    return dict(raw)


def _sid(name: str, v: Any) -> None:
    if not isinstance(v, str):
        raise BadStart(f"{name} is {_kind(v)}, not a string")
    if not SID.fullmatch(v):
        raise BadStart(f"{name} is not an id (1-64 of A-Z a-z 0-9 _ . -; {len(v)} chars given)")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _kind(v: Any) -> str:
    """The JSON type of ``v``, for an error message (never the value: it is the peer's)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__
