"""The call legs, on trio: calls created over REST ring, answer, carry audio and end.

:class:`CallEngine` watches the store (:class:`~.calls.CallStore`: a listener wakes it, it
drains the events) and runs each REST-created call to its end in a nursery of its own, so
nothing of a call outlives it. For a call to a configured number (:class:`~.numbers.PhoneNumber`):

1. the call rings; the number gets an ``inbound`` call of its own (a second call in the store,
   its own SID, ``From``/``To`` as the caller dialled them), whose voice webhook gets a signed
   POST; a first ``<Reject>`` leaves both calls unanswered (``busy`` or ``no-answer``);
2. otherwise both calls are answered; the inbound call runs its TwiML, the REST-created one
   runs its ``Twiml``/``Url``; both run as :class:`~.leg.Leg` s joined on one 20 ms grid
   (:class:`~.leg.Join`): what one leg plays into the call is what the other leg's stream
   receives as inbound ``media``;
3. a leg whose TwiML ends (``<Hangup>``, nothing left after its stream closed, an application
   error) hangs up, and the other party hangs up too: both calls end ``completed``;
4. a REST hang-up of either call ends both; a REST redirect stops that leg's TwiML (its stream
   gets ``stop`` and is closed) and runs the new one while the other leg stays on the line;
5. ``<Dial><Number>`` on a leg (a transfer) rings each number as Twilio does: a child call
   ``outbound-dial`` (``ParentCallSid`` the dialling call, ``From`` its ``callerId`` or the
   dialling call's ``From``) per number, and, for a configured number, that number's own
   ``inbound`` call, whose webhook TwiML runs — dialling a Twilio number reaches Twilio again,
   as a second inbound call. The first to answer is bridged: its audio takes the dialling leg's
   place on the grid (the other party now hears it and is heard by it). A number the emulator
   does not have rings unanswered until the ``timeout`` (``no-answer``). When the bridged party
   hangs up (its TwiML ends, or a REST hang-up of either of its calls) the ``<Dial>`` is over:
   ``DialCallStatus`` goes to its ``action``, else the next verb runs. No ringback tone is
   played while it rings (silence);
6. ``<Play>`` fetches its URL (through the tunnels, unsigned) and plays it like ``<Say>``;
7. a call created with ``Record=true`` is recorded from answer to end (:mod:`.recordings`).

A call to a number the emulator does not have fails at once (``failed``), as Twilio reports
a number no carrier serves, with a log line saying which numbers exist.

All requests go out through :class:`~.tunnels.Tunnels`: signed for the public URL, sent to
the mapped local origin.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import trio

from ..caller.dialer import describe, tls_context
from ..caller.sids import E164_RE
from ..caller.webhook import WEBHOOK_USER_AGENT
from ..net.wsconn import ConnectionClosed, HandshakeError, WebSocket, connect
from .calls import BUSY, CANCELED, COMPLETED, ENDED, FAILED, IN_PROGRESS, NO_ANSWER, RINGING, CallEvent, Instructions
from .leg import Bridge, End, Fetch, FetchAudio, Join, Leg, OpenStream, Speak, Step, Wait
from .play_audio import to_line_audio
from .recordings import Recorder
from .rest import RestCore
from .speech import synthesize
from .tunnels import Tunnels

log = logging.getLogger("callsim.twilio_emu")

FRAME_S = 0.020
WEBHOOK_TIMEOUT_S = 15.0  # Twilio's timeout for a TwiML request
STREAM_CONNECT_TIMEOUT_S = 10.0
MAX_STREAM_MESSAGE = 16 * 2**20
MAX_CATCH_UP_FRAMES = 5  # after a stall, frames played at once before the grid skips ahead
CLOSE_TIMEOUT_S = 2.0


@dataclass
class _LegRun:
    """A leg and what its driver holds: the running TwiML's cancel scope and its socket."""

    leg: Leg
    scope: trio.CancelScope | None = None
    ws: WebSocket | None = None
    idle: trio.Event = field(default_factory=trio.Event)
    speech: trio.Event = field(default_factory=trio.Event)
    dial: _DialRun | None = None  # set on a dialled number's leg: its end ends that <Dial> only


