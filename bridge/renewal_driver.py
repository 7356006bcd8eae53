"""The I/O of session renewal (decisions in :mod:`.renewal`): one task per call, in its nursery.

Each OpenAI session of a call is an :class:`OpenAISession` run by :meth:`.driver.CallDriver._openai_task`
in the call's nursery, inside its own cancel scope: cancelling the scope closes its socket (the task's
``finally``), and cancelling the call's nursery closes them all, so no OpenAI socket outlives its call.

:class:`Renewer` sleeps until the current session's renewal time, opens the next session (configured
and seeded as it connects, :meth:`Renewer.configure`), waits for it to be configured and for a quiet
moment, and switches: from then on caller frames go to the new socket and its events to the core;
the old one is closed. The transcript lines saved between the seed and the switch (usually the
exchange right before it) are sent to the new session at the switch (:mod:`.renewal_seed`).
The switch itself is synchronous — no ``await`` between the last frame sent to the old socket and
the first sent to the new one — so it can also happen inside the core's handling of
``session_expired`` (:meth:`Renewer.expired`), before the old socket's close is read.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import orjson
import trio

from . import realtime as rt
from .actions import Notice, SaveTranscript
from .logsafe import wire
from .renewal import NS_PER_S, RETRY_S, RenewalPolicy, TranscriptLog, quiet
from .renewal_seed import Seeding
from .wsconn import ConnectionClosed

if TYPE_CHECKING:
    from .driver import CallDriver
    from .wsconn import WebSocket

log = logging.getLogger("callsim.bridge.renewal")

POLL_S = 0.02  # how often a pending switch looks for a quiet moment: one Twilio frame


class OpenAISession:
    """One OpenAI socket of a call, from opening to close."""

    __slots__ = ("n", "ws", "scope", "current", "retired", "ready", "opened", "t_open_ns", "seeding",
                 "catch_up")

    def __init__(self, n: int, *, current: bool = False) -> None:
        self.n = n  # 0 = the call's first session
        self.ws: WebSocket | None = None
        self.scope: trio.CancelScope | None = None
        self.current = current  # the call's audio goes here, its events go to the core
        self.retired = False  # switched away from: closing or closed
        self.ready = trio.Event()  # session.updated seen (a renewal session, before the switch)
        self.opened = trio.Event()
        self.t_open_ns: int | None = None
        self.seeding: Seeding | None = None  # what it was told of the transcript, once all of it is sent
        self.catch_up = False  # switched to before its seed was all sent: configure() catches it up

    def close(self) -> None:
        self.retired = True
        if self.scope is not None:
            self.scope.cancel()


class Renewer:
    """Renews the OpenAI session of one call (see the module docstring)."""

    def __init__(self, driver: CallDriver, policy: RenewalPolicy) -> None:
        self.driver = driver
        self.policy = policy
        self.transcript = TranscriptLog()
        self.current: OpenAISession | None = None
        self.next: OpenAISession | None = None
        self.renewals = 0
        self._wake = trio.Event()
        self._retry_at_ns = 0  # after a failed attempt, the next one waits until then

    # ------------------------------------------------------------ called by the driver

    def saved(self, t: SaveTranscript) -> None:
        self.transcript.add(t)

    async def configure(self, sess: OpenAISession, ws: WebSocket) -> None:
        """A renewal session just connected: the same ``session.update``, then the conversation so far.

        If the call switched to it meanwhile, the lines saved since this seed follow at once (this
        task reads none of the session's own events before it returns, so the transcript holds only
        the conversation before it); otherwise :meth:`_switch` sends them.
        """
        core = self.driver.core
        seeding = Seeding(sess.n, core.p.dialect)
        msgs = seeding.seed(self.transcript.recent_items())
        await ws.send_text(rt.session_update(core.p))
        for msg in msgs:
            await ws.send_text(msg)
        # no await from here to the end of the check: a switch is either before it or sees ``seeding``
        sess.seeding = seeding
        if sess.catch_up:
            more, n = seeding.catch_up(self.transcript.recent_items())
            log.info("call %s: OpenAI session %d seeded after the switch: %d transcript item(s) when it"
                     " connected, %d new or changed since", self.driver.tag, sess.n, len(msgs), n)
            for msg in more:
                await ws.send_text(msg)

    def pending_message(self, sess: OpenAISession, data: str | bytes) -> None:
        """An event of a session not switched to yet: only its configuration and errors matter."""
        try:  # few and small: no caller audio goes to it before the switch, so no reply either
            ev = orjson.loads(data)
            etype = ev.get("type")
        except (orjson.JSONDecodeError, AttributeError):
            return
        if etype == "session.updated":
            sess.ready.set()
            self._wake.set()
        elif etype == "error":
            err = ev.get("error") if isinstance(ev.get("error"), dict) else {}
            log.warning("call %s: next OpenAI session: error %s: %s", self.driver.tag,
                        wire(err.get("code"), 60), wire(err.get("message"), 200))

    def failed(self, sess: OpenAISession, reason: str) -> None:
        """A renewal session failed before the switch: the renewer tries again if there is time."""
        log.warning("call %s: could not open the next OpenAI session: %s", self.driver.tag, wire(reason, 200))
        if self.next is sess:
            self.next = None
            self._retry_at_ns = time.monotonic_ns() + int(RETRY_S * NS_PER_S)
        self._wake.set()

    def expired(self, now_ns: int) -> None:
        """The current session hit its maximum duration (the core saw ``session_expired``)."""
        nxt = self.next
        if nxt is None:
            nxt = self._open_next()
            how = "opening one now"
        else:
            how = "configured" if nxt.ready.is_set() else "still opening"
        log.warning("call %s: OpenAI session expired before the switch: switching at once to the next one (%s)",
                    self.driver.tag, how)
        self._switch(now_ns, "expired", nxt)

    # ------------------------------------------------------------ the task

    async def run(self) -> None:
        while True:
            cur = self.current
            assert cur is not None
            await cur.opened.wait()
            if cur is not self.current:
                continue
            assert cur.t_open_ns is not None
            await _sleep_until_ns(self.policy.open_at_ns(cur.t_open_ns))
            if cur is not self.current:  # it expired early and was replaced meanwhile
                continue
            if self.driver.core.ending:
                return
            await self._renew(cur)

    async def _renew(self, cur: OpenAISession) -> None:
        assert cur.t_open_ns is not None
        hard = self.policy.hard_ns(cur.t_open_ns)
        t_wait = time.monotonic_ns()
        while cur is self.current:
            if self.driver.core.ending:
                # the goodbye, the apology or a hang-up: this session sees the call out, and a new
                # one (paid for) would only be opened to be closed
                if self.next is not None:
                    self.next.close()
                    self.next = None
                return
            now = time.monotonic_ns()
            if self.next is None and now >= self._retry_at_ns:
                self._open_next()
            nxt = self.next
            busy = quiet(self.driver.core)
            if nxt is not None and nxt.ready.is_set() and busy is None:
                self._switch(now, "quiet", nxt, waited_ns=now - t_wait)
                return
            if nxt is not None and now >= hard:
                log.warning("call %s: no quiet moment before the session limit (%s): switching anyway",
                            self.driver.tag, busy or "the next session is not configured yet")
                self._switch(now, "limit", nxt, waited_ns=now - t_wait, busy=busy)
                return
            self._wake = trio.Event()
            # past the hard limit with no next session (it keeps failing): retry; an expiry opens one too
            with trio.move_on_after(POLL_S if nxt is not None else RETRY_S):
                await self._wake.wait()

    def _open_next(self) -> OpenAISession:
        sess = OpenAISession((self.current.n + 1) if self.current is not None else 1)
        self.next = sess
        self.driver.start_openai(sess)
        return sess

    def _switch(self, now_ns: int, why: str, nxt: OpenAISession, *, waited_ns: int = 0,
                busy: str | None = None) -> None:
        """Move the call to ``nxt`` now; close the old session. Synchronous: no frame can fall in between."""
        driver, core, old = self.driver, self.driver.core, self.current
        ready = nxt.ready.is_set()
        if old is not None:
            old.current = False
        nxt.current = True
        self.current, self.next = nxt, None
        driver.openai = nxt.ws  # None while it is still connecting: the core holds caller audio meanwhile
        core.session_switched(now_ns, ready=ready)
        if old is not None:
            old.close()
        self.renewals += 1
        self._wake.set()
        seeding, seed = nxt.seeding, ""
        data: dict[str, object] = {"renewal": self.renewals, "switch": why, "waited_ms": round(waited_ns / 1e6),
                                   "next_ready": ready}
        if seeding is None:  # its seed is not all sent yet: configure() catches it up
            nxt.catch_up = True
            seed = ", its transcript seed still being sent"
        else:
            seeded = len(seeding)
            msgs, sent = seeding.catch_up(self.transcript.recent_items())
            if msgs:
                assert nxt.ws is not None  # seeded, so connected
                driver.spawn(_send_all, nxt.ws, msgs)
            seed = f"; transcript: {seeded} item(s) seeded when it connected, {sent} new or changed since sent now"
            data.update(seeded_items=seeded, caught_up_items=sent)
        log.info("call %s: OpenAI session renewed (%d): switched %s%s%s",
                 driver.tag, self.renewals, {"quiet": "at a quiet moment", "limit": "at the limit, not quiet",
                                             "expired": "after the old session expired"}[why],
                 f" after {waited_ns / 1e6:.0f} ms" if waited_ns else "", seed)
        if busy:
            data["busy"] = busy
        driver.app.notice(core, Notice("session_renewed", data))


async def _send_all(ws: WebSocket, msgs: list[str]) -> None:
    try:
        for msg in msgs:
            await ws.send_text(msg)
    except ConnectionClosed:
        pass  # the session's task reports the loss


async def _sleep_until_ns(t_ns: int) -> None:
    delay = (t_ns - time.monotonic_ns()) / NS_PER_S
    if delay > 0:
        await trio.sleep(delay)
