"""TwiML answers for the voice webhook, built with the ``twilio`` package.

Why the builder and not f-strings: it escapes ``& < > "`` in spoken text and
parameter values (caller-controlled data such as ``From`` can end up there), and
its output is exactly what Twilio's own examples produce (protocols.md 1.4).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from twilio.twiml.voice_response import Connect, VoiceResponse

__all__ = ["connect_twiml", "busy_twiml"]


def connect_twiml(stream_url: str, parameters: Mapping[str, str], greeting: str | None = None) -> str:
    """Optional ``<Say>``, then ``<Connect><Stream url=…>`` with one ``<Parameter>`` each.

    Nothing follows ``</Connect>``: verbs after it would only run once *we* close
    the socket, and the bridge's own apology is spoken over the stream instead.
    Per-call data (CallSid, token) goes in ``<Parameter>`` because Twilio drops
    query strings from the Stream URL, so a query string here is refused.
    """
    parts = urlsplit(stream_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"stream_url must be ws(s)://host/path, got {stream_url!r}")
    if parts.query:
        raise ValueError("Twilio drops query strings from <Stream url>; use parameters instead")
    response = VoiceResponse()
    if greeting:
        response.say(greeting)
    connect = Connect()
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return response.to_xml()


def busy_twiml(message: str) -> str:
    """``<Say>message</Say><Hangup/>``: the answer beyond max_concurrent_calls."""
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return response.to_xml()
