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

import httpx
import trio

from ..audio.utterances import UtteranceBank
from ..core_io import Outputs
from ..net.clocks import Clock, MonotonicClock, TrioClock  # noqa: F401 -- TrioClock re-exported
from ..net.drive import CallServices, drive_call, open_call_services
from ..net.wsconn import HandshakeError, open_websocket
from . import twilio_wire as tw
from .call_result import CallResult  # re-exported
from .core import CallerCore
from .dialer import DialFailed, Dialer, OpenStream, PostWebhook, tls_context, webhook_request
from .impairments import Impairments
from .script import Step
from .webhook import CallParties, WebhookExchange

log = logging.getLogger("callsim.caller")

MAX_MESSAGE_BYTES = 16 * 2**20  # Twilio documents no limit; a whole long reply fits


async def fetch_twiml(client: httpx.AsyncClient, url: str, parties: CallParties,
                      auth_token: str | None) -> WebhookExchange:
    """POST the voice webhook like Twilio and read its TwiML (raises for what the dialer refuses)."""
    req = webhook_request(url, parties, auth_token)
    resp = await _post(client, req)
    return req.read(resp.status_code, resp.headers.get("content-type"), resp.text, resp.content)


async def _post(client: httpx.AsyncClient, req: PostWebhook) -> httpx.Response:
    return await client.post(req.url, data=req.form, headers=req.headers)


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

    The sequence is :class:`.dialer.Dialer`'s; this does its I/O. ``services``: the timer
    service and reactor of the nursery that runs the calls
    (:func:`~..net.drive.open_call_services`, on ``clock``); without them the call opens its own.

    Never raises for what the far end does: refusals, bad TwiML and broken sockets end up in
    :attr:`CallResult.error` with what was recorded so far.
    """
    clock = clock or MonotonicClock()
    dialer = Dialer(target, script, auth_token=auth_token, bank=bank, impairments=impairments,
                    wire_policy=wire_policy, parties=parties, custom_parameters=custom_parameters,
                    max_duration_ms=max_duration_ms, rng=rng)
    step = dialer.start(clock.now_ns())
    if isinstance(step, PostWebhook):
        try:
            with trio.fail_after(connect_timeout):
                async with httpx.AsyncClient(verify=tls_context() if step.tls else False,
                                             timeout=connect_timeout) as client:
                    resp = await _post(client, step)
        except (httpx.TimeoutException, trio.TooSlowError):
            dialer.webhook_timed_out(connect_timeout)
            return dialer.result
        except httpx.HTTPError as exc:
            dialer.webhook_failed(exc)
            return dialer.result
        step = dialer.webhook_answered(clock.now_ns(), resp.status_code, resp.headers.get("content-type"),
                                       resp.text, resp.content)
    if isinstance(step, DialFailed):
        return dialer.result
    assert isinstance(step, OpenStream)
    await _play_preamble(step)
    result, core = dialer.result, step.core
    try:
        async with open_websocket(
            step.url, step.headers,
            max_message_size=MAX_MESSAGE_BYTES, connect_timeout=connect_timeout, close_timeout=2,
            ssl_context=tls_context() if step.tls else None,
        ) as ws:
            result.timings["connected_ns"] = clock.now_ns()
            await _run(ws, core, clock, result.timings, services)
    except (HandshakeError, OSError) as exc:
        dialer.stream_failed(clock.now_ns(), exc)
    return dialer.ended()


async def _play_preamble(step: OpenStream) -> None:
    """Take the time Twilio spends on ``<Say>``/``<Pause>`` before ``<Connect>``: it opens
    the stream only after them, so a bridge sees ``start`` that much later."""
    if step.preamble_s is not None:
        await trio.sleep(step.preamble_s)


async def _run(ws, core: CallerCore, clock: Clock, timings: dict[str, int],  # type: ignore[no-untyped-def]
               services: CallServices | None = None) -> None:
    """Stream the call on ``ws``: ``connected``/``start``, then the shared loop until it ends."""
    if services is None:
        async with open_call_services(clock) as own:
            return await _run(ws, core, clock, timings, own)

    def begin(now_ns: int) -> Outputs:
        timings["started_ns"] = now_ns
        return core.begin(now_ns)

    closed = await drive_call(core, ws, clock, services, begin=begin)
    if closed is not None:
        log.info("call %s: stream closed by the app (%s)", core.ident.call_sid, closed)
