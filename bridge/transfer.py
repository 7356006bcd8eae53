"""Transferring a live call: redirect it over Twilio's REST API to ``<Say>…</Say><Dial><Number>``.

``client.calls(CallSid).update(twiml=…)`` replaces what the call is doing (our ``<Connect><Stream>``)
with new TwiML: Twilio ends the media stream (``stop``), speaks ``TRANSFER_SAY`` and dials
``TRANSFER_NUMBER``. The number is a setting (E.164), never one the model says: a model talked
into "transfer me to +1 900 …" cannot place calls on the account. The request runs in a worker
thread (:mod:`.twilio_rest`), abandoned past its timeout: a caller is waiting in silence meanwhile.

The call core decides *when* (after the pre-transfer phrase has played: :mod:`.call`); this module
only does the request and says what went wrong, in one line, for the model and the log.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .twilio_rest import TwilioRest, TwilioRestError

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
        self.api_url = settings.twilio_api_url
        self.timeout_s = timeout_s
        self.rest = TwilioRest(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value(),
                               settings.twilio_api_url, timeout_s=timeout_s, threads=4)

    async def redirect(self, call_sid: str) -> str | None:
        """Redirect the call; None when Twilio took it, else why not (one line). Never raises (but
        cancellation): a failed transfer leaves the call going, the model told why."""
        if not call_sid:
            return "the stream's start gave no CallSid"
        try:
            await self.rest.run(f"call {call_sid}: transfer", lambda c: c.calls(call_sid).update(twiml=self.twiml))
        except TwilioRestError as exc:
            return str(exc)
        return None
