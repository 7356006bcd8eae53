"""Twilio's REST ``Calls`` resource, sans-IO: a request in, a response out.

:meth:`RestCore.handle` takes ``(method, target, headers, body)`` — the request target with its
query string, the header pairs, the form body — and returns a :class:`Response` (status, header
pairs, JSON bytes), as ``api.twilio.com`` answers it:

* ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json``: create (``To``, ``From``, ``Url`` or
  ``Twiml``, ``Method``, ``StatusCallback``, ``StatusCallbackEvent``, ``StatusCallbackMethod``,
  ``Record``, ``Timeout``); 201 with the call.
* ``GET …/Calls.json``: a page of calls, newest first, in Twilio's paging shape (``calls``,
  ``page``, ``page_size``, ``start``, ``end``, ``uri``, ``first_page_uri``, ``next_page_uri``,
  ``previous_page_uri``), filtered by ``To``, ``From``, ``Status``, ``ParentCallSid``; the date
  filters (``StartTime<`` …) are accepted and not applied.
* ``GET …/Calls/{Sid}.json``: fetch; ``POST`` the same: update (``Status=completed|canceled``
  hangs up, ``Url``/``Twiml`` redirects).
* ``GET …/Recordings.json`` (filter ``CallSid``), ``…/Calls/{Sid}/Recordings.json``,
  ``…/Recordings/{Sid}.json`` and the media, ``…/Recordings/{Sid}`` or ``.wav``
  (:mod:`.recordings`); media is served without auth, as Twilio's is unless the account turns
  on HTTP auth for media.

Every request needs HTTP Basic auth with the account's SID and auth token (401, code 20003,
otherwise); errors are Twilio's JSON (:mod:`.errors`). What happened goes to the store's events
(:class:`~.calls.CallStore`) for the call legs. Time comes from ``clock`` (seconds since the
Unix epoch, UTC), never from the wall inside.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import orjson

from . import errors
from .calls import CANCELED, COMPLETED, DEFAULT_TIMEOUT_S, Call, CallStore, Instructions
from .errors import TwilioError
from .form import API_VERSION, check_url, formatted, integer, page, rfc2822
from .form import method as form_method
from .incoming_numbers import LIST_PATH as NUMBERS_PATH
from .incoming_numbers import ONE_PATH as NUMBER_PATH
from .incoming_numbers import IncomingNumbers
from .numbers import PhoneNumber
from .recordings import Recording, RecordingStore
from .recordings import render as render_recording

MAX_TIMEOUT_S: Final = 600  # Twilio caps the ring time of a REST-created call at 600 s
CALLBACK_EVENTS: Final = ("initiated", "ringing", "answered", "completed")
JSON_HEADERS: Final = (("Content-Type", "application/json; charset=utf-8"),)

_CALLS = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Calls\.json$")
_CALL = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Calls/(?P<sid>[^/]+)\.json$")
_RECORDINGS = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)(?:/Calls/(?P<call>[^/]+))?/Recordings\.json$")
_RECORDING = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)(?:/Calls/[^/]+)?/Recordings/"
                        r"(?P<sid>RE[0-9a-f]{32})(?P<ext>\.json|\.wav|\.mp3)?$")
_SUBRESOURCES = (
    ("feedback", "Feedback"), ("feedback_summaries", "FeedbackSummary"), ("notifications", "Notifications"),
    ("recordings", "Recordings"), ("streams", "Streams"), ("payments", "Payments"),
    ("user_defined_message_subscriptions", "UserDefinedMessageSubscriptions"),
    ("user_defined_messages", "UserDefinedMessages"), ("events", "Events"), ("siprec", "Siprec"),
    ("transcriptions", "Transcriptions"),
)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class RestCore:
    """The REST API of one emulated account: its credentials, its calls, a clock, and the phone
    numbers it emulates (by number; the call legs dial their webhooks)."""

    def __init__(self, account_sid: str, auth_token: str, clock: Callable[[], float],
                 rng: random.Random | None = None, numbers: Iterable[PhoneNumber] = ()) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.clock = clock
        self.store = CallStore(account_sid, rng or random.Random())
        self.numbers: dict[str, PhoneNumber] = {n.number: n for n in numbers}
        self.incoming_numbers = IncomingNumbers(account_sid, self.numbers, clock)
        self.recordings = RecordingStore(account_sid, self.store.rng)
        #: where this API is reached (recordings' ``media_url``); :func:`~.server.serve_rest` sets it
        self.base_url = "https://api.twilio.com"

    # -- request -> response -------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes) -> Response:
        split = urlsplit(target)
        path = split.path
        try:
            if method == "GET" and (m := _RECORDING.match(path)) and m["ext"] != ".json":
                return self._media(m["sid"], path, m["ext"])
            self._authenticate(headers)
            query = parse_qsl(split.query, keep_blank_values=True)
            form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True) if body else []
            if m := _CALLS.match(path):
                self._own_account(m["account"])
                if method == "POST":
                    return self._json(201, self._render(self._create(form)))
                if method == "GET":
                    return self._json(200, self._list(path, query))
                raise self._method_not_allowed(method, path)
            if m := _CALL.match(path):
                self._own_account(m["account"])
                call = self.store.get(m["sid"])
                if call is None:
                    raise errors.not_found(path)
                if method == "GET":
                    return self._json(200, self._render(call))
                if method == "POST":
                    return self._json(200, self._render(self._update(call, form)))
                raise self._method_not_allowed(method, path)
            if (answer := self._phone_numbers(method, path, query, form)) is not None:
                return answer
            if m := _RECORDINGS.match(path):
                self._own_account(m["account"])
                if method != "GET":
                    raise self._method_not_allowed(method, path)
                return self._json(200, self._list_recordings(path, query, m["call"]))
            if m := _RECORDING.match(path):
                self._own_account(m["account"])
                rec = self.recordings.recordings.get(m["sid"])
                if rec is None:
                    raise errors.not_found(path)
                if method != "GET":
                    raise self._method_not_allowed(method, path)
                return self._json(200, self._render_recording(rec))
            raise errors.not_found(path)
        except TwilioError as e:
            headers_out = JSON_HEADERS
            if e.status == 401:
                headers_out = (*JSON_HEADERS, ("WWW-Authenticate", 'Basic realm="Twilio API"'))
            return Response(e.status, headers_out, e.body())

    def _phone_numbers(self, method: str, path: str, query: list[tuple[str, str]],
                       form: list[tuple[str, str]]) -> Response | None:
        """``IncomingPhoneNumbers`` (:mod:`.incoming_numbers`); ``None`` for another path."""
        m = NUMBERS_PATH.match(path) or NUMBER_PATH.match(path)
        if m is None:
            return None
        self._own_account(m["account"])
        answer = self.incoming_numbers.handle(method, path, query, form)
        return None if answer is None else self._json(*answer)

    # -- checks ----------------------------------------------------------------------------

    def _authenticate(self, headers: Iterable[tuple[str, str]]) -> None:
        value = next((v for k, v in headers if k.lower() == "authorization"), "")
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic":
            raise errors.authenticate()
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise errors.authenticate() from None
        # compare_digest on both halves, so a wrong SID costs the same time as a wrong token
        ok_user = hmac.compare_digest(user.encode(), self.account_sid.encode())
        ok_token = hmac.compare_digest(password.encode(), self.auth_token.encode())
        if not (sep and ok_user and ok_token):
            raise errors.authenticate()

    def _own_account(self, account_sid: str) -> None:
        # Another account's path with this account's credentials: Twilio's exact answer is
        # unconfirmed; the emulator treats it as a failed authentication.
        if account_sid != self.account_sid:
            raise errors.authenticate()

    @staticmethod
    def _method_not_allowed(method: str, path: str) -> TwilioError:
        return TwilioError(errors.METHOD_NOT_ALLOWED, f"Method {method} not allowed on {path}", 405)

    # -- create, update, list --------------------------------------------------------------

    def _create(self, form: list[tuple[str, str]]) -> Call:
        f = _Form(form)
        to, from_ = f.one("To"), f.one("From")
        if not to:
            raise TwilioError(errors.TO_MISSING, "No 'To' number is specified", 400)
        if not from_:
            raise TwilioError(errors.FROM_MISSING, "No 'From' number is specified", 400)
        instructions = _instructions(f)
        if instructions is None:
            raise TwilioError(errors.URL_INVALID, "Url parameter is required. For more information, "
                              "see http://www.twilio.com/docs/api/twiml", 400)
        callback = f.one("StatusCallback")
        if callback:
            check_url(callback, "StatusCallback")
        events = tuple(w for v in f.all("StatusCallbackEvent") for w in v.split())
        bad = [e for e in events if e not in CALLBACK_EVENTS]
        if bad:
            raise TwilioError(errors.INVALID_PARAMETER,
                              f"StatusCallbackEvent {bad[0]!r} is not one of {', '.join(CALLBACK_EVENTS)}", 400)
        timeout = integer(f.one("Timeout"), "Timeout", DEFAULT_TIMEOUT_S)
        return self.store.create(
            to=to, from_=from_, instructions=instructions, at=self.clock(),
            status_callback=callback or None,
            status_callback_method=form_method(f.one("StatusCallbackMethod"), "StatusCallbackMethod"),
            # Twilio sends only `completed` when a StatusCallback comes without events
            status_callback_events=(events or ("completed",)) if callback else events,
            record=(f.one("Record") or "false").lower() == "true",
            recording_channels=_channels(f.one("RecordingChannels")),
            timeout_s=max(1, min(timeout, MAX_TIMEOUT_S)),
        )

    def _update(self, call: Call, form: list[tuple[str, str]]) -> Call:
        f = _Form(form)
        status = f.one("Status")
        if status:
            if status not in (COMPLETED, CANCELED):
                raise TwilioError(errors.INVALID_PARAMETER,
                                  f"Status must be {COMPLETED} or {CANCELED}, not {status!r}", 400)
            return self.store.hang_up(call.sid, status, self.clock())
        instructions = _instructions(f)
        if instructions is not None:
            return self.store.redirect(call.sid, instructions, self.clock())
        return call

    def _list(self, path: str, query: list[tuple[str, str]]) -> dict[str, Any]:
        q = _Form(query)
        filters = {k: q.one(k) for k in ("To", "From", "Status", "ParentCallSid")}
        calls = [c for c in self.store.newest_first() if _matches(c, filters)]
        kept = [(k, v) for k, v in filters.items() if v]
        return page(calls, "calls", path, kept, q.one("PageSize"), q.one("Page"), q.one("PageToken"),
                    self._render)

    def _list_recordings(self, path: str, query: list[tuple[str, str]], call_sid: str | None) -> dict[str, Any]:
        """A page of recordings, newest first; ``CallSid`` filters unless the path names the call."""
        q = _Form(query)
        wanted = call_sid or q.one("CallSid")
        recs = self.recordings.newest_first(wanted or None)
        kept = [("CallSid", wanted)] if wanted and not call_sid else []
        return page(recs, "recordings", path, kept, q.one("PageSize"), q.one("Page"), q.one("PageToken"),
                    self._render_recording)

    def _render_recording(self, rec: Recording) -> dict[str, Any]:
        return render_recording(rec, self.base_url)

    def _media(self, sid: str, path: str, ext: str | None) -> Response:
        rec = self.recordings.recordings.get(sid)
        if rec is None or ext == ".mp3":  # the emulator makes WAV only
            raise errors.not_found(path)
        return Response(200, (("Content-Type", "audio/x-wav"),), rec.wav())

    # -- rendering -------------------------------------------------------------------------

    def _render(self, c: Call) -> dict[str, Any]:
        base = f"/{API_VERSION}/Accounts/{c.account_sid}/Calls/{c.sid}"
        duration = c.duration_s
        return {
            "account_sid": c.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": rfc2822(c.date_created),
            "date_updated": rfc2822(c.date_updated),
            "direction": c.direction,
            "duration": None if duration is None else str(duration),
            "end_time": rfc2822(c.end_time),
            "forwarded_from": None,
            "from": c.from_,
            "from_formatted": formatted(c.from_),
            "group_sid": None,
            "parent_call_sid": c.parent_call_sid,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": c.sid,
            "start_time": rfc2822(c.start_time),
            "status": c.status,
            "subresource_uris": {name: f"{base}/{part}.json" for name, part in _SUBRESOURCES},
            "to": c.to,
            "to_formatted": formatted(c.to),
            "trunk_sid": None,
            "uri": f"{base}.json",
        }

    @staticmethod
    def _json(status: int, payload: dict[str, Any]) -> Response:
        return Response(status, JSON_HEADERS, orjson.dumps(payload))


class _Form:
    """Form or query fields, where a name may repeat (``StatusCallbackEvent``)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def one(self, name: str) -> str | None:
        for k, v in self.pairs:
            if k == name:
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k == name]


def _instructions(f: _Form) -> Instructions | None:
    """``Url`` wins over ``Twiml`` when both come (the ``twilio`` package's docstring: "If you
    include both, twiml is ignored"); ``None`` when neither does."""
    url, twiml = f.one("Url"), f.one("Twiml")
    if url:
        check_url(url, "Url")
        return Instructions(url=url, method=form_method(f.one("Method"), "Method"))
    if twiml:
        return Instructions(twiml=twiml)
    return None


def _channels(value: str | None) -> int:
    if value in (None, "", "mono"):
        return 1
    if value == "dual":
        return 2
    raise TwilioError(errors.INVALID_PARAMETER, f"RecordingChannels must be mono or dual, not {value!r}", 400)


def _matches(c: Call, filters: dict[str, str | None]) -> bool:
    want_to, want_from, want_status, want_parent = (filters[k] for k in ("To", "From", "Status", "ParentCallSid"))
    return ((not want_to or c.to == want_to) and (not want_from or c.from_ == want_from)
            and (not want_status or c.status == want_status)
            and (not want_parent or c.parent_call_sid == want_parent))
