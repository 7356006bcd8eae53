"""The trio driver of the fake caller: real sockets around :class:`CallerCore`.

One call is one nursery: a ticker task that sleeps to the core's absolute
deadlines and sends what :meth:`CallerCore.advance` returns, and a receiver task
that feeds every message to :meth:`CallerCore.receive`. When either side ends
the call (script hangs up, app closes, cancellation) the whole nursery goes, and
the socket is closed — nothing of a call outlives it.

Timestamps come from a :class:`Clock`. Real runs use ``time.monotonic_ns`` (the
clock the mock and the bridge share, design.md rule 4) and sleep *relative* to
it, because trio's own clock carries a random offset (stack.md). Tests that only
need order pass :class:`TrioClock`, which reads trio's (possibly mocked) clock.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from typing import Protocol

import httpx
import trio

from . import twilio_wire as tw
from .call_result import CallResult, bad_target, follow_twiml, new_core, target_kind  # CallResult re-exported
from .caller import CallerCore
from .impairments import Impairments
from .script import Step
from .utterances import UtteranceBank
from .wsconn import ConnectionClosed, HandshakeError, open_websocket
from .webhook import (
    CallParties, TwimlError, WebhookExchange,
    read_answer, stream_headers, webhook_form, webhook_headers,
)

log = logging.getLogger("callsim.caller")

MAX_MESSAGE_BYTES = 16 * 2**20  # Twilio documents no limit; a whole long reply fits


class Clock(Protocol):
    def now_ns(self) -> int: ...
    async def sleep_until_ns(self, deadline_ns: int) -> None: ...


class MonotonicClock:
    """``time.monotonic_ns``: shared by every process on the machine."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    async def sleep_until_ns(self, deadline_ns: int) -> None:
        await trio.sleep(max(0.0, (deadline_ns - time.monotonic_ns()) / 1e9))


class TrioClock:
    """trio's clock (works with ``MockClock``); not comparable across processes."""

    def now_ns(self) -> int:
        return int(trio.current_time() * 1e9)

    async def sleep_until_ns(self, deadline_ns: int) -> None:
        await trio.sleep_until(deadline_ns / 1e9)


async def fetch_twiml(client: httpx.AsyncClient, url: str, parties: CallParties,
                      auth_token: str | None) -> WebhookExchange:
    """POST the voice webhook like Twilio and read its TwiML."""
    form = webhook_form(parties)
    ex = WebhookExchange(url, form, signed=bool(auth_token))
    resp = await client.post(url, data=form, headers=webhook_headers(auth_token, url, form))
    return read_answer(ex, resp.status_code, resp.headers.get("content-type"), resp.text, resp.content)


async def place_call(
    target: str,
    script: list[Step],
    *,
    auth_token: str | None = None,
    bank: UtteranceBank | None = None,
    impairments: Impairments | None = None,
    wire_policy: tw.WirePolicy | None = None,
    parties: CallParties | None = None,
    custom_parameters: dict[str, str] | None = None,
    max_duration_ms: int = 300_000,
    clock: Clock | None = None,
    connect_timeout: float = 10.0,
    rng: random.Random | None = None,
) -> CallResult:
    """Place one call at ``target`` (an ``http(s)://`` webhook or ``ws(s)://`` stream URL).

    Never raises for what the far end does: refusals, bad TwiML and broken
    sockets end up in :attr:`CallResult.error` with what was recorded so far.
    """
    clock = clock or MonotonicClock()
    rng = rng or random.Random()
    parties = parties or CallParties.new(rng)
    result = CallResult(target)
    params = dict(custom_parameters or {})

    result.timings["placed_ns"] = clock.now_ns()
    kind = target_kind(target)
    if kind == "webhook":
        try:
            with trio.fail_after(connect_timeout):
                verify = _tls_context() if target.lower().startswith("https:") else False
                async with httpx.AsyncClient(verify=verify) as client:
                    result.webhook = await fetch_twiml(client, target, parties, auth_token)
        except (httpx.HTTPError, TwimlError, trio.TooSlowError) as exc:
            result.error = f"webhook failed: {exc or type(exc).__name__}"
            return result
        result.timings["webhook_ns"] = clock.now_ns()
        followed = follow_twiml(result, params)
        if followed is None:
            return result
        params = followed
    elif kind == "stream":
        result.stream_url = target
    else:
        return bad_target(result)

    core = new_core(parties, params, rng, script, bank, impairments=impairments, wire_policy=wire_policy,
                    max_duration_ms=max_duration_ms)
    result.core = core
    try:
        async with open_websocket(
            result.stream_url, stream_headers(auth_token, result.stream_url),
            max_message_size=MAX_MESSAGE_BYTES, connect_timeout=connect_timeout, close_timeout=2,
            ssl_context=_tls_context() if result.stream_url.lower().startswith("wss:") else None,
        ) as ws:
            result.timings["connected_ns"] = clock.now_ns()
            await _run(ws, core, clock, result.timings)
    except (HandshakeError, OSError) as exc:
        if core.t0_ns is None:
            result.error = f"stream connect to {result.stream_url} failed: {_describe(exc)}"
        elif not core.finished:  # broke mid-call: keep what was recorded
            core.peer_closed(clock.now_ns(), None, _describe(exc))
            result.error = f"stream broke: {_describe(exc)}"
    if core.end_reason == "aborted":
        result.error = "call aborted"
    return result


_TLS: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    """One TLS context per process: building one costs ~150 ms, which would stall
    every other call on the event loop each time a call starts."""
    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context()
    return _TLS


def _describe(exc: BaseException) -> str:
    """A one-line reason: the HTTP status of a refused upgrade, else the OS error underneath."""
    status = getattr(exc, "status_code", None)
    if status is not None:
        return f"HTTP {status}"
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) or str(seen):
            return f"{type(seen).__name__}: {seen}" if str(seen) else type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


async def _run(ws, core: CallerCore, clock: Clock, timings: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    sid = core.ident.call_sid

    async def send_all(msgs: list[str]) -> None:
        if msgs:
            await ws.send_texts(msgs)

    async def receiver(cancel: trio.CancelScope) -> None:
        try:
            while True:
                data = await ws.receive_message()
                if msgs := core.receive(clock.now_ns(), data):
                    await ws.send_texts(msgs)
        except ConnectionClosed as exc:
            core.peer_closed(clock.now_ns(), exc.code, exc.reason)
            log.info("call %s: stream closed by the app (%s)", sid, exc)
        cancel.cancel()

    try:
        await send_all(core.begin(clock.now_ns()))
        timings["started_ns"] = clock.now_ns()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver, nursery.cancel_scope)
            while (deadline := core.next_deadline_ns()) is not None:
                await clock.sleep_until_ns(deadline)
                await send_all(core.advance(clock.now_ns()))
            nursery.cancel_scope.cancel()
    except ConnectionClosed as exc:
        core.peer_closed(clock.now_ns(), exc.code, exc.reason)
    finally:
        if not core.finished:
            # Cancelled from outside: hang up like Twilio would, briefly and shielded.
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await send_all(core.hang_up(clock.now_ns()))
                except ConnectionClosed:
                    pass
