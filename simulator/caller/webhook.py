"""Twilio's voice webhook and TwiML, sans-IO (protocols.md 1.4–1.6).

When a call comes in, Twilio POSTs a form to the number's voice URL, signs it
with ``X-Twilio-Signature``, reads the TwiML it gets back and, for
``<Connect><Stream url=…>``, opens the media WebSocket — signing that upgrade
too. This module builds the request and reads the answer; :mod:`.dialer` puts
the steps in order, and the HTTP itself is the drivers' job.

Signatures come from the ``twilio`` package's own ``RequestValidator`` so they
match what a bridge validating with the same package expects.
"""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit, urlunsplit

from twilio.request_validator import RequestValidator

from .sids import make_sid

API_VERSION = "2010-04-01"
# What Twilio's HTTP client and media-stream client announce. The webhook UA is
# widely seen in logs; the stream UA is **unconfirmed** (seen in third-party logs).
WEBHOOK_USER_AGENT = "TwilioProxy/1.1"
STREAM_USER_AGENT = "Twilio.TmeWs/1.0"


@dataclass(frozen=True)
class CallParties:
    account_sid: str
    call_sid: str
    from_: str = "+15005550006"
    to: str = "+15005550001"
    direction: str = "inbound"
    call_status: str = "ringing"
    legacy_fields: bool = True  # Caller/Called: seen in real requests, not in the doc

    @classmethod
    def new(cls, rng: random.Random | None = None, **kw: object) -> "CallParties":
        return cls(make_sid("AC", rng), make_sid("CA", rng), **kw)  # type: ignore[arg-type]


def webhook_form(p: CallParties) -> dict[str, str]:
    """The form fields Twilio POSTs for a new call (TwiML request page)."""
    form = {
        "CallSid": p.call_sid,
        "AccountSid": p.account_sid,
        "From": p.from_,
        "To": p.to,
        "CallStatus": p.call_status,
        "Direction": p.direction,
        "ApiVersion": API_VERSION,
    }
    if p.legacy_fields:
        form["Caller"] = p.from_
        form["Called"] = p.to
    return form


def sign(auth_token: str, url: str, params: dict[str, str] | None = None) -> str:
    """``X-Twilio-Signature`` for ``url`` (exactly as requested) and POST ``params``."""
    return RequestValidator(auth_token).compute_signature(url, params or {})


def webhook_headers(auth_token: str | None, url: str, form: dict[str, str]) -> dict[str, str]:
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": WEBHOOK_USER_AGENT,
        "Accept": "*/*",
    }
    if auth_token:
        headers["X-Twilio-Signature"] = sign(auth_token, url, form)
    return headers


def stream_headers(auth_token: str | None, stream_url: str) -> list[tuple[bytes, bytes]]:
    """Headers of the media WebSocket upgrade.

    Twilio signs the stream's own ``wss://host/path`` URL with empty params
    (protocols.md 1.6; twilio-agent-connect-python#16). We sign the URL we
    actually connect to, so a local ``ws://`` stream is signed as ``ws://``.
    """
    headers = [(b"User-Agent", STREAM_USER_AGENT.encode())]
    if auth_token:
        headers.append((b"X-Twilio-Signature", sign(auth_token, stream_url).encode()))
    return headers


# ------------------------------------------------------------------- TwiML


#: How fast ``<Say>`` text is taken to be spoken before the stream opens. An **estimate**
#: (about a conversational pace): the real time depends on the voice, the language and the
#: text, and is only known by listening — so the note says it is an estimate.
SAY_WORDS_PER_MINUTE = 150
PAUSE_DEFAULT_S = 1.0  # <Pause> without length (Twilio's documented default)
#: ``loop="0"`` on ``<Say>``/``<Play>``: Twilio repeats the verb until the call ends; taken as
#: this many plays (a bound, not Twilio's), and also the most any ``loop`` counts.
MAX_LOOP = 100


