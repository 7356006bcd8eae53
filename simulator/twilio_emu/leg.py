"""One call leg as Twilio runs it, and two legs joined, sans-IO.

A :class:`Leg` runs its TwiML (:mod:`.twiml`) one verb at a time and says what to do next
with a :data:`Step`: :class:`Fetch` (a signed webhook request for TwiML), :class:`OpenStream`
(a signed Media Stream upgrade), :class:`Speak` (``<Say>`` audio to make), :class:`FetchAudio`
(``<Play>``'s file to fetch), :class:`Wait` (``<Pause>``), :class:`Bridge` (``<Dial>``: ring
the numbers, bridge the first to answer) or :class:`End` (the leg is over, with the status and
why). The driver does the
I/O and reports back (:meth:`Leg.fetched`, :meth:`Leg.stream_opened`,
:meth:`Leg.stream_closed_by_server`, :meth:`Leg.speech_ready`…), which answer the next step.

What a leg plays into the call — its stream's media, or ``<Say>`` audio — goes through one
:class:`~..caller.playback.Playback`, Twilio's queue: 20 ms play-out, marks echoed once the
audio before them has played, ``clear``. :class:`Join` puts two legs on one 20 ms grid: each
:meth:`Join.tick` plays one frame out of each leg and hands it to the other leg, whose stream
sends it as inbound ``media``; ``callsim call`` is one leg with a scripted party, the emulator
two legs joined. The messages to send on a leg's stream pile up in :attr:`Leg.outbox` until the
driver takes them (:meth:`Leg.take_outbox`).
"""

from __future__ import annotations

import base64
import logging
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlencode

from ..audio.codec import SILENCE_BYTE, SILENCE_FRAME
from ..caller import twilio_wire as tw
from ..caller.playback import Playback
from ..caller.sids import make_sid
from ..caller.webhook import (
    WEBHOOK_USER_AGENT,
    CallParties,
    say_seconds,
    sign,
    stream_headers,
    webhook_form,
    webhook_headers,
)
from .calls import BUSY, COMPLETED, NO_ANSWER, Instructions
from .twiml import ConnectStream, Dial, Hangup, Pause, Play, Redirect, Reject, Say, TwimlInvalid, Verb, parse

log = logging.getLogger("callsim.twilio_emu")

_SAY_DONE: Final = "\x00say-done"  # internal mark: never reaches a stream


@dataclass(frozen=True, slots=True)
class Fetch:
    """Request TwiML: ``url`` is the public URL (what is signed); ``body`` the form for POST
    (for GET the form is in the URL already)."""

    url: str
    method: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class OpenStream:
    url: str  # the public ws(s):// URL, as signed
    headers: list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Speak:
    """Make ``text`` into 8 kHz μ-law and hand it to :meth:`Leg.speech_ready` (``None`` when it
    cannot be made: the leg then plays silence for ``estimate_s``, the time it would take)."""

    text: str
    voice: str | None
    language: str | None
    loop: int
    estimate_s: float


@dataclass(frozen=True, slots=True)
class FetchAudio:
    """``<Play>``: fetch ``url`` (GET, unsigned, as Twilio fetches media) and hand its audio as
    8 kHz μ-law to :meth:`Leg.audio_ready` (``None`` when it cannot be had: the verb is skipped)."""

    url: str
    loop: int


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float


@dataclass(frozen=True, slots=True)
class Bridge:
    """``<Dial>``: ring ``dial.numbers`` for ``dial.timeout_s``, bridge the first to answer until
    either side hangs up, then answer :meth:`Leg.dial_ended`."""

    dial: Dial


@dataclass(frozen=True, slots=True)
class End:
    """The leg is over. ``answered``: whether it had been answered (an unanswered leg ends with
    ``status``: busy, no-answer, failed); ``reason`` is for the log."""

    status: str
    reason: str
    answered: bool


Step = Fetch | OpenStream | Speak | FetchAudio | Wait | Bridge | End


@dataclass
class _Stream:
    ident: tw.StreamIdentity
    seq: int = 0
    chunk: int = 0
    warned: bool = False

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


