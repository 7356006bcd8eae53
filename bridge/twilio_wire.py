"""The Twilio Media Streams side of the bridge: messages to send (protocols.md 1.3).

Only ``media``, ``mark`` and ``clear`` may go to Twilio, each with the active
``streamSid``. Built from string templates: they are sent up to 50 times a
second per call and the values (SIDs, base64, our own mark names) need no JSON
escaping.
"""

from __future__ import annotations


def media(stream_sid: str, payload_b64: str) -> str:
    return '{"event":"media","streamSid":"%s","media":{"payload":"%s"}}' % (stream_sid, payload_b64)


def mark(stream_sid: str, name: str) -> str:
    return '{"event":"mark","streamSid":"%s","mark":{"name":"%s"}}' % (stream_sid, name)


def clear(stream_sid: str) -> str:
    return '{"event":"clear","streamSid":"%s"}' % stream_sid


def b64_len(payload_b64: str) -> int:
    """Decoded length of base64 text without decoding it (no needless round trip)."""
    n = len(payload_b64)
    if n == 0:
        return 0
    pad = 2 if payload_b64.endswith("==") else 1 if payload_b64.endswith("=") else 0
    return n // 4 * 3 - pad
