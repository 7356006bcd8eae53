"""The trio driver of the fake caller: real sockets around :class:`CallerCore`.

A call is served by the shared loop, :func:`~..net.drive.drive`, in one nursery:
its own task, parked while the run's :class:`~..net.timers.TimerService` runs
the core's ticks at its absolute 20 ms deadlines and sends what
:meth:`CallerCore.advance` returns, and a receiver task that feeds every
message to :meth:`CallerCore.receive`, from the run's
:class:`~..net.reactor.Reactor` task while nothing needs awaiting. When either
side ends the call (script hangs up, app closes, cancellation) the whole nursery
goes, and the socket is closed: nothing of a call outlives it.

The timer service and the reactor belong to whoever places the calls: open
them once with :func:`~..net.drive.open_call_services` in the nursery that runs
the calls and pass them to each :func:`place_call`, so the ticks of all the
calls run from one task. A single ``place_call`` without them opens its own.

Timestamps come from a :class:`~..net.clocks.Clock`: ``time.monotonic_ns`` in
real runs, trio's (possibly mocked) clock in tests that only need order.
"""

from __future__ import annotations

import logging
import random
import ssl

import httpx
import trio

from ..audio.utterances import UtteranceBank
from ..net.clocks import Clock, MonotonicClock, TrioClock  # noqa: F401 -- TrioClock re-exported
from ..net.drive import CallServices, apply, drive, open_call_services
from ..net.wsconn import ConnectionClosed, HandshakeError, open_websocket
from . import twilio_wire as tw
from .call_result import (  # CallResult re-exported
    CallResult,
    bad_target,
    follow_twiml,
    new_core,
    target_kind,
)
from .connect_hints import plain_port_hint
from .core import CallerCore
from .impairments import Impairments
from .script import Step
from .webhook import (
    CallParties,
    StreamTarget,
    TwimlError,
    WebhookExchange,
    preamble_ms,
    read_answer,
    stream_headers,
    webhook_form,
    webhook_headers,
)

log = logging.getLogger("callsim.caller")

MAX_MESSAGE_BYTES = 16 * 2**20  # Twilio documents no limit; a whole long reply fits


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
    services: CallServices | None = None,
) -> CallResult:
    """Place one call at ``target`` (an ``http(s)://`` webhook or ``ws(s)://`` stream URL).

    ``services``: the timer service and reactor of the nursery that runs the calls
    (:func:`~..net.drive.open_call_services`, on ``clock``); without them the call opens its own.

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
        await _play_preamble(result)
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
            await _run(ws, core, clock, result.timings, services)
    except (HandshakeError, OSError) as exc:
        if core.t0_ns is None:
            result.error = f"stream connect to {result.stream_url} failed: {_describe(exc)}"
            hint = plain_port_hint(result.stream_url, exc,
                                   webhook_url=result.webhook.url if result.webhook is not None else None)
            if hint:
                result.error += f"; {hint}"
        elif not core.finished:  # broke mid-call: keep what was recorded
            core.peer_closed(clock.now_ns(), None, _describe(exc))
            result.error = f"stream broke: {_describe(exc)}"
    if core.end_reason == "aborted":
        result.error = "call aborted"
    return result


async def _play_preamble(result: CallResult) -> None:
    """Take the time Twilio spends on ``<Say>``/``<Pause>`` before ``<Connect>``: it opens
    the stream only after them, so a bridge sees ``start`` that much later. Each is noted
    (a ``<Play>`` cannot be timed offline: noted, not waited for)."""
    answer = result.webhook.result if result.webhook is not None else None
    if not isinstance(answer, StreamTarget) or not answer.preamble:
        return
    result.notes += [p.note for p in answer.preamble]
    await trio.sleep(preamble_ms(answer.preamble) / 1000)


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


async def _run(ws, core: CallerCore, clock: Clock, timings: dict[str, int],  # type: ignore[no-untyped-def]
               services: CallServices | None = None) -> None:
    """Stream the call on ``ws``: ``connected``/``start``, then the shared loop until it ends."""
    if services is None:
        async with open_call_services(clock) as own:
            return await _run(ws, core, clock, timings, own)
    try:
        await apply(ws, core.begin(clock.now_ns()))
        timings["started_ns"] = clock.now_ns()
        closed = await drive(core, ws, clock, services)
        if closed is not None:
            log.info("call %s: stream closed by the app (%s)", core.ident.call_sid, closed)
    except ConnectionClosed as exc:
        core.peer_closed(clock.now_ns(), exc.code, exc.reason)
    finally:
        if not core.finished:
            # Cancelled from outside: hang up like Twilio would, briefly and shielded.
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await apply(ws, core.hang_up(clock.now_ns()))
                except ConnectionClosed:
                    pass