@dataclass
class Leg:
    """One call of the pair: its SIDs and parties, its TwiML, its stream, its playback.

    ``direction``: ``outbound-api`` (the REST-created call) or ``inbound`` (the call a
    configured number receives, from a REST-created call or a ``<Dial>``); ``from_``/``to`` as
    that call shows them."""

    call_sid: str
    account_sid: str
    auth_token: str
    from_: str
    to: str
    direction: str
    rng: random.Random = field(default_factory=random.Random)
    playback: Playback = field(default_factory=Playback)
    policy: tw.WirePolicy = field(default_factory=tw.WirePolicy)
    answered: bool = False
    ended: bool = False
    stream: _Stream | None = None
    outbox: list[str] = field(default_factory=list)
    speech_done: bool = False  # the <Say> audio queued last has played
    _verbs: deque[Verb] = field(default_factory=deque)
    _pending_stream: ConnectStream | None = None
    _document_url: str | None = None

    # -- TwiML ---------------------------------------------------------------------------

    def load(self, instructions: Instructions, call_status: str) -> Step:
        """Run ``instructions`` from the start (the call's first TwiML, or a redirect): the
        verbs left of the previous document are dropped."""
        self._verbs.clear()
        if instructions.url:
            return self._fetch(instructions.url, instructions.method, call_status)
        return self._run_document(instructions.twiml or "", None)

    def fetched(self, status: int, body: bytes) -> Step:
        """The webhook answered (what :class:`Fetch` asked for)."""
        url = self._document_url
        if status != 200:
            return self._app_error(f"TwiML request to {url} answered HTTP {status}")
        return self._run_document(body, url)

    def fetch_failed(self, reason: str) -> Step:
        return self._app_error(f"TwiML request to {self._document_url} failed: {reason}")

    def next(self) -> Step:
        """The next verb's step; no verb left ends the call."""
        while self._verbs:
            verb = self._verbs.popleft()
            if isinstance(verb, Say):
                if not verb.text:
                    continue
                return Speak(verb.text, verb.voice, verb.language, verb.loop, say_seconds(verb.text, verb.loop))
            if isinstance(verb, Pause):
                return Wait(verb.seconds)
            if isinstance(verb, Hangup):
                return End(COMPLETED, "<Hangup>", self.answered)
            if isinstance(verb, Reject):
                if self.answered:  # Twilio ignores <Reject> on an answered call: it hangs up
                    return End(COMPLETED, "<Reject> on an answered call", True)
                return End(BUSY if verb.reason == "busy" else NO_ANSWER, f"<Reject reason={verb.reason}>", False)
            if isinstance(verb, Redirect):
                return self._fetch(verb.url, verb.method, "in-progress" if self.answered else "ringing")
            if isinstance(verb, Play):
                return FetchAudio(verb.url, verb.loop)
            if isinstance(verb, Dial):
                return Bridge(verb)
            assert isinstance(verb, ConnectStream)
            self._pending_stream = verb
            for note in verb.notes:
                log.warning("call %s: %s", self.call_sid, note)
            return OpenStream(verb.url, stream_headers(self.auth_token, verb.url))
        return End(COMPLETED, "no TwiML left", self.answered)

    def dial_ended(self, dial: Dial, status: str, dial_call_sid: str | None, duration_s: int | None) -> Step:
        """The ``<Dial>`` is over (``status``: ``completed`` once a party answered, else ``busy``,
        ``no-answer``, ``failed``, ``canceled``): its ``action`` gets ``DialCallStatus`` (and what
        it returns replaces the rest of this document), else the next verb runs."""
        if dial.action is None:
            return self.next()
        extra = {"DialCallStatus": status}
        if dial_call_sid:
            extra["DialCallSid"] = dial_call_sid
        if duration_s is not None:
            extra["DialCallDuration"] = str(duration_s)
        self._verbs.clear()
        return self._fetch(dial.action, dial.method, "in-progress", extra)

    def _fetch(self, url: str, method: str, call_status: str, extra: dict[str, str] | None = None) -> Fetch:
        self._document_url = url
        parties = CallParties(self.account_sid, self.call_sid, self.from_, self.to, self.direction, call_status)
        form = webhook_form(parties)
        if extra:
            form.update(extra)
        if method == "GET":
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(form)}"
            self._document_url = url
            return Fetch(url, "GET", {"User-Agent": WEBHOOK_USER_AGENT, "X-Twilio-Signature": sign(self.auth_token, url)},
                         b"")
        return Fetch(url, "POST", webhook_headers(self.auth_token, url, form), urlencode(form).encode())

    def _run_document(self, xml: str | bytes, url: str | None) -> Step:
        try:
            self._verbs.extend(parse(xml, url))
        except TwimlInvalid as exc:
            return self._app_error(f"invalid TwiML{f' from {url}' if url else ''}: {exc}")
        return self.next()

    def _app_error(self, why: str) -> End:
        """Twilio says "an application error has occurred" and hangs up."""
        log.warning("call %s: application error: %s; the call ends", self.call_sid, why)
        self._verbs.clear()
        return End(COMPLETED, f"application error: {why}", self.answered)

    # -- the stream ----------------------------------------------------------------------

    def stream_opened(self) -> list[str]:
        """The upgrade succeeded: ``connected`` and ``start`` to send."""
        verb = self._pending_stream
        assert verb is not None
        self._pending_stream = None
        ident = tw.StreamIdentity(self.account_sid, self.call_sid, make_sid("MZ", self.rng), dict(verb.parameters))
        self.stream = s = _Stream(ident)
        log.info("call %s: stream %s open to %s", self.call_sid, ident.stream_sid, verb.url)
        return [tw.connected_message(), tw.start_message(ident, s.next_seq())]

    def stream_failed(self, reason: str) -> Step:
        """The upgrade failed: Twilio reports a stream error and goes on with the next verb."""
        verb, self._pending_stream = self._pending_stream, None
        log.warning("call %s: stream to %s failed: %s", self.call_sid, verb.url if verb else "?", reason)
        return self.next()

    def stream_message(self, data: str | bytes) -> list[str]:
        """A message the stream's server sent; answers the marks to echo at once."""
        s = self.stream
        if s is None:
            return []
        msg = tw.parse_outbound(data, s.ident.stream_sid, self.policy)
        if isinstance(msg, tw.Invalid):
            if not s.warned:  # Twilio reports an invalid message once per stream
                s.warned = True
                log.warning("call %s: stream %s: warning %d: %s (ignored; the call goes on)",
                            self.call_sid, s.ident.stream_sid, msg.code, msg.reason)
            if msg.salvaged is None:
                return []
            msg = msg.salvaged
        if isinstance(msg, tw.OutMedia):
            self.playback.add_audio(msg.payload)
            return []
        if isinstance(msg, tw.OutMark):
            if self.playback.add_mark(msg.name):
                return [tw.mark_message(s.ident.stream_sid, s.next_seq(), msg.name)]
            return []
        _, names = self.playback.clear()
        return [tw.mark_message(s.ident.stream_sid, s.next_seq(), n) for n in names if n != _SAY_DONE]

    def stream_closed_by_server(self) -> Step:
        """The server closed the WebSocket: what it had queued is not played; the TwiML after
        ``<Connect>`` runs."""
        if self.stream is not None:
            log.info("call %s: stream %s closed by the server", self.call_sid, self.stream.ident.stream_sid)
        self._drop_stream()
        return self.next()

    def stop_stream(self) -> str | None:
        """End the stream from Twilio's side (hang-up, redirect): the ``stop`` to send, then close."""
        s = self.stream
        if s is None:
            return None
        stop = tw.stop_message(s.ident, s.next_seq())
        self._drop_stream()
        return stop

    def _drop_stream(self) -> None:
        self.stream = None
        self.outbox.clear()
        self.playback.clear()

    # -- <Say> ---------------------------------------------------------------------------

    def speech_ready(self, audio: bytes | None, step: Speak | FetchAudio) -> None:
        """Queue the ``<Say>`` (or ``<Play>``) audio (``None`` for ``<Say>``: silence as long as
        the words would take); :attr:`speech_done` turns true once it has played."""
        if audio is None:
            audio = bytes([SILENCE_BYTE]) * int(step.estimate_s * 8000) if isinstance(step, Speak) else b""
        self.speech_done = False
        for _ in range(step.loop):
            self.playback.add_audio(audio)
        if self.playback.add_mark(_SAY_DONE):
            self.speech_done = True

    # -- the 20 ms grid ------------------------------------------------------------------

    def play(self) -> bytes:
        """The frame this leg's party says into the call now (silence when nothing plays)."""
        if self.ended:
            return SILENCE_FRAME
        frame = self.playback.tick()
        if frame.echoed:
            s = self.stream
            for name in frame.echoed:
                if name == _SAY_DONE:
                    self.speech_done = True
                elif s is not None:
                    self.outbox.append(tw.mark_message(s.ident.stream_sid, s.next_seq(), name))
        return frame.audio

    def hear(self, audio: bytes) -> None:
        """What the other party says now: inbound ``media`` on this leg's stream."""
        s = self.stream
        if s is None:
            return
        s.chunk += 1
        payload = base64.b64encode(audio).decode("ascii")
        self.outbox.append(tw.media_message(s.ident.stream_sid, s.next_seq(), s.chunk, (s.chunk - 1) * 20, payload))

    def take_outbox(self) -> list[str]:
        out, self.outbox = self.outbox, []
        return out


@dataclass
class Join:
    """Two legs on one grid: each :meth:`tick`, what one says the other hears."""

    caller: Leg
    called: Leg
    ticks: int = 0

    def tick(self) -> tuple[bytes, bytes]:
        """One frame each way; returns (what the caller leg's party said, what the called's said)."""
        a, b = self.caller.play(), self.called.play()
        self.caller.hear(b)
        self.called.hear(a)
        self.ticks += 1
        return a, b

