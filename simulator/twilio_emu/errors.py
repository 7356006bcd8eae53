"""Twilio's REST error JSON, with the codes the Calls resource answers.

Twilio answers a failed request with ``{"code", "message", "more_info", "status"}``; the
``twilio`` package's ``TwilioRestException`` reads exactly these keys (``code`` becomes
``exc.code``). Codes and messages below come from Twilio's error pages
(twilio.com/docs/errors/NNNNN) and from messages users quote in issue threads; where no
source confirmed the code Twilio uses for a case, the constant says **unconfirmed**.
"""

from __future__ import annotations

import orjson

MORE_INFO = "https://www.twilio.com/docs/errors/{code}"

# 20003 "Permission Denied"; the body's message is "Authenticate" (quoted from real responses).
AUTHENTICATE = 20003
# 20404: the message names the path that was asked for.
NOT_FOUND = 20404
# 20004 "Method not allowed": unconfirmed that Twilio uses it on the Calls resource.
METHOD_NOT_ALLOWED = 20004
# 20001 "Invalid parameter" for a value of the wrong type (Timeout=abc): unconfirmed.
INVALID_PARAMETER = 20001
# 21201 "No 'To' number is specified".
TO_MISSING = 21201
# 21213 "No 'From' number is specified" (doc title: "Caller phone number is required").
FROM_MISSING = 21213
# 21205: both "Url parameter is required…" (no Url/Twiml/ApplicationSid) and
# "Url is not a valid URL: …" are quoted from real responses under this code.
URL_INVALID = 21205
# 21220 "Invalid call state": a redirect or hang-up of a call that has already ended.
CALL_NOT_IN_PROGRESS = 21220


class TwilioError(Exception):
    """One error response: Twilio's ``code``, its ``message`` and the HTTP ``status``.

    Raised inside the core and turned into a response at its edge, so a handler stops at the
    first failed check as Twilio does (one error per response)."""

    def __init__(self, code: int, message: str, status: int) -> None:
        super().__init__(code, message, status)
        self.code = code
        self.message = message
        self.status = status

    def body(self) -> bytes:
        return orjson.dumps({
            "code": self.code,
            "message": self.message,
            "more_info": MORE_INFO.format(code=self.code),
            "status": self.status,
        })


def not_found(path: str) -> TwilioError:
    return TwilioError(NOT_FOUND, f"The requested resource {path} was not found", 404)


def authenticate() -> TwilioError:
    return TwilioError(AUTHENTICATE, "Authenticate", 401)
