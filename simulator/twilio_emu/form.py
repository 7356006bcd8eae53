"""Checks of the form fields a Twilio REST request carries, shared by every resource the
emulator serves (Calls, IncomingPhoneNumbers): Twilio answers a bad URL, method or number the
same way whichever resource it was sent to, so the emulator does too. No I/O."""

from __future__ import annotations

from urllib.parse import urlsplit

from . import errors
from .errors import TwilioError


def check_url(url: str, name: str) -> None:
    """An absolute http(s) URL. Twilio's code for a bad URL is confirmed on Calls (21205); on
    other resources it is assumed to be the same."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TwilioError(errors.URL_INVALID, f"{name} is not a valid URL: {url}", 400)


def method(value: str | None, name: str, default: str = "POST") -> str:
    """``GET`` or ``POST`` (any case); ``default`` when the field is absent or empty."""
    if not value:
        return default
    upper = value.upper()
    if upper not in ("GET", "POST"):
        raise TwilioError(errors.INVALID_PARAMETER, f"{name} must be GET or POST, not {value!r}", 400)
    return upper


def integer(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise TwilioError(errors.INVALID_PARAMETER, f"{name} must be an integer, not {value!r}", 400) from None
