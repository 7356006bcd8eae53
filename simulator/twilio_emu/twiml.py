"""TwiML as the emulator runs it, sans-IO: a document in, the verbs of one call leg out.

:func:`parse` reads a ``<Response>`` into a tuple of verbs, in order; the leg
(:mod:`.leg`) runs them one after another. Verbs the emulator runs: ``<Say>``,
``<Pause>``, ``<Hangup>``, ``<Reject>``, ``<Redirect>``, ``<Connect><Stream>`` with its
``<Parameter>`` children, ``<Play>`` (``url``, ``loop``; ``digits`` is refused) and
``<Dial>`` with up to 10 ``<Number>`` s (or one number as its text; ``timeout``, ``action``,
``method``, ``callerId``). Anything else (``<Gather>``, ``<Dial><Client>``/``<Sip>``/
``<Conference>``, an unknown tag, ``<Connect>`` without ``<Stream>``, a ``<Stream>`` without
a ``url``) raises
:class:`TwimlInvalid`: Twilio reports an application error and ends the call, and a test
against the emulator must not pass on TwiML it did not run.

URLs (``<Redirect>``, ``<Stream url>``) are resolved against the document's own URL, as
Twilio resolves relative ones; ``http(s)`` stream URLs become ``ws(s)``. What the two share with
``callsim call``'s reading of TwiML (:mod:`..caller.webhook`) comes from there: the root check,
the stream URL, ``loop`` and ``<Pause>``'s default. A stream URL real Twilio would refuse
(not ``wss://``: error 31922) is still opened, for local runs without a tunnel, and the
:class:`ConnectStream` carries the note the leg logs; a query string is dropped, as Twilio drops it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urljoin, urlsplit, urlunsplit

from ..caller.webhook import PAUSE_DEFAULT_S, TwimlError, loop_count, to_ws, twiml_root
from .errors import TwilioError
from .form import method as form_method

DIAL_TIMEOUT_DEFAULT_S: Final = 30  # <Dial timeout> (Twilio's documented default)
DIAL_TIMEOUT_MAX_S: Final = 600
MAX_DIAL_NUMBERS: Final = 10  # Twilio dials up to 10 <Number>s at once


class TwimlInvalid(ValueError):
    """TwiML Twilio would refuse (an application error ends the call)."""


@dataclass(frozen=True, slots=True)
class Say:
    text: str
    loop: int = 1
    voice: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    seconds: float = PAUSE_DEFAULT_S


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str = "rejected"  # or "busy"


@dataclass(frozen=True, slots=True)
class Redirect:
    url: str
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class ConnectStream:
    """``<Connect><Stream url>``: ``url`` is absolute ``ws(s)://``; ``parameters`` become the
    ``start`` message's ``customParameters``; ``notes``: what real Twilio would refuse or change."""

    url: str
    parameters: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Play:
    """``<Play loop>url</Play>``: audio fetched from ``url`` (absolute http(s)), played ``loop`` times."""

    url: str
    loop: int = 1


@dataclass(frozen=True, slots=True)
class Dial:
    """``<Dial>``: ring ``numbers`` at once, bridge the first to answer; ``action`` (absolute) gets
    ``DialCallStatus`` when the dialled party is gone, else the next verb runs."""

    numbers: tuple[str, ...]
    timeout_s: int = DIAL_TIMEOUT_DEFAULT_S
    action: str | None = None
    method: str = "POST"
    caller_id: str | None = None


Verb = Say | Pause | Hangup | Reject | Redirect | ConnectStream | Play | Dial


def parse(xml: str | bytes, base_url: str | None = None) -> tuple[Verb, ...]:
    """The verbs of a TwiML document; ``base_url``: where it came from (None for inline TwiML)."""
    try:
        root = twiml_root(xml)
    except TwimlError as exc:
        raise TwimlInvalid(str(exc)) from None
    return tuple(_verb(el, base_url) for el in root)


