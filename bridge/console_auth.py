"""Who may read callers' transcripts: the console token (``CONSOLE_TOKEN``).

The console, its live feed, the history API, the settings and the MCP server over HTTP all hand
out what callers said, so they are behind one shared secret. Unset, those routes are off (404)
and the bridge says at startup how to turn them on: an operator surface that is open by default
is how transcripts leak.

Two ways in, both checked in constant time:

* ``Authorization: Bearer <token>`` — scripts, ``curl``, the MCP client;
* a session cookie (:data:`COOKIE`) that the console's login form sets after the token was
  typed in: a browser never carries the token in a URL (URLs end up in logs and history). A
  session is a random id kept in memory with an expiry; a restart logs everyone out, which is
  the safe direction.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: the console's session cookie (HttpOnly, SameSite=Strict; Secure when served over TLS)
COOKIE = "callsim_console"
#: how long a console login lasts without being used
SESSION_TTL_S = 12 * 3600.0
#: sessions kept at most; the oldest are dropped first (a login loop cannot grow memory)
MAX_SESSIONS = 1000


class ConsoleAuth:
    """The token check and the console's login sessions."""

    def __init__(self, token: str | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._token = token.encode() if token else None
        self._clock = clock
        self._sessions: dict[str, float] = {}  # session id -> expiry (clock seconds)

    @property
    def enabled(self) -> bool:
        """Whether the token-guarded routes exist at all."""
        return self._token is not None

    def token_ok(self, presented: str | None) -> bool:
        if self._token is None or not presented:
            return False
        return hmac.compare_digest(presented.encode(), self._token)

    def bearer_ok(self, authorization: str | None) -> bool:
        """``Authorization: Bearer <token>`` (the scheme is case-insensitive, as RFC 6750 says)."""
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(value.strip())

    def allows(self, authorization: str | None, cookie: str | None) -> bool:
        """A request carrying the bearer token or a live session cookie."""
        return self.bearer_ok(authorization) or self.session_ok(cookie)

    def login(self, presented: str | None) -> str | None:
        """A new session id for the right token, else ``None``."""
        if not self.token_ok(presented):
            return None
        now = self._clock()
        self._expire(now)
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        session = secrets.token_urlsafe(32)
        self._sessions[session] = now + SESSION_TTL_S
        return session

    def session_ok(self, session: str | None) -> bool:
        if not session or self._token is None:
            return False
        now = self._clock()
        expiry = self._sessions.get(session)
        if expiry is None or expiry <= now:
            self._sessions.pop(session, None)
            return False
        self._sessions[session] = now + SESSION_TTL_S  # sliding: an open console stays logged in
        return True

    def logout(self, session: str | None) -> None:
        if session:
            self._sessions.pop(session, None)

    def _expire(self, now: float) -> None:
        for sid in [s for s, expiry in self._sessions.items() if expiry <= now]:
            del self._sessions[sid]

    def log_state(self) -> None:
        """The startup line: what is served, or how to turn it on."""
        if self.enabled:
            log.info("console, live feed, history API and MCP over HTTP are on (token-guarded: "
                     "Authorization: Bearer $CONSOLE_TOKEN, or the console's login form)")
        else:
            log.info("console, live feed, history API and MCP over HTTP are off: set CONSOLE_TOKEN to a "
                     "long random secret to turn them on (e.g. CONSOLE_TOKEN=$(openssl rand -hex 24))")
