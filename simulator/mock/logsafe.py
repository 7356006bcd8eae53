"""Client-controlled values made safe to keep and to log.

A client may send any JSON (a megabyte string, a newline in an item id), and a
session's event log and error records are kept after it closes: what is kept is
small identifying fields, clipped, and a log line cannot be forged.
"""

from __future__ import annotations

from typing import Any


def summary(ev: dict[str, Any]) -> dict[str, Any]:
    """Small identifying fields of an event for the log (never audio; a client's strings clipped)."""
    keep = {}
    for k in ("item_id", "response_id", "audio_start_ms", "audio_end_ms", "content_index"):
        if k in ev:
            keep[k] = ev[k]
    if "response" in ev and isinstance(ev["response"], dict):
        keep["response_id"] = ev["response"].get("id")
        keep["status"] = ev["response"].get("status")
    if "error" in ev and isinstance(ev["error"], dict):
        keep["code"] = ev["error"].get("code")
    if "item" in ev and isinstance(ev["item"], dict):
        keep["item_id"] = ev["item"].get("id")
    return {k: clip(v, 200) if isinstance(v, str) else v for k, v in keep.items()}


def type_for_log(ev: dict[str, Any] | None) -> str:
    """The ``type`` of an invalid event, as kept in the session's event log."""
    if ev is None:
        return "<unparseable>"
    t = ev.get("type")
    return clip(t, 100) if isinstance(t, str) else f"<{type(t).__name__}>"


def clip(text: Any, limit: int) -> Any:
    """``text`` cut to ``limit`` characters, saying how much was cut (non-strings as they are)."""
    if not isinstance(text, str) or len(text) <= limit:
        return text
    return f"{text[:limit]}...(+{len(text) - limit} chars)"


def for_log(text: Any, limit: int = 300) -> str:
    """Client-controlled text made safe for a log line: clipped, control characters escaped
    (a newline in an item id must not forge a log line of its own)."""
    return repr(clip(str(text), limit))[1:-1]
