"""What every REST resource the emulator serves (Calls, Recordings, IncomingPhoneNumbers) shares:
the checks of the form fields a request carries (Twilio answers a bad URL, method or number the
same way whichever resource it was sent to, so the emulator does too), the paging envelope of a
list, and how dates and numbers are written. No I/O."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import urlencode, urlsplit

from . import errors
from .errors import TwilioError

API_VERSION: Final = "2010-04-01"
DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 1000
NANP: Final = re.compile(r"^\+1(\d{3})(\d{3})(\d{4})$")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc2822(ts: float | None) -> str | None:
    """``Tue, 31 Aug 2010 20:36:28 +0000`` as Twilio writes dates (English names, whatever the locale).

    ``gmtime`` only converts the instant it is given: no clock is read here."""
    if ts is None:
        return None
    t = time.gmtime(int(ts))
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")


def formatted(number: str) -> str:
    """A number for display: ``(415) 555-1212`` for North American numbers, else as given (also
    the name Twilio gives a new number)."""
    m = NANP.match(number)
    return f"({m[1]}) {m[2]}-{m[3]}" if m else number


class _HasSid(Protocol):
    @property
    def sid(self) -> str: ...


T = TypeVar("T", bound=_HasSid)


def page(items: Sequence[T], key: str, path: str, kept: Sequence[tuple[str, str]],
         page_size: str | None, page_no: str | None, page_token: str | None,
         render: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    """One page of ``items`` (already filtered and in list order) in Twilio's paging envelope,
    the items under ``key``. ``kept`` are the filters to repeat in the page URIs.

    ``PageSize`` is clamped to 1…1000 (default 50), ``Page`` counts from 0. The next page's URI
    carries ``PageToken=PA<last SID of this page>``, as Twilio's does: following it starts right
    after that item, so a list read page by page neither skips nor repeats an item when newer
    ones are added meanwhile. A token whose SID is no longer listed falls back to ``Page``."""
    size = max(1, min(integer(page_size, "PageSize", DEFAULT_PAGE_SIZE), MAX_PAGE_SIZE))
    number = max(0, integer(page_no, "Page", 0))
    start = number * size
    token = page_token or ""
    if token.startswith("PA"):
        after = next((i for i, item in enumerate(items) if item.sid == token[2:]), None)
        if after is not None:
            start = after + 1
    chunk = items[start:start + size]

    def uri(n: int, tok: str | None = None) -> str:
        params = [*kept, ("PageSize", str(size)), ("Page", str(n))]
        if tok:
            params.append(("PageToken", tok))
        return f"{path}?{urlencode(params)}"

    more = start + size < len(items)
    return {
        key: [render(item) for item in chunk],
        "end": start + max(len(chunk), 1) - 1,
        "first_page_uri": uri(0),
        "next_page_uri": uri(number + 1, "PA" + chunk[-1].sid) if more and chunk else None,
        "page": number,
        "page_size": size,
        "previous_page_uri": uri(number - 1) if number > 0 else None,
        "start": start,
        "uri": uri(number, token or None),
    }


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
