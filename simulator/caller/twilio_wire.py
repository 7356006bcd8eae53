"""Twilio Media Streams messages, as Twilio writes and reads them (protocols.md part 1).

Two halves, both pure functions with no I/O:

* :class:`StreamIdentity` + the ``*_message`` builders write what Twilio sends to
  an app (``connected``, ``start``, ``media``, ``dtmf``, ``mark``, ``stop``) with the
  exact field names and types — ``sequenceNumber``, ``chunk`` and ``timestamp`` are
  JSON *strings*, ``sampleRate``/``channels`` numbers.
* :func:`parse_outbound` reads what an app sends to Twilio (``media``, ``mark``,
  ``clear``) and rejects what Twilio rejects, with Twilio's warning codes: 31950
  for a binary frame, 31951 for invalid JSON, unknown events, missing or extra
  fields, a wrong ``streamSid``, or a payload that is not base64.

Extra fields are documented as invalid (protocols.md 1.1) but whether Twilio then
still *acts* on such a message is unconfirmed, so :class:`WirePolicy` makes that
choice explicit.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

WARN_MALFORMED = 31950  # binary frame, not JSON text
WARN_INVALID = 31951  # invalid JSON, unknown event, bad fields, wrong streamSid

# Fields Twilio accepts on each outbound (app → Twilio) event.
_OUTBOUND_FIELDS: dict[str, frozenset[str]] = {
    "media": frozenset({"event", "streamSid", "media"}),
    "mark": frozenset({"event", "streamSid", "mark"}),
    "clear": frozenset({"event", "streamSid"}),
}


@dataclass(frozen=True)
class StreamIdentity:
    """The SIDs and parameters one stream announces in its ``start`` message."""

    account_sid: str
    call_sid: str
    stream_sid: str
    custom_parameters: dict[str, str] = field(default_factory=dict)
    tracks: tuple[str, ...] = ("inbound",)


def _dumps(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def connected_message() -> str:
    return _dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start_message(ident: StreamIdentity, seq: int) -> str:
    return _dumps({
        "event": "start",
        "sequenceNumber": str(seq),
        "start": {
            "accountSid": ident.account_sid,
            "streamSid": ident.stream_sid,
            "callSid": ident.call_sid,
            "tracks": list(ident.tracks),
            "customParameters": dict(ident.custom_parameters),
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
        "streamSid": ident.stream_sid,
    })


def media_message(stream_sid: str, seq: int, chunk: int, timestamp_ms: int, payload_b64: str) -> str:
    # Hot path (50 per second per call): a template is several times faster than
    # building a dict; every interpolated value is either a SID, digits or base64,
    # none of which needs JSON escaping.
    return (
        '{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
        '"timestamp":"%d","payload":"%s"},"streamSid":"%s"}'
        % (seq, chunk, timestamp_ms, payload_b64, stream_sid)
    )


def dtmf_message(stream_sid: str, seq: int, digit: str) -> str:
    return _dumps({
        "event": "dtmf", "streamSid": stream_sid, "sequenceNumber": str(seq),
        "dtmf": {"track": "inbound_track", "digit": digit},
    })


def mark_message(stream_sid: str, seq: int, name: str) -> str:
    return _dumps({
        "event": "mark", "sequenceNumber": str(seq), "streamSid": stream_sid,
        "mark": {"name": name},
    })


def stop_message(ident: StreamIdentity, seq: int) -> str:
    return _dumps({
        "event": "stop", "sequenceNumber": str(seq),
        "stop": {"accountSid": ident.account_sid, "callSid": ident.call_sid},
        "streamSid": ident.stream_sid,
    })


# ----------------------------------------------------------------- app → Twilio


@dataclass(frozen=True)
class WirePolicy:
    """Choices about Twilio's unconfirmed behaviour.

    ``act_on_extra_fields``: Twilio documents extra fields as invalid (31951) but
    whether it still plays/honours such a message is not documented. Default
    False: an invalid message is ignored, the strict reading.
    """

    act_on_extra_fields: bool = False


@dataclass(frozen=True)
class OutMedia:
    payload: bytes


@dataclass(frozen=True)
class OutMark:
    name: str


@dataclass(frozen=True)
class OutClear:
    pass


@dataclass(frozen=True)
class Invalid:
    """A message Twilio would flag; ``code`` is Twilio's warning number."""

    code: int
    reason: str
    event: str | None = None
    salvaged: OutMedia | OutMark | OutClear | None = None  # acted on anyway (see WirePolicy)


Outbound = OutMedia | OutMark | OutClear | Invalid


def parse_outbound(data: str | bytes, stream_sid: str, policy: WirePolicy = WirePolicy()) -> Outbound:
    """Interpret one WebSocket message an app sent to Twilio.

    Never raises: anything unexpected becomes :class:`Invalid` with a reason a
    bridge author can act on.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        return Invalid(WARN_MALFORMED, f"binary frame of {len(data)} bytes; Twilio accepts JSON text frames only")
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return Invalid(WARN_INVALID, f"invalid JSON: {exc}; message starts {data[:60]!r}")
    if not isinstance(msg, dict):
        return Invalid(WARN_INVALID, f"JSON {type(msg).__name__} instead of an object")
    event = msg.get("event")
    if not isinstance(event, str):
        return Invalid(WARN_INVALID, "no string 'event' field")
    allowed = _OUTBOUND_FIELDS.get(event)
    if allowed is None:
        return Invalid(WARN_INVALID, f"unknown event {event!r}; Twilio accepts media, mark, clear", event)
    sid = msg.get("streamSid")
    if sid is None:
        return Invalid(WARN_INVALID, f"{event} without streamSid", event)
    if sid != stream_sid:
        return Invalid(WARN_INVALID, f"{event} with wrong streamSid {sid!r} (active stream is {stream_sid})", event)

    parsed: OutMedia | OutMark | OutClear
    if event == "media":
        media = msg.get("media")
        if not isinstance(media, dict):
            return Invalid(WARN_INVALID, "media without a 'media' object", event)
        payload = media.get("payload")
        if not isinstance(payload, str):
            keys = sorted(media)
            return Invalid(WARN_INVALID, f"media without a string 'payload' (keys: {keys})", event)
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            return Invalid(WARN_INVALID, f"media payload is not base64 ({exc})", event)
        parsed = OutMedia(audio)
        extra = set(media) - {"payload"}
    elif event == "mark":
        mark = msg.get("mark")
        if not isinstance(mark, dict) or not isinstance(mark.get("name"), str) or not mark["name"]:
            return Invalid(WARN_INVALID, "mark without a 'mark': {'name': <non-empty string>} object", event)
        parsed = OutMark(mark["name"])
        extra = set(mark) - {"name"}
    else:
        parsed = OutClear()
        extra = set()
    extra |= set(msg) - allowed
    if extra:
        return Invalid(
            WARN_INVALID, f"{event} with unexpected fields {sorted(extra)}", event,
            salvaged=parsed if policy.act_on_extra_fields else None,
        )
    return parsed


Kind = Literal["media", "mark", "clear"]
