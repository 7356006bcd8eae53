"""Twilio's call status callbacks, sans-IO: a call's events in, the signed requests to make out.

A call created with ``StatusCallback`` gets one request per progress event it asked for
(``StatusCallbackEvent``: ``initiated``, ``ringing``, ``answered``, ``completed``; only
``completed`` when it named none), with the form Twilio sends: ``CallSid``, ``AccountSid``,
``From``, ``To``, ``Caller``, ``Called``, ``CallStatus``, ``Direction``, ``ApiVersion``,
``Timestamp`` (RFC 2822), ``SequenceNumber`` (0, 1, … per call, over the callbacks sent),
``CallbackSource=call-progress-events``, and ``CallDuration`` (whole seconds, 0 for a call
never answered) on ``completed``. ``POST`` sends the form as the body; ``GET`` appends it to
the URL's query, which is then what is signed. ``X-Twilio-Signature`` comes from the ``twilio``
package's own ``RequestValidator`` with the account's auth token, so a receiver validating
with that package accepts it.

The event -> callback mapping: the call's creation is ``initiated`` (``CallStatus=initiated``,
as Twilio reports it when it starts dialling), ``ringing`` is ``ringing``, ``in-progress`` is
``answered``, and any end status (``completed``, ``busy``, ``failed``, ``no-answer``,
``canceled``, whether reached by the legs or by a REST hang-up) is ``completed`` with that
status. Redirects send nothing. Twilio does not retry a failed status callback, and neither
does the emulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

from ..caller.webhook import WEBHOOK_USER_AGENT
from .calls import ENDED, IN_PROGRESS, RINGING, Call, CallEvent
from .form import API_VERSION, rfc2822

CALLBACK_SOURCE: Final = "call-progress-events"
FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    """One HTTP request to make: ``url`` is the full URL (with the form in it for ``GET``),
    ``body`` the encoded form for ``POST`` (empty for ``GET``)."""

    call_sid: str
    event: str
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    form: tuple[tuple[str, str], ...]


def progress_event(event: CallEvent) -> tuple[str, str] | None:
    """``(StatusCallbackEvent name, CallStatus)`` for a store event, or ``None`` if Twilio sends
    no status callback for it."""
    if event.kind == "created":
        return "initiated", "initiated"
    if event.kind == "hung_up" or (event.kind == "status" and event.status in ENDED):
        return "completed", event.status
    if event.kind == "status" and event.status == RINGING:
        return "ringing", RINGING
    if event.kind == "status" and event.status == IN_PROGRESS:
        return "answered", IN_PROGRESS
    return None


def ends_call(event: CallEvent) -> bool:
    """Whether no callback can follow this event for its call."""
    return event.kind == "hung_up" or (event.kind == "status" and event.status in ENDED)


@dataclass
class StatusCallbacks:
    """Turns each event of the store into the callback request it calls for, numbering them
    per call. Feed it the events in the order they happened, with the call as it is then."""

    auth_token: str
    _sequence: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._validator = RequestValidator(self.auth_token)

    def request_for(self, event: CallEvent, call: Call) -> CallbackRequest | None:
        progress = progress_event(event)
        try:
            if progress is None or not call.status_callback or progress[0] not in call.status_callback_events:
                return None
            name, status = progress
            number = self._sequence.get(call.sid, 0)
            self._sequence[call.sid] = number + 1
            form = [
                ("AccountSid", call.account_sid),
                ("ApiVersion", API_VERSION),
                ("CallSid", call.sid),
                ("CallStatus", status),
                ("Called", call.to),
                ("Caller", call.from_),
                ("CallbackSource", CALLBACK_SOURCE),
                ("Direction", call.direction),
                ("From", call.from_),
                ("SequenceNumber", str(number)),
                ("Timestamp", rfc2822(event.at) or ""),
                ("To", call.to),
            ]
            if name == "completed":
                form.append(("CallDuration", str(call.duration_s or 0)))
            return self._sign(call, name, tuple(form))
        finally:
            if ends_call(event):  # no more callbacks for this call: forget its counter
                self._sequence.pop(call.sid, None)

    def _sign(self, call: Call, name: str, form: tuple[tuple[str, str], ...]) -> CallbackRequest:
        url = call.status_callback or ""
        headers = [("User-Agent", WEBHOOK_USER_AGENT)]
        if call.status_callback_method == "GET":
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(form)}"
            signature = self._validator.compute_signature(url, {})
            body = b""
        else:
            signature = self._validator.compute_signature(url, dict(form))
            body = urlencode(form).encode()
            headers.append(("Content-Type", FORM_CONTENT_TYPE))
        headers.append(("X-Twilio-Signature", signature))
        return CallbackRequest(call.sid, name, call.status_callback_method, url, tuple(headers), body, form)
