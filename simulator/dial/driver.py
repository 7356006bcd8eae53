"""Runs a :class:`~.plan.DialPlan` on trio with the ``twilio`` package's REST client.

The client is synchronous (``requests``), so each REST call runs in a worker thread. The hang-up
runs in a shielded scope with its own deadline: Ctrl-C, ``--max-duration-s`` or an error cancel
the wait, never the hang-up, and a Twilio API that does not answer cannot hold the exit for long
(the call's TimeLimit still ends it).

What waits for the media stream and plays the scenario is a :class:`StreamSide`: callsim's
stream server (:class:`~.stream_server.DialStreamServer`) in ``callsim dial``;
:class:`NoStreamServer` (never sees a stream) in tests of the REST lifecycle.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from .plan import Action, AwaitStream, Create, DialPlan, Finish, HangUp, RunCall, Say

#: how long one REST request may take before it is given up (seconds)
HTTP_TIMEOUT_S = 15.0
#: how long the hang-up may take in all (its request, and fetching the status if it is refused)
HANG_UP_DEADLINE_S = 2 * HTTP_TIMEOUT_S + 1


class RestFailure(Exception):
    """A REST request Twilio refused or that never got an answer; ``str()`` is one line.
    ``status`` is the call's status when the failure says it (fetched after a refused hang-up)."""

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.status = status


class StreamSide(Protocol):
    """Callsim's end of the media stream."""

    async def wait(self) -> None:
        """Return when Twilio's media stream for this call has connected."""

    async def run_call(self) -> tuple[bool, str]:
        """Play the scenario on the stream: (ok, one line why)."""


class NoStreamServer:
    """A stream side that never sees a stream (tests of the REST lifecycle)."""

    async def wait(self) -> None:
        await trio.sleep_forever()

    async def run_call(self) -> tuple[bool, str]:  # pragma: no cover - wait() never returns
        return False, "callsim's stream server is not built yet"


@dataclass
class TwilioRest:
    """The three REST requests a dial makes, through the ``twilio`` package's client."""

    account_sid: str
    auth_token: str
    api_url: str

    def __post_init__(self) -> None:
        from twilio.http.http_client import TwilioHttpClient
        from twilio.rest import Client

        self.client = Client(self.account_sid, self.auth_token,
                             http_client=TwilioHttpClient(timeout=HTTP_TIMEOUT_S))
        self.client.api.base_url = self.api_url

    def _call(self, fn: Callable[[], Any]) -> Any:
        import requests
        from twilio.base.exceptions import TwilioRestException

        try:
            return fn()
        except TwilioRestException as exc:
            raise RestFailure(f"Twilio answered HTTP {exc.status}, error {exc.code}: {exc.msg}") from None
        except requests.RequestException as exc:
            raise RestFailure(f"cannot reach {self.api_url}: {_root_reason(exc)}") from None

    async def create(self, params: dict[str, Any]) -> tuple[str, str]:
        call = await trio.to_thread.run_sync(lambda: self._call(lambda: self.client.calls.create(**params)))
        return call.sid, call.status

    async def hang_up(self, sid: str) -> str:
        """Hang up; the call's final status. A refused hang-up fetches the status to say why."""
        try:
            call = await trio.to_thread.run_sync(
                lambda: self._call(lambda: self.client.calls(sid).update(status="completed")))
            return call.status
        except RestFailure as refused:
            try:
                status = (await trio.to_thread.run_sync(lambda: self._call(lambda: self.client.calls(sid).fetch()))).status
            except RestFailure:
                status = None
            raise RestFailure(str(refused), status) from None


def _root_reason(exc: BaseException) -> str:
    """The innermost cause of a failed request, as a few words (requests' own message nests three
    exceptions and the whole URL)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = next((e for e in (*exc.args[:1], getattr(exc, "reason", None), exc.__cause__, exc.__context__)
                      if isinstance(e, BaseException)), None)
        if inner is None:
            break
        exc = inner
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


async def run_dial(plan: DialPlan, rest: TwilioRest, stream: StreamSide, say: Callable[[str], None]) -> Finish:
    """Perform the plan until it finishes; on any exit (cancel included) hang up a created call.

    A cancel (Ctrl-C) still propagates after the hang-up; the outcome is then in ``plan.finish``.
    """
    pending: deque[Action] = deque(plan.start())

    async def perform(action: Action) -> Finish | None:
        match action:
            case Say(line):
                say(line)
            case Create(params):
                try:
                    sid, status = await rest.create(params)
                except RestFailure as exc:
                    pending.extend(plan.create_failed(str(exc)))
                else:
                    pending.extend(plan.created(sid, status))
            case AwaitStream(timeout_s):
                with trio.move_on_after(timeout_s) as waited:
                    await stream.wait()
                pending.extend(plan.stream_timed_out() if waited.cancelled_caught else plan.stream_arrived())
            case RunCall():
                ok, why = await stream.run_call()
                pending.extend(plan.call_ended(ok, why))
            case HangUp(sid):
                with trio.CancelScope(shield=True), trio.move_on_after(HANG_UP_DEADLINE_S) as deadline:
                    try:
                        status = await rest.hang_up(sid)
                    except RestFailure as exc:
                        pending.extend(plan.hang_up_failed(str(exc), exc.status))
                    else:
                        pending.extend(plan.hung_up(status))
                if deadline.cancelled_caught:
                    pending.extend(plan.hang_up_failed(f"no answer within {HANG_UP_DEADLINE_S:g} s"))
            case Finish():
                return action
        return None

    async def drain() -> Finish | None:
        while pending:
            if (done := await perform(pending.popleft())) is not None:
                return done
        return None

    try:
        with trio.move_on_after(plan.request.max_duration_s):
            if (done := await drain()) is not None:
                return done
        pending.extend(plan.max_duration_reached())
        done = await drain()
        assert done is not None
        return done
    except trio.Cancelled:
        with trio.CancelScope(shield=True):
            pending.clear()
            pending.extend(plan.interrupted())
            await drain()
        raise
    except BaseException as exc:
        if plan.must_hang_up:
            with trio.CancelScope(shield=True):
                pending.clear()
                pending.extend(plan.failed(f"{type(exc).__name__}: {exc}"))
                await drain()
        raise
