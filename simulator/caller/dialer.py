"""Placing a call, sans-IO: webhook POST → TwiML → stream target → a new :class:`CallerCore`.

The trio driver and the gevent driver (Locust's) must place a call exactly alike, or a bridge
would be judged differently by the two. So the sequence lives here once, and the drivers only
do its I/O. A :class:`Dialer` says what to do next and is told what happened:

* :meth:`Dialer.start` → :class:`PostWebhook` (a voice webhook: POST this form with these
  headers, signed as Twilio signs), :class:`OpenStream` (a ``ws(s)://`` target) or
  :class:`DialFailed`;
* :meth:`Dialer.webhook_answered` (or :meth:`Dialer.webhook_failed`) → :class:`OpenStream`
  — the ``<Stream>`` URL, its signed upgrade headers, how long Twilio's ``<Say>``/``<Pause>``
  hold it back, and the core that will play the call — or :class:`DialFailed`;
* :meth:`Dialer.stream_failed` when the WebSocket could not be opened or broke, and
  :meth:`Dialer.ended` once the driver is done.

Everything learnt on the way goes into :attr:`Dialer.result` (a :class:`CallResult`), with
the error messages a user reads when a call cannot be placed.
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass

from ..audio.utterances import UtteranceBank
from . import twilio_wire as tw
from .call_result import CallResult
from .connect_hints import plain_port_hint
from .core import CallerConfig, CallerCore
from .impairments import Impairments
from .script import Step
from .sids import make_sid
from .webhook import (
    CallParties,
    NoStream,
    StreamTarget,
    TwimlError,
    WebhookExchange,
    preamble_ms,
    read_answer,
    stream_headers,
    webhook_form,
    webhook_headers,
)

ABORTED = "call aborted"


@dataclass(frozen=True)
class PostWebhook:
    """POST ``form`` to ``url`` with ``headers``; ``tls``: verify it with :func:`tls_context`.
    Redirects are not followed (Twilio's own requests do not follow them either)."""

    url: str
    form: dict[str, str]
    headers: dict[str, str]
    signed: bool

    @property
    def tls(self) -> bool:
        return self.url.lower().startswith("https:")

    def read(self, status: int, content_type: str | None, text: str, body: bytes) -> WebhookExchange:
        """The exchange, with the answer read as Twilio reads it; raises :class:`TwimlError`
        for a non-200 answer or TwiML that cannot be executed."""
        return read_answer(WebhookExchange(self.url, self.form, signed=self.signed), status, content_type, text, body)


def webhook_request(url: str, parties: CallParties, auth_token: str | None) -> PostWebhook:
    """The voice webhook request Twilio sends for a new call to ``url``."""
    form = webhook_form(parties)
    return PostWebhook(url, form, webhook_headers(auth_token, url, form), signed=bool(auth_token))


@dataclass(frozen=True)
class OpenStream:
    """Open the media WebSocket to ``url`` with ``headers`` (``tls``: ``wss://``, use
    :func:`tls_context`), after ``preamble_s`` seconds when it is not None (Twilio plays the
    ``<Say>``/``<Pause>`` before ``<Connect>`` first), and drive ``core`` on it."""

    url: str
    headers: list[tuple[bytes, bytes]]
    preamble_s: float | None
    core: CallerCore

    @property
    def tls(self) -> bool:
        return self.url.lower().startswith("wss:")


@dataclass(frozen=True)
class DialFailed:
    """The call cannot be placed; ``error`` is also :attr:`CallResult.error`."""

    error: str


DialStep = PostWebhook | OpenStream | DialFailed


def target_kind(target: str) -> str | None:
    """``"webhook"`` for http(s)://, ``"stream"`` for ws(s)://, else None."""
    scheme = target.split(":", 1)[0].lower()
    return "webhook" if scheme in ("http", "https") else "stream" if scheme in ("ws", "wss") else None


class Dialer:
    """One call's placing (see the module docstring); :attr:`result` is what it learnt."""

    def __init__(
        self,
        target: str,
        script: list[Step],
        *,
        auth_token: str | None = None,
        bank: UtteranceBank | None = None,
        impairments: Impairments | None = None,
        wire_policy: tw.WirePolicy | None = None,
        parties: CallParties | None = None,
        custom_parameters: dict[str, str] | None = None,
        max_duration_ms: int = 300_000,
        rng: random.Random | None = None,
    ) -> None:
        self.rng = rng or random.Random()
        self.parties = parties or CallParties.new(self.rng)
        self.script = script
        self.auth_token = auth_token
        self.bank = bank
        self.impairments = impairments
        self.wire_policy = wire_policy
        self.max_duration_ms = max_duration_ms
        self.params = dict(custom_parameters or {})
        self.result = CallResult(target)
        self._request: PostWebhook | None = None

    @property
    def core(self) -> CallerCore | None:
        return self.result.core

    def start(self, now_ns: int) -> DialStep:
        result = self.result
        result.timings["placed_ns"] = now_ns
        kind = target_kind(result.target)
        if kind == "webhook":
            self._request = webhook_request(result.target, self.parties, self.auth_token)
            return self._request
        if kind == "stream":
            result.stream_url = result.target
            return self._open(self.params, None)
        return self._fail(f"target must be http(s):// (voice webhook) or ws(s):// (stream), not {result.target!r}")

    def webhook_answered(self, now_ns: int, status: int, content_type: str | None, text: str,
                         body: bytes) -> OpenStream | DialFailed:
        """The webhook answered (``now_ns``: when its answer was in)."""
        assert self._request is not None
        try:
            exchange = self._request.read(status, content_type, text, body)
        except TwimlError as exc:
            return self.webhook_failed(exc)
        result = self.result
        result.webhook = exchange
        result.timings["webhook_ns"] = now_ns
        answer = exchange.result
        result.notes += exchange.notes
        if isinstance(answer, NoStream):
            return self._fail(f"no stream: {answer.reason}"
                              + (f" (said: {' / '.join(answer.says)})" if answer.says else ""))
        assert isinstance(answer, StreamTarget)
        result.stream_url = answer.url
        result.notes += list(answer.notes)
        params = {**answer.parameters, **self.params}  # the caller's own parameters win over the TwiML's
        preamble_s = None
        if answer.preamble:
            result.notes += [p.note for p in answer.preamble]
            preamble_s = preamble_ms(answer.preamble) / 1000
        return self._open(params, preamble_s)

    def webhook_failed(self, exc: BaseException) -> DialFailed:
        """The POST failed (refused, reset) or its answer could not be used."""
        return self._fail(f"webhook failed: {str(exc) or describe(exc)}")

    def webhook_timed_out(self, timeout_s: float) -> DialFailed:
        """The POST got no answer in time: the server took the connection and said nothing, or
        the connection itself did not open. The drivers' timeout exceptions carry no message."""
        return self._fail(f"webhook failed: no answer within {timeout_s:g} s")

    def stream_failed(self, now_ns: int, exc: BaseException) -> None:
        """The WebSocket could not be opened, or broke before the call ended."""
        core, result = self.result.core, self.result
        assert core is not None and result.stream_url is not None
        if core.t0_ns is None:
            result.error = f"stream connect to {result.stream_url} failed: {describe(exc)}"
            hint = plain_port_hint(result.stream_url, exc,
                                   webhook_url=result.webhook.url if result.webhook is not None else None)
            if hint:
                result.error += f"; {hint}"
        elif not core.finished:  # broke mid-call: keep what was recorded
            core.peer_closed(now_ns, None, describe(exc))
            result.error = f"stream broke: {describe(exc)}"

    def aborted(self) -> CallResult:
        """Hung up from elsewhere before the stream began."""
        self.result.error = ABORTED
        return self.result

    def ended(self) -> CallResult:
        """The driver is done with the stream: a call hung up from elsewhere says so."""
        core = self.result.core
        if core is not None and (core.end_reason == "aborted" or (core.t0_ns is not None and not core.finished)):
            self.result.error = ABORTED
        return self.result

    def _open(self, params: dict[str, str], preamble_s: float | None) -> OpenStream:
        ident = tw.StreamIdentity(self.parties.account_sid, self.parties.call_sid, make_sid("MZ", self.rng), params)
        config = CallerConfig(ident, impairments=self.impairments or Impairments(),
                              wire_policy=self.wire_policy or tw.WirePolicy(), max_duration_ms=self.max_duration_ms)
        core = self.result.core = CallerCore(config, self.script, self.bank)
        url = self.result.stream_url
        assert url is not None
        return OpenStream(url, stream_headers(self.auth_token, url), preamble_s, core)

    def _fail(self, error: str) -> DialFailed:
        self.result.error = error
        return DialFailed(error)


_TLS: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """One TLS context per process: building one takes long enough to stall every other
    call on the event loop (its pacing) each time a call starts."""
    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context()
    return _TLS


def describe(exc: BaseException) -> str:
    """A one-line reason: the HTTP status of a refused upgrade, else the OS error underneath."""
    status = getattr(exc, "status_code", None)
    if status is not None:
        return f"HTTP {status}"
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) or str(seen):
            return f"{type(seen).__name__}: {seen}" if str(seen) else type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


