"""What ``callsim dial`` asks Twilio for: checked inputs, the TwiML and the ``calls.create`` call.

Everything here is decided before anything is sent, so that a bad number or URL costs nothing
and ``--dry-run`` can print exactly what would go out. No I/O: the ``twilio`` package is used
only for its TwiML builder.

The outbound call's TwiML is ``<Connect><Stream url=PUBLIC_URL>``: when the called party
answers, Twilio opens a bidirectional Media Stream to callsim (which serves the server side, as
a bridge does). Two ``<Parameter>``s arrive in the stream's ``start.customParameters``: the
scenario's name, and a fresh per-call token that lets callsim's stream server tell this call's
stream from any other connection that reaches the public URL.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from ..caller.sids import ACCOUNT_SID_RE, E164_RE

#: Twilio's own REST API (the ``twilio`` package's default base URL)
TWILIO_API_URL: Final = "https://api.twilio.com"
#: the custom parameters of the stream (``start.customParameters``)
SCENARIO_PARAM: Final = "callsim_scenario"
TOKEN_PARAM: Final = "callsim_token"
#: where Twilio posts the call's status changes: this path on the public URL's host
STATUS_CALLBACK_PATH: Final = "/dial-status"
STATUS_CALLBACK_EVENTS: Final = ("initiated", "ringing", "answered", "completed")
#: Twilio's TimeLimit is whole seconds, at most 4 hours
MAX_TIME_LIMIT_S: Final = 4 * 3600


#: ``calls.create`` keyword -> the form field the client sends (what the dry run prints)
WIRE_NAMES: Final = {
    "to": "To", "from_": "From", "twiml": "Twiml", "time_limit": "TimeLimit", "record": "Record",
    "recording_channels": "RecordingChannels", "status_callback": "StatusCallback",
    "status_callback_method": "StatusCallbackMethod", "status_callback_event": "StatusCallbackEvent",
}


class DialInputError(ValueError):
    """An input ``callsim dial`` refuses before anything is sent; ``str()`` is one line."""


def check_number(flag: str, number: str) -> str:
    """An E.164 phone number (``+`` and up to 15 digits), as Twilio wants for To and From."""
    if not E164_RE.match(number):
        raise DialInputError(f"{flag} must be an E.164 number like +15551234567, got {number!r}")
    return number


def stream_url(public_url: str) -> str:
    """The ``wss://`` URL Twilio opens: ``--public-url`` as given (``https://`` becomes ``wss://``,
    the same host and path; Twilio streams only over TLS)."""
    parts = urlsplit(public_url)
    if parts.scheme not in ("wss", "https") or not parts.hostname:
        raise DialInputError(f"--public-url must be wss://HOST/… or https://HOST/… (where Twilio reaches "
                             f"callsim, e.g. a tunnel), got {public_url!r}")
    if parts.query or parts.fragment:
        raise DialInputError(f"--public-url takes no query or fragment (Twilio drops them from a stream URL; "
                             f"use the scenario parameters instead), got {public_url!r}")
    return urlunsplit(("wss", parts.netloc, parts.path or "/", "", ""))


def status_callback_url(public_url: str) -> str:
    """Twilio posts the call's status changes here: :data:`STATUS_CALLBACK_PATH` on the public host."""
    return urlunsplit(("https", urlsplit(public_url).netloc, STATUS_CALLBACK_PATH, "", ""))


def check_api_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise DialInputError(f"--twilio-api-url must be http(s)://HOST[:PORT] (Twilio's API or an emulator), "
                             f"got {url!r}")
    return url.rstrip("/")


def check_account_sid(sid: str) -> str:
    if not ACCOUNT_SID_RE.match(sid):
        raise DialInputError("the account SID (--account-sid or $TWILIO_ACCOUNT_SID) must be AC and 32 hex "
                             f"digits, got {mask(sid)!r}")
    return sid