@dataclass
class _DialRun:
    """A ``<Dial>`` running on ``owner``: its child calls, and the party that answered."""

    owner: _LegRun
    child_sids: list[str] = field(default_factory=list)  # outbound-dial, one per <Number>
    outcomes: dict[str, str] = field(default_factory=dict)  # child SID -> busy/no-answer/failed
    party: _LegRun | None = None  # the answering number's inbound call, once bridged
    party_sids: list[str] = field(default_factory=list)  # the dialled numbers' inbound calls
    bridged_sid: str | None = None  # the outbound-dial call that was answered
    first_step: Step | None = None
    done: trio.Event = field(default_factory=trio.Event)  # the bridged party is gone


@dataclass
class _CallRun:
    caller: _LegRun
    called: _LegRun
    nursery: trio.Nursery
    answered: trio.Event = field(default_factory=trio.Event)
    ended: trio.Event = field(default_factory=trio.Event)
    join: Join | None = None
    dial: _DialRun | None = None
    children: list[str] = field(default_factory=list)  # every call a <Dial> made: ended with the call
    recorder: Recorder | None = None

    def run_of(self, sid: str) -> _LegRun | None:
        for r in self.legs():
            if r.leg.call_sid == sid:
                return r
        return None

    def legs(self) -> list[_LegRun]:
        d = self.dial
        return [self.caller, self.called] if d is None or d.party is None else [self.caller, self.called, d.party]

    def other(self, run: _LegRun) -> _LegRun:
        return self.called if run is self.caller else self.caller