def _verb(el: ET.Element, base_url: str | None) -> Verb:
    tag = el.tag
    if tag == "Say":
        return Say((el.text or "").strip(), _loop(el), el.get("voice"), el.get("language"))
    if tag == "Pause":
        raw = el.get("length")
        try:
            seconds = PAUSE_DEFAULT_S if raw is None else float(raw)
        except ValueError:
            raise TwimlInvalid(f"<Pause length={raw!r}> is not a number") from None
        if seconds < 0:
            raise TwimlInvalid(f"<Pause length={raw!r}> is negative")
        return Pause(seconds)
    if tag == "Hangup":
        return Hangup()
    if tag == "Reject":
        reason = el.get("reason", "rejected")
        if reason not in ("rejected", "busy"):
            raise TwimlInvalid(f"<Reject reason={reason!r}>: expected rejected or busy")
        return Reject(reason)
    if tag == "Redirect":
        target = (el.text or "").strip()
        if not target:
            raise TwimlInvalid("<Redirect> without a URL")
        url = _absolute(target, base_url, ("http", "https"), "<Redirect>")
        return Redirect(url, _method(el.get("method")))
    if tag == "Connect":
        streams = [c for c in el if c.tag == "Stream"]
        if not streams:
            inner = ", ".join(f"<{c.tag}>" for c in el) or "nothing"
            raise TwimlInvalid(f"<Connect> with {inner}: the emulator connects <Stream> only")
        s = streams[0]
        raw = s.get("url")
        if not raw:
            raise TwimlInvalid("<Stream> without a url attribute")
        url, notes = to_ws(_absolute(raw, base_url, ("ws", "wss", "http", "https"), "<Stream url>"))
        parts = urlsplit(url)
        if parts.query:  # Twilio drops it (to_ws's note says so)
            url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        params = {p.get("name", ""): p.get("value", "") for p in s if p.tag == "Parameter"}
        return ConnectStream(url, params, s.get("name"), tuple(notes))
    if tag == "Play":
        if el.get("digits") is not None:
            raise TwimlInvalid("<Play digits>: the emulator plays no DTMF")
        target = (el.text or "").strip()
        if not target:
            raise TwimlInvalid("<Play> without a URL")
        return Play(_absolute(target, base_url, ("http", "https"), "<Play>"), _loop(el))
    if tag == "Dial":
        return _dial(el, base_url)
    raise TwimlInvalid(f"<{tag}> is not supported by the emulator")


def _dial(el: ET.Element, base_url: str | None) -> Dial:
    other = [c.tag for c in el if c.tag != "Number"]
    if other:
        raise TwimlInvalid(f"<Dial><{other[0]}>: the emulator dials <Number> only")
    numbers = tuple((c.text or "").strip() for c in el)
    if not numbers and (el.text or "").strip():
        numbers = ((el.text or "").strip(),)
    if not numbers or not all(numbers):
        raise TwimlInvalid("<Dial> without a number")
    if len(numbers) > MAX_DIAL_NUMBERS:
        raise TwimlInvalid(f"<Dial> with {len(numbers)} <Number>s: Twilio dials at most {MAX_DIAL_NUMBERS}")
    raw = el.get("timeout")
    try:
        timeout = DIAL_TIMEOUT_DEFAULT_S if raw is None else int(raw)
    except ValueError:
        raise TwimlInvalid(f"<Dial timeout={raw!r}> is not an integer") from None
    action = el.get("action")
    return Dial(numbers, max(1, min(timeout, DIAL_TIMEOUT_MAX_S)),
                _absolute(action, base_url, ("http", "https"), "<Dial action>") if action else None,
                _method(el.get("method")), el.get("callerId"))


def _loop(el: ET.Element) -> int:
    raw = el.get("loop")
    try:
        return loop_count(raw)
    except ValueError:
        raise TwimlInvalid(f"<{el.tag} loop={raw!r}> is not an integer") from None


def _method(value: str | None) -> str:
    try:
        return form_method(value, "method")
    except TwilioError as exc:
        raise TwimlInvalid(exc.message) from None


def _absolute(url: str, base_url: str | None, schemes: tuple[str, ...], what: str) -> str:
    full = urljoin(base_url, url) if base_url else url
    parts = urlsplit(full)
    if parts.scheme.lower() not in schemes or not parts.netloc:
        raise TwimlInvalid(f"{what} {url!r} is not an absolute {'/'.join(schemes)} URL")
    return full
