"""The live feed: typed call events for the operator console, bounded per subscriber.

A call publishes an event when something happens in it — it started or ended, a transcript line
arrived, the caller barged in, a tool ran, OpenAI failed — never per audio frame, and never audio.
The hub fans each event out to the subscribers watching that call or all calls.

Why bounded per subscriber, dropping: a console on a slow link (or a stopped browser tab) must
never slow a call. :meth:`FeedHub.publish` is synchronous and never waits: a subscriber whose
queue is full loses the event and is told how many it lost before its next one (a ``dropped``
event), so the page can say "N events dropped" instead of showing a silently wrong transcript.

Why a backlog per call: a console opened in the middle of a call (or a browser that
reconnected) first gets what the call has said so far. It is bounded too, and kept for a few
ended calls so a call that just hung up can still be looked at.

With nobody subscribed, publishing is a dict and a deque append per event: the calls pay nothing
per frame for the feed.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

__all__ = ["FeedHub", "Subscriber", "SUBSCRIBER_QUEUE", "BACKLOG_PER_CALL", "ENDED_KEPT"]

#: events one subscriber may have waiting; beyond, new events are dropped for it (and counted)
SUBSCRIBER_QUEUE = 256
#: events remembered per call for a console that subscribes late
BACKLOG_PER_CALL = 400
#: ended calls whose backlog is kept
ENDED_KEPT = 32
#: subscribers at once (all consoles together); a further one is refused
MAX_SUBSCRIBERS = 64

Event = dict[str, Any]


class Subscriber:
    """One console's queue: a bounded deque, the count of events it lost, a wake-up."""

    def __init__(self, hub: FeedHub, call_sid: str | None, maxlen: int) -> None:
        self.hub = hub
        self.call_sid = call_sid  # None: every call
        self.maxlen = maxlen
        self.queue: deque[Event] = deque()
        self.dropped = 0
        self.closed = False
        self._wake = trio.Event()

    def offer(self, event: Event) -> None:
        """Queue ``event`` unless the queue is full (then count it as dropped). Never waits."""
        if len(self.queue) >= self.maxlen:
            self.dropped += 1
            return
        self.queue.append(event)
        self._wake.set()

    def take(self) -> list[Event]:
        """What is waiting now, a ``dropped`` event first if some were lost since the last take."""
        out: list[Event] = []
        if self.dropped:
            out.append({"kind": "dropped", "call": self.call_sid, "t": time.time(), "n": self.dropped})
            self.dropped = 0
        out.extend(self.queue)
        self.queue.clear()
        return out

    async def wait(self, timeout: float) -> None:
        """Until something is queued, the subscriber is closed, or ``timeout`` seconds pass."""
        if self.queue or self.dropped or self.closed:
            return
        self._wake = trio.Event()
        with trio.move_on_after(timeout):
            await self._wake.wait()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def events(self, *, heartbeat_s: float = 15.0) -> AsyncIterator[list[Event]]:
        """Batches of events as they come; an empty batch every ``heartbeat_s`` of quiet (the
        SSE comment that keeps proxies from closing an idle stream). Ends when closed."""
        try:
            while not self.closed:
                await self.wait(heartbeat_s)
                yield self.take()
        finally:
            self.hub.unsubscribe(self)


class FeedHub:
    """Who watches which call, the per-call backlogs, and :meth:`publish`."""

    def __init__(self, *, queue: int = SUBSCRIBER_QUEUE, backlog: int = BACKLOG_PER_CALL,
                 ended_kept: int = ENDED_KEPT, max_subscribers: int = MAX_SUBSCRIBERS,
                 clock: Callable[[], float] = time.time) -> None:
        self._queue = queue
        self._backlog_len = backlog
        self._ended_kept = ended_kept
        self.max_subscribers = max_subscribers
        self._clock = clock
        self._seq = itertools.count(1)
        self._all: set[Subscriber] = set()
        self._by_call: dict[str, set[Subscriber]] = {}
        self._backlog: dict[str, deque[Event]] = {}  # live calls
        self._ended: OrderedDict[str, deque[Event]] = OrderedDict()  # recently ended calls
        self.published = 0

    @property
    def subscribers(self) -> int:
        return len(self._all) + sum(len(s) for s in self._by_call.values())

    @property
    def full(self) -> bool:
        """No further subscriber can be taken (:meth:`subscribe` would return None)."""
        return self.subscribers >= self.max_subscribers

    def publish(self, call_sid: str, kind: str, **data: Any) -> None:
        """One event of call ``call_sid``. Synchronous and bounded: a call never waits on a console."""
        event: Event = {"seq": next(self._seq), "t": self._clock(), "call": call_sid, "kind": kind, **data}
        self.published += 1
        backlog = self._backlog.get(call_sid)
        if backlog is None:
            if kind == "call_started" or call_sid not in self._ended:
                backlog = self._backlog[call_sid] = deque(maxlen=self._backlog_len)
            else:  # a late event of an ended call (a transcript write that raced the end)
                backlog = self._ended[call_sid]
        backlog.append(event)
        if kind == "call_ended":
            self._ended[call_sid] = self._backlog.pop(call_sid, backlog)
            while len(self._ended) > self._ended_kept:
                self._ended.popitem(last=False)
        for sub in self._all:
            sub.offer(event)
        watchers = self._by_call.get(call_sid)
        if watchers:
            for sub in watchers:
                sub.offer(event)

    def backlog(self, call_sid: str) -> list[Event] | None:
        """The events kept for a live or recently ended call; None if the hub knows no such call."""
        b = self._backlog.get(call_sid)
        if b is None:
            b = self._ended.get(call_sid)
        return None if b is None else list(b)

    def is_live(self, call_sid: str) -> bool:
        return call_sid in self._backlog

    def subscribe(self, call_sid: str | None = None, *, replay: bool = True, after: int = 0) -> Subscriber | None:
        """A new subscriber to one call (its backlog after event ``after`` queued first when
        ``replay``: a reconnecting ``EventSource`` sends the last id it saw) or to all calls;
        None when :attr:`max_subscribers` are already open."""
        if self.full:
            return None
        if call_sid is None:
            sub = Subscriber(self, None, self._queue)
            self._all.add(sub)
            return sub
        # the backlog may be longer than the live queue: replay it whole, bound the live part
        past = [e for e in self.backlog(call_sid) or [] if e["seq"] > after] if replay else []
        sub = Subscriber(self, call_sid, self._queue + len(past))
        for event in past:
            sub.offer(event)
        self._by_call.setdefault(call_sid, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.closed = True
        if sub.call_sid is None:
            self._all.discard(sub)
            return
        watchers = self._by_call.get(sub.call_sid)
        if watchers is not None:
            watchers.discard(sub)
            if not watchers:
                del self._by_call[sub.call_sid]

    def close(self) -> None:
        """End every subscriber's stream (the bridge is stopping)."""
        for sub in list(self._all) + [s for subs in self._by_call.values() for s in subs]:
            sub.close()