class CallEngine:
    """Runs the calls of one emulator (:meth:`run` in a nursery, before calls are created)."""

    def __init__(self, core: RestCore, tunnels: Tunnels | None = None,
                 wall_clock: Callable[[], float] | None = None) -> None:
        self.core = core
        self.store = core.store
        self.tunnels = tunnels or Tunnels()
        self.clock = wall_clock or core.clock or time.time
        self.calls: dict[str, _CallRun] = {}  # by either leg's SID, while the call runs
        self._wake = trio.Event()
        self._http: httpx.AsyncClient | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S, follow_redirects=False, trust_env=False,
                                     verify=tls_context()) as http:
            self._http = http
            self.store.listeners.append(self._on_event)
            try:
                async with trio.open_nursery() as nursery:
                    task_status.started()
                    while True:
                        await self._wake.wait()
                        self._wake = trio.Event()
                        for event in self.store.drain_events():
                            self._dispatch(nursery, event)
            finally:
                self.store.listeners.remove(self._on_event)

    def _on_event(self, event: CallEvent) -> None:
        self._wake.set()

    def _dispatch(self, nursery: trio.Nursery, event: CallEvent) -> None:
        call = self.store.get(event.sid)
        if call is None:
            return
        if event.kind == "created":
            if call.direction == "outbound-api":
                nursery.start_soon(self._run_call, event.sid, name=f"call {event.sid}")
            return
        run = self.calls.get(event.sid)
        if run is None:
            return  # not connected yet (its new TwiML is read when it is answered) or over
        leg_run = run.run_of(event.sid)
        d = run.dial
        if event.kind == "hung_up":
            log.info("call %s: hung up over REST (%s)", event.sid, event.status)
            if d is not None and (event.sid in d.child_sids or event.sid in d.party_sids):
                if d.party is None:  # a number still ringing is canceled; the others ring on
                    if event.sid in d.child_sids:
                        d.outcomes[event.sid] = event.status
                        self._all_out(d)
                elif event.sid in (d.bridged_sid, d.party.leg.call_sid):
                    d.done.set()  # the dialled party is gone: the <Dial> ends, the call goes on
            elif leg_run is not None:
                self._hang_up(run, leg_run, "hung up over REST")
        elif event.kind == "redirected" and event.instructions is not None:
            if leg_run is None:
                log.warning("call %s: a redirect of a <Dial>'s child call is not emulated: ignored", event.sid)
            elif leg_run.leg.answered and not leg_run.leg.ended:
                log.info("call %s: redirected over REST: its TwiML stops, the new one runs", event.sid)
                run.nursery.start_soon(self._redirect, run, leg_run, event.instructions)

    # -- one call, both legs -------------------------------------------------------------

    async def _run_call(self, sid: str) -> None:
        store, now = self.store, self.clock
        a = store.get(sid)
        assert a is not None
        if a.ended:
            return
        number = self.core.numbers.get(a.to)
        if number is None:
            known = ", ".join(self.core.numbers) or "none (add --number E164=URL)"
            log.warning("call %s: %s is not an emulated number (numbers: %s): the call fails", sid, a.to, known)
            store.set_status(sid, FAILED, now())
            return
        b = store.create(to=a.to, from_=a.from_, at=now(), direction="inbound",
                         instructions=Instructions(url=number.voice_url, method=number.voice_method))
        token, rng = self.core.auth_token, self.store.rng
        caller = _LegRun(Leg(a.sid, a.account_sid, token, a.from_, a.to, "outbound-api", rng))
        called = _LegRun(Leg(b.sid, b.account_sid, token, b.from_, b.to, "inbound", rng))
        run: _CallRun | None = None
        try:
            async with trio.open_nursery() as nursery:
                run = _CallRun(caller, called, nursery)
                self.calls[a.sid] = self.calls[b.sid] = run
                store.set_status(a.sid, RINGING, now())
                store.set_status(b.sid, RINGING, now())
                log.info("call %s: ringing %s; its inbound call is %s", a.sid, a.to, b.sid)
                nursery.start_soon(self._ring, run, b.instructions)
                with trio.move_on_after(a.timeout_s):
                    await _any(run.ended, run.answered)
                if not (run.answered.is_set() or run.ended.is_set()):
                    log.info("call %s: no answer within %d s", a.sid, a.timeout_s)
                    self._end_both(run, NO_ANSWER)
                await run.ended.wait()
                nursery.cancel_scope.cancel()
        finally:
            children = run.children if run is not None else []
            for s in (a.sid, b.sid, *children):
                self.calls.pop(s, None)
            with trio.CancelScope(shield=True):
                self._end_in_store([*children, b.sid, a.sid], COMPLETED)
                if run is not None and run.recorder is not None:
                    rec = self.core.recordings.add(a.sid, run.recorder, self.clock())
                    log.info("call %s: recording %s (%d s, %d channel(s))", a.sid, rec.sid, rec.duration_s,
                             rec.channels)

    async def _ring(self, run: _CallRun, instructions: Instructions) -> None:
        """The inbound call's webhook, then both answered (unless it rejects)."""
        called = run.called
        step = called.leg.load(instructions, RINGING)
        with trio.CancelScope() as scope:
            called.scope = scope
            while isinstance(step, Fetch):  # the webhook, and any <Redirect> before an answer
                step = await self._fetch(called.leg, step)
        if scope.cancelled_caught:
            return
        if isinstance(step, End) and step.status in (BUSY, NO_ANSWER):  # a first <Reject>
            log.info("call %s: %s: not answered (%s)", called.leg.call_sid, step.reason, step.status)
            self._end_both(run, step.status)
            return
        now = self.clock()
        for r in (run.called, run.caller):
            r.leg.answered = True
            self.store.set_status(r.leg.call_sid, IN_PROGRESS, now)
        run.answered.set()
        a = self.store.get(run.caller.leg.call_sid)
        assert a is not None
        run.join = Join(run.caller.leg, run.called.leg)
        if a.record:
            run.recorder = Recorder(a.recording_channels, started_at=now)
        run.nursery.start_soon(self._tick, run)
        self._start_leg(run, called, step)
        self._start_leg(run, run.caller, run.caller.leg.load(a.instructions, IN_PROGRESS))

    async def _tick(self, run: _CallRun) -> None:
        """The 20 ms grid: a frame out of each leg into the other, and the streams' messages."""
        join = run.join
        assert join is not None
        recorder = run.recorder
        t0 = trio.current_time()
        k = 0
        while True:
            k += 1
            await trio.sleep_until(t0 + k * FRAME_S)
            behind = int((trio.current_time() - t0) / FRAME_S) - k
            if behind > MAX_CATCH_UP_FRAMES:
                k += behind - MAX_CATCH_UP_FRAMES
                behind = MAX_CATCH_UP_FRAMES
            for _ in range(1 + max(0, behind)):
                a, b = join.tick()
                if recorder is not None:
                    recorder.add(a, b)
            k += max(0, behind)
            for r in run.legs():
                if r.leg.speech_done:
                    r.speech.set()
                out = r.leg.take_outbox()
                if out and r.ws is not None:
                    try:
                        await r.ws.send_texts(out)
                    except (ConnectionClosed, trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                        pass  # its receiver sees the close and moves the leg on

    def _start_leg(self, run: _CallRun, r: _LegRun, step: Step) -> None:
        """Run a leg's TwiML from ``step``; its scope and idle event exist from now on, so a
        redirect arriving before the task starts still stops it."""
        r.scope, r.idle = trio.CancelScope(), trio.Event()
        run.nursery.start_soon(self._run_leg, run, r, step, r.scope, r.idle)

    async def _run_leg(self, run: _CallRun, r: _LegRun, step: Step, scope: trio.CancelScope,
                       idle: trio.Event) -> None:
        """Run a leg's TwiML until it ends or is replaced (a redirect cancels ``scope``)."""
        try:
            with scope:
                while not isinstance(step, End):
                    if isinstance(step, Fetch):
                        step = await self._fetch(r.leg, step)
                    elif isinstance(step, OpenStream):
                        step = await self._stream(r, step)
                    elif isinstance(step, Speak | FetchAudio):
                        if isinstance(step, Speak):
                            audio = await synthesize(step.text, step.language)
                        else:
                            audio = await self._fetch_audio(r.leg, step.url)
                        r.speech = trio.Event()
                        r.leg.speech_ready(audio, step)
                        if r.leg.speech_done:
                            r.speech.set()
                        await r.speech.wait()
                        step = r.leg.next()
                    elif isinstance(step, Bridge):
                        step = await self._bridge(run, r, step)
                    else:
                        assert isinstance(step, Wait)
                        await trio.sleep(step.seconds)
                        step = r.leg.next()
            if not scope.cancelled_caught:
                log.info("call %s: hangs up: %s", r.leg.call_sid, step.reason)
                if r.dial is not None:  # a dialled party: its <Dial> ends, the call goes on
                    r.dial.done.set()
                else:
                    self._hang_up(run, r, step.reason)
        finally:
            idle.set()

    async def _redirect(self, run: _CallRun, r: _LegRun, instructions: Instructions) -> None:
        scope, idle = r.scope, r.idle
        if scope is not None:
            scope.cancel()
        await idle.wait()
        if r.leg.ended or run.ended.is_set() or r.scope is not scope:
            return  # over, or a later redirect already took over
        self._start_leg(run, r, r.leg.load(instructions, IN_PROGRESS))

    # -- <Dial> ---------------------------------------------------------------------------

    async def _bridge(self, run: _CallRun, r: _LegRun, step: Bridge) -> Step:
        """Ring the numbers, bridge the first to answer until it hangs up (see the module
        docstring); the dialling leg's next step."""
        dial, store, now = step.dial, self.store, self.clock
        parent = r.leg
        caller_id = dial.caller_id or parent.from_
        d = run.dial = _DialRun(r)
        join = run.join
        assert join is not None
        slot = "caller" if join.caller is parent else "called"
        unanswered = CANCELED  # unless the numbers ring out: the dialling call ended or moved on
        try:
            for number in dial.numbers:
                c = store.create(to=number, from_=caller_id, at=now(), direction="outbound-dial",
                                 instructions=Instructions(), parent_call_sid=parent.call_sid, timeout_s=dial.timeout_s)
                d.child_sids.append(c.sid)
                run.children.append(c.sid)
                self.calls[c.sid] = run
            log.info("call %s: <Dial> %s (timeout %d s): %s", parent.call_sid, ", ".join(dial.numbers),
                     dial.timeout_s, ", ".join(d.child_sids))
            with trio.move_on_after(dial.timeout_s):
                async with trio.open_nursery() as ring:
                    for c_sid, number in zip(d.child_sids, dial.numbers):
                        ring.start_soon(self._ring_number, run, d, c_sid, number, caller_id, ring.cancel_scope)
                    await d.done.wait()  # every number hung up before anyone answered
                    ring.cancel_scope.cancel()
            if d.party is None:
                outcomes = [d.outcomes.get(c, NO_ANSWER) for c in d.child_sids]
                status = outcomes[0] if len(set(outcomes)) == 1 else NO_ANSWER
                log.info("call %s: <Dial>: nobody answered (%s)", parent.call_sid, status)
                unanswered = status
            else:
                unanswered = CANCELED  # the numbers that lost the race
                party = d.party
                log.info("call %s: <Dial>: %s answered: bridged", parent.call_sid, party.leg.to)
                setattr(join, slot, party.leg)
                assert d.first_step is not None
                self._start_leg(run, party, d.first_step)
                await d.done.wait()
                status = COMPLETED
        finally:
            with trio.CancelScope(shield=True):
                if getattr(join, slot) is not parent:
                    setattr(join, slot, parent)
                if d.party is not None:
                    d.party.leg.ended = True
                    if d.party.scope is not None:
                        d.party.scope.cancel()
                self._end_in_store([*d.party_sids, *d.child_sids], unanswered)
                run.dial = None
        bridged = store.get(d.bridged_sid) if d.bridged_sid else None
        dial_sid = d.bridged_sid or (d.child_sids[0] if len(d.child_sids) == 1 else None)
        return parent.dial_ended(dial, status, dial_sid, bridged.duration_s if bridged else None)

    async def _ring_number(self, run: _CallRun, d: _DialRun, c_sid: str, number: str, caller_id: str,
                           ring: trio.CancelScope) -> None:
        """One ``<Number>``: its outbound-dial call rings; a configured number's webhook answers."""
        store, now = self.store, self.clock
        if not E164_RE.match(number):
            log.info("call %s: %r is not a phone number: failed", c_sid, number)
            d.outcomes[c_sid] = FAILED
            store.set_status(c_sid, FAILED, now())
            return self._all_out(d)
        store.set_status(c_sid, RINGING, now())
        target = self.core.numbers.get(number)
        if target is None:
            log.info("call %s: %s is not an emulated number: it rings unanswered", c_sid, number)
            await trio.sleep_forever()
        call = store.create(to=number, from_=caller_id, at=now(), direction="inbound",
                            instructions=Instructions(url=target.voice_url, method=target.voice_method))
        d.party_sids.append(call.sid)
        run.children.append(call.sid)
        self.calls[call.sid] = run
        store.set_status(call.sid, RINGING, now())
        leg_run = _LegRun(Leg(call.sid, call.account_sid, self.core.auth_token, caller_id, number, "inbound",
                              self.store.rng), dial=d)
        step = leg_run.leg.load(call.instructions, RINGING)
        while isinstance(step, Fetch):
            step = await self._fetch(leg_run.leg, step)
        if isinstance(step, End) and step.status in (BUSY, NO_ANSWER):
            d.outcomes[c_sid] = step.status
            for sid in (call.sid, c_sid):
                store.set_status(sid, step.status, now())
            return self._all_out(d)
        if d.party is not None:
            return
        d.party, d.bridged_sid, d.first_step = leg_run, c_sid, step
        leg_run.leg.answered = True
        for sid in (c_sid, call.sid):
            store.set_status(sid, IN_PROGRESS, now())
        ring.cancel()

    @staticmethod
    def _all_out(d: _DialRun) -> None:
        """Every number refused: the <Dial> is over before its timeout."""
        if len(d.outcomes) == len(d.child_sids):
            d.done.set()

    # -- the I/O of a step -----------------------------------------------------------------

    async def _fetch_audio(self, leg: Leg, url: str) -> bytes | None:
        """``<Play>``'s audio as μ-law, or ``None`` (logged; the verb is skipped, as Twilio goes on
        after a media it cannot fetch)."""
        assert self._http is not None
        try:
            resp = await self._http.get(self.tunnels.local(url), headers={"User-Agent": WEBHOOK_USER_AGENT})
            if resp.status_code != 200:
                raise ValueError(f"HTTP {resp.status_code}")
            return await trio.to_thread.run_sync(to_line_audio, resp.content, resp.headers.get("content-type"))
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("call %s: <Play> %s: %s: skipped", leg.call_sid,
                        url, describe(exc) if isinstance(exc, httpx.HTTPError) else exc)
            return None

    async def _fetch(self, leg: Leg, step: Fetch) -> Step:
        assert self._http is not None
        target = self.tunnels.local(step.url)
        try:
            resp = await self._http.request(step.method, target, headers=step.headers, content=step.body or None)
        except httpx.HTTPError as exc:
            return leg.fetch_failed(describe(exc) if not isinstance(exc, httpx.TimeoutException)
                                    else f"no answer within {WEBHOOK_TIMEOUT_S:g} s")
        return leg.fetched(resp.status_code, resp.content)

    async def _stream(self, r: _LegRun, step: OpenStream) -> Step:
        leg = r.leg
        target = self.tunnels.local(step.url)
        try:
            ws = await connect(target, step.headers, connect_timeout=STREAM_CONNECT_TIMEOUT_S,
                               max_message_size=MAX_STREAM_MESSAGE,
                               ssl_context=tls_context() if target.startswith("wss:") else None)
        except (HandshakeError, OSError) as exc:
            return leg.stream_failed(describe(exc))
        r.ws = ws
        try:
            await ws.send_texts(leg.stream_opened())
            while True:
                data = await ws.receive_message()
                out = leg.stream_message(data)
                if out:
                    await ws.send_texts(out)
        except (ConnectionClosed, trio.BrokenResourceError, OSError):
            r.ws = None
            step = leg.stream_closed_by_server()
            with trio.CancelScope(shield=True):
                await ws.aclose(timeout=CLOSE_TIMEOUT_S)
            return step
        finally:
            if r.ws is ws:  # ended from Twilio's side: stop, then close
                r.ws = None
                stop = leg.stop_stream()
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                    try:
                        if stop is not None:
                            await ws.send_text(stop)
                        await ws.aclose(timeout=CLOSE_TIMEOUT_S)
                    except (ConnectionClosed, trio.BrokenResourceError, OSError):
                        pass

    # -- ends ------------------------------------------------------------------------------

    def _hang_up(self, run: _CallRun, r: _LegRun, why: str) -> None:
        """``r``'s party hung up: its call ends, and the other party's with it."""
        other = run.other(r)
        if not other.leg.ended:
            log.info("call %s: the other party (%s) hung up: %s", other.leg.call_sid, r.leg.call_sid, why)
        self._end_both(run, COMPLETED)

    def _end_both(self, run: _CallRun, unanswered_status: str) -> None:
        for r in run.legs():
            r.leg.ended = True
            if r.scope is not None:
                r.scope.cancel()
        self._end_in_store([*run.children, run.called.leg.call_sid, run.caller.leg.call_sid], unanswered_status)
        run.ended.set()

    def _end_in_store(self, sids: list[str], unanswered_status: str) -> None:
        now = self.clock()
        for sid in sids:
            call = self.store.get(sid)
            if call is None or call.status in ENDED:
                continue
            if call.status == IN_PROGRESS:
                self.store.set_status(sid, COMPLETED, now)
            else:
                status = unanswered_status if unanswered_status in (BUSY, NO_ANSWER, FAILED, CANCELED) else CANCELED
                self.store.set_status(sid, status, now)


async def _any(*events: trio.Event) -> None:
    """Return once any of ``events`` is set."""
    async with trio.open_nursery() as n:
        for e in events:
            async def wait(e: trio.Event = e) -> None:
                await e.wait()
                n.cancel_scope.cancel()
            n.start_soon(wait)


__all__ = ["CallEngine"]
