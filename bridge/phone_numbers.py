"""The account's Twilio phone numbers, for the console: list them, point one's voice webhook here.

Through the ``twilio`` package's REST client (``incoming_phone_numbers.list()`` and
``incoming_phone_numbers(sid).update(voice_url=…)``), with the account from
``TWILIO_ACCOUNT_SID``/``TWILIO_AUTH_TOKEN`` and the API at ``TWILIO_API_URL`` (Twilio's by
default; ``callsim twilio-emulator``'s in tests), in worker threads (:mod:`.twilio_rest`).

Routes (:func:`register_routes`), behind the console token like the rest of the console (bearer
header or the console's session cookie; 404 when ``CONSOLE_TOKEN`` is unset):

* ``GET /api/numbers``: ``{"numbers": [...], "webhook_url": …, "changes": [...]}``, each number
  with its SID, E.164 number, friendly name, voice URL and method, and whether it points here;
* ``POST /api/numbers/<PN…>/point-here``: set that number's voice URL to this bridge's
  ``PUBLIC_URL/incoming-call`` (POST). Every change is logged with who made it (token or console
  session, and the client address) and when, and kept in ``changes`` (the latest
  :data:`MAX_CHANGES`) until the bridge restarts.

503 says what to set when the account is not configured; Twilio's refusals come back as 404
(unknown number) or 502 with Twilio's message.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from quart import request

from .console_auth import COOKIE, ConsoleAuth
from .settings import Settings
from .twilio_rest import TwilioRest, TwilioRestError

if TYPE_CHECKING:
    from quart_trio import QuartTrio
    from twilio.rest import Client

log = logging.getLogger("callsim.bridge.numbers")

#: how long one request to Twilio's API may take
API_TIMEOUT_S = 15.0
#: changes remembered for GET /api/numbers
MAX_CHANGES = 100
_PN = re.compile(r"^PN[0-9a-fA-F]{32}$")
_T = TypeVar("_T")


class NumbersError(Exception):
    """A request the numbers API answers with ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class PhoneNumbers:
    """The account's numbers through the ``twilio`` REST client."""

    def __init__(self, settings: Settings) -> None:
        self.account_sid = settings.twilio_account_sid
        self.auth_token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
        self.api_url = settings.twilio_api_url
        self.webhook_url = settings.webhook_url("/incoming-call")
        self.changes: deque[dict[str, Any]] = deque(maxlen=MAX_CHANGES)
        self.rest = (TwilioRest(self.account_sid, self.auth_token, self.api_url, timeout_s=API_TIMEOUT_S, threads=2)
                     if self.account_sid and self.auth_token else None)

    @property
    def configured(self) -> bool:
        return self.rest is not None

    async def _run(self, what: str, fn: Callable[[Client], _T]) -> _T:
        if self.rest is None:
            raise NumbersError(503, "the numbers API needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        try:
            return await self.rest.run(what, fn)
        except TwilioRestError as exc:
            if exc.status == 404:
                raise NumbersError(404, f"{what}: no such number in account {self.account_sid}") from None
            raise NumbersError(502, f"{what}: {exc}") from None

    def _row(self, n: Any) -> dict[str, Any]:
        return {"sid": n.sid, "phone_number": n.phone_number, "friendly_name": n.friendly_name,
                "voice_url": n.voice_url, "voice_method": n.voice_method,
                "points_here": n.voice_url == self.webhook_url}

    async def list(self) -> list[dict[str, Any]]:
        numbers = await self._run("listing numbers", lambda c: c.incoming_phone_numbers.list(limit=1000))
        return [self._row(n) for n in numbers]

    async def point_here(self, sid: str, who: str) -> dict[str, Any]:
        """Point ``sid``'s voice webhook at this bridge; logged and remembered with ``who`` and when."""
        if not _PN.match(sid):
            raise NumbersError(400, f"{sid!r} is not a phone number SID (PN followed by 32 hex digits)")
        before = await self._run(f"reading {sid}", lambda c: c.incoming_phone_numbers(sid).fetch())
        after = await self._run(f"updating {sid}", lambda c: c.incoming_phone_numbers(sid).update(
            voice_url=self.webhook_url, voice_method="POST"))
        change = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "by": who, "sid": sid,
                  "phone_number": after.phone_number, "voice_url_before": before.voice_url,
                  "voice_url": after.voice_url}
        self.changes.append(change)
        log.warning("phone number %s (%s): voice webhook %s -> %s, by %s at %s", after.phone_number, sid,
                    before.voice_url or "(none)", after.voice_url, who, change["at"])
        return self._row(after)


def register_routes(app: "QuartTrio", numbers: PhoneNumbers, auth: ConsoleAuth) -> None:
    """``/api/numbers`` on the bridge's Quart app."""

    def refusal() -> tuple[dict[str, str], int] | None:
        if not auth.enabled:
            return {"error": "not found"}, 404
        if not auth.allows(request.headers.get("Authorization"), request.cookies.get(COOKIE)):
            return {"error": "unauthorized: send Authorization: Bearer <CONSOLE_TOKEN> or log in"}, 401
        return None

    def who() -> str:
        how = "bearer token" if auth.bearer_ok(request.headers.get("Authorization")) else "console session"
        return f"{how} from {request.remote_addr or '?'}"

    @app.get("/api/numbers")
    async def list_numbers():  # type: ignore[no-untyped-def]
        if (no := refusal()) is not None:
            return no
        try:
            rows = await numbers.list()
        except NumbersError as exc:
            return {"error": exc.message}, exc.status
        return {"numbers": rows, "webhook_url": numbers.webhook_url, "changes": list(numbers.changes)}

    @app.post("/api/numbers/<sid>/point-here")
    async def point_here(sid: str):  # type: ignore[no-untyped-def]
        if (no := refusal()) is not None:
            return no
        try:
            return await numbers.point_here(sid, who())
        except NumbersError as exc:
            return {"error": exc.message}, exc.status