def mask(secret: str) -> str:
    """Enough of an account SID to tell which one it is (``AC…1234``); anything else is ``****``."""
    return f"{secret[:2]}…{secret[-4:]}" if secret.startswith("AC") and len(secret) > 10 else "****"


@dataclass(frozen=True, slots=True)
class DialRequest:
    """One ``callsim dial``, checked."""

    to: str
    from_: str
    scenario: str
    public_url: str
    max_duration_s: int
    record: bool = False
    stream_timeout_s: float = 30.0
    token: str = ""

    @classmethod
    def checked(cls, *, to: str, from_: str, scenario: str, public_url: str, max_duration_s: int,
                record: bool = False, stream_timeout_s: float = 30.0, token: str | None = None) -> DialRequest:
        """Every input checked (:class:`DialInputError` names the first bad one); a fresh token."""
        check_number("--to", to)
        check_number("--from", from_)
        if to == from_:
            raise DialInputError(f"--to and --from are the same number ({to}): the call would dial itself")
        stream_url(public_url)
        if not 1 <= max_duration_s <= MAX_TIME_LIMIT_S:
            raise DialInputError(f"--max-duration-s must be 1..{MAX_TIME_LIMIT_S} (Twilio's TimeLimit), "
                                 f"got {max_duration_s}")
        return cls(to=to, from_=from_, scenario=scenario, public_url=public_url, max_duration_s=max_duration_s,
                   record=record, stream_timeout_s=stream_timeout_s, token=token or secrets.token_urlsafe(18))

    @property
    def stream_url(self) -> str:
        return stream_url(self.public_url)

    def twiml(self) -> str:
        """``<Response><Connect><Stream url=…>`` with the scenario and token as ``<Parameter>``s."""
        from twilio.twiml.voice_response import Connect, VoiceResponse  # not needed to parse the CLI

        response = VoiceResponse()
        connect = Connect()
        stream = connect.stream(url=self.stream_url)
        stream.parameter(name=SCENARIO_PARAM, value=self.scenario)
        stream.parameter(name=TOKEN_PARAM, value=self.token)
        response.append(connect)
        return response.to_xml(xml_declaration=False)

    def create_params(self) -> dict[str, Any]:
        """The keyword arguments of ``client.calls.create``.

        ``time_limit`` is the hard cap Twilio itself enforces, so the call ends even if callsim
        dies without hanging up. ``record`` asks for a dual-channel recording (one channel per
        party), which the report will fetch."""
        params: dict[str, Any] = {
            "to": self.to, "from_": self.from_, "twiml": self.twiml(), "time_limit": self.max_duration_s,
            "status_callback": status_callback_url(self.public_url), "status_callback_method": "POST",
            "status_callback_event": list(STATUS_CALLBACK_EVENTS),
        }
        if self.record:
            params["record"] = True
            params["recording_channels"] = "dual"
        return params


def dry_run_text(request: DialRequest, *, api_url: str, account_sid: str | None, auth_token: str | None,
                 listen: str) -> str:
    """What ``--dry-run`` prints: the request as the client would send it, secrets masked."""
    sid = mask(account_sid) if account_sid else "(no account SID: set $TWILIO_ACCOUNT_SID or --account-sid)"
    token = "****" if auth_token else "(no auth token: set $TWILIO_AUTH_TOKEN or --auth-token)"
    lines = ["dry run: nothing is sent",
             f"POST {api_url}/2010-04-01/Accounts/{mask(account_sid) if account_sid else 'AC…'}/Calls.json",
             f"  auth: HTTP Basic {sid} : {token}"]
    shown = dict(request.create_params())
    shown["twiml"] = shown["twiml"].replace(request.token, "****")
    for key, value in shown.items():
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, list):
            value = " ".join(value)
        lines.append(f"  {WIRE_NAMES[key]}={value}")
    lines.append(f"then: wait up to {request.stream_timeout_s:g} s for Twilio's media stream at "
                 f"{request.stream_url} (callsim listening on {listen}), hang up over REST on any exit")
    return "\n".join(lines)
