"""One Twilio account's REST client, for async code: requests in worker threads, failures in one line.

The ``twilio`` package's client is synchronous (requests), so each request runs in a worker thread,
a few at a time (a :class:`trio.CapacityLimiter`). Whatever the request raises becomes a
:class:`TwilioRestError` whose message is one line fit for a log, the console or the model: Twilio's
refusal (HTTP status, error code, message), an unreachable API, a timeout, or, for anything else (a
2xx whose body is no JSON makes twilio's parser raise ValueError), the exception's type, logged
with its traceback. A caller of :meth:`TwilioRest.run` catches one exception type and never lets a
surprise from the REST API end a call or an HTTP request with a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import trio

from .logsafe import wire

if TYPE_CHECKING:
    from twilio.rest import Client

__all__ = ["TwilioRest", "TwilioRestError", "twilio_client"]

log = logging.getLogger("callsim.bridge.twilio_rest")

_T = TypeVar("_T")

#: the longest Twilio message kept in a TwilioRestError
MESSAGE_CHARS = 200


def twilio_client(account_sid: str, auth_token: str, api_url: str, timeout_s: float) -> Client:
    """The ``twilio`` package's REST client for the account, at ``api_url`` (Twilio's, or the
    emulator's), each request bounded by ``timeout_s``. Synchronous: run its requests in a worker thread."""
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout_s))
    client.api.base_url = api_url
    return client


class TwilioRestError(Exception):
    """A request that failed; ``status`` is Twilio's HTTP status when it answered one (else None),
    ``str()`` one line without the request's name."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TwilioRest:
    """The account's client (made on first use) and the worker threads its requests run in."""

    def __init__(self, account_sid: str, auth_token: str, api_url: str, *, timeout_s: float, threads: int) -> None:
        self.account_sid = account_sid
        self.api_url = api_url
        self.timeout_s = timeout_s
        self._token = auth_token
        self._client: Client | None = None
        self._limiter = trio.CapacityLimiter(threads)

    def _call(self, fn: Callable[[Client], _T]) -> _T:
        if self._client is None:
            self._client = twilio_client(self.account_sid, self._token, self.api_url, self.timeout_s)
        return fn(self._client)

    async def run(self, what: str, fn: Callable[[Client], _T]) -> _T:
        """``fn(client)`` in a worker thread, given up (the thread abandoned) after ``timeout_s``.

        ``what`` names the request in the log of an unexpected failure (say, with the call it is for).
        Raises :class:`TwilioRestError` and nothing else but cancellation.
        """
        from twilio.base.exceptions import TwilioException, TwilioRestException

        try:
            with trio.fail_after(self.timeout_s):
                return await trio.to_thread.run_sync(self._call, fn, limiter=self._limiter, abandon_on_cancel=True)
        except trio.TooSlowError:
            raise TwilioRestError(f"Twilio did not answer within {self.timeout_s:g} s") from None
        except TwilioRestException as exc:
            raise TwilioRestError(f"Twilio answered HTTP {exc.status} ({exc.code}): {wire(exc.msg, MESSAGE_CHARS)}",
                                  exc.status) from None
        except TwilioException as exc:
            raise TwilioRestError(wire(str(exc), MESSAGE_CHARS)) from None
        except OSError as exc:  # requests' connection errors are OSErrors
            raise TwilioRestError(f"cannot reach {self.api_url}: {type(exc).__name__}") from None
        except Exception as exc:  # noqa: BLE001 - any other surprise from the client is one failed request
            log.exception("%s: unexpected failure from Twilio's REST API at %s", what, self.api_url)
            raise TwilioRestError(f"unexpected answer from {self.api_url}: {type(exc).__name__}") from None
