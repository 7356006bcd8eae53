"""The trio driver of the fake caller: real sockets around :class:`CallerCore`.

One call is one nursery: its own task, which has the core's ticks run at the
core's absolute deadlines and sends what :meth:`CallerCore.advance` returns, and
a receiver task that feeds every message to :meth:`CallerCore.receive` — from the
process's :class:`~.reactor.Reactor` task while nothing needs awaiting, so that a
message does not cost a wake-up of the receiver (see :mod:`.reactor`). When
either side ends the call (script hangs up, app closes, cancellation) the whole
nursery goes, and the socket is closed — nothing of a call outlives it.

The ticks of every call of the process run in one :class:`TickScheduler` task
(one per trio run and clock type, started on first use): at 150 calls, a task
per call sleeping to each 20 ms deadline meant 7,500 timer wake-ups, cancel
scopes and task switches a second. The scheduler keeps a heap of
``(deadline, call)``, wakes when the earliest is due, runs each due call's
``advance`` at its own deadline and writes its frames synchronously when the
socket takes them whole (:meth:`.wsconn.WebSocket.send_texts_nowait`); the
call's task stays parked throughout. Only what cannot be done synchronously goes
back to the call's task: a write the kernel would not take whole (it finishes
it, in order, then registers again), an error (raised there, so it ends that
call alone), or the end of the script. A call registers while it waits and
unregisters whenever it stops waiting (handed back, cancelled), so nothing of a
call stays with the scheduler.

Timestamps come from a :class:`Clock`. Real runs use ``time.monotonic_ns`` (the
clock the mock and the bridge share, design.md rule 4); :meth:`Clock.trio_time`
turns its deadlines into trio's, because trio's own clock carries a random
offset (stack.md). Tests that only
need order pass :class:`TrioClock`, which reads trio's (possibly mocked) clock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import time
from typing import Protocol

import httpx
import outcome
import trio

from ..audio.utterances import UtteranceBank
from ..net.reactor import shared_reactor
from ..net.wsconn import ConnectionClosed, HandshakeError, open_websocket
from . import twilio_wire as tw
from .call_result import CallResult  # re-exported
from .core import CallerCore
from .dialer import DialFailed, Dialer, OpenStream, PostWebhook, tls_context, webhook_request
from .impairments import Impairments
from .script import Step
from .webhook import CallParties, WebhookExchange

log = logging.getLogger("callsim.caller")

MAX_MESSAGE_BYTES = 16 * 2**20  # Twilio documents no limit; a whole long reply fits


class Clock(Protocol):
    def now_ns(self) -> int: ...
    def trio_time(self, t_ns: int) -> float: ...


class MonotonicClock:
    """``time.monotonic_ns``: shared by every process on the machine."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def trio_time(self, t_ns: int) -> float:
        """The trio deadline for ``t_ns`` (trio's clock has its own random offset)."""
        return trio.current_time() + (t_ns - time.monotonic_ns()) / 1e9


class TrioClock:
    """trio's clock (works with ``MockClock``); not comparable across processes."""

    def now_ns(self) -> int:
        # round, not int: after sleeping until ``d / 1e9`` the clock must read ``d`` again, not d - 1
        return round(trio.current_time() * 1e9)

    def trio_time(self, t_ns: int) -> float:
        return t_ns / 1e9


# ---------------------------------------------------------------- tick scheduler


_FLUSH = object()  # handed back: frames are queued that the socket did not take at once


class _Ticket:
    """One call's place with the :class:`TickScheduler`: its core, its socket, and
    its parked task while it waits. ``scheduled``: it is in the heap now."""

    __slots__ = ("core", "scheduled", "scheduler", "task", "ws")

    def __init__(self, scheduler: TickScheduler, core: CallerCore, ws) -> None:  # type: ignore[no-untyped-def]
        self.scheduler = scheduler
        self.core = core
        self.ws = ws
        self.task: trio.lowlevel.Task | None = None
        self.scheduled = False

    async def wait(self, deadline_ns: int) -> object:
        """Park this call's task until the scheduler hands the call back: None (no
        more deadlines), ``_FLUSH`` (await the socket's flush), or an exception."""
        self.task = trio.lowlevel.current_task()
        self.scheduler.schedule(self, deadline_ns)

        def abort(_: object) -> trio.lowlevel.Abort:
            self.task = None
            self.scheduler.unschedule(self)
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def fire(self, now_ns: int) -> None:
        """Run the call's due ticks and send; in the scheduler's task, never raises."""
        try:
            msgs = self.core.advance(now_ns)
            if msgs and not self.ws.send_texts_nowait(msgs):
                self._hand_back(_FLUSH)
                return
            deadline = self.core.next_deadline_ns()
        except Exception as exc:  # ConnectionClosed, or a bug: it ends this call, in its own task
            self._hand_back(exc)
            return
        if deadline is None:
            self._hand_back(None)
        else:
            self.scheduler.schedule(self, deadline)

    def _hand_back(self, value: object) -> None:
        task, self.task = self.task, None
        assert task is not None
        trio.lowlevel.reschedule(task, outcome.Value(value))