def say_seconds(text: str, loop: int = 1) -> float:
    """How long ``<Say>`` takes to speak ``text`` ``loop`` times at :data:`SAY_WORDS_PER_MINUTE`."""
    return len(text.split()) * loop * 60 / SAY_WORDS_PER_MINUTE


def loop_count(raw: str | None) -> int:
    """Times a ``<Say>``/``<Play>`` with ``loop=raw`` plays: default 1, ``0`` (Twilio: until the
    call ends) is :data:`MAX_LOOP`, anything else clamped to 1…:data:`MAX_LOOP`.
    ``ValueError`` when ``raw`` is not an integer."""
    n = 1 if raw is None else int(raw)
    return MAX_LOOP if n == 0 else max(1, min(n, MAX_LOOP))


@dataclass(frozen=True)
class Preamble:
    """A verb Twilio plays before it reaches ``<Connect>``: the stream opens only after it.

    ``ms`` is how long it holds the stream back, or None when that cannot be known
    offline (``<Play>`` would need the file fetched); ``note`` says which it was.
    """

    verb: str  # Say | Play | Pause
    ms: float | None
    note: str


def _loop(verb: ET.Element) -> int:
    """``loop`` of a ``<Say>``/``<Play>`` (:func:`loop_count`; not an integer counts once)."""
    try:
        return loop_count(verb.get("loop"))
    except ValueError:
        return 1


def _preamble(verb: ET.Element) -> Preamble | None:
    if verb.tag == "Pause":
        raw = verb.get("length")
        try:
            seconds = PAUSE_DEFAULT_S if raw is None else max(0.0, float(raw))
        except ValueError:
            seconds = PAUSE_DEFAULT_S
        ms = seconds * 1000
        return Preamble("Pause", ms, f"<Pause length=\"{raw or '1'}\"> before <Connect>: "
                                     f"the stream opened {ms:.0f} ms later, as Twilio would")
    if verb.tag == "Say":
        loop = _loop(verb)
        words = len((verb.text or "").split()) * loop
        ms = say_seconds(verb.text or "", loop) * 1000
        forever = (" (loop=\"0\": Twilio repeats it until the call ends and never reaches <Connect>; "
                   f"counted as {MAX_LOOP} plays)") if verb.get("loop", "").strip() == "0" else ""
        return Preamble("Say", ms, f"<Say> before <Connect> ({words} word(s)): the stream opened {ms:.0f} ms "
                                   f"later, an estimate at {SAY_WORDS_PER_MINUTE} words per minute{forever}")
    if verb.tag == "Play":
        what = (verb.text or "").strip() or f"digits={verb.get('digits', '')}"
        return Preamble("Play", None, f"<Play> {what} before <Connect>: its length is unknown offline; "
                                      "the stream opened without waiting for it")
    return None


def preamble_ms(preamble: tuple[Preamble, ...]) -> float:
    """How long Twilio plays before it opens the stream, as far as it can be known offline."""
    return sum(p.ms for p in preamble if p.ms is not None)


@dataclass(frozen=True)
class StreamTarget:
    """Where ``<Connect><Stream>`` says to send the media, and what to announce."""

    url: str  # ws:// or wss://, after mapping http(s) and resolving relative URLs
    twiml_url: str  # as written in the TwiML
    parameters: dict[str, str]
    notes: tuple[str, ...] = ()  # things real Twilio would reject or handle differently
    says: tuple[str, ...] = ()  # <Say> text before <Connect> (Twilio speaks it first)
    preamble: tuple[Preamble, ...] = ()  # <Say>/<Play>/<Pause> before <Connect>, in order


@dataclass(frozen=True)
class NoStream:
    """TwiML that does not connect a bidirectional stream (busy, reject, hang up...)."""

    reason: str
    says: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()


class TwimlError(ValueError):
    pass


