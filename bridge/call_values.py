"""Values a call takes from the wire and keeps: each bounded, each checked for its type.

OpenAI is a peer like Twilio, and can be buggy: an id, a transcript, a base64 payload or a
response's ``status_details`` reaches the call's state, the store or a log line only through
these, so a malformed or huge value is a bad message (``TypeError``/``ValueError``, which the
core logs and counts), never a crash or an unbounded buffer. Shared by :mod:`.call` and
:mod:`.call_playback`.
"""

from __future__ import annotations

import re
from typing import Any

from .logsafe import wire

MAX_ID_CHARS = 128  # item, response and tool-call ids ("item_…" are ~20 chars)
MAX_TRANSCRIPT_CHARS = 64 * 1024  # ~10 minutes of speech
MAX_REMEMBERED = 256  # cancelled responses/items, truncates kept for the transcript cut
# Payloads and SIDs are pasted into JSON templates unescaped (twilio_wire, realtime.append):
# only let through what needs no escaping, so a malformed message cannot break or inject JSON.
# (Syntax only, a regex over the text: no decoding.)
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def response_details(response: dict[str, Any]) -> str:
    """``status_details`` of a response for a log line: its error code or reason, quoted (wire text)."""
    d = response.get("status_details")
    if not isinstance(d, dict):
        return "no details"
    err = d.get("error")
    if isinstance(err, dict):
        return f"'{wire(err.get('code') or err.get('type'), 80)}'"
    return f"'{wire(d.get('reason') or d.get('type'), 80)}'"


def is_b64(s: str) -> bool:
    return len(s) % 4 == 0 and _B64.fullmatch(s) is not None


def wire_str(v: Any) -> str:
    """``v`` if it is a string; a wrong type from the wire is a malformed message."""
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v


def wire_id(v: Any) -> str:
    """An OpenAI id (item, response, tool call): a string of bounded length (it is kept)."""
    if len(wire_str(v)) > MAX_ID_CHARS:
        raise ValueError(f"an id of {len(v)} chars")
    return v


def wire_transcript(v: Any) -> str:
    """Transcript text, cut to a bound: it is kept per item and goes to the store."""
    text = wire_str(v)
    return text if len(text) <= MAX_TRANSCRIPT_CHARS else text[:MAX_TRANSCRIPT_CHARS] + " …"


def remember(d: dict[str, Any], key: str, value: Any = None) -> None:
    """``d[key] = value``, forgetting the oldest entries past :data:`MAX_REMEMBERED`."""
    d[key] = value
    while len(d) > MAX_REMEMBERED:
        del d[next(iter(d))]


def cut_to_heard(text: str, heard_ms: float, total_ms: float) -> str:
    """The words of ``text`` the caller heard, in proportion to the audio heard."""
    if total_ms <= 0 or heard_ms >= total_ms:
        return text
    words = text.split()
    return " ".join(words[: round(len(words) * max(0.0, heard_ms) / total_ms)])
