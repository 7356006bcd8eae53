"""Transferring a live call: redirect it over Twilio's REST API to ``<Say>…</Say><Dial><Number>``.

``client.calls(CallSid).update(twiml=…)`` replaces what the call is doing (our ``<Connect><Stream>``)
with new TwiML: Twilio ends the media stream (``stop``), speaks ``TRANSFER_SAY`` and dials
``TRANSFER_NUMBER``. The number is a setting (E.164), never one the model says: a model talked
into "transfer me to +1 900 …" cannot place calls on the account. The ``twilio`` client is
synchronous, so the request runs in a worker thread (a few at a time, abandoned past its timeout:
a caller is waiting in silence meanwhile).

The call core decides *when* (after the pre-transfer phrase has played: :mod:`.call`); this module
only does the request and says what went wrong, in one line, for the model and the log.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from .logsafe import wire
from .phone_numbers import twilio_client

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("callsim.bridge.transfer")

#: how long the redirect may take before the transfer is given up (the caller hears nothing meanwhile)
TRANSFER_TIMEOUT_S = 10.0


def transfer_twiml(number: str, say: str | None) -> str:
    """``<Response>[<Say>say</Say>]<Dial><Number>number</Number></Dial></Response>`` (escaped by the
    ``twilio`` package's VoiceResponse)."""
    from twilio.twiml.voice_response import Dial, VoiceResponse

    r = VoiceResponse()
    if say:
        r.say(say)
    dial = Dial()
    dial.number(number)
    r.append(dial)
    return str(r)


class Transfers:
    """The redirects of one bridge process (``TRANSFER_NUMBER``, ``TRANSFER_SAY``, the Twilio account)."""

    def __init__(self, settings: Settings, *, timeout_s: float = TRANSFER_TIMEOUT_S) -> None:
        if not settings.transfer_number:
            raise ValueError("transfers need TRANSFER_NUMBER")
        assert settings.twilio_account_sid and settings.twilio_auth_token  # Settings checks it
        self.number = settings.transfer_number
        self.twiml = transfer_twiml(settings.transfer_number, settings.transfer_say)
        self.account_sid = settings.twilio_account_sid
        self.api_url = settings.twilio_api_url
        self.timeout_s = timeout_s
        self._token = settings.twilio_auth_token.get_secret_value()
        self._client: Any = None
        self._limiter = trio.CapacityLimiter(4)

    def _update(self, call_sid: str) -> None:
        if self._client is None:
            self._client = twilio_client(self.account_sid, self._token, self.api_url, self.timeout_s)
        self._client.calls(call_sid).update(twiml=self.twiml)

    async def redirect(self, call_sid: str) -> str | None:
        """Redirect the call; None when Twilio took it, else why not (one line)."""
        from twilio.base.exceptions import TwilioException, TwilioRestException

        if not call_sid:
            return "the stream's start gave no CallSid"
        try:
            with trio.fail_after(self.timeout_s):
                await trio.to_thread.run_sync(self._update, call_sid, limiter=self._limiter, abandon_on_cancel=True)
        except trio.TooSlowError:
            return f"Twilio did not answer within {self.timeout_s:g} s"
        except TwilioRestException as exc:
            return f"Twilio answered HTTP {exc.status} ({exc.code}): {wire(exc.msg, 200)}"
        except TwilioException as exc:
            return wire(str(exc), 200)
        except OSError as exc:  # requests' connection errors are OSErrors
            return f"cannot reach {self.api_url}: {type(exc).__name__}"
        return None