def to_ws(url: str) -> tuple[str, list[str]]:
    """A ``<Stream url>`` (absolute) as the WebSocket URL to open: ``http``→``ws``,
    ``https``→``wss``, an empty path made ``/``; and notes on what real Twilio would refuse or
    change (a URL that is not ``wss://``, a query string). :class:`TwimlError` for a scheme that
    is not a WebSocket's or HTTP's."""
    notes: list[str] = []
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    mapped = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(scheme)
    if mapped is None:
        raise TwimlError(f"<Stream url={url!r}>: scheme {scheme!r} is not a WebSocket URL")
    if mapped != "wss":
        notes.append(f"stream URL {url} is not wss://; real Twilio rejects it (error 31922), "
                     "accepted here for local runs")
    if parts.query:
        notes.append(f"stream URL {url} has a query string; real Twilio drops it, "
                     "use <Parameter> instead")
    return urlunsplit((mapped, parts.netloc, parts.path or "/", parts.query, "")), notes


def twiml_root(xml: str | bytes, what: str = "TwiML") -> ET.Element:
    """The ``<Response>`` element of a TwiML document; :class:`TwimlError` when ``xml`` (named
    ``what`` in the message) is not XML or its root is another element."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise TwimlError(f"{what} is not XML: {exc}") from None
    if root.tag != "Response":
        raise TwimlError(f"TwiML root is <{root.tag}>, expected <Response>")
    return root


def parse_twiml(xml: str | bytes, webhook_url: str) -> StreamTarget | NoStream:
    """Read the webhook's TwiML the way Twilio executes it, up to the stream."""
    root = twiml_root(xml, "webhook answer")
    says: list[str] = []
    verbs: list[str] = []
    preamble: list[Preamble] = []
    for verb in root:
        verbs.append(verb.tag)
        if (played := _preamble(verb)) is not None:
            preamble.append(played)
        if verb.tag == "Say":
            says.append((verb.text or "").strip())
        elif verb.tag == "Connect":
            streams = [c for c in verb if c.tag == "Stream"]
            if not streams:
                return NoStream("<Connect> without <Stream>", tuple(says), tuple(verbs))
            s = streams[0]
            raw = s.get("url")
            if not raw:
                raise TwimlError("<Stream> without a url attribute")
            url, notes = to_ws(urljoin(webhook_url, raw))
            params = {p.get("name", ""): p.get("value", "") for p in s if p.tag == "Parameter"}
            return StreamTarget(url, raw, params, tuple(notes), tuple(says), tuple(preamble))
        elif verb.tag == "Start" and any(c.tag == "Stream" for c in verb):
            # Unidirectional: Twilio would stream but never play what the app sends.
            verbs[-1] = "Start/Stream"
        elif verb.tag in ("Hangup", "Reject"):
            return NoStream(f"<{verb.tag}> before any <Connect><Stream>", tuple(says), tuple(verbs))
    return NoStream("no <Connect><Stream> in the TwiML", tuple(says), tuple(verbs))


@dataclass
class WebhookExchange:
    """What happened on the webhook leg, for the timeline and the report."""

    url: str
    form: dict[str, str]
    signed: bool
    status: int | None = None
    content_type: str | None = None
    body: str = ""
    result: StreamTarget | NoStream | None = None
    notes: list[str] = field(default_factory=list)


def read_answer(ex: WebhookExchange, status: int, content_type: str | None, text: str, body: bytes) -> WebhookExchange:
    """Record the webhook's HTTP answer in ``ex`` and read its TwiML as Twilio would.

    Raises :class:`TwimlError` for a non-200 or bad TwiML.
    """
    ex.status = status
    ex.content_type = content_type
    ex.body = text
    if status != 200:
        raise TwimlError(f"webhook {ex.url} answered HTTP {status}: {text[:200]!r}")
    ex.result = parse_twiml(body, ex.url)
    ct = (content_type or "").split(";")[0].strip()
    if ct not in ("text/xml", "application/xml"):
        ex.notes.append(f"webhook Content-Type is {ct or 'missing'}; Twilio expects text/xml")
    return ex