class TickScheduler:
    """Runs every call's ticks from one task (see the module docstring).

    ``wakeups`` (times the task woke) and ``fired`` (call ticks run) are for
    tests and introspection. Each due call is run with the clock read just
    before it, so its frames carry their own send time, and a call's frames are
    never held for another's: a call is only late by the time the calls due
    before it take.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._heap: list[tuple[int, int, _Ticket]] = []
        self._order = itertools.count()
        self._scope: trio.CancelScope | None = None  # the run task's sleep
        self._wake_ns: int | None = None  # ... and the deadline it sleeps to (None: until woken)
        self.wakeups = 0
        self.fired = 0

    @property
    def scheduled(self) -> int:
        """How many calls wait for a tick now."""
        return len(self._heap)

    def schedule(self, ticket: _Ticket, deadline_ns: int) -> None:
        heapq.heappush(self._heap, (deadline_ns, next(self._order), ticket))
        ticket.scheduled = True
        scope = self._scope
        if scope is not None and (self._wake_ns is None or deadline_ns < self._wake_ns):
            self._wake_ns = deadline_ns
            scope.deadline = self.clock.trio_time(deadline_ns)

    def unschedule(self, ticket: _Ticket) -> None:
        if ticket.scheduled:
            ticket.scheduled = False
            self._heap = [e for e in self._heap if e[2] is not ticket]
            heapq.heapify(self._heap)

    async def run(self) -> None:
        """Forever (a system task, cancelled when the trio run ends): sleep to the
        earliest deadline, then run every call that is due."""
        clock = self.clock
        while True:
            heap = self._heap
            self._wake_ns = heap[0][0] if heap else None
            with trio.CancelScope(deadline=math.inf if self._wake_ns is None
                                  else clock.trio_time(self._wake_ns)) as scope:
                self._scope = scope
                await trio.sleep_forever()  # yields even when already due: the other tasks run
            self._scope = None
            self.wakeups += 1
            now = clock.now_ns()
            heap = self._heap
            while heap and heap[0][0] <= now:
                ticket = heapq.heappop(heap)[2]
                ticket.scheduled = False
                self.fired += 1
                ticket.fire(now)
                now = clock.now_ns()
                heap = self._heap  # unschedule() may have rebuilt it


_SCHEDULERS: trio.lowlevel.RunVar[dict[type, TickScheduler]] = trio.lowlevel.RunVar("callsim_tick_schedulers")


def tick_scheduler(clock: Clock) -> TickScheduler:
    """This trio run's scheduler for ``clock``'s type, started on first use.

    A system task, not a task of some call's nursery: it must serve calls that
    start and end in any order, and it holds nothing of a call between its waits.
    """
    try:
        schedulers = _SCHEDULERS.get()
    except LookupError:
        schedulers = {}
        _SCHEDULERS.set(schedulers)
    scheduler = schedulers.get(type(clock))
    if scheduler is None:
        scheduler = schedulers[type(clock)] = TickScheduler(clock)
        trio.lowlevel.spawn_system_task(scheduler.run, name=f"callsim tick scheduler ({type(clock).__name__})")
    return scheduler


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
) -> CallResult:
    """Place one call at ``target`` (an ``http(s)://`` webhook or ``ws(s)://`` stream URL).

    The sequence is :class:`.dialer.Dialer`'s; this does its I/O. Never raises for what
    the far end does: refusals, bad TwiML and broken sockets end up in
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
                async with httpx.AsyncClient(verify=tls_context() if step.tls else False) as client:
                    resp = await _post(client, step)
        except (httpx.HTTPError, trio.TooSlowError) as exc:
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
            await _run(ws, core, clock, result.timings)
    except (HandshakeError, OSError) as exc:
        dialer.stream_failed(clock.now_ns(), exc)
    return dialer.ended()


async def _play_preamble(step: OpenStream) -> None:
    """Take the time Twilio spends on ``<Say>``/``<Pause>`` before ``<Connect>``: it opens
    the stream only after them, so a bridge sees ``start`` that much later."""
    if step.preamble_s is not None:
        await trio.sleep(step.preamble_s)


async def run_ticks(ws, core: CallerCore, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    """Have ``core``'s ticks run and sent at its deadlines until it has no more.

    The call's task waits parked while the process's :class:`TickScheduler`
    does the work; it only runs to finish a write the socket did not take at
    once (so bytes keep their order) or to raise what broke the call.
    """
    scheduler = tick_scheduler(clock)
    ticket = _Ticket(scheduler, core, ws)
    try:
        while (deadline := core.next_deadline_ns()) is not None:
            handed_back = await ticket.wait(deadline)
            if handed_back is _FLUSH:
                await ws.flush()
            elif isinstance(handed_back, BaseException):
                raise handed_back
    finally:
        scheduler.unschedule(ticket)


async def _run(ws, core: CallerCore, clock: Clock, timings: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    sid = core.ident.call_sid

    async def send_all(msgs: list[str]) -> None:
        if msgs:
            await ws.send_texts(msgs)

    async def receiver(cancel: trio.CancelScope) -> None:
        reactor = shared_reactor()

        def handle(data: str | bytes) -> bool:
            """A message, in the reactor's task: as below while nothing needs awaiting."""
            msgs = core.receive(clock.now_ns(), data)
            return not msgs or ws.send_texts_nowait(msgs)  # False: the kernel did not take it all

        try:
            while True:
                if await ws.receive_via(reactor, handle):
                    await ws.flush()
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
            try:
                await run_ticks(ws, core, clock)
            except ConnectionClosed as exc:  # here, not outside: out of a nursery it would come grouped
                core.peer_closed(clock.now_ns(), exc.code, exc.reason)
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
