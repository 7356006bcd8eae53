"""The emulated phone numbers: an E.164 number and the voice webhook Twilio calls for it.

``callsim twilio-emulator --number +15550001111=http://127.0.0.1:5050/incoming-call`` gives
one; the call legs (:mod:`.engine`) POST the signed webhook there when a call is created to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from ..caller.sids import E164_RE



@dataclass(frozen=True, slots=True)
class PhoneNumber:
    number: str
    voice_url: str
    voice_method: str = "POST"


def parse_number(spec: str) -> PhoneNumber:
    """``+15550001111=http://host:port/path`` -> :class:`PhoneNumber`; ``ValueError`` saying
    what is wrong otherwise."""
    number, sep, url = spec.partition("=")
    number, url = number.strip(), url.strip()
    if not sep or not url:
        raise ValueError(f"{spec!r}: expected NUMBER=URL, e.g. +15550001111=http://127.0.0.1:5050/incoming-call")
    if not E164_RE.match(number):
        raise ValueError(f"{number!r} is not an E.164 number (+ then up to 15 digits, e.g. +15550001111)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a port out of range or not a number
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    return PhoneNumber(number, url)
